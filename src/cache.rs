//! The verdict cache: fresh positive verdicts capped at `exp`, remembered rejections, stale
//! copies for stale-if-error, the users' shared profiles, and the loads in flight.
//!
//! Invalidation is the one thing a cache of verdicts must never get wrong. Three rules hold it:
//! - an invalidation removes the matching entries *and* marks every matching load in flight, and
//!   an entry made by a marked load is never served, by the request that loaded it, by the
//!   requests that joined that load, or by any later request;
//! - any rejection of a token drops its stale copy, so an outage can never bring it back;
//! - no duration arithmetic on the request path can overflow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::future::Cache;
use moka::Expiry;
// Tokio's clock, which tests can pause; the same instant as the standard one otherwise.
use tokio::time::Instant;

use crate::budget::{Budget, BudgetSettings};
use crate::error::{Rejection, VerifyError};
use crate::front::{Generation, Striped};
use crate::token::{Claims, FastKey, Tail, TokenKey};
use crate::user::{Principal, Profile};

#[derive(Debug, Clone)]
pub(crate) struct CacheSettings {
    pub(crate) ttl: Duration,
    pub(crate) capacity: u64,
    pub(crate) max_bytes: u64,
    pub(crate) negative_ttl: Duration,
    pub(crate) negative_capacity: u64,
    pub(crate) stale_grace: Option<Duration>,
    /// With a `GetUser` budget: the TTL adapts to the active tokens, `ttl` being its floor.
    pub(crate) budget: Option<BudgetSettings>,
    /// Refresh-ahead: a hit past this share of its verdict's life re-verifies it in the
    /// background (none: off).
    pub(crate) refresh_ahead: Option<f64>,
    /// How long after a refresh that failed (an outage, a limit) a hit asks again.
    pub(crate) refresh_retry: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(30),
            capacity: 100_000,
            max_bytes: 128 * 1024 * 1024,
            negative_ttl: Duration::from_secs(10),
            negative_capacity: 10_000,
            stale_grace: None,
            budget: None,
            refresh_ahead: Some(DEFAULT_REFRESH_AHEAD),
            refresh_retry: Duration::from_secs(1),
        }
    }
}

/// The share of a verdict's life after which a hit refreshes it, by default.
pub(crate) const DEFAULT_REFRESH_AHEAD: f64 = 0.75;

/// Verdicts shorter than this are not refreshed ahead: the call would not be back in time.
const MIN_REFRESHED_LIFE: Duration = Duration::from_millis(400);

/// Never: no refresh is due.
const NEVER: u64 = u64::MAX;

/// Whether an invalidation hit a load while it was in flight, and when the entry it made is due
/// for a refresh. The entry the load makes keeps it (one small allocation); what the load was
/// for is kept only while it is registered.
pub(crate) struct Flight {
    revoked: AtomicBool,
    /// From when a hit asks for a refresh, ms since the cache's epoch ([`NEVER`]: no refresh).
    refresh_ms: AtomicU64,
}

impl Flight {
    pub(crate) fn revoked(&self) -> bool {
        self.revoked.load(Relaxed)
    }
}

/// A load in flight: which token and user it is for.
struct Registered {
    key: TokenKey,
    sub: Box<str>,
    username: Option<Box<str>>,
    origin_jti: Option<Box<str>>,
    flight: Arc<Flight>,
}

impl Registered {
    fn matches(&self, target: &Target<'_>) -> bool {
        match target {
            Target::Token(key, _) => self.key == **key,
            Target::User(id) => &*self.sub == *id || self.username.as_deref() == Some(*id),
            Target::Session(id) => self.origin_jti.as_deref() == Some(*id),
            Target::All => true,
        }
    }
}

/// Keeps a load registered for invalidations until the request that started it is done with
/// its entry (the entry is in the cache by then, where invalidations find it).
pub(crate) struct FlightGuard<'a> {
    cache: &'a VerdictCache,
    flight: Arc<Flight>,
}

impl FlightGuard<'_> {
    pub(crate) fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut flights = self.cache.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = flights.iter().position(|f| Arc::ptr_eq(&f.flight, &self.flight)) {
            flights.swap_remove(i);
        }
    }
}

/// What an invalidation is aimed at.
pub(crate) enum Target<'a> {
    /// A token, and its user's `sub` when it parses.
    Token(&'a TokenKey, Option<&'a str>),
    User(&'a str),
    /// Every token of one sign-in (`origin_jti`).
    Session(&'a str),
    All,
}

/// A positive verdict and the instant until which it may be served.
///
/// Entries are found by a [`FastKey`] (a keyed 64-bit hash, not collision-resistant), so each
/// one also holds what makes a hit exact: the token's SHA-256 (its [`TokenKey`], computed on the
/// miss that made the entry) and the token's last bytes, which a presented token must match
/// byte for byte.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) principal: Principal,
    /// On Tokio's clock, checked on each hit as well as by moka's own expiry.
    pub(crate) until: Instant,
    flight: Arc<Flight>,
    key: TokenKey,
    tail: Tail,
}

