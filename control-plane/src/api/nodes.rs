//! `PUT /nodes/{node}`, `GET /nodes` and `GET /propagation`: the sidecars and what they have
//! applied; and `?wait=propagated` on the writes, which answers once they have applied the
//! write (see `crate::nodes`).

use std::time::Duration;

use utoipa::{
    IntoParams,
    openapi::{
        Required,
        path::{Parameter, ParameterIn},
    },
};
use waypost_model::{
    FieldError, NodeReport, NodeStatus, NodesResponse, Propagation, Revision,
    limits::MAX_NAMED_NODES,
    name::check_node,
    query::{parse_revision, parse_wait},
    schema,
};

use super::{
    AppState,
    auth::forbidden,
    error::ApiError,
    extract::{Json, PathParam, QueryPairs},
    params::{param, repeated},
    responses::{AuthErrors, ReadErrors, WriteErrors},
};
use crate::auth::Caller;
use axum::extract::State;

/// How long a write with `?wait=propagated` waits when it names no `timeout`.
pub(crate) const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A write's `?wait=propagated`, `timeout` and `node` parameters.
#[derive(Debug, Default)]
pub(crate) struct PropagationWait {
    /// Asked for (`wait=propagated`).
    wanted: bool,
    timeout: Option<Duration>,
    nodes: Vec<String>,
}

impl PropagationWait {
    /// Reads a write's query: only `wait`, `timeout` and `node` are known there.
    pub(crate) fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut wait = Self::default();
        for (k, v) in pairs {
            match k.as_str() {
                "wait" if v == "propagated" => wait.wanted = true,
                "wait" => {
                    return Err(ApiError::query(format!(
                        "wait={v:?}: a write can wait only for `propagated`"
                    )));
                }
                "timeout" => wait.timeout = Some(parse_timeout(&v)?),
                "node" => push_node(&mut wait.nodes, v)?,
                other => {
                    return Err(ApiError::query(format!(
                        "unknown parameter {other:?}; known: wait, timeout, node"
                    )));
                }
            }
        }
        // `timeout` and `node` without `wait=propagated` mean nothing and are let be: the
        // OpenAPI document cannot say that one parameter needs another.
        Ok(wait)
    }

    /// Waits, if asked to, until the sidecars have applied `revision`.
    pub(crate) async fn settle(self, app: &AppState, revision: Revision) -> Option<Propagation> {
        if !self.wanted {
            return None;
        }
        let timeout = self
            .timeout
            .unwrap_or(DEFAULT_PROPAGATION_TIMEOUT)
            .min(app.max_query_time);
        let answer = tokio::select! {
            answer = app.nodes.wait(revision, &self.nodes, timeout) => answer,
            // At shutdown the write is done: answer with what is known.
            () = app.shutdown.cancelled() => app.nodes.propagation(revision, &self.nodes),
        };
        app.metrics
            .propagation_waits
            .get_or_create(&crate::metrics::OutcomeLabel {
                outcome: if answer.complete {
                    "complete"
                } else {
                    "timeout"
                },
            })
            .inc();
        Some(answer)
    }

    /// The time a write's query asks to wait, beyond `--request-timeout` (read before the
    /// write's deadline is set; a bad query is refused by the handler).
    pub(crate) fn requested(query: Option<&str>, cap: Duration) -> Duration {
        let Some(query) = query else {
            return Duration::ZERO;
        };
        let mut wanted = false;
        let mut timeout = DEFAULT_PROPAGATION_TIMEOUT;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("wait", "propagated")) => wanted = true,
                Some(("timeout", v)) => timeout = parse_wait(v).unwrap_or(timeout),
                _ => {}
            }
        }
        if wanted {
            timeout.min(cap)
        } else {
            Duration::ZERO
        }
    }
}

fn parse_timeout(v: &str) -> Result<Duration, ApiError> {
    parse_wait(v).ok_or_else(|| {
        ApiError::query(format!(
            "timeout={v:?}: use seconds (5) or units ms, s, m, h (5s, 1m30s)"
        ))
    })
}

