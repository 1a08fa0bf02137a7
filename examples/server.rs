//! The example server: one open route, one protected route, one for admins.
//!
//! Configured only by the environment:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `COGNITO_USER_POOL_ID` | the user pool, such as `eu-west-1_AbC123xyz`, or several, comma-separated (required) |
//! | `COGNITO_CLIENT_ID` | allowed app client ids, comma-separated (required) |
//! | `COGNITO_AUDIENCE` | audiences (`aud`, RFC 8707 resource indicators) an access token must name one of, comma-separated (default: not checked) |
//! | `COGNITO_CACHE_TTL_SECS` | cache TTL, the revocation delay (default 30; 0 disables) |
//! | `COGNITO_GET_USER_BUDGET` | `GetUser` calls a second the active tokens may cost: the TTL adapts, from `COGNITO_CACHE_TTL_SECS` up (default: none, the TTL is fixed) |
//! | `COGNITO_MAX_CACHE_TTL_SECS` | the longest TTL that budget may pick (default 300) |
//! | `COGNITO_REFRESH_AHEAD` | `off`, or the share of a verdict's life after which a hit refreshes it in the background (default 0.75) |
//! | `COGNITO_MAX_CALLS_PER_USER` | most `GetUser` calls a second for one user (default 8) |
//! | `AWS_REGION` | must match the pool id if set |
//! | `AWS_ENDPOINT_URL` | an emulator's endpoint, such as `http://127.0.0.1:4566` |
//! | `AWS_CA_BUNDLE` | a PEM file of certificates to trust besides the system's, for every HTTPS call (a TLS-inspecting proxy, a private endpoint) |
//! | `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` | the proxy every call goes through, as the AWS SDK reads them |
//! | `COGNITO_ALLOW_ISSUER` | further accepted `iss` values, comma-separated (emulators with an issuer of their own) |
//! | `COGNITO_REPLICA_REGION` | a replicated pool's replica region, such as `us-west-2`: its issuer is accepted, and calls fail over to it while the pool's region is unavailable (default: none) |
//! | `COGNITO_REPLICA_ENDPOINT_URL` | the replica's endpoint, as `AWS_ENDPOINT_URL` is the pool's (an emulator standing in for the second region) |
//! | `COGNITO_PREFERRED_REGION` | which of the two regions calls go to first (default: the pool's own) |
//! | `COGNITO_STEP_UP_ACR` | `/sensitive`: authentication levels (`acr`, such as `urn:cognito:loa:3`) a token's sign-in must have reached one of, comma-separated (default: not checked) |
//! | `COGNITO_STEP_UP_MAX_AGE_SECS` | `/sensitive`: the oldest sign-in (`auth_time`) accepted, in seconds (default: not checked) |
//! | `PORT` | port on 127.0.0.1 (default 8080) |
//! | `RESOURCE_URL` | this API's identifier in its RFC 9728 metadata (default `http://127.0.0.1:{PORT}`) |
//! | `COGNITO_EVENTS_QUEUE_URL` | an SQS queue of Cognito's CloudTrail events (feature `events`; read with the app's AWS credentials) |
//! | `REDIS_URL` | fleet mode: share verdicts and sign-outs through this Redis (feature `redis`) |
//! | `REDIS_SECRET` | fleet mode: authenticate what the fleet writes to Redis (at least 32 bytes) |
//! | `REDIS_CA_FILE` | fleet mode: a private CA's PEM file for `rediss://` |
//!
//! Routes: `GET /health` (open), `GET /me`, `GET /admin` (group `admin`), `GET /sensitive` (like
//! `/me`, with the step-up requirements above; RFC 9470's challenge when unmet), `POST /logout`,
//! `GET /metrics` (Prometheus), `GET /ready` (503 until the signing keys are loaded), and
//! `GET /.well-known/oauth-protected-resource` (RFC 9728; every 401 and 403 points at it).
//!
//! No AWS credentials are read or needed, except to read `COGNITO_EVENTS_QUEUE_URL`.
//!
//! ```text
//! cargo run --example server
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/me
//! ```

use std::time::Duration;

use actix_cognito::{BearerToken, CognitoAuth, CognitoUser, Verifier};
use actix_web::{web, App, HttpResponse, HttpServer, Responder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

async fn health() -> impl Responder {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The user as JSON: username, sub, pool, attributes, groups, scopes and claims.
async fn me(user: CognitoUser) -> impl Responder {
    HttpResponse::Ok().json(&user)
}

async fn admin(user: CognitoUser) -> impl Responder {
    HttpResponse::Ok().json(json!({ "admin": user.username() }))
}

/// Signs the user out of every device (Cognito `GlobalSignOut`, authorized by the presented
/// token) and drops their verdicts everywhere: the same token is refused at once, on every
/// instance in fleet mode.
async fn logout(token: BearerToken, verifier: web::Data<Verifier>) -> HttpResponse {
    match verifier.global_sign_out(token.as_str()).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) if e.is_unavailable() => {
            HttpResponse::ServiceUnavailable().json(json!({ "error": "temporarily_unavailable" }))
        }
        Err(_) => HttpResponse::Unauthorized().json(json!({ "error": "invalid_token" })),
    }
}

