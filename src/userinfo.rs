//! The `/oauth2/userInfo` endpoint of a pool's domain: the revocation-aware check for access
//! tokens that lack the `aws.cognito.signin.user.admin` scope (managed login with `openid`).
//!
//! Like `GetUser`, it refuses a signed-out token or a disabled or deleted user, and it answers
//! with the user's attributes; it is authorized by the token itself (`Authorization: Bearer`).

use std::time::Duration;

use crate::cognito::{BoxFuture, GetUserAnswer};
use crate::error::{Rejection, Unavailable, UnavailableKind, VerifyError};
use crate::transport::{Failure, Transport};

/// Largest userInfo answer read.
const MAX_USER_INFO_BYTES: usize = 64 * 1024;

/// Asks a pool's domain who a token belongs to.
pub(crate) trait AskUserInfo: Send + Sync {
    fn user_info<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<GetUserAnswer, VerifyError>>;
}

pub(crate) struct UserInfo {
    url: String,
    http: Transport,
    timeout: Duration,
    retry_after: Duration,
}

impl UserInfo {
    /// `domain` such as `https://auth.example.com` or the prefix domain
    /// `https://{prefix}.auth.{region}.amazoncognito.com`.
    pub(crate) fn new(domain: &str, http: Transport, timeout: Duration, retry_after: Duration) -> Self {
        UserInfo {
            url: format!("{}/oauth2/userInfo", domain.trim_end_matches('/')),
            http,
            timeout,
            retry_after,
        }
    }

    async fn ask(&self, token: &str) -> Result<GetUserAnswer, VerifyError> {
        let unavailable = |kind| VerifyError::Unavailable(Unavailable::new(kind, self.retry_after));
        let (status, body) =
            self.http.get(&self.url, Some(token), MAX_USER_INFO_BYTES, self.timeout).await.map_err(|e| {
                match e {
                    Failure::Timeout => {
                        tracing::warn!("userInfo timed out");
                        unavailable(UnavailableKind::Timeout)
                    }
                    Failure::Connection(why) => {
                        tracing::warn!(error = %why, "userInfo could not be reached");
                        unavailable(UnavailableKind::Connection)
                    }
                }
            })?;
        match status {
            200 => parse(&body).ok_or_else(|| {
                tracing::warn!("userInfo's answer could not be read");
                unavailable(UnavailableKind::ServiceError)
            }),
            // The token is not good (revoked, user disabled or deleted, no `openid`).
            401 => Err(VerifyError::Rejected(Rejection::NotAuthorized)),
            429 => Err(unavailable(UnavailableKind::Throttled)),
            s if s >= 500 => Err(unavailable(UnavailableKind::ServiceError)),
            s => {
                tracing::error!(status = s, "unexpected answer from userInfo");
                Err(unavailable(UnavailableKind::Other))
            }
        }
    }
}

impl AskUserInfo for UserInfo {
    fn user_info<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<GetUserAnswer, VerifyError>> {
        Box::pin(self.ask(token))
    }
}

/// The user in a userInfo answer: `username`, and every other field as an attribute (`sub`,
/// `email`, `email_verified`, `custom:...`), as text.
fn parse(body: &[u8]) -> Option<GetUserAnswer> {
    let serde_json::Value::Object(fields) = serde_json::from_slice(body).ok()? else { return None };
    let mut username = None;
    let mut attributes = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        match name.as_str() {
            "username" => username = Some(text),
            _ => attributes.push((name, text)),
        }
    }
    Some(GetUserAnswer { username: username?, attributes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_info_answer_maps_to_the_same_attributes_as_get_user() {
        let body = br#"{"sub":"s-1","username":"alice","email":"a@example.com","email_verified":"true",
            "phone_number_verified":false,"custom:tenant":"acme","nickname":null}"#;
        let answer = parse(body).unwrap();
        assert_eq!(answer.username, "alice");
        let get = |k: &str| answer.attributes.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("sub"), Some("s-1"));
        assert_eq!(get("email_verified"), Some("true"));
        assert_eq!(get("phone_number_verified"), Some("false"));
        assert_eq!(get("custom:tenant"), Some("acme"));
        assert_eq!(get("nickname"), None);
        assert!(parse(br#"{"sub":"s-1"}"#).is_none(), "no username");
        assert!(parse(b"[]").is_none());
    }
}
