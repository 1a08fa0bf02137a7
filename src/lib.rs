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
#![deny(missing_docs)]

mod cache;
mod cognito;
mod config;
mod error;
mod extract;
mod guard;
mod jwks;
mod middleware;
mod token;
mod user;
mod verifier;

#[cfg(feature = "test-util")]
pub mod testing;

pub use cache::Stats;
pub use config::VerifierBuilder;
pub use error::{ConfigError, Rejection, Unavailable, UnavailableKind, VerifyError};
pub use middleware::{AuthError, AuthErrorKind, CognitoAuth};
pub use user::{CognitoUser, MachineClient, Principal};
pub use verifier::Verifier;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
