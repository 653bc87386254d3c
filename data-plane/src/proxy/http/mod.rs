//! The HTTP proxy: routes by `Host` (or a path prefix), balances over the service's `up`
//! instances, streams bodies both ways, passes upgrades (WebSocket) through, retries
//! idempotent requests that failed before any response byte, and ejects failing instances.
//!
//! One request's way through the files: [`routing`] finds the service and its endpoints,
//! [`headers`] prepares what goes upstream, this module makes the attempts ([`retry`] says
//! when another may follow), and [`body`] streams the answer back. [`serve`] accepts the client
//! connections that requests arrive on.

mod body;
mod headers;
mod retry;
mod routing;
mod serve;

use std::{sync::Arc, time::Duration};

use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header, uri::PathAndQuery,
};
use http_body_util::BodyExt;
use hyper::{
    body::{Body, Incoming},
    upgrade::OnUpgrade,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use waypost_runtime::deadline::Deadlines;

pub(crate) use self::routing::service_policy;
pub use self::routing::{BALANCE_KEY, PROTOCOL_KEY};
pub(crate) use self::serve::serve;
use self::{
    body::{InFlight, Tracked, empty},
    headers::{Names, forward_headers, is_hop_by_hop, is_upgrade, strip_hop_by_hop, via},
    retry::{RetryBudget, exchange, is_idempotent},
    routing::Routes,
};
use super::{
    BoxError, ProxyBody, ProxyConfig,
    balance::Balancer,
    error::ProxyError,
    pool::{Conn, Pool, Upstreams},
};
use crate::{metrics::Metrics, snapshot::Snapshots};

/// The proxy's shared state.
pub struct HttpProxy {
    pub(crate) snapshots: Snapshots,
    /// Shared with the admin's explain, which reads its stats.
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) config: ProxyConfig,
    pub(crate) metrics: Arc<Metrics>,
    /// `.service.<domain>` without the final dot, for matching Host headers.
    pub(crate) host_suffix: String,
    /// Upstream connections, per endpoint.
    pub(crate) upstreams: Arc<Upstreams>,
    /// The request timeouts.
    pub(crate) deadlines: Arc<Deadlines>,
    /// The sidecar's tasks: the proxy's own (tunnels, the reaper, the deadline ticker) are
    /// spawned here, so that the sidecar's drain waits for them.
    pub(crate) tasks: TaskTracker,
    /// The sidecar's shutdown.
    pub(crate) shutdown: CancellationToken,
    budget: RetryBudget,
    routes: Routes,
}

impl std::fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpProxy")
    }
}

