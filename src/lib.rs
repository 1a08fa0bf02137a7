//! Trust a Cognito access token only as long as Cognito itself does.
//!
//! Each bearer token is checked locally (shape, `token_use`, `iss`, `client_id`, `exp`), then
//! sent to Cognito's `GetUser` API, which refuses tokens that were revoked by a sign-out and
//! tokens of disabled or deleted users. A positive answer is cached briefly (the cache TTL is
//! the revocation delay, and an entry never outlives the token's `exp`), and the user's
//! attributes come with it.
//!
//! `GetUser` needs no AWS credentials: the token is the authorization.
//!
//! # Quick start
//!
//! ```no_run
//! use actix_cognito::{BearerToken, CognitoAuth, CognitoUser, Verifier};
//! use actix_web::{web, App, HttpServer, Responder};
//!
//! async fn me(user: CognitoUser) -> impl Responder {
//!     format!("{} ({}) <{}>", user.username(), user.pool_id(), user.email().unwrap_or("-"))
//! }
//!
//! async fn logout(token: BearerToken, verifier: web::Data<Verifier>) -> impl Responder {
//!     // Revokes every token of the sign-in, and drops their verdicts at once.
//!     verifier.global_sign_out(token.as_str()).await.map(|()| "signed out").map_err(|e| {
//!         actix_web::error::ErrorServiceUnavailable(e.to_string())
//!     })
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
//!     // Once, outside HttpServer::new: every worker and every scope shares its cache.
//!     let verifier = Verifier::builder("eu-west-1_AbC123xyz")
//!         .client_id("4p1l2vq8example")
//!         .sdk_config(&shared)
//!         .build_hydrated() // a wrong pool id, region or network fails here, naming the fix
//!         .await?;
//!     HttpServer::new(move || {
//!         App::new().app_data(web::Data::new(verifier.clone())).service(
//!             web::scope("/api")
//!                 .wrap(CognitoAuth::new(verifier.clone()))
//!                 .route("/me", web::get().to(me))
//!                 .route("/logout", web::post().to(logout)),
//!         )
//!     })
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await?;
//!     Ok(())
//! }
//! ```
//!
//! A request's path through the crate: the bearer token, its local checks (size,
//! `token_use`, `iss`, `client_id`, `exp`), the signature against the pool's JWKS, the verdict
//! cache (single flight, capped at `exp`, bounded in bytes), then `GetUser`; the middleware
//! turns the verdict into 401, 403 or 503, and the extractors hand the principal to handlers.
//! A verdict of a token in use is refreshed in the background before it expires
//! ([`VerifierBuilder::refresh_ahead`]), so requests do not wait on Cognito once per TTL.
//!
//! # Features
//!
//! | feature | what it adds | what it pulls in |
//! | --- | --- | --- |
//! | *(none)* | the verifier, the middleware and extractors, metrics through the `metrics` facade ([`telemetry`]) | the AWS SDK's Cognito client (aws-lc TLS), moka, jsonwebtoken |
//! | `redis` | fleet mode: verdicts shared and sign-outs broadcast through Redis ([`VerifierBuilder::redis`]) | `redis` (tokio, rustls on aws-lc, cluster) |
//! | `events` | revocations made elsewhere, from Cognito's CloudTrail events ([`VerifierBuilder::events_queue`]) | `aws-sdk-sqs` |
//! | `test-util` | `testing`: seeding an emulator, a test signer, a fake Cognito | hyper's server and client |
//! | `fuzzing` | the token parser for the fuzz targets; not a public API | nothing |
//!
//! # Tracing
//!
//! Each verification runs in a `debug` span named `cognito_verify` (target `actix_cognito`),
//! whose fields are recorded when it ends: `outcome` (`accepted`, a [`Rejection`] code such as
//! `not_authorized`, or an [`UnavailableKind`] code such as `timeout`), `cache_hit` (`true` when
//! the cache answered) and `latency_us`. A disabled span costs a branch. The token is never a
//! field, and no log line of the crate or of the SDK beneath it carries one. Cognito failures are
//! logged at `warn` (`Cognito call failed`, with `kind` and the error `code`); an unexpected
//! error code at `error`. The AWS SDK's own spans (`GetUser`, its attempts and the HTTP
//! dispatch) open inside `cognito_verify`, so a subscriber that exports spans (such as
//! `tracing-opentelemetry`) shows the call as a child of the verification.
//!
//! # Metrics
//!
//! Through the `metrics` facade, each with a `# HELP` text: see [`telemetry`] for the names,
//! labels and histogram buckets.
//!
//! # Guides
//!
//! The README and the guides in `docs/` (revocation, tokens, operations, fleet mode, security,
//! testing) explain the design choices and their measured costs.
//!
//! # Background tasks and shutdown
//!
//! A verifier starts its background tasks (the key loader, the refresher, and with the features
//! the Redis invalidation listener, the events consumer and the budget's window) on the Tokio
//! runtime it is built in, or at [`Verifier::hydrate`]. Each holds the verifier weakly and ends
//! at its next await once the last clone is dropped: drop it after `HttpServer::run` returns.
//! Work in hand is finished first; an SQS message received but not handled is left on the queue.
//!
//! # Minimum Rust version
//!
//! 1.94.1, the AWS SDK's own. It follows the SDK's; a raise is a minor version.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod attributes;
mod budget;
mod cache;
mod clock;
mod cognito;
mod config;
mod error;
#[cfg(feature = "events")]
mod events;
mod extract;
#[cfg(feature = "redis")]
mod fleet;
mod front;
mod guard;
mod issuer;
mod jwks;
mod lifecycle;
mod middleware;
mod ops;
mod refresh;
mod regions;
pub mod telemetry;
mod token;
mod transport;
mod user;
mod userinfo;
mod verifier;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

