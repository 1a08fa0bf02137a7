//! The `GetUser` call and the classification of its failures. No web framework here.

use std::time::Duration;

use aws_sdk_cognitoidentityprovider::config::retry::RetryConfig;
use aws_sdk_cognitoidentityprovider::config::timeout::TimeoutConfig;
use aws_sdk_cognitoidentityprovider::config::{BehaviorVersion, Region};
use aws_sdk_cognitoidentityprovider::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cognitoidentityprovider::Client;

use crate::error::{Rejection, Unavailable, UnavailableKind, VerifyError};
use crate::telemetry::CallMetrics;

/// Timeouts and retries of the `GetUser` call.
#[derive(Debug, Clone)]
pub(crate) struct CallSettings {
    /// The one HTTP client (see the `transport` module).
    pub(crate) http: aws_smithy_runtime_api::client::http::SharedHttpClient,
    /// The SDK configuration to start from (an `SdkConfig`'s or a ready client's), if any.
    pub(crate) base: Option<aws_sdk_cognitoidentityprovider::config::Builder>,
    pub(crate) region: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) attempt_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) retry_after: Duration,
}

/// A Cognito user pool client for the calls a token authorizes (`GetUser`, `GlobalSignOut`),
/// sent unsigned.
#[derive(Clone)]
pub(crate) struct Cognito {
    client: Client,
    retry_after: Duration,
    /// The region's `GetUser` count and latency.
    metrics: CallMetrics,
}

/// A boxed future of the seams below.
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The remote calls a token authorizes: `GetUser` and `GlobalSignOut`. The SDK client is the
/// implementation; the verifier's own unit tests put an in-process fake behind the seam.
pub(crate) trait Introspect: Send + Sync {
    /// Whether the token is still good, and whose it is.
    fn get_user<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<GetUserAnswer, VerifyError>>;
    /// Signs the token's user out everywhere.
    fn global_sign_out<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), VerifyError>>;
    /// Revokes a refresh token and every access token issued from it.
    fn revoke_token<'a>(
        &'a self,
        refresh_token: &'a str,
        client_id: &'a str,
        client_secret: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), VerifyError>>;
}

impl Introspect for Cognito {
    fn get_user<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<GetUserAnswer, VerifyError>> {
        Box::pin(Cognito::get_user(self, token))
    }

    fn global_sign_out<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), VerifyError>> {
        Box::pin(Cognito::global_sign_out(self, token))
    }

    fn revoke_token<'a>(
        &'a self,
        refresh_token: &'a str,
        client_id: &'a str,
        client_secret: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), VerifyError>> {
        Box::pin(async move {
            let call = self
                .client
                .revoke_token()
                .token(refresh_token)
                .client_id(client_id)
                .set_client_secret(client_secret.map(str::to_owned));
            match call.send().await {
                Ok(_) => Ok(()),
                Err(err) => Err(classify(&err, self.retry_after)),
            }
        })
    }
}

/// What `GetUser` says of a token it accepts.
pub(crate) struct GetUserAnswer {
    pub(crate) username: String,
    pub(crate) attributes: Vec<(String, String)>,
}

