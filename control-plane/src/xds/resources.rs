//! The three xDS resources a proxyless gRPC client asks for when it dials `xds:///S`, built
//! from the registry's instances of `S`: pure functions, no I/O.
//!
//! - Listener `S`: an API listener whose HTTP connection manager holds its route table inline
//!   (one virtual host for every authority, every path to cluster `S`), so no RDS round trip.
//! - Cluster `S`: endpoints from EDS over the same ADS stream, balanced by `RING_HASH`. The
//!   route has no hash policy, so gRPC hashes each call at random: a weighted random pick,
//!   which is what makes instance weights count. gRPC's `ROUND_ROBIN` ignores endpoint
//!   weights (every endpoint of a locality gets the same share).
//! - ClusterLoadAssignment `S`: one locality per zone (the instance metadata `zone`; instances
//!   without it share a locality with no zone), each with `load_balancing_weight` 1 (gRPC
//!   ignores a locality without one, and multiplies each endpoint's weight by its locality's
//!   on the ring: equal localities leave the instances' weights as they are), and every
//!   instance as an endpoint with its `weight` and its state as a health status.

use std::{collections::BTreeMap, net::IpAddr};

use envoy_types::{
    pb::{
        envoy::{
            config::{
                cluster::v3::{
                    Cluster,
                    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
                },
                core::v3::{
                    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus,
                    Locality, SocketAddress, address,
                    config_source::ConfigSourceSpecifier,
                    socket_address::{PortSpecifier, Protocol},
                },
                endpoint::v3::{
                    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
                    lb_endpoint::HostIdentifier,
                },
                listener::v3::{ApiListener, Listener},
                route::v3::{
                    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
                    route_action::ClusterSpecifier, route_match::PathSpecifier,
                },
            },
            extensions::filters::{
                http::router::v3::Router,
                network::http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier,
                    http_filter::ConfigType,
                },
            },
        },
        google::protobuf::{Any, UInt32Value},
    },
    util::pack_any,
};
use waypost_model::{Health, Instance, Status};

/// The instance metadata key that names an instance's zone (its xDS locality).
pub const ZONE_KEY: &str = "zone";
/// Every locality's weight: set (gRPC drops a locality without one) and equal, so that a
/// call's share is its instance's weight over the sum of the weights of the instances taking
/// work, whatever their zones.
const LOCALITY_WEIGHT: u32 = 1;

/// The resource types served, in the order a gRPC client asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `envoy.config.listener.v3.Listener`.
    Listener,
    /// `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoints,
}

impl Kind {
    /// Every kind, in order.
    pub const ALL: [Kind; 3] = [Kind::Listener, Kind::Cluster, Kind::Endpoints];

    /// The type URL of the resources of this kind.
    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoints => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        }
    }

    /// The kind of a type URL, if it is one we serve.
    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// A short name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Listener => "listener",
            Kind::Cluster => "cluster",
            Kind::Endpoints => "endpoints",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Listener `service`: an API listener routing every call to cluster `service`.
pub fn listener(service: &str) -> Listener {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(String::new())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(service.to_owned())),
            ..Default::default()
        })),
        ..Default::default()
    };
    let manager = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: service.to_owned(),
            virtual_hosts: vec![VirtualHost {
                name: service.to_owned(),
                // The authority a client dials is the service name; any is accepted, as the
                // listener itself is already per service.
                domains: vec!["*".to_owned()],
                routes: vec![route],
                ..Default::default()
            }],
            ..Default::default()
        })),
        // gRPC wants the router as the last (here only) HTTP filter.
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(ConfigType::TypedConfig(pack_any(Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: service.to_owned(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(manager)),
        }),
        ..Default::default()
    }
}

/// Cluster `service`: endpoints by EDS over ADS, balanced by ring hash (a random hash per call
/// when the route names none, as ours does).
pub fn cluster(service: &str) -> Cluster {
    Cluster {
        name: service.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                resource_api_version: ApiVersion::V3 as i32,
                ..Default::default()
            }),
            // Empty: the assignment is named after the cluster.
            service_name: String::new(),
        }),
        lb_policy: LbPolicy::RingHash as i32,
        ..Default::default()
    }
}

/// The health status an instance is announced with: draining first (an operator's intent), then
/// critical or flapping as unhealthy, else healthy. gRPC sends work only to healthy endpoints.
pub fn health_status(instance: &Instance) -> HealthStatus {
    match (instance.status, instance.health) {
        (Status::Draining, _) => HealthStatus::Draining,
        (Status::Up, Health::Critical | Health::Flapping) => HealthStatus::Unhealthy,
        (Status::Up, Health::Passing) => HealthStatus::Healthy,
    }
}

