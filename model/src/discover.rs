//! `GET /discover/{service}` and `GET /services`, in the seed API's shapes plus richer fields.

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::Instance;

/// One instance in a discovery answer: the stored instance plus its uptime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiscoveredInstance {
    /// The stored instance (`address`, `id`, `host`, `port`, `tags`...).
    // An `Arc`, so that an answer shares the registry's copy instead of cloning it.
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Instance))]
    pub instance: Arc<Instance>,
    /// Seconds since the instance was first registered.
    #[cfg_attr(feature = "openapi", schema(example = 45.2))]
    pub uptime_seconds: f64,
    /// `true` while the instance's TTL has run out without a heartbeat and self-preservation
    /// keeps it registered (absent otherwise): it is probably gone, or the control plane
    /// cannot hear it. Held instances are released after the maximum hold (see the README).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

/// The answer to `GET /discover/{service}`. An unknown service is an empty list, not an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiscoverResponse {
    /// The service asked for.
    #[cfg_attr(feature = "openapi", schema(example = "user-service"))]
    pub service: String,
    /// Matching instances, ordered by id.
    pub instances: Vec<DiscoveredInstance>,
    /// `instances.len()`.
    pub count: usize,
    /// The control plane's revision when the answer was read (also in `X-Waypost-Index`).
    pub revision: u64,
    /// The service's virtual IP, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "127.100.0.1"))]
    pub vip: Option<std::net::Ipv4Addr>,
}

/// Counts for one service in `GET /services`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceSummary {
    /// Registered instances, draining included.
    pub total_instances: usize,
    /// Instances that take work (status `up`, health `passing`).
    pub active_instances: usize,
    /// The service's virtual IP, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "127.100.0.1"))]
    pub vip: Option<std::net::Ipv4Addr>,
}

/// The answer to `GET /services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "services": {"user-service": {"total_instances": 2, "active_instances": 2}},
    "total_services": 1, "revision": 42
})))]
pub struct ServicesResponse {
    /// Every service with at least one instance, by name.
    pub services: BTreeMap<String, ServiceSummary>,
    /// `services.len()`.
    pub total_services: usize,
    /// The control plane's revision when the answer was read.
    pub revision: u64,
}
