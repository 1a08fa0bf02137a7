//! Refresh-ahead: a verdict of a token in use is verified again in the background before it
//! expires, so that no request of that token waits on Cognito.
//!
//! - **When.** Each positive verdict has a refresh point: `refresh_ahead_fraction` of its life
//!   (0.75 by default), plus this instance's own share (up to half) of the rest, so that the
//!   instances of a fleet do not refresh one token at the same moment and the later ones find
//!   the first one's verdict in Redis. The first hit past that point asks for a refresh (one per
//!   verdict; a refresh that fails lets a hit ask again one `retry_after` later). A token that
//!   is not requested is never refreshed: idle tokens cost nothing.
//! - **What it does not change.** The revocation delay: a verdict is never served longer than
//!   the TTL after the call that made it, nor past `exp`. A refresh that Cognito refuses (signed
//!   out, disabled, deleted) replaces the verdict with the rejection at once. An invalidation,
//!   a watermark, a session revocation or an event that lands while a refresh is in flight
//!   wins: its answer is dropped. A refresh that meets an outage changes nothing: the verdict
//!   serves until it expires, then the request path (and its outage policy) applies.
//! - **What it costs.** A token in use costs one call per `fraction x TTL` instead of one per
//!   TTL (1.33x at 0.75). With a `get_user_budget` it is off: that TTL is long, and its
//!   verdicts end on a grid that spreads the calls evenly. Refreshes pass the quota guard like
//!   every call, the per-user rate among them (`max_get_user_per_user_per_second`).
//!
//! The hit path only flips an atomic and hands the token to a bounded queue; the refresher is a
//! background task of the verifier (see the lifecycle module).

use std::sync::Mutex;

use tokio::sync::mpsc;

/// How many refreshes may wait for the refresher; past it, a hit's request is dropped (the
/// verdict is then verified on the request path when it expires).
const QUEUE: usize = 1024;

/// The queue of tokens due for a refresh.
pub(crate) struct Refresher {
    tx: mpsc::Sender<Box<[u8]>>,
    rx: Mutex<Option<mpsc::Receiver<Box<[u8]>>>>,
}

impl Default for Refresher {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Refresher { tx, rx: Mutex::new(Some(rx)) }
    }
}

impl Refresher {
    /// Asks for a refresh of `token`'s verdict; dropped when the queue is full.
    pub(crate) fn request(&self, token: &[u8]) {
        let _ = self.tx.try_send(token.into());
    }

    /// The queue, for the one task that serves it.
    pub(crate) fn take_queue(&self) -> Option<mpsc::Receiver<Box<[u8]>>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_requests_instead_of_waiting() {
        let refresher = Refresher::default();
        for _ in 0..QUEUE + 10 {
            refresher.request(b"token");
        }
        let mut queue = refresher.take_queue().unwrap();
        assert!(refresher.take_queue().is_none(), "one task serves the queue");
        let mut queued = 0;
        while queue.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, QUEUE);
    }
}
