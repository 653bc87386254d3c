//! `waypost-sidecar`, the per-host data plane. It follows the control plane's change stream,
//! keeps an immutable snapshot of every service, and answers DNS for them; it proxies HTTP and
//! TCP to the services' instances and runs their health checks.
//!
//! # Layout
//! Every module, in the order data flows (a test below keeps this list complete):
//! - [`start`] (here): binds every listener, then starts each part below on one task tracker;
//!   shutdown is one bounded drain of that tracker.
//! - [`config`]: the one `Config` (flags > `WAYPOST_*` env > TOML), loaded before binding.
//! - `listeners`: every socket the sidecar listens on: all bound at start, and the TCP proxy's
//!   listeners (explicit routes, and VIPs reconciled with each snapshot) while it runs.
//! - `subscription`: the only writer: change stream → [`snapshot`]'s mirror → published
//!   [`snapshot::Snapshot`] → saved to disk; its [`StreamStatus`].
//! - [`snapshot`]: the snapshot, the mirror it is built from, and the lock-free read handle
//!   [`snapshot::Snapshots`] that every reader below holds.
//! - [`persist`]: the last snapshot on disk, written atomically, read back at start.
//! - [`dns`]: the responder. [`dns::handler`] answers from the snapshot, [`dns::records`]
//!   builds the record sets the snapshot holds, each record with its weight, and
//!   [`dns::weighted`] draws an answer's order by those weights; [`dns::prepared`] turns a
//!   service's sets into wire bytes when they are built; [`dns::names`] (the
//!   `waypost-dns-names` crate in `data-plane/dns-names/`) reads query names, [`dns::forward`]
//!   passes other names upstream. `dns::udp` is the UDP receive loop: `dns::fast` answers the
//!   common queries from the prepared bytes, the handler the rest; [`dns::tcp`] serves DNS
//!   over TCP.
//! - [`proxy`]: [`proxy::http`] (its modules: `serve` for client connections, `routing`,
//!   `headers`, `retry`, `body`), [`proxy::tcp`], balancing and outlier ejection in
//!   [`proxy::balance`], upstream connections in [`proxy::pool`], error answers in
//!   [`proxy::error`].
//! - [`checks`]: active health checks of this node's instances, reported to the control plane.
//! - `report`: reports this sidecar to the control plane (`PUT /nodes/{node}`): where it
//!   serves and the revision it answers from, at once on change and on a keep-alive.
//! - [`metrics`]: every metric, registered in one place.
//! - `admin`: `/health`, `/ready`, `/metrics`, `/snapshot`, `/explain/{service}`; the last
//!   is built by `explain` from the snapshot and the proxies' balancers.

pub mod checks;
pub mod config;
pub mod dns;
pub mod metrics;
pub mod persist;
pub mod proxy;
pub mod snapshot;

mod admin;
mod explain;
mod listeners;
mod report;
mod subscription;

use std::{net::SocketAddr, sync::Arc};

use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use waypost_client::{Client, model::NodeReport};

pub use config::Config;
pub use subscription::StreamStatus;

use crate::{
    dns::{forward::Forwarder, handler::Handler, records::RecordBuilder},
    listeners::Bound,
    metrics::Metrics,
    persist::SnapshotFile,
    proxy::{balance::Balancer, http::HttpProxy, tcp::TcpProxy},
    snapshot::Snapshots,
    subscription::Subscription,
};

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
    /// `check_ca_cert` cannot be read or holds no usable CA certificate.
    #[error("check_ca_cert {path}: {detail}")]
    CheckCa {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// rustls refused the HTTPS checks' configuration.
    #[error("TLS for HTTPS checks: {0}")]
    CheckTls(String),
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
    /// Finishes after shutdown: every task of the sidecar done (listeners closed, the last
    /// snapshot saved), or the grace period over.
    pub join: JoinHandle<()>,
}

/// Binds the listeners, serves the saved snapshot if there is one, follows the control plane,
/// and serves until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, SidecarError> {
    let client = control_client(&config)?;
    let prober = checks::Prober::new(config.checks.ca_cert.as_deref())?;
    let bound = listeners::bind(&config).await?;
    let file = match &config.data_dir {
        Some(dir) => Some(SnapshotFile::new(dir).map_err(SidecarError::DataDir)?),
        None => None,
    };
    Ok(run(config, client, prober, bound, file, shutdown).await)
}

/// The client the sidecar follows the control plane with (and reports checks through).
fn control_client(config: &Config) -> Result<Client, SidecarError> {
    let mut builder =
        Client::builder().user_agent(concat!("waypost-sidecar/", env!("CARGO_PKG_VERSION")));
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
    Ok(builder.build()?)
}