/// The token parser and claim checks, for the fuzz targets in `fuzz/` and the benchmarks.
/// Not a public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use crate::issuer::Issuers;
    use crate::token::{self, ClaimPolicy};

    /// What follows `Bearer ` in an `Authorization` value.
    pub fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
        token::strip_bearer(value)
    }

    /// The cache key of a token.
    pub fn key(token: &[u8]) -> [u8; 32] {
        token::key(token)
    }

    /// Strips the bearer scheme, parses and checks the token against a fixed policy, and checks
    /// the invariants the verifier relies on. Returns whether the token passed.
    pub fn check(header_value: &[u8]) -> bool {
        let policy = ClaimPolicy {
            issuers: vec![Issuers::new(vec![
                "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Fuzz".into()
            ])],
            client_ids: vec!["fuzzclient".into()],
            audiences: Vec::new(),
            leeway_secs: 5,
            max_len: 8192,
        };
        let Some(raw) = token::strip_bearer(header_value) else { return false };
        let _ = token::key(raw);
        match policy.verify(raw, 1_900_000_000) {
            Ok(claims) => {
                assert!(raw.len() <= 8192);
                assert!(raw.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
                assert_eq!(raw.iter().filter(|b| **b == b'.').count(), 2);
                assert_eq!(claims.token_use, "access");
                assert!(policy.issuers[0].accepts(&claims.iss));
                assert!(claims.exp + 5 > 1_900_000_000);
                assert!(claims.username.is_some());
                true
            }
            Err(_) => false,
        }
    }
}

pub use cache::Stats;
pub use config::VerifierBuilder;
pub use error::{ConfigError, Rejection, Unavailable, UnavailableKind, VerifyError};
pub use extract::BearerToken;
pub use middleware::{AuthError, AuthErrorKind, CognitoAuth};
pub use ops::{Readiness, RedisState, RegionHealth, ResourceMetadata, RESOURCE_METADATA_PATH};
pub use user::{Attributes, CognitoUser, IdTokenUser, MachineClient, Names, Principal};
pub use verifier::Verifier;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The guides' examples compile too.
#[cfg(doctest)]
mod guides {
    #[doc = include_str!("../docs/revocation.md")]
    struct Revocation;
    #[doc = include_str!("../docs/tokens.md")]
    struct Tokens;
    #[doc = include_str!("../docs/operations.md")]
    struct Operations;
    #[doc = include_str!("../docs/fleet.md")]
    struct Fleet;
    #[doc = include_str!("../docs/security.md")]
    struct Security;
    #[doc = include_str!("../docs/testing.md")]
    struct Testing;
}
