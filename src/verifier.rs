//! The verifier: cache, local checks, signature, then Cognito.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cache::{
    CacheSettings, Counters, Flight, Loaded, Outcome, Refreshed, Stats, Target, VerdictCache,
};
#[cfg(feature = "redis")]
use crate::clock::unix_ms;
use crate::cognito::{CallSettings, Cognito, Introspect};
use crate::error::{ConfigError, Rejection, Unavailable, UnavailableKind, VerifyError};
#[cfg(feature = "redis")]
use crate::fleet::{Fleet, Generations, Lookup, Message, Shared};
use crate::front;
use crate::guard::QuotaGuard;
use crate::issuer::Issuers;
use crate::jwks::{FetchKeys, JwksSettings, KeySet};
use crate::lifecycle::Lifecycle;
use crate::ops::{Readiness, RedisState, RegionHealth, ResourceMetadata};
use crate::refresh::Refresher;
use crate::regions::{Region, Regions, ReplicaSettings};
use crate::telemetry::CallMetrics;
use crate::telemetry::Telemetry;
use crate::token::{self, ClaimPolicy, Claims, TokenKey};
use crate::user::{CognitoUser, IdTokenUser, MachineClient, Principal, Profile};
use crate::userinfo::{AskUserInfo, UserInfo};

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
    /// The pools, in the order of the policy's issuers.
    pools: Vec<Pool>,
    /// Every pool's accepted issuers, for [`Verifier::issuers`].
    issuers: Vec<String>,
    policy: ClaimPolicy,
    /// With `user_info_domain`: the check of tokens without the admin scope.
    user_info: Option<Arc<dyn AskUserInfo>>,
    guard: QuotaGuard,
    #[cfg(feature = "redis")]
    fleet: Option<Fleet>,
    #[cfg(feature = "events")]
    events: Option<Arc<crate::events::Events>>,
    cache: VerdictCache,
    /// When the missing-admin-scope hint was last logged, Unix seconds.
    scope_hint_logged: AtomicI64,
    /// The issuer origins already reported as unexpected (under an endpoint override).
    issuers_reported: Mutex<HashSet<String>>,
    telemetry: Telemetry,
    /// When Cognito last answered `GetUser` (a user or a rejection), Unix ms (`i64::MIN`: never).
    get_user_answered: AtomicI64,
    /// When a `GetUser` call last failed (no answer, a 5xx, throttling), Unix ms.
    get_user_failed: AtomicI64,
    /// Whether a task is fetching the keys until it has them.
    loading_keys: AtomicBool,
    retry_after: Duration,
    /// Refresh-ahead: the tokens due for a refresh, and the per-user rate.
    refresher: Refresher,
    /// Stops the background tasks when the last clone is dropped.
    lifecycle: Lifecycle,
    /// A replicated pool's two regions, for readiness.
    regions: Option<Arc<Regions>>,
    attribute_check: crate::attributes::AttributeCheck,
}

/// The parts a built verifier is made of.
pub(crate) struct Settings {
    /// Each pool: its id, region and key source, in the order of the policy's issuers.
    pub(crate) pools: Vec<PoolSettings>,
    pub(crate) policy: ClaimPolicy,
    /// The calls' settings; the region is each pool's.
    pub(crate) call: CallSettings,
    /// The one HTTP client, for the keys and userInfo.
    pub(crate) transport: crate::transport::Transport,
    /// `authorization_attributes`, checked by `hydrate`.
    pub(crate) attribute_check: crate::attributes::AttributeCheck,
    /// The (single) pool's replica, if it is replicated.
    pub(crate) replica: Option<ReplicaSettings>,
    pub(crate) cache: CacheSettings,
    pub(crate) max_in_flight: usize,
    pub(crate) max_per_second: Option<NonZeroU32>,
    /// The most calls a second for one user.
    pub(crate) per_user: NonZeroU32,
    #[cfg(feature = "redis")]
    pub(crate) fleet: Option<crate::fleet::Fleet>,
    pub(crate) telemetry: Telemetry,
    /// The pool domain whose `/oauth2/userInfo` checks tokens without the admin scope.
    pub(crate) user_info: Option<String>,
    /// Feature `events`: the consumer of Cognito's CloudTrail events.
    #[cfg(feature = "events")]
    pub(crate) events: Option<crate::events::Events>,
    /// Stand-ins for Cognito and the JWKS endpoint, for the crate's in-process tests.
    pub(crate) seams: Seams,
}

/// What a verifier calls out to; `None` for the real thing.
#[derive(Clone, Default)]
pub(crate) struct Seams {
    pub(crate) introspect: Option<Arc<dyn Introspect>>,
    pub(crate) keys: Option<Arc<dyn FetchKeys>>,
    pub(crate) user_info: Option<Arc<dyn AskUserInfo>>,
}

impl std::fmt::Debug for Seams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seams")
            .field("introspect", &self.introspect.as_ref().map(|_| "in-process"))
            .field("keys", &self.keys.as_ref().map(|_| "in-process"))
            .field("user_info", &self.user_info.as_ref().map(|_| "in-process"))
            .finish()
    }
}

/// One pool of a verifier.
pub(crate) struct PoolSettings {
    pub(crate) id: String,
    pub(crate) region: String,
    pub(crate) jwks: Option<JwksSettings>,
    /// The replica region's view of the pool before it: its issuer and keys, not a pool of its
    /// own.
    pub(crate) replica: bool,
}

/// One user pool: its id (shared by its principals), region, keys and regional client. A
/// replicated pool has a second entry for the replica region's issuer, with the same id and
/// client.
struct Pool {
    id: Arc<str>,
    region: String,
    keys: Option<KeySet>,
    cognito: Arc<dyn Introspect>,
    /// The region's `GetUser`/userInfo count and latency.
    calls: CallMetrics,
    replica: bool,
}

/// The most distinct unexpected issuer origins reported.
const MAX_ISSUERS_REPORTED: usize = 32;

/// Which tokens besides users' access tokens a request accepts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Accept {
    pub(crate) machines: bool,
    pub(crate) id_tokens: bool,
}

impl Accept {
    /// Whether a principal of this kind is accepted; the rejection if not.
    fn admits(self, principal: &Principal) -> Result<(), Rejection> {
        match principal {
            Principal::User(_) => Ok(()),
            Principal::Machine(_) if self.machines => Ok(()),
            Principal::Machine(_) => Err(Rejection::MachineToken),
            Principal::IdToken(_) if self.id_tokens => Ok(()),
            Principal::IdToken(_) => Err(Rejection::NotAccessToken),
        }
    }
}

/// What kind of token passed the local checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    /// A user's access token without the admin scope, checked with userInfo.
    UserInfo,
    Machine,
    IdToken,
}

/// A token that passed the local checks.
struct Checked {
    claims: Claims,
    kind: Kind,
    /// The token's pool.
    pool: usize,
}

/// How many times a request verifies again when invalidations keep landing on its loads.
const MAX_LOADS: usize = 3;

