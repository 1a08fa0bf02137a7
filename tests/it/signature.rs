//! The signature pre-check: forged tokens never reach `GetUser`; keys are fetched sparingly.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use actix_cognito::testing::{FakeCognito, TestSigner};
use actix_cognito::{CognitoAuth, CognitoUser, ConfigError, MachineClient, Principal, Rejection, Verifier};
use actix_web::{web, App, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::http::get_with_token;
use common::{
    access_claims, altered, fake_token, rejection, seeded, spawn, unix_now, FAKE_CLIENT, FAKE_POOL,
};
use serde_json::json;

#[tokio::test]
async fn a_genuine_token_passes_and_the_keys_are_fetched_once() {
    let s = seeded("sig-valid").await;
    let verifier = s.verifier().cache_ttl(Duration::ZERO).build().unwrap();
    for _ in 0..3 {
        verifier.verify(&s.tokens.access).await.unwrap();
    }
    assert_eq!(s.proxy.get_user_calls(), 3);
    assert_eq!(s.proxy.jwks_fetches(), 1);
    assert_eq!(verifier.jwks_fetches(), 1);
}

#[tokio::test]
async fn a_tampered_payload_is_rejected_without_calling_cognito() {
    let s = seeded("sig-tampered").await;
    let verifier = s.verifier().build().unwrap();
    let tampered = altered(&s.tokens.access, &[("username", json!("mallory"))]);
    assert_eq!(rejection(verifier.verify(&tampered).await), Rejection::BadSignature);
    assert_eq!(s.proxy.get_user_calls(), 0);
    // The genuine token still passes.
    verifier.verify(&s.tokens.access).await.unwrap();
}

#[tokio::test]
async fn a_random_signature_is_rejected_without_calling_cognito() {
    let s = seeded("sig-random").await;
    let verifier = s.verifier().build().unwrap();
    let (signed, _) = s.tokens.access.rsplit_once('.').unwrap();
    let random: Vec<u8> = (0..256u32).map(|i| (i * 31 + 7) as u8).collect();
    let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(random));
    assert_eq!(rejection(verifier.verify(&forged).await), Rejection::BadSignature);
    let short = format!("{signed}.AAAA");
    assert_eq!(rejection(verifier.verify(&short).await), Rejection::BadSignature);
    assert_eq!(s.proxy.get_user_calls(), 0);
}

#[tokio::test]
async fn a_thousand_distinct_forged_tokens_cost_no_get_user_call() {
    let s = seeded("sig-flood").await;
    let verifier = s.verifier().build().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let forged = altered(&s.tokens.access, &[("jti", json!(format!("forged-{i}")))]);
        let v = verifier.clone();
        tasks.spawn(async move { v.verify(&forged).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(rejection(r.unwrap()), Rejection::BadSignature);
    }
    assert_eq!(s.proxy.get_user_calls(), 0);
    assert_eq!(s.proxy.jwks_fetches(), 1);
    assert_eq!(verifier.stats().rejected(Rejection::BadSignature), 1000);
}

fn fake_verifier(fake: &FakeCognito) -> actix_cognito::VerifierBuilder {
    Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint())
}

fn signed_by(kid: &str, sub: &str) -> String {
    TestSigner::with_kid(kid).sign(&access_claims(FAKE_POOL, FAKE_CLIENT, sub, 3600))
}

