//! `POST /deregister`.

use axum::extract::State;
use waypost_model::{DeregisterResponse, InstanceRef};

use super::{
    AppState,
    auth::{check_write, forbidden},
    error::ApiError,
    extract::{Json, QueryPairs},
    nodes::{PropagationWait, WriteParams},
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
    params(WriteParams),
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
    QueryPairs(query): QueryPairs,
    Json(req): Json<InstanceRef>,
) -> Result<axum::Json<DeregisterResponse>, ApiError> {
    let wait = PropagationWait::from_pairs(query)?;
    let (service, identity) = req.resolve()?;
    if caller.is_sidecar() {
        // A sidecar removes only what its checks failed (`deregister_critical_after`).
        if app
            .registry
            .health_of(&service, &identity)
            .is_some_and(|h| h.is_passing())
        {
            return Err(forbidden(
                &app,
                crate::auth::Denied {
                    token: caller.token_name().to_owned(),
                    role: "sidecar",
                    action: format!("deregister a passing instance of service {service:?}"),
                },
            ));
        }
    } else {
        check_write(&app, &caller, [req.service.as_str()])?;
    }
    let (service, id, revision) = match app
        .replicate(Command::Deregister {
            target: req,
            at: Some(waypost_model::Timestamp::now()),
            // Who, for explain: the token's name when authorization is on.
            by: Some(caller.token_name().to_owned()).filter(|n| !n.is_empty()),
        })
        .await?
    {
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
        propagation: wait.settle(&app, revision).await,
    }))
}
