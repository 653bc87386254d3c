//! `GET /discover/{service}`.

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use utoipa::IntoParams;
use waypost_model::{DiscoverResponse, ServiceName, limits::MAX_FILTER_LEN, name::check_tag};

use super::{
    AppState,
    blocking::{Blocking, INDEX_HEADER, index_value},
    error::ApiError,
    extract::{Path, QueryPairs},
    responses::ReadErrors,
};
use crate::registry::Filter;

/// Query parameters of `GET /discover/{service}`. Besides these, `meta.KEY=VALUE` (repeatable)
/// keeps instances whose metadata has that pair.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct DiscoverParams {
    /// Keep instances with this tag; repeat for several (all must match).
    tag: Option<String>,
    /// `true` (default): only instances with status `up`. `false`: draining ones too.
    healthy: Option<bool>,
    /// Blocking query: hold the answer until this service changes past revision `index`.
    index: Option<u64>,
    /// Blocking query: the longest to hold, as `30s`, `5m` or seconds (default 5m, at most 10m).
    wait: Option<String>,
}

/// Find the instances of a service.
///
/// Answers the seed's shape `{"service", "instances": [{"address", "uptime_seconds", ...}],
/// "count"}` plus every stored field. Only `up` instances by default. An unknown service is an
/// empty list. With `?index=R`, a blocking query: the answer waits until the service changes
/// after revision `R` (or `wait` passes); `X-Waypost-Index` carries the revision to pass next.
#[utoipa::path(
    get,
    path = "/discover/{service}",
    security(("bearer" = []), ()),
    tag = "discovery",
    params(
        ("service" = String, Path, description = "Service name (RFC 1123 label)", example = "user-service"),
        DiscoverParams,
    ),
    responses(
        (status = 200, description = "Matching instances, ordered by id", body = DiscoverResponse,
            headers(("X-Waypost-Index" = u64, description = "Revision the answer was read at"))),
        ReadErrors,
    )
)]
pub(crate) async fn discover(
    State(app): State<AppState>,
    Path(service): Path<String>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let name = ServiceName::new(&service).map_err(|e| {
        ApiError::from(waypost_model::FieldError {
            code: waypost_model::ErrorCode::InvalidServiceName,
            field: "service".into(),
            message: format!("{service:?} is not a valid service name: it {e}"),
        })
    })?;
    let mut filter = Filter {
        healthy_only: true,
        ..Filter::default()
    };
    let mut blocking = Blocking::default();
    for (k, v) in pairs {
        if v.len() > MAX_FILTER_LEN {
            return Err(ApiError::query(format!(
                "{k} is longer than {MAX_FILTER_LEN} characters"
            )));
        }
        if blocking.accept(&k, &v)? {
            continue;
        }
        if let Some(meta_key) = k.strip_prefix("meta.") {
            filter.meta.push((meta_key.to_owned(), v));
            continue;
        }
        match k.as_str() {
            "tag" => {
                check_tag(&v).map_err(|e| ApiError::query(format!("tag={v:?} {e}")))?;
                filter.tags.push(v);
            }
            "healthy" => {
                filter.healthy_only = v
                    .parse()
                    .map_err(|_| ApiError::query(format!("healthy={v:?}: use true or false")))?;
            }
            other => {
                return Err(ApiError::query(format!(
                    "unknown parameter {other:?}; known: tag, healthy, index, wait, meta.KEY"
                )));
            }
        }
    }
    blocking
        .block(&app, |index| {
            app.registry.service_revision(name.as_str()) > index
        })
        .await;
    let (body, revision) = app.registry.discover_body(name.as_str(), &filter);
    let headers = [
        (INDEX_HEADER.clone(), index_value(revision)),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
    ];
    Ok((headers, body).into_response())
}
