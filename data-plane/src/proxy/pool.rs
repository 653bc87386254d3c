//! Upstream connections, kept per endpoint: HTTP/1.1 connections are lent to one request at a
//! time, driven by it, and come back when its response body has been read to the end; an h2c
//! connection is shared by all requests.
//!
//! Built on hyper's connection API rather than hyper-util's pooled client. That client looks
//! the pool up by URI on every request, runs every connection on a task of its own (a task hop
//! each way per request) and spawns one more task per HTTP/1.1 request to put the connection
//! back. Here the balancer has already picked the endpoint, the pool hangs off it, and the
//! request's own task drives its connection.
//!
//! The hand-written polling ([`Driven`], [`Conn::send`]) is what that costs, and it stays for
//! what BENCHMARKS.md measured: replacing hyper-util's pooled client took the proxy from 22.5 to
//! 23.3 µs of CPU per request to 20.9 to 23.9 µs, and callgrind from about 41,000 to 30,000
//! instructions per request (together with the header work of the same step); settling a
//! returned connection with a no-op waker took a later build from 34,328 to 31,960 instructions
//! per request. hyper-util's client is the library code to return to if those figures ever stop
//! holding.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response, uri::Authority};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use super::ProxyBody;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when they come back.
pub const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// Why no response came from an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The TCP connection took longer than the connect timeout.
    #[error("connect: no answer within {0:?}")]
    ConnectTimeout(Duration),
    /// The HTTP/2 handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// Sending the request or reading the response head failed.
    #[error("{0}")]
    Send(#[source] hyper::Error),
}

/// Every endpoint's connections, by address and protocol.
#[derive(Debug)]
pub struct Upstreams {
    pools: Mutex<HashMap<(SocketAddr, bool), Arc<Pool>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Where connections that run on a task of their own (h2c, upgrades) are spawned.
    tasks: TaskTracker,
}

impl Upstreams {
    /// Connections opened within `connect_timeout` and closed after `idle_timeout` unused;
    /// those with a task of their own run on `tasks`.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, tasks: TaskTracker) -> Self {
        Self {
            pools: Mutex::default(),
            connect_timeout,
            idle_timeout,
            tasks,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(SocketAddr, bool), Arc<Pool>>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool of `addr` (created on first use). Called when a route is built, not per request.
    pub fn pool(&self, addr: SocketAddr, h2c: bool) -> Arc<Pool> {
        self.lock()
            .entry((addr, h2c))
            .or_insert_with(|| {
                Arc::new(Pool {
                    addr,
                    h2c,
                    authority: Authority::try_from(addr.to_string().as_str())
                        .expect("a socket address is an authority"),
                    connect_timeout: self.connect_timeout,
                    tasks: self.tasks.clone(),
                    idle: Mutex::default(),
                    shared: Mutex::default(),
                })
            })
            .clone()
    }

    /// Closes connections idle for longer than the idle timeout, and forgets pools that no
    /// route uses and that hold no connection.
    pub fn reap(&self) {
        let mut pools = self.lock();
        for pool in pools.values() {
            pool.reap(self.idle_timeout);
        }
        pools.retain(|_, pool| Arc::strong_count(pool) > 1 || !pool.is_empty());
    }

    /// Runs [`Upstreams::reap`] every few seconds until `shutdown`.
    pub async fn reap_until(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let period =
            (self.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => self.reap(),
            }
        }
    }
}

/// An HTTP/1.1 connection polled by whoever holds it, not by a task of its own: the request
/// that borrows it drives it (in [`Conn::send`], then from the response body), so its socket
/// events wake the proxied request's task directly instead of hopping through a connection task.
/// In the pool nobody polls it; a connection the upstream closed meanwhile is noticed when the
/// next request is handed to it, and that request goes out again on a new connection.
pub struct Driven {
    sender: http1::SendRequest<ProxyBody>,
    /// `None` once the connection has ended: dropped at once, so that a request handed over
    /// but never written comes back to its sender (see [`Conn::send`]).
    conn: Option<http1::Connection<TokioIo<TcpStream>, ProxyBody>>,
}

impl std::fmt::Debug for Driven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driven")
            .field("ended", &self.conn.is_none())
            .finish()
    }
}

impl Driven {
    /// Moves the connection along (reads, writes, state changes); `true` while it is open.
    pub fn poll_conn(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = &mut self.conn
            && Pin::new(conn).poll(cx).is_ready()
        {
            self.conn = None;
        }
        self.conn.is_some()
    }

    /// Settles the connection after an exchange, with a waker that does nothing. The
    /// connection keeps the waker it was last polled with (for its socket, and for the next
    /// request's hand-over); left as the last borrower's, handing the next request over would
    /// wake that other task for nothing. The next borrower's first poll registers its own.
    fn settle(&mut self) {
        self.poll_conn(&mut Context::from_waker(std::task::Waker::noop()));
    }

