//! The admin listener: `/health`, `/ready`, `/metrics`, `/snapshot` and `/explain/{service}`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State, rejection::PathRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waypost_model::{ErrorCode, Problem, ServiceName};

use crate::{
    explain::Sources,
    metrics::Metrics,
    proxy::balance::{Balancer, Policy},
    snapshot::Snapshots,
    subscription::StreamStatus,
};

/// What the admin endpoints read.
#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) snapshots: Snapshots,
    pub(crate) status: Arc<StreamStatus>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) started_ms: u64,
    /// What `/explain` reads besides the snapshot.
    pub(crate) routing: Arc<Routing>,
}

/// How the sidecar routes, for `/explain`: the proxies' balancers themselves (shared, so the
/// stats shown are the ones the proxies choose by) and the settings that shape the answers.
pub(crate) struct Routing {
    /// The fully qualified domain DNS answers for.
    pub(crate) domain: String,
    /// DNS answers services' virtual IPs.
    pub(crate) vip_mode: bool,
    /// The HTTP proxy's balancer.
    pub(crate) http: Arc<Balancer>,
    /// The TCP proxy's balancer.
    pub(crate) tcp: Arc<Balancer>,
    /// The services explicit TCP routes send to.
    pub(crate) tcp_routes: Vec<String>,
    /// The default balancing policy.
    pub(crate) balance: Policy,
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
        .route("/explain/{service}", get(explain))
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

/// Why this sidecar routes `service` as it does: its DNS answers, each instance in or out and
/// why, the proxies' endpoints with their failures and ejections, and the panic rule; 400
/// `invalid_service_name` for a bad name, 404 `unknown_service` for one the snapshot lacks.
async fn explain(State(a): State<Admin>, service: Result<Path<String>, PathRejection>) -> Response {
    let service = match service {
        Ok(Path(service)) => service,
        Err(rejection) => {
            return problem(ErrorCode::InvalidServiceName, rejection.body_text());
        }
    };
    if let Err(err) = ServiceName::new(&service) {
        return problem(
            ErrorCode::InvalidServiceName,
            format!("service name {service:?} {err}"),
        );
    }
    let r = &a.routing;
    let sources = Sources {
        stale: a.status.stale(),
        domain: &r.domain,
        vip_mode: r.vip_mode,
        http: &r.http,
        tcp: &r.tcp,
        tcp_routes: &r.tcp_routes,
        balance: r.balance,
    };
    match sources.explain(&a.snapshots.current(), &service) {
        Some(explained) => Json(explained).into_response(),
        None => problem(
            ErrorCode::UnknownService,
            format!("this sidecar's snapshot has no service {service:?}"),
        ),
    }
}

/// An RFC 9457 answer, as the control plane's and the proxy's errors are.
fn problem(code: ErrorCode, detail: String) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&Problem::new(code, status.as_u16(), detail)).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}
