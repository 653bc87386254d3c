//! The life of an accepted HTTP connection, for both servers (the control plane's API and the
//! sidecar's proxy): a deadline for its first request, an idle timeout, and a graceful close
//! at shutdown.
//!
//! hyper enforces none of the first two for us: its HTTP/1 header timeout starts only once
//! some bytes have arrived, the step that tells HTTP/1 from HTTP/2 waits forever, and HTTP/2
//! has no idle timeout. So one client that connects and sends nothing, or only HTTP/2's
//! preface, held a connection slot for ever (issue 12).
//!
//! Every connection is entered in one table per server. A sweeper task looks at the table a
//! few times a second and marks connections that must go: no request within the first
//! deadline (closed at once: there is no request to answer), or no request in flight and no
//! new one for the idle timeout (closed gracefully: HTTP/1.1 closes, HTTP/2 gets a GOAWAY).
//! Shutdown marks them all for a graceful close (an answer in progress finishes), and the
//! sweeper goes on dropping those that never sent a request until the drain is over. A marked
//! connection's task is woken through the waker it left in the table when first polled (a
//! spawned task keeps the same task behind every waker it is given).
//!
//! The per-request cost is a few uncontended atomic operations on the connection's own counters
//! ([`Activity::begin`] and the [`InFlight`] guard its answer carries; the proxy, whose answers
//! are short, only counts, with [`Activity::request`]), the per-poll cost one atomic load. A timer per connection polled on every wake, or hyper-util's
//! `GracefulShutdown`, which polls a watch channel on every poll, cost the sidecar's proxy
//! about 1,000 instructions per request, 3% of the whole (BENCHMARKS.md, issue 5).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

/// How often a server sends HTTP/2 keep-alive pings on a connection; a peer that does not
/// answer within [`H2_KEEPALIVE_TIMEOUT`] is gone (a half-open TCP connection after a crash or
/// a cut network) and its connection is closed.
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// See [`H2_KEEPALIVE_INTERVAL`].
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that can stop taking requests and close once the answer in progress is done.
/// (hyper-util's trait of the same purpose is sealed and leaves out hyper's HTTP/1.1 connection
/// with upgrades.)
pub trait GracefulConnection: Future {
    /// Starts the graceful close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> GracefulConnection for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, E, B> GracefulConnection
    for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// A server's connection deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From accept until the first request's headers are in.
    pub first_request: Duration,
    /// With no new request for this long, the connection is closed gracefully. (It is checked
    /// on the sweeper's ticks, so a connection goes between one and two of these after its
    /// last request began.)
    pub idle: Duration,
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<T> {
    /// The connection ended by itself, or after shutdown asked it to.
    Served(T),
    /// It was closed gracefully for being idle.
    Idle(T),
    /// No request arrived within the first deadline: it was dropped.
    NoRequest,
}

const OPEN: u8 = 0;
const CLOSE_GRACEFULLY: u8 = 1;
const IDLE: u8 = 2;
const DROP: u8 = 3;

/// What a connection and the table share.
#[derive(Debug, Default)]
struct Shared {
    requests: AtomicU64,
    in_flight: AtomicU64,
    verdict: AtomicU8,
}

impl Shared {
    /// Sets the verdict unless one is set already (the first one stands), except that a
    /// connection still without a request may always be dropped.
    fn mark(&self, verdict: u8) {
        let _ = self
            .verdict
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now == OPEN || (verdict == DROP && now == CLOSE_GRACEFULLY)).then_some(verdict)
            });
    }
}

/// Counts a connection's requests; clone it into the connection's service.
#[derive(Debug, Clone, Default)]
pub struct Activity(Arc<Shared>);

impl Activity {
    /// A request's headers are in: call it from the service's `call`, once per request, and
    /// keep the guard with the answer ([`Counted`]) until its body is done, so that a long
    /// answer is not taken for idleness.
    pub fn begin(&self) -> InFlight {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.0.clone())
    }

    /// A request's headers are in, counted without following its answer: the cheaper form,
    /// for a server whose answers rarely outlast the idle timeout. One that does is closed
    /// gracefully once it is done rather than kept for another request. (In the proxy the
    /// guard of [`Activity::begin`] cost about 500 instructions per request: with it, the
    /// service's future was no longer built in place but moved into hyper's dispatcher.)
    #[inline]
    pub fn request(&self) {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests so far.
    pub fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::Relaxed)
    }
}

