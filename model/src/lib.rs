//! The Waypost wire vocabulary: every JSON type that crosses the control plane's HTTP API,
//! defined once and shared by the control plane, the sidecar and the client SDK.
//!
//! # Glossary
//! - **service**: a name that clients look up (`user-service`); an RFC 1123 label, because it
//!   becomes a DNS label in the sidecar (`user-service.service.waypost.`).
//! - **instance**: one registered endpoint of a service, identified by `(service, id)`. When a
//!   registration gives no id, the id is derived from the endpoint as `host:port`.
//! - **revision**: one global counter that moves by one for every visible change (register,
//!   update, deregister, expiry, status change). Heartbeats that change nothing move nothing.
//! - **epoch**: a random identity of one revision history. Revisions from different epochs
//!   (a wiped data directory, an in-memory control plane restarted) are not comparable.
//!
//! # Layout
//! - [`name`]: validated names ([`ServiceName`], [`InstanceId`]) and tag rules.
//! - [`instance`]: the stored [`Instance`], its [`Status`] and optional [`Check`].
//! - [`register`], [`heartbeat`], [`discover`], [`watch`]: request and response bodies per endpoint.
//! - [`explain`]: why `/discover` returns an instance or not.
//! - [`nodes`]: sidecars' reports, the node table and propagation answers.
//! - [`policy`]: a service's protection policy.
//! - [`sd`]: Prometheus's HTTP service discovery format and its `__meta_waypost_*` labels.
//! - [`problem`]: the RFC 9457 error body and its stable [`ErrorCode`]s.
//! - [`limits`]: every explicit limit, in one place; [`syntax`]: the syntax of every string
//!   field and query parameter as a regular expression built from them; [`query`]: the query
//!   parameters' parsers.
//! - `schema` (feature `openapi`): the OpenAPI schemas of request fields, from the two above.
//!
//! This crate does no I/O. With the `openapi` feature it also derives `utoipa::ToSchema`.

pub mod cluster;
mod de;
pub mod discover;
pub mod explain;
pub mod heartbeat;
pub mod instance;
pub mod limits;
pub mod name;
pub mod nodes;
pub mod ops;
pub mod policy;
pub mod problem;
pub mod query;
pub mod register;
#[cfg(feature = "openapi")]
pub mod schema;
pub mod sd;
pub mod syntax;
pub mod watch;

pub use cluster::{AddMember, ClusterMember, ClusterStatus};
pub use discover::{
    DiscoverBody, DiscoverResponse, DiscoveredInstance, InstanceJson, ServiceSummary,
    ServicesResponse,
};
pub use explain::{ExplainResponse, ExplainedInstance, Reason, ReasonCode};
pub use heartbeat::{
    BatchHeartbeatResponse, CheckReport, CheckResponse, DeregisterResponse, DrainRequest,
    DrainResponse, HeartbeatAnswer, HeartbeatOutcome, HeartbeatRequest, HeartbeatResponse,
    InstanceRef,
};
pub use instance::{Check, Endpoint, Health, Instance, Status, Timestamp};
pub use name::{InstanceId, NameError, ServiceName};
pub use nodes::{Behind, NodeReport, NodeState, NodeStatus, NodesResponse, Propagation};
pub use ops::{HealthResponse, ReadyResponse};
pub use policy::{PolicyResponse, ServicePolicy};
pub use problem::{ErrorCode, Problem};
pub use register::{RegisterRequest, RegisterResponse, Registration};
pub use sd::TargetGroup;
#[cfg(feature = "openapi")]
pub use watch::WatchMessage;
pub use watch::{ChangeReason, WatchEvent};

/// One global, monotonically increasing counter of visible changes (wire fields are plain `u64`
/// so the OpenAPI document shows an integer, not a named alias).
pub type Revision = u64;

/// The identity of one revision history, rendered as 16 lowercase hex digits on the wire.
pub type Epoch = u64;

/// A field that failed validation: which field, and why, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The stable error code this failure maps to (`invalid_field`, `invalid_service_name`...).
    pub code: ErrorCode,
    /// The JSON field at fault, for example `tags[2]` or `address`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidField,
            field: field.into(),
            message: message.into(),
        }
    }
}