#[tokio::test]
async fn an_unknown_kid_causes_at_most_one_fetch_per_refresh_interval() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let verifier = fake_verifier(&fake).jwks_refresh_interval(Duration::from_secs(1)).build().unwrap();
    verifier.verify(&fake_token("known", 3600)).await.unwrap();
    assert_eq!(fake.jwks_fetches(), 1);
    // Within the interval of that first fetch, an unknown kid causes none.
    assert_eq!(rejection(verifier.verify(&signed_by("made-up", "m")).await), Rejection::UnknownKey);
    assert_eq!(fake.jwks_fetches(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (v, t) = (verifier.clone(), signed_by(&format!("made-up-{}", i % 7), &format!("s{i}")));
        tasks.spawn(async move { v.verify(&t).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(rejection(r.unwrap()), Rejection::UnknownKey);
    }
    assert_eq!(fake.jwks_fetches(), 2, "one refetch for the whole burst");
    assert_eq!(fake.get_user_calls(), 1);

    // Within the interval, no more fetches; after it, one more.
    assert_eq!(rejection(verifier.verify(&signed_by("made-up-x", "x")).await), Rejection::UnknownKey);
    assert_eq!(fake.jwks_fetches(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(rejection(verifier.verify(&signed_by("made-up-y", "y")).await), Rejection::UnknownKey);
    assert_eq!(fake.jwks_fetches(), 3);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_after_the_refresh_interval() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let verifier = fake_verifier(&fake).jwks_refresh_interval(Duration::from_secs(1)).build().unwrap();
    verifier.verify(&fake_token("before", 3600)).await.unwrap();
    // A token signed with a key the pool has not published yet (or not yet to us).
    let early = signed_by("rotated", "early");
    assert_eq!(rejection(verifier.verify(&early).await), Rejection::UnknownKey);
    let (old, new) = (TestSigner::default(), TestSigner::with_kid("rotated"));
    fake.set_jwks(Some(json!({ "keys": [old.jwk(), new.jwk()] })));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The same token passes once the key is fetched: an unknown kid is not remembered as a
    // rejection, whatever the negative TTL.
    verifier.verify(&early).await.unwrap();
    verifier.verify(&signed_by("rotated", "after")).await.unwrap();
    assert_eq!(fake.jwks_fetches(), 2);
}

#[tokio::test]
async fn the_old_keys_keep_serving_when_the_jwks_endpoint_is_down() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let verifier = fake_verifier(&fake).jwks_refresh_interval(Duration::from_secs(1)).build().unwrap();
    assert_eq!(verifier.hydrate().await, Ok(1));
    fake.set_jwks_down(true);
    // A refresh is attempted for an unknown kid, fails, and the known key still serves.
    assert_eq!(rejection(verifier.verify(&signed_by("unknown", "u")).await), Rejection::UnknownKey);
    assert_eq!(fake.jwks_fetches(), 2);
    verifier.verify(&fake_token("known", 3600)).await.unwrap();
}

#[tokio::test]
async fn with_no_keys_at_all_a_jwks_outage_is_unavailability_not_a_rejection() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    fake.set_jwks_down(true);
    let verifier = fake_verifier(&fake).build().unwrap();
    let err = verifier.verify(&fake_token("s", 3600)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(fake.get_user_calls(), 0);
    // Not cached: the endpoint back, the next request passes.
    fake.set_jwks_down(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    verifier.verify(&fake_token("s", 3600)).await.unwrap();
}

#[tokio::test]
async fn build_hydrated_fails_fast_when_the_keys_cannot_be_fetched() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    fake.set_jwks_down(true);
    let err = fake_verifier(&fake).build_hydrated().await.unwrap_err();
    assert!(matches!(err, ConfigError::Jwks(_)), "{err}");
    assert!(err.to_string().contains("jwks.json"), "{err}");
    fake.set_jwks_down(false);
    let verifier = fake_verifier(&fake).build_hydrated().await.unwrap();
    verifier.verify(&fake_token("s", 3600)).await.unwrap();
    assert_eq!(fake.jwks_fetches(), 2);
}

/// A client-credentials token: no username, custom scopes, `sub` = the client id.
fn machine_token() -> String {
    TestSigner::default().sign(&json!({
        "iss": format!("https://cognito-idp.us-east-1.amazonaws.com/{FAKE_POOL}"),
        "sub": FAKE_CLIENT,
        "client_id": FAKE_CLIENT,
        "token_use": "access",
        "scope": "orders/read orders/write",
        "exp": unix_now() + 3600,
        "iat": unix_now(),
        "jti": "machine-1",
    }))
}

#[tokio::test]
async fn a_machine_token_is_verified_locally_and_only_where_allowed() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let verifier = fake_verifier(&fake).build().unwrap();
    let token = machine_token();
    assert_eq!(rejection(verifier.verify(&token).await), Rejection::MachineToken);
    match verifier.verify_principal(&token).await.unwrap() {
        Principal::Machine(m) => {
            assert_eq!(m.client_id(), FAKE_CLIENT);
            assert!(m.has_scope("orders/write"));
        }
        other => panic!("{other:?}"),
    }
    // Cached as a machine: still refused where only users may go.
    assert_eq!(rejection(verifier.verify(&token).await), Rejection::MachineToken);
    assert_eq!(fake.get_user_calls(), 0);
    // A forged machine token is refused.
    let forged = altered(&token, &[("scope", json!("orders/admin"))]);
    assert_eq!(rejection(verifier.verify_principal(&forged).await), Rejection::BadSignature);
    // Without the signature check, machine tokens are never accepted.
    let unsigned = fake_verifier(&fake).signature_check(false).build().unwrap();
    assert_eq!(rejection(unsigned.verify_principal(&token).await), Rejection::MachineToken);
}

async fn who(principal: Principal) -> HttpResponse {
    HttpResponse::Ok().body(match principal {
        Principal::User(u) => format!("user {}", u.username()),
        Principal::Machine(m) => format!("machine {}", m.client_id()),
        Principal::IdToken(i) => format!("id {}", i.username()),
        _ => "other".to_owned(),
    })
}

async fn machine_only(m: MachineClient) -> HttpResponse {
    HttpResponse::Ok().body(m.client_id().to_owned())
}

async fn user_only(u: CognitoUser) -> HttpResponse {
    HttpResponse::Ok().body(u.username().to_owned())
}

#[actix_web::test]
async fn a_machine_token_passes_an_opted_in_route_and_fails_a_user_route() {
    let fake = Arc::new(FakeCognito::user("alice", &[]).await.unwrap());
    let verifier = fake_verifier(&fake).build().unwrap();
    let (users, machines) =
        (CognitoAuth::new(verifier.clone()), CognitoAuth::new(verifier).allow_machine_tokens());
    let addr = spawn(move || {
        App::new()
            .service(web::scope("/users").wrap(users.clone()).route("/who", web::get().to(who)))
            .service(
                web::scope("/api")
                    .wrap(machines.clone())
                    .route("/who", web::get().to(who))
                    .route("/machine", web::get().to(machine_only))
                    .route("/user", web::get().to(user_only)),
            )
    });

    let (machine, user) = (machine_token(), fake_token("s1", 3600));
    let r = get_with_token(addr, "/users/who", &machine).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));

    let r = get_with_token(addr, "/api/who", &machine).await;
    assert_eq!((r.status, r.body.as_str()), (200, format!("machine {FAKE_CLIENT}").as_str()));
    assert_eq!(get_with_token(addr, "/api/machine", &machine).await.status, 200);
    assert_eq!(get_with_token(addr, "/api/user", &machine).await.status, 403);

    let r = get_with_token(addr, "/api/who", &user).await;
    assert_eq!((r.status, r.body.as_str()), (200, "user alice"));
    assert_eq!(get_with_token(addr, "/api/machine", &user).await.status, 403);
    assert_eq!(fake.get_user_calls(), 1);
}

