//! What follows an answer's head: the upstream's body streamed to the client (its endpoint's
//! request count and its pooled connection held until the end), or, after `101 Switching
//! Protocols`, the bytes of the upgraded connection copied both ways.

use std::{
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use super::super::{
    BoxError, ProxyBody,
    balance::Stats,
    pool::{Driven, Pool},
};

/// A body with nothing in it.
pub(super) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Copies bytes both ways between an upgraded client connection and the upstream's, until
/// both sides close or the sidecar shuts down (a tunnel has no graceful close of its own).
pub(super) async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    shutdown: CancellationToken,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(err) => {
            tracing::debug!(%err, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Counts a request in flight on its endpoint until the response body is done or dropped.
pub(super) struct InFlight(Arc<Stats>);

impl InFlight {
    pub(super) fn new(stats: Arc<Stats>) -> Self {
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
pub(super) struct Tracked {
    inner: Incoming,
    _guard: InFlight,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The HTTP/1.1 connection it comes on: polled here while the body streams, returned to
    /// its pool once the body has ended.
    lease: Option<(Arc<Pool>, Box<Driven>)>,
    done: bool,
}

impl Tracked {
    /// `inner`, counted by `guard`, cut after `idle` without a frame; `lease` is the HTTP/1.1
    /// connection it arrives on, if it is pooled.
    pub(super) fn new(
        inner: Incoming,
        guard: InFlight,
        idle: Duration,
        lease: Option<(Arc<Pool>, Box<Driven>)>,
    ) -> Self {
        Self {
            inner,
            _guard: guard,
            idle,
            timer: None,
            lease,
            done: false,
        }
    }
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
