//! The proxies: HTTP, TCP on explicit routes, and TCP on services' virtual IPs. They read the same snapshot as DNS
//! and keep their own facts about instances (in flight, failures, ejections) to themselves.

pub mod balance;
mod drain;
pub mod error;
pub mod http;
pub mod pool;
pub mod tcp;
pub mod vips;

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::{
    balance::{Outlier, Policy},
    drain::Drain,
    http::HttpProxy,
};

/// Errors carried by proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of the proxy's requests and answers: streamed, never buffered whole.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The proxies' settings (part of the sidecar's [`Config`](crate::Config)).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Also route `/<service>/...` when the Host names no service.
    pub route_by_path: bool,
    /// The default balancing policy (instances may name one in `waypost.balance` metadata).
    pub balance: Policy,
    /// Connecting to an instance.
    pub connect_timeout: Duration,
    /// From sending a request until the response headers arrive.
    pub request_timeout: Duration,
    /// A response body with no data for this long is cut; idle pooled connections close.
    pub idle_timeout: Duration,
    /// When failing instances are ejected, and for how long.
    pub outlier: Outlier,
    /// Below this share of usable instances, balance over all of them.
    pub panic_threshold: f64,
    /// Retries may add at most this share of requests.
    pub retry_budget: f64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            route_by_path: false,
            balance: Policy::LeastRequest,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            outlier: Outlier {
                failures: 5,
                base: Duration::from_secs(10),
                max: Duration::from_secs(300),
            },
            panic_threshold: 0.5,
            retry_budget: 0.2,
        }
    }
}

/// Serves HTTP/1.1 and HTTP/2 (h2c, prior knowledge) on `listener` until `shutdown`, then lets
/// open connections finish within `grace`.
pub(crate) async fn serve_http(
    listener: TcpListener,
    proxy: Arc<HttpProxy>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    tokio::spawn(proxy.upstreams.clone().reap_until(shutdown.clone()));
    tokio::spawn(proxy.deadlines.clone().run(shutdown.clone()));
    let drain = Arc::new(Drain::default());
    let connections = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // One write(2) of a copied head and body instead of writev(2) of the pieces: answers are
    // mostly small, and the copy costs less than the vectored call (BENCHMARKS.md).
    builder.http1().writev(false);
    loop {
        let Some((stream, client)) = waypost_runtime::net::accept(&listener, &shutdown).await
        else {
            break;
        };
        let proxy = proxy.clone();
        // X-Forwarded-For names the same address for every request of the connection.
        let client = ::http::HeaderValue::from_str(&client.ip().to_string())
            .expect("an IP address is a header value");
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, client).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = drain.watch(connection);
        connections.spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "proxy connection ended with an error");
            }
        });
    }
    drop(listener);
    drain.close();
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("proxy connections outlived the grace period");
    }
}
