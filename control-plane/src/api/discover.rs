//! `GET /discover/{service}`.

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use utoipa::{
    IntoParams,
    openapi::path::{Parameter, ParameterIn},
};
use waypost_model::{
    DiscoverBody, DiscoverResponse, ExplainResponse, ServiceName,
    limits::MAX_FILTER_LEN,
    name::{check_metadata_key, check_tag},
    query::parse_meta_filter,
    schema,
};

use super::{
    AppState,
    blocking::{Blocking, INDEX_HEADER, index_value},
    error::ApiError,
    extract::{PathParam, QueryPairs},
    params::{self, param, repeated},
    responses::ReadErrors,
};
use crate::registry::Filter;

/// The path and query parameters of `GET /discover/{service}`.
pub(crate) struct DiscoverParams;

impl IntoParams for DiscoverParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![param(
            "service",
            ParameterIn::Path,
            "The service whose instances to find.",
            schema::path_service(),
        )]
        .into_iter()
        .chain(filter_params())
        .chain([param(
            "healthy",
            ParameterIn::Query,
            "`true` (default): only instances that take work \
            (status `up`, health `passing`). `false`: draining, critical and flapping ones too \
            (a flapping one's `health_output` says how many changes in which window).",
            utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Boolean),
        )])
        .chain(params::blocking("this service"))
        .collect()
    }
}

/// The filter parameters that `/discover/{service}` shares with `/sd/prometheus`: `tag` and
/// `meta` (`healthy` too, described by each).
pub(super) fn filter_params() -> [Parameter; 2] {
    [
        repeated(
            "tag",
            "Keep instances with this tag; repeat for several (`?tag=a&tag=b`: all \
            must match).",
            schema::tag_filter(),
        ),
        repeated(
            "meta",
            "Keep instances whose metadata has `KEY` set to `VALUE`, written \
            `KEY:VALUE`; repeat for several (all must match). `?meta.KEY=VALUE` is the same \
            filter in Consul's style (not declared here: OpenAPI cannot name a parameter by a \
            pattern).",
            schema::meta_filter(),
        ),
    ]
}

/// Find the instances of a service.
///
/// Answers the seed's shape `{"service", "instances": [{"address", "uptime_seconds", ...}],
/// "count"}` plus every stored field. Only instances that take work by default. An unknown
/// service is an empty list. With `?index=R`, a blocking query: the answer waits until the
/// service changes after revision `R` (or `wait` passes); `X-Waypost-Index` carries the revision
/// to pass next. `index=0` answers at once.
#[utoipa::path(
    get,
    path = "/discover/{service}",
    security(("bearer" = []), ()),
    tag = "discovery",
    params(DiscoverParams),
    responses(
        (status = 200, description = "Matching instances, ordered by id", body = DiscoverResponse,
            headers(("X-Waypost-Index" = u64, description = "Revision the answer was read at"))),
        ReadErrors,
    )
)]
pub(crate) async fn discover(
    State(app): State<AppState>,
    PathParam(service): PathParam<String>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let (name, filter, blocking) = parse(&service, pairs)?;
    blocking
        .read(&app, Some(&name), |index| {
            app.registry.service_revision(name.as_str()) > index
        })
        .await?;
    let mut body = DiscoverBody::new(name.as_str());
    let (revision, vip) = app
        .registry
        .discover_json(name.as_str(), &filter, |i, up, held| {
            body.push(i, up, held);
        });
    let body = body.finish(revision, vip);
    let headers = [
        (INDEX_HEADER.clone(), index_value(revision)),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
    ];
    Ok((headers, body).into_response())
}

/// The service and the query of `/discover/{service}` (and of its explain).
pub(super) fn parse(
    service: &str,
    pairs: Vec<(String, String)>,
) -> Result<(ServiceName, Filter, Blocking), ApiError> {
    let name = path_service(service)?;
    let mut filter = Filter {
        healthy_only: true,
        ..Filter::default()
    };
    let mut blocking = Blocking::default();
    for (k, v) in pairs {
        if blocking.accept(&k, &v)? {
            continue;
        }
        if !accept_filter(&mut filter, &k, v)? {
            return Err(ApiError::query(format!(
                "unknown parameter {k:?}; known: tag, meta, healthy, index, wait, stale, \
                 consistent, meta.KEY"
            )));
        }
    }
    Ok((name, filter, blocking))
}

/// Takes a filter parameter (`tag`, `meta`, `meta.KEY`, `healthy`) into `filter`; `Ok(false)`
/// for any other key.
pub(super) fn accept_filter(filter: &mut Filter, k: &str, v: String) -> Result<bool, ApiError> {
    let is_filter = k == "tag" || k == "meta" || k.starts_with("meta.");
    if is_filter && v.chars().count() > MAX_FILTER_LEN {
        return Err(ApiError::query(format!(
            "{k} is longer than {MAX_FILTER_LEN} characters"
        )));
    }
    if let Some(key) = k.strip_prefix("meta.") {
        check_metadata_key(key).map_err(|e| ApiError::query(format!("meta.{key}: the key {e}")))?;
        filter.meta.push((key.to_owned(), v));
        return Ok(true);
    }
    match k {
        "tag" => {
            check_tag(&v).map_err(|e| ApiError::query(format!("tag={v:?} {e}")))?;
            filter.tags.push(v);
        }
        "meta" => {
            let (key, value) = parse_meta_filter(&v).ok_or_else(|| {
                ApiError::query(format!(
                    "meta={v:?} is not KEY:VALUE with a metadata key (letters, digits, \
                     '-', '_', '.')"
                ))
            })?;
            filter.meta.push((key.to_owned(), value.to_owned()));
        }
        "healthy" => {
            filter.healthy_only = v
                .parse()
                .map_err(|_| ApiError::query(format!("healthy={v:?}: use true or false")))?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Explain what `/discover/{service}` returns.
///
/// Takes the same parameters as `/discover/{service}` and lists every instance the registry
/// knows for the service, each with `included` (whether `/discover` returns it) and its
/// `reasons`: draining, critical or flapping (since when, and what the check said), a tag or
/// metadata the query asks for and it lacks, held by self-preservation; and the instances that
/// expired or were deregistered in the last 10 minutes, with when, and by whom when
/// authorization is on.
#[utoipa::path(
    get,
    path = "/discover/{service}/explain",
    security(("bearer" = []), ()),
    tag = "discovery",
    params(DiscoverParams),
    responses(
        (status = 200, description = "Every instance with its verdict and reasons", body = ExplainResponse,
            headers(("X-Waypost-Index" = u64, description = "Revision the answer was read at"))),
        ReadErrors,
    )
)]
pub(crate) async fn explain(
    State(app): State<AppState>,
    PathParam(service): PathParam<String>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let (name, filter, blocking) = parse(&service, pairs)?;
    blocking
        .read(&app, Some(&name), |index| {
            app.registry.service_revision(name.as_str()) > index
        })
        .await?;
    let answer = app.registry.explain(name.as_str(), &filter);
    let headers = [(INDEX_HEADER.clone(), index_value(answer.revision))];
    Ok((headers, axum::Json(answer)).into_response())
}

/// A service name given in a path, or 400 `invalid_service_name` naming the field `service`.
pub(super) fn path_service(service: &str) -> Result<ServiceName, ApiError> {
    ServiceName::new(service).map_err(|e| {
        ApiError::from(waypost_model::FieldError {
            code: waypost_model::ErrorCode::InvalidServiceName,
            field: "service".into(),
            message: format!("{service:?} is not a valid service name: it {e}"),
        })
    })
}
