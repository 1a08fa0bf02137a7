//! Refresh-ahead under load: the latency a short TTL costs tokens in use, with and without it.
//!
//! ```text
//! cargo run --release --features test-util --example refresh_bench [secs]
//! ```
//!
//! One process: a fake `GetUser` upstream on loopback that answers after 80 ms (a regional
//! round trip), an Actix server with its default workers (one per core), and 32 keep-alive
//! connections spread over 50 users' tokens (one each) for `secs` seconds per route (default
//! 20). Every route answers "ok" from the same handler: `/open` without the middleware, `/off`
//! behind a verifier with refresh-ahead off, `/on` with it on; both verifiers have a 2 s TTL.
//! Prints each route's p50, p99, p99.9 and p99.99 latency, how many requests took as long as a
//! `GetUser` round trip (they waited on one), requests per second, and the `GetUser` calls per
//! token per TTL.

use std::time::{Duration, Instant};

use actix_cognito::testing::{access_claims, Behaviour, FakeCognito, HttpConnection, TestSigner};
use actix_cognito::{CognitoAuth, CognitoUser, Verifier};
use actix_web::{web, App, HttpResponse, HttpServer};

const POOL: &str = "us-east-1_BenchPool";
const CLIENT: &str = "benchclient";
const USERS: usize = 50;
const CONNECTIONS: usize = 32;
const TTL: Duration = Duration::from_secs(2);

async fn open() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

async fn protected(_user: CognitoUser) -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// One route's figures.
struct Run {
    latencies: Vec<Duration>,
    secs: f64,
    calls: u64,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i]
    }
}

/// `CONNECTIONS` connections, each cycling over its share of the tokens, for `secs`.
async fn load(
    addr: std::net::SocketAddr,
    path: &str,
    tokens: &[String],
    secs: u64,
    fake: &FakeCognito,
) -> Run {
    let calls = fake.get_user_calls();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let auths: Vec<String> = tokens
            .iter()
            .skip(c)
            .step_by(CONNECTIONS)
            .chain(tokens.get(c % tokens.len()))
            .map(|t| format!("Bearer {t}"))
            .collect();
        let path = path.to_owned();
        tasks.spawn(async move {
            let mut conn = HttpConnection::connect(addr).await.unwrap();
            let mut latencies = Vec::new();
            for auth in auths.iter().cycle() {
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let (status, _) = conn.get(&path, &[("Authorization", auth)]).await.unwrap();
                assert_eq!(status, 200, "{path}");
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    let mut latencies: Vec<Duration> = tasks.join_all().await.into_iter().flatten().collect();
    latencies.sort_unstable();
    Run { latencies, secs: started.elapsed().as_secs_f64(), calls: fake.get_user_calls() - calls }
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let fake = FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap();
    fake.set_latency(Duration::from_millis(80));
    let signer = TestSigner::default();
    let tokens: Vec<String> =
        (0..USERS).map(|i| signer.sign(&access_claims(POOL, CLIENT, &format!("user-{i}"), 3600))).collect();
    let build = |refresh: bool| {
        Verifier::builder(POOL)
            .client_id(CLIENT)
            .endpoint_url(fake.endpoint())
            .cache_ttl(TTL)
            .refresh_ahead(refresh)
            .build_hydrated()
    };
    let (off, on) = (build(false).await.unwrap(), build(true).await.unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            // Actix's default: one worker per core.
            HttpServer::new(move || {
                App::new()
                    .route("/open", web::get().to(open))
                    .service(
                        web::resource("/off")
                            .wrap(CognitoAuth::new(off.clone()))
                            .route(web::get().to(protected)),
                    )
                    .service(
                        web::resource("/on")
                            .wrap(CognitoAuth::new(on.clone()))
                            .route(web::get().to(protected)),
                    )
            })
            .listen(listener)
            .unwrap()
            .disable_signals()
            .run()
            .await
            .unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    println!(
        "# refresh-ahead: upstream 80 ms, TTL {} s, {USERS} tokens, {CONNECTIONS} connections, {secs} s per route",
        TTL.as_secs()
    );
    println!();
    println!("| route | p50 | p99 | p99.9 | p99.99 | requests >= 80 ms | requests/s | GetUser calls per token per TTL |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, path) in [("open", "/open"), ("refresh-ahead off", "/off"), ("refresh-ahead on", "/on")] {
        // Every token verified on the route just before its measured run (an idle token's verdict
        // is not refreshed, so its first request after a pause waits).
        load(addr, path, &tokens, 1, &fake).await;
        let run = load(addr, path, &tokens, secs, &fake).await;
        let per_token = run.calls as f64 / USERS as f64 / (run.secs / TTL.as_secs_f64());
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let waited = run.latencies.iter().filter(|l| **l >= Duration::from_millis(80)).count();
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {waited} of {} | {:.0} | {per_token:.2} |",
            ms(run.percentile(0.5)),
            ms(run.percentile(0.99)),
            ms(run.percentile(0.999)),
            ms(run.percentile(0.9999)),
            run.latencies.len(),
            run.latencies.len() as f64 / run.secs,
        );
    }
}