/// A verdict fresh from the loader, and the longest it may be kept (a verdict shared by another
/// instance has already lived part of its life).
pub(crate) type Loaded = Result<(Principal, Option<Duration>), VerifyError>;

/// A fresh verdict found by [`VerdictCache::get`].
pub(crate) struct Hit {
    pub(crate) principal: Principal,
    /// This hit is the one that should refresh the verdict (at most one per verdict and retry
    /// interval).
    pub(crate) refresh: bool,
    /// The verdict's end, its refresh point (ms of the cache's epoch) after this hit, and its
    /// token's SHA-256: what the per-thread front repeats it under.
    pub(crate) until: Instant,
    pub(crate) refresh_ms: u64,
    pub(crate) key: TokenKey,
}

/// What a refresh did, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refreshed {
    /// A fresh verdict replaced the old one.
    Renewed,
    /// Cognito refused the token: the rejection replaced the verdict.
    Rejected,
    /// An invalidation landed while it was in flight: its answer was dropped.
    Superseded,
    /// Cognito could not be asked: the verdict serves until it expires, and a later hit asks
    /// again.
    Unavailable,
    /// The quota guard held the call back (in flight, per second, per user): as `Unavailable`.
    Limited,
    /// The token no longer passes the local checks (it expired), or is not a user's.
    Skipped,
}

impl Refreshed {
    pub(crate) const ALL: [Refreshed; 6] = [
        Refreshed::Renewed,
        Refreshed::Rejected,
        Refreshed::Superseded,
        Refreshed::Unavailable,
        Refreshed::Limited,
        Refreshed::Skipped,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Refreshed::Renewed => "renewed",
            Refreshed::Rejected => "rejected",
            Refreshed::Superseded => "superseded",
            Refreshed::Unavailable => "unavailable",
            Refreshed::Limited => "limited",
            Refreshed::Skipped => "skipped",
        }
    }
}

/// What [`VerdictCache::get_or_load`] found.
pub(crate) enum Outcome {
    Verdict(Result<Principal, VerifyError>),
    /// An invalidation ran while the verdict was being made: verify again.
    Revoked,
}

/// `now + d`, or `now` where that would overflow: an entry that cannot be dated expires at once.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// How long until `exp` (seconds since the Unix epoch); zero once it has passed.
pub(crate) fn until_exp(exp: i64) -> Duration {
    match UNIX_EPOCH.checked_add(Duration::from_secs(exp.max(0) as u64)) {
        Some(exp) => exp.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO),
        // Past what the clock can represent: not expired, ever.
        None => Duration::MAX,
    }
}

/// Each entry lives until its own `until`, which is never past the token's `exp`.
struct UntilExpiry;

impl Expiry<FastKey, Entry> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &FastKey,
        value: &Entry,
        now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.until.saturating_duration_since(Instant::from_std(now)))
    }

    /// A refresh replaces an entry: the new verdict's life, not what was left of the old one's
    /// (moka's default for an update).
    fn expire_after_update(
        &self,
        _key: &FastKey,
        value: &Entry,
        now: std::time::Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.until.saturating_duration_since(Instant::from_std(now)))
    }
}

/// Heap bytes an entry holds beyond its principal, as an allocator counts them (`tests/memory.rs`
/// checks the weighed sum against the heap's growth): moka's node, key, expiry and policy data
/// (about 270 bytes; `BENCH_PROFILE=memory` prints a bare entry's), the entry itself (120: its
/// SHA-256, tail and instants), its invalidation flag, its slots in the user index (by `sub` and
/// by username) and the session index, its user's in the profile index, and the maps' spare
/// capacity.
const ENTRY_OVERHEAD: usize = 760;

/// The positive caches' hasher: their keys are already hashes under a secret seed, so they are
/// used as they are (an attacker who cannot predict them cannot flood one bucket).
#[derive(Clone, Copy, Default)]
pub(crate) struct KeyHasher;

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = PassThrough;

    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// Hands a `u64` key through; anything else is folded in (not used by the caches).
