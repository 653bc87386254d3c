//! `GET /health` and `GET /ready`.

use serde::{Deserialize, Serialize};

/// Liveness with details. Always 200 while the process serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// `healthy`, or `degraded` while self-preservation holds expiry or the store failed.
    #[cfg_attr(feature = "openapi", schema(example = "healthy"))]
    pub status: String,
    /// `durable`, `memory` or `failed`.
    pub store: String,
    /// True while expiry is held because too many instances stopped heartbeating at once.
    pub self_preservation: bool,
    /// Registered instances.
    pub instances: usize,
    /// The head revision.
    pub revision: u64,
    /// The revision history's epoch, 16 hex digits.
    pub epoch: String,
}

/// Readiness: 200 when the store is open and writes are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadyResponse {
    /// Always true in a 200 answer.
    pub ready: bool,
}
