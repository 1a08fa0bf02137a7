//! Load benchmark: what the middleware costs on the cached path and on a miss.
//!
//! ```text
//! cargo run --release --features test-util --example bench [rtt_ms]
//! ```
//!
//! One process: a fake `GetUser` upstream on loopback (default 20 ms round trip, as a real
//! Cognito call takes), an Actix server with one worker thread, and a keep-alive load generator
//! on other threads. The headline figure is the server worker's own CPU time per request (read
//! from `/proc/thread-self/schedstat` around each run), which the load generator's use of the
//! other core does not disturb. Routes, all receiving the same `Authorization` header:
//!
//! - `open`: no middleware;
//! - `cached`: the middleware, token in the cache;
//! - `uncached`: caching off, one `GetUser` call per request (the plain per-request approach);
//! - `local`: a machine token on a route that allows them, caching off: signature check only;
//! - `pass-through`: an empty `from_fn` middleware, the cost actix puts on any middleware.
//!
//! Then: memory per cached principal at 100k entries, single-flight under load, and the
//! latency of a cache miss against the upstream round trip.
//!
//! `BENCH_PROFILE=memory` prints only the memory figures; `BENCH_PROFILE=uncached` (with a 0 ms
//! round trip) and `BENCH_PROFILE=1` run one route for a profiler.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use actix_cognito::testing::{access_claims, FakeCognito, HttpConnection, TestSigner};
use actix_cognito::{CognitoAuth, Principal, Verifier};
use actix_web::{web, App, HttpResponse, HttpServer};
use http::Method;

/// Counts the bytes live on the heap, for an exact figure of memory per cached principal.
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
/// Allocations made, every thread's: the difference between two routes is the middleware's.
static ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: delegates to the system allocator; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> isize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

const POOL: &str = "us-east-1_BenchPool";
const CLIENT: &str = "benchclient";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn user_claims(sub: &str) -> serde_json::Value {
    let mut claims = access_claims(POOL, CLIENT, sub, 3600);
    claims["origin_jti"] = format!("origin-{sub}").into();
    claims
}

fn machine_claims() -> serde_json::Value {
    serde_json::json!({
        "iss": format!("https://cognito-idp.us-east-1.amazonaws.com/{POOL}"),
        "sub": CLIENT, "client_id": CLIENT, "token_use": "access", "scope": "orders/read",
        "exp": now() + 3600, "iat": now(), "jti": "machine",
    })
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The open route's handler: the same answer as the protected one, without a principal.
async fn open() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// The protected routes' handler: takes the principal, as a real handler would.
async fn ok(principal: Principal) -> HttpResponse {
    let _ = principal.exp();
    HttpResponse::Ok().body("ok")
}

/// User and system CPU time of the calling thread, in clock ticks (fields 14 and 15).
fn thread_user_system_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // The command name may hold spaces; the fields after it are plain.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    (fields.get(11).copied().unwrap_or(0), fields.get(12).copied().unwrap_or(0))
}

async fn cpu() -> HttpResponse {
    let (user, system) = thread_user_system_ticks();
    HttpResponse::Ok().body(format!("{} {user} {system}", thread_cpu_ns()))
}

/// Sends `n` requests on one keep-alive connection; returns each latency.
async fn run_connection(addr: std::net::SocketAddr, path: &str, token: &str, n: usize) -> Vec<Duration> {
    let mut conn = HttpConnection::connect(addr).await.unwrap();
    let auth = format!("Bearer {token}");
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (status, _) = conn.get(path, &[("Authorization", &auth)]).await.unwrap();
        assert_eq!(status, 200, "{path}");
        latencies.push(started.elapsed());
    }
    latencies
}

