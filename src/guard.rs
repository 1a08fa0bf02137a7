//! The quota guard: caps on `GetUser` calls in flight and per second.
//!
//! Every call spends the account-wide `GetUser` quota shared with other apps. A burst of new
//! tokens (a deploy, a reconnect storm, an attacker with many real accounts) should get 503s from
//! this process rather than exhaust that quota for everyone.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::error::{Unavailable, UnavailableKind};

pub(crate) struct QuotaGuard {
    max_in_flight: usize,
    in_flight: AtomicUsize,
    rate: Option<DefaultDirectRateLimiter>,
    retry_after: Duration,
}

/// One admitted call; the slot is given back when it drops.
pub(crate) struct Permit<'a>(&'a AtomicUsize);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl QuotaGuard {
    pub(crate) fn new(max_in_flight: usize, per_second: Option<NonZeroU32>, retry_after: Duration) -> Self {
        QuotaGuard {
            max_in_flight,
            in_flight: AtomicUsize::new(0),
            rate: per_second.map(|n| RateLimiter::direct(Quota::per_second(n))),
            retry_after,
        }
    }

    /// Admits one `GetUser` call, or says how long to wait.
    pub(crate) fn admit(&self) -> Result<Permit<'_>, Unavailable> {
        let limited = |retry_after| Unavailable::new(UnavailableKind::LocalLimit, retry_after);
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit(&self.in_flight);
        if previous >= self.max_in_flight {
            tracing::warn!(max_in_flight = self.max_in_flight, "GetUser calls in flight are at their cap");
            return Err(limited(self.retry_after));
        }
        if let Some(rate) = &self.rate {
            if let Err(not_until) = rate.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                tracing::warn!("GetUser calls per second are at their cap");
                // Retry-After counts whole seconds.
                return Err(limited(Duration::from_secs(wait.as_secs() + 1).max(self.retry_after)));
            }
        }
        Ok(permit)
    }
}
