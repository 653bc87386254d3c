//! What `GET /explain/{service}` answers: why this sidecar routes a service the way it does, in
//! one JSON document built from the same things DNS and the proxies read: the current
//! snapshot (its revision, each instance's status and health, the DNS record sets built for
//! it) and the proxies' balancers (requests in flight, failures, ejections, the panic rule).
//!
//! Read-only: nothing here changes what DNS or the proxies do, and nothing is created in the
//! balancers for a service the proxies have not routed yet (its endpoints then show no
//! history). The instances that the HTTP proxy keeps for a while after a mass removal are not
//! shown: they are no longer in the snapshot, and only the proxy's route cache knows them.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::SystemTime,
};

use hickory_proto::rr::RData;
use serde::Serialize;
use waypost_model::{Health, Instance, Status, Timestamp};

use crate::{
    dns::weighted::WeightedRecords,
    proxy::balance::{Balancer, Observed, Policy},
    snapshot::{ServiceView, Snapshot},
};

/// The whole answer.
#[derive(Debug, Serialize)]
pub(crate) struct Explain {
    /// The service explained.
    pub(crate) service: String,
    /// The snapshot everything below was read from.
    pub(crate) snapshot: SnapshotFacts,
    /// The service's protection policy, when an operator set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) policy: Option<waypost_model::ServicePolicy>,
    /// `never_empty` holds: no instance takes work, and DNS and the proxies answer from the
    /// last set that had one (listed under `dns` and `proxy`, not under `instances`).
    pub(crate) protected: bool,
    /// Every instance the snapshot holds for the service (draining and critical ones too),
    /// whether it takes work, and why not.
    pub(crate) instances: Vec<InstanceFacts>,
    /// What DNS answers for the service's name.
    pub(crate) dns: DnsFacts,
    /// What the proxies would choose from.
    pub(crate) proxy: ProxyFacts,
}

/// The snapshot's identity and freshness.
#[derive(Debug, Serialize)]
pub(crate) struct SnapshotFacts {
    /// The last revision applied.
    pub(crate) revision: u64,
    /// The control plane's epoch (`null` before a first snapshot).
    pub(crate) epoch: Option<String>,
    /// The answers may be out of date (the change stream is not live).
    pub(crate) stale: bool,
}

/// One instance as the snapshot has it.
#[derive(Debug, Serialize)]
pub(crate) struct InstanceFacts {
    /// Its id.
    pub(crate) id: String,
    /// Its address as registered.
    pub(crate) address: String,
    /// `up` or `draining`.
    pub(crate) status: Status,
    /// `passing`, `critical` or `flapping`.
    pub(crate) health: Health,
    /// Its weight.
    pub(crate) weight: u32,
    /// The addresses it is reached at (its IP, or what its host name resolved to); empty for
    /// an instance that takes no work.
    pub(crate) addresses: Vec<IpAddr>,
    /// It takes work: DNS answers it and the proxies choose from it.
    pub(crate) included: bool,
    /// Why it is left out (empty when included).
    pub(crate) reasons: Vec<Reason>,
}

/// Why an instance is left out.
#[derive(Debug, Serialize)]
pub(crate) struct Reason {
    /// The stable code.
    pub(crate) code: ReasonCode,
    /// A sentence for people (with the check's output, for a failing check).
    pub(crate) detail: String,
}

/// The stable codes of [`Reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReasonCode {
    /// Status `draining`.
    Draining,
    /// Health `critical`.
    Critical,
    /// Health `flapping`.
    Flapping,
    /// Its host name resolved to no address.
    Unresolved,
}

/// The DNS answers for `<service>.service.<domain>`, in the order the records were built
/// (each query draws its own order from the weights).
#[derive(Debug, Serialize)]
pub(crate) struct DnsFacts {
    /// The name asked.
    pub(crate) name: String,
    /// The virtual IP the name answers with (VIP mode, a service with a VIP), else `null`.
    pub(crate) vip: Option<IpAddr>,
    /// The A records.
    pub(crate) a: Vec<AddressRecord>,
    /// The AAAA records.
    pub(crate) aaaa: Vec<AddressRecord>,
    /// The SRV records.
    pub(crate) srv: Vec<SrvRecord>,
}

