//! One acceptance suite, every emulator users test with.
//!
//! Each test names the emulators that can show its behaviour, and runs once on each of them
//! (`<test>::moto`, `<test>::cognito_local`). An emulator that lacks a behaviour is left out of
//! that test by name, with the reason, never skipped at run time:
//! - cognito-local does not enforce `AdminDisableUser` and answers 500 `Unsupported` to
//!   `GlobalSignOut`;
//! - moto ignores `exp` in `GetUser` (the crate's own check is what refuses expired tokens).

use crate::common;

use std::time::{Duration, Instant};

use actix_cognito::{Rejection, Verifier};
use common::{altered, rejection, seeded_on, Kind, Revoke, Seeded, ALICE_ATTRIBUTES, PASSWORD};
use serde_json::json;

/// `on!(moto, cognito_local => async fn name(s) { ... })`: a module `name` with one test per
/// emulator, each given a freshly seeded pool `s` (user `alice`, signed in).
macro_rules! on {
    ($($kind:ident),+ => async fn $name:ident($s:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[actix_web::test]
                async fn $kind() {
                    let $s = seeded_on(super::kind(stringify!($kind)), stringify!($name)).await;
                    $body
                }
            )+
        }
    };
}

fn kind(name: &str) -> Kind {
    match name {
        "moto" => Kind::Moto,
        "cognito_local" => Kind::CognitoLocal,
        other => panic!("no emulator {other}"),
    }
}

on!(moto, cognito_local => async fn a_valid_token_passes_with_its_attributes(s) {
    let user = s.verifier().build().unwrap().verify(&s.tokens.access).await.unwrap();
    assert_eq!(user.username(), s.pool.username("alice"));
    for (name, value) in ALICE_ATTRIBUTES {
        assert_eq!(user.attribute(name), Some(*value), "{name}");
    }
    assert_eq!(user.client_id(), s.pool.client_id);
    assert_eq!(s.proxy.get_user_calls(), 1);
});

on!(moto, cognito_local => async fn groups_come_with_the_token(s) {
    s.pool.add_to_group("alice", "admin").await.unwrap();
    let tokens = s.pool.sign_in(&s.pool.client_id, "alice", PASSWORD).await.unwrap();
    let verifier = s.verifier().build().unwrap();
    assert!(verifier.verify(&tokens.access).await.unwrap().in_group("admin"));
    assert!(!verifier.verify(&s.tokens.access).await.unwrap().in_group("admin"));
});

on!(moto, cognito_local => async fn garbage_is_refused_without_a_call(s) {
    let verifier = s.verifier().build().unwrap();
    for garbage in ["garbage", "a.b.c", "", &"x".repeat(9000)] {
        assert!(verifier.verify(garbage).await.is_err(), "{garbage}");
    }
    assert_eq!(rejection(verifier.verify("not.a.token").await), Rejection::Malformed);
    assert_eq!(s.proxy.get_user_calls(), 0);
});

on!(moto, cognito_local => async fn a_tampered_signature_is_refused_without_a_call(s) {
    let verifier = s.verifier().build().unwrap();
    let tampered = altered(&s.tokens.access, &[("username", json!("mallory"))]);
    assert_eq!(rejection(verifier.verify(&tampered).await), Rejection::BadSignature);
    assert_eq!(s.proxy.get_user_calls(), 0);
});

on!(moto, cognito_local => async fn a_token_of_another_pool_is_refused_without_a_call(s) {
    let other = s.emulator.create_pool("other-pool").await.unwrap();
    other.create_user("eve", PASSWORD, &[("email", "eve@example.com")]).await.unwrap();
    let eve = other.sign_in(&other.client_id, "eve", PASSWORD).await.unwrap();
    let verifier = s.verifier().client_id(&other.client_id).build().unwrap();
    assert_eq!(rejection(verifier.verify(&eve.access).await), Rejection::WrongIssuer);
    assert_eq!(s.proxy.get_user_calls(), 0);
});

