//! The HTTP server loop: accepts while fewer than `--max-connections` are open, gives every
//! connection `--header-read-timeout` to send each request's headers (a client too slow is
//! disconnected: there is no request to answer yet), serves HTTP/1.1 and HTTP/2, and on
//! shutdown stops accepting and lets open connections finish. With TLS, the handshake runs on
//! the connection's own task (a slow handshake never holds up accepting) and must finish within
//! the header read timeout too.
//!
//! Written on hyper-util's connection builder rather than `axum::serve`, which offers neither
//! a header timeout nor a connection cap.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// The server's connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
}

type Builder = auto::Builder<TokioExecutor>;

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
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
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
        let app = app
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                // Only the write limits read it: reads skip the insert.
                if req.method() == axum::http::Method::POST {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                }
                req
            });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        metrics.http_connections.inc();
        tokio::spawn(async move {
            let served = match tls {
                None => connection(&builder, stream, app, watcher).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    // A handshake still going at shutdown is dropped, not waited for.
                    let handshake = tokio::select! {
                        done = handshake => done,
                        () = shutdown.cancelled() => Ok(Err(std::io::Error::other("shutting down"))),
                    };
                    match handshake {
                        Ok(Ok(stream)) => connection(&builder, stream, app, watcher).await,
                        Ok(Err(err)) => {
                            metrics.tls_handshake_failures.inc();
                            tracing::debug!(%err, %peer, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            metrics.tls_handshake_failures.inc();
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(err) = served {
                let timed_out = err
                    .downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout);
                if timed_out {
                    metrics.header_timeouts.inc();
                }
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
            metrics.http_connections.dec();
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves one connection (plain or TLS) until it ends or shutdown drains it.
async fn connection<I, S>(
    builder: &Builder,
    io: I,
    app: S,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            axum::http::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(app));
    watcher.watch(conn.into_owned()).await
}