pub(crate) struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) struct VerdictCache {
    pub(crate) settings: CacheSettings,
    pub(crate) counters: Counters,
    /// Fresh positive verdicts. Loading through it coalesces concurrent misses of one token.
    fresh: Cache<FastKey, Entry, KeyHasher>,
    /// The fast keys' secret seed, random per cache.
    seed: foldhash::quality::RandomState,
    /// Definitive rejections (found on the miss path, by SHA-256).
    negative: Option<Cache<TokenKey, Rejection>>,
    /// With stale-if-error: the last positive verdict of each token, kept for `ttl + grace`.
    stale: Option<Cache<FastKey, Entry, KeyHasher>>,
    /// The profile of each user with a cached token, by `sub`.
    profiles: Mutex<HashMap<Box<str>, Weak<Profile>>>,
    /// The issuers of cached tokens, one copy each (a verifier accepts a handful).
    issuers: Mutex<Vec<Arc<str>>>,
    flights: Mutex<Vec<Registered>>,
    /// The entries of each user and each sign-in, so that they are invalidated without a scan.
    indexes: Arc<Indexes>,
    /// Per-`sub` "revoked after" watermarks: tokens of that user issued before are refused.
    watermarks: Watermarks,
    /// With a `GetUser` budget: the TTL in force.
    budget: Option<Budget>,
    /// What refresh points are counted from.
    epoch: Instant,
    /// Bumped by every invalidation and watermark: the per-thread fronts' validity.
    generation: Arc<Generation>,
}

/// How far ahead of this instance's clock a watermark may be: the instances' clock skew.
pub(crate) const MAX_WATERMARK_SKEW_SECS: i64 = 60;

/// How long a watermark is kept: no access token lives longer, so no token issued before an
/// older watermark can still be presented.
const WATERMARK_LIFE_SECS: i64 = 24 * 3600;

/// Per-user "revoked after" instants (Unix seconds): O(1) to record, O(1) to check, and free on
/// the hot path while there are none.
#[derive(Default)]
pub(crate) struct Watermarks {
    count: std::sync::atomic::AtomicUsize,
    marks: std::sync::RwLock<HashMap<Box<str>, i64>>,
    /// The cache's generation, bumped once a mark is recorded.
    generation: Arc<Generation>,
    /// When a future mark was last logged, Unix seconds: one line a second at most.
    future_logged: std::sync::atomic::AtomicI64,
}

impl Watermarks {
    /// Records that `sub`'s tokens issued before `at` are revoked (a later mark wins). A mark
    /// more than [`MAX_WATERMARK_SKEW_SECS`] in the future is ignored and logged: no instance
    /// makes one (a mark is the time it is made), and kept, it would refuse the user's every
    /// token, new ones included, until the instances restart.
    pub(crate) fn record(&self, sub: &str, at: i64) {
        let now = crate::clock::unix_now();
        if at > now.saturating_add(MAX_WATERMARK_SKEW_SECS) {
            let last = self.future_logged.swap(now, Relaxed);
            if last != now {
                tracing::warn!(
                    ahead_secs = at.saturating_sub(now),
                    "ignored a revocation watermark dated in the future: a clock far off, or a writer to Redis"
                );
            }
            return;
        }
        let mut marks = self.marks.write().unwrap_or_else(|e| e.into_inner());
        if marks.len() >= 1024 && marks.len().is_power_of_two() {
            marks.retain(|_, at| *at + WATERMARK_LIFE_SECS > now);
        }
        let mark = marks.entry(sub.into()).or_insert(at);
        *mark = (*mark).max(at);
        self.count.store(marks.len(), Relaxed);
        drop(marks);
        self.generation.bump();
    }

    /// Whether a token of `sub` issued at `iat` (none: unknown, so before) is revoked.
    #[inline]
    pub(crate) fn revoked(&self, sub: &str, iat: Option<i64>) -> bool {
        if self.count.load(Relaxed) == 0 {
            return false;
        }
        let marks = self.marks.read().unwrap_or_else(|e| e.into_inner());
        marks.get(sub).is_some_and(|mark| iat.is_none_or(|iat| iat < *mark))
    }
}

/// The cached entries of each user and of each sign-in, so that invalidating one is a lookup
/// and a few removals: no predicate over the whole cache, which every hit would pay for until
/// moka's housekeeping had run it past every entry.
///
/// Kept in step with the positive caches: an entry is filed before each insert and taken out
/// once by the eviction listener when it leaves (expired, evicted, replaced or invalidated).
#[derive(Default)]
struct Indexes {
    /// By `sub`, and by username where it differs.
    users: Index,
    /// By `origin_jti`.
    sessions: Index,
}

impl Indexes {
    fn add(&self, principal: &Principal, key: FastKey) {
        let Some(user) = principal.user() else { return };
        self.users.add(user.sub(), key);
        if user.username() != user.sub() {
            self.users.add(user.username(), key);
        }
        if let Some(origin) = user.origin_jti() {
            self.sessions.add(origin, key);
        }
    }

