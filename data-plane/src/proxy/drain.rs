//! Graceful close of the HTTP proxy's client connections at shutdown, for one atomic load per
//! poll of a connection.
//!
//! hyper-util's `GracefulShutdown` polls a watch channel every time a connection is polled,
//! which callgrind put at about 1,000 instructions per proxied request, 3% of the whole
//! (BENCHMARKS.md). Here a connection registers its task's waker once, when first polled (a
//! spawned task keeps the same task behind every waker it is given), and then only reads a flag.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

/// A connection that can stop taking requests and close once the answer in progress is done.
/// (hyper-util's trait of the same purpose is sealed and leaves out hyper's HTTP/1.1 connection
/// with upgrades.)
pub(crate) trait GracefulConnection: Future {
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

/// The connections to close when shutdown starts.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    closing: AtomicBool,
    next: AtomicU64,
    wakers: Mutex<HashMap<u64, Waker>>,
}

impl Drain {
    /// `conn`, closed gracefully (the answer in progress finishes, keep-alive ends) once
    /// [`Drain::close`] is called.
    pub(crate) fn watch<C: GracefulConnection>(self: &Arc<Self>, conn: C) -> Watched<C> {
        Watched {
            conn: Box::pin(conn),
            drain: self.clone(),
            key: None,
            closing: false,
        }
    }

    /// Starts closing every watched connection, and those watched later.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *self.lock());
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waker>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection that closes gracefully when its [`Drain`] does.
pub(crate) struct Watched<C> {
    conn: Pin<Box<C>>,
    drain: Arc<Drain>,
    /// Its waker's key in the drain, once registered.
    key: Option<u64>,
    closing: bool,
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        if !this.closing {
            if this.key.is_none() {
                let key = this.drain.next.fetch_add(1, Ordering::Relaxed);
                this.drain.lock().insert(key, cx.waker().clone());
                this.key = Some(key);
            }
            // Read after the waker is in: a close that took the wakers before it went in has
            // set the flag first, so it is seen here.
            if this.drain.closing.load(Ordering::Acquire) {
                this.closing = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.as_mut().poll(cx)
    }
}

impl<C> Drop for Watched<C> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.drain.lock().remove(&key);
        }
    }
}
