//! Metrics, through the `metrics` facade: the crate records, the application installs the
//! exporter (Prometheus, StatsD, OpenTelemetry...).
//!
//! Every handle is registered once, when the verifier is built, so that recording costs one
//! atomic add on the hot path. Install the recorder before building the verifier: handles
//! registered before any recorder is installed record nothing. Labels come from small fixed
//! sets (outcomes, [`Rejection`] and [`UnavailableKind`] codes, cache levels): never a token, a
//! user or a pool.

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::error::{Rejection, UnavailableKind, VerifyError};

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

/// The metric names, for dashboards and tests.
pub(crate) mod names {
    pub(crate) const VERIFICATIONS: &str = "actix_cognito_verifications_total";
    pub(crate) const CACHE_HITS: &str = "actix_cognito_cache_hits_total";
    pub(crate) const CACHE_MISSES: &str = "actix_cognito_cache_misses_total";
    pub(crate) const CACHE_ENTRIES: &str = "actix_cognito_cache_entries";
    pub(crate) const GET_USER_CALLS: &str = "actix_cognito_get_user_calls_total";
    pub(crate) const GET_USER_DURATION: &str = "actix_cognito_get_user_duration_seconds";
    pub(crate) const JWKS_FETCHES: &str = "actix_cognito_jwks_fetches_total";
    pub(crate) const QUOTA_REFUSALS: &str = "actix_cognito_quota_refusals_total";
    pub(crate) const REDIS_ERRORS: &str = "actix_cognito_redis_errors_total";
    pub(crate) const REDIS_BREAKER_OPEN: &str = "actix_cognito_redis_breaker_open";
    pub(crate) const EFFECTIVE_TTL: &str = "actix_cognito_effective_ttl_seconds";
}

/// The metric handles of one verifier.
#[derive(Clone)]
pub(crate) struct Telemetry {
    accepted: Counter,
    rejected: [Counter; Rejection::ALL.len()],
    unavailable: [Counter; UNAVAILABLE.len()],
    pub(crate) local_hits: Counter,
    pub(crate) local_misses: Counter,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) redis_hits: Counter,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) redis_misses: Counter,
    pub(crate) entries: Gauge,
    /// The cache TTL in force: the revocation delay of a token verified now.
    pub(crate) effective_ttl: Gauge,
    pub(crate) get_user_calls: Counter,
    get_user_duration: Histogram,
    pub(crate) jwks_fetches: Counter,
    pub(crate) quota_refusals: Counter,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) redis_errors: Counter,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) redis_breaker_open: Gauge,
}

impl Telemetry {
    /// Registers every handle with the recorder installed now (globally, or for this thread).
    pub(crate) fn register() -> Self {
        use names::*;
        Telemetry {
            accepted: counter!(VERIFICATIONS, "outcome" => "accepted"),
            rejected: Rejection::ALL
                .map(|r| counter!(VERIFICATIONS, "outcome" => "rejected", "reason" => r.as_str())),
            unavailable: UNAVAILABLE
                .map(|k| counter!(VERIFICATIONS, "outcome" => "unavailable", "reason" => k.as_str())),
            local_hits: counter!(CACHE_HITS, "level" => "local"),
            local_misses: counter!(CACHE_MISSES, "level" => "local"),
            redis_hits: counter!(CACHE_HITS, "level" => "redis"),
            redis_misses: counter!(CACHE_MISSES, "level" => "redis"),
            entries: gauge!(CACHE_ENTRIES),
            effective_ttl: gauge!(EFFECTIVE_TTL),
            get_user_calls: counter!(GET_USER_CALLS),
            get_user_duration: histogram!(GET_USER_DURATION),
            jwks_fetches: counter!(JWKS_FETCHES),
            quota_refusals: counter!(QUOTA_REFUSALS),
            redis_errors: counter!(REDIS_ERRORS),
            redis_breaker_open: gauge!(REDIS_BREAKER_OPEN),
        }
    }

    /// Counts a request's verdict.
    #[inline]
    pub(crate) fn verdict<T>(&self, verdict: &Result<T, VerifyError>) {
        match verdict {
            Ok(_) => self.accepted.increment(1),
            Err(VerifyError::Rejected(r)) => self.rejected[r.index()].increment(1),
            Err(VerifyError::Unavailable(u)) => {
                let i = UNAVAILABLE.iter().position(|k| *k == u.kind()).unwrap_or(UNAVAILABLE.len() - 1);
                self.unavailable[i].increment(1);
            }
        }
    }

    pub(crate) fn get_user_took(&self, took: Duration) {
        self.get_user_duration.record(took.as_secs_f64());
    }
}