impl HttpProxy {
    /// A proxy for `domain`'s services; its tasks go on `tasks` and stop with `shutdown`.
    pub(crate) fn new(
        snapshots: Snapshots,
        config: ProxyConfig,
        metrics: Arc<Metrics>,
        domain: &str,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            deadlines: Arc::new(Deadlines::new(
                (config.request_timeout / 20)
                    .clamp(Duration::from_millis(5), Duration::from_millis(100)),
            )),
            upstreams: Arc::new(Upstreams::new(
                config.connect_timeout,
                config.idle_timeout,
                tasks.clone(),
            )),
            snapshots,
            balancer: Arc::new(Balancer::new(config.outlier, config.panic_threshold)),
            budget: RetryBudget::new(config.retry_budget),
            host_suffix: format!(".service.{}", domain.trim_end_matches('.')),
            config,
            metrics,
            tasks,
            shutdown,
            routes: Routes::default(),
        }
    }

    /// Answers one request (never fails: errors become problem+json answers).
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: HeaderValue,
    ) -> Response<ProxyBody> {
        match self.forward(req, client).await {
            Ok(response) => {
                self.metrics.proxy_outcome("ok");
                response
            }
            Err(err) => {
                self.metrics.proxy_outcome(match &err {
                    ProxyError::NoRoute | ProxyError::UnknownService(_) => "unknown_service",
                    ProxyError::NoHealthyInstance(_) => "no_healthy_instance",
                    ProxyError::Unavailable { .. } => "upstream_unavailable",
                    ProxyError::Timeout(_) => "upstream_timeout",
                });
                err.into_response()
            }
        }
    }

    /// Routes `req`, prepares it for upstream and sends it to one of the route's endpoints;
    /// after a failure before any answer, to another when the request may be retried and the
    /// budget allows. `client` is the client's address as a header value.
    ///
    /// One function on purpose, with the answer built in it: the attempt loop in a future of
    /// its own, or the answer built by a function (even one always inlined), each cost about
    /// 180 more instructions per request, in moves of the large values they take
    /// (tools/proxy-callgrind.sh: 29,000 per request as one function).
    async fn forward(
        &self,
        req: Request<Incoming>,
        client: HeaderValue,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (route, rewritten) = {
            let (service, rewritten) = self.route(&req).ok_or(ProxyError::NoRoute)?;
            let route = self.routes.get(
                &service,
                &self.balancer,
                &self.upstreams,
                &self.snapshots,
                self.config.balance,
            )?;
            (route, rewritten)
        };
        if route.mass_removal {
            self.metrics.proxy_panic.inc();
        }
        let path = match rewritten {
            Some(path) => path.parse().map_err(|e| ProxyError::Unavailable {
                service: route.service.clone(),
                detail: format!("bad rewritten path: {e}"),
            })?,
            None => req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        let mut outgoing = Outgoing::new(req, path, client);
        // The name as the route keeps it: the request it was read from has been taken apart.
        let service = route.service.as_str();
        let (endpoints, policy) = (&route.endpoints, route.policy);
        self.budget.deposit();
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let Some(choice) = self.balancer.choose(service, endpoints, policy, &tried) else {
                return Err(ProxyError::Unavailable {
                    service: service.to_owned(),
                    detail: format!("every instance failed ({} tried)", tried.len()),
                });
            };
            if choice.panic {
                self.metrics.proxy_panic.inc();
            }
            let endpoint = &endpoints[choice.index];
            let pool = &route.pools[choice.index];
            let may_retry = outgoing.retryable && tried.len() + 1 < endpoints.len();
            let upstream_req = outgoing.attempt(pool, endpoint.h2c, may_retry);
            let guard = InFlight::new(endpoint.stats.clone());
            // Let the other connections' ready requests be read first, so that requests go
            // upstream in a burst, as an event loop that reads everything ready before writing
            // would send them: under load this halves the times the proxy is preempted by the
            // upstream it just woke when both share a core (BENCHMARKS.md).
            tokio::task::yield_now().await;
            let sent = self
                .deadlines
                .within(
                    self.config.request_timeout,
                    exchange(pool, upstream_req, outgoing.upgrade),
                )
                .await;
            let err = match sent {
                Ok(Ok((mut response, conn))) => {
                    if response.status().is_server_error() {
                        if self.balancer.failed(&endpoint.stats) {
                            self.ejected(service, &endpoint.id);
                        }
                    } else {
                        self.balancer.succeeded(&endpoint.stats);
                    }
                    if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
                        (outgoing.client_upgrade.take(), response.status())
                    {
                        let upstream_upgrade = hyper::upgrade::on(&mut response);
                        self.tasks.spawn(body::tunnel(
                            client_upgrade,
                            upstream_upgrade,
                            self.shutdown.clone(),
                        ));
                        let (mut parts, _) = response.into_parts();
                        parts.headers.append(header::VIA, via(parts.version));
                        return Ok(Response::from_parts(parts, empty()));
                    }
                    let (mut parts, incoming) = response.into_parts();
                    if parts.headers.keys().any(is_hop_by_hop) {
                        strip_hop_by_hop(&mut parts.headers, false);
                    }
                    parts.headers.append(header::VIA, via(parts.version));
                    let lease = match conn {
                        Conn::H1(driven) => Some((pool.clone(), driven)),
                        Conn::Upgrade(_) | Conn::H2(_) => None,
                    };
                    let body = Tracked::new(incoming, guard, self.config.idle_timeout, lease);
                    return Ok(Response::from_parts(parts, body.boxed_unsync()));
                }
                Ok(Err(err)) => err,
                Err(_) => {
                    if self.balancer.failed(&endpoint.stats) {
                        self.ejected(service, &endpoint.id);
                    }
                    return Err(ProxyError::Timeout(service.to_owned()));
                }
            };
            drop(guard);
            if self.balancer.failed(&endpoint.stats) {
                self.ejected(service, &endpoint.id);
            }
            let detail = format!("{}: {}", endpoint.addr, error_chain(&err));
            tried.push(choice.index);
            if may_retry && self.budget.withdraw() {
                self.metrics.proxy_retries.inc();
                tracing::debug!(%service, %detail, "retrying on another instance");
                continue;
            }
            return Err(ProxyError::Unavailable {
                service: service.to_owned(),
                detail,
            });
        }
    }

    fn ejected(&self, service: &str, id: &str) {
        self.metrics.proxy_ejections.inc();
        tracing::warn!(%service, instance = %id, "ejected after consecutive failures");
    }
}

