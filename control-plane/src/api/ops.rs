//! `GET /health`, `GET /ready`, `GET /metrics`.

use axum::{extract::State, http::header, response::IntoResponse};
use waypost_model::{ErrorCode, HealthResponse, ReadyResponse};

use super::{AppState, error::ApiError, responses::AuthErrors};

/// Liveness, with details.
///
/// Always 200 while the process serves; `status` is `degraded` while self-preservation holds
/// expiry or after the store failed.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is alive", body = HealthResponse)))]
pub(crate) async fn health(State(app): State<AppState>) -> axum::Json<HealthResponse> {
    let s = app.registry.status();
    let store = if s.store_failed {
        "failed"
    } else if app.durable {
        "durable"
    } else {
        "memory"
    };
    axum::Json(HealthResponse {
        status: if s.self_preservation_active || s.store_failed {
            "degraded"
        } else {
            "healthy"
        }
        .to_owned(),
        store: store.to_owned(),
        self_preservation: s.self_preservation_active,
        instances: s.instances,
        revision: s.revision,
        epoch: format!("{:016x}", app.registry.epoch()),
    })
}

/// Readiness.
///
/// 200 when the store is open, a leader is known and this node has applied its log; 503
/// `no_leader` without a leader (or while catching up), `store_unavailable` after a failed
/// commit, `shutting_down` during shutdown.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic", body = ReadyResponse),
        (status = 503, description = "`no_leader`, `store_unavailable` or `shutting_down`", body = waypost_model::Problem,
            content_type = "application/problem+json"),
    ))]
pub(crate) async fn ready(
    State(app): State<AppState>,
) -> Result<axum::Json<ReadyResponse>, ApiError> {
    if app.shutdown.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "the control plane is shutting down",
        ));
    }
    if app.registry.status().store_failed {
        return Err(ApiError::new(
            ErrorCode::StoreUnavailable,
            "the durable store failed a commit; restart the control plane",
        ));
    }
    if !app.cluster.ready() {
        return Err(ApiError::new(
            ErrorCode::NoLeader,
            "no leader is known yet, or this node is still applying its log",
        ));
    }
    Ok(axum::Json(ReadyResponse { ready: true }))
}

/// Prometheus metrics.
///
/// Instances per service, registrations, heartbeats, deregistrations, expiries,
/// self-preservation, watch streams, store commits, and request latency by route and status.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("bearer" = []), ()),
    responses((status = 200, description = "Prometheus text exposition", body = String,
        content_type = "text/plain; version=0.0.4"), AuthErrors))]
pub(crate) async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
