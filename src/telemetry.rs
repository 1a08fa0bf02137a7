//! Metrics, through the `metrics` facade: the crate records, the application installs the
//! exporter (Prometheus, StatsD, OpenTelemetry...).
//!
//! Every handle is registered once, when the verifier is built, with its `# HELP` text, so that
//! recording costs one atomic add on the hot path. Install the recorder before building the
//! verifier: handles registered before any recorder is installed record nothing. Labels come
//! from small fixed sets (outcomes, [`Rejection`] and [`UnavailableKind`] codes, cache levels,
//! the regions of the pools): never a token, a user or a pool. The Redis series exist only in fleet mode (feature
//! `redis`, with [`redis`](crate::VerifierBuilder) set).
//!
//! The crate sets nothing global. Durations are histograms: give the exporter their buckets,
//! or Prometheus's exporter renders them as summaries, whose quantiles cannot be summed across
//! the instances of a fleet:
//!
//! ```
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//!
//! let mut builder = PrometheusBuilder::new();
//! for (name, buckets) in actix_cognito::telemetry::HISTOGRAMS {
//!     builder = builder.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets).unwrap();
//! }
//! // builder.install_recorder()?, then build the verifier.
//! ```
//!
//! | metric | type | labels | what it counts |
//! | --- | --- | --- | --- |
//! | `actix_cognito_verifications_total` | counter | `outcome`, `reason` | verdicts given to requests |
//! | `actix_cognito_cache_hits_total` | counter | `level` (`local`, `redis`) | verdicts found in a cache |
//! | `actix_cognito_cache_misses_total` | counter | `level` | verdicts not found there |
//! | `actix_cognito_cache_entries` | gauge | | fresh positive verdicts held |
//! | `actix_cognito_get_user_calls_total` | counter | `region` | `GetUser` and userInfo calls made |
//! | `actix_cognito_get_user_duration_seconds` | histogram | `region` | how long each took |
//! | `actix_cognito_region_available` | gauge | `region` | 1 while calls go to a replicated pool's region, 0 while it is skipped |
//! | `actix_cognito_refreshes_total` | counter | `outcome` | verdicts refreshed ahead of expiry |
//! | `actix_cognito_jwks_fetches_total` | counter | | JWKS documents fetched |
//! | `actix_cognito_quota_refusals_total` | counter | | calls the quota guard refused |
//! | `actix_cognito_effective_ttl_seconds` | gauge | | the TTL in force: the revocation delay |
//! | `actix_cognito_redis_errors_total` | counter | | Redis operations that failed (fleet mode) |
//! | `actix_cognito_redis_breaker_open` | gauge | | 1 while Redis is skipped after errors (fleet mode) |

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics::{Counter, Gauge, Histogram};

use std::sync::Arc;

use crate::cache::Refreshed;
use crate::error::{Rejection, UnavailableKind, VerifyError};
use crate::front::Striped;

/// Every [`UnavailableKind`], in declaration order.
const UNAVAILABLE: [UnavailableKind; 7] = [
    UnavailableKind::Throttled,
    UnavailableKind::ServiceError,
    UnavailableKind::Forbidden,
    UnavailableKind::Timeout,
    UnavailableKind::Connection,
    UnavailableKind::LocalLimit,
    UnavailableKind::Other,
];