impl Inner {
    /// Applies an invalidation broadcast by another instance.
    #[cfg(feature = "redis")]
    async fn invalidate_local(&self, message: Message) {
        match message {
            Message::Token(key, sub) => self.cache.invalidate(Target::Token(&key, sub.as_deref())).await,
            Message::User(id) => self.cache.invalidate(Target::User(&id)).await,
            Message::Session(id) => self.cache.invalidate(Target::Session(&id)).await,
            Message::Watermark(sub, at) => self.cache.watermarks().record(&sub, at),
            Message::All => self.cache.invalidate(Target::All).await,
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("user_pool_ids", &self.user_pool_ids().collect::<Vec<_>>())
            .field("client_ids", &self.0.policy.client_ids)
            .field("signature_check", &self.0.pools[0].keys.is_some())
            .field("cache_ttl", &self.0.cache.settings.ttl)
            .finish_non_exhaustive()
    }
}

/// A replicated pool's regions: the pool's own and the replica's, the preferred one first.
fn regions_of(s: &Settings, replica: &ReplicaSettings) -> Regions {
    let region = |name: &str, endpoint: Option<String>| {
        let call = CallSettings { region: name.to_owned(), endpoint, ..s.call.clone() };
        Region::new(name.to_owned(), Arc::new(Cognito::new(&call, CallMetrics::new(name))))
    };
    let primary = region(&s.pools[0].region, s.call.endpoint.clone());
    let secondary = region(&replica.region, replica.endpoint.clone());
    match replica.prefer_replica {
        true => Regions::new(secondary, primary, replica.probe_interval),
        false => Regions::new(primary, secondary, replica.probe_interval),
    }
}

impl Verifier {
    pub(crate) fn from_settings(s: Settings) -> Self {
        // One client per region, shared by the pools of that region; a replicated pool's client
        // fails over between its two regions.
        let regions = s.replica.as_ref().map(|replica| Arc::new(regions_of(&s, replica)));
        let mut clients: HashMap<String, Arc<dyn Introspect>> = HashMap::new();
        let pools = s
            .pools
            .into_iter()
            .map(|p| {
                let calls = CallMetrics::new(&p.region);
                let cognito = clients
                    .entry(p.region.clone())
                    .or_insert_with(|| match (&s.seams.introspect, &regions) {
                        (Some(fake), _) => fake.clone(),
                        (None, Some(regions)) => regions.clone(),
                        (None, None) => Arc::new(Cognito::new(
                            &CallSettings { region: p.region.clone(), ..s.call.clone() },
                            calls.clone(),
                        )),
                    })
                    .clone();
                let fetched = s.telemetry.jwks_fetches.clone();
                let keys = p.jwks.map(|j| match &s.seams.keys {
                    Some(fake) => KeySet::with_source(j, fetched, fake.clone()),
                    None => KeySet::with_source(j, fetched, Arc::new(s.transport.clone())),
                });
                Pool { id: Arc::from(p.id), region: p.region, keys, cognito, calls, replica: p.replica }
            })
            .collect();
        let issuers = s.policy.issuers.iter().flat_map(|i| i.exact.iter().cloned()).collect();
        let user_info: Option<Arc<dyn AskUserInfo>> = match (&s.seams.user_info, &s.user_info) {
            (Some(fake), _) => Some(fake.clone()),
            (None, Some(domain)) => Some(Arc::new(UserInfo::new(
                domain,
                s.transport.clone(),
                s.call.operation_timeout,
                s.call.retry_after,
            ))),
            (None, None) => None,
        };
        let cache = VerdictCache::new(s.cache, s.telemetry.effective_ttl.clone());
        let verifier = Verifier(Arc::new(Inner {
            pools,
            issuers,
            user_info,
            guard: QuotaGuard::new(s.max_in_flight, s.max_per_second, s.per_user, s.call.retry_after),
            telemetry: s.telemetry,
            get_user_answered: AtomicI64::new(i64::MIN),
            get_user_failed: AtomicI64::new(i64::MIN),
            loading_keys: AtomicBool::new(false),
            retry_after: s.call.retry_after,
            refresher: Refresher::default(),
            lifecycle: Lifecycle::default(),
            regions,
            attribute_check: s.attribute_check,
            #[cfg(feature = "redis")]
            fleet: s.fleet,
            #[cfg(feature = "events")]
            events: s.events.map(Arc::new),
            cache,
            policy: s.policy,
            scope_hint_logged: AtomicI64::new(i64::MIN),
            issuers_reported: Mutex::default(),
        }));
        // In fleet mode, subscribe to invalidations now (or, built outside a runtime, at the
        // first request), so that the first requests do not race the subscription.
        #[cfg(feature = "redis")]
        verifier.listen();
        #[cfg(feature = "events")]
        verifier.consume_events();
        verifier.start_refresher();
        verifier.start_upkeep();
        verifier
    }

