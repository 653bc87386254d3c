//! DNS over TCP (RFC 7766), accepted here instead of by hickory's `Server`, so that each
//! connection is held to what it delivers.
//!
//! hickory's own TCP listener resets its idle timer on every complete length-prefixed frame,
//! parseable or not, and has no connection cap: a client sending a well-framed garbage frame
//! now and then holds a connection (and a file descriptor) forever. Here a connection must
//! deliver a whole DNS query within [`TcpLimits::idle_timeout`] of its accept or of its last
//! answered query, and at most [`TcpLimits::max_connections`] are served at once. The framing
//! (hickory's `TcpStream`), the parsing (`Request::from_bytes`) and the answering (our
//! [`Handler`], through hickory's `ResponseHandle`) are hickory's and ours as on UDP.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::StreamExt;
use hickory_proto::op::MessageType;
use hickory_server::{
    net::{
        runtime::{TokioTime, iocompat::AsyncIoTokioAsStd},
        tcp::TcpStream as FramedStream,
        xfer::{BufDnsStreamHandle, Protocol},
    },
    server::{Request, RequestHandler, ResponseHandle},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::handler::Handler;
use crate::metrics::CloseLabel;

/// Queries on one connection are answered one after another (as hickory does, so that one
/// client cannot fan out work), so at most one answer waits to be written; a little room
/// costs nothing.
const RESPONSE_BUFFER: usize = 4;

/// After a failed `accept` (typically out of file descriptors), wait this long before the
/// next, so the loop does not spin while nothing can be accepted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Limits on DNS-over-TCP connections (settings `dns_tcp_idle_timeout` and
/// `dns_tcp_max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// A connection that has not delivered a complete, well-formed query this long after its
    /// accept or its last answered query is closed. Waiting to write an answer to a client
    /// that does not read counts too.
    pub idle_timeout: Duration,
    /// Connections served at once. Beyond it, new connections stay in the kernel's listen
    /// backlog (holding no descriptor of ours) until one closes, rather than being refused:
    /// a legitimate client is then served late rather than not at all, while an idle one
    /// frees its place within `idle_timeout`.
    pub max_connections: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            // As hickory's listener had it: ample for a resolver that keeps a connection open
            // between queries, short enough that a silent client lets go soon.
            idle_timeout: Duration::from_secs(10),
            // Half of the usual soft limit of 1,024 descriptors, so a flood of DNS connections
            // leaves room for the proxies and the control-plane stream. TCP is DNS's fallback
            // for truncated answers: a host's resolvers need far fewer at once.
            max_connections: 512,
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// The client closed it, or it failed (reset, closed mid-frame).
    ByClient,
    /// No complete query within the idle timeout.
    Timeout,
    /// A frame that is not a DNS query.
    Malformed,
    /// The sidecar is shutting down.
    Shutdown,
}

/// Accepts DNS-over-TCP connections on `listener` until `shutdown`, each answered by
/// `handler` within `limits`. Open connections are dropped when it returns.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // A place first, then accept: while none is free, connections wait in the backlog.
        let place = tokio::select! {
            place = places.clone().acquire_owned() => place,
            () = shutdown.cancelled() => break,
        };
        // The semaphore is never closed.
        let Ok(place) = place else { break };
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "cannot accept a DNS TCP connection");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        connections.spawn(serve_counted(
            socket,
            peer,
            handler.clone(),
            limits.idle_timeout,
            shutdown.clone(),
            place,
        ));
        // Forget finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
}

/// Serves one connection, counts why the sidecar closed it, then frees its `place`.
async fn serve_counted(
    socket: TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    idle_timeout: Duration,
    shutdown: CancellationToken,
    place: OwnedSemaphorePermit,
) {
    let metrics = handler.metrics.clone();
    metrics.dns_tcp_connections.inc();
    let (mut frames, responses) = FramedStream::from_stream_with_buffer_size(
        AsyncIoTokioAsStd(socket),
        peer,
        RESPONSE_BUFFER,
    );
    let closed = tokio::select! {
        closed = connection(&mut frames, &responses, peer, &handler, idle_timeout) => closed,
        () = shutdown.cancelled() => Closed::Shutdown,
    };
    let reason = match closed {
        Closed::Timeout => Some("timeout"),
        Closed::Malformed => Some("malformed"),
        Closed::ByClient | Closed::Shutdown => None,
    };
    if let Some(reason) = reason {
        tracing::debug!(%peer, reason, "closing a DNS TCP connection");
        metrics
            .dns_tcp_closed
            .get_or_create(&CloseLabel { reason })
            .inc();
    }
    // Counted before the socket closes, so a client that sees the close finds it in /metrics;
    // the place is given back only once the descriptor is.
    drop(frames);
    drop(responses);
    metrics.dns_tcp_connections.dec();
    drop(place);
}

/// Serves one connection until the client closes it or breaks a rule.
async fn connection(
    frames: &mut FramedStream<AsyncIoTokioAsStd<TcpStream>>,
    responses: &BufDnsStreamHandle,
    peer: SocketAddr,
    handler: &Handler,
    idle_timeout: Duration,
) -> Closed {
    // Bounded: each turn answers one query, and the connection ends at the first idle
    // timeout, so a client keeps it only by sending well-formed queries.
    loop {
        // Polling the stream also writes the previous answer (hickory's stream writes its
        // queued answers before it reads), so a client that does not read times out too.
        let frame = match tokio::time::timeout(idle_timeout, frames.next()).await {
            Err(_) => return Closed::Timeout,
            Ok(None) => return Closed::ByClient,
            Ok(Some(Err(err))) => {
                tracing::debug!(%peer, %err, "DNS TCP connection failed");
                return Closed::ByClient;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let (bytes, _) = frame.into_parts();
        // A frame that is not a query closes the connection at once rather than being answered
        // FORMERR (as on UDP): on a stream, garbage means the peer does not speak DNS or its
        // framing is lost, so neither the next length prefix nor the header's ID can be
        // trusted, and answering would only keep a broken client talking. A response message is
        // no request either (hickory drops those to prevent reflection).
        let request = match Request::from_bytes(bytes, peer, Protocol::Tcp) {
            Ok(request) if request.metadata.message_type == MessageType::Query => request,
            _ => return Closed::Malformed,
        };
        let response = ResponseHandle::new(peer, responses.clone(), Protocol::Tcp);
        handler
            .handle_request::<_, TokioTime>(&request, response)
            .await;
    }
}
