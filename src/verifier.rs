//! The verifier: local checks, then the cache, then Cognito.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{exp_instant, Caches, Counters, Entry, Stats};
use crate::cognito::Cognito;
use crate::config::{Settings, VerifierBuilder};
use crate::error::{Rejection, VerifyError};
use crate::token::{self, ClaimPolicy, TokenKey};
use crate::user::CognitoUser;

/// Answers "is this access token good right now, and whose is it?" by asking Cognito, and
/// remembers the answer briefly.
///
/// Build one per user pool, once, and clone it wherever it is needed (in Actix, outside
/// `HttpServer::new`): clones share the client, the cache and the counters.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use actix_cognito::Verifier;
///
/// let verifier = Verifier::builder("eu-west-1_AbC123xyz")
///     .client_id("4p1l2vq8example")
///     .cache_ttl(Duration::from_secs(15))
///     .build()?;
/// let user = verifier.verify("eyJraWQiOi...").await?;
/// println!("{} <{}>", user.username(), user.email().unwrap_or("-"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Verifier(Arc<Inner>);

struct Inner {
    user_pool_id: String,
    region: String,
    policy: ClaimPolicy,
    cognito: Cognito,
    caches: Caches,
    counters: Counters,
    /// Bumped by every invalidation, so that a `GetUser` answer that was on its way while the
    /// invalidation ran is not cached.
    epoch: AtomicU64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("user_pool_id", &self.0.user_pool_id)
            .field("client_ids", &self.0.policy.client_ids)
            .field("cache_ttl", &self.0.caches.settings.ttl)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Starts a builder for the user pool `user_pool_id` (such as `eu-west-1_AbC123xyz`).
    pub fn builder(user_pool_id: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder::new(user_pool_id)
    }

    pub(crate) fn from_settings(s: Settings) -> Self {
        Verifier(Arc::new(Inner {
            cognito: Cognito::new(&s.call),
            caches: Caches::new(s.cache),
            policy: s.policy,
            user_pool_id: s.user_pool_id,
            region: s.region,
            counters: Counters::default(),
            epoch: AtomicU64::new(0),
        }))
    }

    /// The user pool id.
    pub fn user_pool_id(&self) -> &str {
        &self.0.user_pool_id
    }

    /// The pool's region.
    pub fn region(&self) -> &str {
        &self.0.region
    }

    /// The `iss` values accepted: the pool's two Cognito forms, then any allowed extras.
    pub fn issuers(&self) -> &[String] {
        &self.0.policy.issuers
    }

    /// Verifies an access token (without any `Bearer ` prefix).
    ///
    /// # Errors
    /// [`VerifyError::Rejected`] when the token is bad (decided locally at no cost, or by
    /// Cognito), [`VerifyError::Unavailable`] when Cognito could not be asked.
    pub async fn verify(&self, token: &str) -> Result<CognitoUser, VerifyError> {
        self.verify_bytes(token.as_bytes()).await
    }

