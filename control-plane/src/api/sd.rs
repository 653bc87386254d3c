//! `GET /sd/prometheus`: the registry in Prometheus's HTTP service discovery format, so that a
//! Prometheus server finds every instance to scrape with `http_sd_configs` and no other glue.
//!
//! The answer is a default `/discover` read across services: the same filter (the registry's
//! [`Filter`]), the same linearizable read. Prometheus polls it every `refresh_interval`; no
//! blocking form, since Prometheus would not use one.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use utoipa::{
    IntoParams,
    openapi::path::{Parameter, ParameterIn},
};
use waypost_model::{TargetGroup, schema};

use super::{
    AppState,
    blocking::{INDEX_HEADER, index_value},
    discover::{accept_filter, filter_params, path_service},
    error::ApiError,
    extract::QueryPairs,
    params::param,
    responses::PlainReadErrors,
};
use crate::{cluster::Consistency, registry::Filter};

/// The query parameters of `GET /sd/prometheus`.
pub(crate) struct SdParams;

impl IntoParams for SdParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut params = vec![param(
            "service",
            ParameterIn::Query,
            "Only instances of this service (once; default: every service).",
            schema::sd_service(),
        )];
        params.extend(filter_params());
        params.push(param(
            "healthy",
            ParameterIn::Query,
            "`true` (default): only instances that take work (status `up`, health `passing`), \
             as `/discover` answers. `false`: draining, critical and flapping ones too, their \
             state in `__meta_waypost_draining` and `__meta_waypost_health`.",
            utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Boolean),
        ));
        params
    }
}

/// Targets for Prometheus (HTTP service discovery).
///
/// One target group per instance, ordered by service then id: `targets` is the instance's
/// `host:port` (a URL's host and port; its scheme and path set no label), `labels` are
/// `__meta_waypost_service`, `_id`, `_address` (as registered), `_node` (empty when none),
/// `_tags` (`,a,b,`; empty when none), `_health` (`passing`, `critical`, `flapping`),
/// `_draining` (`true`/`false`) and `__meta_waypost_metadata_<key>` per metadata entry, the key
/// with every character outside `[A-Za-z0-9_]` as `_`. When two keys give the same label, a
/// key that needed no change wins, else the first in byte order. The list holds every matching
/// instance (at most `--max-instances`); an unknown service is an empty list.
#[utoipa::path(
    get,
    path = "/sd/prometheus",
    security(("bearer" = []), ()),
    tag = "integrations",
    params(SdParams),
    responses(
        (status = 200, description = "Target groups in Prometheus's HTTP SD format", body = Vec<TargetGroup>,
            headers(("X-Waypost-Index" = u64, description = "Revision the answer was read at"))),
        PlainReadErrors,
    )
)]
pub(crate) async fn prometheus_targets(
    State(app): State<AppState>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let (service, filter) = parse(pairs)?;
    app.cluster.linearize(Consistency::Default).await?;
    let (instances, revision) = app
        .registry
        .discover_all(service.as_ref().map(|s| s.as_str()), &filter);
    let groups: Vec<TargetGroup> = instances
        .iter()
        .map(|i| TargetGroup::for_instance(i))
        .collect();
    Ok((
        [(INDEX_HEADER.clone(), index_value(revision))],
        axum::Json(groups),
    )
        .into_response())
}

/// The query: an optional `service` (once) and `/discover`'s filters, healthy only by default.
fn parse(
    pairs: Vec<(String, String)>,
) -> Result<(Option<waypost_model::ServiceName>, Filter), ApiError> {
    let mut service = None;
    let mut filter = Filter {
        healthy_only: true,
        ..Filter::default()
    };
    for (k, v) in pairs {
        if k == "service" {
            if service.is_some() {
                return Err(ApiError::query(
                    "service is given twice; name one service, or none for all",
                ));
            }
            service = Some(path_service(&v)?);
        } else if !accept_filter(&mut filter, &k, v)? {
            return Err(ApiError::query(format!(
                "unknown parameter {k:?}; known: service, tag, meta, healthy, meta.KEY"
            )));
        }
    }
    Ok((service, filter))
}
