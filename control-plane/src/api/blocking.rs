//! Blocking queries (Consul's rules): `?index=R&wait=D` holds the request until the relevant
//! state has changed past revision `R`, or `D` runs out, then answers as usual. Every answer
//! carries the revision it was read at in `X-Waypost-Index`, never 0, so a client can loop on it
//! without spinning. `index=0` (a client that has no index yet) answers at once, as in Consul,
//! and a `wait` over the limit is cut to it, as in Consul.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use waypost_model::{
    Revision, ServiceName,
    limits::MAX_BLOCKING_WAIT_SECONDS,
    query::{parse_revision, parse_wait},
};

use super::{AppState, error::ApiError};
use crate::{cluster::Consistency, metrics::Metrics};

/// The response header with the revision an answer was read at.
pub(crate) static INDEX_HEADER: HeaderName = HeaderName::from_static("x-waypost-index");

/// Wait used when `index` is given without `wait`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// The longest wait; longer ones are cut to it.
const MAX_WAIT: Duration = Duration::from_secs(MAX_BLOCKING_WAIT_SECONDS);

/// `index`, `wait`, `stale` and `consistent` from a query string.
#[derive(Debug, Default)]
pub(crate) struct Blocking {
    index: Option<Revision>,
    wait: Option<Duration>,
    /// Answer from this node's state without a round to the leader (unless `consistent`).
    pub(crate) stale: bool,
    /// Confirm with a majority even where the leader's lease would do.
    consistent: bool,
}

/// `?key`, `key=true` or `key=false`.
fn flag(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "" | "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::query(format!(
            "{key}={value:?}: use ?{key}, {key}=true or {key}=false"
        ))),
    }
}

impl Blocking {
    /// Takes `index` or `wait` if that is what the pair is; `Ok(false)` for any other key.
    pub(crate) fn accept(&mut self, key: &str, value: &str) -> Result<bool, ApiError> {
        match key {
            "index" => {
                self.index =
                    Some(parse_revision(value).map_err(|e| ApiError::query(format!("index={e}")))?);
            }
            "wait" => {
                let wait = parse_wait(value).ok_or_else(|| {
                    ApiError::query(format!(
                        "wait={value:?} is not a duration like 30s, 5m, 1m30s or 250ms"
                    ))
                })?;
                self.wait = Some(wait.min(MAX_WAIT));
            }
            "stale" => self.stale = flag(key, value)?,
            "consistent" => self.consistent = flag(key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Waits as the query asks ([`Self::block`]), then, unless `stale`, makes the answer
    /// linearizable. `on` is the one service the answer depends on (`None`: any change may
    /// matter); only changes of it wake the wait.
    pub(crate) async fn read(
        &self,
        app: &AppState,
        on: Option<&ServiceName>,
        passed: impl Fn(Revision) -> bool,
    ) -> Result<(), ApiError> {
        self.block(app, on, passed).await;
        // Asked for both, the stronger guarantee wins: never less current than asked.
        if !self.stale || self.consistent {
            let consistency = if self.consistent {
                Consistency::Consistent
            } else {
                Consistency::Default
            };
            app.cluster.linearize(consistency).await?;
        }
        Ok(())
    }

    /// Waits until `passed()` says the state moved past `index`, the wait runs out, or the
    /// server shuts down. Without `index`, returns at once.
    pub(crate) async fn block(
        &self,
        app: &AppState,
        on: Option<&ServiceName>,
        passed: impl Fn(Revision) -> bool,
    ) {
        // No index, or index 0 (nothing seen yet): answer at once with the current index.
        let Some(index) = self.index.filter(|i| *i > 0) else {
            return;
        };
        let wait = self.wait.unwrap_or(DEFAULT_WAIT).min(app.max_query_time);
        // An index from the future (one from before an in-memory control plane restarted, or
        // made up) names no state this server had: answer at once, so the client takes the
        // current index, instead of holding it for the whole wait.
        if index > app.registry.head() {
            return;
        }
        let until = async {
            match on {
                Some(service) => wait_for_service(app, service, index, &passed).await,
                None => wait_for_any(app, index, &passed).await,
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(wait, until) => {}
            () = app.shutdown.cancelled() => {}
        }
    }
}

/// A blocking query counted as held, from its first wait until it answers.
struct Held<'a>(&'a Metrics);

impl<'a> Held<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.blocking_held.inc();
        Self(metrics)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.blocking_held.dec();
    }
}

/// Waits until `passed(index)`, looking again after each change of `service` only (the
/// fan-out wakes it; see [`crate::fanout::Following`]). Changes elsewhere can only move the
/// revision of a service the registry does not hold (it falls back to the history's floor),
/// and its answer, an empty list, is the same either way: that wake-up is not needed.
async fn wait_for_service(
    app: &AppState,
    service: &ServiceName,
    index: Revision,
    passed: &impl Fn(Revision) -> bool,
) {
    // Followed before the first look: a change applied after it wakes the query, even one
    // passed while it looks.
    let mut following = app.fanout.follow();
    following.set(std::iter::once(service));
    let mut held = None;
    while !passed(index) {
        held.get_or_insert_with(|| Held::new(&app.metrics));
        if app.fanout.closed() {
            // No wake-up comes after a store failure (or shutdown): held until the wait or
            // shutdown ends it, as any query, rather than answered at once to clients that
            // would ask again at once.
            return std::future::pending().await;
        }
        following.changed().await;
        app.metrics.blocking_wakeups.inc();
    }
}

/// Waits until `passed(index)`, looking again after every commit.
async fn wait_for_any(app: &AppState, index: Revision, passed: &impl Fn(Revision) -> bool) {
    // Subscribed before the first look, so a change between the look and the wait still wakes it.
    let mut rx = app.registry.subscribe();
    rx.borrow_and_update();
    let mut held = None;
    while !passed(index) {
        held.get_or_insert_with(|| Held::new(&app.metrics));
        if rx.changed().await.is_err() {
            return;
        }
        app.metrics.blocking_wakeups.inc();
    }
}

/// The header value for revision `r` (at least 1).
pub(crate) fn index_value(r: Revision) -> HeaderValue {
    HeaderValue::from(r.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_over_the_limit_are_cut_to_it() {
        let mut b = Blocking::default();
        assert!(b.accept("wait", "30s").unwrap());
        assert_eq!(b.wait, Some(Duration::from_secs(30)));
        assert!(b.accept("wait", "11m").unwrap());
        assert_eq!(b.wait, Some(MAX_WAIT));
        assert!(b.accept("wait", "99999999999999999999h").unwrap());
        assert_eq!(b.wait, Some(MAX_WAIT));
        assert!(b.accept("wait", "soon").is_err());
        assert!(b.accept("wait", "").is_err());
        assert!(b.accept("index", "9223372036854775808").is_err());
        assert!(!b.accept("tag", "x").unwrap());
    }
}
