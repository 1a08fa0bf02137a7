//! Handlers take the user as an argument.

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};

use crate::middleware::{AuthError, AuthErrorKind, AuthState};
use crate::user::CognitoUser;

/// The user the [`CognitoAuth`](crate::CognitoAuth) middleware verified.
///
/// Without a user (an anonymous request in optional mode) the extractor answers 401; take
/// `Option<CognitoUser>` to accept anonymous requests. On a route the middleware does not
/// wrap, it answers 500 and logs the wiring mistake.
impl FromRequest for CognitoUser {
    type Error = AuthError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.extensions().get::<AuthState>() {
            Some(AuthState { user: Some(user), .. }) => Ok(user.clone()),
            Some(AuthState { user: None, realm }) => {
                Err(AuthError::new(AuthErrorKind::MissingToken, realm.clone()))
            }
            None => Err(AuthError::new(AuthErrorKind::MiddlewareMissing, Arc::from("api"))),
        })
    }
}
