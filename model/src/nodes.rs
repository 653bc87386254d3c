//! Sidecars as the control plane knows them: what each reports about itself
//! (`PUT /nodes/{node}`), the table of them (`GET /nodes`), and which of them have applied a
//! revision (`GET /propagation`, and writes with `?wait=propagated`).

use serde::{Deserialize, Serialize};

use crate::{Endpoint, FieldError, Revision, limits::MAX_NODE_LISTENERS, name::check_version};

/// What a sidecar reports about itself, at least once a second while its applied revision or
/// its staleness changes, and on a slow keep-alive otherwise. The node name is in the path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "version": "0.1.0", "dns": ["127.0.0.1:8600"], "http": ["127.0.0.1:15001"], "tcp": [],
    "admin": "127.0.0.1:15000", "epoch": "9f3c2a61d0b4e817", "revision": 42, "stale": false
})))]
// Unknown fields are let be, so that a newer sidecar can report to an older control plane.
pub struct NodeReport {
    /// The sidecar's version.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::version))]
    pub version: String,
    /// Where it answers DNS (`host:port`, UDP and TCP).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::listeners))]
    pub dns: Vec<String>,
    /// Where its HTTP proxy listens.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::listeners))]
    pub http: Vec<String>,
    /// Where its TCP proxy listens.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::listeners))]
    pub tcp: Vec<String>,
    /// Its admin API (`/health`, `/metrics`, `/explain/{service}`).
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::listener))]
    pub admin: Option<String>,
    /// The epoch of the revisions it follows (absent before its first snapshot).
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::report_epoch))]
    pub epoch: Option<String>,
    /// The revision its DNS and proxies answer from.
    #[serde(deserialize_with = "crate::de::integer")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::report_revision))]
    pub revision: Revision,
    /// `true` while it is not following the control plane (it serves its last snapshot).
    #[serde(default)]
    pub stale: bool,
}

impl NodeReport {
    /// Checks the version, the listen addresses and the epoch.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_version(&self.version)
            .map_err(|e| FieldError::new("version", format!("{:?} {e}", self.version)))?;
        for (field, list) in [("dns", &self.dns), ("http", &self.http), ("tcp", &self.tcp)] {
            if list.len() > MAX_NODE_LISTENERS {
                return Err(FieldError::new(
                    field,
                    format!(
                        "{} addresses; the limit is {MAX_NODE_LISTENERS}",
                        list.len()
                    ),
                ));
            }
            for (i, addr) in list.iter().enumerate() {
                check_listener(addr).map_err(|m| FieldError::new(format!("{field}[{i}]"), m))?;
            }
        }
        if let Some(addr) = &self.admin {
            check_listener(addr).map_err(|m| FieldError::new("admin", m))?;
        }
        if let Some(epoch) = &self.epoch
            && crate::query::parse_epoch(epoch).is_none()
        {
            return Err(FieldError::new(
                "epoch",
                format!("{epoch:?} is not an epoch (1 to 16 hex digits)"),
            ));
        }
        if self.revision > crate::limits::MAX_QUERY_REVISION {
            return Err(FieldError::new(
                "revision",
                format!(
                    "{} is beyond the largest revision, {}",
                    self.revision,
                    crate::limits::MAX_QUERY_REVISION
                ),
            ));
        }
        Ok(())
    }
}

/// A listen address: an IP address (IPv6 in brackets) and a port, as [`crate::syntax::socket_addr`]
/// writes it.
pub(crate) fn check_listener(addr: &str) -> Result<(), String> {
    let endpoint = Endpoint::parse_host_port(addr)?;
    match endpoint.host.parse::<std::net::IpAddr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "{addr:?} is not an IP address and a port (`127.0.0.1:8600`, `[::1]:8600`)"
        )),
    }
}

/// Whether the control plane still hears from a sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Reported within the control plane's `--node-lost-after`.
    Live,
    /// Silent for longer: left out of propagation waits, and forgotten after
    /// `--node-forget-after`.
    Lost,
}

/// One sidecar in `GET /nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "node": "node-1", "state": "live", "last_contact_ms": 0, "lag_revisions": 0, "lag_ms": 0,
    "version": "0.1.0", "dns": ["127.0.0.1:8600"], "http": ["127.0.0.1:8081"], "tcp": [],
    "admin": "127.0.0.1:9100", "epoch": "9f3c2a61d0b4e817", "revision": 42, "stale": false
})))]
pub struct NodeStatus {
    /// Its node name.
    pub node: String,
    /// `live` or `lost`.
    pub state: NodeState,
    /// Milliseconds since its last report reached this control plane (directly, or through
    /// another member of the cluster).
    pub last_contact_ms: u64,
    /// Revisions behind this control plane's head (the head itself when it follows another
    /// epoch).
    pub lag_revisions: u64,
    /// Milliseconds since the first revision it has not applied was applied here: how long
    /// it has been behind (0 when it is not).
    pub lag_ms: u64,
    /// What it reported last.
    #[serde(flatten)]
    pub report: NodeReport,
}

