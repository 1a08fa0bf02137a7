//! The per-thread front of the verdict cache never repeats a revoked verdict: every way a
//! verdict can be revoked reaches it. Each case warms the token until the front holds it (a
//! miss, a hit that files it, a hit that the front answers), revokes it one way, and checks
//! that the next request is refused. Each fails if that way of revoking skips the front.

use crate::common;

use std::time::Duration;

use actix_cognito::testing::{access_claims, Behaviour, FakeCognito, TestSigner};
use actix_cognito::{Rejection, Verifier, VerifyError};
use common::{FAKE_CLIENT, FAKE_POOL};

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A token of `sub`, issued ten seconds ago (so that a revocation now covers it), one sign-in.
fn token(sub: &str, ttl_secs: i64) -> String {
    let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, sub, ttl_secs);
    claims["iat"] = (now() - 10).into();
    claims["origin_jti"] = format!("session-{sub}").into();
    TestSigner::default().sign(&claims)
}

async fn setup() -> (FakeCognito, Verifier) {
    let fake = FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap();
    let v = Verifier::builder(FAKE_POOL)
        .client_id(FAKE_CLIENT)
        .endpoint_url(fake.endpoint())
        .cache_ttl(Duration::from_secs(300))
        .build()
        .unwrap();
    (fake, v)
}

/// Until the front answers: a miss, a hit that files the verdict, hits from the front.
async fn warm(v: &Verifier, fake: &FakeCognito, t: &str) {
    for _ in 0..4 {
        v.verify(t).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 1, "the cache did not answer");
}

async fn refused(v: &Verifier, t: &str) {
    match v.verify(t).await {
        Err(VerifyError::Rejected(Rejection::NotAuthorized)) => {}
        other => panic!("a revoked token was answered {other:?}"),
    }
}

#[tokio::test]
async fn invalidating_a_token_reaches_the_front() {
    let (fake, v) = setup().await;
    let t = token("by-token", 3600);
    warm(&v, &fake, &t).await;
    fake.revoke(&t);
    v.invalidate_token(&t).await;
    refused(&v, &t).await;
}

#[tokio::test]
async fn invalidating_a_user_by_sub_or_username_reaches_the_front() {
    let (fake, v) = setup().await;
    let (a, b) = (token("by-sub", 3600), token("by-username", 3600));
    warm(&v, &fake, &a).await;
    for _ in 0..3 {
        v.verify(&b).await.unwrap();
    }
    fake.revoke(&a);
    fake.revoke(&b);
    v.invalidate_user("by-sub").await;
    refused(&v, &a).await;
    v.invalidate_user("user-by-username").await;
    refused(&v, &b).await;
}

#[tokio::test]
async fn invalidating_a_session_or_everything_reaches_the_front() {
    let (fake, v) = setup().await;
    let (a, b) = (token("by-session", 3600), token("by-all", 3600));
    warm(&v, &fake, &a).await;
    for _ in 0..3 {
        v.verify(&b).await.unwrap();
    }
    fake.revoke(&a);
    v.invalidate_session("session-by-session").await;
    refused(&v, &a).await;
    v.verify(&b).await.unwrap();
    fake.revoke(&b);
    v.invalidate_all().await;
    refused(&v, &b).await;
}

#[tokio::test]
async fn revoking_a_user_reaches_the_front_at_no_call() {
    let (fake, v) = setup().await;
    let t = token("watermarked", 3600);
    warm(&v, &fake, &t).await;
    v.revoke_user("watermarked").await;
    refused(&v, &t).await;
    assert_eq!(fake.get_user_calls(), 1, "the watermark refuses locally");
}

#[tokio::test]
async fn a_sign_out_and_a_revoked_session_reach_the_front() {
    let (fake, v) = setup().await;
    let (a, b) = (token("signs-out", 3600), token("revokes", 3600));
    warm(&v, &fake, &a).await;
    v.global_sign_out(&a).await.unwrap();
    refused(&v, &a).await;
    for _ in 0..3 {
        v.verify(&b).await.unwrap();
    }
    fake.revoke(&b);
    v.revoke_session(&b, "refresh-token", None).await.unwrap();
    assert_eq!(fake.revoke_token_calls(), 1);
    refused(&v, &b).await;
}

#[tokio::test]
async fn a_verdict_in_the_front_ends_at_the_tokens_exp() {
    let fake = FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap();
    // No refresh point to end the front's entry first: only the verdict's end does.
    let v = Verifier::builder(FAKE_POOL)
        .client_id(FAKE_CLIENT)
        .endpoint_url(fake.endpoint())
        .cache_ttl(Duration::from_secs(300))
        .refresh_ahead(false)
        .build()
        .unwrap();
    let t = token("short-lived", 2);
    warm(&v, &fake, &t).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    match v.verify(&t).await {
        Err(VerifyError::Rejected(Rejection::Expired)) => {}
        other => panic!("an expired token was answered {other:?}"),
    }
}

#[test]
fn the_front_serves_from_any_thread_and_each_thread_sees_a_revocation() {
    let main = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (fake, v) = main.block_on(setup());
    let t = token("threads", 3600);
    main.block_on(v.verify(&t)).unwrap();
    let (warmed, revoked) = (std::sync::Barrier::new(3), std::sync::Barrier::new(3));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                // A worker thread of its own: its front fills from the shared cache.
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    for _ in 0..3 {
                        v.verify(&t).await.unwrap();
                    }
                });
                warmed.wait();
                revoked.wait();
                rt.block_on(refused(&v, &t));
            });
        }
        warmed.wait();
        assert_eq!(fake.get_user_calls(), 1);
        // A watermark, made on another thread: refused locally on each worker (no call).
        main.block_on(v.revoke_user("threads"));
        revoked.wait();
    });
}

#[tokio::test]
async fn a_fleet_invalidation_reaches_the_front_of_another_instance() {
    let (fake, redis) = (
        FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap(),
        crate::fleet::Redis::start().await,
    );
    let member = || {
        Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint()).redis(redis.url())
    };
    let (a, b) = (member().build_hydrated().await.unwrap(), member().build_hydrated().await.unwrap());
    let t = token("fleet-front", 3600);
    for _ in 0..4 {
        b.verify(&t).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    fake.revoke(&t);
    a.invalidate_user("fleet-front").await;
    let started = std::time::Instant::now();
    loop {
        match b.verify(&t).await {
            Err(VerifyError::Rejected(Rejection::NotAuthorized)) => break,
            Ok(_) => assert!(started.elapsed() < Duration::from_secs(10), "still served from the front"),
            Err(e) => panic!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
