//! A replicated user pool (multi-Region replication): both regions' issuers, each with its own
//! keys, and the calls failing over to the replica while the primary is unavailable. Two fakes
//! on loopback stand in for the two regions; tokens come from the test signer.

use crate::common;

use std::time::{Duration, Instant};

use actix_cognito::testing::{access_claims, Behaviour, FakeCognito, TestSigner};
use actix_cognito::{ConfigError, Rejection, Verifier, VerifyError};
use common::{FAKE_CLIENT, FAKE_POOL};

const REPLICA: &str = "us-west-2";

fn token(sub: &str, iss: &str, signer: &TestSigner) -> String {
    let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, sub, 3600);
    claims["iss"] = iss.into();
    signer.sign(&claims)
}

fn aws_issuer(region: &str) -> String {
    format!("https://cognito-idp.{region}.amazonaws.com/{FAKE_POOL}")
}

async fn fake() -> FakeCognito {
    FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap()
}

fn builder(primary: &FakeCognito, replica: &FakeCognito) -> actix_cognito::VerifierBuilder {
    Verifier::builder(FAKE_POOL)
        .client_id(FAKE_CLIENT)
        .endpoint_url(primary.endpoint())
        .replica_region(REPLICA)
        .replica_endpoint_url(replica.endpoint())
        .failover_probe_interval(Duration::from_secs(1))
}

#[tokio::test]
async fn both_regions_issuers_pass_with_their_own_keys_and_a_third_region_costs_no_call() {
    let (primary, replica) = (fake().await, fake().await);
    // The replica signs with a key id of its own: only its JWKS has it.
    let replica_signer = TestSigner::with_kid("replica-key");
    replica.set_jwks(Some(replica_signer.jwks()));
    let v = builder(&primary, &replica).build_hydrated().await.unwrap();
    let own = TestSigner::default();
    v.verify(&token("a", &aws_issuer("us-east-1"), &own)).await.unwrap();
    let updated = format!("https://issuer-cognito-idp.us-east-1.amazonaws.com/{FAKE_POOL}");
    v.verify(&token("b", &updated, &own)).await.unwrap();
    v.verify(&token("c", &aws_issuer(REPLICA), &replica_signer)).await.unwrap();
    assert_eq!(primary.get_user_calls(), 3, "calls go to the preferred region");
    // Each issuer's tokens are checked against that issuer's keys.
    let crossed = v.verify(&token("d", &aws_issuer(REPLICA), &own)).await.unwrap_err();
    assert!(matches!(crossed, VerifyError::Rejected(_)), "{crossed:?}");
    let crossed = v.verify(&token("e", &aws_issuer("us-east-1"), &replica_signer)).await.unwrap_err();
    assert!(matches!(crossed, VerifyError::Rejected(_)), "{crossed:?}");
    // A third region's issuer is another pool: refused locally.
    let third = v.verify(&token("f", &aws_issuer("eu-west-1"), &own)).await.unwrap_err();
    assert!(matches!(third, VerifyError::Rejected(Rejection::WrongIssuer)), "{third:?}");
    assert_eq!(primary.get_user_calls() + replica.get_user_calls(), 3);
    assert_eq!(v.user_pool_ids().collect::<Vec<_>>(), [FAKE_POOL]);
    let ready = v.readiness();
    assert!(ready.ready);
    assert_eq!(
        ready.regions.iter().map(|r| (r.region.as_str(), r.available, r.preferred)).collect::<Vec<_>>(),
        [("us-east-1", true, true), (REPLICA, true, false)]
    );
}

