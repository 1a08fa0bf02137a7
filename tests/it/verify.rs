//! The verifier against the emulator: the local checks, `GetUser`, revocation, outages.

use crate::common;

use std::time::{Duration, Instant};

use actix_cognito::testing::{Behaviour, FakeCognito};
use actix_cognito::{Rejection, UnavailableKind, VerifyError};
use common::{altered, claims_of, rejection, seeded, unix_now, Revoke, PASSWORD};
use serde_json::json;

#[tokio::test]
async fn a_valid_token_yields_the_user_with_the_seeded_attributes() {
    let s = seeded("valid").await;
    let verifier = s.verifier().build().unwrap();
    let user = verifier.verify(&s.tokens.access).await.unwrap();

    let claims = claims_of(&s.tokens.access);
    assert_eq!(user.username(), "alice");
    assert_eq!(user.sub(), claims["sub"].as_str().unwrap());
    assert_eq!(user.email(), Some("alice@example.com"));
    assert_eq!(user.email_verified(), Some(true));
    assert_eq!(user.phone_number(), Some("+15550100"));
    assert_eq!(user.given_name(), Some("Alice"));
    assert_eq!(user.custom_attribute("tenant"), Some("acme"));
    assert_eq!(user.attribute("custom:tenant"), Some("acme"));
    assert_eq!(user.client_id(), s.pool.client_id);
    assert!(user.has_scope("aws.cognito.signin.user.admin"));
    assert_eq!(user.exp(), claims["exp"].as_i64().unwrap());
    assert_eq!(user.jti(), claims["jti"].as_str());
    assert_eq!(user.origin_jti(), claims["origin_jti"].as_str());
    assert_eq!(s.proxy.get_user_calls(), 1);
}

#[tokio::test]
async fn groups_come_from_the_token() {
    let s = seeded("groups").await;
    s.pool.add_to_group("alice", "admin").await.unwrap();
    let tokens = s.pool.sign_in(&s.pool.client_id, "alice", PASSWORD).await.unwrap();
    let user = s.verifier().build().unwrap().verify(&tokens.access).await.unwrap();
    assert_eq!(user.groups(), ["admin"]);
    assert!(user.in_group("admin"));
}

#[tokio::test]
async fn garbage_is_rejected_without_calling_cognito() {
    let s = seeded("garbage").await;
    let verifier = s.verifier().build().unwrap();
    for garbage in ["", "garbage", "a.b.c", "Bearer x", "eyJ.eyJ.sig", &"x".repeat(20_000)] {
        let r = rejection(verifier.verify(garbage).await);
        assert!(r.is_local(), "{r:?}");
    }
    assert_eq!(s.proxy.get_user_calls(), 0);
}

#[tokio::test]
async fn an_id_token_is_rejected_without_calling_cognito() {
    let s = seeded("idtoken").await;
    let verifier = s.verifier().build().unwrap();
    assert_eq!(rejection(verifier.verify(&s.tokens.id).await), Rejection::NotAccessToken);
    assert_eq!(s.proxy.get_user_calls(), 0);
}

#[tokio::test]
async fn a_token_from_another_pool_is_rejected_without_calling_cognito() {
    let s = seeded("pool-a").await;
    let other = s.emulator.create_pool("pool-b").await.unwrap();
    other.create_user("bob", PASSWORD, &[]).await.unwrap();
    let bob = other.sign_in(&other.client_id, "bob", PASSWORD).await.unwrap();
    // Cognito itself would accept bob's token: GetUser does not care which pool it is from.
    let verifier = s.verifier().client_id(&other.client_id).build().unwrap();
    assert_eq!(rejection(verifier.verify(&bob.access).await), Rejection::WrongIssuer);
    assert_eq!(s.proxy.get_user_calls(), 0);
}

