//! A replicated user pool (Cognito multi-Region replication): the calls a token authorizes go to
//! the preferred region and fail over to the other one while it is unavailable.
//!
//! A replica is "a separate user pool with a shared user pool ID" in a second region, where
//! `GetUser`, `GlobalSignOut` and `RevokeToken` are allowed, and an app that calls the API itself
//! "is responsible for routing traffic" to a regional endpoint. So each region has a breaker:
//!
//! - a call that finds Cognito unavailable in a region (no connection, a timeout, a 5xx,
//!   throttling, an unknown error) marks that region down for `probe_interval`, and the same call
//!   goes to the other region at once: the request that noticed the outage does not fail;
//! - while a region is down, calls skip it: no request waits for a timeout in a region known to
//!   be down;
//! - once the interval has passed, one call at a time (never more) goes to the region again as
//!   a probe: a definitive answer (a user or a rejection) brings traffic back, another failure
//!   marks it down for another interval;
//! - when both regions are marked down, a call tries the preferred one as it would without a
//!   replica, so a request still gets Cognito's answer or a 503 within the operation timeout.
//!
//! A definitive answer of either region is final: a rejection is not asked again elsewhere.
//! Nothing here touches the cache, the quota guard or fleet mode: they sit above this seam, so
//! one call budget covers both regions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use metrics::Gauge;

use crate::clock::unix_ms;
use crate::cognito::{BoxFuture, GetUserAnswer, Introspect};
use crate::error::{UnavailableKind, VerifyError};

/// What the builder says of the replica.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaSettings {
    pub(crate) region: String,
    /// The replica's endpoint override (an emulator, a VPC endpoint).
    pub(crate) endpoint: Option<String>,
    /// Whether calls go to the replica first.
    pub(crate) prefer_replica: bool,
    pub(crate) probe_interval: Duration,
}

/// One region of a replicated pool: its client and its breaker.
pub(crate) struct Region {
    name: String,
    client: Arc<dyn Introspect>,
    /// Until when (ms since the epoch) calls skip this region; 0 while it is up.
    down_until: AtomicU64,
    /// Whether a probe is in flight.
    probing: AtomicBool,
    /// `actix_cognito_region_available{region}`: 1 while up.
    available: Gauge,
}

/// What a call may do with a region now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Up,
    /// Down, and this call won the probe.
    Probe,
    Down,
}

impl Region {
    pub(crate) fn new(name: String, client: Arc<dyn Introspect>) -> Self {
        let available = metrics::gauge!(crate::telemetry::names::REGION_AVAILABLE, "region" => name.clone());
        available.set(1.0);
        Region { name, client, down_until: AtomicU64::new(0), probing: AtomicBool::new(false), available }
    }

    fn admit(&self, now: u64) -> Admit {
        match self.down_until.load(Relaxed) {
            0 => Admit::Up,
            until if now < until => Admit::Down,
            _ if self.probing.compare_exchange(false, true, Relaxed, Relaxed).is_ok() => Admit::Probe,
            _ => Admit::Down,
        }
    }

    /// Records how a call went.
    fn settle(&self, failed: Option<UnavailableKind>, probe: bool, interval: Duration) {
        match failed {
            Some(kind) => {
                let was_up = self.down_until.swap(unix_ms() + interval.as_millis() as u64, Relaxed) == 0;
                if was_up {
                    tracing::warn!(
                        region = %self.name,
                        kind = kind.as_str(),
                        "Cognito is unavailable in this region: calls go to the other region for {interval:?}"
                    );
                }
                self.available.set(0.0);
            }
            None => {
                if self.down_until.swap(0, Relaxed) != 0 {
                    tracing::info!(region = %self.name, "Cognito answers in this region again");
                }
                self.available.set(1.0);
            }
        }
        if probe {
            self.probing.store(false, Relaxed);
        }
    }

