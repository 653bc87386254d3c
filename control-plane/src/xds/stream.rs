//! One ADS stream's bookkeeping (state of the world), without I/O: what the client subscribed
//! to per resource type, the nonce of the last response of each type, which responses are due,
//! and the registry revision each service's endpoints were last sent at.
//!
//! The protocol as served: a request whose `response_nonce` is not the last one sent for its
//! type is stale (the client had not seen our newest response yet) and is ignored; otherwise it
//! ACKs (no `error_detail`) or NACKs that response, and its `resource_names` are the client's
//! whole subscription for the type. A new or changed subscription makes a response due for the
//! type. Listener and Cluster responses hold every subscribed resource (a missing one counts as
//! deleted). Endpoint responses hold only the services the client lacks (one may leave out the
//! others, which are then unchanged, not removed), and are due again when the revision of a
//! subscribed service moves; a change to any other service costs a stream nothing.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::{
    envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
    google::protobuf::Any,
};
use waypost_model::{Epoch, Revision, ServiceName};

use super::resources::Kind;

/// What a request was, for the caller to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    /// A type we do not serve: ignored.
    UnknownType(String),
    /// An answer to a response older than the last one of its type: ignored.
    Stale,
    /// The first request of a type, or an ACK whose subscription changed: a response is due.
    Subscribed(Kind),
    /// The last response of the type was accepted.
    Ack(Kind),
    /// The last response of the type was refused, with the client's reason.
    Nack {
        /// The type.
        kind: Kind,
        /// The client's message.
        message: String,
    },
}

#[derive(Debug, Default)]
struct Subscription {
    /// The client asked for this type at least once.
    active: bool,
    /// The valid service names subscribed to (other names are never served: the client's
    /// does-not-exist timer answers them).
    names: BTreeSet<ServiceName>,
    /// The nonce of the last response sent.
    nonce: Option<String>,
    /// A response is due.
    due: bool,
    /// The revision of each service when its resource was last sent (endpoints only).
    sent: BTreeMap<ServiceName, Revision>,
}

/// The state of one ADS stream.
#[derive(Debug, Default)]
pub(crate) struct AdsStream {
    node: String,
    nonces: u64,
    subscriptions: [Subscription; 3],
    /// The epoch (history) the revisions in `sent` belong to.
    epoch: Epoch,
}

impl AdsStream {
    /// The client's node id, from its first request that named one.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// Takes one request from the client.
    pub(crate) fn receive(&mut self, req: &DiscoveryRequest) -> Received {
        if let Some(node) = &req.node
            && self.node.is_empty()
        {
            self.node.clone_from(&node.id);
        }
        let Some(kind) = Kind::from_type_url(&req.type_url) else {
            return Received::UnknownType(req.type_url.clone());
        };
        let sub = &mut self.subscriptions[kind.index()];
        let answered = sub.nonce.as_deref().unwrap_or("");
        if sub.active && req.response_nonce != answered {
            return Received::Stale;
        }
        let first = !sub.active;
        sub.active = true;
        // Mostly an ACK naming the same services again: compared before any name is copied
        // (names already held are looked up, only others validated).
        let asked: BTreeSet<&str> = req
            .resource_names
            .iter()
            .map(String::as_str)
            .filter(|n| sub.names.contains(*n) || ServiceName::new(n).is_ok())
            .collect();
        if first
            || !asked
                .iter()
                .copied()
                .eq(sub.names.iter().map(ServiceName::as_str))
        {
            let names: BTreeSet<ServiceName> = asked
                .into_iter()
                .filter_map(|n| ServiceName::new(n).ok())
                .collect();
            // Services no longer subscribed are forgotten: subscribing again sends them anew.
            sub.sent.retain(|s, _| names.contains(s));
            sub.names = names;
            sub.due = true;
        }
        match &req.error_detail {
            Some(status) if !first => Received::Nack {
                kind,
                message: status.message.clone(),
            },
            _ if sub.due => Received::Subscribed(kind),
            _ => Received::Ack(kind),
        }
    }