/// The server worker's CPU: total ns, user ticks, system ticks.
async fn server_cpu(addr: std::net::SocketAddr) -> (u64, u64, u64) {
    let (_, body) = HttpConnection::connect(addr).await.unwrap().get("/cpu", &[]).await.unwrap();
    let v: Vec<u64> =
        std::str::from_utf8(&body).unwrap().split_whitespace().map(|f| f.parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

struct Run {
    name: &'static str,
    requests: usize,
    rps: f64,
    p50: Duration,
    p99: Duration,
    cpu_ns: f64,
    /// The share of that CPU spent in user space (the rest is the kernel's).
    user_share: f64,
    calls: u64,
    /// Allocations per request, every thread's (the load generator's too).
    allocs: f64,
}

async fn load(
    addr: std::net::SocketAddr,
    fake: &FakeCognito,
    name: &'static str,
    path: &'static str,
    token: &str,
    connections: usize,
    per_connection: usize,
) -> Run {
    let calls_before = fake.get_user_calls();
    let cpu_before = server_cpu(addr).await;
    let allocs_before = ALLOCS.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let token = token.to_owned();
            tokio::spawn(async move { run_connection(addr, path, &token, per_connection).await })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let allocs = ALLOCS.load(std::sync::atomic::Ordering::Relaxed) - allocs_before;
    let cpu_after = server_cpu(addr).await;
    latencies.sort();
    let requests = latencies.len();
    Run {
        name,
        requests,
        rps: requests as f64 / elapsed.as_secs_f64(),
        p50: latencies[requests / 2],
        p99: latencies[requests * 99 / 100],
        // Less the two /cpu requests themselves, which are negligible against thousands.
        cpu_ns: (cpu_after.0 - cpu_before.0) as f64 / requests as f64,
        user_share: {
            let (user, system) = (cpu_after.1 - cpu_before.1, cpu_after.2 - cpu_before.2);
            user as f64 / (user + system).max(1) as f64
        },
        calls: fake.get_user_calls() - calls_before,
        allocs: allocs as f64 / requests as f64,
    }
}

/// The upstream's own round trip, measured with a bare keep-alive HTTP client: p50 of 50.
async fn upstream_round_trip(fake: &FakeCognito) -> Duration {
    let mut conn = HttpConnection::connect(fake.endpoint().trim_start_matches("http://")).await.unwrap();
    let target = [("X-Amz-Target", "AWSCognitoIdentityProviderService.GetUser")];
    let mut times = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        conn.send(Method::POST, "/", &target, r#"{"AccessToken":"x"}"#).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn verifier(fake: &FakeCognito, ttl: Duration) -> actix_cognito::VerifierBuilder {
    // One fake user's tokens stand for many users: no per-user call rate.
    Verifier::builder(POOL)
        .client_id(CLIENT)
        .endpoint_url(fake.endpoint())
        .cache_ttl(ttl)
        .max_get_user_per_user_per_second(u32::MAX)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rtt_ms: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let rtt = Duration::from_millis(rtt_ms);
    let fake = FakeCognito::user("bench", &[("email", "bench@example.com"), ("email_verified", "true")])
        .await
        .unwrap();
    fake.set_latency(rtt);
    let signer = TestSigner::default();
    let user_token = signer.sign(&user_claims("bench"));
    let machine_token = signer.sign(&machine_claims());

    let cached = verifier(&fake, Duration::from_secs(600)).build_hydrated().await.unwrap();
    let uncached = verifier(&fake, Duration::ZERO).build_hydrated().await.unwrap();
    // The server runs on its own thread, one Actix worker: its CPU time is the middleware's.
    let (tx, rx) = mpsc::channel();
    let (c, u) = (cached.clone(), uncached.clone());
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            HttpServer::new(move || {
                App::new()
                    .route("/cpu", web::get().to(cpu))
                    .service(web::scope("/open").route("/me", web::get().to(open)))
                    .service(
                        web::scope("/layer")
                            .wrap(actix_web::middleware::from_fn(
                                |req: actix_web::dev::ServiceRequest,
                                 next: actix_web::middleware::Next<actix_web::body::BoxBody>| async move {
                                    next.call(req).await
                                },
                            ))
                            .route("/me", web::get().to(open)),
                    )
                    .service(
                        web::scope("/cached")
                            .wrap(CognitoAuth::new(c.clone()))
                            .route("/me", web::get().to(ok)),
                    )
                    .service(
                        web::scope("/uncached")
                            .wrap(CognitoAuth::new(u.clone()))
                            .route("/me", web::get().to(ok)),
                    )
                    .service(
                        web::scope("/local")
                            .wrap(CognitoAuth::new(u.clone()).allow_machine_tokens())
                            .route("/me", web::get().to(ok)),
                    )
            })
            .workers(1)
            .listen(listener)
            .unwrap()
            .disable_signals()
            .run()
            .await
            .unwrap();
        });
    });
    let addr = rx.recv().unwrap();

    // BENCH_PROFILE=memory: only the memory figures; =invalidations: only the burst's.
    if std::env::var("BENCH_PROFILE").as_deref() == Ok("memory") {
        memory(&fake, &signer).await;
        std::process::exit(0);
    }
    if std::env::var("BENCH_PROFILE").as_deref() == Ok("invalidations") {
        invalidation_burst(&fake).await;
        std::process::exit(0);
    }

    // Warm up: connections, the cache entry, the allocator.
    let _ = load(addr, &fake, "warm-up", "/cached/me", &user_token, 4, 2_000).await;
    let _ = load(addr, &fake, "warm-up", "/open/me", &user_token, 4, 2_000).await;

    // BENCH_PROFILE=uncached: only GetUser calls (run with a 0 ms round trip), for a profiler.
    if std::env::var("BENCH_PROFILE").as_deref() == Ok("uncached") {
        let r = load(addr, &fake, "uncached", "/uncached/me", &user_token, 16, 2_000).await;
        println!("uncached: {:.2} µs server CPU per request", r.cpu_ns / 1e3);
        std::process::exit(0);
    }
    // BENCH_PROFILE=1: only the cached route, long enough for a profiler, then exit.
    if std::env::var_os("BENCH_PROFILE").is_some() {
        let r = load(addr, &fake, "cached", "/cached/me", &user_token, 16, 40_000).await;
        println!("cached: {:.2} µs server CPU per request", r.cpu_ns / 1e3);
        std::process::exit(0);
    }
    let mut runs = Vec::new();
    for _ in 0..2 {
        runs.push(load(addr, &fake, "open", "/open/me", &user_token, 16, 10_000).await);
        runs.push(load(addr, &fake, "cached", "/cached/me", &user_token, 16, 10_000).await);
        runs.push(load(addr, &fake, "pass-through", "/layer/me", &user_token, 16, 10_000).await);
    }
    runs.push(load(addr, &fake, "uncached", "/uncached/me", &user_token, 16, 50).await);
    runs.push(load(addr, &fake, "local", "/local/me", &machine_token, 16, 2_000).await);

    println!(
        "# actix-cognito load benchmark (upstream round trip {rtt_ms} ms, 1 server worker, 16 connections)"
    );
    println!();
    println!("| route | requests | req/s | p50 | p99 | server CPU/request | of which user | of which kernel | GetUser calls | allocations/request |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &runs {
        println!(
            "| {} | {} | {:.0} | {:.0} µs | {:.0} µs | {:.2} µs | {:.2} µs | {:.2} µs | {} | {:.2} |",
            r.name,
            r.requests,
            r.rps,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.cpu_ns / 1e3,
            r.cpu_ns * r.user_share / 1e3,
            r.cpu_ns * (1.0 - r.user_share) / 1e3,
            r.calls,
            r.allocs
        );
    }
    let best = |name: &str| {
        runs.iter().filter(|r| r.name == name).min_by(|a, b| a.cpu_ns.total_cmp(&b.cpu_ns)).unwrap()
    };
    let (open, hit) = (best("open"), best("cached"));
    let fastest = |name: &str| runs.iter().filter(|r| r.name == name).map(|r| r.rps).fold(0.0, f64::max);
    println!();
    println!(
        "middleware CPU on the cached path: {:.2} µs per request ({:.2} µs protected - {:.2} µs open; best of 2 runs each); \
         user space {:.2} µs, kernel {:.2} µs",
        (hit.cpu_ns - open.cpu_ns) / 1e3,
        hit.cpu_ns / 1e3,
        open.cpu_ns / 1e3,
        (hit.cpu_ns * hit.user_share - open.cpu_ns * open.user_share) / 1e3,
        (hit.cpu_ns * (1.0 - hit.user_share) - open.cpu_ns * (1.0 - open.user_share)) / 1e3
    );
    println!("throughput protected/open: {:.2}", fastest("cached") / fastest("open"));
    println!(
        "allocations per request on the cached path beyond the open route's: {:.2} (every thread's, the load generator's alike on both)",
        hit.allocs - open.allocs
    );
    let layer = best("pass-through");
    println!(
        "of which an empty pass-through middleware layer (actix's own cost of any middleware): {:.2} µs",
        (layer.cpu_ns - open.cpu_ns) / 1e3
    );

    memory(&fake, &signer).await;
    invalidation_burst(&fake).await;

    // Single-flight under load, and the latency of a miss.
    fake.set_latency(rtt);
    let flight = verifier(&fake, Duration::from_secs(600)).build_hydrated().await.unwrap();
    let token = signer.sign(&user_claims("single-flight"));
    let calls_before = fake.get_user_calls();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1_000 {
        let (v, t) = (flight.clone(), token.clone());
        tasks.spawn(async move { v.verify(&t).await.unwrap() });
    }
    while tasks.join_next().await.is_some() {}
    let all = started.elapsed();
    println!(
        "single-flight: 1000 concurrent requests, one fresh token: {} GetUser call, all answered in {:.1} ms (round trip {rtt_ms} ms, +{:.1} ms)",
        fake.get_user_calls() - calls_before,
        all.as_secs_f64() * 1e3,
        (all.as_secs_f64() - rtt.as_secs_f64()) * 1e3
    );
    let fresh: Vec<String> = (0..200).map(|i| signer.sign(&user_claims(&format!("miss-{i}")))).collect();
    let mut misses = Vec::new();
    for t in &fresh {
        let started = Instant::now();
        flight.verify(t).await.unwrap();
        misses.push(started.elapsed());
    }
    misses.sort();
    let p50 = misses[misses.len() / 2];
    let upstream = upstream_round_trip(&fake).await;
    println!(
        "cache miss: p50 {:.2} ms, p99 {:.2} ms; the upstream's own round trip p50 {:.2} ms (nominal {rtt_ms} ms): +{:.2} ms at p50",
        p50.as_secs_f64() * 1e3,
        misses[misses.len() * 99 / 100].as_secs_f64() * 1e3,
        upstream.as_secs_f64() * 1e3,
        (p50.as_secs_f64() - upstream.as_secs_f64()) * 1e3
    );
    std::process::exit(0);
}

