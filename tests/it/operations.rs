//! Operations: metrics that move as the requests say, readiness, RFC 9728 metadata.

use crate::common;

use std::time::{Duration, Instant};

use actix_cognito::testing::{Behaviour, FakeCognito};
use actix_cognito::{ConfigError, Verifier, VerifierBuilder};
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
    // Hits are counted per thread, and exported every second or when asked.
    verifier.run_pending_tasks().await;
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

/// `authorization_attributes` against moto: a client that lets its users write
/// `custom:tenant` (by listing it, or by keeping Cognito's default) stops the start with the
/// attribute, the client and the fix; a client whose write list leaves it out starts. Without
/// credentials the check is skipped (a warning), never a failure.
#[tokio::test]
async fn attributes_that_authorization_reads_must_not_be_writable_by_users() {
    use aws_sdk_cognitoidentityprovider::config::{Credentials, Region};
    let s = common::seeded("attribute-trust").await;
    let admin = s.emulator.admin();
    let create = |name: &'static str, write: Option<Vec<&'static str>>| {
        let call = admin.create_user_pool_client().user_pool_id(&s.pool.pool_id).client_name(name);
        let call = match write {
            Some(w) => call.set_write_attributes(Some(w.into_iter().map(String::from).collect())),
            None => call,
        };
        async move { call.send().await.unwrap().user_pool_client.unwrap().client_id.unwrap() }
    };
    let locked = create("locked", Some(vec!["email", "given_name"])).await;
    let open = create("open", Some(vec!["email", "custom:tenant"])).await;
    let default = create("default", None).await;
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new(s.emulator.region().to_owned()))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .load()
        .await;
    let builder = |client: &str| {
        Verifier::builder(&s.pool.pool_id)
            .client_id(client)
            .sdk_config(&shared)
            .endpoint_url(s.emulator.endpoint())
            .authorization_attributes(["custom:tenant"])
    };
    builder(&locked).build_hydrated().await.expect("no client can write custom:tenant");
    for (client, explicit) in [(&open, "among its WriteAttributes"), (&default, "no WriteAttributes list")] {
        let err = builder(client).build_hydrated().await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ConfigError::WritableAttribute { .. }), "{message}");
        assert!(message.contains("custom:tenant") && message.contains(client.as_str()), "{message}");
        assert!(message.contains(explicit) && message.contains("--write-attributes"), "{message}");
    }
    // Both clients at once: the open one is found, whichever pool order.
    let err = builder(&locked).client_id(&open).build_hydrated().await.unwrap_err();
    assert!(
        matches!(err, ConfigError::WritableAttribute { ref client_id, .. } if *client_id == open),
        "{err}"
    );
    // Without credentials: skipped, with a warning.
    let unsigned = Verifier::builder(&s.pool.pool_id)
        .client_id(&open)
        .endpoint_url(s.emulator.endpoint())
        .authorization_attributes(["custom:tenant"]);
    unsigned.build_hydrated().await.expect("skipped without credentials");
}
