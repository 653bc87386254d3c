//! One protection policy per service (`PUT /services/{service}/policy`), set by an operator
//! and replicated like everything else; every instance of the service carries it, so that
//! sidecars and SDKs learn it from the change stream they already follow.

use serde::{Deserialize, Serialize};

use crate::{FieldError, Revision};

/// How a service is protected from losing all its instances at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"min_healthy_percent": 30, "never_empty": true})))]
pub struct ServicePolicy {
    /// The proxies' panic threshold for this service: when fewer than this share (in percent)
    /// of its instances are usable (not ejected by outlier detection), they balance over all of
    /// them. Absent: the sidecar's `--panic-threshold`. 0 turns panic mode off.
    #[serde(
        default,
        deserialize_with = "crate::de::present_integer",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::min_healthy_percent))]
    pub min_healthy_percent: Option<u32>,
    /// When expiry or failing checks (not a deregistration or a drain) would leave the service
    /// with no instance that takes work, DNS, the proxies and the SDK's resolver keep the last
    /// non-empty set, and say so, until an instance takes work again.
    #[serde(default)]
    pub never_empty: bool,
}

impl ServicePolicy {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self.min_healthy_percent {
            Some(p) if p > 100 => Err(FieldError::new(
                "min_healthy_percent",
                format!("{p} is above 100"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether `never_empty` keeps an instance of the last non-empty set: `now` is the
    /// instance as the registry has it now (absent: it left), `deregistered` whether it left
    /// by a deregistration. A drain or a deregistration is meant, and is not undone.
    pub fn keeps(now: Option<&crate::Instance>, deregistered: bool) -> bool {
        match now {
            Some(instance) => instance.status != crate::Status::Draining,
            None => !deregistered,
        }
    }

    /// The panic threshold as a share, if the policy sets one.
    pub fn panic_threshold(&self) -> Option<f64> {
        self.min_healthy_percent.map(|p| f64::from(p) / 100.0)
    }
}

/// The answer to `PUT` and `DELETE /services/{service}/policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "service": "web", "policy": {"min_healthy_percent": 30, "never_empty": true}, "revision": 44
})))]
pub struct PolicyResponse {
    /// The service.
    pub service: String,
    /// The policy now in force (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<ServicePolicy>,
    /// The revision at which the service's instances carry it (the head when it has none).
    pub revision: Revision,
}