/// Memory per cached principal: many users with a few attributes, then realistic users with one
/// token each and with ten. Runs with no upstream latency.
async fn memory(fake: &FakeCognito, signer: &TestSigner) {
    fake.set_latency(Duration::ZERO);
    // Memory per cached principal.
    let memory = big_cache(fake);
    let tokens: Vec<String> = (0..100_000)
        .map(|i| {
            let c = user_claims(&format!("{i:08}-0000-4000-8000-000000000000"));
            actix_cognito_unsigned(&c)
        })
        .collect();
    let rss_before = rss_kib();
    let heap_before = live_bytes();
    fill(&memory, &tokens).await;
    let entries = memory.stats().entries;
    let heap = (live_bytes() - heap_before) as f64 / entries as f64;
    let rss = (rss_kib() - rss_before) as f64 * 1024.0 / entries as f64;
    println!(
        "memory per cached principal: {heap:.0} bytes on the heap (counted by the allocator), {rss:.0} bytes of RSS \
         ({entries} entries; attributes: email, email_verified, sub)"
    );
    drop(tokens);

    // Realistic users (10 attributes, about 500 bytes), one token each and ten tokens each.
    let realistic: Vec<(String, String)> = [
        ("email", "alice.example@example.com"),
        ("email_verified", "true"),
        ("phone_number", "+15555550100"),
        ("phone_number_verified", "false"),
        ("given_name", "Alice"),
        ("family_name", "Example-Longname"),
        ("zoneinfo", "Europe/London"),
        ("address", "{\"street_address\":\"1 Example Street, Flat 42\",\"locality\":\"London\",\"postal_code\":\"SW1A 1AA\",\"country\":\"GB\"}"),
        ("custom:tenant", "acme-corporation-international-holdings-europe-middle-east-and-africa-division"),
        ("custom:plan", "enterprise-annual-2026-with-premium-support-and-extended-audit-log-retention-of-seven-years"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let attribute_bytes: usize = realistic.iter().map(|(k, v)| k.len() + v.len()).sum();
    let people = FakeCognito::start(actix_cognito::testing::Behaviour::Claims { attributes: realistic })
        .await
        .unwrap();
    let per_principal = |users: usize, per_user: usize| {
        let people = &people;
        async move {
            let v = big_cache(people);
            let tokens: Vec<String> = (0..users * per_user)
                .map(|i| {
                    let mut c = user_claims(&format!("{:08}-0000-4000-8000-000000000000", i / per_user));
                    c["jti"] = format!("{i:08}-1111-4000-8000-000000000000").into();
                    c["origin_jti"] = format!("{i:08}-2222-4000-8000-000000000000").into();
                    actix_cognito_unsigned(&c)
                })
                .collect();
            let heap_before = live_bytes();
            fill(&v, &tokens).await;
            assert_eq!(v.stats().entries as usize, tokens.len());
            (live_bytes() - heap_before) as f64 / tokens.len() as f64
        }
    };
    let one = per_principal(10_000, 1).await;
    let ten = per_principal(1_000, 10).await;
    let token_len = signer.sign(&user_claims("00000000-0000-4000-8000-000000000000")).len();
    println!(
        "realistic users ({attribute_bytes} bytes in 10 attributes): {one:.0} bytes per principal with one token per user; \
         {ten:.0} per principal with 10 tokens per user ({:.2}x); a user with 10 tokens holds {:.0} bytes, {:.2}x a user with one \
         (each further token {:.0} bytes); a signed token is {token_len} bytes",
        ten / one,
        ten * 10.0,
        ten * 10.0 / one,
        (ten * 10.0 - one) / 9.0
    );
    let floor = moka_entry_bytes().await;
    println!(
        "a moka entry alone, with the verdict cache's policies and a value of its entry's size: {floor:.0} bytes \
         (the least any further token can cost while each token has its own entry)"
    );
}

/// Bytes a moka entry holds with the policies the verdict cache sets (weigher, per-entry expiry,
/// eviction listener) and a 120-byte value, as the cache's entries are.
async fn moka_entry_bytes() -> f64 {
    struct Until;
    impl moka::Expiry<u64, [u64; 15]> for Until {
        fn expire_after_create(&self, _: &u64, _: &[u64; 15], _: Instant) -> Option<Duration> {
            Some(Duration::from_secs(600))
        }
    }
    let n = 10_000u64;
    let before = live_bytes();
    let cache: moka::future::Cache<u64, [u64; 15]> = moka::future::Cache::builder()
        .max_capacity(1 << 30)
        .weigher(|_, _| 1000)
        .expire_after(Until)
        .eviction_listener(|_, _, _| {})
        .build();
    for i in 0..n {
        cache.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), [i; 15]).await;
    }
    cache.run_pending_tasks().await;
    let bytes = (live_bytes() - before) as f64 / n as f64;
    drop(cache);
    bytes
}

