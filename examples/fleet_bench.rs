//! Fleet mode in figures: `GetUser` calls per token for three instances with and without Redis,
//! and what a Redis hit costs next to an in-process hit.
//!
//! ```text
//! cargo run --release --features test-util,redis --example fleet_bench
//! ```
//!
//! Starts a redis-server of its own (Debian's `redis-server` must be on the PATH) and a fake
//! `GetUser` upstream with a 20 ms round trip.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_cognito::testing::{access_claims, FakeCognito, TestSigner};
use actix_cognito::Verifier;

const POOL: &str = "us-east-1_FleetPool";
const CLIENT: &str = "fleetclient";
const TOKENS: usize = 200;

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn instances(fake: &FakeCognito, redis: Option<&str>, prefix: &str) -> Vec<Verifier> {
    let mut out = Vec::new();
    for _ in 0..3 {
        // One fake user's tokens stand for many users: no per-user call rate.
        let mut b = Verifier::builder(POOL)
            .client_id(CLIENT)
            .endpoint_url(fake.endpoint())
            .max_get_user_per_user_per_second(u32::MAX);
        if let Some(url) = redis {
            b = b.redis(url).redis_prefix(prefix);
        }
        out.push(b.build_hydrated().await.unwrap());
    }
    out
}

#[tokio::main]
async fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on the PATH (apt-get install redis-server)");
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Answers each token as the user its claims name: a shared verdict must have been made for
    // the very token's user.
    let attributes = vec![("email".to_owned(), "fleet@example.com".to_owned())];
    let fake = FakeCognito::start(actix_cognito::testing::Behaviour::Claims { attributes }).await.unwrap();
    fake.set_latency(Duration::from_millis(20));
    let signer = TestSigner::default();
    let tokens: Vec<String> =
        (0..TOKENS).map(|i| signer.sign(&access_claims(POOL, CLIENT, &format!("t{i}"), 3600))).collect();

    println!("# fleet mode: 3 instances, {TOKENS} tokens, each presented 5 times to every instance");
    println!();
    println!("| setup | GetUser calls | calls per token |");
    println!("| --- | ---: | ---: |");
    for (name, redis_url) in
        [("1 instance", None), ("3 instances, no Redis", None), ("3 instances, Redis", Some(url.as_str()))]
    {
        let fleet = instances(&fake, redis_url, &format!("bench-{name}:")).await;
        let used = if name == "1 instance" { &fleet[..1] } else { &fleet[..] };
        let before = fake.get_user_calls();
        for round in 0..5 {
            for (i, t) in tokens.iter().enumerate() {
                for v in used {
                    let _ = round;
                    v.verify(t).await.unwrap();
                }
                let _ = i;
            }
        }
        let calls = fake.get_user_calls() - before;
        println!("| {name} | {calls} | {:.2} |", calls as f64 / TOKENS as f64);
        // A figure that says Redis shares nothing is a broken benchmark, not a result.
        if redis_url.is_some() {
            assert_eq!(calls, TOKENS as u64, "the instances did not share their verdicts through Redis");
        }
    }

    // Latency: an in-process hit, a Redis hit (verified by another instance), a miss.
    let fleet = instances(&fake, Some(&url), "bench-latency:").await;
    let fresh: Vec<String> =
        (0..TOKENS).map(|i| signer.sign(&access_claims(POOL, CLIENT, &format!("l{i}"), 3600))).collect();
    let mut miss = Vec::new();
    for t in &fresh {
        let started = Instant::now();
        fleet[0].verify(t).await.unwrap();
        miss.push(started.elapsed());
    }
    let mut shared = Vec::new();
    for t in &fresh {
        let started = Instant::now();
        fleet[1].verify(t).await.unwrap();
        shared.push(started.elapsed());
    }
    let mut local = Vec::new();
    for t in &fresh {
        let started = Instant::now();
        fleet[1].verify(t).await.unwrap();
        local.push(started.elapsed());
    }
    // A bare GET of a value of the same size, on a connection of its own, in the same run.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("bench-latency:t:*").query_async(&mut conn).await.unwrap();
    let value: Vec<u8> = redis::cmd("GET").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    redis::cmd("SET").arg("bare").arg(&value).query_async::<()>(&mut conn).await.unwrap();
    let mut bare = Vec::new();
    for _ in 0..TOKENS {
        let started = Instant::now();
        let _: Vec<u8> = redis::cmd("GET").arg("bare").query_async(&mut conn).await.unwrap();
        bare.push(started.elapsed());
    }
    // What a Redis hit does besides Redis: the local checks and the RS256 signature check,
    // measured on an instance without Redis and without a cache.
    let checks_only = Verifier::builder(POOL)
        .client_id(CLIENT)
        .endpoint_url(fake.endpoint())
        .max_get_user_per_user_per_second(u32::MAX)
        .cache_ttl(Duration::ZERO)
        .build_hydrated()
        .await
        .unwrap();
    let machine = signer.sign(&serde_json::json!({
        "iss": format!("https://cognito-idp.us-east-1.amazonaws.com/{POOL}"), "sub": CLIENT, "client_id": CLIENT,
        "token_use": "access", "scope": "x/y", "exp": 4_000_000_000i64, "iat": 1_700_000_000, "jti": "m",
    }));
    let mut checks = Vec::new();
    for _ in 0..TOKENS {
        let started = Instant::now();
        checks_only.verify_principal(&machine).await.unwrap();
        checks.push(started.elapsed());
    }
    let (local, shared, miss, bare, checks) = (p50(local), p50(shared), p50(miss), p50(bare), p50(checks));
    println!();
    println!(
        "verify latency p50: in-process hit {:.1} µs, Redis hit {:.1} µs, miss {:.2} ms (20 ms upstream)",
        local.as_secs_f64() * 1e6,
        shared.as_secs_f64() * 1e6,
        miss.as_secs_f64() * 1e3
    );
    println!(
        "a bare GET of a {}-byte value: {:.1} µs p50; Redis hit / bare GET: {:.2}; the local and signature checks alone: {:.1} µs, \
         so (Redis hit - checks) / bare GET: {:.2}",
        value.len(),
        bare.as_secs_f64() * 1e6,
        shared.as_secs_f64() / bare.as_secs_f64(),
        checks.as_secs_f64() * 1e6,
        (shared.as_secs_f64() - checks.as_secs_f64()) / bare.as_secs_f64()
    );
    let _ = redis.kill();
    let _ = redis.wait();
}