#[tokio::test]
async fn a_token_from_another_app_client_of_the_pool_is_rejected_without_calling_cognito() {
    let s = seeded("two-clients").await;
    let second = s.pool.create_client("second").await.unwrap();
    let tokens = s.pool.sign_in(&second, "alice", PASSWORD).await.unwrap();
    let verifier = s.verifier().build().unwrap();
    assert_eq!(rejection(verifier.verify(&tokens.access).await), Rejection::WrongClient);
    assert_eq!(s.proxy.get_user_calls(), 0);

    // Allowing the second client lets the same token through.
    let both = s.verifier().client_id(&second).build().unwrap();
    assert_eq!(both.verify(&tokens.access).await.unwrap().client_id(), second);
}

#[tokio::test]
async fn an_expired_token_is_rejected_without_calling_cognito() {
    let s = seeded("expired").await;
    // moto's GetUser ignores `exp`: only the local check can refuse this token.
    let expired = altered(&s.tokens.access, &[("exp", json!(unix_now() - 1))]);
    let verifier = s.verifier().build().unwrap();
    assert_eq!(rejection(verifier.verify(&expired).await), Rejection::Expired);
    assert_eq!(s.proxy.get_user_calls(), 0);
}

#[tokio::test]
async fn without_the_signature_check_a_forged_token_is_refused_by_cognito() {
    let s = seeded("altered").await;
    let forged = altered(&s.tokens.access, &[("username", json!("mallory"))]);
    let verifier = s.verifier().signature_check(false).build().unwrap();
    assert_eq!(rejection(verifier.verify(&forged).await), Rejection::NotAuthorized);
    assert_eq!(s.proxy.get_user_calls(), 1);
    assert_eq!(verifier.jwks_fetches(), 0);
}

/// Revocation as Cognito sees it: with caching off, the very next request is refused.
async fn assert_revoked_by(how: Revoke, expected: &[Rejection]) {
    let s = seeded(&format!("{how:?}")).await;
    let verifier = s.verifier().cache_ttl(Duration::ZERO).build().unwrap();
    verifier.verify(&s.tokens.access).await.unwrap();
    s.revoke(how).await;
    let r = rejection(verifier.verify(&s.tokens.access).await);
    assert!(expected.contains(&r), "{how:?}: {r:?}");
    assert_eq!(s.proxy.get_user_calls(), 2);
}

#[tokio::test]
async fn a_token_is_refused_after_global_sign_out() {
    assert_revoked_by(Revoke::GlobalSignOut, &[Rejection::NotAuthorized]).await;
}

#[tokio::test]
async fn a_token_is_refused_after_admin_user_global_sign_out() {
    assert_revoked_by(Revoke::AdminUserGlobalSignOut, &[Rejection::NotAuthorized]).await;
}

#[tokio::test]
async fn a_token_is_refused_after_admin_disable_user() {
    assert_revoked_by(Revoke::AdminDisableUser, &[Rejection::NotAuthorized]).await;
}

#[tokio::test]
async fn a_token_is_refused_after_admin_delete_user() {
    assert_revoked_by(Revoke::AdminDeleteUser, &[Rejection::NotAuthorized, Rejection::UserNotFound]).await;
}