/// A client's request taken apart to go upstream: once, or once per attempt when it may be
/// retried.
struct Outgoing {
    method: Method,
    path: PathAndQuery,
    /// Copied for an attempt that may be followed by another, taken by the last.
    headers: Option<HeaderMap>,
    /// The client's body, streamed by the single attempt a request with a body gets.
    body: Option<Incoming>,
    /// The client asks for an upgrade (`Connection: upgrade` with `Upgrade`).
    upgrade: bool,
    /// The client's side of that upgrade, completed after a `101`.
    client_upgrade: Option<OnUpgrade>,
    /// Idempotent and without a body: nothing is lost if it goes out again.
    retryable: bool,
}

impl Outgoing {
    /// `req` with its headers as they go upstream (from `client`), to `path`. Always inlined,
    /// as [`Outgoing::attempt`]: built in place in the request's future, not moved into it.
    #[inline(always)]
    fn new(mut req: Request<Incoming>, path: PathAndQuery, client: HeaderValue) -> Self {
        let names = Names::of(req.headers());
        let upgrade = names.upgrade && is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        if !names.host {
            // An HTTP/2 client names the host in :authority; an HTTP/1.1 upstream needs Host.
            if let Some(value) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                headers.insert(header::HOST, value);
            }
        }
        forward_headers(&mut headers, names, upgrade, client, parts.version);
        let empty_body = body.is_end_stream() || body.size_hint().exact() == Some(0);
        Self {
            // Retried only when nothing can be lost: an idempotent method without a body.
            retryable: !upgrade && empty_body && is_idempotent(&parts.method),
            method: parts.method,
            path,
            headers: Some(headers),
            body: Some(body),
            upgrade,
            client_upgrade,
        }
    }

    /// The request for one attempt on `pool`'s endpoint (HTTP/2 when `h2c`); `may_retry` when
    /// another attempt may follow this one, so that the headers are copied only then.
    #[inline(always)]
    fn attempt(&mut self, pool: &Pool, h2c: bool, may_retry: bool) -> Request<ProxyBody> {
        let headers = if may_retry {
            self.headers.clone()
        } else {
            self.headers.take()
        };
        let body: ProxyBody = match (self.retryable, self.body.take()) {
            (false, Some(incoming)) => incoming.map_err(BoxError::from).boxed_unsync(),
            _ => empty(),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = headers.unwrap_or_default();
        if h2c {
            // HTTP/2 carries the authority in :authority, not Host.
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(http::uri::Scheme::HTTP);
            uri.authority = Some(pool.authority.clone());
            uri.path_and_query = Some(self.path.clone());
            *req.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
            *req.version_mut() = http::Version::HTTP_2;
            req.headers_mut().remove(header::HOST);
        } else {
            *req.uri_mut() = Uri::from(self.path.clone());
        }
        req
    }
}

/// An error and its sources, as one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
