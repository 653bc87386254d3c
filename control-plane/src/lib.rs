//! The Waypost control plane: a service registry with a REST API, replicated with Raft, and
//! a change stream.
//!
//! # Layout
//! - [`config`]: the one [`Config`], from flags, `WAYPOST_*` env and TOML.
//! - [`command`]: what the replicated log holds (commands, replies, snapshot images).
//! - [`registry`]: the state machine (state, revisions, change log, expiry decisions).
//! - `store`: the Raft log and snapshots in redb (openraft's storage).
//! - [`cluster`]: Raft on this node: writes, linearizable reads, forwarding to the leader,
//!   and passing sidecars' reports on to the other members.
//! - [`nodes`]: the sidecars and the revisions they applied (soft state, on every member).
//! - [`api`]: one module per endpoint, the OpenAPI document, errors as problem+json.
//! - [`metrics`]: every metric in one place.
//! - [`xds`]: the registry over xDS (gRPC's Aggregated Discovery Service) for proxyless gRPC
//!   clients, on a listener of its own.
//!
//! # Flow
//! `POST` handler → [`Command`](command::Command) → [`cluster::Cluster::write`] (the leader
//! appends it; followers forward it) → Raft log, durable on a majority → applied by every
//! node's [`registry::Registry`] in log order (next revision, change log) → reply, `/watch`
//! streams, blocking queries. The leader's expiry task proposes expiries the same way.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod command;
pub mod config;
mod fanout;
pub mod metrics;
pub mod nodes;
pub mod registry;
mod serve;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
pub mod xds;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use crate::config::Config;
use crate::{
    api::AppState,
    cluster::{Cluster, Parts},
    metrics::Metrics,
    registry::{Registry, RegistryConfig},
    store::{Store, StoreError},
};

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A non-loopback address without tokens and without `insecure`.
    #[error("{0}")]
    Exposed(String),
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Raft could not start.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A started control plane.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound xDS address, when `xds_listen` is set.
    pub xds_addr: Option<SocketAddr>,
    /// The registry, for in-process callers.
    pub registry: Arc<Registry>,
    /// This node's handle on the cluster.
    pub cluster: Arc<Cluster>,
    /// Finishes after shutdown: connections drained (within the grace period), Raft stopped,
    /// store closed.
    pub join: JoinHandle<()>,
}

/// Opens the store, binds `config.listen`, starts Raft and serves until `shutdown` is
/// cancelled. Every task it starts belongs to one tracker, drained once at shutdown.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    config.check_exposure().map_err(StartError::Exposed)?;
    // Certificate problems are reported before anything is opened or bound.
    let tls = match &config.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(files.server_config()?)),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let (store, registry, restored) = open(&config, &metrics)?;
    let (listener, addr) = bind(&config).await?;
    let xds = match config.xds_listen {
        Some(at) => Some(
            xds::bind(at)
                .await
                .map_err(|source| StartError::Bind { addr: at, source })?,
        ),
        None => None,
    };
    let xds_addr = xds.as_ref().map(|(_, bound)| *bound);
    let tasks = TaskTracker::new();
    let (log, machine, store) = store.into_parts(registry.clone(), metrics.clone());
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let cluster = Cluster::start(
        &config.cluster,
        Parts {
            log,
            machine,
            registry: registry.clone(),
            metrics: metrics.clone(),
            own_url: format!("{scheme}://{addr}"),
            tls: config.tls.clone(),
            tasks: tasks.clone(),
        },
        shutdown.clone(),
    )
    .await
    .map_err(StartError::Cluster)?;
    tracing::info!(
        http = %addr,
        xds = xds_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        node = config.cluster.node_id,
        peers = config.cluster.peers.len(),
        tls = match &config.tls {
            None => "off",
            Some(t) if t.client_ca.is_some() => "mtls",
            Some(_) => "on",
        },
        auth = if config.tokens.enabled() { "tokens" } else { "off" },
        store = config.data_dir.as_ref().map_or_else(|| "memory".to_owned(), |d| d.display().to_string()),
        restored,
        epoch = %format!("{:016x}", registry.epoch()),
        revision = registry.head(),
        "listening"
    );
    let state = app_state(&config, &registry, &cluster, metrics, &tasks, &shutdown);
    let conn_limits = serve::ConnLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
    };
    let metrics = state.metrics.clone();
    if let Some((listener, _)) = xds {
        let ads = xds::Ads {
            registry: registry.clone(),
            fanout: state.0.fanout.clone(),
            endpoints: Arc::default(),
            metrics: metrics.clone(),
            tokens: config.tokens.clone(),
            streams: Arc::new(tokio::sync::Semaphore::new(config.max_watchers)),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        };
        let listen = xds::Listen {
            tls: tls.clone(),
            handshake_timeout: config.header_read_timeout,
        };
        tasks.spawn(xds::serve(listener, ads, listen));
    }
    tasks.spawn(serve::serve(
        listener,
        api::router(state),
        conn_limits,
        metrics,
        tls,
        shutdown.clone(),
    ));
    let join = tokio::spawn(stop(
        shutdown,
        tasks,
        config.shutdown_grace,
        cluster.clone(),
        store,
        registry.clone(),
    ));
    Ok(Running {
        addr,
        xds_addr,
        registry,
        cluster,
        join,
    })
}