/// One request of a connection, in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request in flight until the body is done (hyper drops it
/// after its last frame) or dropped with the connection.
#[derive(Debug)]
pub struct Counted<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Counted<B> {
    /// `body`, answering the request of `in_flight`.
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

struct Entry {
    waker: Waker,
    shared: Arc<Shared>,
    accepted: Instant,
    /// The request count the sweeper last saw, and when it last changed.
    seen: u64,
    since: Instant,
}

/// One server's open connections.
pub struct Connections {
    deadlines: Deadlines,
    closing: AtomicBool,
    next: AtomicU64,
    table: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("deadlines", &self.deadlines)
            .field("open", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Connections {
    /// An empty table.
    pub fn new(deadlines: Deadlines) -> Arc<Self> {
        Arc::new(Self {
            deadlines,
            closing: AtomicBool::new(false),
            next: AtomicU64::new(0),
            table: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `conn`, accepted at `accepted`, whose service calls `activity.request()` for every
    /// request.
    pub fn watch<C: GracefulConnection>(
        self: &Arc<Self>,
        conn: C,
        activity: Activity,
        accepted: Instant,
    ) -> Watched<C> {
        Watched {
            conn: Box::pin(conn),
            connections: self.clone(),
            shared: activity.0,
            accepted,
            key: None,
            state: OPEN,
        }
    }

    /// Starts closing every connection gracefully, and those watched later. The sweeper, while
    /// it runs, still drops the ones that never send a request.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        for entry in self.lock().values() {
            entry.shared.mark(CLOSE_GRACEFULLY);
            entry.waker.wake_by_ref();
        }
    }

    /// Marks the connections past a deadline, every tick until `shutdown` (give it a token
    /// of its own, cancelled once the connections are drained, so that deadlines hold during
    /// the drain too).
    pub async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let shortest = self.deadlines.first_request.min(self.deadlines.idle);
        let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => self.sweep_at(Instant::now()),
            }
        }
    }

    fn sweep_at(&self, now: Instant) {
        let Deadlines {
            first_request,
            idle,
        } = self.deadlines;
        let mut table = self.lock();
        table.retain(|_, entry| {
            let requests = entry.shared.requests.load(Ordering::Relaxed);
            let busy = entry.shared.in_flight.load(Ordering::Relaxed) > 0;
            let closing = entry.shared.verdict.load(Ordering::Acquire) != OPEN;
            let verdict = if requests == 0 {
                (now.duration_since(entry.accepted) >= first_request).then_some(DROP)
            } else if closing {
                // Already closing gracefully, with a request: nothing more to decide.
                None
            } else if requests != entry.seen || busy {
                entry.seen = requests;
                entry.since = now;
                None
            } else {
                (now.duration_since(entry.since) >= idle).then_some(IDLE)
            };
            let Some(verdict) = verdict else {
                return true;
            };
            entry.shared.mark(verdict);
            entry.waker.wake_by_ref();
            false
        });
    }
}

/// A connection under its server's deadlines and drain.
pub struct Watched<C> {
    conn: Pin<Box<C>>,
    connections: Arc<Connections>,
    shared: Arc<Shared>,
    accepted: Instant,
    /// Its key in the table, once entered.
    key: Option<u64>,
    /// The verdict acted upon.
    state: u8,
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = Ended<C::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.key.is_none() && this.state == OPEN {
            let key = this.connections.next.fetch_add(1, Ordering::Relaxed);
            this.connections.lock().insert(
                key,
                Entry {
                    waker: cx.waker().clone(),
                    shared: this.shared.clone(),
                    accepted: this.accepted,
                    seen: 0,
                    since: this.accepted,
                },
            );
            this.key = Some(key);
            // Read after the entry is in: a close that emptied the table before it went in
            // has set the flag first, so it is seen here.
            if this.connections.closing.load(Ordering::Acquire) {
                this.shared.mark(CLOSE_GRACEFULLY);
            }
        }
        match this.shared.verdict.load(Ordering::Acquire) {
            OPEN => {}
            // A request may have come in since the sweeper looked: then it is answered, and
            // the connection closes gracefully after it.
            DROP if this.shared.requests.load(Ordering::Relaxed) == 0 => {
                return Poll::Ready(Ended::NoRequest);
            }
            verdict if this.state == OPEN => {
                this.state = if verdict == DROP {
                    CLOSE_GRACEFULLY
                } else {
                    verdict
                };
                this.conn.as_mut().graceful_shutdown();
            }
            _ => {}
        }
        this.conn.as_mut().poll(cx).map(|output| {
            if this.state == IDLE {
                Ended::Idle(output)
            } else {
                Ended::Served(output)
            }
        })
    }
}

