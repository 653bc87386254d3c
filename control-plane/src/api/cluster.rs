//! The cluster's routes.
//!
//! Between control planes (a `cluster` or `operator` token when authorization is on; not in
//! the OpenAPI document, which describes the API for clients):
//! - `POST /cluster/raft/append`, `/cluster/raft/vote`, `/cluster/raft/snapshot`: Raft's
//!   messages, as openraft's JSON;
//! - `POST /cluster/write`: a command forwarded by a follower, answered once applied here;
//! - `POST /cluster/read-index` (`?consistent`: always a round): the index a follower's
//!   linearizable read waits for;
//! - `POST /cluster/heartbeats`: a follower's report, `{"node", "applied", "beats":
//!   [[service, id], ...]}` (the heartbeats it accepted and its applied index).
//!
//! For operators (in the document): `GET /cluster`, `POST /cluster/members`,
//! `DELETE /cluster/members/{id}`.

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    Router,
    extract::{DefaultBodyLimit, RawQuery, State},
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use openraft::{
    BasicNode, ChangeMembers,
    error::{ClientWriteError, InstallSnapshotError, RaftError},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use waypost_model::{AddMember, ClusterStatus, ErrorCode};

use super::{
    AppState,
    auth::forbidden,
    error::ApiError,
    extract::{Json, PathParam},
    responses::AuthErrors,
};
use crate::{
    auth::Caller,
    cluster::{Consistency, ReadIndex, Report, WriteAnswer},
    command::{Command, NodeId, TypeConfig},
};

/// Raft messages carry batches of entries and snapshot chunks: far above the API's limit.
const PEER_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The longest `POST /cluster/members` waits for a new node to catch up before answering
/// `catching_up` (it stays a learner and keeps catching up).
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(30);

/// The routes between control planes.
pub(crate) fn peer_routes() -> Router<AppState> {
    Router::new()
        .route("/cluster/raft/append", post(append))
        .route("/cluster/raft/vote", post(vote))
        .route("/cluster/raft/snapshot", post(snapshot))
        .route("/cluster/write", post(write))
        .route("/cluster/read-index", post(read_index))
        .route("/cluster/heartbeats", post(heartbeats))
        .route("/cluster/nodes", post(nodes))
        .route_layer(DefaultBodyLimit::max(PEER_BODY_LIMIT))
}

fn peer(app: &AppState, caller: &Caller) -> Result<(), ApiError> {
    caller.may_peer().map_err(|denied| forbidden(app, denied))
}

async fn append(
    State(app): State<AppState>,
    caller: Caller,
    Json(rpc): Json<AppendEntriesRequest<TypeConfig>>,
) -> Result<axum::Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>, ApiError> {
    peer(&app, &caller)?;
    let answer = app.cluster.raft().append_entries(rpc).await;
    if matches!(
        answer,
        Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
    ) {
        app.cluster.contact();
    }
    Ok(axum::Json(answer))
}

async fn vote(
    State(app): State<AppState>,
    caller: Caller,
    Json(rpc): Json<VoteRequest<NodeId>>,
) -> Result<axum::Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>>, ApiError> {
    peer(&app, &caller)?;
    Ok(axum::Json(app.cluster.raft().vote(rpc).await))
}

type SnapshotAnswer =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

async fn snapshot(
    State(app): State<AppState>,
    caller: Caller,
    Json(rpc): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Result<axum::Json<SnapshotAnswer>, ApiError> {
    peer(&app, &caller)?;
    app.cluster.contact();
    Ok(axum::Json(app.cluster.raft().install_snapshot(rpc).await))
}

async fn write(
    State(app): State<AppState>,
    caller: Caller,
    Json(command): Json<Command>,
) -> Result<axum::Json<WriteAnswer>, ApiError> {
    peer(&app, &caller)?;
    Ok(axum::Json(app.cluster.write_here(command).await?))
}

async fn read_index(
    State(app): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<ReadIndex>, ApiError> {
    peer(&app, &caller)?;
    let consistency = if query.is_some_and(|q| q.split('&').any(|k| k == "consistent")) {
        Consistency::Consistent
    } else {
        Consistency::Default
    };
    let index = app.cluster.read_index_here(consistency).await?;
    Ok(axum::Json(ReadIndex { index }))
}

async fn heartbeats(
    State(app): State<AppState>,
    caller: Caller,
    Json(report): Json<Report>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    peer(&app, &caller)?;
    app.cluster.reported(&report);
    Ok(axum::Json(
        serde_json::json!({ "renewed": report.beats.len() }),
    ))
}

/// Sidecars' reports another member heard.
async fn nodes(
    State(app): State<AppState>,
    caller: Caller,
    Json(batch): Json<Vec<crate::cluster::SharedReport>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    peer(&app, &caller)?;
    let mut noted = 0;
    for shared in batch {
        let age = std::time::Duration::from_millis(shared.age_ms);
        // A full table refuses new sidecars here as it does first-hand.
        if app.nodes.report(&shared.node, shared.report, age).is_ok() {
            noted += 1;
        }
    }
    Ok(axum::Json(serde_json::json!({ "noted": noted })))
}

/// The cluster as this node sees it.
///
/// The leader, the term, and each member's role, matched index and lag (the leader knows
/// every member's; other nodes know their own). Any node answers, from what it knows now.
#[utoipa::path(
    get,
    path = "/cluster",
    security(("bearer" = []), ()),
    tag = "operations",
    responses(
        (status = 200, description = "The cluster", body = ClusterStatus),
        AuthErrors,
    )
)]
pub(crate) async fn status(State(app): State<AppState>) -> axum::Json<ClusterStatus> {
    axum::Json(app.cluster.status())
}

/// Add a member.
///
/// The node (started with the same `--peers` list it will be part of, or none) joins as a
/// learner, catches up from the leader's log or snapshot, and then becomes a voter (unless
/// `learner` is true). Operator only. Sent to a node that does not lead, the answer is a
/// 307 redirect to the leader. A node that has not caught up within 30 s stays a learner and
/// the answer is 503 `catching_up`: send the request again.
#[utoipa::path(
    post,
    path = "/cluster/members",
    security(("bearer" = []), ()),
    tag = "operations",
    request_body = AddMember,
    responses(
        (status = 200, description = "The cluster after the change", body = ClusterStatus),
        (status = 307, description = "This node does not lead: the same request to the leader"),
        AuthErrors,
        (status = 400, description = "`invalid_field`: a bad URL", body = waypost_model::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: not an operator token", body = waypost_model::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`membership_conflict`: the change is not allowed now (another change in progress)", body = waypost_model::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`no_leader`, or `catching_up`: the node stays a learner for now", body = waypost_model::Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn add_member(
    State(app): State<AppState>,
    caller: Caller,
    uri: Uri,
    Json(req): Json<AddMember>,
) -> Result<Response, ApiError> {
    operator(&app, &caller)?;
    if url::Url::parse(&req.url).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("url: {:?} is not an http:// or https:// URL", req.url),
        ));
    }
    if let Some(redirect) = to_leader(&app, &uri) {
        return Ok(redirect);
    }
    let raft = app.cluster.raft();
    let url = req.url.trim_end_matches('/').to_owned();
    // The learner is added at once; the wait is for it to catch up, and is bounded (the
    // addition stands when the wait runs out).
    tokio::time::timeout(
        CATCH_UP,
        raft.add_learner(req.id, BasicNode::new(url), true),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            ErrorCode::CatchingUp,
            format!(
                "node {} was added as a learner and has not caught up within {} s; it \
                     stays a learner: send the request again to make it a voter",
                req.id,
                CATCH_UP.as_secs()
            ),
        )
    })?
    .map_err(|e| membership_error(&e))?;
    if !req.learner {
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), true)
            .await
            .map_err(|e| membership_error(&e))?;
    }
    Ok(axum::Json(app.cluster.status()).into_response())
}