/// An A or AAAA record and the weight it is ordered by.
#[derive(Debug, Serialize)]
pub(crate) struct AddressRecord {
    /// The address.
    pub(crate) address: IpAddr,
    /// The sum of the weights of the instances at that address.
    pub(crate) weight: f64,
}

/// An SRV record.
#[derive(Debug, Serialize)]
pub(crate) struct SrvRecord {
    /// The target name (its addresses are in the additional section).
    pub(crate) target: String,
    /// The instance's port.
    pub(crate) port: u16,
    /// The instance's weight.
    pub(crate) weight: u16,
}

/// The proxies' view.
#[derive(Debug, Serialize)]
pub(crate) struct ProxyFacts {
    /// The HTTP proxy (every service can be reached through it).
    pub(crate) http: Balancing,
    /// The TCP proxy, when a TCP route or (VIP mode) a virtual IP listener serves the service;
    /// else `null`.
    pub(crate) tcp: Option<Balancing>,
}

/// One proxy's choice for the service.
#[derive(Debug, Serialize)]
pub(crate) struct Balancing {
    /// The balancing policy.
    pub(crate) policy: Policy,
    /// Consecutive failures (connect errors, 5xx, timeouts) that eject an endpoint.
    pub(crate) outlier_failures: u32,
    /// Whether ejections are ignored now.
    pub(crate) panic: PanicFacts,
    /// The endpoints: the instances that take work and have an address.
    pub(crate) endpoints: Vec<EndpointFacts>,
}

/// The panic rule applied now.
#[derive(Debug, Serialize)]
pub(crate) struct PanicFacts {
    /// On: fewer than `threshold` of the endpoints are usable, so ejected ones are chosen too.
    pub(crate) active: bool,
    /// The share of endpoints (0 to 1) that must be usable.
    pub(crate) threshold: f64,
    /// Endpoints not ejected.
    pub(crate) usable: usize,
    /// All endpoints.
    pub(crate) endpoints: usize,
}

/// One endpoint and what the proxy has seen of it.
#[derive(Debug, Serialize)]
pub(crate) struct EndpointFacts {
    /// The instance id.
    pub(crate) id: String,
    /// Where the proxy connects.
    pub(crate) addr: SocketAddr,
    /// Its weight.
    pub(crate) weight: u32,
    /// The proxy chooses from it now: not ejected, or ejected while panic is on.
    pub(crate) chosen_from: bool,
    /// Requests (HTTP) or connections (TCP) in flight.
    pub(crate) in_flight: usize,
    /// Failures in a row since the last success or ejection.
    pub(crate) failures: u32,
    /// Ejections so far (each is longer than the one before).
    pub(crate) ejections: u32,
    /// The current ejection, else `null`.
    pub(crate) ejected: Option<Ejection>,
}

/// An ejection in force.
#[derive(Debug, Serialize)]
pub(crate) struct Ejection {
    /// When it ends (RFC 3339, UTC).
    pub(crate) until: Timestamp,
    /// Milliseconds from now until it ends.
    pub(crate) remaining_ms: u64,
}

/// What an explanation is built from, besides the snapshot.
pub(crate) struct Sources<'a> {
    /// Stream freshness.
    pub(crate) stale: bool,
    /// `<service>.service.` is followed by this (fully qualified).
    pub(crate) domain: &'a str,
    /// DNS answers services' VIPs.
    pub(crate) vip_mode: bool,
    /// The HTTP proxy's balancer.
    pub(crate) http: &'a Balancer,
    /// The TCP proxy's balancer.
    pub(crate) tcp: &'a Balancer,
    /// The services named by explicit TCP routes.
    pub(crate) tcp_routes: &'a [String],
    /// The configured default policy.
    pub(crate) balance: Policy,
}

