//! `POST /register`: one lenient request body that accepts the seed form
//! (`{"service", "address"}`) and the rich form, validated into a [`Registration`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    Check, Endpoint, ErrorCode, FieldError, Instance, InstanceId, ServiceName, Status,
    limits::{
        MAX_METADATA_ENTRIES, MAX_METADATA_VALUE_LEN, MAX_TAGS, TTL_SECONDS_RANGE, WEIGHT_RANGE,
    },
    name::{check_metadata_key, check_node, check_tag},
};

/// A registration as sent. Give the endpoint as `address` (a URL or `host:port`) or as `host`
/// and `port`. Re-registering the same `(service, id)` updates the instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "service": "user-service", "address": "http://10.0.0.7:8001",
    "tags": ["v2"], "metadata": {"zone": "a"}, "weight": 1, "ttl_seconds": 30
})))]
pub struct RegisterRequest {
    /// Service name: an RFC 1123 label (lowercase letters, digits, `-`; 1 to 63 characters).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::register_service))]
    pub service: String,
    /// Instance id, unique within the service. Default: the endpoint as `host:port`.
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::register_id))]
    pub id: Option<String>,
    /// The endpoint as a URL (`http://localhost:8001`) or `host:port`.
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::register_address))]
    pub address: Option<String>,
    /// The endpoint's host (IP or DNS name), with `port`, instead of `address`.
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::host))]
    pub host: Option<String>,
    /// The endpoint's port, with `host`.
    #[serde(
        default,
        deserialize_with = "crate::de::present_integer",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::port))]
    pub port: Option<u16>,
    /// Up to 32 tags of letters, digits, `-` and `_` (1 to 63 characters each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::tags))]
    pub tags: Vec<String>,
    /// Up to 64 string pairs (keys up to 128, values up to 512 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::metadata))]
    pub metadata: BTreeMap<String, String>,
    /// Relative weight for weighted balancing, 1 to 1000. Default 1.
    #[serde(
        default,
        deserialize_with = "crate::de::present_integer",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::weight))]
    pub weight: Option<u32>,
    /// Seconds without a heartbeat before the instance expires, 1 to 86400. Default: the
    /// control plane's `default_ttl` (30 s).
    #[serde(
        default,
        deserialize_with = "crate::de::present_integer",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::ttl_seconds))]
    pub ttl_seconds: Option<u32>,
    /// A health check for the sidecar to run.
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub check: Option<Check>,
    /// Initial status; `draining` registers an instance that takes no new work yet. Default `up`.
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub status: Option<Status>,
    /// The host the instance runs on; the sidecar configured with this node name runs its
    /// `check` (letters, digits, `-`, `_`, `.`; up to 253 characters).
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::node))]
    pub node: Option<String>,
}

impl RegisterRequest {
    /// The seed form: a service and an address.
    pub fn new(service: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            address: Some(address.into()),
            ..Self::default()
        }
    }

    /// Validates every field; `default_ttl` fills in a missing `ttl_seconds`.
    pub fn validate(&self, default_ttl: u32) -> Result<Registration, FieldError> {
        let service = ServiceName::new(&self.service).map_err(|e| FieldError {
            code: ErrorCode::InvalidServiceName,
            field: "service".into(),
            message: format!("{:?} is not a valid service name: it {e}", self.service),
        })?;
        let (endpoint, address) = match (&self.address, &self.host, self.port) {
            (Some(address), None, None) => (
                Endpoint::parse_address(address).map_err(|m| FieldError::new("address", m))?,
                address.clone(),
            ),
            (None, Some(host), Some(port)) => {
                let ep = Endpoint::new(host, port).map_err(|m| FieldError::new("host", m))?;
                let address = ep.host_port();
                (ep, address)
            }
            _ => {
                return Err(FieldError::new(
                    "address",
                    "give either `address` (URL or host:port) or both `host` and `port`",
                ));
            }
        };
        let id = match &self.id {
            Some(id) => InstanceId::new(id)
                .map_err(|e| FieldError::new("id", format!("{id:?} is not a valid id: it {e}")))?,
            None => InstanceId::new(&endpoint.host_port())
                .map_err(|e| FieldError::new("address", format!("cannot derive an id: {e}")))?,
        };
        if self.tags.len() > MAX_TAGS {
            return Err(FieldError::new(
                "tags",
                format!("{} tags; the limit is {MAX_TAGS}", self.tags.len()),
            ));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            check_tag(tag)
                .map_err(|e| FieldError::new(format!("tags[{i}]"), format!("{tag:?} {e}")))?;
        }
        let mut tags = self.tags.clone();
        tags.sort();
        tags.dedup();
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(FieldError::new(
                "metadata",
                format!(
                    "{} entries; the limit is {MAX_METADATA_ENTRIES}",
                    self.metadata.len()
                ),
            ));
        }
        for (k, v) in &self.metadata {
            check_metadata_key(k)
                .map_err(|e| FieldError::new("metadata", format!("key {k:?} {e}")))?;
            if v.chars().count() > MAX_METADATA_VALUE_LEN {
                return Err(FieldError::new(
                    format!("metadata.{k}"),
                    format!("value is longer than {MAX_METADATA_VALUE_LEN} characters"),
                ));
            }
        }
        let weight = self.weight.unwrap_or(1);
        if !WEIGHT_RANGE.contains(&weight) {
            return Err(FieldError::new(
                "weight",
                format!("{weight} is outside {WEIGHT_RANGE:?}"),
            ));
        }
        let ttl_seconds = self.ttl_seconds.unwrap_or(default_ttl);
        if !TTL_SECONDS_RANGE.contains(&ttl_seconds) {
            return Err(FieldError::new(
                "ttl_seconds",
                format!("{ttl_seconds} is outside {TTL_SECONDS_RANGE:?}"),
            ));
        }
        if let Some(check) = &self.check {
            check.validate()?;
        }
        if let Some(node) = &self.node {
            check_node(node).map_err(|e| FieldError::new("node", format!("{node:?} {e}")))?;
        }
        Ok(Registration {
            service,
            id,
            address,
            endpoint,
            tags,
            metadata: self.metadata.clone(),
            weight,
            ttl_seconds,
            check: self.check.clone(),
            status: self.status.unwrap_or_default(),
            node: self.node.clone(),
        })
    }
}