    /// Moves the stream to history `epoch` (read from the registry before the revisions that
    /// are compared with `sent`). In another history a revision names other contents, so what
    /// was sent is forgotten and everything subscribed is sent again.
    pub(crate) fn at_epoch(&mut self, epoch: Epoch) {
        if epoch == self.epoch {
            return;
        }
        self.epoch = epoch;
        let sub = &mut self.subscriptions[Kind::Endpoints.index()];
        sub.sent.clear();
        sub.due |= sub.active && !sub.names.is_empty();
    }

    /// Nothing is due of `kind` after all (an endpoints response would be empty).
    pub(crate) fn settle(&mut self, kind: Kind) {
        self.subscriptions[kind.index()].due = false;
    }

    /// Marks the endpoints response due when a subscribed service's revision (as
    /// `revision_of` reads it) is not the one last sent.
    pub(crate) fn check_revisions(&mut self, revision_of: impl Fn(&str) -> Revision) {
        let sub = &self.subscriptions[Kind::Endpoints.index()];
        if sub.due || !sub.active {
            return;
        }
        let moved = self.moved(revision_of).next().is_some();
        self.subscriptions[Kind::Endpoints.index()].due = moved;
    }

    /// The subscribed services whose endpoints the client lacks: never sent, or sent at another
    /// revision than `revision_of` reads now.
    pub(crate) fn moved(
        &self,
        revision_of: impl Fn(&str) -> Revision,
    ) -> impl Iterator<Item = &ServiceName> {
        let sub = &self.subscriptions[Kind::Endpoints.index()];
        sub.names
            .iter()
            .filter(move |s| sub.sent.get(*s) != Some(&revision_of(s.as_str())))
    }

