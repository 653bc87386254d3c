//! The cluster as one node sees it (`GET /cluster`) and membership changes
//! (`POST /cluster/members`).

use serde::{Deserialize, Serialize};

/// `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    /// Its Raft state: `leader`, `follower`, `candidate` or `learner`.
    pub state: String,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// The current Raft term.
    pub term: u64,
    /// The last index in its log.
    pub last_log_index: u64,
    /// The last index applied to its registry.
    pub applied_index: u64,
    /// Milliseconds since it last heard from the leader (0 on the leader).
    pub last_contact_ms: Option<u64>,
    /// The last log index in its latest snapshot (taken, or installed from the leader).
    pub snapshot_index: Option<u64>,
    /// On the leader: milliseconds since a majority last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Every member, voters and learners.
    pub members: Vec<ClusterMember>,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterMember {
    /// Its node id.
    pub id: u64,
    /// Its base URL.
    pub url: String,
    /// `leader`, `follower` (a voter) or `learner`.
    pub role: String,
    /// The last log index known to match the leader's (on the leader: for every member; on
    /// other nodes: for itself only).
    pub matched_index: Option<u64>,
    /// Entries behind the answering node's last log index.
    pub lag: Option<u64>,
    /// Milliseconds since the answering node last heard from this member: on the leader, for
    /// every member (its last answer to a Raft message); on other nodes, for the leader
    /// only; 0 for the answering node itself.
    pub last_contact_ms: Option<u64>,
    /// The last log index this member applied: on the leader, as the member last reported
    /// it (followers report at least every second); on other nodes, for themselves only.
    pub applied_index: Option<u64>,
}

/// `POST /cluster/members`: add a node, first as a learner, then as a voter once it caught up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// The new node's id (its `--node-id`).
    pub id: u64,
    /// Its base URL, as the other nodes reach it.
    pub url: String,
    /// Stay a learner (a non-voting copy) instead of becoming a voter [default: false].
    #[serde(default)]
    pub learner: bool,
}