/// The metric names, for dashboards, alerts and tests.
pub mod names {
    /// Verdicts given to requests, by `outcome` (`accepted`, `rejected`, `unavailable`) and `reason`.
    pub const VERIFICATIONS: &str = "actix_cognito_verifications_total";
    /// Verdicts found in a cache, by `level` (`local`, `redis`).
    pub const CACHE_HITS: &str = "actix_cognito_cache_hits_total";
    /// Verdicts not found in a cache, by `level`.
    pub const CACHE_MISSES: &str = "actix_cognito_cache_misses_total";
    /// Fresh positive verdicts held in this process.
    pub const CACHE_ENTRIES: &str = "actix_cognito_cache_entries";
    /// `GetUser` (and userInfo) calls made, by `region`.
    pub const GET_USER_CALLS: &str = "actix_cognito_get_user_calls_total";
    /// How long each `GetUser` (or userInfo) call took, in seconds, by `region`: a histogram.
    pub const GET_USER_DURATION: &str = "actix_cognito_get_user_duration_seconds";
    /// Verdicts re-verified ahead of their expiry, by `outcome`.
    pub const REFRESHES: &str = "actix_cognito_refreshes_total";
    /// JWKS documents fetched.
    pub const JWKS_FETCHES: &str = "actix_cognito_jwks_fetches_total";
    /// Calls the quota guard refused (a 503 for the request).
    pub const QUOTA_REFUSALS: &str = "actix_cognito_quota_refusals_total";
    /// Redis operations that failed (fleet mode).
    pub const REDIS_ERRORS: &str = "actix_cognito_redis_errors_total";
    /// 1 while Redis is skipped after errors, else 0 (fleet mode).
    pub const REDIS_BREAKER_OPEN: &str = "actix_cognito_redis_breaker_open";
    /// The cache TTL in force, in seconds: the revocation delay of a token verified now.
    pub const EFFECTIVE_TTL: &str = "actix_cognito_effective_ttl_seconds";
    /// 1 while calls go to this `region` of a replicated pool, 0 while it is skipped.
    pub const REGION_AVAILABLE: &str = "actix_cognito_region_available";
}

/// The buckets of `actix_cognito_get_user_duration_seconds`, in seconds: 5 ms (a call in the
/// same region) to 5 s (past the default 3 s `operation_timeout`, which ends every call).
pub const GET_USER_DURATION_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0];

/// Every histogram the crate records, with its buckets: give them to the exporter (see the
/// module's docs).
pub const HISTOGRAMS: &[(&str, &[f64])] = &[(names::GET_USER_DURATION, GET_USER_DURATION_BUCKETS)];

/// The `# HELP` texts, given to the recorder when a verifier is built.
fn describe() {
    use names::*;
    describe_counter!(VERIFICATIONS, "Verdicts given to requests, by outcome and reason");
    describe_counter!(CACHE_HITS, "Verdicts found in a cache, by level (local, redis)");
    describe_counter!(CACHE_MISSES, "Verdicts not found in a cache, by level (local, redis)");
    describe_gauge!(CACHE_ENTRIES, "Fresh positive verdicts held in this process");
    describe_counter!(GET_USER_CALLS, "GetUser and userInfo calls made to Cognito, by region");
    describe_histogram!(
        GET_USER_DURATION,
        Unit::Seconds,
        "How long each GetUser or userInfo call took, by region"
    );
    describe_gauge!(
        REGION_AVAILABLE,
        "1 while calls go to this region of a replicated pool, 0 while it is skipped after failures"
    );
    describe_counter!(REFRESHES, "Verdicts re-verified ahead of their expiry, by outcome");
    describe_counter!(JWKS_FETCHES, "JWKS documents fetched");
    describe_counter!(QUOTA_REFUSALS, "GetUser calls the quota guard refused (each a 503)");
    describe_gauge!(
        EFFECTIVE_TTL,
        Unit::Seconds,
        "The cache TTL in force: the revocation delay of a token verified now"
    );
    #[cfg(feature = "redis")]
    {
        describe_counter!(REDIS_ERRORS, "Redis operations that failed (fleet mode)");
        describe_gauge!(REDIS_BREAKER_OPEN, "1 while Redis is skipped after errors, else 0 (fleet mode)");
    }
}

/// The metric handles of one verifier.
#[derive(Clone)]
pub(crate) struct Telemetry {
    /// Exported from `accepted_n` and `local_hits_n` by [`flush`](Self::flush): a hit counts
    /// in its own thread's slot, not in a counter every core writes.
    accepted: Counter,
    accepted_n: Arc<Striped>,
    local_hits: Counter,
    local_hits_n: Arc<Striped>,
    rejected: [Counter; Rejection::ALL.len()],
    unavailable: [Counter; UNAVAILABLE.len()],
    pub(crate) local_misses: Counter,
    #[cfg(feature = "redis")]
    pub(crate) redis_hits: Counter,
    #[cfg(feature = "redis")]
    pub(crate) redis_misses: Counter,
    pub(crate) entries: Gauge,
    /// The cache TTL in force: the revocation delay of a token verified now.
    pub(crate) effective_ttl: Gauge,
    refreshes: [Counter; Refreshed::ALL.len()],
    pub(crate) jwks_fetches: Counter,
    pub(crate) quota_refusals: Counter,
    #[cfg(feature = "redis")]
    pub(crate) redis_errors: Counter,
    #[cfg(feature = "redis")]
    pub(crate) redis_breaker_open: Gauge,
}