    /// Whether calls go to this region now.
    pub(crate) fn is_available(&self) -> bool {
        self.down_until.load(Relaxed) == 0
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// Whether a failure is the region's: anything Cognito-side. The local in-flight cap is ours.
fn regional(result: &Result<impl Sized, VerifyError>) -> Option<UnavailableKind> {
    match result {
        Err(VerifyError::Unavailable(u)) if u.kind() != UnavailableKind::LocalLimit => Some(u.kind()),
        _ => None,
    }
}

/// The two regions of a replicated pool, the preferred one first.
pub(crate) struct Regions {
    regions: [Region; 2],
    probe_interval: Duration,
}

impl Regions {
    pub(crate) fn new(preferred: Region, other: Region, probe_interval: Duration) -> Self {
        Regions { regions: [preferred, other], probe_interval }
    }

    /// Both regions, the preferred one first.
    pub(crate) fn regions(&self) -> &[Region; 2] {
        &self.regions
    }

    /// Sends `op` to the preferred region, else the other, as the module docs say.
    async fn call<'a, T>(
        &'a self,
        op: impl Fn(&'a dyn Introspect) -> BoxFuture<'a, Result<T, VerifyError>>,
    ) -> Result<T, VerifyError> {
        let now = unix_ms();
        let mut last = None;
        for region in &self.regions {
            let probe = match region.admit(now) {
                Admit::Up => false,
                Admit::Probe => true,
                Admit::Down => continue,
            };
            let result = op(&*region.client).await;
            let failed = regional(&result);
            region.settle(failed, probe, self.probe_interval);
            if failed.is_none() {
                return result;
            }
            last = Some(result);
        }
        match last {
            Some(result) => result,
            // Both known down and no probe due: ask the preferred one anyway.
            None => {
                let region = &self.regions[0];
                let result = op(&*region.client).await;
                region.settle(regional(&result), false, self.probe_interval);
                result
            }
        }
    }
}

impl Introspect for Regions {
    fn get_user<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<GetUserAnswer, VerifyError>> {
        Box::pin(self.call(move |c| c.get_user(token)))
    }

    fn global_sign_out<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), VerifyError>> {
        Box::pin(self.call(move |c| c.global_sign_out(token)))
    }

    fn revoke_token<'a>(
        &'a self,
        refresh_token: &'a str,
        client_id: &'a str,
        client_secret: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), VerifyError>> {
        Box::pin(self.call(move |c| c.revoke_token(refresh_token, client_id, client_secret)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use super::*;
    use crate::error::{Rejection, Unavailable};

    /// A region's stand-in: answers as told, counting calls.
    #[derive(Default)]
    struct Scripted {
        down: AtomicBool,
        calls: AtomicUsize,
        rejects: Mutex<bool>,
    }

    impl Introspect for Scripted {
        fn get_user<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<GetUserAnswer, VerifyError>> {
            self.calls.fetch_add(1, Relaxed);
            let (down, rejects) = (self.down.load(Relaxed), *self.rejects.lock().unwrap());
            Box::pin(async move {
                match (down, rejects) {
                    (true, _) => Err(VerifyError::Unavailable(Unavailable::new(
                        UnavailableKind::Connection,
                        Duration::from_secs(1),
                    ))),
                    (false, true) => Err(VerifyError::Rejected(Rejection::NotAuthorized)),
                    (false, false) => Ok(GetUserAnswer { username: "u".into(), attributes: vec![] }),
                }
            })
        }
        fn global_sign_out<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), VerifyError>> {
            Box::pin(async { Ok(()) })
        }
        fn revoke_token<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Option<&'a str>,
        ) -> BoxFuture<'a, Result<(), VerifyError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn pair(interval: Duration) -> (Arc<Scripted>, Arc<Scripted>, Regions) {
        let (a, b) = (Arc::new(Scripted::default()), Arc::new(Scripted::default()));
        let regions = Regions::new(
            Region::new("us-east-1".into(), a.clone()),
            Region::new("us-west-2".into(), b.clone()),
            interval,
        );
        (a, b, regions)
    }

    #[tokio::test]
    async fn an_unavailable_region_is_skipped_until_its_probe_and_a_rejection_is_final() {
        let (a, b, regions) = pair(Duration::from_millis(200));
        assert!(regions.get_user("t").await.is_ok());
        assert_eq!((a.calls.load(Relaxed), b.calls.load(Relaxed)), (1, 0));
        // The primary goes down: the call that finds out is answered by the replica.
        a.down.store(true, Relaxed);
        assert!(regions.get_user("t").await.is_ok());
        assert_eq!((a.calls.load(Relaxed), b.calls.load(Relaxed)), (2, 1));
        assert!(!regions.regions()[0].is_available());
        // Until the interval passes, the primary is not asked at all.
        for _ in 0..10 {
            assert!(regions.get_user("t").await.is_ok());
        }
        assert_eq!((a.calls.load(Relaxed), b.calls.load(Relaxed)), (2, 11));
        // A rejection by the replica is final: the primary is not asked.
        *b.rejects.lock().unwrap() = true;
        assert!(matches!(regions.get_user("t").await, Err(VerifyError::Rejected(_))));
        assert_eq!(a.calls.load(Relaxed), 2);
        *b.rejects.lock().unwrap() = false;
        // Recovered: after the interval, one probe brings the traffic back.
        a.down.store(false, Relaxed);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(regions.get_user("t").await.is_ok());
        assert_eq!(a.calls.load(Relaxed), 3);
        assert!(regions.regions()[0].is_available());
        let before = b.calls.load(Relaxed);
        assert!(regions.get_user("t").await.is_ok());
        assert_eq!((a.calls.load(Relaxed), b.calls.load(Relaxed)), (4, before));
    }

    #[tokio::test]
    async fn with_both_regions_down_a_call_asks_the_preferred_one_and_gets_its_failure() {
        let (a, b, regions) = pair(Duration::from_secs(60));
        a.down.store(true, Relaxed);
        b.down.store(true, Relaxed);
        assert!(matches!(regions.get_user("t").await, Err(VerifyError::Unavailable(_))));
        assert_eq!((a.calls.load(Relaxed), b.calls.load(Relaxed)), (1, 1));
        // Both marked down: the preferred one is asked, as it would be without a replica.
        assert!(matches!(regions.get_user("t").await, Err(VerifyError::Unavailable(_))));
        assert_eq!((a.calls.load(Relaxed), b.calls.load(Relaxed)), (2, 1));
        a.down.store(false, Relaxed);
        assert!(regions.get_user("t").await.is_ok());
        assert!(regions.regions()[0].is_available());
    }
}
