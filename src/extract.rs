//! Handlers take the user (or the machine, or either) as an argument.

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};

use crate::middleware::{find_token, AuthError, AuthErrorKind, AuthState};
use crate::user::{CognitoUser, IdTokenUser, MachineClient, Principal};

/// The principal the middleware left, or why there is none.
fn principal(req: &HttpRequest) -> Result<Principal, AuthError> {
    match req.extensions().get::<AuthState>() {
        Some(AuthState { principal: Some(p), .. }) => Ok(p.clone()),
        Some(AuthState { principal: None, params, .. }) => {
            Err(AuthError::new(AuthErrorKind::MissingToken, params.clone()))
        }
        None => Err(AuthError::new(AuthErrorKind::MiddlewareMissing, Arc::from("realm=\"api\""))),
    }
}

fn wrong_kind(req: &HttpRequest) -> AuthError {
    let params =
        req.extensions().get::<AuthState>().map_or_else(|| Arc::from("realm=\"api\""), |s| s.params.clone());
    AuthError::new(AuthErrorKind::InsufficientScope, params)
}

/// The user the [`CognitoAuth`](crate::CognitoAuth) middleware verified.
///
/// Without a user (an anonymous request in optional mode) the extractor answers 401; take
/// `Option<CognitoUser>` to accept anonymous requests. A machine token (on a route that allows
/// them) gets 403. On a route the middleware does not wrap, it answers 500 and logs the wiring
/// mistake; note that `Option<CognitoUser>` turns that mistake into `None`.
impl FromRequest for CognitoUser {
    type Error = AuthError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match principal(req) {
            Ok(Principal::User(user)) => Ok(user),
            Ok(Principal::Machine(_) | Principal::IdToken(_)) => Err(wrong_kind(req)),
            Err(e) => Err(e),
        })
    }
}

/// The machine client a [`CognitoAuth`](crate::CognitoAuth) with
/// [`allow_machine_tokens`](crate::CognitoAuth::allow_machine_tokens) verified; a user gets 403.
impl FromRequest for MachineClient {
    type Error = AuthError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match principal(req) {
            Ok(Principal::Machine(m)) => Ok(m),
            Ok(Principal::User(_) | Principal::IdToken(_)) => Err(wrong_kind(req)),
            Err(e) => Err(e),
        })
    }
}

/// The ID-token user a [`CognitoAuth`](crate::CognitoAuth) with
/// [`allow_id_tokens`](crate::CognitoAuth::allow_id_tokens) verified; anyone else gets 403.
impl FromRequest for IdTokenUser {
    type Error = AuthError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match principal(req) {
            Ok(Principal::IdToken(i)) => Ok(i),
            Ok(_) => Err(wrong_kind(req)),
            Err(e) => Err(e),
        })
    }
}

/// Whoever the middleware verified: a user or a machine.
impl FromRequest for Principal {
    type Error = AuthError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(principal(req))
    }
}

/// The bearer token the [`CognitoAuth`](crate::CognitoAuth) middleware verified on this request,
/// for calls made on the user's behalf (`GlobalSignOut`, a downstream API).
///
/// A secret: its `Debug` prints `[redacted]`, and it is read from the request again rather than
/// kept anywhere. Without a verified principal (no middleware, or an anonymous request in
/// optional mode) the extractor refuses as `CognitoUser` does.
#[derive(Clone)]
pub struct BearerToken(String);

impl BearerToken {
    /// The token, without the `Bearer ` prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken([redacted])")
    }
}

impl FromRequest for BearerToken {
    type Error = AuthError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(principal(req).and_then(|_| {
            let source = req.extensions().get::<AuthState>().map(|s| s.source.clone()).unwrap_or_default();
            match find_token(req, &source) {
                // The middleware verified these very bytes: base64url and dots.
                Ok(Some(token)) => Ok(BearerToken(String::from_utf8_lossy(&token).into_owned())),
                _ => Err(AuthError::new(AuthErrorKind::MissingToken, Arc::from("realm=\"api\""))),
            }
        }))
    }
}
