//! The two error types: one for set-up, one for a request's verdict.

use std::fmt;
use std::time::Duration;

/// A configuration mistake, reported when the [`Verifier`](crate::Verifier) is built.
///
/// Every message names the setting at fault and how to fix it, so that a service fails at
/// start-up rather than at its first request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The user pool id is not of the form `{region}_{id}`, such as `eu-west-1_AbC123xyz` (with
    /// an endpoint override, an emulator's `<word>_<id>` such as `local_0uznJEKW` is accepted).
    #[error(
        "user pool id `{value}` is malformed ({problem}): expected `<region>_<id>` such as \
         `eu-west-1_AbC123xyz` (copy it from the Cognito console or `aws cognito-idp list-user-pools`; \
         an emulator's id such as `local_0uznJEKW` needs its endpoint set, as AWS_ENDPOINT_URL)"
    )]
    InvalidUserPoolId {
        /// The rejected value.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// No app client id was given.
    #[error("no app client id is allowed: call `.client_id(\"...\")` with the id of each app client whose tokens you accept")]
    NoClientIds,
    /// An app client id is empty or contains characters Cognito never uses.
    #[error("app client id `{0}` is malformed: expected 1 to 128 letters and digits")]
    InvalidClientId(String),
    /// An explicit region disagrees with the region the user pool id names.
    #[error(
        "region `{configured}` does not match user pool `{pool}`, which lives in `{pool_region}`: \
         remove the region setting (it is derived from the pool id) or set it to `{pool_region}`"
    )]
    RegionMismatch {
        /// The region that was configured.
        configured: String,
        /// The user pool id.
        pool: String,
        /// The region the user pool id names.
        pool_region: String,
    },
    /// The endpoint override is not an absolute `http` or `https` URL.
    #[error("endpoint `{value}` (from {source_name}) is not an absolute http(s) URL such as `http://localhost:4566`")]
    InvalidEndpoint {
        /// The rejected value.
        value: String,
        /// Where it came from: the builder or an environment variable.
        source_name: &'static str,
    },
    /// An attribute that authorization reads can be written by the users of an app client
    /// ([`authorization_attributes`](crate::VerifierBuilder::authorization_attributes)).
    #[error(
        "attribute `{attribute}` is in authorization_attributes, but the users of app client `{client_id}` can \
         change it with their own access token ({}): remove it from the app client's write attributes \
         (UpdateUserPoolClient --write-attributes, or the console's attribute permissions), so that only \
         admin calls set it",
        if *explicit { "it is among its WriteAttributes" } else { "the client has no WriteAttributes list, so Cognito's default lets users write attributes" }
    )]
    WritableAttribute {
        /// The attribute.
        attribute: String,
        /// The app client whose users can write it.
        client_id: String,
        /// Whether the client lists it (`true`) or lists nothing (`false`).
        explicit: bool,
    },
    /// `DescribeUserPoolClient` failed, so `authorization_attributes` could not be checked.
    #[error(
        "could not read app client `{client_id}` to check authorization_attributes ({reason}): the \
         credentials need cognito-idp:DescribeUserPoolClient"
    )]
    AttributeCheck {
        /// The app client.
        client_id: String,
        /// What the call said.
        reason: String,
    },
    /// The pool's signing keys could not be fetched at start-up.
    #[error("{0}: check the user pool id, the endpoint and the network, or call `.build()` to fetch the keys lazily")]
    Jwks(String),
    /// The Redis URL of fleet mode is malformed.
    #[error("Redis URL `{value}` is malformed ({reason}): expected `redis://host:6379` or `rediss://user:password@host:6380`")]
    InvalidRedisUrl {
        /// The rejected value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A setting is out of range, or does not fit the others.
    #[error("setting `{setting}` is invalid: {reason}")]
    InvalidSetting {
        /// The builder method at fault.
        setting: &'static str,
        /// What it takes.
        reason: &'static str,
    },
}

/// Why a request was not let through: the token is bad, or Cognito could not say.
///
/// The two cases call for different answers: a [`Rejection`] is the client's fault (HTTP 401),
/// [`Unavailable`] is not (HTTP 503 with `Retry-After`) and is never cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not good: the local checks or Cognito refused it.
    #[error("token rejected: {0}")]
    Rejected(Rejection),
    /// Cognito could not be asked or did not answer in time; try again later.
    #[error("cognito unavailable: {0}")]
    Unavailable(Unavailable),
}

impl VerifyError {
    /// The rejection, if the token was refused.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            VerifyError::Rejected(r) => Some(*r),
            VerifyError::Unavailable(_) => None,
        }
    }

    /// Whether Cognito could not be asked; such a failure says nothing about the token.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, VerifyError::Unavailable(_))
    }
}

impl From<Rejection> for VerifyError {
    fn from(r: Rejection) -> Self {
        VerifyError::Rejected(r)
    }
}

impl From<Unavailable> for VerifyError {
    fn from(u: Unavailable) -> Self {
        VerifyError::Unavailable(u)
    }
}

