//! Trust a Cognito access token only as long as Cognito itself does.
//!
//! Each bearer token is checked locally (shape, `token_use`, `iss`, `client_id`, `exp`), then
//! sent to Cognito's `GetUser` API, which refuses tokens that were revoked by a sign-out and
//! tokens of disabled or deleted users. A positive answer is cached briefly (the cache TTL is
//! the revocation delay, and an entry never outlives the token's `exp`), and the user's
//! attributes come with it.
//!
//! `GetUser` needs no AWS credentials: the token is the authorization.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod cache;
mod cognito;
mod config;
mod error;
mod extract;
#[cfg(feature = "redis")]
mod fleet;
mod guard;
mod issuer;
mod jwks;
mod middleware;
mod ops;
mod telemetry;
mod token;
mod user;
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
pub use ops::{Readiness, RedisState, ResourceMetadata, RESOURCE_METADATA_PATH};
pub use user::{Attributes, CognitoUser, MachineClient, Names, Principal};
pub use verifier::Verifier;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