/// The ClusterLoadAssignment of `service` from its instances. Instances whose host is a DNS
/// name rather than an IP address are left out: gRPC takes only IP addresses from EDS and would
/// refuse the whole assignment.
pub fn load_assignment<'a>(
    service: &str,
    instances: impl IntoIterator<Item = &'a Instance>,
) -> ClusterLoadAssignment {
    let mut zones: BTreeMap<&str, Vec<LbEndpoint>> = BTreeMap::new();
    for instance in instances {
        if instance.host.parse::<IpAddr>().is_err() {
            continue;
        }
        let zone = instance.metadata.get(ZONE_KEY).map_or("", String::as_str);
        zones.entry(zone).or_default().push(LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        protocol: Protocol::Tcp as i32,
                        address: instance.host.clone(),
                        port_specifier: Some(PortSpecifier::PortValue(u32::from(instance.port))),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            health_status: health_status(instance) as i32,
            load_balancing_weight: Some(UInt32Value {
                value: instance.weight.max(1),
            }),
            ..Default::default()
        });
    }
    ClusterLoadAssignment {
        cluster_name: service.to_owned(),
        endpoints: zones
            .into_iter()
            .map(|(zone, lb_endpoints)| LocalityLbEndpoints {
                locality: Some(Locality {
                    zone: zone.to_owned(),
                    ..Default::default()
                }),
                lb_endpoints,
                load_balancing_weight: Some(UInt32Value {
                    value: LOCALITY_WEIGHT,
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A resource of `kind` for `service`, packed for a discovery response. `instances` is read
/// only for [`Kind::Endpoints`].
pub fn packed<'a>(
    kind: Kind,
    service: &str,
    instances: impl IntoIterator<Item = &'a Instance>,
) -> Any {
    match kind {
        Kind::Listener => pack_any(listener(service)),
        Kind::Cluster => pack_any(cluster(service)),
        Kind::Endpoints => pack_any(load_assignment(service, instances)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;
    use prost::Message;

    fn instance(id: &str, host: &str, weight: u32, zone: Option<&str>) -> Instance {
        let metadata = zone.map_or_else(
            || serde_json::json!({}),
            |z| serde_json::json!({ZONE_KEY: z}),
        );
        serde_json::from_value(serde_json::json!({
            "id": id, "service": "echo", "address": format!("{host}:50051"), "host": host,
            "port": 50051, "tags": [], "metadata": metadata, "weight": weight, "status": "up",
            "ttl_seconds": 30, "registered_at": "2026-11-22T10:00:00.000Z", "revision": 1,
        }))
        .unwrap()
    }

    fn weights(l: &LocalityLbEndpoints) -> Vec<(u32, i32)> {
        l.lb_endpoints
            .iter()
            .map(|e| (e.load_balancing_weight.unwrap().value, e.health_status))
            .collect()
    }

    #[test]
    fn the_listener_routes_everything_to_the_cluster_inline() {
        let l = listener("echo");
        assert_eq!(l.name, "echo");
        let any = l.api_listener.unwrap().api_listener.unwrap();
        assert!(any.type_url.ends_with("HttpConnectionManager"));
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        let Some(RouteSpecifier::RouteConfig(rc)) = hcm.route_specifier else {
            panic!("inline route configuration expected");
        };
        let route = &rc.virtual_hosts[0].routes[0];
        assert_eq!(rc.virtual_hosts[0].domains, ["*"]);
        let Some(route::Action::Route(action)) = &route.action else {
            panic!("route action expected");
        };
        assert_eq!(
            action.cluster_specifier,
            Some(ClusterSpecifier::Cluster("echo".into()))
        );
        assert_eq!(
            hcm.http_filters.last().unwrap().name,
            "envoy.filters.http.router"
        );
    }

    #[test]
    fn the_cluster_takes_endpoints_from_ads() {
        let c = cluster("echo");
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        let eds = c.eds_cluster_config.unwrap().eds_config.unwrap();
        assert!(matches!(
            eds.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
    }

    #[test]
    fn one_weighted_locality_per_zone_with_weights_and_states() {
        let mut draining = instance("c", "10.0.0.3", 5, Some("b"));
        draining.status = Status::Draining;
        let mut critical = instance("d", "10.0.0.4", 7, Some("b"));
        critical.health = Health::Critical;
        let list = [
            instance("a", "10.0.0.1", 3, None),
            instance("b", "10.0.0.2", 2, Some("b")),
            draining,
            critical,
            instance("e", "db.internal", 1, None),
        ];
        let cla = load_assignment("echo", &list);
        assert_eq!(cla.cluster_name, "echo");
        let zones: Vec<_> = cla
            .endpoints
            .iter()
            .map(|l| {
                (
                    l.locality.as_ref().unwrap().zone.as_str(),
                    l.load_balancing_weight.unwrap().value,
                )
            })
            .collect();
        // The default locality (no zone) and zone b, equally weighted; no DNS names.
        assert_eq!(zones, [("", 1), ("b", 1)]);
        assert_eq!(
            weights(&cla.endpoints[0]),
            [(3, HealthStatus::Healthy as i32)]
        );
        assert_eq!(
            weights(&cla.endpoints[1]),
            [
                (2, HealthStatus::Healthy as i32),
                (5, HealthStatus::Draining as i32),
                (7, HealthStatus::Unhealthy as i32),
            ]
        );
    }

    #[test]
    fn no_instances_no_localities() {
        assert!(load_assignment("echo", []).endpoints.is_empty());
    }

    #[test]
    fn the_cluster_balances_by_ring_hash() {
        assert_eq!(cluster("echo").lb_policy, LbPolicy::RingHash as i32);
    }

    #[test]
    fn type_urls_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_type_url(kind.type_url()), Some(kind));
        }
        assert_eq!(Kind::from_type_url("type.googleapis.com/x"), None);
        assert_eq!(
            Kind::Listener.type_url(),
            format!(
                "type.googleapis.com/{}",
                <Listener as prost::Name>::full_name()
            )
        );
    }
}