/// A verifier for the memory and burst runs: room for 200 000 entries, no signature check (the
/// tokens are unsigned), up to 1 000 calls in flight.
fn big_cache(fake: &FakeCognito) -> Verifier {
    verifier(fake, Duration::from_secs(600))
        .signature_check(false)
        .cache_capacity(200_000)
        .max_get_user_in_flight(1_000)
        .build()
        .unwrap()
}

/// Verifies every token, from 32 tasks, and lets the cache settle.
async fn fill(v: &Verifier, tokens: &[String]) {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in tokens.chunks(tokens.len().div_ceil(32)) {
        let (v, chunk) = (v.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for t in chunk {
                v.verify(&t).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    v.run_pending_tasks().await;
}

/// Cache hits right after a burst of `invalidate_user` calls for other users (sign-outs, events):
/// what a hit costs while the cache still has them to apply, against a hit before.
async fn invalidation_burst(fake: &FakeCognito) {
    fake.set_latency(Duration::ZERO);
    let v = big_cache(fake);
    let tokens: Vec<String> = (0..100_000)
        .map(|i| actix_cognito_unsigned(&user_claims(&format!("{i:08}-3333-4000-8000-000000000000"))))
        .collect();
    fill(&v, &tokens).await;
    // 20 000 hits on tokens the burst does not touch.
    let hits = |v: Verifier, tokens: Vec<String>| async move {
        let started = Instant::now();
        for t in &tokens {
            v.verify(t).await.unwrap();
        }
        started.elapsed().as_nanos() as f64 / tokens.len() as f64
    };
    let untouched = tokens[50_000..70_000].to_vec();
    let before = hits(v.clone(), untouched.clone()).await;
    for i in 0..1_000 {
        v.invalidate_user(&format!("{i:08}-3333-4000-8000-000000000000")).await;
    }
    let after = hits(v.clone(), untouched).await;
    println!(
        "cache hits right after 1000 invalidate_user calls (100 000 entries): {after:.0} ns each, \
         {:.2}x a hit before them ({before:.0} ns)",
        after / before
    );
}

/// An unsigned token with these claims (for the memory run, whose verifier skips signatures).
fn actix_cognito_unsigned(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.{}", b64(br#"{"alg":"RS256","kid":"k"}"#), b64(claims.to_string().as_bytes()), b64(b"sig"))
}