impl Cognito {
    /// The client: from the given SDK configuration (proxy, CA, app name, FIPS and dual-stack
    /// endpoints, HTTP client...) or from scratch, with the pool's region and the crate's own
    /// timeouts and retries always, and no credentials: the calls are authorized by the token.
    pub(crate) fn new(s: &CallSettings, metrics: CallMetrics) -> Self {
        let base = s.base.clone();
        let mut conf = base.unwrap_or_else(|| {
            aws_sdk_cognitoidentityprovider::Config::builder().behavior_version(BehaviorVersion::latest())
        });
        // Whatever the SDK configuration says, calls are bounded by the crate's settings (its
        // connect timeout, when it has one, was taken as the connect timeout).
        conf = conf
            .region(Region::new(s.region.clone()))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(s.connect_timeout)
                    .operation_attempt_timeout(s.attempt_timeout)
                    .operation_timeout(s.operation_timeout)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(s.max_attempts)
                    .with_initial_backoff(Duration::from_millis(50))
                    .with_max_backoff(Duration::from_millis(500)),
            );
        conf.set_credentials_provider(None);
        conf.set_http_client(Some(s.http.clone()));
        // The calls are unsigned (no identity to cache) and bounded by the timeouts above (a
        // stalled body cannot outlive them): both layers are pure per-call cost, about 5 % of a
        // call's CPU on loopback (benches/hot_path.rs).
        conf = conf
            .stalled_stream_protection(
                aws_sdk_cognitoidentityprovider::config::StalledStreamProtectionConfig::disabled(),
            )
            .identity_cache(aws_sdk_cognitoidentityprovider::config::IdentityCache::no_cache());
        if let Some(endpoint) = &s.endpoint {
            conf = conf.endpoint_url(endpoint.clone());
        }
        Cognito { client: Client::from_conf(conf.build()), retry_after: s.retry_after, metrics }
    }

    /// Asks Cognito whether the token is still good, and whose it is.
    pub(crate) async fn get_user(&self, token: &str) -> Result<GetUserAnswer, VerifyError> {
        match self.metrics.time(self.client.get_user().access_token(token).send()).await {
            Ok(out) => {
                let attributes =
                    out.user_attributes.into_iter().filter_map(|a| Some((a.name, a.value?))).collect();
                Ok(GetUserAnswer { username: out.username, attributes })
            }
            Err(err) => Err(classify(&err, self.retry_after)),
        }
    }

    /// Signs the token's user out everywhere: every token of that sign-in family is revoked.
    pub(crate) async fn global_sign_out(&self, token: &str) -> Result<(), VerifyError> {
        match self.client.global_sign_out().access_token(token).send().await {
            Ok(_) => Ok(()),
            Err(err) => Err(classify(&err, self.retry_after)),
        }
    }
}

/// Splits failures of the token-authorized calls (`GetUser`, `GlobalSignOut`) into "the token
/// is bad" and "Cognito could not say".
///
/// Only the four answers that speak of the token or its user are rejections; everything else,
/// unknown error codes included, is unavailability: failing closed with a 503 is always safe,
/// a 401 for Cognito's own trouble would sign users out for nothing.
pub(crate) fn classify<E: ProvideErrorMetadata>(err: &SdkError<E>, retry_after: Duration) -> VerifyError {
    let unavailable = |kind| VerifyError::Unavailable(Unavailable::new(kind, retry_after));
    match err {
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or("none");
            let verdict = match code {
                "NotAuthorizedException" => VerifyError::Rejected(Rejection::NotAuthorized),
                "UserNotFoundException" => VerifyError::Rejected(Rejection::UserNotFound),
                "PasswordResetRequiredException" => VerifyError::Rejected(Rejection::PasswordResetRequired),
                "UserNotConfirmedException" => VerifyError::Rejected(Rejection::UserNotConfirmed),
                "TooManyRequestsException" => unavailable(UnavailableKind::Throttled),
                c if c.contains("Throttl") => unavailable(UnavailableKind::Throttled),
                "InternalErrorException" => unavailable(UnavailableKind::ServiceError),
                "ForbiddenException" => unavailable(UnavailableKind::Forbidden),
                _ if e.raw().status().is_server_error() => unavailable(UnavailableKind::ServiceError),
                _ => unavailable(UnavailableKind::Other),
            };
            match &verdict {
                VerifyError::Unavailable(u) if u.kind() == UnavailableKind::Other => {
                    tracing::error!(code, "unexpected error from Cognito");
                }
                VerifyError::Unavailable(u) => {
                    tracing::warn!(kind = u.kind().as_str(), code, "Cognito call failed");
                }
                VerifyError::Rejected(_) => {}
            }
            verdict
        }
        SdkError::TimeoutError(_) => {
            tracing::warn!("Cognito call timed out");
            unavailable(UnavailableKind::Timeout)
        }
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() { UnavailableKind::Timeout } else { UnavailableKind::Connection };
            tracing::warn!(kind = kind.as_str(), "Cognito call could not be sent");
            unavailable(kind)
        }
        SdkError::ResponseError(_) => {
            tracing::warn!("Cognito's answer could not be read");
            unavailable(UnavailableKind::ServiceError)
        }
        _ => {
            tracing::error!("the Cognito request could not be built");
            unavailable(UnavailableKind::Other)
        }
    }
}
