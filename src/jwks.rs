//! The pool's signing keys (JWKS), fetched once, shared, refreshed on an unknown `kid`.
//!
//! A signature check before `GetUser` keeps forged tokens (right `iss`, `client_id` and `exp`,
//! wrong signature) from spending the account's `GetUser` quota.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::cognito::BoxFuture;
use crate::error::{Rejection, Unavailable, UnavailableKind, VerifyError};

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

impl FetchKeys for crate::transport::Transport {
    fn fetch<'a>(&'a self, url: &'a str, timeout: Duration) -> BoxFuture<'a, Result<Bytes, String>> {
        Box::pin(async move {
            let (status, body) =
                self.get(url, None, MAX_JWKS_BYTES, timeout).await.map_err(|e| e.to_string())?;
            match status {
                200..=299 => Ok(body),
                status => Err(format!("answered {status}")),
            }
        })
    }
}

pub(crate) struct KeySet {
    settings: JwksSettings,
    http: Arc<dyn FetchKeys>,
    keys: RwLock<Arc<HashMap<String, DecodingKey>>>,
    /// The keys of the last fetch that cannot verify a token, and why.
    unusable: RwLock<Vec<String>>,
    /// Held while fetching, so concurrent misses wait for one fetch; holds the last attempt.
    refresh: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// When the keys were last fetched successfully, Unix seconds (`i64::MIN`: never).
    fetched_at: AtomicI64,
    fetches: AtomicU64,
    fetched: metrics::Counter,
}

impl KeySet {
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
            unusable: RwLock::default(),
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

    /// The keys of the last fetch that cannot verify a token, and why.
    pub(crate) fn unusable(&self) -> Vec<String> {
        self.unusable.read().unwrap_or_else(|e| e.into_inner()).clone()
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
        let (keys, unusable) = usable_keys(&set);
        *self.unusable.write().unwrap_or_else(|e| e.into_inner()) = unusable.clone();
        if !unusable.is_empty() {
            tracing::warn!(url = %self.settings.url, "JWKS keys that cannot verify a token: {}", unusable.join("; "));
        }
        if keys.is_empty() {
            let why = if unusable.is_empty() { String::new() } else { format!(" ({})", unusable.join("; ")) };
            return Err(format!("no usable RS256 signing key in the JWKS{why}"));
        }
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        self.fetched_at.store(started, Relaxed);
        Ok(n)
    }
}

/// The keys that can verify a Cognito token, by `kid`, and why the others cannot: an RS256
/// signing key (or one that names no algorithm or use), a modulus of 2048 to 8192 bits, an odd
/// public exponent above 1, and a `kid` no other key of the set has (which of two would be meant
/// cannot be told, so neither is used).
fn usable_keys(set: &JwkSet) -> (HashMap<String, DecodingKey>, Vec<String>) {
    use base64::Engine as _;
    let decode =
        |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok();
    let mut unusable = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for k in &set.keys {
        if let Some(kid) = &k.common.key_id {
            *seen.entry(kid.clone()).or_default() += 1;
        }
    }
    let mut keys = HashMap::new();
    for k in &set.keys {
        let kid = k.common.key_id.clone().unwrap_or_default();
        let refuse = |why: String| format!("kid {kid:?}: {why}");
        let AlgorithmParameters::RSA(rsa) = &k.algorithm else {
            unusable.push(refuse("not an RSA key".into()));
            continue;
        };
        if !matches!(k.common.key_algorithm, None | Some(KeyAlgorithm::RS256))
            || !matches!(k.common.public_key_use, None | Some(PublicKeyUse::Signature))
        {
            unusable.push(refuse("not an RS256 signing key".into()));
            continue;
        }
        if kid.is_empty() {
            unusable.push(refuse("no kid".into()));
            continue;
        }
        if seen.get(&kid).copied().unwrap_or(0) > 1 {
            unusable.push(refuse("the kid of more than one key".into()));
            continue;
        }
        let modulus_bits = decode(&rsa.n).map_or(0, |n| {
            let n = &n[n.iter().position(|b| *b != 0).unwrap_or(n.len())..];
            n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize)
        });
        if !(2048..=8192).contains(&modulus_bits) {
            unusable.push(refuse(format!("a modulus of {modulus_bits} bits (2048 to 8192 are used)")));
            continue;
        }
        let exponent = decode(&rsa.e)
            .filter(|e| e.len() <= 8)
            .map(|e| e.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)));
        if !exponent.is_some_and(|e| e > 1 && e % 2 == 1) {
            unusable
                .push(refuse(format!("a public exponent of {:?} (an odd number above 1 is used)", exponent)));
            continue;
        }
        match DecodingKey::from_jwk(k) {
            Ok(key) => {
                keys.insert(kid, key);
            }
            Err(e) => unusable.push(refuse(e.to_string())),
        }
    }
    (keys, unusable)
}
