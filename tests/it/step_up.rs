//! Step-up authentication (RFC 9470): routes that demand an authentication level (`acr`) or a
//! recent sign-in (`auth_time`), against a fake upstream and tokens signed with the test key.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use crate::middleware::Build;
use actix_cognito::testing::{access_claims, Behaviour, FakeCognito, TestSigner};
use actix_cognito::{CognitoAuth, Principal, Verifier};
use actix_web::{web, App, HttpResponse};
use common::http::get_with_token;
use common::{spawn, FAKE_CLIENT, FAKE_POOL};
use serde_json::{json, Value};

const LOA3: &str = "urn:cognito:loa:3";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An access token of `sub` with these claims added or replaced.
fn token(sub: &str, extra: &[(&str, Value)]) -> String {
    let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, sub, 3600);
    for (name, value) in extra {
        claims[*name] = value.clone();
    }
    TestSigner::default().sign(&claims)
}

async fn who(p: Principal) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "acr": p.acr(),
        "amr": p.amr().collect::<Vec<_>>(),
        "auth_time": p.auth_time().map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()),
    }))
}

/// `/me` behind a plain middleware, `/sensitive` behind one that demands level 3 and a sign-in
/// at most five minutes old; both share one verifier (one cache).
async fn app() -> (FakeCognito, SocketAddr) {
    let fake = FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap();
    let v =
        Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint()).build().unwrap();
    let plain = CognitoAuth::new(v.clone());
    let sensitive = CognitoAuth::new(v)
        .require_acr([LOA3, "urn:cognito:loa:4"])
        .require_max_age(Duration::from_secs(300));
    let addr = spawn(move || {
        App::new()
            .service(web::scope("/me").wrap(plain.clone()).route("", web::get().to(who)))
            .service(web::scope("/sensitive").wrap(sensitive.clone()).route("", web::get().to(who)))
    });
    (fake, addr)
}

fn step_up_challenge(description: &str) -> String {
    format!(
        "Bearer realm=\"api\", error=\"insufficient_user_authentication\", error_description=\"{description}\", \
         acr_values=\"{LOA3} urn:cognito:loa:4\", max_age=300"
    )
}

#[actix_web::test]
async fn a_sign_in_at_the_required_level_and_recent_enough_passes_with_its_claims() {
    let (fake, addr) = app().await;
    let t = token("strong", &[("acr", LOA3.into()), ("amr", json!(["pwd", "otp", "mfa"]))]);
    let r = get_with_token(addr, "/sensitive", &t).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["acr"], LOA3);
    assert_eq!(r.json()["amr"], json!(["pwd", "otp", "mfa"]));
    assert!((r.json()["auth_time"].as_i64().unwrap() - now()).abs() < 60);
    // One string is one method.
    let single = token("single", &[("acr", LOA3.into()), ("amr", "pwd".into())]);
    assert_eq!(get_with_token(addr, "/sensitive", &single).await.json()["amr"], json!(["pwd"]));
    assert_eq!(fake.get_user_calls(), 2);
}

#[actix_web::test]
async fn a_lower_level_gets_the_rfc_9470_challenge_and_still_passes_a_route_without_the_requirement() {
    let (_fake, addr) = app().await;
    let low = token("low", &[("acr", "urn:cognito:loa:2".into())]);
    let r = get_with_token(addr, "/sensitive", &low).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        step_up_challenge("a higher authentication level is required")
    );
    assert_eq!(r.json()["error"], "insufficient_user_authentication");
    // The same token, cached now, still opens the route that does not ask for a level.
    let r = get_with_token(addr, "/me", &low).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["acr"], "urn:cognito:loa:2");
}