    fn remove(&self, principal: &Principal, key: FastKey) {
        let Some(user) = principal.user() else { return };
        self.users.remove(user.sub(), key);
        if user.username() != user.sub() {
            self.users.remove(user.username(), key);
        }
        if let Some(origin) = user.origin_jti() {
            self.sessions.remove(origin, key);
        }
    }
}

/// Fast keys filed under an id (a `sub`, a username, an `origin_jti`).
///
/// Keyed by a 64-bit hash of the id under a secret seed, not by the string: two ids that shared
/// a hash would only make an invalidation of one drop the other's verdicts too (re-verified by
/// their next request), never keep one.
#[derive(Default)]
struct Index {
    seed: foldhash::quality::RandomState,
    map: Mutex<HashMap<u64, Keys, KeyHasher>>,
}

/// An id's cached tokens: most have one at a time.
enum Keys {
    One(FastKey),
    Many(Vec<FastKey>),
}

impl Index {
    fn slot(&self, id: &str) -> u64 {
        use std::hash::BuildHasher;
        self.seed.hash_one(id)
    }

    fn add(&self, id: &str, key: FastKey) {
        let slot = self.slot(id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&slot) {
            None => drop(map.insert(slot, Keys::One(key))),
            Some(Keys::One(one)) => {
                let one = *one;
                map.insert(slot, Keys::Many(vec![one, key]));
            }
            Some(Keys::Many(keys)) => keys.push(key),
        }
    }