impl<C> Drop for Watched<C> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.connections.lock().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that never ends by itself and records a graceful close.
    struct Held(Arc<AtomicBool>);

    impl Future for Held {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.0.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl GracefulConnection for Held {
        fn graceful_shutdown(self: Pin<&mut Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    /// A connection that records a graceful close but does not end.
    struct Stuck(Arc<AtomicBool>);

    impl Future for Stuck {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            Poll::Pending
        }
    }

    impl GracefulConnection for Stuck {
        fn graceful_shutdown(self: Pin<&mut Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    fn table() -> Arc<Connections> {
        Connections::new(Deadlines {
            first_request: Duration::from_secs(5),
            idle: Duration::from_secs(30),
        })
    }

    fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn silent_connections_are_dropped_after_the_first_deadline() {
        let t = table();
        let mut silent = t.watch(Held(Arc::default()), Activity::default(), Instant::now());
        assert!(poll(&mut silent).is_pending());
        let start = silent.accepted;
        t.sweep_at(start + Duration::from_secs(4));
        assert!(poll(&mut silent).is_pending(), "not before the deadline");
        t.sweep_at(start + Duration::from_secs(5));
        assert_eq!(poll(&mut silent), Poll::Ready(Ended::NoRequest));
        drop(silent);
        assert!(t.lock().is_empty());
    }

    #[test]
    fn idle_connections_close_gracefully_and_busy_ones_stay() {
        let t = table();
        let (idle, busy, long) = (
            Activity::default(),
            Activity::default(),
            Activity::default(),
        );
        let mut a = t.watch(Held(Arc::default()), idle.clone(), Instant::now());
        let mut b = t.watch(Held(Arc::default()), busy.clone(), Instant::now());
        let mut c = t.watch(Held(Arc::default()), long.clone(), Instant::now());
        assert!(poll(&mut a).is_pending() && poll(&mut b).is_pending());
        assert!(poll(&mut c).is_pending());
        let start = a.accepted;
        idle.request();
        busy.request();
        // One answer that takes longer than the idle timeout (a watch stream, say).
        let streaming = long.begin();
        t.sweep_at(start + Duration::from_secs(1));
        for s in (10..=40).step_by(10) {
            busy.request();
            t.sweep_at(start + Duration::from_secs(s));
        }
        assert_eq!(poll(&mut a), Poll::Ready(Ended::Idle(())));
        assert!(
            poll(&mut b).is_pending(),
            "a connection with new requests stays"
        );
        assert!(poll(&mut c).is_pending(), "an answer in progress keeps it");
        // Once the answer is done, idleness counts from there.
        drop(streaming);
        t.sweep_at(start + Duration::from_secs(50));
        assert!(poll(&mut c).is_pending());
        t.sweep_at(start + Duration::from_secs(81));
        assert_eq!(poll(&mut c), Poll::Ready(Ended::Idle(())));
    }

    #[test]
    fn close_drains_every_connection_and_later_ones() {
        let t = table();
        let mut a = t.watch(Held(Arc::default()), Activity::default(), Instant::now());
        assert!(poll(&mut a).is_pending());
        t.close();
        assert_eq!(poll(&mut a), Poll::Ready(Ended::Served(())));
        let mut late = t.watch(Held(Arc::default()), Activity::default(), Instant::now());
        assert_eq!(poll(&mut late), Poll::Ready(Ended::Served(())));
    }

    /// A connection that never sends a request and ignores the graceful close (an HTTP/1
    /// connection with half a request line) is still dropped during the drain.
    #[test]
    fn the_first_deadline_holds_during_the_drain() {
        let t = table();
        let stuck = Arc::new(AtomicBool::new(false));
        let mut a = t.watch(Stuck(stuck.clone()), Activity::default(), Instant::now());
        assert!(poll(&mut a).is_pending());
        let start = a.accepted;
        t.close();
        assert!(poll(&mut a).is_pending());
        assert!(stuck.load(Ordering::Acquire), "asked to close gracefully");
        t.sweep_at(start + Duration::from_secs(5));
        assert_eq!(poll(&mut a), Poll::Ready(Ended::NoRequest));
    }

    /// A request that arrived after the sweeper looked is answered, not cut.
    #[test]
    fn a_late_first_request_is_not_dropped() {
        let t = table();
        let activity = Activity::default();
        let done = Arc::new(AtomicBool::new(false));
        let mut a = t.watch(Held(done.clone()), activity.clone(), Instant::now());
        assert!(poll(&mut a).is_pending());
        t.sweep_at(a.accepted + Duration::from_secs(5));
        let _request = activity.begin();
        assert_eq!(poll(&mut a), Poll::Ready(Ended::Served(())));
        assert!(
            done.load(Ordering::Acquire),
            "closed gracefully after the answer"
        );
    }
}
