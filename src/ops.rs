//! Operations: readiness, and the OAuth 2.0 Protected Resource Metadata (RFC 9728) that lets
//! clients discover which authorization server protects the API.

use std::time::Duration;

use actix_web::{web, HttpResponse, Resource};
use serde::Serialize;

/// Whether a verifier can verify tokens, from [`Verifier::readiness`](crate::Verifier::readiness).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Readiness {
    /// Ready: the pool's signing keys are loaded (or the signature check is off).
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// How many signing keys are loaded: only keys that can verify a token (RS256, a modulus of
    /// 2048 to 8192 bits, an odd exponent above 1, a `kid` of their own).
    pub signing_keys: usize,
    /// The keys of the JWKS that cannot verify a token, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unusable_signing_keys: Vec<String>,
    /// Time since Cognito last answered `GetUser` (a user or a rejection).
    #[serde(serialize_with = "secs", rename = "since_get_user_answer_secs")]
    pub since_get_user_answer: Option<Duration>,
    /// Time since a `GetUser` call last failed (no answer in time, a 5xx, throttling).
    #[serde(serialize_with = "secs", rename = "since_get_user_failure_secs")]
    pub since_get_user_failure: Option<Duration>,
    /// Fleet mode: whether Redis is in use or skipped after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisState>,
    /// A replicated pool: each region, the preferred one first, and whether calls go to it.
    /// Empty otherwise. A region down is not unreadiness: the other one answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionHealth>,
}

/// One region of a replicated pool, in [`Readiness::regions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RegionHealth {
    /// The region, such as `us-west-2`.
    pub region: String,
    /// Whether calls go to it: false while it is skipped after failures, until a probe succeeds.
    pub available: bool,
    /// Whether calls go to it first.
    pub preferred: bool,
}

/// The state of fleet mode's Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RedisState {
    /// In use.
    Up,
    /// Skipped for a few seconds after a failure (the breaker is open).
    Down,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0),
        None => s.serialize_none(),
    }
}

/// The path RFC 9728 gives the metadata of a resource without a path of its own.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// OAuth 2.0 Protected Resource Metadata (RFC 9728): the API's identifier, the authorization
/// servers that issue its tokens (the user pool's issuer), how tokens are sent, and the scopes
/// it knows of. From [`Verifier::resource_metadata`](crate::Verifier::resource_metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceMetadata {
    resource: String,
    authorization_servers: Vec<String>,
    bearer_methods_supported: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scopes_supported: Vec<String>,
}

impl ResourceMetadata {
    pub(crate) fn new(resource: String, authorization_servers: Vec<String>) -> Self {
        ResourceMetadata {
            resource,
            authorization_servers,
            bearer_methods_supported: vec!["header"],
            scopes_supported: Vec::new(),
        }
    }

    /// Lists the scopes the API knows of (`scopes_supported`).
    #[must_use]
    pub fn scopes_supported<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes_supported = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The resource identifier.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Where RFC 9728 says the metadata is found: the well-known path inserted between the
    /// resource's host and its path (`https://api.example.com/v1` ->
    /// `https://api.example.com/.well-known/oauth-protected-resource/v1`). Give it to
    /// [`CognitoAuth::resource_metadata`](crate::CognitoAuth::resource_metadata).
    pub fn url(&self) -> String {
        let (origin, path) = split_origin(&self.resource);
        format!("{origin}{RESOURCE_METADATA_PATH}{}", path.trim_end_matches('/'))
    }

    /// An Actix resource that serves this document at its well-known path (the path part of
    /// [`url`](Self::url)), as `application/json`.
    pub fn service(self) -> Resource {
        let (_, path) = split_origin(&self.resource);
        let path = format!("{RESOURCE_METADATA_PATH}{}", path.trim_end_matches('/'));
        let body = web::Data::new(self);
        web::resource(path).app_data(body).route(
            web::get().to(|m: web::Data<ResourceMetadata>| async move { HttpResponse::Ok().json(&**m) }),
        )
    }
}

/// `https://host:port` and the rest of an absolute URL.
fn split_origin(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_url_puts_the_well_known_path_before_the_resources_path() {
        let m = |r: &str| ResourceMetadata::new(r.to_owned(), vec![]).url();
        assert_eq!(
            m("https://api.example.com"),
            "https://api.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            m("https://api.example.com/"),
            "https://api.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            m("http://127.0.0.1:8080/v1"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/v1"
        );
    }

    #[test]
    fn the_document_has_the_fields_rfc_9728_names() {
        let doc = ResourceMetadata::new("https://api.example.com".into(), vec!["https://issuer".into()])
            .scopes_supported(["orders/read"]);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "resource": "https://api.example.com",
                "authorization_servers": ["https://issuer"],
                "bearer_methods_supported": ["header"],
                "scopes_supported": ["orders/read"],
            })
        );
    }
}