    /// An entry left a cache (or was replaced, whose new entry was filed before): forget it
    /// once.
    fn remove(&self, id: &str, key: FastKey) {
        let slot = self.slot(id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let empty = match map.get_mut(&slot) {
            Some(Keys::One(one)) => *one == key,
            Some(Keys::Many(keys)) => {
                if let Some(i) = keys.iter().position(|k| *k == key) {
                    keys.swap_remove(i);
                }
                keys.is_empty()
            }
            None => false,
        };
        if empty {
            map.remove(&slot);
        }
    }

    fn keys(&self, id: &str) -> Vec<FastKey> {
        let mut keys = match self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&self.slot(id)) {
            Some(Keys::One(one)) => vec![*one],
            Some(Keys::Many(keys)) => keys.clone(),
            None => Vec::new(),
        };
        // Filed once per cache that holds it.
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

impl VerdictCache {
    /// `effective_ttl` reports the TTL in force.
    pub(crate) fn new(settings: CacheSettings, effective_ttl: metrics::Gauge) -> Self {
        // Each entry weighs its bytes, and at least an even share of the budget, so that both
        // the byte budget and the entry capacity hold.
        let indexes = Arc::new(Indexes::default());
        let positive = |capacity: u64| {
            let floor = (settings.max_bytes / capacity.max(1)).min(u32::MAX as u64) as usize;
            let indexes = indexes.clone();
            Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(move |_: &FastKey, e: &Entry| {
                    let bytes = ENTRY_OVERHEAD + e.principal.heap_bytes();
                    bytes.max(floor).min(u32::MAX as usize) as u32
                })
                .expire_after(UntilExpiry)
                .eviction_listener(move |key: Arc<FastKey>, entry: Entry, _| {
                    indexes.remove(&entry.principal, *key)
                })
                .build_with_hasher(KeyHasher)
        };
        let negative = (!settings.negative_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(settings.negative_capacity)
                .time_to_live(settings.negative_ttl)
                .build()
        });
        let stale = settings.stale_grace.map(|_| positive(settings.capacity));
        let fresh = positive(settings.capacity);
        let budget = settings.budget.map(|b| Budget::new(b, settings.ttl, effective_ttl.clone()));
        if budget.is_none() {
            effective_ttl.set(settings.ttl.as_secs_f64());
        }
        let generation = Arc::new(Generation::new());
        VerdictCache {
            seed: foldhash::quality::RandomState::default(),
            budget,
            watermarks: Watermarks { generation: generation.clone(), ..Watermarks::default() },
            generation,
            indexes,
            fresh,
            negative,
            stale,
            settings,
            counters: Counters::default(),
            profiles: Mutex::default(),
            issuers: Mutex::default(),
            flights: Mutex::default(),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.settings.ttl.is_zero()
    }

    /// The token's key in this cache.
    #[inline]
    pub(crate) fn fast_key(&self, token: &[u8]) -> FastKey {
        use std::hash::BuildHasher;
        self.seed.hash_one(token)
    }

    /// A fresh positive verdict for exactly this token, if one may be served.
    #[inline]
    pub(crate) async fn get(&self, token: &[u8], fast: FastKey, now: Instant) -> Option<Hit> {
        let entry = self.fresh.get(&fast).await?;
        if entry.tail != crate::token::tail(token) || entry.flight.revoked() {
            return None;
        }
        if entry.until <= now {
            // Past its life on Tokio's clock, before moka's expiry (which reads the standard
            // clock) has removed it: only a paused clock gets here.
            self.fresh.invalidate(&fast).await;
            return None;
        }
        if let Some(budget) = &self.budget {
            budget.observe(&entry.key);
        }
        let refresh = self.refresh_due(&entry.flight, now);
        let refresh_ms = entry.flight.refresh_ms.load(Relaxed);
        Some(Hit { principal: entry.principal, refresh, until: entry.until, refresh_ms, key: entry.key })
    }

    /// The cache's generation, which every invalidation bumps (see the `front` module).
    pub(crate) fn generation(&self) -> &Generation {
        &self.generation
    }

    /// Milliseconds from the cache's epoch to `now`, as refresh points count.
    pub(crate) fn now_ms(&self, now: Instant) -> u64 {
        self.ms(now)
    }

    /// Whether a budget counts the active tokens; the hit of `key` counted in it.
    #[inline]
    pub(crate) fn observe(&self, key: &TokenKey) {
        if let Some(budget) = &self.budget {
            budget.observe(key);
        }
    }

    /// Whether this hit is the one to refresh a verdict: past its refresh point, and first to
    /// see it (the point then moves a retry interval on, in case the refresh fails).
    #[inline]
    fn refresh_due(&self, flight: &Flight, now: Instant) -> bool {
        let due = flight.refresh_ms.load(Relaxed);
        if due == NEVER {
            return false;
        }
        let now_ms = self.ms(now);
        let retry = self.settings.refresh_retry.as_millis() as u64;
        now_ms >= due && flight.refresh_ms.compare_exchange(due, now_ms + retry, Relaxed, Relaxed).is_ok()
    }

    /// Milliseconds from the cache's epoch to `at`.
    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Where a verdict made at `now` with `life` is due for a refresh: at the configured share
    /// of its life, plus this cache's own share of the rest, up to half (so that the instances
    /// of a fleet do not refresh one token at the same moment, and the later ones find the
    /// first one's verdict in Redis).
    fn refresh_point(&self, principal: &Principal, fast: FastKey, now: Instant, life: Duration) -> u64 {
        let Some(fraction) = self.settings.refresh_ahead else { return NEVER };
        if principal.user().is_none() || life < MIN_REFRESHED_LIFE {
            return NEVER;
        }
        let spread = ((fast >> 40) % 1024) as f64 / 1024.0 / 2.0;
        let ahead = life.mul_f64((1.0 - fraction) * (1.0 - spread));
        self.ms(now) + life.saturating_sub(ahead).as_millis() as u64
    }

    /// How long a positive verdict for `key`, made now, is kept (before `exp` caps it).
    pub(crate) fn ttl_for(&self, key: &TokenKey) -> Duration {
        match &self.budget {
            Some(budget) => budget.ttl_for(key, crate::clock::unix_ms()),
            None => self.settings.ttl,
        }
    }

    /// The call budget, if one is set.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }

    /// The TTL in force: the revocation delay of a token verified now.
    pub(crate) fn effective_ttl(&self) -> Duration {
        self.budget.as_ref().map_or(self.settings.ttl, Budget::effective)
    }

    /// The per-user watermarks.
    pub(crate) fn watermarks(&self) -> &Watermarks {
        &self.watermarks
    }

    /// Fresh positive entries held (lags behind by the pending maintenance).
    pub(crate) fn entry_count(&self) -> u64 {
        self.fresh.entry_count()
    }

    /// A remembered rejection.
    pub(crate) async fn rejection(&self, key: &TokenKey) -> Option<Rejection> {
        self.negative.as_ref()?.get(key).await
    }

    /// Registers a load for `key`, so that invalidations that run while it is in flight mark it.
    pub(crate) fn begin(&self, key: TokenKey, claims: &Claims) -> FlightGuard<'_> {
        let flight = Arc::new(Flight { revoked: AtomicBool::new(false), refresh_ms: AtomicU64::new(NEVER) });
        self.flights.lock().unwrap_or_else(|e| e.into_inner()).push(Registered {
            key,
            sub: claims.sub.as_str().into(),
            username: claims.username.as_deref().map(Into::into),
            origin_jti: claims.origin_jti.as_deref().map(Into::into),
            flight: flight.clone(),
        });
        FlightGuard { cache: self, flight }
    }

    /// The verdict for `key`: a fresh entry, or the result of `load` (run once for all the
    /// concurrent requests of one token). Positive verdicts are kept until min(TTL, `exp`),
    /// rejections are remembered, unavailability never is (a stale verdict may bridge it).
    pub(crate) async fn get_or_load<F>(
        &self,
        key: TokenKey,
        token: &[u8],
        guard: &FlightGuard<'_>,
        load: F,
    ) -> (Outcome, bool)
    where
        F: std::future::Future<Output = Loaded>,
    {
        let mut loaded_here = false;
        let (flight, fast, tail) = (guard.flight.clone(), self.fast_key(token), crate::token::tail(token));
        let load = async {
            loaded_here = true;
            let verdict = load.await;
            self.entry_for(key, fast, tail, flight, verdict, false).await
        };
        let result = self.fresh.try_get_with(fast, load).await;
        let outcome = match result {
            // Another token under the same fast key (one chance in 2^64), or a load an
            // invalidation hit: make way, and verify again.
            Ok(entry) if entry.key != key || entry.flight.revoked() => {
                self.fresh.invalidate(&fast).await;
                Outcome::Revoked
            }
            Ok(entry) => Outcome::Verdict(Ok(entry.principal)),
            Err(err) => Outcome::Verdict(Err(VerifyError::clone(&err))),
        };
        (outcome, loaded_here)
    }

    async fn entry_for(
        &self,
        key: TokenKey,
        fast: FastKey,
        tail: Tail,
        flight: Arc<Flight>,
        verdict: Loaded,
        refresh: bool,
    ) -> Result<Entry, VerifyError> {
        let now = Instant::now();
        match verdict {
            Ok((principal, cap)) => {
                // Filed for the fresh entry the caller inserts (and below for the stale copy).
                self.indexes.add(&principal, fast);
                if let Some(budget) = &self.budget {
                    budget.observe(&key);
                }
                // A refresh (never under a budget, whose grid spreads first loads) lives the
                // whole TTL from its call.
                let ttl = if refresh { self.effective_ttl() } else { self.ttl_for(&key) };
                let life = until_exp(principal.exp());
                if let (Some(stale), Some(grace), false) =
                    (&self.stale, self.settings.stale_grace, flight.revoked())
                {
                    let keep = life.min(ttl.saturating_add(grace));
                    let entry = Entry {
                        principal: principal.clone(),
                        until: later(now, keep),
                        flight: flight.clone(),
                        key,
                        tail,
                    };
                    self.indexes.add(&entry.principal, fast);
                    stale.insert(fast, entry).await;
                }
                let life = life.min(ttl).min(cap.unwrap_or(Duration::MAX));
                flight.refresh_ms.store(self.refresh_point(&principal, fast, now, life), Relaxed);
                Ok(Entry { until: later(now, life), principal, flight, key, tail })
            }
            Err(VerifyError::Rejected(r)) => {
                self.reject(&key, fast, r).await;
                Err(VerifyError::Rejected(r))
            }
            Err(VerifyError::Unavailable(u)) => {
                // Stale-if-error: reuse the last positive verdict within its grace, for one
                // retry interval at a time.
                let stale = match &self.stale {
                    Some(stale) => stale.get(&fast).await.filter(|e| e.key == key && !e.flight.revoked()),
                    None => None,
                };
                let Some(stale) = stale else { return Err(VerifyError::Unavailable(u)) };
                Counters::bump(&self.counters.stale_served);
                tracing::warn!(kind = u.kind().as_str(), "Cognito unavailable; serving a stale verdict");
                let life = stale.until.saturating_duration_since(now).min(u.retry_after());
                self.indexes.add(&stale.principal, fast);
                Ok(Entry { until: later(now, life), principal: stale.principal, flight, key, tail })
            }
        }
    }

    /// Records a rejection of `key`: its stale copy goes, and a definitive rejection is
    /// remembered. An unknown key id says more about our copy of the keys than about the token:
    /// a key rotated in since the last fetch must not stay refused for a negative TTL.
    async fn reject(&self, key: &TokenKey, fast: FastKey, r: Rejection) {
        if let Some(stale) = &self.stale {
            stale.invalidate(&fast).await;
        }
        if let (Some(negative), false) = (&self.negative, r == Rejection::UnknownKey) {
            negative.insert(*key, r).await;
        }
    }

    /// Applies the answer of a refresh of `token`'s verdict, registered as `guard`, whose call
    /// started at `started`: a fresh verdict replaces the old one (its life counted from the
    /// call, so that no verdict is served older than the TTL), a rejection replaces it at once,
    /// and an invalidation that landed meanwhile wins. An outage changes nothing: the old
    /// verdict serves until it expires.
    pub(crate) async fn refreshed(
        &self,
        key: TokenKey,
        token: &[u8],
        guard: &FlightGuard<'_>,
        started: Instant,
        loaded: Loaded,
    ) -> Refreshed {
        let (fast, tail) = (self.fast_key(token), crate::token::tail(token));
        match loaded {
            Err(VerifyError::Unavailable(u)) if u.kind() == crate::UnavailableKind::LocalLimit => {
                Refreshed::Limited
            }
            Err(VerifyError::Unavailable(_)) => Refreshed::Unavailable,
            Err(VerifyError::Rejected(r)) => {
                self.reject(&key, fast, r).await;
                if self.fresh.get(&fast).await.is_some_and(|e| e.key == key) {
                    self.fresh.invalidate(&fast).await;
                }
                self.generation.bump();
                Refreshed::Rejected
            }
            Ok(_) if guard.flight.revoked() => Refreshed::Superseded,
            Ok((principal, cap)) => {
                let spent = started.elapsed();
                let left = self.effective_ttl().saturating_sub(spent).min(cap.unwrap_or(Duration::MAX));
                let verdict = Ok((principal, Some(left)));
                let Ok(entry) = self.entry_for(key, fast, tail, guard.flight.clone(), verdict, true).await
                else {
                    return Refreshed::Unavailable;
                };
                self.fresh.insert(fast, entry).await;
                // An invalidation between the check above and the insert: the flag it set keeps
                // the entry from being served; drop it too.
                if guard.flight.revoked() {
                    self.fresh.invalidate(&fast).await;
                    return Refreshed::Superseded;
                }
                Refreshed::Renewed
            }
        }
    }

    /// The user's profile, shared with the other cached tokens of the same user when equal.
    pub(crate) fn intern(&self, profile: Profile) -> Arc<Profile> {
        let mut profiles = self.profiles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = profiles.get(profile.sub()).and_then(Weak::upgrade) {
            if *known == profile {
                return known;
            }
        }
        // Amortized: prune the profiles no entry holds any more when the map has doubled.
        if profiles.len() >= 1024 && profiles.len().is_power_of_two() {
            profiles.retain(|_, p| p.strong_count() > 0);
        }
        let profile = Arc::new(profile);
        profiles.insert(profile.sub().into(), Arc::downgrade(&profile));
        profile
    }

    /// One shared copy of an accepted issuer, for the principals of its tokens.
    pub(crate) fn intern_issuer(&self, iss: &str) -> Arc<str> {
        let mut issuers = self.issuers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = issuers.iter().find(|i| ***i == *iss) {
            return known.clone();
        }
        let issuer: Arc<str> = iss.into();
        // Emulator issuers match by pattern and may be many: past a few, each token keeps its own.
        if issuers.len() < 16 {
            issuers.push(issuer.clone());
        }
        issuer
    }

    /// Drops the matching verdicts, found through the indexes, and marks the matching loads in
    /// flight.
    pub(crate) async fn invalidate(&self, target: Target<'_>) {
        self.remove(target).await;
        // After the entries are gone: no front repeats them from now on.
        self.generation.bump();
    }

    async fn remove(&self, target: Target<'_>) {
        for registered in self.flights.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if registered.matches(&target) {
                registered.flight.revoked.store(true, Relaxed);
            }
        }
        let positive = || std::iter::once(&self.fresh).chain(&self.stale);
        let keys = match target {
            Target::Token(key, sub) => {
                if let Some(negative) = &self.negative {
                    negative.invalidate(key).await;
                }
                // A token that does not parse names no user, and was never verified.
                let Some(sub) = sub else { return };
                for fast in self.indexes.users.keys(sub) {
                    for cache in positive() {
                        if cache.get(&fast).await.is_some_and(|e| e.key == *key) {
                            cache.invalidate(&fast).await;
                        }
                    }
                }
                return;
            }
            Target::User(id) => self.indexes.users.keys(id),
            Target::Session(id) => self.indexes.sessions.keys(id),
            Target::All => {
                positive().for_each(|c| c.invalidate_all());
                if let Some(negative) = &self.negative {
                    negative.invalidate_all();
                }
                return;
            }
        };
        for fast in keys {
            for cache in positive() {
                cache.invalidate(&fast).await;
            }
        }
    }

