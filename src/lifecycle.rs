//! The lifecycle of a verifier's background tasks: the key loader, the invalidation listener,
//! the events consumer, the budget's window, the refresher.
//!
//! Every task is started through [`Lifecycle::spawn`] and holds the verifier weakly, upgrading
//! only while it works on it. The [`Lifecycle`] lives inside the verifier, so when the last
//! clone is dropped its stop signal fires and every task ends at its next `.await`: a sleep, a
//! long poll of SQS, a wait on the Redis subscription. A task that is handling something holds
//! the verifier, so the signal cannot fire in the middle of it: an events message being handled
//! is finished and deleted; one received but not yet handled is not deleted and comes back after
//! the queue's visibility timeout.

use std::future::Future;

use tokio::sync::watch;

/// The stop signal of a verifier's background tasks: fires when it is dropped.
pub(crate) struct Lifecycle {
    stop: watch::Sender<()>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle { stop: watch::Sender::new(()) }
    }
}

impl Lifecycle {
    /// Runs `task` on the current Tokio runtime until it ends or the verifier is dropped.
    /// Returns false, and runs nothing, outside a runtime.
    pub(crate) fn spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return false };
        let mut stopped = self.stop.subscribe();
        runtime.spawn(async move {
            tokio::select! {
                biased;
                // Only an error can come: nothing is ever sent, the sender is dropped.
                _ = stopped.changed() => {}
                () = task => {}
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_ends_at_its_next_await_once_its_lifecycle_is_dropped() {
        let lifecycle = Lifecycle::default();
        let alive = Arc::new(());
        let held = alive.clone();
        assert!(lifecycle.spawn(async move {
            let _held = held;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }));
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&alive), 2);
        drop(lifecycle);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(Arc::strong_count(&alive), 1, "the task outlived its verifier");
    }

    #[test]
    fn outside_a_runtime_nothing_is_started() {
        assert!(!Lifecycle::default().spawn(async {}));
    }
}