#[test]
fn unsigned_tokens_without_the_admin_scope_cannot_flood_the_logs() {
    let (warnings, _guard) = common::capture_warnings();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let fake = FakeCognito::user("alice", &[]).await.unwrap();
        let verifier = fake_verifier(&fake).build_hydrated().await.unwrap();
        let no_scope = |sub: &str| {
            let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, sub, 3600);
            claims["scope"] = json!("openid email");
            claims
        };
        for i in 0..2000 {
            let forged = common::token_with(&no_scope(&format!("u{i}")));
            assert_eq!(rejection(verifier.verify(&forged).await), Rejection::MissingAdminScope);
        }
        let lines = warnings.text();
        assert_eq!(lines.matches("aws.cognito.signin.user.admin").count(), 0, "{lines}");
        // A genuine token of a misconfigured app client is worth one hint, and one only.
        for i in 0..50 {
            let signed = TestSigner::default().sign(&no_scope(&format!("g{i}")));
            assert_eq!(rejection(verifier.verify(&signed).await), Rejection::MissingAdminScope);
        }
        let lines = warnings.text();
        assert_eq!(lines.matches("aws.cognito.signin.user.admin").count(), 1, "{lines}");
        assert_eq!(fake.get_user_calls(), 0);
    });
}

#[test]
fn an_unexpected_issuer_under_an_endpoint_override_is_reported_once_per_origin() {
    let (warnings, _guard) = common::capture_warnings();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let fake = FakeCognito::user("alice", &[]).await.unwrap();
        let verifier = fake_verifier(&fake).build().unwrap();
        for i in 0..100 {
            let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, &format!("u{i}"), 3600);
            let host = if i % 2 == 0 { "auth.dev.example.com" } else { "cognito.test" };
            claims["iss"] = json!(format!("http://{host}:9229/{FAKE_POOL}"));
            let token = TestSigner::default().sign(&claims);
            assert_eq!(rejection(verifier.verify(&token).await), Rejection::WrongIssuer);
        }
        let lines = warnings.text();
        assert_eq!(lines.matches("COGNITO_ALLOW_ISSUER").count(), 2, "{lines}");
        assert!(lines.contains("issuer_origin=http://auth.dev.example.com:9229"), "{lines}");
        assert!(
            lines.contains(&format!("https://cognito-idp.us-east-1.amazonaws.com/{FAKE_POOL}")),
            "{lines}"
        );
        assert_eq!(fake.get_user_calls(), 0);
    });
}