/// Starts every part of the sidecar on `bound` sockets. Each runs on one task tracker (and
/// spawns its own tasks there, or on a `JoinSet` it owns) and stops at `shutdown`; the returned
/// `join` drains the tracker within the grace period.
async fn run(
    config: Config,
    client: Client,
    prober: checks::Prober,
    bound: Bound,
    file: Option<SnapshotFile>,
    shutdown: CancellationToken,
) -> Running {
    let tasks = TaskTracker::new();
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(StreamStatus::default());
    let records = RecordBuilder::new(config.domain.clone(), config.dns_ttl);

    // The writer first: a saved snapshot is published before anything answers from it.
    let (mut subscription, snapshots) = Subscription::new(
        client.watch_events(None),
        records.clone(),
        status.clone(),
        metrics.clone(),
        file,
        config.vip_mode,
    );
    subscription.restore().await;
    tasks.spawn(subscription.run(shutdown.clone()));

    let handler = Handler {
        snapshots: snapshots.clone(),
        records,
        forwarder: Forwarder::new(&config.upstreams),
        metrics: metrics.clone(),
    };
    tasks.spawn(dns::serve(
        bound.dns_udp,
        bound.dns_tcp,
        handler,
        config.dns_tcp,
        shutdown.clone(),
    ));

    let http_proxy = HttpProxy::new(
        snapshots.clone(),
        config.proxy.clone(),
        metrics.clone(),
        &config.domain.to_ascii(),
        tasks.clone(),
        shutdown.clone(),
    );
    let http_balancer = http_proxy.balancer.clone();
    tasks.spawn(proxy::http::serve(bound.http, Arc::new(http_proxy)));
    let tcp_addrs: Vec<SocketAddr> = bound.tcp_routes.iter().map(|r| r.addr).collect();
    let tcp_proxy = Arc::new(TcpProxy {
        snapshots: snapshots.clone(),
        balancer: Arc::new(Balancer::new(
            config.proxy.outlier,
            config.proxy.panic_threshold,
        )),
        config: config.proxy.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
    });
    listeners::serve_tcp(bound.tcp_routes, config.vip_mode, &tcp_proxy);

    if !config.report_keepalive.is_zero() {
        let reporter = report::Reporter {
            client: client.clone(),
            node: config
                .checks
                .node
                .clone()
                .unwrap_or_else(report::host_node_name),
            base: NodeReport {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                dns: vec![bound.dns_addr.to_string()],
                http: vec![bound.http_addr.to_string()],
                tcp: tcp_addrs.iter().map(ToString::to_string).collect(),
                admin: Some(bound.admin_addr.to_string()),
                ..NodeReport::default()
            },
            snapshots: snapshots.clone(),
            status: status.clone(),
            keepalive: config.report_keepalive,
        };
        tasks.spawn(reporter.run(shutdown.clone()));
    }
    if config.checks.check_all || config.checks.node.is_some() {
        tasks.spawn(checks::run(
            snapshots.clone(),
            client,
            prober,
            config.checks.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    let admin = admin::Admin {
        snapshots: snapshots.clone(),
        status: status.clone(),
        metrics,
        started_ms: metrics::now_ms(),
        routing: Arc::new(admin::Routing {
            domain: config.domain.to_ascii(),
            vip_mode: config.vip_mode,
            http: http_balancer,
            tcp: tcp_proxy.balancer.clone(),
            tcp_routes: config.tcp.iter().map(|r| r.service.clone()).collect(),
            balance: config.proxy.balance,
        }),
    };
    tasks.spawn(admin::serve(bound.admin, admin, shutdown.clone()));
    tracing::info!(
        dns = %bound.dns_addr,
        http = %bound.http_addr,
        admin = %bound.admin_addr,
        "listening"
    );

    let grace = config.shutdown_grace;
    let join = tokio::spawn(async move {
        shutdown.cancelled().await;
        waypost_runtime::shutdown::drain(&tasks, grace, "sidecar").await;
    });
    Running {
        dns_addr: bound.dns_addr,
        admin_addr: bound.admin_addr,
        http_addr: bound.http_addr,
        tcp_addrs,
        snapshots,
        status,
        join,
    }
}

#[cfg(test)]
mod tests {
    /// The `mod` declarations of a module file.
    fn modules(source: &str) -> Vec<String> {
        source
            .lines()
            .filter_map(|line| {
                let line = line
                    .trim_start()
                    .strip_prefix("pub ")
                    .unwrap_or(line.trim_start());
                let line = line.strip_prefix("pub(crate) ").unwrap_or(line);
                let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
                Some(name.to_owned())
            })
            .collect()
    }

    /// The crate doc's layout section names every module of the crate, and of `dns`, `proxy`
    /// and `proxy::http`.
    #[test]
    fn the_layout_names_every_module() {
        let lib = include_str!("lib.rs");
        let layout = lib
            .split("# Layout")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("a layout section in the crate doc");
        let named = |path: &str| {
            layout.contains(&format!("[`{path}`]")) || layout.contains(&format!("`{path}`"))
        };
        let directories = [
            ("", lib),
            ("dns::", include_str!("dns/mod.rs")),
            ("proxy::", include_str!("proxy/mod.rs")),
        ];
        for (prefix, source) in directories {
            for module in modules(source) {
                let path = format!("{prefix}{module}");
                assert!(named(&path), "the layout in lib.rs leaves out {path}");
            }
        }
        for module in modules(include_str!("proxy/http/mod.rs")) {
            assert!(
                named(&module),
                "the layout in lib.rs leaves out proxy::http's {module}"
            );
        }
        // `dns::names` is a re-export of its own crate, not a `mod`.
        assert!(named("dns::names"));
    }
}
