//! The quota guard: caps on `GetUser` calls in flight, per second, and per user and second.
//!
//! Every call spends the account-wide `GetUser` quota shared with other apps. A burst of new
//! tokens (a deploy, a reconnect storm, an attacker with many real accounts) should get 503s from
//! this process rather than exhaust that quota for everyone.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::error::{Unavailable, UnavailableKind};

pub(crate) struct QuotaGuard {
    max_in_flight: usize,
    in_flight: AtomicUsize,
    rate: Option<DefaultDirectRateLimiter>,
    /// Cognito throttles one user past about 10 reads a second: the calls for one user, keyed
    /// by a keyed hash of their `sub` (never the string).
    per_user: PerUser,
    seed: foldhash::quality::RandomState,
    retry_after: Duration,
}

/// Governor's clock on Tokio's time, so that tests on a paused clock see the rates they set.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type PerUser = RateLimiter<u64, HashMapStateStore<u64>, TokioClock>;

/// One admitted call; the slot is given back when it drops.
pub(crate) struct Permit<'a>(&'a AtomicUsize);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl QuotaGuard {
    pub(crate) fn new(
        max_in_flight: usize,
        per_second: Option<NonZeroU32>,
        per_user: NonZeroU32,
        retry_after: Duration,
    ) -> Self {
        QuotaGuard {
            max_in_flight,
            in_flight: AtomicUsize::new(0),
            rate: per_second.map(|n| RateLimiter::direct(Quota::per_second(n))),
            per_user: RateLimiter::new(Quota::per_second(per_user), HashMapStateStore::default(), TokioClock),
            seed: foldhash::quality::RandomState::default(),
            retry_after,
        }
    }

    /// Admits one call for the user `sub` (see [`admit`](Self::admit)), within the per-user
    /// rate first.
    pub(crate) fn admit_for(&self, sub: &str) -> Result<Permit<'_>, Unavailable> {
        use std::hash::BuildHasher;
        if self.per_user.check_key(&self.seed.hash_one(sub)).is_err() {
            tracing::debug!("GetUser calls for one user are at their cap");
            return Err(Unavailable::new(UnavailableKind::LocalLimit, self.retry_after));
        }
        self.admit()
    }

    /// Forgets the users whose rate is back at rest.
    pub(crate) fn prune(&self) {
        self.per_user.retain_recent();
        self.per_user.shrink_to_fit();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_per_user_rate_holds_on_tokios_clock_and_users_are_rated_apart() {
        let five = NonZeroU32::new(5).unwrap();
        let guard = QuotaGuard::new(1000, None, five, Duration::from_secs(1));
        let admitted = |sub: &str| (0..50).filter(|_| guard.admit_for(sub).is_ok()).count();
        assert_eq!(admitted("alice"), 5);
        assert_eq!(admitted("bob"), 5);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(admitted("alice"), 5);
        let refused = guard.admit_for("alice").err().expect("over the rate");
        assert_eq!(refused.kind(), UnavailableKind::LocalLimit);
        guard.prune();
    }
}