    /// Starts, once, the task that runs the cache's pending maintenance every second and sets
    /// `actix_cognito_cache_entries` from it, so that a scrape reads the entries held, not a
    /// count that lags until the cache's next write.
    fn start_upkeep(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let weak = Arc::downgrade(&self.0);
        self.0.lifecycle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.cache.run_pending_tasks().await;
                inner.telemetry.entries.set(inner.cache.entry_count() as f64);
                inner.telemetry.flush();
            }
        });
    }

    /// Starts, once, the task that refreshes the verdicts hits found due (see the `refresh`
    /// module). Each refresh runs as a task of its own, so that a slow one holds up no other;
    /// they end with the refresher when the verifier is dropped.
    fn start_refresher(&self) {
        if self.0.cache.settings.refresh_ahead.is_none() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let Some(mut queue) = self.0.refresher.take_queue() else { return };
        let weak = Arc::downgrade(&self.0);
        self.0.lifecycle.spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            let mut prune = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    token = queue.recv() => {
                        let (Some(token), Some(inner)) = (token, weak.upgrade()) else { return };
                        running.spawn(async move { Verifier(inner).refresh(&token).await });
                    }
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                    _ = prune.tick() => {
                        let Some(inner) = weak.upgrade() else { return };
                        inner.guard.prune();
                    }
                }
            }
        });
    }

    /// Verifies a cached token again ahead of its verdict's expiry, and applies the answer.
    async fn refresh(&self, token: &[u8]) {
        let outcome = self.refresh_outcome(token).await;
        self.0.telemetry.refreshed(outcome);
    }

    async fn refresh_outcome(&self, token: &[u8]) -> Refreshed {
        let inner = &*self.0;
        let Ok(checked) = self.check_locally(token, Accept::default()).await else {
            return Refreshed::Skipped;
        };
        let claims = &checked.claims;
        if !matches!(checked.kind, Kind::User | Kind::UserInfo)
            || inner.cache.watermarks().revoked(&claims.sub, claims.iat)
        {
            return Refreshed::Skipped;
        }
        let key = token::key(token);
        let guard = inner.cache.begin(key, claims);
        let started = tokio::time::Instant::now();
        let loaded = self.resolve(Some(&key), token, &checked, Some(guard.flight()), true).await;
        inner.cache.refreshed(key, token, &guard, started, loaded).await
    }

    /// Starts, once, the task that consumes Cognito's events (feature `events`). It holds the
    /// verifier weakly, only between two receives, and ends when the verifier is dropped.
    #[cfg(feature = "events")]
    fn consume_events(&self) {
        let Some(events) = self.0.events.clone() else { return };
        if !events.start() {
            return;
        }
        let weak = Arc::downgrade(&self.0);
        self.0.lifecycle.spawn(async move {
            let mut failures = 0;
            loop {
                let received = events.receive().await;
                let Some(inner) = weak.upgrade() else { return };
                let verifier = Verifier(inner);
                match received {
                    Ok(messages) => {
                        failures = 0;
                        let pools: Vec<&str> = verifier.user_pool_ids().collect();
                        let mut handled = Vec::with_capacity(messages.len());
                        for (receipt, body) in messages {
                            if let Some((sub, event_id)) = events.handle(&body, &pools) {
                                verifier.apply_event(&events, &sub, event_id.as_deref()).await;
                            }
                            handled.push(receipt);
                        }
                        events.delete(handled).await;
                    }
                    Err(error) => {
                        failures += 1;
                        let pause = events.backoff(failures, &error);
                        drop(verifier);
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        });
    }

    /// Makes `sub`'s tokens verified again, fleet-wide, unless another instance of the fleet has
    /// handled this event (an event delivered twice, or to several queues). The mark is written
    /// after the invalidation: an instance that dies in between leaves the event to be handled
    /// again, never lost.
    #[cfg(feature = "events")]
    async fn apply_event(&self, events: &crate::events::Events, sub: &str, event_id: Option<&str>) {
        #[cfg(feature = "redis")]
        let mark = self.0.fleet.as_ref().zip(event_id).filter(|(_, id)| id.len() <= 128);
        #[cfg(not(feature = "redis"))]
        let _ = event_id;
        #[cfg(feature = "redis")]
        if let Some((fleet, id)) = mark {
            if fleet.event_handled(sub, id).await {
                events.count(false);
                return;
            }
        }
        events.count(true);
        tracing::info!(sub = %sub, "a Cognito event: that user's tokens are verified again");
        self.invalidate_user(sub).await;
        #[cfg(feature = "redis")]
        if let Some((fleet, id)) = mark {
            fleet.event_done(sub, id).await;
        }
    }

    #[cfg(feature = "redis")]
    fn listen(&self) {
        if let Some(fleet) = &self.0.fleet {
            fleet.listen(
                &self.0.lifecycle,
                Arc::downgrade(&self.0),
                |inner: Arc<Inner>, message| async move { inner.invalidate_local(message).await },
            );
            self.share_population();
        }
    }

    /// Fleet mode with a call budget: once a second, adds the tokens first seen here to the
    /// fleet's count in Redis and reads the fleet's, so that the TTL fits the whole fleet's
    /// population (whichever instance each token goes to). Ends when the verifier is dropped.
    #[cfg(feature = "redis")]
    fn share_population(&self) {
        let Some(budget) = self.0.cache.budget() else { return };
        if tokio::runtime::Handle::try_current().is_err() || !budget.start_sharing() {
            return;
        }
        let weak = Arc::downgrade(&self.0);
        self.0.lifecycle.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(inner) = weak.upgrade() else { return };
                let (Some(fleet), Some(budget)) = (&inner.fleet, inner.cache.budget()) else { return };
                let pending = budget.take_pending();
                let window = unix_ms() / 5_000;
                if let Some(count) = fleet.count_population(&pending, window).await {
                    budget.fleet_count(count);
                }
            }
        });
    }

    /// The (first) user pool id.
    pub fn user_pool_id(&self) -> &str {
        &self.0.pools[0].id
    }

    /// Every user pool id accepted, the first one first.
    pub fn user_pool_ids(&self) -> impl Iterator<Item = &str> {
        self.0.pools.iter().filter(|p| !p.replica).map(|p| &*p.id)
    }

    /// The cache TTL in force: how long a verdict made now is reused, which is the longest a
    /// sign-out, a disabled or a deleted user can go unnoticed. `cache_ttl`, or with
    /// [`get_user_budget`](crate::VerifierBuilder::get_user_budget), what the active tokens need,
    /// between `cache_ttl` and `max_cache_ttl`. Also exported as the gauge
    /// `actix_cognito_effective_ttl_seconds`.
    pub fn effective_cache_ttl(&self) -> Duration {
        self.0.cache.effective_ttl()
    }

    /// The (first) pool's region.
    pub fn region(&self) -> &str {
        &self.0.pools[0].region
    }

    /// The `iss` values accepted: each pool's two Cognito forms, then any others.
    ///
    /// With an endpoint override on a loopback host, the loopback forms emulators use are
    /// accepted too (see the README's emulator table); they are not listed here.
    pub fn issuers(&self) -> &[String] {
        &self.0.issuers
    }

    /// Where the (first) pool's signing keys are fetched from, unless the signature check is off.
    pub fn jwks_url(&self) -> Option<&str> {
        self.0.pools[0].keys.as_ref().map(KeySet::url)
    }

    /// How many times the JWKS was fetched, every pool's.
    pub fn jwks_fetches(&self) -> u64 {
        self.0.pools.iter().filter_map(|p| p.keys.as_ref()).map(KeySet::fetches).sum()
    }

    fn keys(&self) -> impl Iterator<Item = &KeySet> {
        self.0.pools.iter().filter_map(|p| p.keys.as_ref())
    }

    /// Fetches the pool's signing keys now, so the first request need not wait for them; in
    /// fleet mode, also waits (up to a second) for the invalidation channel to be subscribed.
    ///
    /// With [`authorization_attributes`](crate::VerifierBuilder::authorization_attributes),
    /// first checks that no app client lets its users write them.
    ///
    /// # Errors
    /// [`ConfigError::Jwks`], saying why the keys could not be fetched. Nothing is lost: they
    /// are fetched again in the background, and when a token needs them.
    /// [`ConfigError::WritableAttribute`] or [`ConfigError::AttributeCheck`] when an attribute that
    /// authorization reads is writable by users, or that could not be checked.
    pub async fn hydrate(&self) -> Result<usize, ConfigError> {
        self.0.attribute_check.run().await?;
        #[cfg(feature = "events")]
        self.consume_events();
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.0.fleet {
            self.listen();
            if !fleet.connect().await {
                tracing::warn!("could not connect to Redis yet");
            }
            if !fleet.subscribed(std::time::Duration::from_secs(1)).await {
                tracing::warn!("not yet subscribed to the Redis invalidation channel");
            }
        }
        let mut loaded = 0;
        for pool in &self.0.pools {
            let Some(keys) = &pool.keys else { continue };
            match keys.fetch().await {
                Ok(n) => loaded += n,
                // A replica region's keys are not needed to serve: its outage is what failover
                // is for. They are fetched in the background, and when a token needs them.
                Err(e) if pool.replica => {
                    self.load_keys_in_background();
                    tracing::warn!(region = %pool.region, "fetching the replica's JWKS from {}: {e}", keys.url());
                }
                Err(e) => {
                    self.load_keys_in_background();
                    return Err(ConfigError::Jwks(format!("fetching the JWKS from {}: {e}", keys.url())));
                }
            }
        }
        Ok(loaded)
    }

    /// Until the keys are loaded, fetches them every 2 s (one task per verifier, ended when it
    /// has them or when the verifier is dropped), so that readiness does not wait for a request.
    fn load_keys_in_background(&self) {
        if self.keys().next().is_none()
            || tokio::runtime::Handle::try_current().is_err()
            || self.0.loading_keys.swap(true, Relaxed)
        {
            return;
        }
        let weak = Arc::downgrade(&self.0);
        self.0.lifecycle.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let Some(inner) = weak.upgrade() else { return };
                let mut all = true;
                for keys in inner.pools.iter().filter_map(|p| p.keys.as_ref()) {
                    all &= keys.load().await.is_ok();
                }
                if all {
                    inner.loading_keys.store(false, Relaxed);
                    return;
                }
            }
        });
    }

    /// Whether this instance can verify tokens, and how its upstreams were doing.
    ///
    /// Ready once the pool's signing keys are loaded (always, without the signature check).
    /// Until then, the keys are fetched in the background every 2 s. An outage of Cognito or
    /// of the JWKS endpoint after that does **not** make an instance unready: cached users still
    /// pass, and a fleet of unready instances would be a total outage. The time since the last
    /// `GetUser` answer and failure is there for alerts.
    pub fn readiness(&self) -> Readiness {
        let inner = &*self.0;
        let keys = self.keys().map(KeySet::key_count).sum();
        let ready = inner
            .pools
            .iter()
            .filter(|p| !p.replica)
            .filter_map(|p| p.keys.as_ref())
            .all(|k| k.key_count() > 0);
        if !ready || self.keys().any(|k| k.key_count() == 0) {
            self.load_keys_in_background();
        }
        let regions = inner.regions.iter().flat_map(|r| r.regions().iter().enumerate()).map(|(i, r)| {
            RegionHealth { region: r.name().to_owned(), available: r.is_available(), preferred: i == 0 }
        });
        let since = |at: &AtomicI64| {
            let at = at.load(Relaxed);
            (at != i64::MIN).then(|| {
                Duration::from_millis((crate::clock::unix_ms() as i64).saturating_sub(at).max(0) as u64)
            })
        };
        #[cfg(feature = "redis")]
        let redis =
            inner.fleet.as_ref().map(|f| if f.breaker_open() { RedisState::Down } else { RedisState::Up });
        #[cfg(not(feature = "redis"))]
        let redis = None::<RedisState>;
        Readiness {
            ready,
            reason: (!ready).then_some("the user pool's signing keys are not loaded yet"),
            signing_keys: keys,
            unusable_signing_keys: self.keys().flat_map(KeySet::unusable).collect(),
            since_get_user_answer: since(&inner.get_user_answered),
            since_get_user_failure: since(&inner.get_user_failed),
            redis,
            regions: regions.collect(),
        }
    }

    /// The OAuth 2.0 Protected Resource Metadata (RFC 9728) of an API at `resource` (its URL,
    /// such as `https://api.example.com`) that this verifier protects: the user pool is its
    /// authorization server. Serve it with [`ResourceMetadata::service`].
    pub fn resource_metadata(&self, resource: impl Into<String>) -> ResourceMetadata {
        let servers = self.0.policy.issuers.iter().map(|i| i.exact[0].clone()).collect();
        ResourceMetadata::new(resource.into(), servers)
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
        match self.verify_traced(token, Accept::default()).await.0? {
            Principal::User(user) => Ok(user),
            Principal::Machine(_) => Err(Rejection::MachineToken.into()),
            Principal::IdToken(_) => Err(Rejection::NotAccessToken.into()),
        }
    }

    /// Verifies an ID token, locally only: signature, `iss`, `aud` among the app clients,
    /// `token_use` = `id`, `exp`. No Cognito API accepts ID tokens, so one **cannot be revoked
    /// before it expires**. Needs the signature check.
    ///
    /// # Errors
    /// As [`verify`](Self::verify); an access token is [`Rejection::NotAccessToken`]'s opposite
    /// and is refused too ([`Rejection::Malformed`] for anything that is not an ID token).
    pub async fn verify_id_token(&self, token: &str) -> Result<IdTokenUser, VerifyError> {
        let accept = Accept { machines: false, id_tokens: true };
        match self.verify_traced(token.as_bytes(), accept).await.0? {
            Principal::IdToken(user) => Ok(user),
            _ => Err(Rejection::Malformed.into()),
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
        self.verify_traced(token.as_bytes(), Accept { machines: true, id_tokens: false }).await.0
    }

    /// The verdict, and whether a fresh cache entry gave it.
    #[inline]
    pub(crate) async fn verify_traced(
        &self,
        token: &[u8],
        accept: Accept,
    ) -> (Result<Principal, VerifyError>, bool) {
        let inner = &*self.0;
        let counters = &inner.cache.counters;
        if token.len() > inner.policy.max_len {
            return (self.counted(Err(Rejection::TooLarge.into())), false);
        }
        if inner.cache.enabled() {
            let cache = &inner.cache;
            // Read before moka is asked: what this thread files is void after any invalidation.
            let generation = cache.generation().current();
            let (fast, tail, now) = (cache.fast_key(token), token::tail(token), tokio::time::Instant::now());
            // A verdict this thread already found: memory of its own, and the generation.
            if let Some(hit) = front::get(cache.generation(), generation, fast, &tail, now, cache.now_ms(now))
            {
                inner.telemetry.local_hit();
                if let Err(refused) = accept.admits(&hit.principal) {
                    return (self.counted(Err(refused.into())), true);
                }
                cache.observe(&hit.key);
                counters.hits.add();
                let verdict = Ok(hit.principal);
                inner.telemetry.verdict(&verdict);
                return (verdict, true);
            }
            if let Some(hit) = cache.get(token, fast, now).await {
                let principal = hit.principal;
                inner.telemetry.local_hit();
                if let Err(refused) = accept.admits(&principal) {
                    return (self.counted(Err(refused.into())), true);
                }
                if principal.user().is_some_and(|u| cache.watermarks().revoked(u.sub(), u.iat())) {
                    return (self.counted(Err(Rejection::NotAuthorized.into())), true);
                }
                counters.hits.add();
                if hit.refresh {
                    inner.refresher.request(token);
                }
                front::put(
                    cache.generation(),
                    generation,
                    fast,
                    tail,
                    hit.until,
                    hit.refresh_ms,
                    hit.key,
                    &principal,
                );
                let verdict = Ok(principal);
                inner.telemetry.verdict(&verdict);
                return (verdict, true);
            }
            inner.telemetry.local_misses.increment(1);
            // The SHA-256 only on a miss: the negative cache, the loads in flight and Redis.
            let verdict = Box::pin(self.verify_miss(Some(token::key(token)), token, accept)).await;
            inner.telemetry.entries.set(inner.cache.entry_count() as f64);
            inner.telemetry.flush();
            return (self.counted(verdict), false);
        }
        (self.counted(Box::pin(self.verify_miss(None, token, accept)).await), false)
    }

    /// Counts a verdict that the cache did not give.
    fn counted(&self, verdict: Result<Principal, VerifyError>) -> Result<Principal, VerifyError> {
        let counters = &self.0.cache.counters;
        self.0.telemetry.verdict(&verdict);
        match &verdict {
            Ok(_) => {}
            Err(VerifyError::Rejected(r)) => counters.reject(*r),
            Err(VerifyError::Unavailable(_)) => Counters::bump(&counters.unavailable),
        }
        verdict
    }

    /// A token the fresh cache did not answer: a remembered rejection, the local checks, then
    /// one load (signature, Redis, `GetUser`) shared by every concurrent request of the token.
    async fn verify_miss(
        &self,
        key: Option<TokenKey>,
        token: &[u8],
        accept: Accept,
    ) -> Result<Principal, VerifyError> {
        let inner = &*self.0;
        let counters = &inner.cache.counters;
        if let Some(rejection) = match &key {
            Some(key) => inner.cache.rejection(key).await,
            None => None,
        } {
            Counters::bump(&counters.negative_hits);
            return Err(rejection.into());
        }
        Counters::bump(&counters.misses);
        #[cfg(feature = "events")]
        self.consume_events();
        let checked = self.check_locally(token, accept).await?;
        // Revoked by the app after this token was issued (`revoke_user`): refused, no call.
        if checked.kind != Kind::IdToken
            && inner.cache.watermarks().revoked(&checked.claims.sub, checked.claims.iat)
        {
            return Err(Rejection::NotAuthorized.into());
        }
        let Some(key) = key else {
            return self.resolve(None, token, &checked, None, false).await.map(|(p, _)| p);
        };
        for _ in 0..MAX_LOADS {
            let guard = inner.cache.begin(key, &checked.claims);
            let load = self.resolve(Some(&key), token, &checked, Some(guard.flight()), false);
            let (outcome, loaded_here) = inner.cache.get_or_load(key, token, &guard, load).await;
            if !loaded_here {
                Counters::bump(&counters.coalesced);
            }
            match outcome {
                Outcome::Verdict(verdict) => return verdict,
                Outcome::Revoked => continue,
            }
        }
        Err(Unavailable::new(UnavailableKind::Other, inner.retry_after).into())
    }

    /// The local claim checks. Machine and ID tokens pass them where `accept` says so.
    ///
    /// A token that lacks the admin scope is a configuration hint worth logging, but only once
    /// its signature shows it is the pool's: unsigned tokens must not be able to flood the logs.
    async fn check_locally(&self, token: &[u8], accept: Accept) -> Result<Checked, VerifyError> {
        let inner = &*self.0;
        let claims = token::parse(token, inner.policy.max_len)?;
        // The pool is known once the issuer passed: every later rejection has one.
        let pool_keys = || inner.policy.pool_of(&claims.iss).and_then(|i| inner.pools[i].keys.as_ref());
        match inner.policy.check(&claims, crate::clock::unix_now()) {
            Ok(pool) => Ok(Checked { claims, kind: Kind::User, pool }),
            // Checked up to the user-only claims; the signature check is still to come.
            Err(Rejection::MachineToken) if accept.machines && pool_keys().is_some() => {
                let pool = inner.policy.pool_of(&claims.iss).unwrap_or(0);
                Ok(Checked { claims, kind: Kind::Machine, pool })
            }
            // An ID token where they are accepted: its own checks; the signature is still to come.
            Err(Rejection::NotAccessToken) if accept.id_tokens && claims.token_use == "id" => {
                let pool = inner.policy.check_id(&claims, crate::clock::unix_now())?;
                match inner.pools[pool].keys {
                    Some(_) => Ok(Checked { claims, kind: Kind::IdToken, pool }),
                    None => Err(Rejection::NotAccessToken.into()),
                }
            }
            Err(Rejection::MissingAdminScope)
                if inner.user_info.is_some() && claims.scopes().any(|s| s == "openid") =>
            {
                let pool = inner.policy.pool_of(&claims.iss).unwrap_or(0);
                Ok(Checked { claims, kind: Kind::UserInfo, pool })
            }
            Err(Rejection::MissingAdminScope) => {
                let genuine = match pool_keys() {
                    Some(keys) => keys.verify(token, claims.kid.as_deref(), claims.iat).await.is_ok(),
                    None => true,
                };
                if genuine {
                    self.scope_hint();
                }
                Err(Rejection::MissingAdminScope.into())
            }
            Err(Rejection::WrongIssuer) => {
                if inner.policy.issuers.iter().any(Issuers::emulated) {
                    self.issuer_hint(&claims.iss);
                }
                Err(Rejection::WrongIssuer.into())
            }
            Err(r) => Err(r.into()),
        }
    }

    /// Under an endpoint override (an emulator), an unexpected issuer is most likely a setting
    /// to fix: say so once per issuer origin, naming what is accepted and how to add more.
    fn issuer_hint(&self, iss: &str) {
        let origin = crate::issuer::origin(iss);
        let mut reported = self.0.issuers_reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported.len() < MAX_ISSUERS_REPORTED && reported.insert(origin.clone()) {
            tracing::warn!(
                issuer_origin = %origin,
                expected = %self.0.policy.issuers.iter().map(Issuers::describe).collect::<Vec<_>>().join("; "),
                "an access token's issuer is not one this verifier accepts: if it is your emulator's, \
                 add it with `allow_issuer(..)` (COGNITO_ALLOW_ISSUER in the example server)"
            );
        }
    }

    /// Logs, at most once a minute, that tokens lack the scope `GetUser` needs.
    fn scope_hint(&self) {
        let (now, last) = (crate::clock::unix_now(), &self.0.scope_hint_logged);
        let seen = last.load(Relaxed);
        if now.saturating_sub(seen) >= 60 && last.compare_exchange(seen, now, Relaxed, Relaxed).is_ok() {
            tracing::warn!(
                "an access token lacks the aws.cognito.signin.user.admin scope, which GetUser requires: \
                 enable that scope on the app client (or request it at sign-in)"
            );
        }
    }

    /// The verdict on a token that passed the local checks: its signature, then (fleet mode) a
    /// verdict another instance made for this very token, then `GetUser`. A machine token is done
    /// after its signature. A `refresh` takes a shared verdict only if it is younger than the
    /// refresh point of the one it replaces.
    async fn resolve(
        &self,
        key: Option<&TokenKey>,
        token: &[u8],
        checked: &Checked,
        flight: Option<&Arc<Flight>>,
        refresh: bool,
    ) -> Loaded {
        let inner = &*self.0;
        let claims = &checked.claims;
        let pool = &inner.pools[checked.pool];
        if let Some(keys) = &pool.keys {
            keys.verify(token, claims.kid.as_deref(), claims.iat).await?;
        }
        match checked.kind {
            Kind::Machine => return Ok((Principal::Machine(MachineClient::new(claims)), None)),
            Kind::IdToken => {
                // `check_id` found one of the app clients among the audiences.
                let client = claims.client_audience(&inner.policy.client_ids).unwrap_or_default();
                return Ok((Principal::IdToken(IdTokenUser::new(claims, pool.id.clone(), client)), None));
            }
            Kind::User | Kind::UserInfo => {}
        }
        #[cfg(feature = "redis")]
        let generation = match (&inner.fleet, key) {
            (Some(fleet), Some(key)) => {
                match self.shared_verdict(fleet, key, claims, &pool.id, refresh).await {
                    Ok(shared) => return shared,
                    Err(generation) => generation,
                }
            }
            _ => None,
        };
        #[cfg(not(feature = "redis"))]
        let _ = (key, flight, refresh);
        // The local checks admitted only base64url and dots.
        let token = std::str::from_utf8(token).map_err(|_| VerifyError::Rejected(Rejection::Malformed))?;
        let verdict = async {
            let _permit = inner
                .guard
                .admit_for(&claims.sub)
                .inspect_err(|_| inner.telemetry.quota_refusals.increment(1))?;
            Counters::bump(&inner.cache.counters.get_user_calls);
            // The client counts and times `GetUser` in the region that answers.
            let answer = match (checked.kind, &inner.user_info) {
                (Kind::UserInfo, Some(user_info)) => pool.calls.time(user_info.user_info(token)).await,
                _ => pool.cognito.get_user(token).await,
            };
            let at = if answer.as_ref().is_err_and(VerifyError::is_unavailable) {
                &inner.get_user_failed
            } else {
                &inner.get_user_answered
            };
            at.store(crate::clock::unix_ms() as i64, Relaxed);
            let answer = answer?;
            let attributes = answer.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let profile = inner.cache.intern(Profile::new(&answer.username, &claims.sub, attributes));
            let issuer = inner.cache.intern_issuer(&claims.iss);
            Ok(Principal::User(CognitoUser::new(profile, claims, pool.id.clone(), issuer)))
        }
        .await;
        #[cfg(feature = "redis")]
        if let (Some(fleet), Some(key), Some(generation)) = (&inner.fleet, key, generation) {
            // A load that an invalidation hit must not put its verdict back into Redis.
            if !flight.is_some_and(|f| f.revoked()) {
                self.share(fleet, key, &verdict, &generation, &claims.sub).await;
            }
        }
        verdict.map(|p| (p, None))
    }

    /// The verdict another instance made for this token, if any; else the generation to share
    /// under (none when Redis could not be read).
    #[cfg(feature = "redis")]
    async fn shared_verdict(
        &self,
        fleet: &Fleet,
        key: &TokenKey,
        claims: &Claims,
        pool: &Arc<str>,
        refresh: bool,
    ) -> Result<Loaded, Option<Generations>> {
        let inner = &*self.0;
        self.listen();
        let Lookup { shared, generations, watermark } = fleet.get(key, claims).await;
        if let Some(at) = watermark {
            // An instance that missed the broadcast (or started later) learns it here.
            inner.cache.watermarks().record(&claims.sub, at);
            if inner.cache.watermarks().revoked(&claims.sub, claims.iat) {
                return Ok(Err(Rejection::NotAuthorized.into()));
            }
        }
        let telemetry = &inner.telemetry;
        (if shared.is_some() { &telemetry.redis_hits } else { &telemetry.redis_misses }).increment(1);
        match (shared, generations) {
            (Some(Shared::User(_, until_ms)), generations) if refresh && !self.younger(until_ms) => {
                Err(generations)
            }
            (Some(Shared::User(profile, until_ms)), _) => {
                Counters::bump(&inner.cache.counters.shared_hits);
                let issuer = inner.cache.intern_issuer(&claims.iss);
                let user = CognitoUser::new(inner.cache.intern(profile), claims, pool.clone(), issuer);
                let left = std::time::Duration::from_millis(until_ms.saturating_sub(unix_ms()));
                Ok(Ok((Principal::User(user), Some(left))))
            }
            (Some(Shared::Rejected(r)), _) => {
                Counters::bump(&inner.cache.counters.shared_hits);
                Ok(Err(r.into()))
            }
            (None, generations) => Err(generations),
        }
    }

    /// Whether a shared verdict that lasts until `until_ms` is younger than the refresh point
    /// of a verdict made now: one another instance's refresh made, not the one being refreshed.
    #[cfg(feature = "redis")]
    fn younger(&self, until_ms: u64) -> bool {
        let fraction = self.0.cache.settings.refresh_ahead.unwrap_or(1.0);
        let rest = self.0.cache.effective_ttl().mul_f64(1.0 - fraction).as_millis() as u64;
        until_ms.saturating_sub(unix_ms()) > rest
    }

    /// Shares Cognito's verdict with the fleet: a user, or a rejection Cognito made.
    #[cfg(feature = "redis")]
    async fn share(
        &self,
        fleet: &Fleet,
        key: &TokenKey,
        verdict: &Result<Principal, VerifyError>,
        generations: &Generations,
        sub: &str,
    ) {
        let settings = &self.0.cache.settings;
        match verdict {
            Ok(Principal::User(user)) => {
                let ttl = self.0.cache.ttl_for(key);
                let until = unix_ms().saturating_add(ttl.as_millis() as u64);
                fleet.put_user(key, user, until, generations).await
            }
            Err(VerifyError::Rejected(r)) if !r.is_local() && !settings.negative_ttl.is_zero() => {
                fleet.put_rejection(key, sub, *r, settings.negative_ttl).await;
            }
            _ => {}
        }
    }

    /// Forgets the verdict for one token, here and (in fleet mode) on every instance: its next
    /// request goes to Cognito.
    pub async fn invalidate_token(&self, token: &str) {
        let key = token::key(token.as_bytes());
        // Its user names its entries; a token that does not parse was never verified.
        let claims = token::parse(token.as_bytes(), self.0.policy.max_len).ok();
        let sub = claims.as_ref().map(|c| c.sub.as_str());
        self.0.cache.invalidate(Target::Token(&key, sub)).await;
        // Nor was it shared or cached on another instance.
        #[cfg(feature = "redis")]
        if let (Some(fleet), Some(sub)) = (&self.0.fleet, sub) {
            fleet.invalidate_token(&key, sub).await;
        }
    }

    /// Forgets every verdict of one user, named by `sub` or by username, here and (in fleet
    /// mode) on every instance: the next request of each of their tokens goes to Cognito. Call
    /// it after signing a user out yourself.
    pub async fn invalidate_user(&self, sub_or_username: &str) {
        self.0.cache.invalidate(Target::User(sub_or_username)).await;
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.0.fleet {
            fleet.invalidate_user(sub_or_username).await;
        }
    }

    /// Forgets every verdict, positive and negative, here and (in fleet mode) on every instance.
    pub async fn invalidate_all(&self) {
        self.0.cache.invalidate(Target::All).await;
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
        let pool = self.0.pools.iter().find(|p| *p.id == *user.pool_id()).unwrap_or(&self.0.pools[0]);
        pool.cognito.global_sign_out(token).await?;
        self.revoke_user(user.sub()).await;
        self.invalidate_user(user.sub()).await;
        Ok(())
    }

    /// Refuses, from now on, every token of the user `sub` issued before this second: locally,
    /// at once, with no scan of the cache and no `GetUser` call, here and (in fleet mode, through
    /// Redis) on every instance. Tokens issued in the same second or later are verified
    /// normally. For apps that sign out, disable or delete users through their own admin calls
    /// (`AdminUserGlobalSignOut`, `AdminDisableUser`, `AdminDeleteUser`); the mark is kept 24 h,
    /// longer than any access token lives. [`invalidate_user`](Self::invalidate_user) keeps its
    /// meaning: it drops verdicts (re-verified, never refused by it), as after an attribute change.
    pub async fn revoke_user(&self, sub: &str) {
        let at = crate::clock::unix_now();
        self.0.cache.watermarks().record(sub, at);
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.0.fleet {
            fleet.revoke_user(sub, at).await;
        }
    }

    /// Revokes a sign-in session (Cognito `RevokeToken`, unsigned: authorized by the refresh
    /// token and the app client, with its secret for a confidential client), which revokes
    /// every access token issued from that refresh token, then drops their verdicts here and
    /// (fleet mode) on every instance: they are refused at once. `access_token` is one of the
    /// session's access tokens, expired or not; it names the session (`origin_jti`) and the app
    /// client. The user's other sessions are untouched.
    ///
    /// # Errors
    /// [`Rejection::Malformed`] or [`Rejection::WrongIssuer`] when `access_token` names no
    /// session of this verifier's pools; [`VerifyError::Unavailable`] when Cognito could not
    /// revoke (down, throttling, revocation not enabled on the app client, a wrong secret).
    pub async fn revoke_session(
        &self,
        access_token: &str,
        refresh_token: &str,
        client_secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        let claims = token::parse(access_token.as_bytes(), self.0.policy.max_len)?;
        let pool = self.0.policy.pool_of(&claims.iss).ok_or(Rejection::WrongIssuer)?;
        let (Some(client_id), Some(origin_jti)) = (&claims.client_id, &claims.origin_jti) else {
            return Err(Rejection::Malformed.into());
        };
        self.0.pools[pool].cognito.revoke_token(refresh_token, client_id, client_secret).await?;
        self.0.cache.invalidate(Target::Session(origin_jti)).await;
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.0.fleet {
            fleet.invalidate_session(origin_jti, Some(&claims.sub)).await;
        }
        Ok(())
    }

    /// Forgets every verdict of one sign-in session (`origin_jti`), here and (in fleet mode) on
    /// every instance, for apps that revoke refresh tokens elsewhere. Found through an index,
    /// not by a scan of the cache.
    pub async fn invalidate_session(&self, origin_jti: &str) {
        self.0.cache.invalidate(Target::Session(origin_jti)).await;
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.0.fleet {
            fleet.invalidate_session(origin_jti, None).await;
        }
    }

    /// A snapshot of the counters and entry counts.
    ///
    /// Entry counts lag behind by the cache's pending maintenance; see
    /// [`run_pending_tasks`](Self::run_pending_tasks).
    pub fn stats(&self) -> Stats {
        Stats { jwks_fetches: self.jwks_fetches(), ..Stats::read(&self.0.cache) }
    }

    /// Runs the caches' pending maintenance (evictions, expirations, invalidations) now, so
    /// that [`stats`](Self::stats) counts exactly.
    pub async fn run_pending_tasks(&self) {
        self.0.cache.run_pending_tasks().await;
        self.0.telemetry.flush();
    }
}