    /// Files `from`'s entry under `to`'s fast key too, as a collision of the two keys would.
    #[cfg(test)]
    pub(crate) async fn collide(&self, from: &[u8], to: &[u8]) {
        let entry = self.fresh.get(&self.fast_key(from)).await.expect("an entry for `from`");
        self.fresh.insert(self.fast_key(to), entry).await;
    }

    /// Runs the caches' pending maintenance (evictions, expirations, invalidations) now.
    pub(crate) async fn run_pending_tasks(&self) {
        self.fresh.run_pending_tasks().await;
        if let Some(c) = &self.negative {
            c.run_pending_tasks().await;
        }
        if let Some(c) = &self.stale {
            c.run_pending_tasks().await;
        }
    }
}

/// Counters, updated with relaxed atomics.
#[derive(Default)]
pub(crate) struct Counters {
    /// Counted by each thread in a slot of its own: the hit path's.
    pub(crate) hits: Striped,
    pub(crate) negative_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) get_user_calls: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) shared_hits: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) rejections: [AtomicU64; Rejection::ALL.len()],
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn reject(&self, r: Rejection) {
        Self::bump(&self.rejections[r.index()]);
    }
}

/// A snapshot of a verifier's counters, from [`Verifier::stats`](crate::Verifier::stats).
///
/// Every field counts since the verifier was built, except the entry counts, which are current.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Requests answered from a fresh positive entry.
    pub hits: u64,
    /// Requests answered from a remembered rejection.
    pub negative_hits: u64,
    /// Requests not answered from the cache.
    pub misses: u64,
    /// Misses that waited for another request's `GetUser` call instead of making their own.
    pub coalesced: u64,
    /// `GetUser` calls made (each may be retried within its budget).
    pub get_user_calls: u64,
    /// Requests let through on a stale verdict while Cognito was unavailable.
    pub stale_served: u64,
    /// Misses answered by a verdict another instance shared through Redis (fleet mode).
    pub shared_hits: u64,
    /// Requests answered "unavailable".
    pub unavailable: u64,
    /// Rejections by reason, local and remote, cached or not.
    pub rejections: Vec<(Rejection, u64)>,
    /// Fresh positive entries now held.
    pub entries: u64,
    /// What the fresh positive entries weigh, in bytes (their principals, and the cache's own
    /// bookkeeping); never more than the byte budget, `cache_max_bytes`.
    pub entry_bytes: u64,
    /// Rejections now held.
    pub negative_entries: u64,
    /// JWKS fetches, every pool's.
    pub jwks_fetches: u64,
}

