//! `GET /discover/{service}/explain`: every instance the registry knows for a service, the
//! ones that left in the last minutes included, each with whether `/discover` with the same
//! parameters returns it, and why not.

use serde::{Deserialize, Serialize};

use crate::{Instance, Revision, Timestamp};

/// Why an instance is or is not in the answer, or a fact worth knowing about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Status `draining` (left out unless `healthy=false`).
    Draining,
    /// Its check fails (left out unless `healthy=false`).
    Critical,
    /// Its check changes state too often; held out until stable (unless `healthy=false`).
    Flapping,
    /// It lacks a tag the query asks for.
    TagMismatch,
    /// Its metadata does not have a pair the query asks for.
    MetadataMismatch,
    /// Overdue, but kept by self-preservation (still returned).
    HeldBySelfPreservation,
    /// It expired: no heartbeat within its TTL.
    Expired,
    /// It was deregistered.
    Deregistered,
}

/// One reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reason {
    /// What it is.
    pub code: ReasonCode,
    /// `true` when it keeps the instance out of the answer.
    pub excludes: bool,
    /// In words, with the values involved.
    pub detail: String,
    /// Since when it holds (RFC 3339), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub since: Option<Timestamp>,
    /// Who did it, when authorization is on (the token's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// One instance, with the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExplainedInstance {
    /// `/discover/{service}` with the same parameters returns it.
    pub included: bool,
    /// `registered`, or `removed` (expired or deregistered in the last minutes).
    pub registered: bool,
    /// Why it is out, and what else is worth knowing (empty: returned, nothing to say).
    pub reasons: Vec<Reason>,
    /// The instance as stored (as it was when it left, for a removed one).
    pub instance: Instance,
    /// Milliseconds left before the instance expires without another heartbeat, counted by
    /// the member that answered (absent for a removed instance; 0 when overdue). The
    /// leader's count is the one that expires instances; a follower counts only from the
    /// registration and the heartbeats it received itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
}

/// `GET /discover/{service}/explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "service": "web", "revision": 42, "included": 1, "self_preservation_active": false,
    "policy": {"never_empty": true}, "removed_kept_seconds": 600,
    "instances": [
        {"included": true, "registered": true, "reasons": [], "instance": {
            "id": "web-1", "service": "web", "address": "10.0.0.7:8001", "host": "10.0.0.7",
            "port": 8001, "tags": ["v2"], "metadata": {}, "weight": 1, "status": "up",
            "ttl_seconds": 30, "registered_at": "2026-11-22T10:00:00.000Z", "revision": 40}},
        {"included": false, "registered": true, "reasons": [{"code": "critical", "excludes": true,
            "detail": "check critical: GET /healthz: 503", "since": "2026-11-22T10:05:00.000Z"}],
         "instance": {
            "id": "web-2", "service": "web", "address": "10.0.0.8:8001", "host": "10.0.0.8",
            "port": 8001, "tags": ["v2"], "metadata": {}, "weight": 1, "status": "up",
            "ttl_seconds": 30, "health": "critical", "health_output": "GET /healthz: 503",
            "health_since": "2026-11-22T10:05:00.000Z", "registered_at": "2026-11-22T10:00:00.000Z",
            "revision": 42}},
        {"included": false, "registered": false, "reasons": [{"code": "expired", "excludes": true,
            "detail": "no heartbeat within its TTL of 30 s", "since": "2026-11-22T10:03:00.000Z"}],
         "instance": {
            "id": "web-3", "service": "web", "address": "10.0.0.9:8001", "host": "10.0.0.9",
            "port": 8001, "tags": [], "metadata": {}, "weight": 1, "status": "up",
            "ttl_seconds": 30, "registered_at": "2026-11-22T09:00:00.000Z", "revision": 12}}
    ]
})))]
pub struct ExplainResponse {
    /// The service.
    pub service: String,
    /// The revision the answer was read at.
    pub revision: Revision,
    /// How many instances `/discover` returns.
    pub included: usize,
    /// Self-preservation holds expiry now.
    pub self_preservation_active: bool,
    /// The service's protection policy, when an operator set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::ServicePolicy>,
    /// How long removed instances are kept for this answer, in seconds.
    pub removed_kept_seconds: u64,
    /// The instances registered, by id, then those removed, newest first.
    pub instances: Vec<ExplainedInstance>,
}
