//! `GET /services`.

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use utoipa::{
    IntoParams,
    openapi::path::{Parameter, ParameterIn},
};
use waypost_model::ServicesResponse;

use super::{
    AppState,
    blocking::{Blocking, INDEX_HEADER, index_value},
    error::ApiError,
    extract::QueryPairs,
    params,
    responses::ReadErrors,
};

/// Query parameters of `GET /services`.
pub(crate) struct ServicesParams;

impl IntoParams for ServicesParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        params::blocking("anything").into()
    }
}

/// List every service with instance counts.
///
/// The seed's shape: `{"services": {"name": {"total_instances", "active_instances"}},
/// "total_services"}`; `active_instances` counts those with status `up`. Supports blocking
/// queries with `?index=R&wait=D` like `/discover`.
#[utoipa::path(
    get,
    path = "/services",
    security(("bearer" = []), ()),
    tag = "discovery",
    params(ServicesParams),
    responses(
        (status = 200, description = "Every service with at least one instance", body = ServicesResponse,
            headers(("X-Waypost-Index" = u64, description = "Revision the answer was read at"))),
        ReadErrors,
    )
)]
pub(crate) async fn services(
    State(app): State<AppState>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let mut blocking = Blocking::default();
    for (k, v) in pairs {
        if !blocking.accept(&k, &v)? {
            return Err(ApiError::query(format!(
                "unknown parameter {k:?}; known: index, wait, stale, consistent"
            )));
        }
    }
    blocking
        .read(&app, None, |index| app.registry.head() > index)
        .await?;
    // Served from the body kept for the current revision (see the registry's `bodies`): the
    // blocking wait and the linearizable read above happen as for any read; only the building
    // is skipped when nothing changed since the last request.
    let (body, revision) = app.registry.services_json().await;
    let headers = [
        (INDEX_HEADER.clone(), index_value(revision)),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
    ];
    Ok((headers, body).into_response())
}
