//! The server half of `scripts/bench-workers.sh`: what the middleware costs the way users pay
//! for it. Actix's default workers (one per core), the Prometheus recorder installed, and two
//! routes with the same handler (`"ok"`): `/open` without the middleware, `/protected` behind
//! `CognitoAuth` with a cached token. `GetUser` goes to an in-process fake (one call for the
//! token, then the cache answers).
//!
//! ```text
//! cargo run --release --features test-util --example workers_bench
//! ```
//!
//! Prints `{port} {token}` once listening, then serves until killed; the script loads both
//! routes with wrk and reads this process's CPU time from `/proc`.

use actix_cognito::testing::{access_claims, Behaviour, FakeCognito, TestSigner};
use actix_cognito::{CognitoAuth, Verifier};
use actix_web::{web, App, HttpResponse, HttpServer};

async fn ok() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let fake =
        FakeCognito::start(Behaviour::Claims { attributes: vec![("email".into(), "a@example.com".into())] })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    let pool = "us-east-1_BenchPool1";
    let verifier = Verifier::builder(pool)
        .client_id("benchclient")
        .endpoint_url(fake.endpoint())
        .cache_ttl(std::time::Duration::from_secs(3600))
        .build_hydrated()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let token = TestSigner::default().sign(&access_claims(pool, "benchclient", "bench-user", 7200));
    verifier.verify(&token).await.map_err(|e| std::io::Error::other(e.to_string()))?;
    let server = HttpServer::new(move || {
        App::new().route("/open", web::get().to(ok)).service(
            web::resource("/protected").wrap(CognitoAuth::new(verifier.clone())).route(web::get().to(ok)),
        )
    })
    .bind(("127.0.0.1", 0))?;
    let port = server.addrs()[0].port();
    println!("{port} {token}");
    server.run().await
}
