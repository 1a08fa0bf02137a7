//! The verdict caches: positive entries capped at `exp`, negative entries, stale copies.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::future::Cache;
use moka::Expiry;

use crate::error::Rejection;
use crate::token::TokenKey;
use crate::user::Principal;

#[derive(Debug, Clone)]
pub(crate) struct CacheSettings {
    pub(crate) ttl: Duration,
    pub(crate) capacity: u64,
    pub(crate) negative_ttl: Duration,
    pub(crate) negative_capacity: u64,
    pub(crate) stale_grace: Option<Duration>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(30),
            capacity: 100_000,
            negative_ttl: Duration::from_secs(10),
            negative_capacity: 10_000,
            stale_grace: None,
        }
    }
}

/// A positive verdict and the instant until which it may be served.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) principal: Principal,
    pub(crate) until: Instant,
}

/// The instant a token expires, on the monotonic clock.
pub(crate) fn exp_instant(exp: i64, now: Instant) -> Instant {
    let exp = UNIX_EPOCH + Duration::from_secs(exp.max(0) as u64);
    now + exp.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
}

/// Each entry lives until its own `until`, which is never past the token's `exp`.
struct UntilExpiry;

impl Expiry<TokenKey, Entry> for UntilExpiry {
    fn expire_after_create(&self, _key: &TokenKey, value: &Entry, now: Instant) -> Option<Duration> {
        Some(value.until.saturating_duration_since(now))
    }
}

pub(crate) struct Caches {
    pub(crate) settings: CacheSettings,
    /// Fresh positive verdicts. Loading through it coalesces concurrent misses of one token.
    pub(crate) fresh: Cache<TokenKey, Entry>,
    /// Definitive rejections from Cognito.
    pub(crate) negative: Option<Cache<TokenKey, Rejection>>,
    /// With stale-if-error: the last positive verdict of each token, kept for `ttl + grace`.
    pub(crate) stale: Option<Cache<TokenKey, Entry>>,
}

impl Caches {
    pub(crate) fn new(settings: CacheSettings) -> Self {
        let positive = |capacity| {
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .support_invalidation_closures()
                .build()
        };
        let negative = (!settings.negative_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(settings.negative_capacity)
                .time_to_live(settings.negative_ttl)
                .build()
        });
        let stale = settings.stale_grace.map(|_| positive(settings.capacity));
        Caches { fresh: positive(settings.capacity), negative, stale, settings }
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.settings.ttl.is_zero()
    }
}

/// Counters, updated with relaxed atomics.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
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
    /// Rejections now held.
    pub negative_entries: u64,
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

    pub(crate) fn read(c: &Counters, caches: &Caches) -> Stats {
        let get = |a: &AtomicU64| a.load(Relaxed);
        Stats {
            hits: get(&c.hits),
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
            entries: caches.fresh.entry_count(),
            negative_entries: caches.negative.as_ref().map_or(0, Cache::entry_count),
        }
    }
}
