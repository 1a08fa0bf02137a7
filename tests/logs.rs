//! No token and no Authorization value reaches a log line, even at trace level, from this crate
//! or from the SDK and HTTP stacks underneath it.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use actix_cognito::testing::{Behaviour, FakeCognito};
use actix_cognito::{CognitoAuth, CognitoUser};
use actix_web::{web, App, HttpResponse};
use common::http::get_with_token;
use common::{altered, seeded};
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn me(user: CognitoUser) -> HttpResponse {
    HttpResponse::Ok().body(user.username().to_owned())
}

#[actix_web::test]
async fn no_token_appears_in_any_log_line_at_trace_level() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let s = seeded("logs").await;
    let verifier = s.verifier().build().unwrap();
    let forged = altered(&s.tokens.access, &[("username", json!("mallory"))]);
    let auth = CognitoAuth::new(verifier.clone());
    let addr = common::spawn(move || App::new().wrap(auth.clone()).route("/me", web::get().to(me)));

    // Accepted, rejected by signature, rejected by Cognito, and unavailable.
    assert_eq!(get_with_token(addr, "/me", &s.tokens.access).await.status, 200);
    assert_eq!(get_with_token(addr, "/me", &forged).await.status, 401);
    let unsigned = s.verifier().signature_check(false).cache_ttl(std::time::Duration::ZERO).build().unwrap();
    assert!(unsigned.verify(&forged).await.is_err());
    s.revoke(common::Revoke::GlobalSignOut).await;
    assert!(unsigned.verify(&s.tokens.access).await.is_err());
    let fake = FakeCognito::start(Behaviour::Error(500, "InternalErrorException".into())).await.unwrap();
    let down = s.verifier().endpoint_url(fake.endpoint()).jwks_url(s.jwks_url()).build().unwrap();
    assert!(down.verify(&s.tokens.id).await.is_err());
    assert!(down.verify(&s.tokens.access).await.unwrap_err().is_unavailable());
    println!("{:?} {:?}", verifier, unsigned.stats());

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.lines().count() > 50, "the subscriber captured too little to prove anything:\n{logs}");
    assert!(logs.contains("GetUser"), "the SDK's own trace lines are missing");
    // One span per verification, with its outcome.
    for needle in ["cognito_verify", "outcome=\"accepted\"", "outcome=\"bad_signature\"", "cache_hit=false"] {
        assert!(logs.contains(needle), "no {needle} in the logs");
    }
    for (name, token) in [("access", &s.tokens.access), ("forged", &forged), ("id", &s.tokens.id)] {
        let signature = token.rsplit('.').next().unwrap();
        let payload = token.split('.').nth(1).unwrap();
        for (part, needle) in [("signature", signature), ("payload", payload)] {
            if let Some(line) = logs.lines().find(|l| l.contains(needle)) {
                let line = line.replace(needle, "[the token]");
                panic!("the {part} of the {name} token appears in a log line: {line}");
            }
        }
    }
    assert!(!logs.to_ascii_lowercase().contains("bearer ey"), "an Authorization value was logged");
}
