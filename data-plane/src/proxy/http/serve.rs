//! The proxy's side towards clients: accepting connections (at most `max_client_connections`
//! at once), telling HTTP/2 with prior knowledge from HTTP/1.1, holding each connection to the
//! deadlines of [`waypost_runtime::conn`], and closing them gracefully at shutdown.

use std::{convert::Infallible, sync::Arc};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use waypost_runtime::conn::{
    Activity, Connections, Deadlines, Ended, H2_KEEPALIVE_INTERVAL, H2_KEEPALIVE_TIMEOUT,
};

use super::{super::BoxError, HttpProxy};

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves HTTP/1.1 and HTTP/2 (h2c, prior knowledge) on `listener` until the proxy's shutdown,
/// then closes open connections gracefully and returns once they are done (the sidecar's drain
/// bounds the wait). Client connections are under the deadlines of [`waypost_runtime::conn`]:
/// the first request within `client_header_timeout` of the accept, then a graceful close after
/// `idle_timeout` without a new one.
pub(crate) async fn serve(listener: TcpListener, proxy: Arc<HttpProxy>) {
    let shutdown = proxy.shutdown.clone();
    proxy
        .tasks
        .spawn(proxy.upstreams.clone().reap_until(shutdown.clone()));
    proxy
        .tasks
        .spawn(proxy.deadlines.clone().run(shutdown.clone()));
    let drain = Connections::new(Deadlines {
        first_request: proxy.config.client_header_timeout,
        idle: proxy.config.idle_timeout,
    });
    // Owned here, so that this function knows when the last of its connections is done.
    let mut connections = JoinSet::new();
    // Deadlines hold until the last connection is drained, not only until shutdown begins.
    let sweeping = CancellationToken::new();
    let sweeper = proxy.tasks.spawn(drain.clone().sweep(sweeping.clone()));
    let drain_deadline = proxy.config.client_header_timeout;
    // One write(2) of a copied head and body instead of writev(2) of the pieces: answers are
    // mostly small, and the copy costs less than the vectored call (BENCHMARKS.md).
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.writev(false);
    let mut either = auto::Builder::new(TokioExecutor::new());
    either.http1().writev(false);
    either
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    let slots = Arc::new(tokio::sync::Semaphore::new(
        proxy.config.max_client_connections,
    ));
    loop {
        // At the cap, stop accepting: new connections wait in the listen backlog.
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let Some((stream, client)) = waypost_runtime::net::accept(&listener, &shutdown).await
        else {
            break;
        };
        let proxy = proxy.clone();
        let metrics = proxy.metrics.clone();
        // X-Forwarded-For names the same address for every request of the connection.
        let client = ::http::HeaderValue::from_str(&client.ip().to_string())
            .expect("an IP address is a header value");
        let accepted = std::time::Instant::now();
        let first_request = drain_deadline;
        let activity = Activity::default();
        let requests = activity.clone();
        let service = service_fn(move |req| {
            // Counted, not followed to the end of its answer (see `Activity::request`).
            requests.request();
            let proxy = proxy.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, client).await) }
        });
        let (http1, either, drain, shutdown) = (
            http1.clone(),
            either.clone(),
            drain.clone(),
            shutdown.clone(),
        );
        connections.spawn(async move {
            let _slot = slot;
            // HTTP/1.1 unless the client opens with HTTP/2's preface (h2c, prior knowledge).
            // Peeking leaves the bytes in the socket, so an HTTP/1.1 connection is served
            // straight from it, without the layer that hyper-util's auto connection puts under
            // every read to replay what it looked at. h2c, and the start of a preface that has
            // not all arrived yet, go to the auto connection, which reads the rest.
            let mut head = [0u8; H2_PREFACE.len()];
            let peek = tokio::time::timeout(first_request, stream.peek(&mut head));
            let peeked = tokio::select! {
                peeked = peek => peeked,
                () = shutdown.cancelled() => return,
            };
            let ended = match peeked {
                Ok(Ok(0) | Err(_)) => return,
                // Not one byte within the deadline.
                Err(_) => Ended::NoRequest,
                Ok(Ok(n)) if !H2_PREFACE.starts_with(&head[..n]) => {
                    let connection = http1
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    match drain.watch(connection, activity, accepted).await {
                        Ended::Served(r) => Ended::Served(r.map_err(BoxError::from)),
                        Ended::Idle(r) => Ended::Idle(r.map_err(BoxError::from)),
                        Ended::NoRequest => Ended::NoRequest,
                    }
                }
                Ok(Ok(_)) => {
                    let connection = either
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    drain.watch(connection, activity, accepted).await
                }
            };
            let result = match ended {
                Ended::Served(result) => result,
                Ended::Idle(result) => {
                    metrics.proxy_client_idle_closed.inc();
                    result
                }
                Ended::NoRequest => {
                    metrics.proxy_client_header_timeouts.inc();
                    tracing::debug!("no request within the client header timeout: closed");
                    return;
                }
            };
            if let Err(err) = result {
                tracing::debug!(%err, "proxy connection ended with an error");
            }
        });
        // Forget finished connections, so that the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    drain.close();
    while connections.join_next().await.is_some() {}
    sweeping.cancel();
    let _ = sweeper.await;
}