fn push_node(nodes: &mut Vec<String>, v: String) -> Result<(), ApiError> {
    check_node(&v).map_err(|e| ApiError::query(format!("node={v:?} {e}")))?;
    // Counted as given, repeats included, as the document's `maxItems` counts them.
    if nodes.len() == MAX_NAMED_NODES {
        return Err(ApiError::query(format!(
            "more than {MAX_NAMED_NODES} node parameters"
        )));
    }
    nodes.push(v);
    Ok(())
}

/// The query parameters a write takes to wait for propagation.
pub(crate) struct WriteParams;

impl IntoParams for WriteParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            param(
                "wait",
                ParameterIn::Query,
                "`propagated`: answer once every live sidecar (or each one named by `node`) has \
                 applied this write's revision, so that DNS and proxies everywhere route by it; \
                 or once `timeout` passes, with the write done all the same and `propagation` \
                 listing the sidecars behind.",
                schema::write_wait(),
            ),
            param(
                "timeout",
                ParameterIn::Query,
                "With `wait=propagated`: the longest to wait (default 10s); ignored without it.",
                schema::propagation_timeout(),
            ),
            repeated(
                "node",
                "With `wait=propagated`: wait for these sidecars (repeat for several), whether \
                 live or not, instead of every live one; ignored without it.",
                schema::named_nodes(),
            ),
        ]
    }
}

/// The path parameter of `PUT /nodes/{node}`.
pub(crate) struct NodePath;

impl IntoParams for NodePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![param(
            "node",
            ParameterIn::Path,
            "The sidecar's node name.",
            schema::report_node(),
        )]
    }
}

/// The query parameters of `GET /propagation`.
pub(crate) struct PropagationParams;

impl IntoParams for PropagationParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut revision = param(
            "revision",
            ParameterIn::Query,
            "The revision to ask about (a write's answer gives its `revision`).",
            schema::revision(),
        );
        revision.required = Required::True;
        vec![
            revision,
            repeated(
                "node",
                "Ask about these sidecars (repeat for several), whether live or not, instead of \
                 every live one.",
                schema::named_nodes(),
            ),
            param(
                "timeout",
                ParameterIn::Query,
                "Wait up to this long for every sidecar asked about to apply the revision \
                 (default: answer at once).",
                schema::propagation_timeout(),
            ),
        ]
    }
}

/// A sidecar reports itself.
///
/// Sidecars send this at least once a second while what they apply changes, and on a
/// keep-alive (5 s by default) otherwise. The member that hears it passes it on to the other
/// members of the cluster. A sidecar silent for `--node-lost-after` is shown `lost`; after
/// `--node-forget-after` it is dropped. With authorization on, it needs a `sidecar` (or
/// `operator`) token.
#[utoipa::path(
    put,
    path = "/nodes/{node}",
    security(("bearer" = []), ()),
    tag = "nodes",
    params(NodePath),
    request_body = NodeReport,
    responses(
        (status = 200, description = "The sidecar as this control plane now shows it", body = NodeStatus),
        WriteErrors,
    )
)]
pub(crate) async fn report(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(node): PathParam<String>,
    Json(report): Json<NodeReport>,
) -> Result<axum::Json<NodeStatus>, ApiError> {
    caller
        .may_report_node()
        .map_err(|denied| forbidden(&app, denied))?;
    check_node(&node).map_err(|e| {
        ApiError::from(FieldError {
            code: waypost_model::ErrorCode::InvalidField,
            field: "node".into(),
            message: format!("{node:?} is not a node name: it {e}"),
        })
    })?;
    report.validate()?;
    app.nodes
        .report(&node, report.clone(), Duration::ZERO)
        .map_err(|full| ApiError::new(waypost_model::ErrorCode::TooManyNodes, full.to_string()))?;
    app.cluster.share_node(&node, &report);
    app.metrics.node_reports.inc();
    let status = app.nodes.status(&node).ok_or_else(|| {
        ApiError::new(
            waypost_model::ErrorCode::Internal,
            "a report just noted is missing",
        )
    })?;
    Ok(axum::Json(status))
}