async fn metrics(prometheus: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(prometheus.render())
}

/// 200 once the verifier can verify tokens, else 503; the JSON report either way.
async fn ready(verifier: web::Data<Verifier>) -> HttpResponse {
    let readiness = verifier.readiness();
    match readiness.ready {
        true => HttpResponse::Ok().json(&readiness),
        false => HttpResponse::ServiceUnavailable().json(&readiness),
    }
}

/// A variable's value, if set and not blank; a value that is not UTF-8 is refused, not read as
/// unset (a `REDIS_SECRET` must not turn into "no secret").
fn env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) => Some(v.trim().to_owned()).filter(|v| !v.is_empty()),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            fail(format!("{name} is set but is not UTF-8: fix or unset it"))
        }
    }
}

/// A variable holding a whole number, if set.
fn whole(name: &str) -> Option<u64> {
    let value = env(name)?;
    Some(value.parse().unwrap_or_else(|_| fail(format!("{name}={value:?} is not a whole number"))))
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("server: {message}");
    std::process::exit(2);
}

/// Builds the verifier from the environment, or exits naming the variable to fix.
///
/// The Cognito client starts from the app's shared AWS configuration, as every AWS service
/// does (`aws_config`): endpoint overrides, HTTP client, app name. Its region is the pool's, so
/// that the region chain never asks the instance metadata service.
async fn verifier_from_env() -> Verifier {
    let pool = env("COGNITO_USER_POOL_ID")
        .unwrap_or_else(|| fail("set COGNITO_USER_POOL_ID to the user pool id, such as eu-west-1_AbC123xyz"));
    let clients = env("COGNITO_CLIENT_ID")
        .unwrap_or_else(|| fail("set COGNITO_CLIENT_ID to the app client id (comma-separate several)"));
    let region = env("AWS_REGION").or_else(|| {
        let (region, _) = pool.split_once('_')?;
        region.contains('-').then(|| region.to_owned())
    });
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.unwrap_or_else(|| "us-east-1".to_owned())))
        .load()
        .await;
    let mut pools = pool.split(',').map(str::trim).filter(|p| !p.is_empty());
    let first = pools.next().unwrap_or_default().to_owned();
    let mut builder =
        Verifier::builder(first).client_ids(clients.split(',').map(str::trim)).sdk_config(&shared);
    for other in pools {
        builder = builder.pool(other);
    }
    for audience in env("COGNITO_AUDIENCE").iter().flat_map(|v| v.split(',')) {
        if !audience.trim().is_empty() {
            builder = builder.audience(audience.trim());
        }
    }
    if let Some(secs) = whole("COGNITO_CACHE_TTL_SECS") {
        builder = builder.cache_ttl(Duration::from_secs(secs));
    }
    if let Some(calls) = whole("COGNITO_GET_USER_BUDGET") {
        let calls = u32::try_from(calls).unwrap_or_else(|_| fail("COGNITO_GET_USER_BUDGET is too large"));
        builder = builder.get_user_budget(calls);
    }
    if let Some(secs) = whole("COGNITO_MAX_CACHE_TTL_SECS") {
        builder = builder.max_cache_ttl(Duration::from_secs(secs));
    }
    match env("COGNITO_REFRESH_AHEAD").as_deref() {
        None => {}
        Some("off") => builder = builder.refresh_ahead(false),
        Some(v) => {
            let fraction: f64 = v.parse().unwrap_or_else(|_| {
                fail(format!("COGNITO_REFRESH_AHEAD={v:?} is neither `off` nor a fraction such as 0.75"))
            });
            builder = builder.refresh_ahead_fraction(fraction);
        }
    }
    if let Some(calls) = whole("COGNITO_MAX_CALLS_PER_USER") {
        let calls = u32::try_from(calls).unwrap_or_else(|_| fail("COGNITO_MAX_CALLS_PER_USER is too large"));
        builder = builder.max_get_user_per_user_per_second(calls);
    }
    if let Some(region) = env("AWS_REGION") {
        builder = builder.region(region);
    }
    for issuer in env("COGNITO_ALLOW_ISSUER").iter().flat_map(|v| v.split(',')) {
        if !issuer.trim().is_empty() {
            builder = builder.allow_issuer(issuer.trim());
        }
    }
    if let Some(url) = env("REDIS_URL") {
        #[cfg(feature = "redis")]
        {
            builder = builder.redis(url);
            if let Some(secret) = env("REDIS_SECRET") {
                builder = builder.redis_secret(secret.into_bytes());
            }
            if let Some(path) = env("REDIS_CA_FILE") {
                let pem = std::fs::read(&path)
                    .unwrap_or_else(|e| fail(format!("REDIS_CA_FILE={path:?} cannot be read: {e}")));
                builder = builder.redis_ca_pem(pem);
            }
        }
        #[cfg(not(feature = "redis"))]
        fail(format!(
            "REDIS_URL={url:?} needs the `redis` feature: cargo run --features redis --example server"
        ));
    }
    if let Some(url) = env("COGNITO_EVENTS_QUEUE_URL") {
        #[cfg(feature = "events")]
        {
            builder = builder.events_queue(url);
        }
        #[cfg(not(feature = "events"))]
        fail(format!(
            "COGNITO_EVENTS_QUEUE_URL={url:?} needs the `events` feature: cargo run --features events --example server"
        ));
    }
    builder = replica_from_env(builder);
    if let Some(path) = env("AWS_CA_BUNDLE") {
        let pem = std::fs::read(&path)
            .unwrap_or_else(|e| fail(format!("AWS_CA_BUNDLE={path:?} cannot be read: {e}")));
        builder = builder.ca_pem(pem);
    }
    builder.build().unwrap_or_else(|e| fail(e))
}

