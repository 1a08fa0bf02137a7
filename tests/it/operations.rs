//! Operations: metrics that move as the requests say, readiness, RFC 9728 metadata.

use crate::common;

use std::time::{Duration, Instant};

use actix_cognito::testing::{Behaviour, FakeCognito};
use actix_cognito::{Verifier, VerifierBuilder};
use common::example::start;
use common::http::{get, get_with_token};
use common::{fake_token, sample, FAKE_CLIENT, FAKE_POOL};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// A verifier whose metrics go to a recorder of the test's own.
fn measured(builder: VerifierBuilder) -> (Verifier, PrometheusHandle) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let verifier = metrics::with_local_recorder(&recorder, || builder.build().unwrap());
    // The handles outlive the local scope: the recorder must too.
    std::mem::forget(recorder);
    (verifier, handle)
}

#[tokio::test]
async fn metrics_move_exactly_as_the_requests_say() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let builder = Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint());
    let (verifier, metrics) = measured(builder);

    let token = fake_token("metered", 3600);
    for _ in 0..5 {
        verifier.verify(&token).await.unwrap();
    }
    let page = metrics.render();
    assert_eq!(sample(&page, r#"actix_cognito_get_user_calls_total{region="us-east-1"}"#), 1.0, "{page}");
    assert!(sample(&page, r#"actix_cognito_cache_hits_total{level="local"}"#) >= 4.0, "{page}");
    assert_eq!(sample(&page, r#"actix_cognito_verifications_total{outcome="accepted"}"#), 5.0, "{page}");
    assert_eq!(sample(&page, "actix_cognito_jwks_fetches_total"), 1.0, "{page}");
    assert!(page.contains("actix_cognito_get_user_duration_seconds"), "{page}");
    // The entry count is the cache's, not a count that waits for the cache's next write: the
    // upkeep sets it within a second or so (polled, for a busy machine).
    let started = std::time::Instant::now();
    while sample(&metrics.render(), "actix_cognito_cache_entries") != 1.0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{}", metrics.render());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    assert!(verifier.verify("garbage").await.is_err());
    let page = metrics.render();
    let malformed = r#"actix_cognito_verifications_total{outcome="rejected",reason="malformed"}"#;
    assert_eq!(sample(&page, malformed), 1.0, "{page}");
    assert_eq!(sample(&page, r#"actix_cognito_get_user_calls_total{region="us-east-1"}"#), 1.0, "{page}");

    fake.set_behaviour(Behaviour::Error(500, "InternalErrorException".into()));
    assert!(verifier.verify(&fake_token("down", 3600)).await.unwrap_err().is_unavailable());
    let page = metrics.render();
    let down = r#"actix_cognito_verifications_total{outcome="unavailable",reason="service_error"}"#;
    assert_eq!(sample(&page, down), 1.0, "{page}");
}

#[tokio::test]
async fn the_example_server_exports_metrics_readiness_and_resource_metadata() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    fake.set_jwks_down(true);
    let endpoint = fake.endpoint();
    let server = start(&[
        ("COGNITO_USER_POOL_ID", FAKE_POOL),
        ("COGNITO_CLIENT_ID", FAKE_CLIENT),
        ("AWS_ENDPOINT_URL", &endpoint),
        ("RESOURCE_URL", "https://api.example.com"),
    ])
    .await;
    let addr = server.addr;

    // Not ready while the keys cannot be fetched.
    let ready = get(addr, "/ready", &[]).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.json()["reason"].as_str().unwrap().contains("signing keys"), "{}", ready.body);
    fake.set_jwks_down(false);
    let back = Instant::now();
    while get(addr, "/ready", &[]).await.status != 200 {
        assert!(back.elapsed() < Duration::from_secs(8), "not ready 8 s after the JWKS came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let token = fake_token("ops", 3600);
    for _ in 0..5 {
        assert_eq!(get_with_token(addr, "/me", &token).await.status, 200);
    }
    // A later outage of Cognito and of the JWKS does not make the instance unready.
    fake.set_jwks_down(true);
    fake.set_behaviour(Behaviour::Error(500, "InternalErrorException".into()));
    assert_eq!(get_with_token(addr, "/me", &fake_token("new-during-outage", 3600)).await.status, 503);
    let ready = get(addr, "/ready", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["signing_keys"], 1);
    assert!(ready.json()["since_get_user_failure_secs"].as_f64().unwrap() < 5.0, "{}", ready.body);

    let page = get(addr, "/metrics", &[]).await.body;
    assert_eq!(sample(&page, r#"actix_cognito_get_user_calls_total{region="us-east-1"}"#), 2.0, "{page}");
    assert!(sample(&page, r#"actix_cognito_cache_hits_total{level="local"}"#) >= 4.0, "{page}");
    assert_eq!(sample(&page, r#"actix_cognito_verifications_total{outcome="accepted"}"#), 5.0, "{page}");
    assert_eq!(
        sample(&page, r#"actix_cognito_verifications_total{outcome="unavailable",reason="service_error"}"#),
        1.0
    );
    for name in [
        "actix_cognito_cache_misses_total",
        "actix_cognito_cache_entries",
        "actix_cognito_jwks_fetches_total",
    ] {
        assert!(page.contains(name), "{name} missing:\n{page}");
    }
    assert!(page.contains("actix_cognito_get_user_duration_seconds"), "{page}");

    // RFC 9728.
    let metadata = get(addr, "/.well-known/oauth-protected-resource", &[]).await;
    assert_eq!(metadata.status, 200);
    let metadata = metadata.json();
    assert_eq!(metadata["resource"], "https://api.example.com");
    let issuer = format!("https://cognito-idp.us-east-1.amazonaws.com/{FAKE_POOL}");
    assert_eq!(metadata["authorization_servers"], serde_json::json!([issuer]));
    assert_eq!(metadata["bearer_methods_supported"], serde_json::json!(["header"]));
    let pointer = r#"resource_metadata="https://api.example.com/.well-known/oauth-protected-resource""#;
    fake.set_behaviour(Behaviour::User { username: "alice".into(), attributes: vec![] });
    let anonymous = get(addr, "/me", &[]).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").unwrap().contains(pointer), "{}", anonymous.body);
    let forbidden = get_with_token(addr, "/admin", &token).await;
    assert_eq!(forbidden.status, 403);
    assert!(forbidden.header("www-authenticate").unwrap().contains(pointer), "{}", forbidden.body);
}
