//! One incremental (delta) ADS stream's bookkeeping, without I/O: the names subscribed per
//! resource type and the version the client holds of each, so that a response carries only
//! what the client lacks.
//!
//! Versions are per resource: a service's endpoints are at `<epoch>-<revision>` (the epoch
//! makes a version from an earlier in-memory history never match), Listener and Cluster, which
//! depend on the name only, at this build's version. A client that reconnects names the
//! versions it holds (`initial_resource_versions`) and gets only what moved since. Every
//! request that carries a nonce ACKs or NACKs that response. Names that are not service names
//! are answered as removed (they do not exist). Wildcard subscriptions are not served.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::{
    envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
    google::protobuf::Any,
};
use waypost_model::ServiceName;

use super::{resources::Kind, stream::Received};

#[derive(Debug, Default)]
struct Subscription {
    /// The valid service names subscribed to.
    names: BTreeSet<ServiceName>,
    /// The version the client holds of each (as it told us, or as we sent).
    held: BTreeMap<ServiceName, String>,
    /// Subscribed names that are not service names, to answer as removed.
    invalid: BTreeSet<String>,
}

/// The state of one delta ADS stream.
#[derive(Debug, Default)]
pub(crate) struct DeltaStream {
    node: String,
    nonces: u64,
    subscriptions: [Subscription; 3],
}

impl DeltaStream {
    /// The client's node id, from its first request that named one.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// Takes one request from the client.
    pub(crate) fn receive(&mut self, req: &DeltaDiscoveryRequest) -> Received {
        if let Some(node) = &req.node
            && self.node.is_empty()
        {
            self.node.clone_from(&node.id);
        }
        let Some(kind) = Kind::from_type_url(&req.type_url) else {
            return Received::UnknownType(req.type_url.clone());
        };
        let sub = &mut self.subscriptions[kind.index()];
        for (name, version) in &req.initial_resource_versions {
            if let Ok(service) = ServiceName::new(name) {
                sub.held.insert(service, version.clone());
            }
        }
        let mut changed = false;
        for name in &req.resource_names_subscribe {
            changed = true;
            match ServiceName::new(name) {
                Ok(service) => {
                    sub.names.insert(service);
                }
                Err(_) => {
                    sub.invalid.insert(name.clone());
                }
            }
        }
        for name in &req.resource_names_unsubscribe {
            if let Ok(service) = ServiceName::new(name) {
                sub.names.remove(&service);
                sub.held.remove(&service);
            }
            sub.invalid.remove(name);
        }
        match &req.error_detail {
            Some(status) if !req.response_nonce.is_empty() => Received::Nack {
                kind,
                message: status.message.clone(),
            },
            _ if changed => Received::Subscribed(kind),
            _ => Received::Ack(kind),
        }
    }

    /// The services subscribed with `kind`.
    pub(crate) fn names(&self, kind: Kind) -> impl Iterator<Item = &ServiceName> + Clone {
        self.subscriptions[kind.index()].names.iter()
    }

    /// The subscribed services of `kind` whose version (as `version_of` gives it) the client
    /// does not hold, and whether invalid names wait to be answered as removed.
    pub(crate) fn due(
        &self,
        kind: Kind,
        version_of: impl Fn(&ServiceName) -> String,
    ) -> (Vec<ServiceName>, bool) {
        let sub = &self.subscriptions[kind.index()];
        let names = sub
            .names
            .iter()
            .filter(|s| sub.held.get(*s) != Some(&version_of(s)))
            .cloned()
            .collect();
        (names, !sub.invalid.is_empty())
    }

    /// Builds a response of `kind` with `resources` (name, version, resource) and the invalid
    /// names as removed; the client holds them from now on.
    pub(crate) fn respond(
        &mut self,
        kind: Kind,
        system_version: String,
        resources: Vec<(ServiceName, String, Any)>,
    ) -> DeltaDiscoveryResponse {
        self.nonces += 1;
        let sub = &mut self.subscriptions[kind.index()];
        let removed = std::mem::take(&mut sub.invalid).into_iter().collect();
        let resources = resources
            .into_iter()
            .map(|(service, version, any)| {
                let name = service.to_string();
                sub.held.insert(service, version.clone());
                Resource {
                    name,
                    version,
                    resource: Some(any),
                    ..Default::default()
                }
            })
            .collect();
        DeltaDiscoveryResponse {
            system_version_info: system_version,
            resources,
            type_url: kind.type_url().to_owned(),
            removed_resources: removed,
            nonce: self.nonces.to_string(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::rpc::Status;

    use super::*;

    fn subscribe(kind: Kind, names: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: kind.type_url().to_owned(),
            resource_names_subscribe: names.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn versions(at: &str) -> impl Fn(&ServiceName) -> String + '_ {
        move |_| at.to_owned()
    }

    fn send(s: &mut DeltaStream, kind: Kind, at: &str) -> DeltaDiscoveryResponse {
        let (names, _) = s.due(kind, versions(at));
        let resources = names
            .into_iter()
            .map(|n| (n, at.to_owned(), Any::default()))
            .collect();
        s.respond(kind, at.to_owned(), resources)
    }

    #[test]
    fn only_what_the_client_lacks_is_sent() {
        let mut s = DeltaStream::default();
        assert_eq!(
            s.receive(&subscribe(Kind::Endpoints, &["echo", "pay"])),
            Received::Subscribed(Kind::Endpoints)
        );
        let first = send(&mut s, Kind::Endpoints, "e-5");
        assert_eq!(first.resources.len(), 2);
        assert_eq!(s.due(Kind::Endpoints, versions("e-5")).0.len(), 0);
        // echo moved, pay did not.
        let moved = |s: &ServiceName| if s.as_str() == "echo" { "e-6" } else { "e-5" }.to_owned();
        assert_eq!(
            s.due(Kind::Endpoints, moved).0,
            [ServiceName::new("echo").unwrap()]
        );
        // Unsubscribing forgets.
        let mut req = subscribe(Kind::Endpoints, &[]);
        req.resource_names_unsubscribe = vec!["pay".into()];
        req.response_nonce = first.nonce.clone();
        assert_eq!(s.receive(&req), Received::Ack(Kind::Endpoints));
        assert_eq!(s.due(Kind::Endpoints, versions("e-6")).0.len(), 1);
    }

    #[test]
    fn a_reconnect_names_what_it_holds() {
        let mut s = DeltaStream::default();
        let mut req = subscribe(Kind::Endpoints, &["echo", "pay"]);
        req.initial_resource_versions = [("echo".to_owned(), "e-5".to_owned())].into();
        s.receive(&req);
        let (due, _) = s.due(Kind::Endpoints, versions("e-5"));
        assert_eq!(due, [ServiceName::new("pay").unwrap()]);
    }

    #[test]
    fn nacks_and_invalid_names() {
        let mut s = DeltaStream::default();
        s.receive(&subscribe(Kind::Cluster, &["echo", "Not A Name"]));
        let (_, invalid) = s.due(Kind::Cluster, versions("v"));
        assert!(invalid);
        let res = send(&mut s, Kind::Cluster, "v");
        assert_eq!(res.removed_resources, ["Not A Name"]);
        let mut nack = subscribe(Kind::Cluster, &[]);
        nack.response_nonce = res.nonce;
        nack.error_detail = Some(Status {
            message: "no".into(),
            ..Default::default()
        });
        assert!(matches!(s.receive(&nack), Received::Nack { .. }));
    }
}