#[actix_web::test]
async fn a_token_without_acr_or_with_an_old_sign_in_is_asked_to_step_up() {
    let (_fake, addr) = app().await;
    let none = token("none", &[]);
    let r = get_with_token(addr, "/sensitive", &none).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        step_up_challenge("a higher authentication level is required")
    );
    // A refreshed token keeps the sign-in's auth_time: an hour-old sign-in is too old.
    let old = token("old", &[("acr", LOA3.into()), ("auth_time", (now() - 3600).into())]);
    let r = get_with_token(addr, "/sensitive", &old).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        step_up_challenge("a more recent authentication is required")
    );
    let missing = token("missing", &[("acr", LOA3.into()), ("auth_time", Value::Null)]);
    assert_eq!(get_with_token(addr, "/sensitive", &missing).await.status, 401);
    assert_eq!(get_with_token(addr, "/me", &old).await.status, 200);
}

#[actix_web::test]
async fn a_revoked_or_invalid_token_gets_invalid_token_never_the_step_up_challenge() {
    let (fake, addr) = app().await;
    let revoked = token("revoked", &[("acr", "urn:cognito:loa:1".into())]);
    fake.revoke(&revoked);
    for t in [revoked, "garbage".to_owned(), token("expired", &[("exp", (now() - 10).into())])] {
        let r = get_with_token(addr, "/sensitive", &t).await;
        assert_eq!(r.status, 401);
        let challenge = r.header("www-authenticate").unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(!challenge.contains("acr_values"), "{challenge}");
    }
}

#[actix_web::test]
async fn id_tokens_carry_the_same_claims_and_machines_never_meet_the_requirement() {
    let fake = FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap();
    let v =
        Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint()).build().unwrap();
    let auth = CognitoAuth::new(v).allow_id_tokens().allow_machine_tokens().require_acr([LOA3]);
    let addr = spawn(move || {
        App::new().service(web::scope("").wrap(auth.clone()).route("/who", web::get().to(who)))
    });
    let id = |acr: &str| {
        let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, "id-user", 3600);
        claims["token_use"] = "id".into();
        claims["aud"] = FAKE_CLIENT.into();
        claims["cognito:username"] = "id-user".into();
        claims["acr"] = acr.into();
        claims["amr"] = json!(["pwd", "mfa"]);
        TestSigner::default().sign(&claims)
    };
    let r = get_with_token(addr, "/who", &id(LOA3)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["amr"], json!(["pwd", "mfa"]));
    let r = get_with_token(addr, "/who", &id("urn:cognito:loa:1")).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("insufficient_user_authentication"));
    // A machine cannot sign in again: it gets 403, not a challenge it cannot answer.
    let machine = TestSigner::default().sign(&json!({
        "iss": format!("https://cognito-idp.us-east-1.amazonaws.com/{FAKE_POOL}"),
        "sub": FAKE_CLIENT, "client_id": FAKE_CLIENT, "token_use": "access",
        "scope": "orders/read", "exp": now() + 3600, "acr": LOA3,
    }));
    assert_eq!(get_with_token(addr, "/who", &machine).await.status, 403);
    assert_eq!(fake.get_user_calls(), 0);
}

#[actix_web::test]
async fn a_bad_step_up_requirement_panics_at_the_call_naming_it() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let v =
        Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint()).build().unwrap();
    let cases: [(&str, Build<'_>); 5] = [
        (
            "require_acr([]): give at least one level",
            Box::new(|| CognitoAuth::new(v.clone()).require_acr(Vec::<String>::new())),
        ),
        ("require_acr([\"two words\"])", Box::new(|| CognitoAuth::new(v.clone()).require_acr(["two words"]))),
        ("without spaces, '\"' or '\\'", Box::new(|| CognitoAuth::new(v.clone()).require_acr(["a\"b"]))),
        (
            "require_acr was called twice",
            Box::new(|| CognitoAuth::new(v.clone()).require_acr(["a"]).require_acr(["b"])),
        ),
        (
            "require_max_age(500ms): give at least one second",
            Box::new(|| CognitoAuth::new(v.clone()).require_max_age(Duration::from_millis(500))),
        ),
    ];
    for (want, build) in cases {
        let message = crate::middleware::panic_message(build);
        assert!(message.contains(want), "{message}");
    }
}
