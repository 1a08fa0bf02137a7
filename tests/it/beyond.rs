//! Tokens beyond `GetUser`'s reach: managed-login tokens through userInfo, ID tokens,
//! refresh-token revocation. No emulator implements userInfo or `RevokeToken` faithfully: these
//! run against the loopback fake.

use std::time::{Duration, Instant};

use actix_cognito::testing::{Behaviour, FakeCognito, TestSigner};
use actix_cognito::{Rejection, Verifier};

use crate::common::{self, access_claims, rejection, FAKE_CLIENT, FAKE_POOL};

/// An access token from the managed login pages: `openid email profile`, no admin scope.
fn managed_login_token(sub: &str) -> String {
    let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, sub, 3600);
    claims["scope"] = "openid email profile".into();
    TestSigner::default().sign(&claims)
}

fn with_user_info(fake: &FakeCognito) -> actix_cognito::VerifierBuilder {
    Verifier::builder(FAKE_POOL)
        .client_id(FAKE_CLIENT)
        .endpoint_url(fake.endpoint())
        .user_info_domain(fake.endpoint())
}

#[tokio::test]
async fn a_managed_login_token_with_openid_passes_through_user_info_once_for_256_requests() {
    let fake = FakeCognito::user("alice", &[("email", "alice@example.com"), ("custom:tenant", "acme")])
        .await
        .unwrap();
    fake.set_latency(Duration::from_millis(50));
    let verifier = with_user_info(&fake).build().unwrap();
    let token = managed_login_token("managed");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..256 {
        let (v, t) = (verifier.clone(), token.clone());
        tasks.spawn(async move { v.verify(&t).await });
    }
    while let Some(r) = tasks.join_next().await {
        let user = r.unwrap().unwrap();
        assert_eq!((user.username(), user.sub()), ("alice", "managed"));
        assert_eq!(
            (user.email(), user.custom_attribute("tenant")),
            (Some("alice@example.com"), Some("acme"))
        );
        assert!(user.has_scope("openid"));
    }
    assert_eq!((fake.user_info_calls(), fake.get_user_calls()), (1, 0));
}

#[tokio::test]
async fn without_openid_or_without_a_domain_it_is_refused_locally() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, "no-openid", 3600);
    claims["scope"] = "email profile".into();
    let no_openid = TestSigner::default().sign(&claims);
    let verifier = with_user_info(&fake).build().unwrap();
    assert_eq!(rejection(verifier.verify(&no_openid).await), Rejection::MissingAdminScope);
    let plain =
        Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint()).build().unwrap();
    assert_eq!(
        rejection(plain.verify(&managed_login_token("no-domain")).await),
        Rejection::MissingAdminScope
    );
    assert_eq!((fake.user_info_calls(), fake.get_user_calls()), (0, 0));
}

#[tokio::test]
async fn a_user_info_401_is_a_rejection_and_is_remembered() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let verifier = with_user_info(&fake).build().unwrap();
    let token = managed_login_token("signed-out");
    fake.revoke(&token);
    assert_eq!(rejection(verifier.verify(&token).await), Rejection::NotAuthorized);
    assert_eq!(rejection(verifier.verify(&token).await), Rejection::NotAuthorized);
    assert_eq!(fake.user_info_calls(), 1);
}

#[tokio::test]
async fn a_hanging_or_failing_user_info_is_unavailability_within_the_timeout() {
    let fake = FakeCognito::start(Behaviour::Hang).await.unwrap();
    fake.set_jwks(Some(TestSigner::default().jwks()));
    let verifier = with_user_info(&fake).operation_timeout(Duration::from_millis(300)).build().unwrap();
    let started = Instant::now();
    assert!(verifier.verify(&managed_login_token("hang")).await.unwrap_err().is_unavailable());
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    for (status, code) in [(500, "InternalError"), (429, "TooManyRequests")] {
        fake.set_behaviour(Behaviour::Error(status, code.into()));
        let err = verifier.verify(&managed_login_token(code)).await.unwrap_err();
        assert!(err.is_unavailable(), "{status}: {err:?}");
    }
}

#[tokio::test]
async fn tokens_with_the_admin_scope_keep_using_get_user() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let verifier = with_user_info(&fake).build().unwrap();
    verifier.verify(&common::fake_token("admin-scope", 3600)).await.unwrap();
    assert_eq!((fake.user_info_calls(), fake.get_user_calls()), (0, 1));
}

/// An access token of one sign-in (`origin_jti`) of user `sub`.
fn session_token(sub: &str, session: &str, n: u32) -> String {
    let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, sub, 3600);
    claims["origin_jti"] = session.into();
    claims["jti"] = format!("{session}-{n}").into();
    TestSigner::default().sign(&claims)
}

#[tokio::test]
async fn a_revoked_session_is_refused_at_once_and_the_users_other_sessions_are_untouched() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let verifier =
        Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint()).build().unwrap();
    let (first, second) = (session_token("alice", "laptop", 1), session_token("alice", "laptop", 2));
    let phone = session_token("alice", "phone", 1);
    for token in [&first, &second, &phone] {
        verifier.verify(token).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 3);
    // Cognito revokes every access token of the refresh token's session.
    fake.revoke(&first);
    fake.revoke(&second);
    verifier.revoke_session(&first, "the-refresh-token", None).await.unwrap();
    assert_eq!(fake.revoke_token_calls(), 1);
    assert_eq!(rejection(verifier.verify(&first).await), Rejection::NotAuthorized);
    assert_eq!(rejection(verifier.verify(&second).await), Rejection::NotAuthorized);
    // The phone's session is still cached: no call.
    verifier.verify(&phone).await.unwrap();
    assert_eq!(fake.get_user_calls(), 5);

    // Revoked elsewhere: the app says which session.
    fake.revoke(&phone);
    verifier.invalidate_session("phone").await;
    assert_eq!(rejection(verifier.verify(&phone).await), Rejection::NotAuthorized);

    // Cognito refusing the revocation (not enabled on the client, a wrong secret) is not a
    // rejection of the token: nothing is dropped.
    let other = session_token("alice", "tablet", 1);
    verifier.verify(&other).await.unwrap();
    fake.set_behaviour(Behaviour::Error(400, "UnsupportedOperationException".into()));
    assert!(verifier.revoke_session(&other, "rt", Some("secret")).await.unwrap_err().is_unavailable());
    fake.set_behaviour(Behaviour::User { username: "alice".into(), attributes: vec![] });
    let calls = fake.get_user_calls();
    verifier.verify(&other).await.unwrap();
    assert_eq!(fake.get_user_calls(), calls);
}
