//! `POST /heartbeat`.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use waypost_model::{
    BatchHeartbeatResponse, HeartbeatAnswer, HeartbeatOutcome, HeartbeatRequest, HeartbeatResponse,
    heartbeat::HeartbeatForm,
};

use super::{
    AppState,
    auth::check_write,
    error::ApiError,
    extract::Json,
    responses::{NotFound, WriteErrors},
};
use crate::{
    auth::Caller,
    registry::{RegistryError, Renewed},
};

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Renew an instance's TTL.
///
/// Name the instance by `{"service", "address"}` (seed form) or `{"service", "id"}`. Answers the
/// next deadline. An unknown or expired instance is 404 `instance_not_found`: register again.
/// The batch form `{"instances": [...]}` renews up to 1000 instances at once and always answers
/// 200 with an outcome per entry (an unknown, expired or malformed entry fails there, alone). A
/// body is one form or the other, not both. Heartbeats change nothing visible, so they move no
/// revision and are not written to disk; in a cluster, any node accepts them.
#[utoipa::path(
    post,
    path = "/heartbeat",
    security(("bearer" = []), ()),
    tag = "registry",
    request_body(content = HeartbeatRequest, examples(
        ("seed form" = (value = json!({"service": "user-service", "address": "http://localhost:8001"}))),
        ("by id" = (value = json!({"service": "user-service", "id": "user-1"}))),
        ("batch" = (value = json!({"instances": [{"service": "user-service", "id": "user-1"}, {"service": "cart", "id": "cart-1"}]}))),
    )),
    responses(
        (status = 200, description = "Renewed (single form), or one outcome per entry (batch form)", body = HeartbeatAnswer),
        NotFound,
        WriteErrors,
    )
)]
pub(crate) async fn heartbeat(
    State(app): State<AppState>,
    caller: Caller,
    Json(req): Json<HeartbeatRequest>,
) -> Result<Response, ApiError> {
    let renewed = |r: Renewed| HeartbeatResponse {
        status: "ok".to_owned(),
        heartbeat_interval_seconds: app.registry.interval_hint(r.ttl_seconds),
        expires_at: rfc3339(r.expires_at),
        ttl_seconds: r.ttl_seconds,
        service: r.service,
        id: r.id,
    };
    let form = req.form()?;
    // A batch is all or nothing: one entry outside the token's services refuses the whole.
    match &form {
        HeartbeatForm::Single(r) => check_write(&app, &caller, [r.service.as_str()])?,
        HeartbeatForm::Batch(list) => {
            check_write(&app, &caller, list.iter().map(|r| r.service.as_str()))?
        }
    }
    match form {
        HeartbeatForm::Single(r) => {
            let done = app.registry.heartbeat(&r)?;
            app.cluster
                .forward_heartbeat(done.service.clone(), done.id.clone());
            Ok(axum::Json(HeartbeatAnswer::Single(renewed(done))).into_response())
        }
        HeartbeatForm::Batch(list) => {
            let mut results = Vec::with_capacity(list.len());
            let mut shortest_ttl = u32::MAX;
            for r in &list {
                let outcome = match app.registry.heartbeat(r) {
                    Ok(done) => {
                        app.cluster
                            .forward_heartbeat(done.service.clone(), done.id.clone());
                        shortest_ttl = shortest_ttl.min(done.ttl_seconds);
                        HeartbeatOutcome {
                            service: r.service.clone(),
                            id: Some(done.id.to_string()),
                            status: "ok".to_owned(),
                            expires_at: Some(rfc3339(done.expires_at)),
                        }
                    }
                    Err(e) => HeartbeatOutcome {
                        service: r.service.clone(),
                        id: r.id.clone(),
                        status: match e {
                            RegistryError::Field(f) => f.code.as_str(),
                            _ => waypost_model::ErrorCode::InstanceNotFound.as_str(),
                        }
                        .to_owned(),
                        expires_at: None,
                    },
                };
                results.push(outcome);
            }
            let renewed = results.iter().filter(|o| o.status == "ok").count();
            Ok(axum::Json(HeartbeatAnswer::Batch(BatchHeartbeatResponse {
                renewed,
                failed: results.len() - renewed,
                results,
                heartbeat_interval_seconds: app.registry.interval_hint(shortest_ttl),
            }))
            .into_response())
        }
    }
}
