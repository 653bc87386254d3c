//! The admin listener: `/health`, `/ready`, `/metrics` and `/snapshot`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{metrics::Metrics, snapshot::Snapshots, subscription::StreamStatus};

/// What the admin endpoints read.
#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) snapshots: Snapshots,
    pub(crate) status: Arc<StreamStatus>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) started_ms: u64,
}

/// Serves the admin endpoints on `listener` until `shutdown`, then lets open requests finish.
pub(crate) async fn serve(listener: TcpListener, admin: Admin, shutdown: CancellationToken) {
    let served = axum::serve(listener, router(admin))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(err) = served {
        tracing::error!(%err, "admin listener failed");
    }
}

fn router(admin: Admin) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/snapshot", get(snapshot))
        .with_state(admin)
}

/// Liveness: 200 while the process runs; the body says whether the answers may be stale.
async fn health(State(a): State<Admin>) -> Json<Value> {
    let snapshot = a.snapshots.current();
    let stale = a.status.stale();
    Json(json!({
        "status": if stale { "stale" } else { "ok" },
        "stale": stale,
        "revision": snapshot.revision,
        "epoch": snapshot.epoch,
        "lag_seconds": a.status.lag_seconds(a.started_ms),
        "reconnects": a.status.reconnects.load(std::sync::atomic::Ordering::Relaxed),
        "snapshots": a.metrics.snapshots.get(),
        "services": snapshot.services.len(),
    }))
}

/// Readiness: 200 once a snapshot is served (the control plane's, or the saved one while the
/// control plane is away: then `stale` is true), 503 before.
async fn ready(State(a): State<Admin>) -> impl IntoResponse {
    let serving = a.status.serving();
    let code = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "ready": serving,
            "stale": a.status.stale(),
            "revision": a.snapshots.current().revision,
        })),
    )
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    a.metrics.stale.set(i64::from(a.status.stale()));
    a.metrics.lag.set(a.status.lag_seconds(a.started_ms));
    a.metrics.reconnects.set(
        a.status
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed) as i64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.metrics.render(),
    )
}

/// What the sidecar believes: every service with its instances, and which are `up` with the
/// addresses DNS answers with.
async fn snapshot(State(a): State<Admin>) -> Json<Value> {
    let snapshot = a.snapshots.current();
    let services: BTreeMap<&str, Value> = snapshot
        .services
        .iter()
        .map(|(name, view)| {
            let up: Vec<Value> = view
                .up
                .iter()
                .map(|t| json!({"id": t.instance.id.as_str(), "addresses": t.addrs, "port": t.instance.port}))
                .collect();
            (
                name.as_str(),
                json!({"instances": view.instances, "up": up}),
            )
        })
        .collect();
    Json(json!({
        "epoch": snapshot.epoch,
        "revision": snapshot.revision,
        "stale": a.status.stale(),
        "services": services,
    }))
}
