//! `POST /register`.

use axum::{extract::State, http::StatusCode};
use waypost_model::{RegisterRequest, RegisterResponse};

use super::{
    AppState,
    auth::check_write,
    error::ApiError,
    extract::{Json, QueryPairs},
    nodes::{PropagationWait, WriteParams},
    responses::WriteErrors,
};
use crate::{auth::Caller, command::Reply};

/// Register an instance, or update it.
///
/// Accepts the seed form `{"service", "address"}` and the rich form (`id`, `host` + `port`,
/// `tags`, `metadata`, `weight`, `ttl_seconds`, `check`, `status`). Without an `id`, the id is
/// the endpoint as `host:port`. Registering an existing `(service, id)` again updates it (200)
/// and renews its TTL; a new instance answers 201. The answer comes once the change is durable;
/// with `?wait=propagated`, once the sidecars have applied it too (or `timeout` passed).
#[utoipa::path(
    post,
    path = "/register",
    security(("bearer" = []), ()),
    tag = "registry",
    params(WriteParams),
    request_body(content = RegisterRequest, examples(
        ("seed form" = (value = json!({"service": "user-service", "address": "http://localhost:8001"}))),
        ("rich form" = (value = json!({"service": "user-service", "id": "user-1", "host": "10.0.0.7", "port": 8001,
            "tags": ["v2", "primary"], "metadata": {"zone": "a"}, "weight": 10, "ttl_seconds": 30,
            "check": {"http": "http://10.0.0.7:8001/healthz", "interval_seconds": 10, "timeout_seconds": 2}}))),
    )),
    responses(
        (status = 201, description = "Registered a new instance", body = RegisterResponse),
        (status = 200, description = "Updated an existing instance (same service and id)", body = RegisterResponse),
        WriteErrors,
    )
)]
pub(crate) async fn register(
    State(app): State<AppState>,
    caller: Caller,
    QueryPairs(query): QueryPairs,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, axum::Json<RegisterResponse>), ApiError> {
    let wait = PropagationWait::from_pairs(query)?;
    check_write(&app, &caller, [req.service.as_str()])?;
    let command = app.registry.prepare_register(&req)?;
    let (i, created) = match app.replicate(command).await? {
        Reply::Registered { instance, created } => (instance, created),
        other => return Err(ApiError::unexpected(&other)),
    };
    let (status, word) = if created {
        (StatusCode::CREATED, "registered")
    } else {
        (StatusCode::OK, "updated")
    };
    let body = RegisterResponse {
        status: word.to_owned(),
        message: format!("Service {} {word} at {}", i.service, i.address),
        heartbeat_interval_seconds: app.registry.interval_hint(i.ttl_seconds),
        revision: i.revision,
        instance: waypost_model::Instance::clone(&i),
        propagation: wait.settle(&app, i.revision).await,
    };
    Ok((status, axum::Json(body)))
}
