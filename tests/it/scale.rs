//! Internet scale: a `GetUser` budget that the TTL adapts to, against moto.

use std::time::{Duration, Instant};

use crate::common;
use common::example::start;
use common::http::{get, get_with_token};
use common::PASSWORD;

/// The budget tests, one at a time: each makes 100 first calls, and two such bursts at once
/// are more than moto answers within the SDK's attempt timeout on a busy two-core machine.
static MOTO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Verifies each token, a few at a time, twice: the first calls of a population that arrives
/// at once are a burst the budget cannot spread (moto answers it slowly, and the quota guard
/// caps the calls in flight at 64), and so are the second ones, made at the floor TTL while the
/// TTL settles. After the pause the budget's TTL is in force, and the third verification of each
/// token lands on its grid.
async fn warm(tokens: &[String], verify: impl Fn(String) -> tokio::task::JoinHandle<u16>) {
    for round in 0..2 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        for chunk in tokens.chunks(8) {
            let replies: Vec<_> = chunk.iter().map(|t| verify(t.clone())).collect();
            for reply in replies {
                assert_eq!(reply.await.unwrap(), 200, "a first verification failed");
            }
        }
    }
}

/// `n` distinct access tokens of alice, each from its own sign-in.
///
/// They stand for `n` users' tokens: the verifiers under test lift the per-user call rate,
/// which one user's 100 tokens would otherwise meet (as they would Cognito's own).
async fn tokens(s: &common::Seeded, n: usize) -> Vec<String> {
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        tokens.push(s.pool.sign_in(&s.pool.client_id, "alice", PASSWORD).await.unwrap().access);
    }
    let distinct: std::collections::HashSet<&String> = tokens.iter().collect();
    assert_eq!(distinct.len(), n, "the emulator gave the same token twice");
    tokens
}

#[tokio::test]
async fn a_budget_keeps_100_tokens_under_it_and_the_ttl_follows_the_population() {
    let _moto = MOTO.lock().await;
    let s = common::seeded("budget").await;
    let tokens = tokens(&s, 100).await;
    let verifier = s
        .verifier()
        .cache_ttl(Duration::from_secs(1))
        .get_user_budget(5)
        .max_cache_ttl(Duration::from_secs(300))
        .max_get_user_per_user_per_second(1000)
        .build()
        .unwrap();
    assert_eq!(verifier.effective_cache_ttl(), Duration::from_secs(1));
    warm(&tokens, |t| {
        let v = verifier.clone();
        tokio::spawn(async move {
            if v.verify(&t).await.is_ok() {
                200
            } else {
                503
            }
        })
    })
    .await;

    // 100 tokens, each twice a second (spread over the half second, as clients are): a fixed
    // 1 s TTL would cost 100 calls a second.
    let round = |tokens: &[String]| {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, token) in tokens.iter().enumerate() {
            let (verifier, token) = (verifier.clone(), token.clone());
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(4 * i as u64)).await;
                verifier.verify(&token).await.map(|_| ())
            });
        }
        async move {
            for verdict in tasks.join_all().await {
                verdict.unwrap();
            }
        }
    };
    let started = Instant::now();
    let mut settled_at = None;
    while started.elapsed() < Duration::from_secs(16) {
        round(&tokens).await;
        if settled_at.is_none() && started.elapsed() >= Duration::from_secs(6) {
            settled_at = Some(s.proxy.get_user_calls());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let calls = s.proxy.get_user_calls() - settled_at.unwrap();
    let ttl = verifier.effective_cache_ttl();
    // About 100 / (0.85 x 5) = 23.5 s; the expiries spread over it, so any 10 s cost about 43
    // calls: under the budget's 50, with room for the hash spread's noise.
    assert!((Duration::from_secs(18)..=Duration::from_secs(27)).contains(&ttl), "{ttl:?}");
    eprintln!("{calls} GetUser calls from 6 s to 16 s; effective TTL {ttl:?}");
    assert!(calls <= 60, "{calls} calls in 10 s with a budget of 5 a second");

    // The population shrinks to 3 tokens: within two counting windows the TTL is back down.
    let shrunk = Instant::now();
    while verifier.effective_cache_ttl() > Duration::from_secs(1) {
        assert!(shrunk.elapsed() < Duration::from_secs(15), "still {:?}", verifier.effective_cache_ttl());
        round(&tokens[..3]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Not at once: the 97 tokens gone are counted until they leave the window (5 to 10 s).
    assert!(shrunk.elapsed() >= Duration::from_secs(4), "came down before the window ended");
}

#[tokio::test]
async fn a_budget_needs_a_ceiling_above_its_floor_and_a_ceiling_needs_a_budget() {
    let s = common::seeded("budget-config").await;
    let cases = [
        (s.verifier().max_cache_ttl(Duration::from_secs(60)), "get_user_budget"),
        (s.verifier().get_user_budget(0), "at least 1"),
        (
            s.verifier()
                .cache_ttl(Duration::from_secs(60))
                .get_user_budget(5)
                .max_cache_ttl(Duration::from_secs(30)),
            "at least cache_ttl",
        ),
        (s.verifier().get_user_budget(5).max_cache_ttl(Duration::from_secs(25 * 3600)), "24 hours"),
        (s.verifier().cache_ttl(Duration::ZERO).get_user_budget(5), "cache_ttl is zero"),
    ];
    for (builder, hint) in cases {
        let err = builder.build().unwrap_err().to_string();
        assert!(err.contains(hint), "{err}");
    }
}

/// The bar, through the example server: 100 tokens twice a second for 30 s with a budget of 5.
#[tokio::test]
async fn the_example_server_keeps_100_tokens_within_a_budget_of_5() {
    let _moto = MOTO.lock().await;
    let s = common::seeded("budget-example").await;
    let tokens = tokens(&s, 100).await;
    let endpoint = s.proxy.endpoint();
    let server = start(&[
        ("COGNITO_USER_POOL_ID", &s.pool.pool_id),
        ("COGNITO_CLIENT_ID", &s.pool.client_id),
        ("COGNITO_CACHE_TTL_SECS", "1"),
        ("COGNITO_MAX_CACHE_TTL_SECS", "300"),
        ("COGNITO_GET_USER_BUDGET", "5"),
        ("COGNITO_MAX_CALLS_PER_USER", "1000"),
        ("AWS_ENDPOINT_URL", &endpoint),
    ])
    .await;
    let addr = server.addr;
    warm(&tokens, |t| tokio::spawn(async move { get_with_token(addr, "/me", &t).await.status })).await;
    let started = Instant::now();
    let mut last_ten = None;
    while started.elapsed() < Duration::from_secs(30) {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, token) in tokens.iter().enumerate() {
            let token = token.clone();
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(4 * i as u64)).await;
                get_with_token(addr, "/me", &token).await
            });
        }
        for reply in tasks.join_all().await {
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
        if last_ten.is_none() && started.elapsed() >= Duration::from_secs(20) {
            last_ten = Some(s.proxy.get_user_calls());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let calls = s.proxy.get_user_calls() - last_ten.unwrap();
    assert!(calls <= 60, "{calls} GetUser calls in the last 10 s");
    let metrics = get(addr, "/metrics", &[]).await.body;
    let ttl: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("actix_cognito_effective_ttl_seconds "))
        .unwrap_or_else(|| panic!("no effective TTL gauge in {metrics}"))
        .parse()
        .unwrap();
    assert!((18.0..=27.0).contains(&ttl), "{ttl}");
    eprintln!("GetUser calls in the last 10 s: {calls}; effective TTL {ttl} s");
}