impl Stats {
    /// How many requests were rejected for `reason`.
    pub fn rejected(&self, reason: Rejection) -> u64 {
        self.rejections.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
    }

    /// All rejections, whatever the reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejections.iter().map(|(_, n)| n).sum()
    }

    pub(crate) fn read(cache: &VerdictCache) -> Stats {
        let c = &cache.counters;
        let get = |a: &AtomicU64| a.load(Relaxed);
        Stats {
            hits: c.hits.sum(),
            negative_hits: get(&c.negative_hits),
            misses: get(&c.misses),
            coalesced: get(&c.coalesced),
            get_user_calls: get(&c.get_user_calls),
            stale_served: get(&c.stale_served),
            shared_hits: get(&c.shared_hits),
            unavailable: get(&c.unavailable),
            rejections: Rejection::ALL
                .iter()
                .map(|r| (*r, get(&c.rejections[r.index()])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            entries: cache.fresh.entry_count(),
            entry_bytes: cache.fresh.weighted_size(),
            negative_entries: cache.negative.as_ref().map_or(0, Cache::entry_count),
            jwks_fetches: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_past_any_clock_expire_at_once_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(later(now, Duration::MAX), now);
        assert!(until_exp(i64::MAX) > Duration::from_secs(3600));
        assert_eq!(until_exp(i64::MIN), Duration::ZERO);
        assert_eq!(until_exp(0), Duration::ZERO);
    }

    #[test]
    fn an_index_keeps_a_replaced_entry_and_forgets_an_evicted_one() {
        let sessions = Index::default();
        sessions.add("laptop", 1);
        // A reload of the same token: the new entry is indexed, then the replaced one leaves.
        sessions.add("laptop", 1);
        sessions.remove("laptop", 1);
        assert_eq!(sessions.keys("laptop"), [1]);
        sessions.add("laptop", 2);
        sessions.add("phone", 3);
        assert_eq!(sessions.keys("laptop"), [1, 2]);
        assert_eq!(sessions.keys("phone"), [3]);
        sessions.remove("laptop", 1);
        sessions.remove("laptop", 2);
        sessions.remove("phone", 9);
        assert!(sessions.keys("laptop").is_empty());
        assert_eq!(sessions.keys("phone"), [3]);
        sessions.remove("phone", 3);
        assert!(sessions.map.lock().unwrap().is_empty());
    }
}
