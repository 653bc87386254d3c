//! The HTTP proxy: routes by `Host` (or a path prefix), balances over the service's `up`
//! instances, streams bodies both ways, passes upgrades (WebSocket) through, retries
//! idempotent requests that failed before any response byte, and ejects failing instances.

use std::{
    borrow::Cow,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
    time::Instant,
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
    uri::PathAndQuery,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::time::Sleep;
use waypost_runtime::deadline::Deadlines;

use super::{
    BoxError, ProxyBody, ProxyConfig,
    balance::{Balancer, Endpoint, Policy, Stats},
    error::ProxyError,
    pool::{Conn, Driven, Pool, UpstreamError, Upstreams},
};
use crate::{metrics::Metrics, snapshot::Snapshots};

/// Instance metadata naming the balancing policy of its service.
pub const BALANCE_KEY: &str = "waypost.balance";
/// Instance metadata `h2c`: the instance speaks HTTP/2 without TLS (prior knowledge).
pub const PROTOCOL_KEY: &str = "waypost.protocol";

/// The proxy's shared state.
pub struct HttpProxy {
    pub(crate) snapshots: Snapshots,
    pub(crate) balancer: Balancer,
    pub(crate) config: ProxyConfig,
    pub(crate) metrics: Arc<Metrics>,
    /// `.service.<domain>` without the final dot, for matching Host headers.
    pub(crate) host_suffix: String,
    /// Upstream connections, per endpoint.
    pub(crate) upstreams: Arc<Upstreams>,
    /// The request timeouts.
    pub(crate) deadlines: Arc<Deadlines>,
    budget: RetryBudget,
    routes: Routes,
}

impl std::fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpProxy")
    }
}