#[tokio::test]
async fn an_unavailable_primary_fails_over_then_is_skipped_and_traffic_returns_after_a_probe() {
    let (primary, replica) = (fake().await, fake().await);
    let v = builder(&primary, &replica).build_hydrated().await.unwrap();
    let own = TestSigner::default();
    let iss = aws_issuer("us-east-1");
    v.verify(&token("warm", &iss, &own)).await.unwrap();
    primary.set_behaviour(Behaviour::Error(500, "InternalErrorException".into()));
    let started = Instant::now();
    v.verify(&token("first", &iss, &own)).await.unwrap();
    let failover = started.elapsed();
    let primary_calls = primary.get_user_calls();
    // Known down: ten new tokens go straight to the replica, none to the primary.
    let started = Instant::now();
    for i in 0..10 {
        v.verify(&token(&format!("new-{i}"), &iss, &own)).await.unwrap();
    }
    eprintln!("failover took {failover:?}; ten new tokens then took {:?}", started.elapsed());
    assert_eq!(primary.get_user_calls(), primary_calls, "a request waited on the primary known down");
    assert_eq!(replica.get_user_calls(), 11);
    let ready = v.readiness();
    assert!(ready.ready, "a region down is not unreadiness");
    assert_eq!(ready.regions.iter().map(|r| r.available).collect::<Vec<_>>(), [false, true]);
    // Recovered: after the probe interval one call tries the primary, and traffic returns.
    primary.set_behaviour(Behaviour::Claims { attributes: vec![] });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    v.verify(&token("probe", &iss, &own)).await.unwrap();
    v.verify(&token("after", &iss, &own)).await.unwrap();
    assert_eq!(primary.get_user_calls(), primary_calls + 2);
    assert_eq!(replica.get_user_calls(), 11);
    assert!(v.readiness().regions[0].available);
}

#[tokio::test]
async fn with_the_primary_refusing_connections_tokens_pass_and_sign_out_goes_through_the_replica() {
    let (primary, replica) = (fake().await, fake().await);
    let v = builder(&primary, &replica).build_hydrated().await.unwrap();
    let own = TestSigner::default();
    let iss = aws_issuer("us-east-1");
    let t = token("alice", &iss, &own);
    v.verify(&t).await.unwrap();
    // The primary region is gone: its port refuses connections. The keys stay loaded.
    drop(primary);
    for i in 0..10 {
        v.verify(&token(&format!("other-{i}"), &iss, &own)).await.unwrap();
    }
    assert_eq!(replica.get_user_calls(), 10);
    v.global_sign_out(&t).await.unwrap();
    assert_eq!(replica.global_sign_out_calls(), 1);
    let refused = v.verify(&t).await.unwrap_err();
    assert!(matches!(refused, VerifyError::Rejected(Rejection::NotAuthorized)), "{refused:?}");
}

#[tokio::test]
async fn the_preferred_region_can_be_the_replica() {
    let (primary, replica) = (fake().await, fake().await);
    let v = builder(&primary, &replica).preferred_region(REPLICA).build_hydrated().await.unwrap();
    v.verify(&token("a", &aws_issuer("us-east-1"), &TestSigner::default())).await.unwrap();
    assert_eq!((primary.get_user_calls(), replica.get_user_calls()), (0, 1));
    assert_eq!(v.readiness().regions[0].region, REPLICA);
}

#[test]
fn a_bad_replica_setting_is_refused_at_build_naming_it() {
    let base = || Verifier::builder("us-east-1_Abc123").client_id("abc");
    let cases: [(actix_cognito::VerifierBuilder, &str, &str); 7] = [
        (base().replica_region("us-east-1"), "replica_region", "not the pool's own"),
        (base().replica_region("west"), "replica_region", "a region such as"),
        (base().replica_region("cn-north-1"), "replica_region", "partition"),
        (base().pool("eu-west-1_Def456").replica_region("us-west-2"), "replica_region", "one verifier per"),
        (base().replica_region("us-west-2").preferred_region("eu-west-1"), "preferred_region", "one of"),
        (base().preferred_region("us-west-2"), "preferred_region", "set replica_region"),
        (
            base().endpoint_url("http://127.0.0.1:9").replica_region("us-west-2"),
            "replica_endpoint_url",
            "give the replica's endpoint",
        ),
    ];
    for (builder, setting, hint) in cases {
        match builder.endpoint_from_env(false).build() {
            Err(ConfigError::InvalidSetting { setting: s, reason }) => {
                assert_eq!(s, setting, "{reason}");
                assert!(reason.contains(hint), "{setting}: {reason}");
            }
            other => panic!("{setting}: {other:?}"),
        }
    }
}
