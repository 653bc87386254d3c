//! The HTTP server loop: accepts while fewer than `--max-connections` are open, serves
//! HTTP/1.1 and HTTP/2, and on shutdown stops accepting and lets open connections finish.
//! Every connection is under the deadlines of [`waypost_runtime::conn`]: its first request's
//! headers within `--header-read-timeout` of the accept (whatever the protocol: a client that
//! sends nothing, or only HTTP/2's preface, is dropped and counted), and a graceful close after
//! `--idle-timeout` without a new request. hyper's own HTTP/1 header timer bounds the wait for
//! each later request on an HTTP/1.1 keep-alive connection by `--header-read-timeout` too
//! (idle or slow, it cannot tell), and HTTP/2 connections are pinged so that a peer that
//! vanished is noticed. With TLS, the handshake runs on the connection's own task (a slow handshake
//! never holds up accepting) and must finish within the header read timeout too.
//!
//! Written on hyper-util's connection builder rather than `axum::serve`, which offers neither
//! a header timeout nor a connection cap.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, service::Service as _};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;
use waypost_runtime::conn::{
    Activity, Connections, Counted, Deadlines, Ended, H2_KEEPALIVE_INTERVAL, H2_KEEPALIVE_TIMEOUT,
};

use crate::metrics::Metrics;

/// hyper's limits on a request head, set above ours (`waypost_model::limits`) so that ours
/// answer first, with a problem body. (Its limit of 100 header fields stays as it is: setting
/// any `max_headers` makes it allocate and fill a header array for every request, about 1,200
/// instructions, 2.5% of a `/discover` under callgrind.)
const LIBRARY_MAX_HEAD_BYTES: usize = 64 * 1024;
/// The HTTP/2 counterpart (hyper's default is 16 KiB, counted with 32 bytes more per field).
const LIBRARY_MAX_HEADER_LIST: u32 = 64 * 1024;

/// The server's connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown`, then waits for open connections to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = Connections::new(Deadlines {
        first_request: limits.header_read_timeout,
        idle: limits.idle_timeout,
    });
    let tasks = TaskTracker::new();
    // Deadlines hold until the last connection is drained, not only until shutdown begins.
    let sweeping = CancellationToken::new();
    let sweeper = tokio::spawn(connections.clone().sweep(sweeping.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Above our own limits (api/limits.rs), which answer with a problem body; beyond
        // these, hyper answers a bare 431 or closes.
        .max_buf_size(LIBRARY_MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
        .max_header_list_size(LIBRARY_MAX_HEADER_LIST);
    loop {
        // At the cap, stop accepting: new connections wait in the listen backlog.
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let Some((stream, peer)) = waypost_runtime::net::accept(&listener, &shutdown).await else {
            break;
        };
        let accepted = std::time::Instant::now();
        let activity = Activity::default();
        let (seen, served_requests) = (activity.clone(), activity.clone());
        let app = TowerToHyperService::new(app.clone().map_request(
            move |mut req: axum::http::Request<Incoming>| {
                // Only the write limits read it: reads skip the insert.
                if req.method() == axum::http::Method::POST {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                }
                req
            },
        ));
        // Counted when hyper calls the service (for HTTP/2 too, before the stream's task
        // is spawned), and in flight until the answer's body is done.
        let app = hyper::service::service_fn(move |req| {
            let in_flight = seen.begin();
            let answer = app.call(req);
            async move {
                answer
                    .await
                    .map(|res| res.map(|body| Counted::new(body, in_flight)))
            }
        });
        let builder = builder.clone();
        let tls = tls.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let connections = connections.clone();
        metrics.http_connections.inc();
        tasks.spawn(async move {
            let served = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), app);
                    connections.watch(conn, activity, accepted).await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    // A handshake still going at shutdown is dropped, not waited for.
                    let handshake = tokio::select! {
                        done = handshake => done,
                        () = shutdown.cancelled() => Ok(Err(std::io::Error::other("shutting down"))),
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            let conn =
                                builder.serve_connection_with_upgrades(TokioIo::new(stream), app);
                            connections.watch(conn, activity, accepted).await
                        }
                        Ok(Err(err)) => {
                            metrics.tls_handshake_failures.inc();
                            tracing::debug!(%err, %peer, "TLS handshake failed");
                            Ended::Served(Ok(()))
                        }
                        Err(_) => {
                            metrics.tls_handshake_failures.inc();
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ended::Served(Ok(()))
                        }
                    }
                }
            };
            let result = match served {
                Ended::NoRequest => {
                    metrics.header_timeouts.inc();
                    tracing::debug!(%peer, "no request within the header read timeout: closed");
                    Ok(())
                }
                Ended::Idle(result) => {
                    metrics.idle_closed.inc();
                    result
                }
                Ended::Served(Err(err)) => {
                    // hyper's HTTP/1 header timer also runs while a keep-alive connection
                    // waits for its next request: after a first request, that is an idle
                    // close. (On HTTP/2 a timeout is an unanswered keep-alive ping, a peer
                    // gone silent after its requests: counted as idle too.)
                    let timed_out = err
                        .downcast_ref::<hyper::Error>()
                        .is_some_and(hyper::Error::is_timeout);
                    if timed_out && served_requests.requests() == 0 {
                        metrics.header_timeouts.inc();
                    } else if timed_out {
                        metrics.idle_closed.inc();
                    }
                    Err(err)
                }
                Ended::Served(result) => result,
            };
            if let Err(err) = result {
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
            metrics.http_connections.dec();
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    tasks.close();
    tasks.wait().await;
    sweeping.cancel();
    let _ = sweeper.await;
}