    /// The first type with a response due.
    pub(crate) fn next_due(&self) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| self.subscriptions[k.index()].due)
    }

    /// The services subscribed with `kind`.
    pub(crate) fn names(&self, kind: Kind) -> impl Iterator<Item = &ServiceName> + Clone {
        self.subscriptions[kind.index()].names.iter()
    }

    /// Builds the due response of `kind` from `resources` (each subscribed service with the
    /// revision it was read at, and its resource), at registry revision `version`; it is no
    /// longer due.
    pub(crate) fn respond(
        &mut self,
        kind: Kind,
        version: Revision,
        resources: Vec<(ServiceName, Revision, Any)>,
    ) -> DiscoveryResponse {
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let sub = &mut self.subscriptions[kind.index()];
        sub.due = false;
        sub.nonce = Some(nonce.clone());
        let mut packed = Vec::with_capacity(resources.len());
        for (service, revision, any) in resources {
            sub.sent.insert(service, revision);
            packed.push(any);
        }
        DiscoveryResponse {
            version_info: version.to_string(),
            resources: packed,
            type_url: kind.type_url().to_owned(),
            nonce,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::{envoy::config::core::v3::Node, google::rpc::Status};

    use super::*;

    fn request(kind: Kind, names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: kind.type_url().to_owned(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        }
    }

    fn answer(s: &mut AdsStream, kind: Kind, revision: Revision) -> DiscoveryResponse {
        let resources = s
            .names(kind)
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .map(|n| (n, revision, Any::default()))
            .collect();
        s.respond(kind, revision, resources)
    }

    #[test]
    fn subscribe_ack_and_change() {
        let mut s = AdsStream::default();
        let mut first = request(Kind::Listener, &["echo"], "");
        first.node = Some(Node {
            id: "client-1".into(),
            ..Default::default()
        });
        assert_eq!(s.receive(&first), Received::Subscribed(Kind::Listener));
        assert_eq!(s.node(), "client-1");
        assert_eq!(s.next_due(), Some(Kind::Listener));
        let res = answer(&mut s, Kind::Listener, 7);
        assert_eq!((res.version_info.as_str(), res.resources.len()), ("7", 1));
        assert_eq!(s.next_due(), None);
        // The ACK: same names, the response's nonce.
        assert_eq!(
            s.receive(&request(Kind::Listener, &["echo"], &res.nonce)),
            Received::Ack(Kind::Listener)
        );
        assert_eq!(s.next_due(), None);
        // A wider subscription in the ACK makes a new response due.
        assert_eq!(
            s.receive(&request(Kind::Listener, &["echo", "pay"], &res.nonce)),
            Received::Subscribed(Kind::Listener)
        );
        assert_eq!(answer(&mut s, Kind::Listener, 8).resources.len(), 2);
    }

    #[test]
    fn stale_nonces_are_ignored_and_nacks_reported() {
        let mut s = AdsStream::default();
        s.receive(&request(Kind::Cluster, &["echo"], ""));
        let one = answer(&mut s, Kind::Cluster, 1);
        s.receive(&request(Kind::Cluster, &["echo", "b"], &one.nonce));
        let two = answer(&mut s, Kind::Cluster, 2);
        // An answer to the first response, arriving after the second was sent.
        assert_eq!(
            s.receive(&request(Kind::Cluster, &["x"], &one.nonce)),
            Received::Stale
        );
        let mut nack = request(Kind::Cluster, &["echo", "b"], &two.nonce);
        nack.error_detail = Some(Status {
            code: 3,
            message: "bad cluster".into(),
            ..Default::default()
        });
        assert_eq!(
            s.receive(&nack),
            Received::Nack {
                kind: Kind::Cluster,
                message: "bad cluster".into()
            }
        );
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn endpoints_are_due_only_when_a_subscribed_service_moves() {
        let mut s = AdsStream::default();
        s.receive(&request(Kind::Endpoints, &["echo", "Not A Name"], ""));
        assert_eq!(s.names(Kind::Endpoints).count(), 1);
        let res = answer(&mut s, Kind::Endpoints, 5);
        s.receive(&request(
            Kind::Endpoints,
            &["echo", "Not A Name"],
            &res.nonce,
        ));
        // Another service changed: echo is still at 5.
        s.check_revisions(|name| if name == "echo" { 5 } else { 9 });
        assert_eq!(s.next_due(), None);
        s.check_revisions(|_| 6);
        assert_eq!(s.next_due(), Some(Kind::Endpoints));
    }

    #[test]
    fn an_endpoints_response_is_due_with_only_what_the_client_lacks() {
        let mut s = AdsStream::default();
        s.receive(&request(Kind::Endpoints, &["a", "b"], ""));
        let names = |s: &AdsStream, rev: fn(&str) -> Revision| -> Vec<String> {
            s.moved(rev).map(ToString::to_string).collect()
        };
        // Nothing sent yet: both.
        assert_eq!(names(&s, |_| 5), ["a", "b"]);
        let res = answer(&mut s, Kind::Endpoints, 5);
        assert_eq!(res.resources.len(), 2);
        assert!(names(&s, |_| 5).is_empty());
        // Only b moved.
        assert_eq!(names(&s, |n| if n == "b" { 6 } else { 5 }), ["b"]);
        // A new subscription adds c alone.
        s.receive(&request(Kind::Endpoints, &["a", "b", "c"], &res.nonce));
        assert_eq!(names(&s, |_| 5), ["c"]);
    }

    #[test]
    fn another_history_sends_everything_again() {
        let mut s = AdsStream::default();
        s.at_epoch(7);
        s.receive(&request(Kind::Endpoints, &["a", "b"], ""));
        let res = answer(&mut s, Kind::Endpoints, 5);
        s.receive(&request(Kind::Endpoints, &["a", "b"], &res.nonce));
        s.at_epoch(7);
        assert_eq!(s.next_due(), None);
        // A snapshot of another history installed: revision 5 there is other contents.
        s.at_epoch(8);
        assert_eq!(s.next_due(), Some(Kind::Endpoints));
        assert_eq!(s.moved(|_| 5).count(), 2);
        // Nothing to send after an unsubscription: settled without a response.
        let res = answer(&mut s, Kind::Endpoints, 5);
        s.receive(&request(Kind::Endpoints, &["a"], &res.nonce));
        assert_eq!(s.next_due(), Some(Kind::Endpoints));
        assert_eq!(s.moved(|_| 5).count(), 0);
        s.settle(Kind::Endpoints);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn unknown_types_are_reported() {
        let mut s = AdsStream::default();
        let mut req = request(Kind::Listener, &[], "");
        req.type_url = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration".into();
        assert!(matches!(s.receive(&req), Received::UnknownType(_)));
        assert_eq!(s.next_due(), None);
    }
}