/// A validated registration, ready for the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Validated service name.
    pub service: ServiceName,
    /// Given or derived id.
    pub id: InstanceId,
    /// The address as registered, or `host:port`.
    pub address: String,
    /// Parsed endpoint.
    pub endpoint: Endpoint,
    /// Sorted, without duplicates.
    pub tags: Vec<String>,
    /// Metadata pairs.
    pub metadata: BTreeMap<String, String>,
    /// Weight, defaulted.
    pub weight: u32,
    /// TTL, defaulted.
    pub ttl_seconds: u32,
    /// Optional health check.
    pub check: Option<Check>,
    /// Initial status.
    pub status: Status,
    /// The node it runs on.
    pub node: Option<String>,
}

/// The answer to `POST /register`: 201 when the instance is new, 200 when it was updated.
/// `status` and `message` keep the seed API's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// `registered` (new) or `updated` (same id registered again).
    #[cfg_attr(feature = "openapi", schema(example = "registered"))]
    pub status: String,
    /// A sentence for people.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "Service user-service registered at http://10.0.0.7:8001")
    )]
    pub message: String,
    /// The stored instance.
    pub instance: Instance,
    /// The revision at which the registration became visible.
    pub revision: u64,
    /// Seconds between heartbeats the control plane suggests (a third of the TTL, at most
    /// the configured hint).
    pub heartbeat_interval_seconds: u32,
    /// With `?wait=propagated`: which sidecars applied this write's revision before the
    /// answer (all of them when `complete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<crate::Propagation>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_form_derives_id_and_defaults() {
        let reg = RegisterRequest::new("user-service", "http://localhost:8001")
            .validate(30)
            .unwrap();
        assert_eq!(reg.id.as_str(), "localhost:8001");
        assert_eq!(reg.address, "http://localhost:8001");
        assert_eq!(reg.ttl_seconds, 30);
        assert_eq!(reg.weight, 1);
        assert_eq!(reg.status, Status::Up);
    }

    #[test]
    fn host_and_port_form() {
        let req = RegisterRequest {
            service: "db".into(),
            host: Some("::1".into()),
            port: Some(5432),
            ..Default::default()
        };
        let reg = req.validate(30).unwrap();
        assert_eq!(reg.id.as_str(), "[::1]:5432");
        assert_eq!(reg.address, "[::1]:5432");
    }

    #[test]
    fn each_invalid_field_is_named() {
        let base = RegisterRequest::new("web", "10.0.0.1:80");
        let cases: Vec<(RegisterRequest, &str, ErrorCode)> = vec![
            (
                RegisterRequest {
                    service: "Web".into(),
                    ..base.clone()
                },
                "service",
                ErrorCode::InvalidServiceName,
            ),
            (
                RegisterRequest {
                    address: None,
                    ..base.clone()
                },
                "address",
                ErrorCode::InvalidField,
            ),
            (
                RegisterRequest {
                    port: Some(80),
                    ..base.clone()
                },
                "address",
                ErrorCode::InvalidField,
            ),
            (
                RegisterRequest {
                    id: Some("a b".into()),
                    ..base.clone()
                },
                "id",
                ErrorCode::InvalidField,
            ),
            (
                RegisterRequest {
                    tags: vec!["ok".into(), "not ok".into()],
                    ..base.clone()
                },
                "tags[1]",
                ErrorCode::InvalidField,
            ),
            (
                RegisterRequest {
                    weight: Some(0),
                    ..base.clone()
                },
                "weight",
                ErrorCode::InvalidField,
            ),
            (
                RegisterRequest {
                    ttl_seconds: Some(0),
                    ..base.clone()
                },
                "ttl_seconds",
                ErrorCode::InvalidField,
            ),
        ];
        for (req, field, code) in cases {
            let err = req.validate(30).unwrap_err();
            assert_eq!((err.field.as_str(), err.code), (field, code), "{err}");
        }
    }
}
