//! The verifier: cache, local checks, signature, then Cognito.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{exp_instant, Caches, Counters, Entry, Stats};
use crate::cognito::Cognito;
use crate::config::{Settings, VerifierBuilder};
use crate::error::{Rejection, VerifyError};
#[cfg(feature = "redis")]
use crate::fleet::{unix_ms, Fleet, Message, Shared};
use crate::guard::QuotaGuard;
use crate::jwks::KeySet;
use crate::token::{self, ClaimPolicy, Claims, TokenKey};
use crate::user::{CognitoUser, MachineClient, Principal};

/// Answers "is this access token good right now, and whose is it?" by asking Cognito, and
/// remembers the answer briefly.
///
/// Build one per user pool, once, and clone it wherever it is needed (in Actix, outside
/// `HttpServer::new`): clones share the client, the keys, the cache and the counters.
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
    keys: Option<KeySet>,
    guard: QuotaGuard,
    #[cfg(feature = "redis")]
    fleet: Option<Fleet>,
    caches: Caches,
    counters: Counters,
    /// Bumped by every invalidation, so that a `GetUser` answer that was on its way while the
    /// invalidation ran is not cached.
    epoch: AtomicU64,
}

impl Inner {
    async fn invalidate_local_token(&self, key: &TokenKey) {
        self.epoch.fetch_add(1, Relaxed);
        self.caches.fresh.invalidate(key).await;
        if let Some(stale) = &self.caches.stale {
            stale.invalidate(key).await;
        }
    }

    fn invalidate_local_user(&self, id: &str) {
        self.epoch.fetch_add(1, Relaxed);
        let id = id.to_owned();
        let matches = move |_: &TokenKey, e: &Entry| {
            e.principal.user().is_some_and(|u| u.sub() == id || u.username() == id)
        };
        for cache in std::iter::once(&self.caches.fresh).chain(&self.caches.stale) {
            // Cannot fail: every positive cache is built with invalidation closures.
            let _ = cache.invalidate_entries_if(matches.clone());
        }
    }

    fn invalidate_local_all(&self) {
        self.epoch.fetch_add(1, Relaxed);
        self.caches.fresh.invalidate_all();
        if let Some(stale) = &self.caches.stale {
            stale.invalidate_all();
        }
        if let Some(negative) = &self.caches.negative {
            negative.invalidate_all();
        }
    }

