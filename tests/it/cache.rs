//! The verdict cache: call counts, expiry, negative entries, invalidation, stale-if-error.
//!
//! Call counts come from a fake upstream; the revocation-delay tests use the emulator.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_cognito::testing::{Behaviour, FakeCognito};
use actix_cognito::{Rejection, Verifier, VerifyError};
use common::{fake_token, seeded, Revoke, FAKE_CLIENT, FAKE_POOL};

async fn fake() -> FakeCognito {
    FakeCognito::user("alice", &[("email", "alice@example.com")]).await.unwrap()
}

fn verifier(fake: &FakeCognito) -> actix_cognito::VerifierBuilder {
    Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint())
}

#[tokio::test]
async fn concurrent_requests_with_one_fresh_token_cost_one_call() {
    let fake = fake().await;
    fake.set_latency(Duration::from_millis(100));
    let verifier = verifier(&fake).build().unwrap();
    let token = Arc::new(fake_token("s1", 3600));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..256 {
        let (v, t) = (verifier.clone(), token.clone());
        tasks.spawn(async move { v.verify(&t).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap().username(), "alice");
    }
    assert_eq!(fake.get_user_calls(), 1);
    let stats = verifier.stats();
    assert_eq!(stats.get_user_calls, 1);
    assert_eq!(stats.hits + stats.misses, 256);
    assert_eq!(stats.coalesced, stats.misses - 1);
}

#[tokio::test]
async fn repeats_within_the_ttl_cost_no_more_calls() {
    let fake = fake().await;
    let verifier = verifier(&fake).build().unwrap();
    let token = fake_token("s1", 3600);
    verifier.verify(&token).await.unwrap();
    for _ in 0..100 {
        verifier.verify(&token).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 1);
    assert_eq!(verifier.stats().hits, 100);
}

#[tokio::test]
async fn a_cached_verdict_ends_with_the_ttl() {
    let fake = fake().await;
    let verifier = verifier(&fake).cache_ttl(Duration::from_millis(300)).build().unwrap();
    let token = fake_token("s1", 3600);
    verifier.verify(&token).await.unwrap();
    verifier.verify(&token).await.unwrap();
    assert_eq!(fake.get_user_calls(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    verifier.verify(&token).await.unwrap();
    assert_eq!(fake.get_user_calls(), 2);
}

#[tokio::test]
async fn an_entry_never_outlives_the_token_exp() {
    let fake = fake().await;
    let verifier = verifier(&fake).cache_ttl(Duration::from_secs(600)).build().unwrap();
    let token = fake_token("s1", 2);
    let exp = verifier.verify(&token).await.unwrap().expires_at();
    // Served from the cache until exp...
    verifier.verify(&token).await.unwrap();
    assert_eq!(fake.get_user_calls(), 1);
    // ...and refused from the first instant after it, with no call: the fake would accept it.
    let wait = exp.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert_eq!(verifier.verify(&token).await.unwrap_err(), VerifyError::Rejected(Rejection::Expired));
    assert_eq!(fake.get_user_calls(), 1);
}

#[tokio::test]
async fn ttl_zero_costs_one_call_per_request() {
    let fake = fake().await;
    let verifier = verifier(&fake).cache_ttl(Duration::ZERO).build().unwrap();
    let token = fake_token("s1", 3600);
    for _ in 0..5 {
        verifier.verify(&token).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 5);
    verifier.run_pending_tasks().await;
    assert_eq!(verifier.stats().entries, 0);
}

#[tokio::test]
async fn a_replayed_revoked_token_costs_one_call_per_negative_ttl() {
    let fake = fake().await;
    fake.set_behaviour(Behaviour::Error(400, "NotAuthorizedException".into()));
    let verifier = verifier(&fake).negative_ttl(Duration::from_millis(500)).build().unwrap();
    let token = fake_token("s1", 3600);
    for _ in 0..20 {
        let err = verifier.verify(&token).await.unwrap_err();
        assert_eq!(err, VerifyError::Rejected(Rejection::NotAuthorized));
    }
    assert_eq!(fake.get_user_calls(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..20 {
        verifier.verify(&token).await.unwrap_err();
    }
    assert_eq!(fake.get_user_calls(), 2);
    let stats = verifier.stats();
    assert_eq!(stats.rejected(Rejection::NotAuthorized), 40);
    assert_eq!(stats.negative_hits, 38);
}

#[tokio::test]
async fn an_unavailable_verdict_is_not_cached() {
    let fake = fake().await;
    fake.set_behaviour(Behaviour::Error(500, "InternalErrorException".into()));
    let verifier = verifier(&fake).max_attempts(1).build().unwrap();
    let token = fake_token("s1", 3600);
    for n in 1..=3 {
        assert!(verifier.verify(&token).await.unwrap_err().is_unavailable());
        assert_eq!(fake.get_user_calls(), n);
    }
    fake.set_behaviour(Behaviour::User { username: "alice".into(), attributes: vec![] });
    verifier.verify(&token).await.unwrap();
    assert_eq!(fake.get_user_calls(), 4);
    assert_eq!(verifier.stats().unavailable, 3);
}

#[tokio::test]
async fn throttling_is_unavailable_not_a_rejection() {
    let fake = fake().await;
    fake.set_behaviour(Behaviour::Error(400, "TooManyRequestsException".into()));
    let verifier = verifier(&fake).build().unwrap();
    match verifier.verify(&fake_token("s1", 3600)).await {
        Err(VerifyError::Unavailable(u)) => assert_eq!(u.kind(), actix_cognito::UnavailableKind::Throttled),
        other => panic!("{other:?}"),
    }
    for (status, code) in [(403, "ForbiddenException"), (503, "SomethingNew"), (400, "WhatIsThisException")] {
        fake.set_behaviour(Behaviour::Error(status, code.into()));
        let err = verifier.verify(&fake_token(code, 3600)).await.unwrap_err();
        assert!(err.is_unavailable(), "{code}: {err:?}");
    }
}

#[tokio::test]
async fn invalidate_user_forces_a_new_call_for_every_token_of_that_user() {
    let fake = fake().await;
    let verifier = verifier(&fake).build().unwrap();
    let (a1, a2, b) = (fake_token("sub-a", 3600), fake_token("sub-a", 3599), fake_token("sub-b", 3600));
    for t in [&a1, &a2, &b] {
        verifier.verify(t).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 3);
    // The fake answers with its own `sub`-less attributes, so `sub` comes from the token.
    verifier.invalidate_user("sub-a").await;
    for t in [&a1, &a2, &b] {
        verifier.verify(t).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 5);

    verifier.invalidate_token(&b).await;
    verifier.verify(&b).await.unwrap();
    assert_eq!(fake.get_user_calls(), 6);

    verifier.invalidate_all().await;
    for t in [&a1, &a2, &b] {
        verifier.verify(t).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 9);
}

#[tokio::test]
async fn invalidate_user_by_username_works_too() {
    let fake = fake().await;
    let verifier = verifier(&fake).build().unwrap();
    let token = fake_token("s1", 3600);
    verifier.verify(&token).await.unwrap();
    verifier.invalidate_user("alice").await;
    verifier.verify(&token).await.unwrap();
    assert_eq!(fake.get_user_calls(), 2);
}

#[tokio::test]
async fn stale_if_error_serves_within_the_grace_and_not_after() {
    let fake = fake().await;
    let verifier = verifier(&fake)
        .cache_ttl(Duration::from_millis(200))
        .stale_if_error(Duration::from_millis(1000))
        .build()
        .unwrap();
    let token = fake_token("s1", 3600);
    verifier.verify(&token).await.unwrap();
    fake.set_behaviour(Behaviour::Error(500, "InternalErrorException".into()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Past the TTL, within the grace: Cognito is asked, fails, and the stale verdict serves.
    verifier.verify(&token).await.unwrap();
    assert!(fake.get_user_calls() >= 2);
    assert_eq!(verifier.stats().stale_served, 1);
    // Past TTL + grace: unavailable.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(verifier.verify(&token).await.unwrap_err().is_unavailable());
}

#[tokio::test]
async fn stale_if_error_never_overrides_a_rejection() {
    let fake = fake().await;
    let verifier = verifier(&fake)
        .cache_ttl(Duration::from_millis(100))
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    let token = fake_token("s1", 3600);
    verifier.verify(&token).await.unwrap();
    fake.set_behaviour(Behaviour::Error(400, "NotAuthorizedException".into()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(verifier.verify(&token).await.unwrap_err(), VerifyError::Rejected(Rejection::NotAuthorized));
}

#[tokio::test]
async fn a_rejection_drops_the_stale_copy_so_an_outage_cannot_bring_it_back() {
    let fake = fake().await;
    // No negative cache: what keeps the revoked token out is the stale copy being gone.
    let verifier = verifier(&fake)
        .cache_ttl(Duration::from_millis(100))
        .negative_ttl(Duration::ZERO)
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    let token = fake_token("s1", 3600);
    verifier.verify(&token).await.unwrap();
    fake.revoke(&token);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(common::rejection(verifier.verify(&token).await), Rejection::NotAuthorized);
    // Cognito goes down, or an attacker trips the local quota cap.
    fake.set_behaviour(Behaviour::Error(500, "InternalErrorException".into()));
    assert!(verifier.verify(&token).await.unwrap_err().is_unavailable());
    assert_eq!(verifier.stats().stale_served, 0);
}

#[tokio::test]
async fn an_invalidated_users_stale_copies_are_gone_so_an_outage_cannot_bring_them_back() {
    let fake = fake().await;
    let verifier = verifier(&fake)
        .cache_ttl(Duration::from_millis(100))
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    let (by_user, by_name, by_token, bystander) = (
        fake_token("stale-a", 3600),
        fake_token("stale-b", 3600),
        fake_token("stale-c", 3600),
        fake_token("stale-d", 3600),
    );
    for token in [&by_user, &by_name, &by_token, &bystander] {
        verifier.verify(token).await.unwrap();
    }
    // Past the TTL, and past moka's timer wheel (about a second a slot) removing the expired
    // entries: only the stale copies are left.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    verifier.run_pending_tasks().await;
    verifier.invalidate_user("stale-a").await;
    verifier.invalidate_token(&by_token).await;
    fake.set_behaviour(Behaviour::Error(500, "InternalErrorException".into()));
    for token in [&by_user, &by_token] {
        assert!(verifier.verify(token).await.unwrap_err().is_unavailable());
    }
    assert_eq!(verifier.stats().stale_served, 0);
    verifier.verify(&bystander).await.unwrap();
    assert_eq!(verifier.stats().stale_served, 1);
    // By username: this fake answers every token as alice.
    verifier.invalidate_user("alice").await;
    assert!(verifier.verify(&by_name).await.unwrap_err().is_unavailable());
    assert_eq!(verifier.stats().stale_served, 1);
}

#[tokio::test]
async fn a_request_that_joins_a_call_started_before_a_sign_out_is_not_let_through() {
    let fake = fake().await;
    fake.set_latency(Duration::from_millis(600));
    let verifier = verifier(&fake).build().unwrap();
    let token = fake_token("joiner", 3600);
    let first = tokio::spawn({
        let (v, token) = (verifier.clone(), token.clone());
        async move { v.verify(&token).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    // What POST /logout does: Cognito revokes the token, then the verdicts go.
    fake.revoke(&token);
    verifier.invalidate_user("joiner").await;
    // Started after the sign-out answered, while the first call is still on its way.
    let after = verifier.verify(&token).await;
    assert_eq!(common::rejection(after), Rejection::NotAuthorized);
    // The first request started before the sign-out; whatever it got, nothing is cached now.
    let _ = first.await.unwrap();
    assert_eq!(common::rejection(verifier.verify(&token).await), Rejection::NotAuthorized);
}

#[tokio::test]
async fn invalidate_token_forgets_a_remembered_rejection_too() {
    let fake = fake().await;
    let verifier = verifier(&fake).build().unwrap();
    let token = fake_token("re-enabled", 3600);
    fake.set_behaviour(Behaviour::Error(400, "NotAuthorizedException".into()));
    assert_eq!(common::rejection(verifier.verify(&token).await), Rejection::NotAuthorized);
    // The user is enabled again: the remembered rejection still answers, until it is forgotten.
    fake.set_behaviour(Behaviour::User { username: "alice".into(), attributes: vec![] });
    assert_eq!(common::rejection(verifier.verify(&token).await), Rejection::NotAuthorized);
    verifier.invalidate_token(&token).await;
    verifier.verify(&token).await.unwrap();
    assert_eq!(fake.get_user_calls(), 2);
}

#[tokio::test]
async fn stale_if_error_is_off_by_default() {
    let fake = fake().await;
    let verifier = verifier(&fake).cache_ttl(Duration::from_millis(100)).build().unwrap();
    let token = fake_token("s1", 3600);
    verifier.verify(&token).await.unwrap();
    fake.set_behaviour(Behaviour::Error(500, "InternalErrorException".into()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(verifier.verify(&token).await.unwrap_err().is_unavailable());
}

#[tokio::test]
async fn the_capacity_bound_holds_under_20k_distinct_tokens() {
    let fake = fake().await;
    // Signing 100k tokens would dominate the run; the signature check is not what is measured.
    let verifier = verifier(&fake).cache_capacity(200).signature_check(false).build().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let v = verifier.clone();
        tasks.spawn(async move {
            for i in 0..(20_000 / 32 + 1) {
                let claims = common::access_claims(FAKE_POOL, FAKE_CLIENT, &format!("{worker}-{i}"), 3600);
                v.verify(&common::token_with(&claims)).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    verifier.run_pending_tasks().await;
    let stats = verifier.stats();
    assert!(stats.get_user_calls >= 20_000);
    assert!(stats.entries <= 200, "{} entries", stats.entries);
}

/// Revocation is visible within TTL + 1 s, whichever way the token was revoked.
async fn assert_revocation_seen_within_ttl(how: Revoke) {
    let ttl = Duration::from_secs(1);
    let s = seeded(&format!("ttl-{how:?}")).await;
    let verifier = s.verifier().cache_ttl(ttl).build().unwrap();
    verifier.verify(&s.tokens.access).await.unwrap();
    s.revoke(how).await;
    let revoked_at = Instant::now();
    loop {
        match verifier.verify(&s.tokens.access).await {
            Ok(_) => {
                assert!(revoked_at.elapsed() < ttl, "still accepted {:?} after {how:?}", revoked_at.elapsed())
            }
            Err(e) => {
                assert!(e.rejection().is_some(), "{e:?}");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(revoked_at.elapsed() <= ttl + Duration::from_secs(1), "{:?}", revoked_at.elapsed());
}

#[tokio::test]
async fn global_sign_out_is_seen_within_the_ttl() {
    assert_revocation_seen_within_ttl(Revoke::GlobalSignOut).await;
}

#[tokio::test]
async fn a_disabled_user_is_seen_within_the_ttl() {
    assert_revocation_seen_within_ttl(Revoke::AdminDisableUser).await;
}

#[tokio::test]
async fn a_deleted_user_is_seen_within_the_ttl() {
    assert_revocation_seen_within_ttl(Revoke::AdminDeleteUser).await;
}

#[tokio::test]
async fn admin_user_global_sign_out_is_seen_within_the_ttl() {
    assert_revocation_seen_within_ttl(Revoke::AdminUserGlobalSignOut).await;
}

#[tokio::test]
async fn revoke_user_refuses_cached_tokens_issued_before_it_without_a_call() {
    let fake = fake().await;
    let verifier = verifier(&fake).build().unwrap();
    let mut claims = common::access_claims(FAKE_POOL, FAKE_CLIENT, "disabled-by-admin", 3600);
    claims["iat"] = (common::unix_now() - 30).into();
    let old = actix_cognito::testing::TestSigner::default().sign(&claims);
    verifier.verify(&old).await.unwrap();
    verifier.revoke_user("disabled-by-admin").await;
    assert_eq!(common::rejection(verifier.verify(&old).await), Rejection::NotAuthorized);
    verifier.invalidate_token(&old).await;
    assert_eq!(common::rejection(verifier.verify(&old).await), Rejection::NotAuthorized);
    assert_eq!(fake.get_user_calls(), 1);
    verifier.verify(&fake_token("disabled-by-admin", 3600)).await.unwrap();
}