/// Opens the store and builds the registry from what it holds; also returns how many
/// instances that restored.
fn open(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<(Store, Arc<Registry>, usize), StartError> {
    let store = Store::open(config.data_dir.as_deref(), config.store_cache_bytes)?;
    let restored = store.image()?;
    let instances = restored.image.instances.len();
    let registry = Arc::new(Registry::new(
        RegistryConfig {
            default_ttl_seconds: config.default_ttl.as_secs() as u32,
            heartbeat_interval: config.heartbeat_interval,
            history: config.history,
            max_instances: config.max_instances,
            max_instances_per_service: config.max_instances_per_service,
            self_preservation: config.self_preservation,
            vip_range: config.vip_range,
        },
        restored.image,
        restored.last_applied.map_or(0, |l| l.index),
        metrics.clone(),
    ));
    Ok((store, registry, instances))
}

/// Binds the listen address; returns the listener and the address bound (port 0 made real).
async fn bind(config: &Config) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind {
        addr: config.listen,
        source,
    };
    let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    if config.insecure && !config.tokens.enabled() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "--insecure: serving a non-loopback address without auth tokens");
    }
    Ok((listener, addr))
}

/// What every request handler shares; starts the write-deadline ticker on `tasks`.
fn app_state(
    config: &Config,
    registry: &Arc<Registry>,
    cluster: &Arc<Cluster>,
    metrics: Arc<Metrics>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> AppState {
    // Write timeouts: one table and ticker instead of a timer per request.
    let deadlines = Arc::new(waypost_runtime::deadline::Deadlines::new(
        (config.request_timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(100)),
    ));
    tasks.spawn(deadlines.clone().run(shutdown.clone()));
    let nodes = Arc::new(nodes::Nodes::new(config.nodes.clone(), registry.clone()));
    tasks.spawn(nodes.clone().follow(shutdown.clone()));
    let fanout = Arc::new(fanout::Fanout::new(
        registry.clone(),
        metrics.clone(),
        config.watch_buffer,
    ));
    tasks.spawn(fanout.clone().run(shutdown.clone()));
    AppState(Arc::new(api::App {
        registry: registry.clone(),
        cluster: cluster.clone(),
        metrics,
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        watch_keepalive: config.watch_keepalive,
        fanout,
        max_query_time: config.max_query_time,
        watchers: Arc::new(tokio::sync::Semaphore::new(config.max_watchers)),
        max_watchers: config.max_watchers,
        write_limiter: api::limits::WriteLimiter::new(config.write_rate, config.write_burst),
        request_timeout: config.request_timeout,
        deadlines,
        tokens: config.tokens.clone(),
        nodes,
        durable: config.data_dir.is_some(),
        openapi_json: api::openapi_pretty().into(),
    }))
}

/// Waits for `shutdown`, then stops in order: every task drained (the server stops accepting
/// and lets open connections finish; streams, blocking queries and the cluster's tasks end on
/// the token; in-flight writes, bounded by the election timeout, finish), all within `grace`;
/// then Raft, then the store.
async fn stop(
    shutdown: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
    cluster: Arc<Cluster>,
    store: store::StoreHandle,
    registry: Arc<Registry>,
) {
    shutdown.cancelled().await;
    waypost_runtime::shutdown::drain(&tasks, grace, "control plane").await;
    cluster.shutdown().await;
    store.close().await;
    tracing::info!(revision = registry.head(), "stopped");
}