/// Remove a member.
///
/// A voter leaves the voting set and the cluster; a learner stops receiving the log.
/// Operator only; sent to a node that does not lead, the answer is a 307 redirect.
#[utoipa::path(
    delete,
    path = "/cluster/members/{id}",
    security(("bearer" = []), ()),
    tag = "operations",
    params(("id" = u64, Path, description = "The node id", minimum = 0)),
    responses(
        (status = 200, description = "The cluster after the change", body = ClusterStatus),
        (status = 400, description = "`invalid_query`: the id is not a node id (a whole number)", body = waypost_model::Problem, content_type = "application/problem+json"),
        (status = 307, description = "This node does not lead: the same request to the leader"),
        AuthErrors,
        (status = 403, description = "`forbidden`: not an operator token", body = waypost_model::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`membership_conflict`: the change is not allowed (the last voter, or another change in progress)", body = waypost_model::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`no_leader`", body = waypost_model::Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn remove_member(
    State(app): State<AppState>,
    caller: Caller,
    uri: Uri,
    PathParam(id): PathParam<u64>,
) -> Result<Response, ApiError> {
    operator(&app, &caller)?;
    if let Some(redirect) = to_leader(&app, &uri) {
        return Ok(redirect);
    }
    let raft = app.cluster.raft();
    let voters: BTreeSet<NodeId> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    let change = if voters.contains(&id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    raft.change_membership(change, false)
        .await
        .map_err(|e| membership_error(&e))?;
    Ok(axum::Json(app.cluster.status()).into_response())
}

fn operator(app: &AppState, caller: &Caller) -> Result<(), ApiError> {
    caller
        .may_operate()
        .map_err(|denied| forbidden(app, denied))
}

/// A 307 to the same path on the leader, when another node leads.
fn to_leader(app: &AppState, uri: &Uri) -> Option<Response> {
    let leader = app.cluster.known_leader()?;
    if leader == app.cluster.id() {
        return None;
    }
    let nodes: BTreeMap<NodeId, String> = app
        .cluster
        .status()
        .members
        .into_iter()
        .map(|m| (m.id, m.url))
        .collect();
    let base = nodes.get(&leader)?;
    let location = format!("{base}{}", uri.path());
    Some(
        (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
    )
}

fn membership_error(err: &RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ApiError {
    let code = match &err {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(_)) => {
            return ApiError::new(ErrorCode::MembershipConflict, err.to_string());
        }
        _ => ErrorCode::NoLeader,
    };
    ApiError::new(code, err.to_string())
}