fn unavailable(r: Result<actix_cognito::CognitoUser, VerifyError>) -> actix_cognito::Unavailable {
    match r {
        Err(VerifyError::Unavailable(u)) => u,
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn cognito_refusing_connections_is_unavailable_not_a_rejection() {
    let s = seeded("down").await;
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let verifier =
        s.verifier().endpoint_url(format!("http://127.0.0.1:{port}")).jwks_url(s.jwks_url()).build().unwrap();
    let started = Instant::now();
    let u = unavailable(verifier.verify(&s.tokens.access).await);
    assert_eq!(u.kind(), UnavailableKind::Connection);
    assert!(u.retry_after() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_hanging_cognito_is_unavailable_within_the_operation_timeout() {
    let s = seeded("hang").await;
    let fake = FakeCognito::start(Behaviour::Hang).await.unwrap();
    let verifier = s
        .verifier()
        .endpoint_url(fake.endpoint())
        .jwks_url(s.jwks_url())
        .attempt_timeout(Duration::from_millis(300))
        .operation_timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let started = Instant::now();
    let u = unavailable(verifier.verify(&s.tokens.access).await);
    let took = started.elapsed();
    assert_eq!(u.kind(), UnavailableKind::Timeout);
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(1500), "{took:?}");
    // The failure was not cached: Cognito back, the same token passes.
    fake.set_behaviour(Behaviour::Forward(s.emulator.endpoint().to_owned()));
    verifier.verify(&s.tokens.access).await.unwrap();
}

#[tokio::test]
async fn the_default_timeouts_bound_a_hang_to_a_few_seconds() {
    let s = seeded("hang-default").await;
    let fake = FakeCognito::start(Behaviour::Hang).await.unwrap();
    let verifier = s.verifier().endpoint_url(fake.endpoint()).jwks_url(s.jwks_url()).build().unwrap();
    let started = Instant::now();
    assert_eq!(unavailable(verifier.verify(&s.tokens.access).await).kind(), UnavailableKind::Timeout);
    assert!(started.elapsed() < Duration::from_millis(3500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn get_user_is_sent_unsigned() {
    let s = seeded("unsigned").await;
    let verifier = s.verifier().build().unwrap();
    verifier.verify(&s.tokens.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 1);
    assert_eq!(s.proxy.signed_get_user_calls(), 0, "GetUser carried an Authorization header");
}

/// What `aws_config::defaults(..).load()` gives an app: a shared configuration, here with an
/// endpoint override, a region, credentials and no timeouts at all.
fn sdk_config(endpoint: &str, region: &str) -> aws_types::SdkConfig {
    use aws_sdk_cognitoidentityprovider::config::timeout::TimeoutConfig;
    use aws_sdk_cognitoidentityprovider::config::{
        BehaviorVersion, Credentials, Region, SharedCredentialsProvider,
    };
    aws_types::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_owned()))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::for_tests()))
        .timeout_config(TimeoutConfig::disabled())
        .build()
}

#[tokio::test]
async fn an_sdk_config_is_used_as_given_but_the_crates_timeouts_still_bound_every_call() {
    let s = seeded("sdk-config").await;
    let conf = sdk_config(&s.proxy.endpoint(), "us-east-1");
    let verifier = actix_cognito::Verifier::builder(&s.pool.pool_id)
        .client_id(&s.pool.client_id)
        .endpoint_from_env(false)
        .sdk_config(&conf)
        .operation_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    // The endpoint came from the SdkConfig (through the counting proxy), and the call was not
    // signed with its credentials.
    assert_eq!(verifier.verify(&s.tokens.access).await.unwrap().username(), "alice");
    assert_eq!((s.proxy.get_user_calls(), s.proxy.signed_get_user_calls()), (1, 0));

    // A hanging upstream, with an SdkConfig that sets no timeout: the crate's cuts the call.
    let hang = FakeCognito::start(Behaviour::Hang).await.unwrap();
    let conf = sdk_config(&hang.endpoint(), "us-east-1");
    let verifier = actix_cognito::Verifier::builder(&s.pool.pool_id)
        .client_id(&s.pool.client_id)
        .endpoint_from_env(false)
        .sdk_config(&conf)
        .jwks_url(s.jwks_url())
        .operation_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = verifier.verify(&s.tokens.access).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_sdk_configs_region_serves_only_pools_that_name_none() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let conf = sdk_config(&fake.endpoint(), "eu-central-1");
    let named =
        actix_cognito::Verifier::builder("us-east-1_Abc").client_id("c1").sdk_config(&conf).build().unwrap();
    assert_eq!(named.region(), "us-east-1");
    let unnamed =
        actix_cognito::Verifier::builder("local_Abc").client_id("c1").sdk_config(&conf).build().unwrap();
    assert_eq!(unnamed.region(), "eu-central-1");
}
