//! `POST /heartbeat`, `POST /deregister` and `POST /drain`: they all name an instance the same
//! way, by `(service, id)` or by `(service, address)` as in the seed API.

use serde::{Deserialize, Serialize};

use crate::{
    Endpoint, ErrorCode, FieldError, Health, Instance, InstanceId, ServiceName, Status,
    limits::MAX_BATCH_HEARTBEAT,
};

/// Names one instance: `service` plus `id`, or `service` plus `address` (seed form).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"service": "user-service", "address": "http://10.0.0.7:8001"})))]
pub struct InstanceRef {
    /// Service name.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::ref_service))]
    pub service: String,
    /// Instance id (as returned by `/register`); it wins when `address` is given too.
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::ref_id))]
    pub id: Option<String>,
    /// The address the instance registered with (URL or `host:port`).
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::ref_address))]
    pub address: Option<String>,
}

/// How an [`InstanceRef`] names its instance, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// By id.
    Id(InstanceId),
    /// By endpoint; matches the instance registered at that host and port.
    Endpoint(Endpoint),
}

impl InstanceRef {
    /// By service and id.
    pub fn by_id(service: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            id: Some(id.into()),
            address: None,
        }
    }

    /// By service and address (the seed form).
    pub fn by_address(service: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            id: None,
            address: Some(address.into()),
        }
    }

    /// Validates the reference.
    pub fn resolve(&self) -> Result<(ServiceName, Identity), FieldError> {
        let service = ServiceName::new(&self.service).map_err(|e| FieldError {
            code: ErrorCode::InvalidServiceName,
            field: "service".into(),
            message: format!("{:?} is not a valid service name: it {e}", self.service),
        })?;
        // Both are checked when both are given; the id wins.
        let endpoint = self
            .address
            .as_deref()
            .map(Endpoint::parse_address)
            .transpose()
            .map_err(|m| FieldError::new("address", m))?;
        let identity =
            match (&self.id, endpoint) {
                (Some(id), _) => Identity::Id(InstanceId::new(id).map_err(|e| {
                    FieldError::new("id", format!("{id:?} is not a valid id: it {e}"))
                })?),
                (None, Some(endpoint)) => Identity::Endpoint(endpoint),
                (None, None) => {
                    return Err(FieldError::new(
                        "id",
                        "give `id` or `address` with `service`",
                    ));
                }
            };
        Ok((service, identity))
    }
}

/// A heartbeat: one instance (seed form `{"service", "address"}` or `{"service", "id"}`), or a
/// batch as `{"instances": [...]}` for hosts with many instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"service": "user-service", "address": "http://10.0.0.7:8001"})))]
pub struct HeartbeatRequest {
    /// Service name (single form).
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::ref_service))]
    pub service: Option<String>,
    /// Instance id (single form).
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::ref_id))]
    pub id: Option<String>,
    /// Registered address (single, seed form).
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::ref_address))]
    pub address: Option<String>,
    /// Batch form: up to 1000 instances renewed in one request; the answer reports each.
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::heartbeat_batch))]
    pub instances: Option<Vec<InstanceRef>>,
}

/// The two shapes of a heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatForm {
    /// One instance; unknown answers 404.
    Single(InstanceRef),
    /// Many instances; the answer reports each.
    Batch(Vec<InstanceRef>),
}

impl HeartbeatRequest {
    /// Tells the single form from the batch form. A batch's entries are checked one by one
    /// when they are renewed: a malformed one is reported in the answer, like an unknown one.
    pub fn form(self) -> Result<HeartbeatForm, FieldError> {
        match (self.instances, self.service) {
            (Some(list), None) if self.id.is_none() && self.address.is_none() => {
                if list.len() > MAX_BATCH_HEARTBEAT {
                    return Err(FieldError::new(
                        "instances",
                        format!("{} entries; the limit is {MAX_BATCH_HEARTBEAT}", list.len()),
                    ));
                }
                Ok(HeartbeatForm::Batch(list))
            }
            (None, Some(service)) => Ok(HeartbeatForm::Single(InstanceRef {
                service,
                id: self.id,
                address: self.address,
            })),
            (Some(_), _) => Err(FieldError::new(
                "instances",
                "give either `instances` (batch) or `service` with `id`/`address`, not both",
            )),
            (None, None) => Err(FieldError::new(
                "service",
                "give `service` with `id` or `address`, or a batch as `instances`",
            )),
        }
    }
}

/// A renewed instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// Always `ok`.
    #[cfg_attr(feature = "openapi", schema(example = "ok"))]
    pub status: String,
    /// Service name.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub service: ServiceName,
    /// Instance id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: InstanceId,
    /// The instance's TTL in seconds.
    pub ttl_seconds: u32,
    /// The next deadline: the instance expires if no heartbeat arrives before it (RFC 3339, UTC).
    #[cfg_attr(feature = "openapi", schema(example = "2026-11-22T10:00:30.000Z"))]
    pub expires_at: String,
    /// Seconds between heartbeats the control plane suggests.
    pub heartbeat_interval_seconds: u32,
}

