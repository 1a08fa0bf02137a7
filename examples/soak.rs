//! Soak: a fixed number of requests with a churning mix of valid, revoked, forged and garbage
//! tokens against the middleware, with a fake `GetUser` upstream on loopback.
//!
//! ```text
//! cargo run --release --features test-util --example soak [requests] [connections]
//! ```
//!
//! Reports status counts per kind of token, `GetUser` calls and peak RSS, and exits non-zero if
//! any valid token got anything but 200 or any bad token got a 200.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_cognito::testing::{access_claims, FakeCognito, HttpConnection, TestSigner};
use actix_cognito::{CognitoAuth, CognitoUser, Verifier};
use actix_web::{web, App, HttpResponse, HttpServer};

const POOL: &str = "us-east-1_SoakPool";
const CLIENT: &str = "soakclient";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Valid,
    Revoked,
    Forged,
    Garbage,
}

/// Peak and current resident set size, in KiB, from /proc.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Sends requests on one keep-alive connection; returns the status of each.
async fn client(addr: SocketAddr, tokens: Vec<(Kind, Arc<str>)>) -> Vec<(Kind, u16)> {
    let mut conn = HttpConnection::connect(addr).await.unwrap();
    let mut out = Vec::with_capacity(tokens.len());
    for (kind, token) in tokens {
        let auth = format!("Bearer {token}");
        out.push((kind, conn.get("/me", &[("Authorization", &auth)]).await.unwrap().0));
    }
    out
}

async fn me(user: CognitoUser) -> HttpResponse {
    HttpResponse::Ok().body(user.username().to_owned())
}

#[actix_web::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let requests = args.first().copied().unwrap_or(200_000);
    let connections = args.get(1).copied().unwrap_or(16);

    let fake = FakeCognito::user("soak", &[("email", "soak@example.com")]).await.unwrap();
    fake.set_latency(Duration::from_millis(2));
    // One fake user's tokens stand for many users: no per-user call rate.
    let verifier = Verifier::builder(POOL)
        .client_id(CLIENT)
        .endpoint_url(fake.endpoint())
        .max_get_user_per_user_per_second(u32::MAX)
        .cache_ttl(Duration::from_secs(2))
        .cache_capacity(1_000)
        .negative_ttl(Duration::from_secs(1))
        .build_hydrated()
        .await
        .expect("verifier");

    // The pools of tokens: valid ones churn through a cache smaller than their number.
    let signer = TestSigner::default();
    let valid: Vec<Arc<str>> = (0..3_000)
        .map(|i| signer.sign(&access_claims(POOL, CLIENT, &format!("v{i}"), 3600)).into())
        .collect();
    let revoked: Vec<Arc<str>> =
        (0..300).map(|i| signer.sign(&access_claims(POOL, CLIENT, &format!("r{i}"), 3600)).into()).collect();
    for t in &revoked {
        fake.revoke(t);
    }
    let forged: Vec<Arc<str>> = valid
        .iter()
        .take(300)
        .map(|t| {
            let (head, _) = t.rsplit_once('.').unwrap();
            format!("{head}.{}", &revoked[0].rsplit_once('.').unwrap().1).into()
        })
        .collect();
    let garbage: Vec<Arc<str>> = (0..300).map(|i| format!("garbage{i}.not.ajwt").into()).collect();

    let auth = CognitoAuth::new(verifier.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || App::new().wrap(auth.clone()).route("/me", web::get().to(me)))
        .workers(1)
        .listen(listener)
        .unwrap()
        .disable_signals()
        .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    // A deterministic churn: mostly valid tokens, walking through the pool, with bad ones mixed in.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut plans: Vec<Vec<(Kind, Arc<str>)>> = vec![Vec::new(); connections];
    for i in 0..requests {
        let r = next();
        let pick = |pool: &Vec<Arc<str>>| pool[(r >> 8) as usize % pool.len()].clone();
        let entry = match r % 10 {
            0 => (Kind::Revoked, pick(&revoked)),
            1 => (Kind::Forged, pick(&forged)),
            2 => (Kind::Garbage, pick(&garbage)),
            _ => (Kind::Valid, valid[(i / 7 + (r as usize % 50)) % valid.len()].clone()),
        };
        plans[i % connections].push(entry);
    }

    let (_, rss_before) = rss_kib();
    let started = Instant::now();
    let tasks: Vec<_> = plans.into_iter().map(|plan| tokio::spawn(client(addr, plan))).collect();
    let counts: Arc<Mutex<BTreeMap<(Kind, u16), u64>>> = Arc::default();
    for t in tasks {
        for (kind, status) in t.await.unwrap() {
            *counts.lock().unwrap().entry((kind, status)).or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    handle.stop(true).await;
    verifier.run_pending_tasks().await;
    let (rss_peak, rss_after) = rss_kib();
    let stats = verifier.stats();

    println!("soak: {requests} requests over {connections} connections in {:.2} s", elapsed.as_secs_f64());
    println!("{:<10} {:>6} {:>10}", "token", "status", "requests");
    let counts = counts.lock().unwrap();
    let mut failures = 0;
    for ((kind, status), n) in counts.iter() {
        let wrong = match kind {
            Kind::Valid => *status != 200,
            _ => *status == 200,
        };
        if wrong {
            failures += n;
        }
        println!("{:<10} {:>6} {:>10}{}", format!("{kind:?}"), status, n, if wrong { "  WRONG" } else { "" });
    }
    println!(
        "GetUser calls: {} (fake upstream counted {}); cache hits {}, misses {}, coalesced {}",
        stats.get_user_calls,
        fake.get_user_calls(),
        stats.hits,
        stats.misses,
        stats.coalesced
    );
    println!(
        "entries: {} positive (cap 1000), {} negative; RSS before {} KiB, after {} KiB, peak {} KiB",
        stats.entries, stats.negative_entries, rss_before, rss_after, rss_peak
    );
    if failures > 0 {
        eprintln!("soak: FAILED: {failures} requests got the wrong answer");
        std::process::exit(1);
    }
    println!("soak: passed");
}