/// Why a token was refused. [`Rejection::as_str`] gives a stable, log-friendly code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// No token was presented.
    Missing,
    /// The token is longer than the configured maximum.
    TooLarge,
    /// Not a JWT: wrong shape, bad base64url, bad JSON, missing or mistyped claims.
    Malformed,
    /// The header names an algorithm other than RS256, the only one Cognito uses.
    UnsupportedAlgorithm,
    /// The signature does not verify with the pool's key.
    BadSignature,
    /// The header names no key, or a key the pool's JWKS does not hold.
    UnknownKey,
    /// `token_use` is not `access` (an ID token, say).
    NotAccessToken,
    /// `iss` is not the configured user pool.
    WrongIssuer,
    /// `client_id` is not one of the allowed app clients.
    WrongClient,
    /// The token's audience (`aud`) is none of those the verifier requires: a token minted for
    /// another resource (RFC 8707).
    WrongAudience,
    /// `exp` has passed.
    Expired,
    /// A client-credentials (machine) token: it has no user, so `GetUser` can never accept it.
    MachineToken,
    /// The token lacks the `aws.cognito.signin.user.admin` scope that `GetUser` requires.
    ///
    /// This points at the app client's configuration: enable that scope on the client.
    MissingAdminScope,
    /// Cognito: the token was revoked (sign-out), the user is disabled, or the token is invalid.
    NotAuthorized,
    /// Cognito: the user no longer exists.
    UserNotFound,
    /// Cognito: the user must reset their password.
    PasswordResetRequired,
    /// Cognito: the user has not confirmed their account.
    UserNotConfirmed,
}

impl Rejection {
    /// Every rejection, in declaration order.
    pub const ALL: [Rejection; 17] = [
        Rejection::Missing,
        Rejection::TooLarge,
        Rejection::Malformed,
        Rejection::UnsupportedAlgorithm,
        Rejection::BadSignature,
        Rejection::UnknownKey,
        Rejection::NotAccessToken,
        Rejection::WrongIssuer,
        Rejection::WrongClient,
        Rejection::WrongAudience,
        Rejection::Expired,
        Rejection::MachineToken,
        Rejection::MissingAdminScope,
        Rejection::NotAuthorized,
        Rejection::UserNotFound,
        Rejection::PasswordResetRequired,
        Rejection::UserNotConfirmed,
    ];

    /// A stable snake_case code for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::TooLarge => "too_large",
            Rejection::Malformed => "malformed",
            Rejection::UnsupportedAlgorithm => "unsupported_algorithm",
            Rejection::BadSignature => "bad_signature",
            Rejection::UnknownKey => "unknown_key",
            Rejection::NotAccessToken => "not_access_token",
            Rejection::WrongIssuer => "wrong_issuer",
            Rejection::WrongClient => "wrong_client",
            Rejection::WrongAudience => "wrong_audience",
            Rejection::Expired => "expired",
            Rejection::MachineToken => "machine_token",
            Rejection::MissingAdminScope => "missing_admin_scope",
            Rejection::NotAuthorized => "not_authorized",
            Rejection::UserNotFound => "user_not_found",
            Rejection::PasswordResetRequired => "password_reset_required",
            Rejection::UserNotConfirmed => "user_not_confirmed",
        }
    }

    /// Whether the rejection was decided locally, without asking Cognito.
    pub const fn is_local(self) -> bool {
        !matches!(
            self,
            Rejection::NotAuthorized
                | Rejection::UserNotFound
                | Rejection::PasswordResetRequired
                | Rejection::UserNotConfirmed
        )
    }

    /// A short description safe to send to the client: it names no claim value.
    pub const fn description(self) -> &'static str {
        match self {
            Rejection::Missing => "no access token",
            Rejection::TooLarge => "the access token is too large",
            Rejection::Malformed | Rejection::UnsupportedAlgorithm => "the access token is malformed",
            Rejection::BadSignature | Rejection::UnknownKey => "the access token signature is invalid",
            Rejection::NotAccessToken => "not an access token",
            Rejection::WrongIssuer => "the access token's issuer is not this API's user pool",
            Rejection::WrongClient => "the access token was issued to another app client",
            Rejection::WrongAudience => "the access token's audience (aud) is not this API",
            Rejection::Expired => "the access token expired",
            Rejection::MachineToken | Rejection::MissingAdminScope => "the access token cannot be used here",
            Rejection::NotAuthorized
            | Rejection::UserNotFound
            | Rejection::PasswordResetRequired
            | Rejection::UserNotConfirmed => "the access token is no longer valid",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cognito could not give a verdict. Says nothing about the token; never cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    kind: UnavailableKind,
    retry_after: Duration,
}

impl Unavailable {
    pub(crate) fn new(kind: UnavailableKind, retry_after: Duration) -> Self {
        Unavailable { kind, retry_after }
    }

    /// What went wrong.
    pub fn kind(&self) -> UnavailableKind {
        self.kind
    }

    /// How long the client should wait before trying again (`Retry-After`).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (retry after {}s)", self.kind.as_str(), self.retry_after.as_secs())
    }
}

/// The kinds of [`Unavailable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnavailableKind {
    /// Cognito answered `TooManyRequestsException`: the account's quota is spent.
    Throttled,
    /// Cognito answered with an internal error or a 5xx.
    ServiceError,
    /// Cognito answered `ForbiddenException` (AWS WAF blocked the call).
    Forbidden,
    /// No answer within the configured timeouts.
    Timeout,
    /// No connection could be made.
    Connection,
    /// This process's own cap on `GetUser` calls (in flight or per second) was reached.
    LocalLimit,
    /// Any other failure: an unexpected error code or an unreadable answer.
    Other,
}

impl UnavailableKind {
    /// A stable snake_case code for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            UnavailableKind::Throttled => "throttled",
            UnavailableKind::ServiceError => "service_error",
            UnavailableKind::Forbidden => "forbidden",
            UnavailableKind::Timeout => "timeout",
            UnavailableKind::Connection => "connection",
            UnavailableKind::LocalLimit => "local_limit",
            UnavailableKind::Other => "other",
        }
    }
}