/// In-process tests: a fake Cognito and a fake JWKS endpoint behind the seams, and tokio's
/// paused clock for the timing policies.
#[cfg(all(test, feature = "test-util"))]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::cognito::{BoxFuture, GetUserAnswer};
    use crate::testing::{access_claims, TestSigner};

    const POOL: &str = "eu-west-1_Seams";
    const CLIENT: &str = "seamclient";

    /// Answers `GetUser` as the token's own user after `delay` (on tokio's clock), or refuses
    /// the tokens revoked when their call arrives.
    #[derive(Default)]
    struct FakeCognito {
        calls: AtomicU64,
        delay: Mutex<Duration>,
        revoked: Mutex<HashSet<String>>,
        /// Answers every call with a 5xx.
        down: AtomicBool,
    }

    impl Introspect for FakeCognito {
        fn get_user<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<GetUserAnswer, VerifyError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, SeqCst);
                let revoked = self.revoked.lock().unwrap().contains(token);
                let delay = *self.delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                if self.down.load(SeqCst) {
                    return Err(
                        Unavailable::new(UnavailableKind::ServiceError, Duration::from_secs(1)).into()
                    );
                }
                if revoked {
                    return Err(Rejection::NotAuthorized.into());
                }
                let claims = token::parse(token.as_bytes(), 8192).unwrap();
                Ok(GetUserAnswer { username: claims.username.unwrap_or_default(), attributes: vec![] })
            })
        }

        fn global_sign_out<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), VerifyError>> {
            self.revoked.lock().unwrap().insert(token.to_owned());
            Box::pin(async { Ok(()) })
        }

        fn revoke_token<'a>(
            &'a self,
            _refresh_token: &'a str,
            _client_id: &'a str,
            _client_secret: Option<&'a str>,
        ) -> BoxFuture<'a, Result<(), VerifyError>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// Serves a JWKS document and counts the fetches.
    struct FakeKeys {
        jwks: Mutex<String>,
        fetches: AtomicU64,
    }

    impl FetchKeys for FakeKeys {
        fn fetch<'a>(&'a self, _url: &'a str, _timeout: Duration) -> BoxFuture<'a, Result<Bytes, String>> {
            self.fetches.fetch_add(1, SeqCst);
            let body = Bytes::from(self.jwks.lock().unwrap().clone());
            Box::pin(async move { Ok(body) })
        }
    }

    fn fixture() -> (Verifier, Arc<FakeCognito>, Arc<FakeKeys>) {
        fixture_with(|b| b)
    }

    fn fixture_with(
        settings: impl FnOnce(crate::VerifierBuilder) -> crate::VerifierBuilder,
    ) -> (Verifier, Arc<FakeCognito>, Arc<FakeKeys>) {
        let cognito = Arc::new(FakeCognito::default());
        let keys = Arc::new(FakeKeys {
            jwks: Mutex::new(TestSigner::default().jwks().to_string()),
            fetches: AtomicU64::new(0),
        });
        let seams = Seams { introspect: Some(cognito.clone()), keys: Some(keys.clone()), user_info: None };
        let builder = Verifier::builder(POOL).client_id(CLIENT).endpoint_from_env(false).seams(seams);
        (settings(builder).build().unwrap(), cognito, keys)
    }

    fn token(signer: &TestSigner, sub: &str) -> String {
        signer.sign(&access_claims(POOL, CLIENT, sub, 3600))
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_concurrent_requests_with_one_new_token_cost_one_call() {
        let (verifier, cognito, _) = fixture();
        *cognito.delay.lock().unwrap() = Duration::from_millis(200);
        let token = token(&TestSigner::default(), "crowd");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let (v, t) = (verifier.clone(), token.clone());
            tasks.spawn(async move { v.verify(&t).await.map(|u| u.username().to_owned()) });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap().unwrap(), "user-crowd");
        }
        assert_eq!(cognito.calls.load(SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_after_a_sign_out_never_joins_the_answer_of_a_call_made_before_it() {
        let (verifier, cognito, _) = fixture();
        *cognito.delay.lock().unwrap() = Duration::from_secs(1);
        let token = token(&TestSigner::default(), "leaver");
        let before = tokio::spawn({
            let (v, t) = (verifier.clone(), token.clone());
            async move { v.verify(&t).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // What POST /logout does, while the first call is on its way: Cognito revokes the
        // token, then the verdicts go.
        cognito.revoked.lock().unwrap().insert(token.clone());
        verifier.invalidate_user("leaver").await;
        let after = verifier.verify(&token).await;
        assert_eq!(after.unwrap_err(), VerifyError::Rejected(Rejection::NotAuthorized));
        let _ = before.await.unwrap();
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            VerifyError::Rejected(Rejection::NotAuthorized)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_kid_flood_costs_one_fetch_per_window_and_a_rotated_key_is_accepted_within_it() {
        let (verifier, _, keys) = fixture();
        verifier.hydrate().await.unwrap();
        let flood = |i: u64| {
            let mut claims = access_claims(POOL, CLIENT, "flood", 3600);
            claims["iat"] = (crate::clock::unix_now() + 3600).into();
            TestSigner::with_kid(&format!("attacker-{i}")).sign(&claims)
        };
        // Ten seconds of flood, 100 tokens a second.
        for i in 0..500 {
            assert_eq!(verifier.verify(&flood(i)).await.unwrap_err(), Rejection::UnknownKey.into());
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        *keys.jwks.lock().unwrap() = serde_json::json!({
            "keys": [TestSigner::default().jwk(), TestSigner::with_kid("rotated").jwk()]
        })
        .to_string();
        let rotated = tokio::time::Instant::now();
        let mut i = 500;
        while verifier.verify(&token(&TestSigner::with_kid("rotated"), "new")).await.is_err() {
            assert!(rotated.elapsed() <= Duration::from_secs(5), "the rotated key is still refused");
            assert_eq!(verifier.verify(&flood(i)).await.unwrap_err(), Rejection::UnknownKey.into());
            tokio::time::advance(Duration::from_millis(10)).await;
            i += 1;
        }
        // The hydration, then one fetch per 5 s window of the flood.
        let windows = (tokio::time::Instant::now() - rotated + Duration::from_secs(5)).as_secs() / 5 + 1;
        assert!(keys.fetches.load(SeqCst) <= 1 + windows + 1, "{} fetches", keys.fetches.load(SeqCst));
    }

    #[tokio::test]
    async fn an_access_token_with_an_array_audience_is_verified_not_called_malformed() {
        let (verifier, cognito, _) = fixture();
        let mut claims = access_claims(POOL, CLIENT, "bound", 3600);
        claims["aud"] = serde_json::json!(["https://api.example.com", "https://other.example.com"]);
        let user = verifier.verify(&TestSigner::default().sign(&claims)).await.unwrap();
        assert_eq!(user.sub(), "bound");
        assert_eq!(cognito.calls.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_required_audience_refuses_tokens_for_another_resource_or_none_at_no_call() {
        let (verifier, cognito, _) = fixture_with(|b| b.audience("https://api.example.com"));
        let signer = TestSigner::default();
        let with = |aud: serde_json::Value| {
            let mut claims = access_claims(POOL, CLIENT, "resource", 3600);
            claims["aud"] = aud;
            signer.sign(&claims)
        };
        let wrong = VerifyError::Rejected(Rejection::WrongAudience);
        use serde_json::json;
        for aud in [json!("https://other.example.com"), json!(["https://other.example.com"]), json!(null)] {
            assert_eq!(verifier.verify(&with(aud.clone())).await.unwrap_err(), wrong, "{aud}");
        }
        assert_eq!(verifier.verify(&token(&signer, "resource")).await.unwrap_err(), wrong, "no aud at all");
        assert_eq!(cognito.calls.load(SeqCst), 0, "a token for another resource cost a call");
        verifier.verify(&with(json!("https://api.example.com"))).await.unwrap();
        verifier
            .verify(&with(json!(["https://other.example.com", "https://api.example.com"])))
            .await
            .unwrap();
        assert_eq!(cognito.calls.load(SeqCst), 2);
        let blank = Verifier::builder(POOL).client_id(CLIENT).audience(" ").build().unwrap_err();
        assert!(blank.to_string().contains("audience"), "{blank}");
    }

    #[tokio::test]
    async fn a_fast_key_collision_gives_nobody_anothers_verdict() {
        let (verifier, cognito, _) = fixture();
        let signer = TestSigner::default();
        let (victim, other) = (token(&signer, "victim"), token(&signer, "other"));
        verifier.verify(&victim).await.unwrap();
        // Under the same fast key, the victim's entry is not the other token's: its tail and
        // SHA-256 differ. The other token is verified as itself, and takes the key over.
        verifier.0.cache.collide(victim.as_bytes(), other.as_bytes()).await;
        assert_eq!(verifier.verify(&other).await.unwrap().sub(), "other");
        assert_eq!(cognito.calls.load(SeqCst), 2);
        assert_eq!(verifier.verify(&other).await.unwrap().sub(), "other");
        assert_eq!(verifier.verify(&victim).await.unwrap().sub(), "victim");
        assert_eq!(cognito.calls.load(SeqCst), 2);
        // A token that ends like the victim's (the last 43 characters of its signature, which
        // only the victim's holder knows) is still found under its own key: a miss, whose
        // signature check refuses it, at no call.
        let mut forged = other.clone();
        forged.replace_range(forged.len() - 43.., &victim[victim.len() - 43..]);
        assert_eq!(
            verifier.verify(&forged).await.unwrap_err(),
            VerifyError::Rejected(Rejection::BadSignature)
        );
        assert_eq!(cognito.calls.load(SeqCst), 2);
    }

    /// Refresh-ahead's fixture: a 2 s TTL and a Cognito 80 ms away (on the paused clock).
    fn refreshing() -> (Verifier, Arc<FakeCognito>) {
        let (verifier, cognito, _) = fixture_with(|b| b.cache_ttl(Duration::from_secs(2)));
        *cognito.delay.lock().unwrap() = Duration::from_millis(80);
        (verifier, cognito)
    }

    /// Verifies `token` and says how long the request waited (on the paused clock, only a wait
    /// for Cognito moves it).
    async fn timed(verifier: &Verifier, token: &str) -> (Result<CognitoUser, VerifyError>, Duration) {
        let started = tokio::time::Instant::now();
        let verdict = verifier.verify(token).await;
        (verdict, started.elapsed())
    }

    /// Lets the refresher and its calls run for `d` of the paused clock.
    async fn settle(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_in_use_is_refreshed_before_expiry_and_no_request_waits() {
        let (verifier, cognito) = refreshing();
        let token = token(&TestSigner::default(), "busy");
        verifier.verify(&token).await.unwrap();
        // Twenty seconds of requests every 50 ms: ten TTLs.
        for _ in 0..400 {
            settle(Duration::from_millis(50)).await;
            let (verdict, waited) = timed(&verifier, &token).await;
            verdict.unwrap();
            assert_eq!(waited, Duration::ZERO, "a request of a token in use waited on Cognito");
        }
        // One call per 0.75 x 2 s to 0.875 x 2 s: 12 to 14 over 20 s, plus the first.
        let calls = cognito.calls.load(SeqCst);
        assert!((12..=15).contains(&calls), "{calls} calls over ten TTLs");
    }

    #[tokio::test(start_paused = true)]
    async fn without_refresh_ahead_each_ttl_a_request_waits() {
        let (verifier, cognito, _) =
            fixture_with(|b| b.cache_ttl(Duration::from_secs(2)).refresh_ahead(false));
        *cognito.delay.lock().unwrap() = Duration::from_millis(80);
        let token = token(&TestSigner::default(), "busy");
        verifier.verify(&token).await.unwrap();
        let mut waits = 0;
        for _ in 0..200 {
            settle(Duration::from_millis(50)).await;
            let (verdict, waited) = timed(&verifier, &token).await;
            verdict.unwrap();
            waits += usize::from(waited > Duration::ZERO);
        }
        assert!(waits >= 4, "{waits} requests waited over five TTLs");
    }

    #[tokio::test(start_paused = true)]
    async fn under_a_call_budget_verdicts_are_verified_on_the_request_path() {
        let (verifier, cognito, _) =
            fixture_with(|b| b.cache_ttl(Duration::from_secs(2)).get_user_budget(100));
        *cognito.delay.lock().unwrap() = Duration::from_millis(80);
        let token = token(&TestSigner::default(), "budgeted");
        verifier.verify(&token).await.unwrap();
        let mut waits = 0;
        for _ in 0..100 {
            settle(Duration::from_millis(50)).await;
            let (verdict, waited) = timed(&verifier, &token).await;
            verdict.unwrap();
            waits += usize::from(waited > Duration::ZERO);
        }
        // Five seconds at the 2 s floor: a reload on the request path at each expiry, no refresh.
        assert!(waits >= 2, "{waits} requests waited");
        assert_eq!(cognito.calls.load(SeqCst), 1 + waits as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_token_is_not_refreshed() {
        let (verifier, cognito) = refreshing();
        let token = token(&TestSigner::default(), "idle");
        verifier.verify(&token).await.unwrap();
        settle(Duration::from_secs(1)).await;
        verifier.verify(&token).await.unwrap();
        settle(Duration::from_secs(30)).await;
        assert_eq!(
            cognito.calls.load(SeqCst),
            1,
            "a token nobody requested past its refresh point was refreshed"
        );
        let (verdict, waited) = timed(&verifier, &token).await;
        verdict.unwrap();
        assert!(waited >= Duration::from_millis(80), "its next request verifies it");
        assert_eq!(cognito.calls.load(SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_that_comes_back_not_authorized_makes_the_next_request_a_401_with_no_call() {
        let (verifier, cognito) = refreshing();
        let token = token(&TestSigner::default(), "leaver");
        verifier.verify(&token).await.unwrap();
        // Signed out elsewhere; the verdict is still fresh.
        cognito.revoked.lock().unwrap().insert(token.clone());
        settle(Duration::from_millis(1800)).await;
        // Past the refresh point: served, and the refresh starts.
        verifier.verify(&token).await.unwrap();
        settle(Duration::from_millis(100)).await;
        assert_eq!(cognito.calls.load(SeqCst), 2);
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            VerifyError::Rejected(Rejection::NotAuthorized)
        );
        assert_eq!(cognito.calls.load(SeqCst), 2, "the rejection was not remembered");
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalidation_during_a_refresh_in_flight_is_not_undone_by_it() {
        let (verifier, cognito) = refreshing();
        *cognito.delay.lock().unwrap() = Duration::from_millis(150);
        let token = token(&TestSigner::default(), "changed");
        verifier.verify(&token).await.unwrap();
        settle(Duration::from_millis(1800)).await;
        verifier.verify(&token).await.unwrap();
        // The refresh is on its way to Cognito: the app drops the user's verdicts.
        settle(Duration::from_millis(50)).await;
        assert_eq!(cognito.calls.load(SeqCst), 2);
        verifier.invalidate_user("changed").await;
        settle(Duration::from_millis(200)).await;
        // The refresh's answer came back after the invalidation: it must not be served.
        let (verdict, waited) = timed(&verifier, &token).await;
        verdict.unwrap();
        assert!(waited > Duration::ZERO, "served the answer of a refresh an invalidation overtook");
        assert_eq!(cognito.calls.load(SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_that_meets_an_outage_serves_until_the_ttl_then_the_outage_policy_applies() {
        let (verifier, cognito) = refreshing();
        let token = token(&TestSigner::default(), "outage");
        verifier.verify(&token).await.unwrap();
        cognito.down.store(true, SeqCst);
        settle(Duration::from_millis(1600)).await;
        verifier.verify(&token).await.unwrap();
        settle(Duration::from_millis(200)).await;
        // The refresh failed: the verdict still serves, and no request waits, within its TTL.
        let (verdict, waited) = timed(&verifier, &token).await;
        verdict.unwrap();
        assert_eq!(waited, Duration::ZERO);
        settle(Duration::from_millis(250)).await;
        // Past the TTL (2 s after the first call): not one verdict older than the TTL.
        let unavailable = verifier.verify(&token).await.unwrap_err();
        assert!(unavailable.is_unavailable(), "{unavailable:?}");
        cognito.down.store(false, SeqCst);
        verifier.verify(&token).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_with_50_tokens_stays_under_the_per_user_rate() {
        let (verifier, cognito, _) = fixture_with(|b| {
            b.cache_ttl(Duration::from_secs(10))
                .max_get_user_per_user_per_second(5)
                .max_get_user_in_flight(1000)
        });
        let signer = TestSigner::default();
        let tokens: Vec<String> = (0..50)
            .map(|i| {
                let mut claims = access_claims(POOL, CLIENT, "many", 3600);
                claims["origin_jti"] = format!("device-{i}").into();
                claims["jti"] = format!("jti-{i}").into();
                signer.sign(&claims)
            })
            .collect();
        // The first verifications come in at 5 a second: the rate holds them to it.
        for token in &tokens {
            while verifier.verify(token).await.is_err() {
                settle(Duration::from_millis(100)).await;
            }
        }
        let (warmed, started) = (cognito.calls.load(SeqCst), tokio::time::Instant::now());
        // A minute of every token in use: each would be refreshed about every 8 s.
        let mut refused = 0;
        for _ in 0..600 {
            for token in &tokens {
                refused += usize::from(verifier.verify(token).await.is_err());
            }
            settle(Duration::from_millis(100)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let rate = (cognito.calls.load(SeqCst) - warmed) as f64 / secs;
        eprintln!("{rate:.2} calls a second for one user over {secs:.0} s; {refused} requests refused");
        assert!(rate <= 5.2, "{rate} calls a second for one user");
    }
}
