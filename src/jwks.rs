//! The pool's signing keys (JWKS), fetched once, shared, refreshed on an unknown `kid`.
//!
//! A signature check before `GetUser` keeps forged tokens (right `iss`, `client_id` and `exp`,
//! wrong signature) from spending the account's `GetUser` quota.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::cognito::BoxFuture;
use crate::error::{Rejection, Unavailable, UnavailableKind, VerifyError};

pub(crate) type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct JwksSettings {
    pub(crate) url: String,
    pub(crate) refresh_interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) retry_after: Duration,
}

/// Where the keys come from: an HTTPS GET in production, an in-process fake in unit tests.
pub(crate) trait FetchKeys: Send + Sync {
    /// The JWKS document at `url`, read within `timeout`.
    fn fetch<'a>(&'a self, url: &'a str, timeout: Duration) -> BoxFuture<'a, Result<Bytes, String>>;
}

impl FetchKeys for HttpsClient {
    fn fetch<'a>(&'a self, url: &'a str, timeout: Duration) -> BoxFuture<'a, Result<Bytes, String>> {
        Box::pin(async move {
            let uri: http::Uri = url.parse().map_err(|e| format!("bad JWKS URL: {e}"))?;
            let response = tokio::time::timeout(timeout, self.get(uri))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| format!("request failed: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("answered {}", response.status()));
            }
            let body =
                tokio::time::timeout(timeout, Limited::new(response.into_body(), MAX_JWKS_BYTES).collect())
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map_err(|e| format!("body: {e}"))?;
            Ok(body.to_bytes())
        })
    }
}

pub(crate) struct KeySet {
    settings: JwksSettings,
    http: Arc<dyn FetchKeys>,
    keys: RwLock<Arc<HashMap<String, DecodingKey>>>,
    /// Held while fetching, so concurrent misses wait for one fetch; holds the last attempt.
    refresh: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// When the keys were last fetched successfully, Unix seconds (`i64::MIN`: never).
    fetched_at: AtomicI64,
    fetches: AtomicU64,
    fetched: metrics::Counter,
}

impl KeySet {
    pub(crate) fn new(settings: JwksSettings, fetched: metrics::Counter) -> Self {
        Self::with_source(settings, fetched, Arc::new(https_client()))
    }

    pub(crate) fn with_source(
        settings: JwksSettings,
        fetched: metrics::Counter,
        http: Arc<dyn FetchKeys>,
    ) -> Self {
        KeySet {
            fetched,
            http,
            settings,
            keys: RwLock::default(),
            refresh: Default::default(),
            fetched_at: AtomicI64::new(i64::MIN),
            fetches: AtomicU64::new(0),
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.settings.url
    }

    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Relaxed)
    }

    pub(crate) fn key_count(&self) -> usize {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn with_key<T>(&self, kid: &str, f: impl FnOnce(&DecodingKey) -> T) -> Option<T> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        keys.get(kid).map(f)
    }

    fn unavailable(&self) -> VerifyError {
        VerifyError::Unavailable(Unavailable::new(UnavailableKind::Connection, self.settings.retry_after))
    }

    /// Checks the RS256 signature of `token` with the key `kid`.
    ///
    /// An unknown `kid` costs a refetch (at most one per refresh interval), unless the keys were
    /// fetched after the token says it was issued (`iat`): Cognito publishes a key before it
    /// signs with it, so that `kid` is not the pool's and no fetch can change that.
    pub(crate) async fn verify(
        &self,
        token: &[u8],
        kid: Option<&str>,
        iat: Option<i64>,
    ) -> Result<(), VerifyError> {
        let kid = kid.ok_or(VerifyError::Rejected(Rejection::UnknownKey))?;
        let token = std::str::from_utf8(token).map_err(|_| VerifyError::Rejected(Rejection::Malformed))?;
        let (message, signature) =
            token.rsplit_once('.').ok_or(VerifyError::Rejected(Rejection::Malformed))?;
        let check = |key: &DecodingKey| {
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, Algorithm::RS256)
                .unwrap_or(false)
        };
        let valid = match self.with_key(kid, check) {
            Some(valid) => valid,
            None => {
                // A margin for clock skew between Cognito and this host.
                if iat.is_some_and(|iat| iat.saturating_add(30) < self.fetched_at.load(Relaxed)) {
                    return Err(VerifyError::Rejected(Rejection::UnknownKey));
                }
                self.refresh_for(kid).await?;
                self.with_key(kid, check).ok_or(VerifyError::Rejected(Rejection::UnknownKey))?
            }
        };
        if valid {
            Ok(())
        } else {
            Err(VerifyError::Rejected(Rejection::BadSignature))
        }
    }

    /// Refetches the keys because `kid` is unknown: one fetch at a time, and at most one per
    /// refresh interval (one per second while no key is known at all). A failed fetch keeps the
    /// old keys.
    async fn refresh_for(&self, kid: &str) -> Result<(), VerifyError> {
        let mut last = self.refresh.lock().await;
        if self.with_key(kid, |_| ()).is_some() {
            return Ok(());
        }
        let have_keys = self.key_count() > 0;
        let penalty = if have_keys { self.settings.refresh_interval } else { Duration::from_secs(1) };
        if last.is_some_and(|t| t.elapsed() < penalty) {
            return if have_keys {
                Err(VerifyError::Rejected(Rejection::UnknownKey))
            } else {
                Err(self.unavailable())
            };
        }
        *last = Some(tokio::time::Instant::now());
        match self.fetch().await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(url = %self.settings.url, error = %e, "could not fetch the user pool's JWKS");
                if have_keys {
                    Err(VerifyError::Rejected(Rejection::UnknownKey))
                } else {
                    Err(self.unavailable())
                }
            }
        }
    }

    /// Fetches the keys unless some are known (one fetch at a time, shared with the refreshes);
    /// returns how many are known.
    pub(crate) async fn load(&self) -> Result<usize, String> {
        let mut last = self.refresh.lock().await;
        if self.key_count() > 0 {
            return Ok(self.key_count());
        }
        *last = Some(tokio::time::Instant::now());
        self.fetch().await
    }

    /// Fetches the keys now, replacing the known ones; returns how many RS256 keys it found.
    pub(crate) async fn fetch(&self) -> Result<usize, String> {
        self.fetches.fetch_add(1, Relaxed);
        self.fetched.increment(1);
        // A key published after this instant may be missing from the answer.
        let started = crate::clock::unix_now();
        let body = self.http.fetch(&self.settings.url, self.settings.timeout).await?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter(|k| matches!(k.algorithm, AlgorithmParameters::RSA(_)))
            .filter(|k| matches!(k.common.key_algorithm, None | Some(KeyAlgorithm::RS256)))
            .filter(|k| matches!(k.common.public_key_use, None | Some(PublicKeyUse::Signature)))
            .filter_map(|k| Some((k.common.key_id.clone()?, DecodingKey::from_jwk(k).ok()?)))
            .collect();
        if keys.is_empty() {
            return Err("no RS256 signing key in the JWKS".to_owned());
        }
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        self.fetched_at.store(started, Relaxed);
        Ok(n)
    }
}

/// An HTTPS client on the SDK's own stack (hyper, rustls with aws-lc): no second TLS stack.
pub(crate) fn https_client() -> HttpsClient {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no system root certificates: JWKS can only be fetched over http");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("aws-lc supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let connector = builder.https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).build(connector)
}