/// A revocation is seen within TTL + 1 s.
async fn assert_refused_within_ttl(s: &Seeded, how: Revoke, expected: Rejection) {
    let ttl = Duration::from_secs(1);
    let verifier = s.verifier().cache_ttl(ttl).build().unwrap();
    verifier.verify(&s.tokens.access).await.unwrap();
    s.revoke(how).await;
    let revoked = Instant::now();
    loop {
        match verifier.verify(&s.tokens.access).await {
            Err(e) => {
                assert_eq!(e.rejection(), Some(expected), "{how:?}: {e:?}");
                break;
            }
            Ok(_) => assert!(revoked.elapsed() < ttl + Duration::from_secs(1), "{how:?}: still accepted"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on!(moto, cognito_local => async fn a_deleted_user_is_refused_within_the_ttl(s) {
    assert_refused_within_ttl(&s, Revoke::AdminDeleteUser, Rejection::UserNotFound).await;
});

// cognito-local does not enforce AdminDisableUser.
on!(moto => async fn a_disabled_user_is_refused_within_the_ttl(s) {
    assert_refused_within_ttl(&s, Revoke::AdminDisableUser, Rejection::NotAuthorized).await;
});

// cognito-local answers GlobalSignOut with 500 Unsupported.
on!(moto => async fn a_global_sign_out_is_refused_within_the_ttl(s) {
    assert_refused_within_ttl(&s, Revoke::GlobalSignOut, Rejection::NotAuthorized).await;
});

on!(cognito_local => async fn a_sign_out_the_emulator_cannot_make_is_unavailability_not_a_rejection(s) {
    let verifier = s.verifier().build().unwrap();
    let err = verifier.global_sign_out(&s.tokens.access).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    // The token is still good, and still accepted.
    verifier.verify(&s.tokens.access).await.unwrap();
});

on!(cognito_local => async fn the_emulator_reached_directly_needs_no_issuer_setting(s) {
    let port = s.emulator.endpoint().rsplit(':').next().unwrap().to_owned();
    for host in ["127.0.0.1", "localhost"] {
        let verifier = Verifier::builder(&s.pool.pool_id)
            .client_id(&s.pool.client_id)
            .endpoint_url(format!("http://{host}:{port}"))
            .build_hydrated()
            .await
            .unwrap();
        assert_eq!(verifier.region(), "us-east-1");
        let user = verifier.verify(&s.tokens.access).await.unwrap();
        assert_eq!(user.attribute("custom:tenant"), Some("acme"), "{host}");
    }
});

on!(moto, cognito_local => async fn one_verifier_accepts_several_pools_and_refuses_the_others(s) {
    let b = s.emulator.create_pool("tenant-b").await.unwrap();
    b.create_user("bob", PASSWORD, &[("email", "bob@example.com")]).await.unwrap();
    let bob = b.sign_in(&b.client_id, "bob", PASSWORD).await.unwrap();
    let c = s.emulator.create_pool("tenant-c").await.unwrap();
    c.create_user("carol", PASSWORD, &[("email", "carol@example.com")]).await.unwrap();
    let carol = c.sign_in(&c.client_id, "carol", PASSWORD).await.unwrap();
    // Through the counting proxy, an emulator that names itself in `iss` needs its issuers named.
    let mut builder = s.verifier().pool(&b.pool_id).client_id(&b.client_id).client_id(&c.client_id);
    if let Some(iss) = common::claims_of(&bob.access)["iss"].as_str().filter(|i| i.starts_with("http://")) {
        builder = builder.allow_issuer(iss);
    }
    let verifier = builder.build().unwrap();

    let alice = verifier.verify(&s.tokens.access).await.unwrap();
    let bob_user = verifier.verify(&bob.access).await.unwrap();
    assert_eq!((alice.pool_id(), bob_user.pool_id()), (s.pool.pool_id.as_str(), b.pool_id.as_str()));
    assert_eq!(bob_user.email(), Some("bob@example.com"));
    assert_eq!(s.proxy.get_user_calls(), 2);
    // A pool the verifier was not given: refused locally.
    assert_eq!(rejection(verifier.verify(&carol.access).await), Rejection::WrongIssuer);
    assert_eq!(s.proxy.get_user_calls(), 2);

    // One cache for both: invalidating pool B's user leaves pool A's cached.
    verifier.invalidate_user(bob_user.sub()).await;
    verifier.verify(&s.tokens.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 2);
    verifier.verify(&bob.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 3);
    assert_eq!(verifier.user_pool_ids().collect::<Vec<_>>(), [s.pool.pool_id.as_str(), b.pool_id.as_str()]);
});

on!(moto, cognito_local => async fn an_id_token_passes_only_where_routes_opt_in(s) {
    use actix_cognito::{CognitoAuth, IdTokenUser};
    use actix_web::{web, App, HttpResponse};
    use common::http::get_with_token;

    async fn whoami(user: IdTokenUser) -> HttpResponse {
        HttpResponse::Ok().json(serde_json::json!({
            "username": user.username(),
            "email": user.email(),
            "tenant": user.attribute("custom:tenant"),
            "claims": user.claims(),
        }))
    }
    async fn me(user: actix_cognito::CognitoUser) -> HttpResponse {
        HttpResponse::Ok().body(user.username().to_owned())
    }
    let verifier = s.verifier().build().unwrap();
    let (ids, access) = (CognitoAuth::new(verifier.clone()).allow_id_tokens(), CognitoAuth::new(verifier));
    let addr = common::spawn(move || {
        App::new()
            .service(web::scope("/id").wrap(ids.clone()).route("", web::get().to(whoami)))
            .service(web::scope("/me").wrap(access.clone()).route("", web::get().to(me)))
    });
    let r = get_with_token(addr, "/id", &s.tokens.id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // moto puts only custom attributes in ID tokens, cognito-local all of them.
    assert_eq!(r.json()["username"], s.pool.username("alice"));
    assert_eq!(r.json()["tenant"], "acme");
    assert_eq!(r.json()["claims"]["sub"], common::claims_of(&s.tokens.access)["sub"]);
    assert_eq!(r.json()["claims"]["token_use"], "id");
    assert_eq!(r.json()["claims"]["aud"], s.pool.client_id.as_str());
    // Elsewhere an ID token is refused locally.
    assert_eq!(get_with_token(addr, "/me", &s.tokens.id).await.status, 401);
    // An ID token issued to another app client.
    let other = s.pool.create_client("other-app").await.unwrap();
    let theirs = s.pool.sign_in(&other, "alice", PASSWORD).await.unwrap();
    assert_eq!(get_with_token(addr, "/id", &theirs.id).await.status, 401);
    // A tampered one.
    let tampered = altered(&s.tokens.id, &[("email", json!("mallory@example.com"))]);
    assert_eq!(get_with_token(addr, "/id", &tampered).await.status, 401);
    // The access token still works on the ID route (and on the other).
    assert_eq!(get_with_token(addr, "/id", &s.tokens.access).await.status, 403);
    assert_eq!(get_with_token(addr, "/me", &s.tokens.access).await.status, 200);
    assert_eq!(s.proxy.get_user_calls(), 1);
});