impl Sources<'_> {
    /// The explanation for `service`, or `None` when the snapshot has no such service.
    pub(crate) fn explain(&self, snapshot: &Snapshot, service: &str) -> Option<Explain> {
        let view = snapshot.services.get(service)?;
        // In VIP mode the name answers the VIP, and a listener opens on it, only while some
        // instance takes work (a listener per port of those instances).
        let vip = view.vip.filter(|_| self.vip_mode && !view.up.is_empty());
        let serves_tcp = vip.is_some() || self.tcp_routes.iter().any(|s| s == service);
        let http_policy = crate::proxy::http::service_policy(&view.instances, self.balance);
        Some(Explain {
            service: service.to_owned(),
            snapshot: SnapshotFacts {
                revision: snapshot.revision,
                epoch: snapshot.epoch.clone(),
                stale: self.stale,
            },
            policy: view.policy,
            protected: view.protected,
            instances: view.instances.iter().map(|i| instance(view, i)).collect(),
            dns: DnsFacts {
                name: format!("{service}.service.{}", self.domain),
                vip,
                a: addresses(&view.records.a),
                aaaa: addresses(&view.records.aaaa),
                srv: view
                    .records
                    .srv
                    .records()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some(SrvRecord {
                            target: srv.target.to_string(),
                            port: srv.port,
                            weight: srv.weight,
                        }),
                        _ => None,
                    })
                    .collect(),
            },
            proxy: ProxyFacts {
                http: balancing(self.http, service, view, http_policy),
                // The TCP proxy does not read `waypost.balance`: the configured policy only.
                tcp: serves_tcp.then(|| balancing(self.tcp, service, view, self.balance)),
            },
        })
    }
}

/// One instance, with the reasons it takes no work.
fn instance(view: &ServiceView, i: &Instance) -> InstanceFacts {
    let mut reasons = Vec::new();
    if i.status == Status::Draining {
        reasons.push(Reason {
            code: ReasonCode::Draining,
            detail: "draining: registered and heartbeating, but given no new work".to_owned(),
        });
    }
    let output = i.health_output.as_deref().unwrap_or("no output");
    match i.health {
        Health::Passing => {}
        Health::Critical => reasons.push(Reason {
            code: ReasonCode::Critical,
            detail: format!("health check critical: {output}"),
        }),
        Health::Flapping => reasons.push(Reason {
            code: ReasonCode::Flapping,
            detail: format!("health check flapping: {output}"),
        }),
    }
    let addresses = view
        .up
        .iter()
        .find(|t| t.instance.id == i.id)
        .map(|t| t.addrs.clone())
        .unwrap_or_default();
    if reasons.is_empty() && addresses.is_empty() {
        reasons.push(Reason {
            code: ReasonCode::Unresolved,
            detail: format!(
                "host name {:?} resolved to no address: only SRV answers name it, and the \
                 proxies cannot reach it",
                i.host
            ),
        });
    }
    InstanceFacts {
        id: i.id.as_str().to_owned(),
        address: i.address.clone(),
        status: i.status,
        health: i.health,
        weight: i.weight,
        addresses,
        included: reasons.is_empty(),
        reasons,
    }
}

fn addresses(records: &WeightedRecords) -> Vec<AddressRecord> {
    records
        .records()
        .iter()
        .zip(records.weights())
        .filter_map(|(r, &weight)| {
            let address = match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => return None,
            };
            Some(AddressRecord { address, weight })
        })
        .collect()
}

/// The endpoints a proxy builds for the service (its `up` instances with an address, as the
/// proxies build them), each with the balancer's facts, and the panic rule over them.
fn balancing(balancer: &Balancer, service: &str, view: &ServiceView, policy: Policy) -> Balancing {
    let seen: HashMap<String, Observed> = balancer.observe(service);
    let now = SystemTime::now();
    let endpoints: Vec<(EndpointFacts, bool)> = view
        .up
        .iter()
        .filter_map(|t| {
            let id = t.instance.id.as_str();
            let facts = seen.get(id).copied().unwrap_or_default();
            let ejected = facts.ejected_for.map(|left| Ejection {
                until: Timestamp::from(now + left),
                remaining_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            });
            let out = ejected.is_some();
            let endpoint = EndpointFacts {
                id: id.to_owned(),
                addr: t.socket_addr()?,
                weight: t.instance.weight,
                chosen_from: true,
                in_flight: facts.in_flight,
                failures: facts.failures,
                ejections: facts.ejections,
                ejected,
            };
            Some((endpoint, out))
        })
        .collect();
    let usable = endpoints.iter().filter(|(_, out)| !out).count();
    let panic = balancer.panic(view.policy, usable, endpoints.len());
    Balancing {
        policy,
        outlier_failures: balancer.outlier().failures,
        panic: PanicFacts {
            active: panic.active,
            threshold: panic.threshold,
            usable,
            endpoints: endpoints.len(),
        },
        endpoints: endpoints
            .into_iter()
            .map(|(mut e, out)| {
                e.chosen_from = !out || panic.active;
                e
            })
            .collect(),
    }
}
