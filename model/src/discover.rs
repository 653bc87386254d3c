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

/// An [`Instance`] serialised once, for answers that repeat it. Serialising every instance on
/// every `/discover` was that route's largest cost; the registry keeps one of these per
/// instance, rebuilt when the instance changes, and [`DiscoverBody`] copies its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceJson(Arc<str>);

impl InstanceJson {
    /// `instance` as JSON, without the object's closing brace (the per-answer fields follow).
    pub fn new(instance: &Instance) -> Self {
        let mut json = serde_json::to_string(instance)
            .unwrap_or_else(|e| unreachable!("an Instance always serialises: {e}"));
        json.pop();
        Self(json.into())
    }
}

/// Writes a [`DiscoverResponse`] as JSON from [`InstanceJson`]s: the bytes serde would write
/// for the same answer (a test holds the two together), without serialising each instance.
#[derive(Debug)]
pub struct DiscoverBody {
    body: String,
    count: usize,
}

impl DiscoverBody {
    /// Starts the answer for `service`.
    pub fn new(service: &str) -> Self {
        let mut body = String::with_capacity(256);
        body.push_str("{\"service\":");
        // A validated service name needs no escaping, but let serde decide.
        body.push_str(&serde_json::to_string(service).unwrap_or_default());
        body.push_str(",\"instances\":[");
        Self { body, count: 0 }
    }

    /// Adds one [`DiscoveredInstance`].
    pub fn push(&mut self, instance: &InstanceJson, uptime_seconds: f64, held: bool) {
        use std::fmt::Write as _;
        if self.count > 0 {
            self.body.push(',');
        }
        self.count += 1;
        self.body.push_str(&instance.0);
        // f64's Display never uses exponents, so it is valid JSON.
        let _ = write!(self.body, ",\"uptime_seconds\":{uptime_seconds}");
        self.body
            .push_str(if held { ",\"held\":true}" } else { "}" });
    }

    /// Ends the answer: the count, the revision it was read at, the service's VIP.
    pub fn finish(mut self, revision: u64, vip: Option<std::net::Ipv4Addr>) -> Vec<u8> {
        use std::fmt::Write as _;
        let _ = write!(
            self.body,
            "],\"count\":{},\"revision\":{revision}",
            self.count
        );
        if let Some(vip) = vip {
            let _ = write!(self.body, ",\"vip\":\"{vip}\"");
        }
        self.body.push('}');
        self.body.into_bytes()
    }
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
    /// The service's protection policy, when an operator set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::ServicePolicy>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// [`DiscoverBody`] writes exactly what serde writes for the same answer.
    #[test]
    fn the_assembled_body_is_serdes_discover_response() {
        let instance: Instance = serde_json::from_value(serde_json::json!({
            "id": "a-1", "service": "web", "address": "http://10.0.0.1:80",
            "host": "10.0.0.1", "port": 80, "tags": ["v2"],
            "metadata": {"note": "quote \" back\\slash ünï \u{1}"},
            "weight": 3, "status": "draining", "ttl_seconds": 30,
            "registered_at": "2026-11-22T10:00:00.000Z", "revision": 42,
            "health": "critical", "health_output": "refused"
        }))
        .unwrap();
        let instance = Arc::new(instance);
        for (held, vip) in [(false, None), (true, Some("127.100.0.9".parse().unwrap()))] {
            let mut body = DiscoverBody::new("web");
            body.push(&InstanceJson::new(&instance), 12.5, held);
            body.push(&InstanceJson::new(&instance), 0.25, false);
            let written = body.finish(7, vip);
            let expected = DiscoverResponse {
                service: "web".into(),
                instances: vec![
                    DiscoveredInstance {
                        instance: instance.clone(),
                        uptime_seconds: 12.5,
                        held,
                    },
                    DiscoveredInstance {
                        instance: instance.clone(),
                        uptime_seconds: 0.25,
                        held: false,
                    },
                ],
                count: 2,
                revision: 7,
                vip,
            };
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&expected).unwrap()
            );
        }
        let empty = DiscoverBody::new("none").finish(1, None);
        let parsed: DiscoverResponse = serde_json::from_slice(&empty).unwrap();
        assert_eq!((parsed.count, parsed.instances.len()), (0, 0));
    }
}
