//! When a request goes out again: on another instance when an idempotent request without a body
//! failed before any answer, within a budget; and on a new connection to the same instance when
//! a pooled connection turns out closed before it took the request.

use std::sync::atomic::{AtomicI64, Ordering};

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::super::{
    ProxyBody,
    pool::{Conn, Pool, UpstreamError},
};

/// Sends `req` on a connection from `pool`. A pooled connection that turns out closed before the
/// request was written (the upstream ended it while idle) is not the instance's failure: the
/// request goes out once more on a new connection, whatever its method.
pub(super) async fn exchange(
    pool: &Pool,
    mut req: Request<ProxyBody>,
    upgrade: bool,
) -> Result<(Response<Incoming>, Conn), UpstreamError> {
    let mut fresh = false;
    loop {
        let mut conn = pool.checkout(fresh, upgrade).await?;
        match conn.send(req).await {
            Ok(response) => return Ok((response, conn)),
            Err((_, Some(unsent))) if !fresh => {
                fresh = true;
                req = unsent;
            }
            Err((err, _)) => return Err(err),
        }
    }
}

/// Methods whose request may be sent twice (RFC 9110 section 9.2.2).
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Retries may add at most `ratio` of the requests (plus a small reserve so that a quiet
/// proxy can still retry): a failing service is not hit with a retry storm.
pub(super) struct RetryBudget {
    /// Tokens in thousandths; a request deposits `ratio * 1000`, a retry costs 1000.
    tokens: AtomicI64,
    per_request: i64,
}

/// The reserve: ten retries' worth, also the cap on saved tokens beyond deposits.
const RETRY_RESERVE: i64 = 10_000;

impl RetryBudget {
    pub(super) fn new(ratio: f64) -> Self {
        Self {
            tokens: AtomicI64::new(RETRY_RESERVE),
            per_request: (ratio * 1000.0) as i64,
        }
    }

    /// A request arrived: it earns its share of a retry.
    pub(super) fn deposit(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + self.per_request).min(RETRY_RESERVE * 10))
            });
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub(super) fn withdraw(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= 1000).then_some(t - 1000)
            })
            .is_ok()
    }
}
