//! Limits on writes (POST): each client address may send `--write-rate` writes per second,
//! with bursts up to `--write-burst`; beyond that it gets 429 `rate_limited` with
//! `Retry-After`, and nothing changes. A write not received and answered within
//! `--request-timeout` (a body sent too slowly, say) gets 408 `request_timeout`. Reads are not
//! limited here: they carry no body, change nothing, and a blocking query or watch is the
//! cheap way to follow changes; slow headers are cut by the server loop for every request.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use waypost_model::{
    ErrorCode,
    limits::{MAX_HEADER_BYTES, MAX_HEADERS, MAX_URI_BYTES},
};
use waypost_runtime::deadline::Elapsed;

use super::{AppState, error::ApiError};

/// Checks the request head against our limits, so that an overlong target or too many header
/// bytes get a problem body (414 `uri_too_long`, 431 `headers_too_large`) rather than the
/// HTTP library's bare status, whose own limits are set above these (see `serve.rs`).
pub(super) fn check_head(req: &Request) -> Result<(), ApiError> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(ApiError::new(
            ErrorCode::UriTooLong,
            format!("the request target is {target} bytes; the limit is {MAX_URI_BYTES}"),
        ));
    }
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "{} header fields; the limit is {MAX_HEADERS}",
                headers.len()
            ),
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!("{bytes} bytes of headers; the limit is {MAX_HEADER_BYTES}"),
        ));
    }
    Ok(())
}

/// Client addresses remembered before the idle ones are forgotten.
const TRACKED_CLIENTS: usize = 10_000;

/// The write budget of every client address.
#[derive(Debug, Clone)]
pub struct WriteLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    rate: u32,
}

impl WriteLimiter {
    /// `rate` writes per second with bursts of `burst` (at least `rate`); `None` when `rate`
    /// is 0 (no limit).
    pub fn new(rate: u32, burst: u32) -> Option<Self> {
        let per_second = NonZeroU32::new(rate)?;
        let burst = NonZeroU32::new(burst.max(rate)).unwrap_or(per_second);
        Some(Self {
            limiter: Arc::new(RateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            )),
            rate,
        })
    }

    /// `Err(seconds to wait)` when `client` is over its budget.
    fn check(&self, client: IpAddr) -> Result<(), u64> {
        if self.limiter.len() > TRACKED_CLIENTS {
            // Clients whose budget is full again are as good as new: forget them.
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// The middleware: writes over a client's budget get 429.
pub(crate) async fn writes(State(app): State<AppState>, req: Request, next: Next) -> Response {
    // Reads pass straight through: nothing below applies to them.
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    // The peer is known when served with connect info (always, outside in-process tests).
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if let (Some(limiter), Some(peer)) = (&app.write_limiter, peer)
        && let Err(wait) = limiter.check(peer.ip())
    {
        app.metrics.rate_limited.inc();
        let mut res = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "{} sent more than {} writes per second (--write-rate); retry in {wait} s",
                peer.ip(),
                limiter.rate
            ),
        )
        .into_response();
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
        return res;
    }
    // A write that waits for sidecars (`?wait=propagated`) has that long beyond the limit.
    let propagation =
        super::nodes::PropagationWait::requested(req.uri().query(), app.max_query_time);
    match app
        .deadlines
        .within(app.request_timeout + propagation, next.run(req))
        .await
    {
        Ok(res) => res,
        Err(Elapsed) => {
            app.metrics.request_timeouts.inc();
            ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the write was not received and answered within {:?} (--request-timeout)",
                    app.request_timeout
                ),
            )
            .into_response()
        }
    }
}
