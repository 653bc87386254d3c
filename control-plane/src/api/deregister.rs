//! `POST /deregister`.

use axum::extract::State;
use waypost_model::{DeregisterResponse, InstanceRef};

use super::{
    AppState,
    auth::check_write,
    error::ApiError,
    extract::Json,
    responses::{NotFound, WriteErrors},
};
use crate::{
    auth::Caller,
    command::{Command, Reply},
};

/// Remove an instance.
///
/// Name it by `{"service", "address"}` (seed form) or `{"service", "id"}`. The answer comes once
/// the removal is durable; watchers see a `remove` event with reason `deregistered`.
#[utoipa::path(
    post,
    path = "/deregister",
    security(("bearer" = []), ()),
    tag = "registry",
    request_body(content = InstanceRef, examples(
        ("seed form" = (value = json!({"service": "user-service", "address": "http://localhost:8001"}))),
        ("by id" = (value = json!({"service": "user-service", "id": "user-1"}))),
    )),
    responses(
        (status = 200, description = "Deregistered", body = DeregisterResponse),
        NotFound,
        WriteErrors,
    )
)]
pub(crate) async fn deregister(
    State(app): State<AppState>,
    caller: Caller,
    Json(req): Json<InstanceRef>,
) -> Result<axum::Json<DeregisterResponse>, ApiError> {
    check_write(&app, &caller, [req.service.as_str()])?;
    req.resolve()?;
    let (service, id, revision) = match app.replicate(Command::Deregister { target: req }).await? {
        Reply::Removed {
            service,
            id,
            revision,
        } => (service, id, revision),
        other => return Err(ApiError::unexpected(&other)),
    };
    Ok(axum::Json(DeregisterResponse {
        status: "deregistered".to_owned(),
        message: format!("Instance {id} of service {service} deregistered"),
        service,
        id,
        revision,
    }))
}