/// A replicated pool's settings from the environment.
fn replica_from_env(mut builder: actix_cognito::VerifierBuilder) -> actix_cognito::VerifierBuilder {
    if let Some(region) = env("COGNITO_REPLICA_REGION") {
        builder = builder.replica_region(region);
    }
    if let Some(url) = env("COGNITO_REPLICA_ENDPOINT_URL") {
        builder = builder.replica_endpoint_url(url);
    }
    if let Some(region) = env("COGNITO_PREFERRED_REGION") {
        builder = builder.preferred_region(region);
    }
    builder
}

/// `/sensitive`'s middleware: `auth` with the step-up requirements of the environment.
fn step_up(auth: CognitoAuth) -> CognitoAuth {
    let mut auth = auth;
    // The builder panics at a bad value with its reason; the variable is named here.
    let checked = |name: &str, value: &str, apply: &dyn Fn(CognitoAuth) -> CognitoAuth, auth: CognitoAuth| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(auth))).unwrap_or_else(|panic| {
            let why = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            fail(format!("{name}={value:?}: {why}"))
        })
    };
    if let Some(value) = env("COGNITO_STEP_UP_ACR") {
        let levels: Vec<String> =
            value.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect();
        auth = checked("COGNITO_STEP_UP_ACR", &value, &|a| a.require_acr(levels.clone()), auth);
    }
    if let Some(secs) = whole("COGNITO_STEP_UP_MAX_AGE_SECS") {
        let max_age = Duration::from_secs(secs);
        auth =
            checked("COGNITO_STEP_UP_MAX_AGE_SECS", &secs.to_string(), &|a| a.require_max_age(max_age), auth);
    }
    auth
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Colour only for a terminal: a log file or a collector gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let port: u16 = match env("PORT") {
        Some(p) => p.parse().unwrap_or_else(|_| fail(format!("PORT={p:?} is not a port number"))),
        None => 8080,
    };
    // The recorder first: the verifier registers its metrics when it is built.
    // Durations as histograms (buckets, not a summary's quantiles), so that a fleet's
    // instances aggregate.
    let mut prometheus = PrometheusBuilder::new();
    for (name, buckets) in actix_cognito::telemetry::HISTOGRAMS {
        prometheus = prometheus
            .set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
            .unwrap_or_else(|e| fail(format!("the buckets of {name}: {e}")));
    }
    let prometheus = prometheus
        .install_recorder()
        .unwrap_or_else(|e| fail(format!("installing the Prometheus recorder: {e}")));
    let upkeep = prometheus.clone();
    actix_web::rt::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    // One verifier, built once: every worker and every wrapped scope shares its cache.
    let verifier = verifier_from_env().await;
    // The keys (and, in fleet mode, the invalidation channel) before the first request; on
    // failure they are fetched in the background, and /ready says 503 until they are loaded.
    if let Err(e) = verifier.hydrate().await {
        tracing::warn!("{e}");
    }
    let resource = env("RESOURCE_URL").unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
    let metadata = verifier.resource_metadata(resource);
    let auth = CognitoAuth::new(verifier.clone()).resource_metadata(metadata.url());
    let sensitive = step_up(auth.clone());
    tracing::info!(pool = verifier.user_pool_id(), port, "listening on 127.0.0.1");
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(verifier.clone()))
            .app_data(web::Data::new(prometheus.clone()))
            .route("/health", web::get().to(health))
            .route("/ready", web::get().to(ready))
            .route("/metrics", web::get().to(metrics))
            .service(metadata.clone().service())
            .service(web::resource("/me").wrap(auth.clone()).route(web::get().to(me)))
            .service(web::resource("/sensitive").wrap(sensitive.clone()).route(web::get().to(me)))
            .service(web::resource("/logout").wrap(auth.clone()).route(web::post().to(logout)))
            .service(
                web::resource("/admin")
                    .wrap(auth.clone().require_any_group(["admin"]))
                    .route(web::get().to(admin)),
            )
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