/// One entry of a batch heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatOutcome {
    /// The service as sent.
    pub service: String,
    /// The id (as sent, or resolved from the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `ok`, or the problem code (`instance_not_found`, `invalid_field`...).
    pub status: String,
    /// The next deadline when renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The answer to a batch heartbeat: always 200, with an outcome per entry in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchHeartbeatResponse {
    /// Entries renewed.
    pub renewed: usize,
    /// Entries not renewed (unknown, expired or invalid); re-register those.
    pub failed: usize,
    /// One outcome per entry, in request order.
    pub results: Vec<HeartbeatOutcome>,
    /// Seconds between heartbeats the control plane suggests.
    pub heartbeat_interval_seconds: u32,
}

/// The answer to `POST /deregister`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeregisterResponse {
    /// Always `deregistered`.
    #[cfg_attr(feature = "openapi", schema(example = "deregistered"))]
    pub status: String,
    /// A sentence for people.
    pub message: String,
    /// Service name.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub service: ServiceName,
    /// Instance id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: InstanceId,
    /// The revision of the removal.
    pub revision: u64,
    /// With `?wait=propagated`: which sidecars applied this write's revision before the
    /// answer (all of them when `complete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<crate::Propagation>,
}

/// `POST /drain`: put an instance into `draining` (or back to `up` with `"draining": false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"service": "user-service", "id": "10.0.0.7:8001", "draining": true})))]
pub struct DrainRequest {
    /// The instance, by `id` or `address`.
    #[serde(flatten)]
    pub instance: InstanceRef,
    /// `true` (default) to drain, `false` to take work again.
    #[serde(default = "yes")]
    pub draining: bool,
}

fn yes() -> bool {
    true
}

/// The answer to `POST /drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrainResponse {
    /// The status now in force.
    pub status: Status,
    /// The instance after the change.
    pub instance: Instance,
    /// The current revision (unchanged when the status already was the requested one).
    pub revision: u64,
    /// With `?wait=propagated`: which sidecars applied this write's revision before the
    /// answer (all of them when `complete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<crate::Propagation>,
}

/// `POST /check`: a sidecar reports the result of an instance's health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"service": "user-service", "id": "10.0.0.7:8001", "health": "critical", "output": "GET /healthz: 503"})))]
pub struct CheckReport {
    /// The instance, by `id` or `address`.
    #[serde(flatten)]
    pub instance: InstanceRef,
    /// `passing`, `critical`, or `flapping` (the sidecar's flap damping holds the instance).
    pub health: Health,
    /// What the check said (kept when critical or flapping; cut at 1024 characters).
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub output: Option<String>,
}

/// The answer to `POST /check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckResponse {
    /// The health now in force.
    pub health: Health,
    /// The instance after the report.
    pub instance: Instance,
    /// The revision of the change (unchanged when the health already was the reported one).
    pub revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_forms() {
        let single: HeartbeatRequest =
            serde_json::from_str(r#"{"service":"web","address":"http://localhost:8001"}"#).unwrap();
        assert!(matches!(single.form(), Ok(HeartbeatForm::Single(_))));
        let batch: HeartbeatRequest =
            serde_json::from_str(r#"{"instances":[{"service":"web","id":"a"}]}"#).unwrap();
        assert!(matches!(batch.form(), Ok(HeartbeatForm::Batch(v)) if v.len() == 1));
        let both: HeartbeatRequest =
            serde_json::from_str(r#"{"service":"web","instances":[]}"#).unwrap();
        assert!(both.form().is_err());
        assert!(HeartbeatRequest::default().form().is_err());
    }

    #[test]
    fn refs_resolve_by_id_or_endpoint() {
        let (svc, id) = InstanceRef::by_id("web", "a1").resolve().unwrap();
        assert_eq!(svc.as_str(), "web");
        assert_eq!(id, Identity::Id(InstanceId::new("a1").unwrap()));
        let (_, ep) = InstanceRef::by_address("web", "http://localhost:8001")
            .resolve()
            .unwrap();
        assert_eq!(
            ep,
            Identity::Endpoint(Endpoint {
                host: "localhost".into(),
                port: 8001
            })
        );
        assert!(
            InstanceRef {
                service: "web".into(),
                ..Default::default()
            }
            .resolve()
            .is_err()
        );
    }
}

/// The answer to `POST /heartbeat`: the single form's [`HeartbeatResponse`] or the batch
/// form's [`BatchHeartbeatResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum HeartbeatAnswer {
    /// The batch form's answer.
    Batch(BatchHeartbeatResponse),
    /// The single form's answer.
    Single(HeartbeatResponse),
}