impl HttpProxy {
    pub(crate) fn new(
        snapshots: Snapshots,
        config: ProxyConfig,
        metrics: Arc<Metrics>,
        domain: &str,
    ) -> Self {
        Self {
            deadlines: Arc::new(Deadlines::new(
                (config.request_timeout / 20)
                    .clamp(Duration::from_millis(5), Duration::from_millis(100)),
            )),
            upstreams: Arc::new(Upstreams::new(config.connect_timeout, config.idle_timeout)),
            snapshots,
            balancer: Balancer::new(config.outlier, config.panic_threshold),
            budget: RetryBudget::new(config.retry_budget),
            host_suffix: format!(".service.{}", domain.trim_end_matches('.')),
            config,
            metrics,
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

    /// The service a request is for, and the path to send upstream. The name borrows from the
    /// request when the Host is already lower-case, as it nearly always is.
    fn route<'r>(&self, req: &'r Request<Incoming>) -> Option<(Cow<'r, str>, Option<String>)> {
        // The Host header when there is one, else the request's authority (HTTP/2 :authority).
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(host_of)
            .or_else(|| req.uri().host());
        if let Some(host) = host {
            // Without a final dot, and without `.service.<domain>` in any case.
            let host = host.strip_suffix('.').unwrap_or(host);
            let host = host
                .len()
                .checked_sub(self.host_suffix.len())
                .and_then(|cut| {
                    let suffix = host.get(cut..)?;
                    suffix
                        .eq_ignore_ascii_case(&self.host_suffix)
                        .then(|| &host[..cut])
                })
                .unwrap_or(host);
            let name: Cow<'r, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(host.to_ascii_lowercase())
            } else {
                Cow::Borrowed(host)
            };
            // With path routing on, a Host that names no known service falls through to the
            // path (`Host: localhost:8081` with `/payments/...`).
            let known = || {
                self.snapshots
                    .current()
                    .services
                    .contains_key(name.as_ref())
            };
            if !name.contains('.') && !name.is_empty() && (!self.config.route_by_path || known()) {
                return Some((name, None));
            }
        }
        if self.config.route_by_path {
            let path = req.uri().path();
            let rest = path.strip_prefix('/')?;
            let (service, tail) = rest.split_once('/').unwrap_or((rest, ""));
            if !service.is_empty() {
                let query = req
                    .uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                return Some((Cow::Borrowed(service), Some(format!("/{tail}{query}"))));
            }
        }
        None
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
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
                self.config.panic_threshold,
            )?;
            (route, rewritten)
        };
        // The name as the route keeps it: the request it was read from is taken apart below.
        let service = route.service.as_str();
        if route.mass_removal {
            self.metrics.proxy_panic.inc();
        }
        let (endpoints, policy) = (&route.endpoints, route.policy);

        let names = Names::of(req.headers());
        let upgrade = names.upgrade && is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let path = match rewritten {
            Some(path) => path.parse().map_err(|e| ProxyError::Unavailable {
                service: service.to_owned(),
                detail: format!("bad rewritten path: {e}"),
            })?,
            None => parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
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
        // Retried only when nothing can be lost: an idempotent method without a body.
        let retryable = !upgrade && empty_body && is_idempotent(&parts.method);
        let mut body = Some(body);
        let mut headers = Some(headers);
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
            // The headers are copied only when another attempt may follow this one.
            let may_retry = retryable && tried.len() + 1 < endpoints.len();
            let attempt_headers = if may_retry {
                headers.clone()
            } else {
                headers.take()
            };
            let outgoing_body: ProxyBody = match (retryable, body.take()) {
                (false, Some(incoming)) => incoming.map_err(BoxError::from).boxed_unsync(),
                _ => Empty::new().map_err(|never| match never {}).boxed_unsync(),
            };
            let mut upstream_req = Request::new(outgoing_body);
            *upstream_req.method_mut() = parts.method.clone();
            *upstream_req.headers_mut() = attempt_headers.unwrap_or_default();
            if endpoint.h2c {
                // HTTP/2 carries the authority in :authority, not Host.
                let mut uri = http::uri::Parts::default();
                uri.scheme = Some(http::uri::Scheme::HTTP);
                uri.authority = Some(pool.authority.clone());
                uri.path_and_query = Some(path.clone());
                *upstream_req.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
                *upstream_req.version_mut() = http::Version::HTTP_2;
                upstream_req.headers_mut().remove(header::HOST);
            } else {
                *upstream_req.uri_mut() = Uri::from(path.clone());
            }
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
                    exchange(pool, upstream_req, upgrade),
                )
                .await;
            match sent {
                Ok(Ok((mut response, conn))) => {
                    if response.status().is_server_error() {
                        if self.balancer.failed(&endpoint.stats) {
                            self.ejected(service, &endpoint.id);
                        }
                    } else {
                        self.balancer.succeeded(&endpoint.stats);
                    }
                    if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
                        (client_upgrade, response.status())
                    {
                        let upstream_upgrade = hyper::upgrade::on(&mut response);
                        tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
                        let (mut parts, _) = response.into_parts();
                        parts.headers.append(header::VIA, via(parts.version));
                        return Ok(Response::from_parts(
                            parts,
                            Empty::new().map_err(|never| match never {}).boxed_unsync(),
                        ));
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
                    let body = Tracked {
                        inner: incoming,
                        _guard: guard,
                        idle: self.config.idle_timeout,
                        timer: None,
                        lease,
                        done: false,
                    };
                    return Ok(Response::from_parts(parts, body.boxed_unsync()));
                }
                Ok(Err(err)) => {
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
                Err(_) => {
                    if self.balancer.failed(&endpoint.stats) {
                        self.ejected(service, &endpoint.id);
                    }
                    return Err(ProxyError::Timeout(service.to_owned()));
                }
            }
        }
    }

    fn ejected(&self, service: &str, id: &str) {
        self.metrics.proxy_ejections.inc();
        tracing::warn!(%service, instance = %id, "ejected after consecutive failures");
    }
}

