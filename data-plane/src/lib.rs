//! `waypost-sidecar`, the per-host data plane. It follows the control plane's change stream,
//! keeps an immutable snapshot of every service, and answers DNS for them.
//!
//! # Layout
//! - [`config`]: the one `Config` (flags > `WAYPOST_*` env > TOML), loaded before binding.
//! - `subscription`: the only writer: change stream → the snapshot module's mirror → published
//!   [`snapshot::Snapshot`] → saved to disk ([`persist`]); its [`StreamStatus`].
//! - [`snapshot`]: the snapshot and its lock-free read handle, [`snapshot::Snapshots`].
//! - [`dns`]: the hickory server and our handler (names, records, forwarding).
//! - `admin`: `/health`, `/ready`, `/metrics`, `/snapshot`.

pub mod checks;
pub mod config;
pub mod dns;
pub mod metrics;
pub mod persist;
pub mod proxy;
pub mod snapshot;

mod admin;
mod subscription;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use metrics::Metrics;
use snapshot::Snapshots;
pub use subscription::StreamStatus;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The control-plane client could not be built (a bad URL).
    #[error(transparent)]
    Client(#[from] waypost_client::Error),
    /// The data directory is unusable.
    #[error("data directory: {0}")]
    DataDir(std::io::Error),
}

/// A started sidecar.
#[derive(Debug)]
pub struct Running {
    /// The DNS address (UDP and TCP).
    pub dns_addr: SocketAddr,
    /// The admin HTTP address.
    pub admin_addr: SocketAddr,
    /// The HTTP proxy's address.
    pub http_addr: SocketAddr,
    /// The TCP routes' addresses, in the order of the configuration.
    pub tcp_addrs: Vec<SocketAddr>,
    /// The snapshot readers use.
    pub snapshots: Snapshots,
    /// The subscription's status.
    pub status: Arc<StreamStatus>,
    /// Finishes after shutdown: listeners closed, the last snapshot saved.
    pub join: JoinHandle<()>,
}

/// Binds the listeners, serves the saved snapshot if there is one, follows the control plane,
/// and serves until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, SidecarError> {
    let mut builder = waypost_client::Client::builder()
        .user_agent(concat!("waypost-sidecar/", env!("CARGO_PKG_VERSION")));
    for url in &config.control {
        builder = builder.endpoint(url);
    }
    if let Some(token) = &config.token {
        builder = builder.token(token.expose());
    }
    if let Some(ca) = &config.ca_cert {
        builder = builder.ca_cert(ca);
    }
    if let Some((cert, key)) = &config.client_cert {
        builder = builder.client_cert(cert, key);
    }
    let client = builder.build()?;
    let dns_error = |source| SidecarError::Bind {
        what: "DNS",
        addr: config.dns_listen,
        source,
    };
    let (udp, tcp) = dns::bind(config.dns_listen).await.map_err(dns_error)?;
    let dns_addr = udp.local_addr().map_err(dns_error)?;
    let admin_error = |source| SidecarError::Bind {
        what: "admin",
        addr: config.admin_listen,
        source,
    };
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(admin_error)?;
    let admin_addr = admin_listener.local_addr().map_err(admin_error)?;
    let http_error = |source| SidecarError::Bind {
        what: "HTTP proxy",
        addr: config.http_listen,
        source,
    };
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(http_error)?;
    let http_addr = http_listener.local_addr().map_err(http_error)?;
    let mut tcp_listeners = Vec::new();
    for route in &config.tcp {
        let tcp_error = |source| SidecarError::Bind {
            what: "TCP proxy",
            addr: route.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(route.listen)
            .await
            .map_err(tcp_error)?;
        let addr = listener.local_addr().map_err(tcp_error)?;
        tcp_listeners.push((listener, addr, route.service.clone()));
    }
    let tcp_addrs: Vec<SocketAddr> = tcp_listeners.iter().map(|(_, a, _)| *a).collect();
    let file = match &config.data_dir {
        Some(dir) => Some(persist::SnapshotFile::new(dir).map_err(SidecarError::DataDir)?),
        None => None,
    };

    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(StreamStatus::default());
    let records = dns::records::RecordBuilder::new(config.domain.clone(), config.dns_ttl);
    let (publisher, snapshots) = snapshot::channel();
    let checker_client = client.clone();
    let mut subscription = subscription::Subscription {
        events: client.watch_events(None),
        mirror: snapshot::Mirror::default(),
        publisher,
        records: records.clone(),
        names: HashMap::new(),
        status: status.clone(),
        metrics: metrics.clone(),
        file,
        vip_mode: config.vip_mode,
    };
    subscription.restore().await;
    let following = tokio::spawn(subscription.run(shutdown.clone()));

    let handler = dns::handler::Handler {
        snapshots: snapshots.clone(),
        records,
        forwarder: dns::forward::Forwarder::new(&config.upstreams),
        metrics: metrics.clone(),
    };
    let dns_server = dns::serve(udp, tcp, handler, config.dns_tcp);
    let http_proxy = Arc::new(proxy::http::HttpProxy::new(
        snapshots.clone(),
        config.proxy.clone(),
        metrics.clone(),
        &config.domain.to_ascii(),
    ));
    let checking = (config.checks.check_all || config.checks.node.is_some()).then(|| {
        tokio::spawn(checks::run(
            snapshots.clone(),
            checker_client,
            config.checks.clone(),
            shutdown.clone(),
        ))
    });
    let tcp_proxy = Arc::new(proxy::tcp::TcpProxy {
        snapshots: snapshots.clone(),
        balancer: proxy::balance::Balancer::new(config.proxy.outlier, config.proxy.panic_threshold),
        config: config.proxy.clone(),
    });
    for (listener, _, service) in tcp_listeners {
        tokio::spawn(proxy::tcp::serve(
            listener,
            service,
            None,
            tcp_proxy.clone(),
            shutdown.clone(),
        ));
    }
    let vip_listeners = config.vip_mode.then(|| {
        tokio::spawn(proxy::vips::run(
            snapshots.clone(),
            tcp_proxy.clone(),
            shutdown.clone(),
        ))
    });
    let proxying = tokio::spawn(proxy::http::serve(
        http_listener,
        http_proxy,
        shutdown.clone(),
        config.shutdown_grace,
    ));
    let admin = admin::router(admin::Admin {
        snapshots: snapshots.clone(),
        status: status.clone(),
        metrics,
        started_ms: metrics::now_ms(),
    });
    let admin_shutdown = shutdown.clone();
    let admin_server = tokio::spawn(async move {
        let served = axum::serve(admin_listener, admin)
            .with_graceful_shutdown(async move { admin_shutdown.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(%err, "admin listener failed");
        }
    });
    tracing::info!(dns = %dns_addr, http = %http_addr, admin = %admin_addr, "listening");

    let grace = config.shutdown_grace;
    let join = tokio::spawn(async move {
        shutdown.cancelled().await;
        let stopping = async {
            if let Err(err) = dns_server.shutdown().await {
                tracing::warn!(%err, "DNS server stopped with an error");
            }
            let _ = admin_server.await;
            let _ = proxying.await;
            if let Some(checking) = checking {
                let _ = checking.await;
            }
            if let Some(vip_listeners) = vip_listeners {
                let _ = vip_listeners.await;
            }
            // The subscription saves the last snapshot as it ends.
            let _ = following.await;
        };
        if tokio::time::timeout(grace, stopping).await.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "shutdown exceeded the grace period"
            );
        }
    });
    Ok(Running {
        dns_addr,
        admin_addr,
        http_addr,
        tcp_addrs,
        snapshots,
        status,
        join,
    })
}