impl Telemetry {
    /// Registers every handle with the recorder installed now (globally, or for this thread).
    pub(crate) fn register() -> Self {
        use names::*;
        describe();
        Telemetry {
            accepted: counter!(VERIFICATIONS, "outcome" => "accepted"),
            accepted_n: Arc::default(),
            local_hits_n: Arc::default(),
            rejected: Rejection::ALL
                .map(|r| counter!(VERIFICATIONS, "outcome" => "rejected", "reason" => r.as_str())),
            unavailable: UNAVAILABLE
                .map(|k| counter!(VERIFICATIONS, "outcome" => "unavailable", "reason" => k.as_str())),
            local_hits: counter!(CACHE_HITS, "level" => "local"),
            local_misses: counter!(CACHE_MISSES, "level" => "local"),
            #[cfg(feature = "redis")]
            redis_hits: counter!(CACHE_HITS, "level" => "redis"),
            #[cfg(feature = "redis")]
            redis_misses: counter!(CACHE_MISSES, "level" => "redis"),
            entries: gauge!(CACHE_ENTRIES),
            effective_ttl: gauge!(EFFECTIVE_TTL),
            refreshes: Refreshed::ALL.map(|r| counter!(REFRESHES, "outcome" => r.as_str())),
            jwks_fetches: counter!(JWKS_FETCHES),
            quota_refusals: counter!(QUOTA_REFUSALS),
            #[cfg(feature = "redis")]
            redis_errors: counter!(REDIS_ERRORS),
            #[cfg(feature = "redis")]
            redis_breaker_open: gauge!(REDIS_BREAKER_OPEN),
        }
    }

    /// Counts a request's verdict.
    #[inline]
    pub(crate) fn verdict<T>(&self, verdict: &Result<T, VerifyError>) {
        match verdict {
            Ok(_) => self.accepted_n.add(),
            Err(VerifyError::Rejected(r)) => self.rejected[r.index()].increment(1),
            Err(VerifyError::Unavailable(u)) => {
                let i = UNAVAILABLE.iter().position(|k| *k == u.kind()).unwrap_or(UNAVAILABLE.len() - 1);
                self.unavailable[i].increment(1);
            }
        }
    }

    /// Counts a hit of the in-process cache.
    #[inline]
    pub(crate) fn local_hit(&self) {
        self.local_hits_n.add();
    }

    /// Exports the counts kept per thread: every second (the verifier's upkeep), on each miss,
    /// and when asked ([`Verifier::run_pending_tasks`](crate::Verifier::run_pending_tasks)).
    pub(crate) fn flush(&self) {
        self.accepted.absolute(self.accepted_n.sum());
        self.local_hits.absolute(self.local_hits_n.sum());
    }

    /// Counts a refresh by its outcome.
    pub(crate) fn refreshed(&self, outcome: Refreshed) {
        self.refreshes[Refreshed::ALL.iter().position(|r| *r == outcome).unwrap_or(0)].increment(1);
    }
}

/// The call metrics of one region: `GetUser` (or userInfo) calls and how long they took.
#[derive(Clone)]
pub(crate) struct CallMetrics {
    calls: Counter,
    duration: Histogram,
}

impl CallMetrics {
    pub(crate) fn new(region: &str) -> Self {
        use names::*;
        CallMetrics {
            calls: counter!(GET_USER_CALLS, "region" => region.to_owned()),
            duration: histogram!(GET_USER_DURATION, "region" => region.to_owned()),
        }
    }

    /// Runs the call, counted and timed.
    pub(crate) async fn time<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.calls.increment(1);
        let started = std::time::Instant::now();
        let out = call.await;
        self.duration.record(started.elapsed().as_secs_f64());
        out
    }
}
