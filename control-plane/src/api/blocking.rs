//! Blocking queries (Consul's rules): `?index=R&wait=D` holds the request until the relevant
//! state has changed past revision `R`, or `D` runs out, then answers as usual. Every answer
//! carries the revision it was read at in `X-Waypost-Index`, never 0, so a client can loop on it
//! without spinning.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use waypost_model::{Revision, limits::MAX_BLOCKING_WAIT_SECONDS};

use super::{AppState, error::ApiError};

/// The response header with the revision an answer was read at.
pub(crate) static INDEX_HEADER: HeaderName = HeaderName::from_static("x-waypost-index");

/// Wait used when `index` is given without `wait`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// `index` and `wait` from a query string.
#[derive(Debug, Default)]
pub(crate) struct Blocking {
    index: Option<Revision>,
    wait: Option<Duration>,
}

impl Blocking {
    /// Takes `index` or `wait` if that is what the pair is; `Ok(false)` for any other key.
    pub(crate) fn accept(&mut self, key: &str, value: &str) -> Result<bool, ApiError> {
        match key {
            "index" => {
                let r = value.parse().map_err(|_| {
                    ApiError::query(format!(
                        "index={value:?} is not a revision (a whole number)"
                    ))
                })?;
                self.index = Some(r);
            }
            "wait" => self.wait = Some(parse_wait(value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Waits until `passed()` says the state moved past `index`, the wait runs out, or the
    /// server shuts down. Without `index`, returns at once.
    pub(crate) async fn block(&self, app: &AppState, passed: impl Fn(Revision) -> bool) {
        let Some(index) = self.index else { return };
        let wait = self.wait.unwrap_or(DEFAULT_WAIT).min(app.max_query_time);
        // Subscribe before the first check, so a change between check and wait still wakes us.
        let mut rx = app.registry.subscribe();
        // An index from the future (one from before an in-memory control plane restarted, or
        // made up) names no state this server had: answer at once, so the client takes the
        // current index, instead of holding it for the whole wait.
        if index > rx.borrow().revision {
            return;
        }
        let until = async {
            while !passed(index) {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(wait, until) => {}
            () = app.shutdown.cancelled() => {}
        }
    }
}

fn parse_wait(value: &str) -> Result<Duration, ApiError> {
    let d = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(value).map_err(|e| {
            ApiError::query(format!(
                "wait={value:?} is not a duration like 30s or 5m: {e}"
            ))
        })?,
    };
    if d > Duration::from_secs(MAX_BLOCKING_WAIT_SECONDS) {
        return Err(ApiError::query(format!(
            "wait={value:?} is over the limit of {MAX_BLOCKING_WAIT_SECONDS}s"
        )));
    }
    Ok(d)
}

/// The header value for revision `r` (at least 1).
pub(crate) fn index_value(r: Revision) -> HeaderValue {
    HeaderValue::from(r.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_as_seconds_or_durations() {
        assert_eq!(parse_wait("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_wait("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_wait("11m").is_err());
        assert!(parse_wait("soon").is_err());
    }
}
