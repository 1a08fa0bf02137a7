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
        let mut b = Verifier::builder(POOL).client_id(CLIENT).endpoint_url(fake.endpoint());
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

    let fake = FakeCognito::user("fleet", &[("email", "fleet@example.com")]).await.unwrap();
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
    println!();
    println!(
        "verify latency p50: in-process hit {:.1} µs, Redis hit {:.1} µs (a loopback Redis round trip), miss {:.2} ms (20 ms upstream)",
        p50(local).as_secs_f64() * 1e6,
        p50(shared).as_secs_f64() * 1e6,
        p50(miss).as_secs_f64() * 1e3
    );
    let _ = redis.kill();
    let _ = redis.wait();
}
