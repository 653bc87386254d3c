//! Bounded drains: wait for tracked tasks to finish, but never longer than a grace period.

use std::time::Duration;

use tokio_util::task::TaskTracker;

/// Closes `tracker` and waits up to `grace` for its tasks. Returns `false` (after logging a
/// warning) when the grace period ran out first; the caller then exits anyway.
pub async fn drain(tracker: &TaskTracker, grace: Duration, what: &str) -> bool {
    tracker.close();
    match tokio::time::timeout(grace, tracker.wait()).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                what,
                grace_ms = grace.as_millis() as u64,
                remaining = tracker.len(),
                "drain exceeded the grace period"
            );
            false
        }
    }
}