/// Readiness counts only keys that can verify a token: an exponent of 1, a short or empty
/// modulus, or two keys under one `kid` (which one is meant cannot be told) are reported, not
/// counted, and a JWKS of only such keys makes the instance unready with the reasons.
#[tokio::test]
async fn keys_that_cannot_verify_are_reported_not_counted() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let good = TestSigner::default().jwk();
    let with = |kid: &str, field: &str, value: &str| {
        let mut k = good.clone();
        k["kid"] = kid.into();
        k[field] = value.into();
        k
    };
    let short_n = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
    let twin = |e: &str| with("twin", "e", e);
    let bad = json!({ "keys": [with("e-one", "e", "AQ"), with("short", "n", &short_n), with("empty", "n", ""), twin("AQAB"), twin("Aw")] });
    fake.set_jwks(Some(bad.clone()));
    let err = fake_verifier(&fake).build_hydrated().await.unwrap_err();
    let message = err.to_string();
    for why in [
        "\"e-one\": a public exponent of Some(1)",
        "\"short\": a modulus of 1024 bits",
        "\"empty\": a modulus of 0 bits",
        "\"twin\": the kid of more than one key",
    ] {
        assert!(message.contains(why), "{why}: {message}");
    }
    let verifier = fake_verifier(&fake).build().unwrap();
    let ready = verifier.readiness();
    assert!(!ready.ready && ready.signing_keys == 0, "{ready:?}");
    // One good key beside them: ready, one key counted, the rest reported.
    let mut mixed = bad;
    mixed["keys"].as_array_mut().unwrap().push(good);
    fake.set_jwks(Some(mixed));
    let verifier = fake_verifier(&fake).build_hydrated().await.unwrap();
    let ready = verifier.readiness();
    assert!(ready.ready, "{ready:?}");
    assert_eq!(ready.signing_keys, 1);
    assert_eq!(ready.unusable_signing_keys.len(), 5, "{:?}", ready.unusable_signing_keys);
    verifier.verify(&common::fake_token("good-key", 3600)).await.unwrap();
}
