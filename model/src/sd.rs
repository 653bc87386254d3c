//! Prometheus's HTTP service discovery format (`GET /sd/prometheus`): a list of target groups,
//! one per instance, whose `__meta_waypost_*` labels say what the registry knows of it, for
//! relabelling rules to keep, drop or copy.
//!
//! The labels follow Prometheus's own service discoveries (Consul's above all): tags joined
//! with a comma before, between and after them, so that a rule can match `.*,metrics,.*`;
//! metadata keys made into valid label names, one label each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Endpoint, Instance, Status};

/// The prefix of every label this discovery sets (Prometheus drops `__meta_*` labels after
/// relabelling, so they never reach a stored series unless a rule copies them).
pub const LABEL_PREFIX: &str = "__meta_waypost_";

/// The prefix of the labels that carry metadata, one per key.
pub const METADATA_LABEL_PREFIX: &str = "__meta_waypost_metadata_";

/// The separator of the tags label, also written before the first tag and after the last.
pub const TAG_SEPARATOR: char = ',';

/// One target group: here always one target, the instance's `host:port`, and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "targets": ["10.0.0.7:8001"],
    "labels": {
        "__meta_waypost_service": "user-service",
        "__meta_waypost_id": "10.0.0.7:8001",
        "__meta_waypost_address": "http://10.0.0.7:8001",
        "__meta_waypost_node": "node-a",
        "__meta_waypost_tags": ",metrics,v2,",
        "__meta_waypost_health": "passing",
        "__meta_waypost_draining": "false",
        "__meta_waypost_metadata_zone": "a"
    }
})))]
pub struct TargetGroup {
    /// The instance's `host:port` (an IPv6 host in brackets), whatever form its address was
    /// registered in.
    pub targets: Vec<String>,
    /// `__meta_waypost_*` labels, sorted by name.
    pub labels: BTreeMap<String, String>,
}

impl TargetGroup {
    /// The target group of one instance.
    ///
    /// A URL's scheme and path set neither `__scheme__` nor `__metrics_path__`: the registered
    /// address is where the service answers, which need not be where, or how, its metrics are
    /// served, and a label from discovery would silently override the scrape configuration's
    /// `scheme` and `metrics_path`. The address as registered is in `__meta_waypost_address`
    /// for a relabelling rule that wants them.
    pub fn for_instance(instance: &Instance) -> Self {
        let target = Endpoint {
            host: instance.host.clone(),
            port: instance.port,
        }
        .host_port();
        let mut labels = BTreeMap::new();
        let mut set = |name: &str, value: String| {
            labels.insert(format!("{LABEL_PREFIX}{name}"), value);
        };
        set("service", instance.service.as_str().to_owned());
        set("id", instance.id.as_str().to_owned());
        set("address", instance.address.clone());
        set(
            "node",
            instance.node.as_deref().unwrap_or_default().to_owned(),
        );
        set("tags", join_tags(&instance.tags));
        set("health", instance.health.as_str().to_owned());
        let draining = instance.status == Status::Draining;
        set("draining", draining.to_string());
        labels.extend(metadata_labels(&instance.metadata));
        Self {
            targets: vec![target],
            labels,
        }
    }
}

/// Tags as one label value: `,a,b,` (in the instance's order: a registration's tags are
/// sorted and deduplicated), so that `.*,a,.*` matches an instance tagged `a` whatever its
/// other tags; no tags is the empty string.
pub fn join_tags(tags: &[String]) -> String {
    if tags.is_empty() {
        return String::new();
    }
    let mut joined = String::from(TAG_SEPARATOR);
    for tag in tags {
        joined.push_str(tag);
        joined.push(TAG_SEPARATOR);
    }
    joined
}

/// A metadata key as a label name: every character outside `[A-Za-z0-9_]` becomes `_` (a key
/// never starts a label name, so a leading digit is fine).
pub fn label_name(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{METADATA_LABEL_PREFIX}{safe}")
}

/// One label per metadata entry. When several keys become the same label name (`a.b`, `a-b`
/// and `a_b` all become `..._a_b`), one wins, the same one every time: a key that needed no
/// change if there is one, otherwise the first in byte order; the others are left out.
pub fn metadata_labels(metadata: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    // Two passes: keys already valid first, then the others in byte order (the map's order),
    // each taking only a name still free.
    let (exact, changed): (Vec<_>, Vec<_>) = metadata
        .iter()
        .partition(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    for (key, value) in exact.into_iter().chain(changed) {
        labels
            .entry(label_name(key))
            .or_insert_with(|| value.clone());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_joined_with_commas_around_them() {
        assert_eq!(join_tags(&[]), "");
        assert_eq!(join_tags(&["a".to_owned()]), ",a,");
        assert_eq!(
            join_tags(&["metrics".to_owned(), "v2".to_owned()]),
            ",metrics,v2,"
        );
    }

    #[test]
    fn metadata_keys_become_label_names() {
        assert_eq!(label_name("zone"), "__meta_waypost_metadata_zone");
        assert_eq!(
            label_name("app.kubernetes-io"),
            "__meta_waypost_metadata_app_kubernetes_io"
        );
        assert_eq!(label_name("9lives"), "__meta_waypost_metadata_9lives");
        for key in ["a.b", "a-b", "A_9", "x.y-z_"] {
            let name = label_name(key);
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn colliding_keys_keep_the_exact_one_else_the_first_in_byte_order() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let with_exact = metadata_labels(&map(&[("a-b", "dash"), ("a.b", "dot"), ("a_b", "us")]));
        assert_eq!(with_exact.len(), 1);
        assert_eq!(with_exact["__meta_waypost_metadata_a_b"], "us");
        let without = metadata_labels(&map(&[("a.b", "dot"), ("a-b", "dash"), ("c", "c")]));
        assert_eq!(without.len(), 2);
        // '-' sorts before '.'.
        assert_eq!(without["__meta_waypost_metadata_a_b"], "dash");
        assert_eq!(without["__meta_waypost_metadata_c"], "c");
    }
}