/// Sends `req` on a connection from `pool`. A pooled connection that turns out closed before the
/// request was written (the upstream ended it while idle) is not the instance's failure: the
/// request goes out once more on a new connection, whatever its method.
async fn exchange(
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

/// Copies bytes both ways between an upgraded client connection and the upstream's.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(err) => {
            tracing::debug!(%err, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// `Connection` names `upgrade` (the caller has seen an `Upgrade` header).
fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The host part of a `Host` value: without the port (an IPv6 literal keeps its brackets).
fn host_of(value: &str) -> &str {
    if value.starts_with('[') {
        return value.split_inclusive(']').next().unwrap_or(value);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => value,
    }
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The fixed hop-by-hop headers (RFC 9110 section 7.6.1 and common practice).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::UPGRADE
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// What one pass over a request's header names found: comparisons of known names, no hashing,
/// instead of a hashed look-up for each name that might be there.
#[derive(Debug, Clone, Copy)]
struct Names {
    host: bool,
    upgrade: bool,
    hop_by_hop: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
}

impl Names {
    fn of(headers: &HeaderMap) -> Self {
        let mut seen = Self {
            host: false,
            upgrade: false,
            hop_by_hop: false,
            forwarded_for: false,
            forwarded_proto: false,
        };
        for name in headers.keys() {
            seen.host |= name == header::HOST;
            seen.upgrade |= name == header::UPGRADE;
            seen.hop_by_hop |= is_hop_by_hop(name);
            seen.forwarded_for |= name == X_FORWARDED_FOR;
            seen.forwarded_proto |= name == X_FORWARDED_PROTO;
        }
        seen
    }
}

/// Removes the hop-by-hop headers of RFC 9110 section 7.6.1: those named in `Connection` and
/// the fixed list. For an upgrade, `Connection: upgrade` and `Upgrade` go through. Most
/// messages carry none, so callers check with [`is_hop_by_hop`] (or [`Names`]) first.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    let fixed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n) && !(upgrade && *n == header::UPGRADE))
        .cloned()
        .collect();
    for name in fixed {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A request's headers as they go upstream: hop-by-hop ones removed, forwarding ones added.
/// `names` is what [`Names::of`] found in them.
fn forward_headers(
    headers: &mut HeaderMap,
    names: Names,
    upgrade: bool,
    client: HeaderValue,
    version: http::Version,
) {
    if names.hop_by_hop || upgrade {
        strip_hop_by_hop(headers, upgrade);
    }
    // What was removed as hop-by-hop may have been a forwarding header.
    let names = if names.hop_by_hop {
        Names::of(headers)
    } else {
        names
    };
    add_forwarding(headers, client, version, names);
}

/// Adds the client's address to `X-Forwarded-For`, `X-Forwarded-Proto: http` unless set, and
/// `Via`. `client` is the address as a header value, made once per connection; `names` says
/// which of the first two are there.
fn add_forwarding(
    headers: &mut HeaderMap,
    client: HeaderValue,
    version: http::Version,
    names: Names,
) {
    // Room for the three below at once (a parsed request's map is sized to what it holds).
    headers.reserve(3);
    if names.forwarded_for {
        let earlier = headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .map(|earlier| format!("{earlier}, {}", client.to_str().unwrap_or("")));
        let value = earlier
            .and_then(|v| HeaderValue::from_str(&v).ok())
            .unwrap_or(client);
        headers.insert(&X_FORWARDED_FOR, value);
    } else {
        headers.append(&X_FORWARDED_FOR, client);
    }
    if !names.forwarded_proto {
        headers.append(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    headers.append(header::VIA, via(version));
}

fn via(version: http::Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        http::Version::HTTP_2 => "2 waypost",
        http::Version::HTTP_10 => "1.0 waypost",
        _ => "1.1 waypost",
    })
}

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

/// Counts a request in flight on its endpoint until the response body is done or dropped.
struct InFlight(Arc<Stats>);

impl InFlight {
    fn new(stats: Arc<Stats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream response body, streamed as it comes: it keeps its endpoint's in-flight count
/// until done, and fails when no frame arrives for the idle timeout.
struct Tracked {
    inner: Incoming,
    _guard: InFlight,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The HTTP/1.1 connection it comes on: polled here while the body streams, returned to
    /// its pool once the body has ended.
    lease: Option<(Arc<Pool>, Box<Driven>)>,
    done: bool,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-response: it is closed,
        // not reused.
        if let Some((pool, driven)) = self.lease.take()
            && (self.done || self.inner.is_end_stream())
        {
            pool.checkin(driven);
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some((_, driven)) = &mut self.lease {
            // Reads what the body is made of; a connection that ended makes the body end or
            // fail below.
            driven.poll_conn(cx);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.timer = None;
                if frame.is_none() {
                    self.done = true;
                }
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                        "the upstream sent nothing for {idle:?}"
                    )
                    .into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Retries may add at most `ratio` of the requests (plus a small reserve so that a quiet
/// proxy can still retry): a failing service is not hit with a retry storm.
struct RetryBudget {
    /// Tokens in thousandths; a request deposits `ratio * 1000`, a retry costs 1000.
    tokens: AtomicI64,
    per_request: i64,
}

/// The reserve: ten retries' worth, also the cap on saved tokens beyond deposits.
const RETRY_RESERVE: i64 = 10_000;

impl RetryBudget {
    fn new(ratio: f64) -> Self {
        Self {
            tokens: AtomicI64::new(RETRY_RESERVE),
            per_request: (ratio * 1000.0) as i64,
        }
    }

    fn deposit(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + self.per_request).min(RETRY_RESERVE * 10))
            });
    }

    fn withdraw(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= 1000).then_some(t - 1000)
            })
            .is_ok()
    }
}

/// How long an instance that left a service (removed, expired, critical) is remembered for the
/// mass-removal rule.
const RECENT_WINDOW: Duration = Duration::from_secs(30);

/// One service's endpoints as of one snapshot revision: built once per change, not per request.
#[derive(Debug)]
pub(crate) struct Route {
    /// The service's name.
    service: String,
    revision: u64,
    /// The endpoints to balance over.
    pub(crate) endpoints: Vec<Endpoint>,
    /// The connection pool of each endpoint (same order).
    pools: Vec<Arc<Pool>>,
    /// The service's policy.
    pub(crate) policy: Policy,
    /// Instances that left within the window, with when they left.
    recent: Vec<(Endpoint, Instant)>,
    /// Too many instances left at once: the recent ones are balanced over too.
    pub(crate) mass_removal: bool,
}

/// The route cache.
#[derive(Debug, Default)]
struct Routes {
    by_service: std::sync::Mutex<std::collections::HashMap<String, Arc<Route>>>,
}

impl Routes {
    /// The route for `service` in the current snapshot. The panic rule of the balancer applies
    /// to removals too: when fewer than `threshold` of the instances seen within the last
    /// [`RECENT_WINDOW`] are still `up`, the ones that vanished from the registry (removed or
    /// expired; not those draining or reported critical, which are still registered) are used
    /// as well, instead of piling everything onto the few left.
    fn get(
        &self,
        service: &str,
        balancer: &Balancer,
        upstreams: &Upstreams,
        snapshots: &crate::snapshot::Snapshots,
        default_policy: Policy,
        threshold: f64,
    ) -> Result<Arc<Route>, ProxyError> {
        let snapshot = snapshots.current();
        let mut routes = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        let previous = routes.get(service).cloned();
        let fresh = |r: &&Arc<Route>| {
            r.revision == snapshot.revision
                && r.recent
                    .iter()
                    .all(|(_, left)| left.elapsed() < RECENT_WINDOW)
        };
        if let Some(route) = previous.as_ref().filter(fresh) {
            return Self::usable(service, route.clone());
        }
        let Some(view) = snapshot.services.get(service) else {
            routes.remove(service);
            return Err(ProxyError::UnknownService(service.to_owned()));
        };
        let current: Vec<Endpoint> = view
            .up
            .iter()
            .filter_map(|t| {
                Some(Endpoint {
                    id: t.instance.id.as_str().to_owned(),
                    addr: SocketAddr::new(*t.addrs.first()?, t.instance.port),
                    weight: t.instance.weight,
                    h2c: t.instance.metadata.get(PROTOCOL_KEY).map(String::as_str) == Some("h2c"),
                    stats: Arc::default(),
                })
            })
            .collect();
        let policy = view
            .instances
            .iter()
            .find_map(|i| i.metadata.get(BALANCE_KEY)?.parse::<Policy>().ok())
            .unwrap_or(default_policy);
        let now = Instant::now();
        // Still registered (draining, or reported critical): left on purpose or for a known
        // reason, so not part of a removal the proxy should second-guess.
        let present = |id: &str| view.instances.iter().any(|i| i.id.as_str() == id);
        let mut recent: Vec<(Endpoint, Instant)> = Vec::new();
        if let Some(previous) = &previous {
            let gone = previous
                .endpoints
                .iter()
                .filter(|e| !previous.recent.iter().any(|(r, _)| r.id == e.id))
                .map(|e| (e.clone(), now))
                .chain(previous.recent.iter().cloned());
            for (endpoint, left) in gone {
                let back = current.iter().any(|c| c.id == endpoint.id);
                if !back && !present(&endpoint.id) && now.duration_since(left) < RECENT_WINDOW {
                    recent.push((endpoint, left));
                }
            }
        }
        let seen = current.len() + recent.len();
        let mass_removal = !recent.is_empty() && (current.len() as f64) < threshold * seen as f64;
        let mut endpoints = current;
        if mass_removal {
            endpoints.extend(recent.iter().map(|(e, _)| e.clone()));
        }
        balancer.attach(service, &mut endpoints);
        let pools = endpoints
            .iter()
            .map(|e| upstreams.pool(e.addr, e.h2c))
            .collect();
        let route = Arc::new(Route {
            service: service.to_owned(),
            revision: snapshot.revision,
            endpoints,
            pools,
            policy,
            recent,
            mass_removal,
        });
        routes.insert(service.to_owned(), route.clone());
        Self::usable(service, route)
    }

    fn usable(service: &str, route: Arc<Route>) -> Result<Arc<Route>, ProxyError> {
        if route.endpoints.is_empty() {
            Err(ProxyError::NoHealthyInstance(service.to_owned()))
        } else {
            Ok(route)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded_as(given: &[(&'static str, &'static str)], upgrade: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in given {
            headers.append(*name, HeaderValue::from_static(value));
        }
        let names = Names::of(&headers);
        forward_headers(
            &mut headers,
            names,
            upgrade,
            HeaderValue::from_static("10.0.0.7"),
            http::Version::HTTP_11,
        );
        headers
    }

    fn forwarded(given: &[(&'static str, &'static str)]) -> HeaderMap {
        forwarded_as(given, false)
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let sent = forwarded(&[
            ("host", "web"),
            ("connection", "keep-alive, x-secret, x-forwarded-proto"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-secret", "hop"),
            ("x-forwarded-proto", "https"),
            ("proxy-authorization", "Basic abc"),
            ("accept", "*/*"),
        ]);
        for gone in [
            "connection",
            "keep-alive",
            "te",
            "x-secret",
            "proxy-authorization",
        ] {
            assert!(!sent.contains_key(gone), "{gone} went upstream: {sent:?}");
        }
        assert_eq!(sent["host"], "web");
        assert_eq!(sent["accept"], "*/*");
        // Named in Connection, so this hop's own: replaced by what this proxy saw.
        assert_eq!(sent["x-forwarded-proto"], "http");

        let upgrade = forwarded_as(
            &[
                ("connection", "Upgrade, keep-alive"),
                ("upgrade", "websocket"),
                ("keep-alive", "timeout=5"),
            ],
            true,
        );
        assert_eq!(upgrade["upgrade"], "websocket");
        assert_eq!(upgrade["connection"], "upgrade");
        assert!(!upgrade.contains_key("keep-alive"));
    }

    #[test]
    fn forwarding_headers_are_added_or_extended() {
        let fresh = forwarded(&[("host", "web")]);
        assert_eq!(fresh["x-forwarded-for"], "10.0.0.7");
        assert_eq!(fresh["x-forwarded-proto"], "http");
        assert_eq!(fresh["via"], "1.1 waypost");

        let behind = forwarded(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-proto", "https"),
            ("via", "1.1 edge"),
        ]);
        assert_eq!(behind["x-forwarded-for"], "192.0.2.1, 10.0.0.7");
        assert_eq!(
            behind["x-forwarded-proto"], "https",
            "kept as the first hop saw it"
        );
        let via: Vec<_> = behind.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 edge", "1.1 waypost"]);
    }
}