/// `GET /nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "head": 42, "count": 2, "nodes": [
        {"node": "node-1", "state": "live", "last_contact_ms": 840, "lag_revisions": 0,
         "lag_ms": 0, "version": "0.1.0", "dns": ["127.0.0.1:8600"], "http": ["127.0.0.1:8081"],
         "tcp": [], "admin": "127.0.0.1:9100", "epoch": "9f3c2a61d0b4e817", "revision": 42,
         "stale": false},
        {"node": "node-2", "state": "lost", "last_contact_ms": 61000, "lag_revisions": 7,
         "lag_ms": 58000, "version": "0.1.0", "dns": ["127.0.0.1:8600"], "http": [], "tcp": [],
         "epoch": "9f3c2a61d0b4e817", "revision": 35, "stale": true}
    ]
})))]
pub struct NodesResponse {
    /// The revision this control plane has applied.
    pub head: Revision,
    /// The sidecars, by name.
    pub nodes: Vec<NodeStatus>,
    /// How many.
    pub count: usize,
}

/// A sidecar that has not applied a revision yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Behind {
    /// Its node name.
    pub node: String,
    /// The revision it reported last (absent: it never reported to this control plane).
    pub revision: Option<Revision>,
    /// `true` while it is not following the control plane.
    pub stale: bool,
}

/// Which live sidecars have applied a revision: `GET /propagation`, and the `propagation`
/// of a write sent with `?wait=propagated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "revision": 42, "complete": false, "applied": ["node-1", "node-2"],
    "behind": [{"node": "node-3", "revision": 40, "stale": false}], "lost": [], "waited_ms": 5000
})))]
pub struct Propagation {
    /// The revision asked about.
    pub revision: Revision,
    /// Every sidecar asked about has applied it: all live ones, or those named.
    pub complete: bool,
    /// Those that have applied it.
    pub applied: Vec<String>,
    /// Those that have not (named ones never heard of included, without a revision).
    pub behind: Vec<Behind>,
    /// Sidecars not heard from within `--node-lost-after`: not waited for unless named.
    pub lost: Vec<String>,
    /// How long the answer waited for them.
    pub waited_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_VERSION_LEN;

    fn report() -> NodeReport {
        NodeReport {
            version: "0.1.0".into(),
            dns: vec!["127.0.0.1:8600".into()],
            http: vec!["[::1]:15001".into()],
            tcp: vec![],
            admin: Some("127.0.0.1:15000".into()),
            epoch: Some("9f3c2a61d0b4e817".into()),
            revision: 42,
            stale: false,
        }
    }

    #[test]
    fn a_report_is_checked_field_by_field() {
        assert_eq!(report().validate(), Ok(()));
        let bad = [
            (
                NodeReport {
                    version: "1 0".into(),
                    ..report()
                },
                "version",
            ),
            (
                NodeReport {
                    version: "v".repeat(MAX_VERSION_LEN + 1),
                    ..report()
                },
                "version",
            ),
            (
                NodeReport {
                    dns: vec!["localhost".into()],
                    ..report()
                },
                "dns[0]",
            ),
            (
                NodeReport {
                    tcp: vec!["10.0.0.1:80".into(); MAX_NODE_LISTENERS + 1],
                    ..report()
                },
                "tcp",
            ),
            (
                NodeReport {
                    admin: Some("x:0".into()),
                    ..report()
                },
                "admin",
            ),
            (
                NodeReport {
                    epoch: Some("xyz".into()),
                    ..report()
                },
                "epoch",
            ),
            (
                NodeReport {
                    revision: u64::MAX,
                    ..report()
                },
                "revision",
            ),
        ];
        for (r, field) in bad {
            assert_eq!(
                r.validate().map_err(|e| e.field),
                Err(field.to_owned()),
                "{r:?}"
            );
        }
    }

    #[test]
    fn a_node_status_carries_the_report_flat() {
        let status = NodeStatus {
            node: "node-1".into(),
            state: NodeState::Live,
            last_contact_ms: 5,
            lag_revisions: 0,
            lag_ms: 0,
            report: report(),
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["revision"], 42);
        assert_eq!(json["state"], "live");
        assert_eq!(serde_json::from_value::<NodeStatus>(json).unwrap(), status);
    }
}