    /// Applies an invalidation broadcast by another instance.
    #[cfg(feature = "redis")]
    fn invalidate_local(&self, message: Message) {
        match message {
            Message::Token(key) => {
                self.epoch.fetch_add(1, Relaxed);
                for cache in std::iter::once(&self.caches.fresh).chain(&self.caches.stale) {
                    let _ = cache.invalidate_entries_if(move |k, _| *k == key);
                }
            }
            Message::User(id) => self.invalidate_local_user(&id),
            Message::All => self.invalidate_local_all(),
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("user_pool_id", &self.0.user_pool_id)
            .field("client_ids", &self.0.policy.client_ids)
            .field("signature_check", &self.0.keys.is_some())
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
            keys: s.jwks.map(KeySet::new),
            guard: QuotaGuard::new(s.max_in_flight, s.max_per_second, s.call.retry_after),
            #[cfg(feature = "redis")]
            fleet: s.fleet,
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

    /// The `iss` values accepted: the pool's two Cognito forms, then any others.
    pub fn issuers(&self) -> &[String] {
        &self.0.policy.issuers
    }

    /// Where the pool's signing keys are fetched from, unless the signature check is off.
    pub fn jwks_url(&self) -> Option<&str> {
        self.0.keys.as_ref().map(KeySet::url)
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> u64 {
        self.0.keys.as_ref().map_or(0, KeySet::fetches)
    }

    /// Fetches the pool's signing keys now, so the first request need not wait for them.
    ///
    /// # Errors
    /// A message saying why the keys could not be fetched. Nothing is lost: the keys will be
    /// fetched again when a token needs them.
    pub async fn hydrate(&self) -> Result<usize, String> {
        match &self.0.keys {
            Some(keys) => {
                keys.fetch().await.map_err(|e| format!("fetching the JWKS from {}: {e}", keys.url()))
            }
            None => Ok(0),
        }
    }

    /// Verifies a user's access token (without any `Bearer ` prefix).
    ///
    /// # Errors
    /// [`VerifyError::Rejected`] when the token is bad (decided locally at no cost, or by
    /// Cognito), [`VerifyError::Unavailable`] when Cognito could not be asked. A machine token is
    /// rejected ([`Rejection::MachineToken`]); see [`verify_principal`](Self::verify_principal).
    pub async fn verify(&self, token: &str) -> Result<CognitoUser, VerifyError> {
        self.verify_bytes(token.as_bytes()).await
    }

    /// Verifies a user's access token given as raw bytes, as found in a header.
    ///
    /// A fresh cached verdict is found by the token's hash alone; anything else is checked
    /// locally (shape, size, `token_use`, `iss`, `client_id`, `exp`, scope, signature) before
    /// Cognito is asked, so a token that fails those checks costs no `GetUser` call.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub async fn verify_bytes(&self, token: &[u8]) -> Result<CognitoUser, VerifyError> {
        match self.verify_traced(token, false).await.0? {
            Principal::User(user) => Ok(user),
            Principal::Machine(_) => Err(Rejection::MachineToken.into()),
        }
    }

    /// Verifies a user's token, or a machine (client-credentials) token.
    ///
    /// Machine tokens are verified locally only: signature, `iss`, `client_id`, `exp`. They need
    /// the signature check, which is on by default, and cannot be revoked before `exp`.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub async fn verify_principal(&self, token: &str) -> Result<Principal, VerifyError> {
        self.verify_traced(token.as_bytes(), true).await.0
    }

    /// The verdict, and whether a fresh cache entry gave it.
    #[inline]
    pub(crate) async fn verify_traced(
        &self,
        token: &[u8],
        machines: bool,
    ) -> (Result<Principal, VerifyError>, bool) {
        let inner = &*self.0;
        if token.len() > inner.policy.max_len {
            inner.counters.reject(Rejection::TooLarge);
            return (Err(Rejection::TooLarge.into()), false);
        }
        if !inner.caches.enabled() {
            return (Box::pin(self.verify_uncached(token, machines)).await, false);
        }
        let key = token::key(token);
        if let Some(entry) = inner.caches.fresh.get(&key).await {
            if machines || matches!(entry.principal, Principal::User(_)) {
                Counters::bump(&inner.counters.hits);
                return (Ok(entry.principal), true);
            }
            inner.counters.reject(Rejection::MachineToken);
            return (Err(Rejection::MachineToken.into()), true);
        }
        (Box::pin(self.verify_miss(key, token, machines)).await, false)
    }

    async fn verify_uncached(&self, token: &[u8], machines: bool) -> Result<Principal, VerifyError> {
        let inner = &*self.0;
        Counters::bump(&inner.counters.misses);
        let (claims, machine) = self.check_locally(token, machines)?;
        let verdict = self.resolve(token, claims, machine).await;
        if let Err(VerifyError::Unavailable(_)) = &verdict {
            Counters::bump(&inner.counters.unavailable);
        }
        verdict
    }

    async fn verify_miss(
        &self,
        key: TokenKey,
        token: &[u8],
        machines: bool,
    ) -> Result<Principal, VerifyError> {
        let inner = &*self.0;
        if let Some(negative) = &inner.caches.negative {
            if let Some(rejection) = negative.get(&key).await {
                Counters::bump(&inner.counters.negative_hits);
                inner.counters.reject(rejection);
                return Err(rejection.into());
            }
        }
        Counters::bump(&inner.counters.misses);
        let (claims, machine) = self.check_locally(token, machines)?;

        let epoch = inner.epoch.load(Relaxed);
        let mut loaded_here = false;
        let load = async {
            loaded_here = true;
            #[cfg(feature = "redis")]
            if let Some(fleet) = &inner.fleet {
                if let Some(shared) = self.shared_verdict(fleet, &key).await {
                    return shared;
                }
            }
            let verdict = self.resolve(token, claims, machine).await;
            #[cfg(feature = "redis")]
            if let Some(fleet) = &inner.fleet {
                self.share(fleet, &key, &verdict).await;
            }
            self.entry_for(key, verdict).await
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
                Ok(entry.principal)
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

    /// The verdict another instance shared through Redis, if any.
    #[cfg(feature = "redis")]
    async fn shared_verdict(&self, fleet: &Fleet, key: &TokenKey) -> Option<Result<Entry, VerifyError>> {
        let inner = &*self.0;
        let weak = Arc::downgrade(&self.0);
        fleet.listen(weak, |inner: &Inner, message| inner.invalidate_local(message));
        match fleet.get(key).await? {
            Shared::User(user, until_ms) => {
                Counters::bump(&inner.counters.shared_hits);
                let now = Instant::now();
                let until = exp_instant(user.exp(), now)
                    .min(now + inner.caches.settings.ttl)
                    .min(now + std::time::Duration::from_millis(until_ms.saturating_sub(unix_ms())));
                Some(Ok(Entry { principal: Principal::User(user), until }))
            }
            Shared::Rejected(r) => {
                Counters::bump(&inner.counters.shared_hits);
                inner.counters.reject(r);
                if let Some(negative) = &inner.caches.negative {
                    negative.insert(*key, r).await;
                }
                Some(Err(VerifyError::Rejected(r)))
            }
        }
    }

    /// Shares Cognito's verdict with the fleet: a user, or a rejection Cognito made.
    #[cfg(feature = "redis")]
    async fn share(&self, fleet: &Fleet, key: &TokenKey, verdict: &Result<Principal, VerifyError>) {
        let settings = &self.0.caches.settings;
        match verdict {
            Ok(Principal::User(user)) => {
                fleet.put_user(key, user, unix_ms() + settings.ttl.as_millis() as u64).await
            }
            Err(VerifyError::Rejected(r)) if !r.is_local() && !settings.negative_ttl.is_zero() => {
                fleet.put_rejection(key, *r, settings.negative_ttl).await;
            }
            _ => {}
        }
    }

    /// Turns a fresh verdict into a cache entry: positive entries live until min(TTL, `exp`),
    /// rejections go to the negative cache, unavailability is never kept (but may be bridged by a
    /// stale verdict).
    async fn entry_for(
        &self,
        key: TokenKey,
        verdict: Result<Principal, VerifyError>,
    ) -> Result<Entry, VerifyError> {
        let inner = &*self.0;
        let settings = &inner.caches.settings;
        let now = Instant::now();
        match verdict {
            Ok(principal) => {
                let until = exp_instant(principal.exp(), now);
                if let (Some(stale), Some(grace)) = (&inner.caches.stale, settings.stale_grace) {
                    let keep = until.min(now + settings.ttl + grace);
                    stale.insert(key, Entry { principal: principal.clone(), until: keep }).await;
                }
                Ok(Entry { until: until.min(now + settings.ttl), principal })
            }
            Err(VerifyError::Rejected(r)) => {
                // An unknown key id says more about our copy of the keys than about the token:
                // a key rotated in since the last fetch must not stay refused for a negative TTL.
                if let (Some(negative), false) = (&inner.caches.negative, r == Rejection::UnknownKey) {
                    negative.insert(key, r).await;
                }
                Err(VerifyError::Rejected(r))
            }
            Err(VerifyError::Unavailable(u)) => {
                // Stale-if-error: reuse the last positive verdict within its grace, for one
                // retry interval at a time.
                let stale = match &inner.caches.stale {
                    Some(stale) => stale.get(&key).await,
                    None => None,
                };
                match stale {
                    Some(stale) => {
                        Counters::bump(&inner.counters.stale_served);
                        tracing::warn!(
                            kind = u.kind().as_str(),
                            "Cognito unavailable; serving a stale verdict"
                        );
                        Ok(Entry {
                            until: stale.until.min(now + u.retry_after()),
                            principal: stale.principal,
                        })
                    }
                    None => Err(VerifyError::Unavailable(u)),
                }
            }
        }
    }

    /// The local claim checks. With `machines`, a machine token passes them too; the bool says
    /// whether it is one.
    fn check_locally(&self, token: &[u8], machines: bool) -> Result<(Claims, bool), VerifyError> {
        let inner = &*self.0;
        let verdict = match inner.policy.verify(token, token::unix_now()) {
            Ok(claims) => Ok((claims, false)),
            Err(Rejection::MachineToken) if machines && inner.keys.is_some() => {
                // Checked up to the user-only claims; the signature check is still to come.
                token::parse(token, inner.policy.max_len).map(|c| (c, true))
            }
            Err(r) => Err(r),
        };
        verdict.map_err(|r| {
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

    /// The verdict on a token that passed the local checks: its signature, then `GetUser` for a
    /// user; a machine token is done after its signature.
    async fn resolve(&self, token: &[u8], claims: Claims, machine: bool) -> Result<Principal, VerifyError> {
        let inner = &*self.0;
        let verdict = async {
            if let Some(keys) = &inner.keys {
                keys.verify(token, claims.kid.as_deref()).await?;
            }
            if machine {
                return Ok(Principal::Machine(MachineClient::new(claims)));
            }
            // The local checks admitted only base64url and dots.
            let token =
                std::str::from_utf8(token).map_err(|_| VerifyError::Rejected(Rejection::Malformed))?;
            let _permit = inner.guard.admit()?;
            Counters::bump(&inner.counters.get_user_calls);
            let answer = inner.cognito.get_user(token).await?;
            Ok(Principal::User(CognitoUser::new(answer.username, answer.attributes, claims)))
        }
        .await;
        if let Err(VerifyError::Rejected(r)) = &verdict {
            inner.counters.reject(*r);
        }
        verdict
    }

    /// Forgets the verdict for one token, here and (in fleet mode) on every instance: its next
    /// request goes to Cognito.
    pub async fn invalidate_token(&self, token: &str) {
        let key = token::key(token.as_bytes());
        self.0.invalidate_local_token(&key).await;
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.0.fleet {
            fleet.invalidate_token(&key).await;
        }
    }

    /// Forgets every verdict of one user, named by `sub` or by username, here and (in fleet
    /// mode) on every instance: the next request of each of their tokens goes to Cognito. Call
    /// it after signing a user out yourself.
    pub async fn invalidate_user(&self, sub_or_username: &str) {
        self.0.invalidate_local_user(sub_or_username);
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.0.fleet {
            fleet.invalidate_user(sub_or_username).await;
        }
    }

    /// Forgets every verdict, positive and negative, here and (in fleet mode) on every instance.
    pub async fn invalidate_all(&self) {
        self.0.invalidate_local_all();
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.0.fleet {
            fleet.invalidate_all().await;
        }
    }

    /// Signs the token's user out of every device (Cognito `GlobalSignOut`, authorized by the
    /// token itself), then forgets every verdict of that user, so that their tokens are refused
    /// at once rather than when the cache TTL runs out.
    ///
    /// # Errors
    /// As [`verify`](Self::verify) when the token is not good, or when Cognito could not be
    /// asked to sign the user out.
    pub async fn global_sign_out(&self, token: &str) -> Result<(), VerifyError> {
        let user = self.verify(token).await?;
        self.0.cognito.global_sign_out(token).await?;
        self.invalidate_user(user.sub()).await;
        Ok(())
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
