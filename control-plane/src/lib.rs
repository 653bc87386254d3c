//! The Waypost control plane: a service registry with a REST API, a durable store and a change
//! stream.
//!
//! # Layout
//! - [`config`]: the one [`Config`], from flags, `WAYPOST_*` env and TOML.
//! - [`registry`]: the single writer (state, revisions, change log, expiry).
//! - `store`: the embedded redb store and its group-committing writer thread.
//! - [`api`]: one module per endpoint, the OpenAPI document, errors as problem+json.
//! - [`metrics`]: every metric in one place.
//!
//! # Flow
//! `POST` handler → [`registry::Registry`] (lock, mutate, next revision, change log) → store
//! writer (batch commit) → committed revision on a `watch` → reply, `/watch` streams, blocking
//! queries. The expiry task feeds the same writer.

pub mod api;
pub mod auth;
pub mod command;
pub mod config;
pub mod metrics;
pub mod registry;
mod serve;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use waypost_model::Revision;

pub use crate::config::Config;
use crate::{
    api::AppState,
    metrics::Metrics,
    registry::{Committed, Registry, RegistryConfig},
    store::{Loaded, StoreError},
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
}

/// A started control plane.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The registry, for in-process callers.
    pub registry: Arc<Registry>,
    /// Finishes after shutdown: connections drained (within the grace period), store flushed.
    pub join: JoinHandle<()>,
}

/// How often the expiry task looks for overdue instances: expiry lands within TTL + this.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// Opens the store, binds `config.listen` and serves until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    config.check_exposure().map_err(StartError::Exposed)?;
    // Certificate problems are reported before anything is opened or bound.
    let tls = match &config.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(files.server_config()?)),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let (tx, _) = watch::channel(Committed {
        revision: 0,
        failed: false,
    });
    let committed = Arc::new(tx);
    let (writer, loaded) = match &config.data_dir {
        Some(dir) => {
            let (w, l) = store::open(
                dir,
                config.store_cache_bytes,
                committed.clone(),
                metrics.clone(),
            )?;
            (Some(w), l)
        }
        None => (None, Loaded::empty(rand::random())),
    };
    let restored = loaded.instances.len();
    let durable = writer.is_some();
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
        loaded,
        writer,
        committed,
        metrics.clone(),
    ));
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    if config.insecure && !config.tokens.enabled() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "--insecure: serving a non-loopback address without auth tokens");
    }
    tracing::info!(
        http = %addr,
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
    // Write timeouts: one table and ticker instead of a timer per request.
    let deadlines = Arc::new(waypost_runtime::deadline::Deadlines::new(
        (config.request_timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(100)),
    ));
    tokio::spawn(deadlines.clone().run(shutdown.clone()));
    let state = AppState(Arc::new(api::App {
        registry: registry.clone(),
        metrics,
        shutdown: shutdown.clone(),
        watch_keepalive: config.watch_keepalive,
        max_query_time: config.max_query_time,
        watchers: Arc::new(tokio::sync::Semaphore::new(config.max_watchers)),
        max_watchers: config.max_watchers,
        write_limiter: api::limits::WriteLimiter::new(config.write_rate, config.write_burst),
        request_timeout: config.request_timeout,
        deadlines: deadlines.clone(),
        tokens: config.tokens.clone(),
        durable,
        openapi_json: api::openapi_pretty().into(),
    }));
    let metrics = state.metrics.clone();
    let app = api::router(state);
    let conn_limits = serve::ConnLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
    };
    let expiry = tokio::spawn(expire(registry.clone(), shutdown.clone()));
    let reg = registry.clone();
    let grace = config.shutdown_grace;
    let join = tokio::spawn(async move {
        let token = shutdown.clone();
        let server = tokio::spawn(serve::serve(
            listener,
            app,
            conn_limits,
            metrics,
            tls,
            token,
        ));
        shutdown.cancelled().await;
        // Stop accepting; streams and blocking queries end on the token; in-flight writes
        // finish (they are bounded by the store's commit time) within the grace period.
        match tokio::time::timeout(grace, server).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(%err, "server task failed"),
            Err(_) => tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "drain exceeded the grace period"
            ),
        }
        let _ = expiry.await;
        reg.close_store().await;
        tracing::info!(revision = reg.head(), "stopped");
    });
    Ok(Running {
        addr,
        registry,
        join,
    })
}

/// The expiry task: every tick, expire what is overdue.
async fn expire(registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => registry.expire_due(std::time::Instant::now()),
        }
    }
}

/// The revision type, re-exported for tests and tools.
pub type Rev = Revision;