    /// Verifies an access token given as raw bytes, as found in a header.
    ///
    /// A fresh cached verdict is found by the token's hash alone; anything else is checked
    /// locally (shape, size, `token_use`, `iss`, `client_id`, `exp`, scope) before Cognito is
    /// asked, so a token that fails those checks costs no `GetUser` call.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub async fn verify_bytes(&self, token: &[u8]) -> Result<CognitoUser, VerifyError> {
        self.verify_traced(token).await.0
    }

    /// As [`verify_bytes`](Self::verify_bytes), and whether a fresh cache entry answered.
    #[inline]
    pub(crate) async fn verify_traced(&self, token: &[u8]) -> (Result<CognitoUser, VerifyError>, bool) {
        let inner = &*self.0;
        if token.len() > inner.policy.max_len {
            inner.counters.reject(Rejection::TooLarge);
            return (Err(Rejection::TooLarge.into()), false);
        }
        if !inner.caches.enabled() {
            return (Box::pin(self.verify_uncached(token)).await, false);
        }
        let key = token::key(token);
        if let Some(entry) = inner.caches.fresh.get(&key).await {
            Counters::bump(&inner.counters.hits);
            return (Ok(entry.user), true);
        }
        (Box::pin(self.verify_miss(key, token)).await, false)
    }

    async fn verify_uncached(&self, token: &[u8]) -> Result<CognitoUser, VerifyError> {
        let inner = &*self.0;
        Counters::bump(&inner.counters.misses);
        let claims = self.check_locally(token)?;
        let user = self.call_get_user(token, claims).await;
        if let Err(VerifyError::Unavailable(_)) = &user {
            Counters::bump(&inner.counters.unavailable);
        }
        user
    }

    async fn verify_miss(&self, key: TokenKey, token: &[u8]) -> Result<CognitoUser, VerifyError> {
        let inner = &*self.0;
        if let Some(negative) = &inner.caches.negative {
            if let Some(rejection) = negative.get(&key).await {
                Counters::bump(&inner.counters.negative_hits);
                inner.counters.reject(rejection);
                return Err(rejection.into());
            }
        }
        Counters::bump(&inner.counters.misses);
        let claims = self.check_locally(token)?;

        let epoch = inner.epoch.load(Relaxed);
        let mut loaded_here = false;
        let load = async {
            loaded_here = true;
            let result = self.call_get_user(token, claims).await;
            let now = Instant::now();
            match result {
                Ok(user) => {
                    let until = exp_instant(user.exp(), now);
                    if let (Some(stale), Some(grace)) =
                        (&inner.caches.stale, inner.caches.settings.stale_grace)
                    {
                        let keep = until.min(now + inner.caches.settings.ttl + grace);
                        stale
                            .insert(
                                key,
                                Entry {
                                    user: user.clone(),
                                    until: keep,
                                },
                            )
                            .await;
                    }
                    Ok(Entry {
                        until: until.min(now + inner.caches.settings.ttl),
                        user,
                    })
                }
                Err(VerifyError::Rejected(r)) => {
                    if let Some(negative) = &inner.caches.negative {
                        negative.insert(key, r).await;
                    }
                    Err(VerifyError::Rejected(r))
                }
                Err(VerifyError::Unavailable(u)) => {
                    // Stale-if-error: reuse the last positive verdict within its grace, for one
                    // retry interval at a time.
                    match inner.caches.stale.as_ref().map(|s| s.get(&key)) {
                        Some(lookup) => match lookup.await {
                            Some(stale) => {
                                Counters::bump(&inner.counters.stale_served);
                                tracing::warn!(
                                    kind = u.kind().as_str(),
                                    "Cognito unavailable; serving a stale verdict"
                                );
                                Ok(Entry {
                                    until: stale.until.min(now + u.retry_after()),
                                    user: stale.user,
                                })
                            }
                            None => Err(VerifyError::Unavailable(u)),
                        },
                        None => Err(VerifyError::Unavailable(u)),
                    }
                }
            }
        };
        let result = inner.caches.fresh.try_get_with(key, load).await;
        if !loaded_here {
            Counters::bump(&inner.counters.coalesced);
        }
        match result {
            Ok(entry) => {
                if inner.epoch.load(Relaxed) != epoch {
                    inner.caches.fresh.invalidate(&key).await;
                }
                Ok(entry.user)
            }
            Err(err) => {
                let err = VerifyError::clone(&err);
                match &err {
                    VerifyError::Rejected(r) if !loaded_here => inner.counters.reject(*r),
                    VerifyError::Unavailable(_) => Counters::bump(&inner.counters.unavailable),
                    VerifyError::Rejected(_) => {}
                }
                Err(err)
            }
        }
    }

    fn check_locally(&self, token: &[u8]) -> Result<token::Claims, VerifyError> {
        let inner = &*self.0;
        inner.policy.verify(token, token::unix_now()).map_err(|r| {
            inner.counters.reject(r);
            if r == Rejection::MissingAdminScope {
                tracing::warn!(
                    "an access token lacks the aws.cognito.signin.user.admin scope, which GetUser requires: \
                     enable that scope on the app client (or request it at sign-in)"
                );
            }
            VerifyError::Rejected(r)
        })
    }

    /// One `GetUser` call for a token that passed the local checks.
    async fn call_get_user(&self, token: &[u8], claims: token::Claims) -> Result<CognitoUser, VerifyError> {
        let inner = &*self.0;
        // The local checks admitted only base64url and dots.
        let token = std::str::from_utf8(token).map_err(|_| VerifyError::Rejected(Rejection::Malformed))?;
        Counters::bump(&inner.counters.get_user_calls);
        match inner.cognito.get_user(token).await {
            Ok(answer) => Ok(CognitoUser::new(answer.username, answer.attributes, claims)),
            Err(err) => {
                if let VerifyError::Rejected(r) = err {
                    inner.counters.reject(r);
                }
                Err(err)
            }
        }
    }

    /// Forgets the verdict for one token: its next request goes to Cognito.
    pub async fn invalidate_token(&self, token: &str) {
        let inner = &*self.0;
        inner.epoch.fetch_add(1, Relaxed);
        let key = token::key(token.as_bytes());
        inner.caches.fresh.invalidate(&key).await;
        if let Some(stale) = &inner.caches.stale {
            stale.invalidate(&key).await;
        }
    }

    /// Forgets every verdict of one user, named by `sub` or by username: the next request of
    /// each of their tokens goes to Cognito. Call it after signing a user out yourself.
    pub fn invalidate_user(&self, sub_or_username: &str) {
        let inner = &*self.0;
        inner.epoch.fetch_add(1, Relaxed);
        let id = sub_or_username.to_owned();
        let matches = move |_: &TokenKey, e: &Entry| e.user.sub() == id || e.user.username() == id;
        for cache in std::iter::once(&inner.caches.fresh).chain(&inner.caches.stale) {
            // Cannot fail: every positive cache is built with invalidation closures.
            let _ = cache.invalidate_entries_if(matches.clone());
        }
    }

    /// Forgets every verdict, positive and negative.
    pub fn invalidate_all(&self) {
        let inner = &*self.0;
        inner.epoch.fetch_add(1, Relaxed);
        inner.caches.fresh.invalidate_all();
        if let Some(stale) = &inner.caches.stale {
            stale.invalidate_all();
        }
        if let Some(negative) = &inner.caches.negative {
            negative.invalidate_all();
        }
    }

    /// A snapshot of the counters and entry counts.
    ///
    /// Entry counts lag behind by the cache's pending maintenance; see
    /// [`run_pending_tasks`](Self::run_pending_tasks).
    pub fn stats(&self) -> Stats {
        Stats::read(&self.0.counters, &self.0.caches)
    }

    /// Runs the caches' pending maintenance (evictions, expirations, invalidations) now, so
    /// that [`stats`](Self::stats) counts exactly.
    pub async fn run_pending_tasks(&self) {
        let caches = &self.0.caches;
        caches.fresh.run_pending_tasks().await;
        if let Some(c) = &caches.negative {
            c.run_pending_tasks().await;
        }
        if let Some(c) = &caches.stale {
            c.run_pending_tasks().await;
        }
    }
}