    /// Ready for a request: usually at once (settled when it came back to the pool); else
    /// polls the connection until it wants one, or ends. One the upstream closed while idle may
    /// still look ready here: its request comes back unsent and goes out on a new connection.
    async fn ready(mut self: Box<Self>) -> Option<Box<Self>> {
        if self.sender.is_ready() {
            return Some(self);
        }
        let ok = std::future::poll_fn(|cx| {
            if !self.poll_conn(cx) {
                return Poll::Ready(false);
            }
            self.sender.poll_ready(cx).map(|r| r.is_ok())
        })
        .await;
        ok.then_some(self)
    }

    /// Done with one exchange and fit for another.
    pub fn reusable(&self) -> bool {
        self.conn.is_some() && !self.sender.is_closed()
    }
}

/// One endpoint's connections.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    h2c: bool,
    /// `addr` as the `:authority` of HTTP/2 requests.
    pub authority: Authority,
    connect_timeout: Duration,
    /// The sidecar's tasks, for connections that run on a task of their own. Such a task ends
    /// when its connection does: when the upstream closes it, or once every sender is gone
    /// (the pool with the proxy, at shutdown).
    tasks: TaskTracker,
    /// Boxed: a connection's state is large and moves from pool to request and back.
    idle: Mutex<Vec<(Box<Driven>, Instant)>>,
    shared: Mutex<Option<http2::SendRequest<ProxyBody>>>,
}

/// A connection to send one request on.
#[derive(Debug)]
pub enum Conn {
    /// HTTP/1.1, lent until the response body ends, driven by the borrower.
    H1(Box<Driven>),
    /// HTTP/1.1 on a task of its own, for an upgrade (the connection outlives the exchange as
    /// a tunnel); never pooled.
    Upgrade(http1::SendRequest<ProxyBody>),
    /// h2c, shared, on a task of its own.
    H2(http2::SendRequest<ProxyBody>),
}

/// The outcome of sending: a response, or an error with the request when it was never
/// written (a pooled connection found closed), so it can go out on another connection.
pub type Sent = Result<Response<Incoming>, (UpstreamError, Option<Request<ProxyBody>>)>;

impl Conn {
    /// Sends `req` and waits for the response head.
    pub async fn send(&mut self, req: Request<ProxyBody>) -> Sent {
        let unsent = |mut e: hyper::client::conn::TrySendError<Request<ProxyBody>>| {
            let req = e.take_message();
            (UpstreamError::Send(e.into_error()), req)
        };
        match self {
            Self::H1(driven) => {
                let mut response = std::pin::pin!(driven.sender.try_send_request(req));
                std::future::poll_fn(|cx| {
                    // The connection first (it writes the request and reads the answer), then
                    // the answer. A connection that ended has been dropped, which answers with
                    // an error, and with the request when it was never written.
                    driven.poll_conn(cx);
                    response.as_mut().poll(cx)
                })
                .await
                .map_err(unsent)
            }
            Self::Upgrade(sender) => sender.try_send_request(req).await.map_err(unsent),
            Self::H2(sender) => sender.try_send_request(req).await.map_err(unsent),
        }
    }
}

impl Pool {
    fn is_empty(&self) -> bool {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        idle.is_empty() && shared.is_none()
    }

    fn reap(&self, idle_timeout: Duration) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(driven, since)| driven.reusable() && since.elapsed() < idle_timeout);
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if shared.as_ref().is_some_and(http2::SendRequest::is_closed) {
            *shared = None;
        }
    }

    /// A connection ready for a request: the most recently used idle one that is still open,
    /// or a new one (always new when `fresh`, or for an `upgrade`).
    pub async fn checkout(&self, fresh: bool, upgrade: bool) -> Result<Conn, UpstreamError> {
        if self.h2c {
            if !fresh {
                let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(sender) = shared.as_ref().filter(|s| !s.is_closed()) {
                    return Ok(Conn::H2(sender.clone()));
                }
            }
            let io = self.connect().await?;
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(UpstreamError::Handshake)?;
            self.tasks.spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(%err, "h2c upstream connection ended");
                }
            });
            *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
            return Ok(Conn::H2(sender));
        }
        if upgrade {
            let io = self.connect().await?;
            let (sender, connection) = http1::handshake(io)
                .await
                .map_err(UpstreamError::Handshake)?;
            self.tasks.spawn(async move {
                if let Err(err) = connection.with_upgrades().await {
                    tracing::debug!(%err, "upstream connection ended");
                }
            });
            return Ok(Conn::Upgrade(sender));
        }
        if !fresh {
            loop {
                let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((driven, _)) = idle else { break };
                // Closed by the upstream while idle: dropped here, the next one is tried.
                if let Some(driven) = driven.ready().await {
                    return Ok(Conn::H1(driven));
                }
            }
        }
        let io = self.connect().await?;
        // A new connection takes its first request before it has been polled.
        // Flattened writes, as on the client side (`http::serve`).
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        Ok(Conn::H1(Box::new(Driven {
            sender,
            conn: Some(conn),
        })))
    }

    /// Takes back an HTTP/1.1 connection whose exchange is over.
    pub fn checkin(&self, mut driven: Box<Driven>) {
        driven.settle();
        if !driven.reusable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push((driven, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.connect_timeout))?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }
}
