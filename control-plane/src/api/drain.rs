//! `POST /drain`.

use axum::extract::State;
use waypost_model::{DrainRequest, DrainResponse};

use super::{
    AppState,
    auth::check_write,
    error::ApiError,
    extract::{Json, QueryPairs},
    nodes::{PropagationWait, WriteParams},
    responses::{NotFound, WriteErrors},
};
use crate::{
    auth::Caller,
    command::{Command, Reply},
};

/// Drain an instance, or undrain it.
///
/// A draining instance stays registered and keeps heartbeating, but leaves default discovery
/// results (and so DNS and proxies) so it gets no new work, as during a rolling deploy. It is
/// still listed with `?healthy=false`. Send `"draining": false` to take work again. Name the
/// instance by `id` or `address`, as for heartbeats. Re-registering sets the status it gives.
#[utoipa::path(
    post,
    path = "/drain",
    security(("bearer" = []), ()),
    tag = "registry",
    params(WriteParams),
    request_body = DrainRequest,
    responses(
        (status = 200, description = "The status now in force", body = DrainResponse),
        NotFound,
        WriteErrors,
    )
)]
pub(crate) async fn drain(
    State(app): State<AppState>,
    caller: Caller,
    QueryPairs(query): QueryPairs,
    Json(req): Json<DrainRequest>,
) -> Result<axum::Json<DrainResponse>, ApiError> {
    let wait = PropagationWait::from_pairs(query)?;
    check_write(&app, &caller, [req.instance.service.as_str()])?;
    req.instance.resolve()?;
    let command = Command::Drain {
        target: req.instance,
        draining: req.draining,
        at: Some(waypost_model::Timestamp::now()),
    };
    let instance = match app.replicate(command).await? {
        Reply::Amended { instance } => instance,
        other => return Err(ApiError::unexpected(&other)),
    };
    let revision = instance.revision;
    Ok(axum::Json(DrainResponse {
        status: instance.status,
        revision,
        instance: waypost_model::Instance::clone(&instance),
        propagation: wait.settle(&app, revision).await,
    }))
}
