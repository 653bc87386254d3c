//! `POST /check`.

use axum::extract::State;
use waypost_model::{CheckReport, CheckResponse};

use super::{
    AppState,
    auth::forbidden,
    error::ApiError,
    extract::Json,
    responses::{NotFound, WriteErrors},
};
use crate::{
    auth::Caller,
    command::{Command, Reply},
};

/// Report a health check's result.
///
/// Sent by the sidecar that runs the instance's `check` (the one whose node name matches the
/// instance's `node`, or one told to check everything), when the health it has decided differs
/// from the registry's: after `failures_before_critical` failures or `successes_before_passing`
/// successes in a row, or `flapping` when the check changed more than `flap_changes` times
/// within `flap_window_seconds`. A `critical` or `flapping` instance stays registered but takes
/// no work: it leaves default discovery results, DNS and the proxies until a `passing` report
/// brings it back. A change of health is a visible change with a revision; reporting the
/// health already in force changes nothing.
#[utoipa::path(
    post,
    path = "/check",
    security(("bearer" = []), ()),
    tag = "registry",
    request_body = CheckReport,
    responses(
        (status = 200, description = "The health now in force", body = CheckResponse),
        NotFound,
        WriteErrors,
    )
)]
pub(crate) async fn check(
    State(app): State<AppState>,
    caller: Caller,
    Json(report): Json<CheckReport>,
) -> Result<axum::Json<CheckResponse>, ApiError> {
    caller
        .may_report_check(&report.instance.service)
        .map_err(|denied| forbidden(&app, denied))?;
    report.instance.resolve()?;
    let command = Command::Check {
        target: report.instance,
        health: report.health,
        output: report.output,
        at: Some(waypost_model::Timestamp::now()),
    };
    let instance = match app.replicate(command).await? {
        Reply::Amended { instance } => instance,
        other => return Err(ApiError::unexpected(&other)),
    };
    let revision = instance.revision;
    Ok(axum::Json(CheckResponse {
        health: instance.health,
        revision,
        instance: waypost_model::Instance::clone(&instance),
    }))
}
