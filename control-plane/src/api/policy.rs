//! `GET`, `PUT` and `DELETE /services/{service}/policy`: a service's protection policy.

use axum::extract::State;
use utoipa::{
    IntoParams,
    openapi::path::{Parameter, ParameterIn},
};
use waypost_model::{PolicyResponse, ServicePolicy, schema};

use super::{
    AppState,
    auth::forbidden,
    discover::path_service,
    error::ApiError,
    extract::{Json, PathParam},
    params::param,
    responses::{ReadErrors, WriteErrors},
};
use crate::{
    auth::Caller,
    command::{Command, Reply},
};

/// The path parameter.
pub(crate) struct ServicePath;

impl IntoParams for ServicePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![param(
            "service",
            ParameterIn::Path,
            "The service.",
            schema::path_service(),
        )]
    }
}

async fn set(
    app: &AppState,
    caller: &Caller,
    service: &str,
    policy: Option<ServicePolicy>,
) -> Result<PolicyResponse, ApiError> {
    caller
        .may_set_policy()
        .map_err(|denied| forbidden(app, denied))?;
    let name = path_service(service)?;
    if let Some(p) = &policy {
        p.validate()?;
    }
    let revision = match app
        .replicate(Command::SetPolicy {
            service: name.clone(),
            policy,
        })
        .await?
    {
        Reply::PolicySet { revision } => revision,
        other => return Err(ApiError::unexpected(&other)),
    };
    Ok(PolicyResponse {
        service: name.as_str().to_owned(),
        policy,
        revision,
    })
}

/// Set a service's protection policy.
///
/// `min_healthy_percent` is the proxies' panic threshold for the service (below that share
/// of usable instances they balance over all of them); `never_empty` keeps the last non-empty
/// set in DNS, the proxies and the SDK's resolver when expiry or failing checks (not a
/// deregistration or a drain) would leave the service with none. Replicated; every instance
/// of the service carries it, so sidecars and SDKs learn it from the change stream. Needs an
/// `operator` token when authorization is on.
#[utoipa::path(
    put,
    path = "/services/{service}/policy",
    security(("bearer" = []), ()),
    tag = "discovery",
    params(ServicePath),
    request_body = ServicePolicy,
    responses(
        (status = 200, description = "The policy now in force", body = PolicyResponse),
        WriteErrors,
    )
)]
pub(crate) async fn set_policy(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(service): PathParam<String>,
    Json(policy): Json<ServicePolicy>,
) -> Result<axum::Json<PolicyResponse>, ApiError> {
    Ok(axum::Json(
        set(&app, &caller, &service, Some(policy)).await?,
    ))
}

/// Remove a service's protection policy.
#[utoipa::path(
    delete,
    path = "/services/{service}/policy",
    security(("bearer" = []), ()),
    tag = "discovery",
    params(ServicePath),
    responses(
        (status = 200, description = "No policy is in force now", body = PolicyResponse),
        WriteErrors,
    )
)]
pub(crate) async fn delete_policy(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(service): PathParam<String>,
) -> Result<axum::Json<PolicyResponse>, ApiError> {
    Ok(axum::Json(set(&app, &caller, &service, None).await?))
}

/// A service's protection policy.
///
/// From this node's applied state (as `?stale` reads); absent when none is set.
#[utoipa::path(
    get,
    path = "/services/{service}/policy",
    security(("bearer" = []), ()),
    tag = "discovery",
    params(ServicePath),
    responses(
        (status = 200, description = "The policy in force, if any", body = PolicyResponse),
        ReadErrors,
    )
)]
pub(crate) async fn get_policy(
    State(app): State<AppState>,
    PathParam(service): PathParam<String>,
) -> Result<axum::Json<PolicyResponse>, ApiError> {
    let name = path_service(&service)?;
    Ok(axum::Json(PolicyResponse {
        service: name.as_str().to_owned(),
        policy: app.registry.policy(name.as_str()),
        revision: app.registry.head(),
    }))
}