/// List the sidecars.
///
/// Every sidecar this control plane has heard from (directly or through another member), with
/// its last contact, the revision it applied, and how far it is behind this control plane's
/// head, in revisions and in milliseconds.
#[utoipa::path(
    get,
    path = "/nodes",
    security(("bearer" = []), ()),
    tag = "nodes",
    responses(
        (status = 200, description = "The sidecars, by name", body = NodesResponse),
        AuthErrors,
    )
)]
pub(crate) async fn list(State(app): State<AppState>) -> axum::Json<NodesResponse> {
    axum::Json(app.nodes.list())
}

/// Which sidecars have applied a revision.
///
/// Every live sidecar, or those named by `node`: which have applied `revision` and which have
/// not. With `timeout`, waits until all have, or the time passes.
#[utoipa::path(
    get,
    path = "/propagation",
    security(("bearer" = []), ()),
    tag = "nodes",
    params(PropagationParams),
    responses(
        (status = 200, description = "The sidecars that applied the revision, and those behind", body = Propagation),
        ReadErrors,
    )
)]
pub(crate) async fn propagation(
    State(app): State<AppState>,
    QueryPairs(pairs): QueryPairs,
) -> Result<axum::Json<Propagation>, ApiError> {
    let mut revision = None;
    let mut timeout = Duration::ZERO;
    let mut nodes = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "revision" => {
                revision =
                    Some(parse_revision(&v).map_err(|e| ApiError::query(format!("revision={e}")))?);
            }
            "timeout" => timeout = parse_timeout(&v)?,
            "node" => push_node(&mut nodes, v)?,
            other => {
                return Err(ApiError::query(format!(
                    "unknown parameter {other:?}; known: revision, node, timeout"
                )));
            }
        }
    }
    let revision = revision.ok_or_else(|| ApiError::query("revision is required".to_owned()))?;
    let timeout = timeout.min(app.max_query_time);
    let answer = tokio::select! {
        answer = app.nodes.wait(revision, &nodes, timeout) => answer,
        () = app.shutdown.cancelled() => app.nodes.propagation(revision, &nodes),
    };
    Ok(axum::Json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_asks_for_time_only_with_wait_propagated() {
        let cap = Duration::from_secs(600);
        assert_eq!(PropagationWait::requested(None, cap), Duration::ZERO);
        assert_eq!(
            PropagationWait::requested(Some("timeout=5s"), cap),
            Duration::ZERO
        );
        assert_eq!(
            PropagationWait::requested(Some("wait=propagated"), cap),
            DEFAULT_PROPAGATION_TIMEOUT
        );
        assert_eq!(
            PropagationWait::requested(Some("wait=propagated&timeout=5s"), cap),
            Duration::from_secs(5)
        );
        assert_eq!(
            PropagationWait::requested(Some("wait=propagated&timeout=1h"), cap),
            cap
        );
    }

    #[test]
    fn a_writes_query_is_checked() {
        let pairs = |q: &[(&str, &str)]| {
            q.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        assert!(PropagationWait::from_pairs(pairs(&[])).is_ok_and(|w| !w.wanted));
        let w = PropagationWait::from_pairs(pairs(&[
            ("wait", "propagated"),
            ("node", "a"),
            ("node", "a"),
            ("timeout", "2s"),
        ]))
        .unwrap();
        assert_eq!(
            (w.wanted, w.nodes.len(), w.timeout),
            // Repeats are kept (and counted against the limit); a wait judges each name once.
            (true, 2, Some(Duration::from_secs(2)))
        );
        for bad in [
            &[("wait", "5s")][..],
            &[("wait", "propagated"), ("node", "a b")],
            &[("wait", "propagated"), ("timeout", "soon")],
            &[("stale", "")],
        ] {
            assert!(PropagationWait::from_pairs(pairs(bad)).is_err(), "{bad:?}");
        }
    }
}
