//! DNS records for services, built once per change of a service (not per query), and the zone's
//! SOA for negative answers.
//!
//! Pure: it reads instances and their addresses, not the snapshot. The snapshot calls it when a
//! service changes ([`crate::snapshot`] depends on this module, never the other way round).
//!
//! Each address and SRV record carries its weight (see [`WeightedRecords`]), so that a query
//! only draws the order of its answer. A service's own answers (not a tag's) are also prepared
//! as wire bytes ([`PreparedAnswers`]) for the UDP fast path.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use hickory_proto::rr::{
    Name, RData, Record,
    rdata::{A, AAAA, SOA, SRV},
};
use waypost_model::Instance;

use crate::dns::{
    names::hex_label,
    prepared::{Prepared, PreparedAnswers},
    weighted::WeightedRecords,
};

/// An `up` instance and the addresses it is reached at (its IP, or what its host name resolved
/// to): what the records of a service are made of.
pub type Up<'a> = (&'a Instance, &'a [IpAddr]);

/// The answers for one service (or one tag of it).
#[derive(Debug, Default)]
pub struct ServiceRecords {
    /// A records of the `up` instances' IPv4 addresses (deduplicated), each weighted by the
    /// instances reached at it (see [`RecordBuilder::service`]).
    pub a: WeightedRecords,
    /// AAAA records of their IPv6 addresses, weighted the same way.
    pub aaaa: WeightedRecords,
    /// SRV records owned by `<service>.service.D` (or the tag name), weighted by their
    /// instance's weight.
    pub srv: WeightedRecords,
    /// The same SRV records owned by `_<service>._tcp.service.D`.
    pub srv_rfc2782: WeightedRecords,
    /// A/AAAA records of the SRV targets, for the additional section.
    pub targets: Vec<Record>,
    /// The answers above as wire bytes, for the UDP fast path (none for a tag).
    pub prepared: PreparedAnswers,
}

/// Builds records under one domain with one TTL.
#[derive(Debug, Clone)]
pub struct RecordBuilder {
    domain: Name,
    ttl: u32,
    service_base: Name,
    addr_base: Name,
}

impl RecordBuilder {
    /// For `domain` (fully qualified, lowercase) with answers cached for `ttl`.
    pub fn new(domain: Name, ttl: Duration) -> Self {
        let child = |label: &str| {
            domain
                .prepend_label(label)
                .expect("a fixed short label fits under a valid domain")
        };
        Self {
            service_base: child("service"),
            addr_base: child("addr"),
            ttl: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            domain,
        }
    }

    /// The domain.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The answers for `service`'s `up` instances. With `vip` (VIP mode), the service's name
    /// answers the virtual IP instead of the instances' addresses (SRV records still name
    /// the instances).
    ///
    /// An address's weight is the sum of the weights of the instances reached at it (several
    /// ports on one host share one A record, and together take that host's share of the
    /// load). An instance registered by a host name that resolved to several addresses of one
    /// family splits its weight evenly among them, so that its share of the first addresses
    /// answered is still its weight's share, whichever family the client asks for.
    pub fn service<'t>(
        &self,
        service: &str,
        up: impl IntoIterator<Item = Up<'t>>,
        vip: Option<IpAddr>,
    ) -> ServiceRecords {
        let Ok(owner) = self.service_base.prepend_label(service) else {
            return ServiceRecords::default();
        };
        let rfc2782 = self
            .service_base
            .prepend_label("_tcp")
            .and_then(|n| n.prepend_label(format!("_{service}")))
            .ok();
        let mut any_up = false;
        let up = up.into_iter().inspect(|_| any_up = true);
        let mut records = self.build(&owner, rfc2782.as_ref(), up);
        if let Some(vip) = vip.filter(|_| any_up) {
            let record = WeightedRecords::single(self.address(owner, vip));
            (records.a, records.aaaa) = match vip {
                IpAddr::V4(_) => (record, WeightedRecords::default()),
                IpAddr::V6(_) => (WeightedRecords::default(), record),
            };
        }
        records.prepared = PreparedAnswers {
            a: Prepared::new(&records.a, &[]),
            aaaa: Prepared::new(&records.aaaa, &[]),
            srv: Prepared::new(&records.srv, &records.targets),
            srv_rfc2782: Prepared::new(&records.srv_rfc2782, &records.targets),
        };
        records
    }

    /// The answers for the instances of `service` with `tag` (built per query: tag lookups
    /// are rarer than service lookups, and there are many possible tags).
    pub fn tagged<'t>(
        &self,
        service: &str,
        tag: &str,
        up: impl IntoIterator<Item = Up<'t>>,
    ) -> ServiceRecords {
        let Ok(owner) = self
            .service_base
            .prepend_label(service)
            .and_then(|n| n.prepend_label(tag))
        else {
            return ServiceRecords::default();
        };
        let with_tag = up
            .into_iter()
            .filter(|(instance, _)| instance.tags.iter().any(|x| x == tag));
        self.build(&owner, None, with_tag)
    }

    fn build<'t>(
        &self,
        owner: &Name,
        rfc2782: Option<&Name>,
        up: impl Iterator<Item = Up<'t>>,
    ) -> ServiceRecords {
        let mut out = ServiceRecords::default();
        // Ordered by address, so that records come out the same for the same instances.
        let mut ips: BTreeMap<IpAddr, f64> = BTreeMap::new();
        let mut extra_names = BTreeSet::new();
        for (instance, addrs) in up {
            let v4 = addrs.iter().filter(|ip| ip.is_ipv4()).count();
            let v6 = addrs.len() - v4;
            for ip in addrs {
                let family = if ip.is_ipv4() { v4 } else { v6 };
                *ips.entry(*ip).or_default() += f64::from(instance.weight) / family as f64;
            }
            let srv_target = match instance.host.parse::<IpAddr>() {
                Ok(ip) => self.addr_base.prepend_label(hex_label(ip)).ok(),
                Err(_) => Name::from_ascii(format!("{}.", instance.host)).ok(),
            };
            let Some(srv_target) = srv_target else {
                continue;
            };
            let weight = u16::try_from(instance.weight).unwrap_or(u16::MAX);
            let srv = RData::SRV(SRV::new(1, weight, instance.port, srv_target.clone()));
            let srv_weight = f64::from(instance.weight);
            out.srv.push(
                Record::from_rdata(owner.clone(), self.ttl, srv.clone()),
                srv_weight,
            );
            if let Some(name) = rfc2782 {
                out.srv_rfc2782
                    .push(Record::from_rdata(name.clone(), self.ttl, srv), srv_weight);
            }
            if extra_names.insert(srv_target.clone()) {
                for ip in addrs {
                    out.targets.push(self.address(srv_target.clone(), *ip));
                }
            }
        }
        for (ip, weight) in ips {
            let record = self.address(owner.clone(), ip);
            match ip {
                IpAddr::V4(_) => out.a.push(record, weight),
                IpAddr::V6(_) => out.aaaa.push(record, weight),
            }
        }
        out
    }

    /// An A or AAAA record.
    pub fn address(&self, owner: Name, ip: IpAddr) -> Record {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        Record::from_rdata(owner, self.ttl, rdata)
    }

    /// The zone's SOA, with `serial` (the snapshot's revision, so that it moves with every
    /// change) and the answer TTL as the negative-caching TTL (RFC 2308).
    pub fn soa(&self, serial: u64) -> Record {
        let name = |label: &str| self.domain.prepend_label(label).unwrap_or_default();
        let ttl = i32::try_from(self.ttl).unwrap_or(i32::MAX);
        let soa = SOA::new(
            name("ns"),
            name("hostmaster"),
            // RFC 1982 serial arithmetic wraps; the low 32 bits move with every change.
            serial as u32,
            ttl.max(60),
            ttl.max(60),
            86_400,
            self.ttl,
        );
        Record::from_rdata(self.domain.clone(), self.ttl, RData::SOA(soa))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::rr::RecordType;

    use super::*;

    fn builder() -> RecordBuilder {
        RecordBuilder::new(
            Name::from_ascii("waypost.").unwrap(),
            Duration::from_secs(5),
        )
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    /// An instance of `web` at `host:port`, with `tags` and `weight`.
    fn instance(host: &str, port: u16, tags: &[&str], weight: u32) -> Instance {
        serde_json::from_value(serde_json::json!({
            "id": format!("{host}:{port}"), "service": "web", "address": format!("{host}:{port}"),
            "host": host, "port": port, "tags": tags, "metadata": {}, "weight": weight,
            "status": "up", "ttl_seconds": 30, "registered_at": "2026-11-23T00:00:00Z",
            "revision": 1
        }))
        .unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Each record as (owner, TTL, data in presentation form), for whole-record comparisons.
    fn shown(records: &[Record]) -> Vec<(String, u32, String)> {
        records
            .iter()
            .map(|r| (r.name.to_string(), r.ttl, r.data.to_string()))
            .collect()
    }

    #[test]
    fn a_service_answers_addresses_and_srv_in_both_forms() {
        let v4 = instance("127.0.0.2", 8001, &[], 3);
        let same_ip = instance("127.0.0.2", 8002, &[], 1);
        let v6 = instance("::1", 8003, &[], 1);
        let (v4_ips, v6_ips) = ([ip("127.0.0.2")], [ip("::1")]);
        let up = [
            (&v4, &v4_ips[..]),
            (&same_ip, &v4_ips[..]),
            (&v6, &v6_ips[..]),
        ];
        let records = builder().service("web", up, None);

        // One A per distinct address, owned by the service's name, with the builder's TTL.
        assert_eq!(
            shown(records.a.records()),
            [("web.service.waypost.".into(), 5, "127.0.0.2".into())]
        );
        assert_eq!(
            shown(records.aaaa.records()),
            [("web.service.waypost.".into(), 5, "::1".into())]
        );
        // One SRV per instance: priority 1, the instance's weight and port, and a target under
        // `addr.` that names the IP in hex.
        let v4_target = "7f000002.addr.waypost.";
        let v6_target = "00000000000000000000000000000001.addr.waypost.";
        assert_eq!(
            shown(records.srv.records()),
            [
                (
                    "web.service.waypost.".into(),
                    5,
                    format!("1 3 8001 {v4_target}")
                ),
                (
                    "web.service.waypost.".into(),
                    5,
                    format!("1 1 8002 {v4_target}")
                ),
                (
                    "web.service.waypost.".into(),
                    5,
                    format!("1 1 8003 {v6_target}")
                ),
            ]
        );
        // The RFC 2782 form holds the same data under `_web._tcp.service.`.
        let rfc2782 = shown(records.srv_rfc2782.records());
        assert_eq!(rfc2782.len(), 3);
        for ((owner, ttl, data), (_, _, same)) in rfc2782.iter().zip(shown(records.srv.records())) {
            assert_eq!(owner, "_web._tcp.service.waypost.");
            assert_eq!(*ttl, 5);
            assert_eq!(*data, same);
        }
        // Each SRV target's address once, for the additional section.
        assert_eq!(
            shown(&records.targets),
            [
                (v4_target.into(), 5, "127.0.0.2".into()),
                (v6_target.into(), 5, "::1".into()),
            ]
        );
    }

    #[test]
    fn an_instance_by_host_name_is_an_srv_target_with_its_resolved_addresses() {
        let db = instance("db.example", 5432, &[], 1);
        let resolved = [ip("10.0.0.1"), ip("10.0.0.2")];
        let records = builder().service("db", [(&db, &resolved[..])], None);
        assert_eq!(
            shown(records.srv.records()),
            [(
                "db.service.waypost.".into(),
                5,
                "1 1 5432 db.example.".into()
            )]
        );
        assert_eq!(
            shown(&records.targets),
            [
                ("db.example.".into(), 5, "10.0.0.1".into()),
                ("db.example.".into(), 5, "10.0.0.2".into()),
            ]
        );
        assert_eq!(records.a.records().len(), 2);

        // A host name that did not resolve still has its SRV record, and no address.
        let unresolved = builder().service("db", [(&db, &[][..])], None);
        assert_eq!(unresolved.srv.records().len(), 1);
        assert!(unresolved.a.is_empty() && unresolved.targets.is_empty());
    }

    #[test]
    fn address_weights_sum_the_instances_at_them_and_split_a_host_names() {
        // Two ports on one host (3 + 1), one more host (2), and a host name of weight 6 that
        // resolved to two IPv4 addresses (3 each, one shared with the first host) and one
        // IPv6 address (6: the only one of its family).
        let (first, second) = (
            instance("127.0.0.2", 8001, &[], 3),
            instance("127.0.0.2", 8002, &[], 1),
        );
        let other = instance("127.0.0.3", 8003, &[], 2);
        let named = instance("web.example", 8004, &[], 6);
        let one = [ip("127.0.0.2")];
        let three = [ip("127.0.0.3")];
        let resolved = [ip("127.0.0.2"), ip("127.0.0.4"), ip("::1")];
        let up = [
            (&first, &one[..]),
            (&second, &one[..]),
            (&other, &three[..]),
            (&named, &resolved[..]),
        ];
        let records = builder().service("web", up, None);
        let weighted = |set: &WeightedRecords| {
            shown(set.records())
                .into_iter()
                .map(|(_, _, data)| data)
                .zip(set.weights().iter().copied())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            weighted(&records.a),
            [
                ("127.0.0.2".into(), 7.0),
                ("127.0.0.3".into(), 2.0),
                ("127.0.0.4".into(), 3.0),
            ]
        );
        assert_eq!(weighted(&records.aaaa), [("::1".into(), 6.0)]);
        // SRV records name instances, so each keeps its own weight.
        assert_eq!(records.srv.weights(), [3.0, 1.0, 2.0, 6.0]);
        assert_eq!(records.srv_rfc2782.weights(), [3.0, 1.0, 2.0, 6.0]);
    }

    #[test]
    fn a_weight_beyond_sixteen_bits_is_capped() {
        let heavy = instance("127.0.0.2", 80, &[], 100_000);
        let ips = [ip("127.0.0.2")];
        let records = builder().service("web", [(&heavy, &ips[..])], None);
        match &records.srv.records()[0].data {
            RData::SRV(srv) => assert_eq!(srv.weight, u16::MAX),
            other => panic!("not an SRV record: {other:?}"),
        }
    }

    #[test]
    fn a_vip_replaces_the_addresses_but_not_the_srv_records() {
        let web = instance("127.0.0.2", 8001, &[], 1);
        let ips = [ip("127.0.0.2")];
        let vip = IpAddr::V4(Ipv4Addr::new(127, 240, 0, 1));
        let records = builder().service("web", [(&web, &ips[..])], Some(vip));
        assert_eq!(
            shown(records.a.records()),
            [("web.service.waypost.".into(), 5, "127.240.0.1".into())]
        );
        assert!(records.aaaa.is_empty());
        assert_eq!(
            shown(records.srv.records()),
            [(
                "web.service.waypost.".into(),
                5,
                "1 1 8001 7f000002.addr.waypost.".into()
            )]
        );

        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
        let records = builder().service("web", [(&web, &ips[..])], Some(v6));
        assert!(records.a.is_empty());
        assert_eq!(
            shown(records.aaaa.records()),
            [("web.service.waypost.".into(), 5, "fd00::1".into())]
        );

        // Without an instance that takes work, the VIP is not answered either.
        let none = builder().service("web", [], Some(vip));
        assert!(none.a.is_empty() && none.aaaa.is_empty() && none.srv.is_empty());
    }

    #[test]
    fn a_tag_keeps_only_its_instances_under_the_tag_name() {
        let v2 = instance("127.0.0.2", 8001, &["v2", "canary"], 1);
        let v1 = instance("127.0.0.3", 8002, &["v1"], 1);
        let (v2_ips, v1_ips) = ([ip("127.0.0.2")], [ip("127.0.0.3")]);
        let up = [(&v2, &v2_ips[..]), (&v1, &v1_ips[..])];
        let records = builder().tagged("web", "v2", up);
        assert_eq!(
            shown(records.a.records()),
            [("v2.web.service.waypost.".into(), 5, "127.0.0.2".into())]
        );
        assert_eq!(
            shown(records.srv.records()),
            [(
                "v2.web.service.waypost.".into(),
                5,
                "1 1 8001 7f000002.addr.waypost.".into()
            )]
        );
        // Tag lookups have no RFC 2782 form.
        assert!(records.srv_rfc2782.is_empty());
        assert!(builder().tagged("web", "v3", up).a.is_empty());
    }

    #[test]
    fn a_name_that_is_no_dns_label_has_no_records() {
        let web = instance("127.0.0.2", 8001, &[], 1);
        let ips = [ip("127.0.0.2")];
        let too_long = "x".repeat(64);
        let records = builder().service(&too_long, [(&web, &ips[..])], None);
        assert!(records.a.is_empty() && records.srv.is_empty());
    }

    #[test]
    fn the_soa_carries_the_revision_and_the_negative_caching_ttl() {
        let soa = builder().soa(42);
        assert_eq!(soa.name, name("waypost."));
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.ttl, 5);
        let RData::SOA(data) = &soa.data else {
            panic!("not an SOA record: {soa:?}");
        };
        assert_eq!(data.mname, name("ns.waypost."));
        assert_eq!(data.rname, name("hostmaster.waypost."));
        assert_eq!(data.serial, 42);
        // Refresh and retry are at least a minute; the minimum is the answers' TTL (RFC 2308).
        assert_eq!((data.refresh, data.retry, data.expire), (60, 60, 86_400));
        assert_eq!(data.minimum, 5);

        // The serial is the revision's low 32 bits (RFC 1982 arithmetic wraps).
        let RData::SOA(wrapped) = builder().soa((1 << 32) + 7).data else {
            unreachable!()
        };
        assert_eq!(wrapped.serial, 7);

        // A longer TTL raises refresh and retry with it.
        let long = RecordBuilder::new(name("waypost."), Duration::from_secs(300)).soa(1);
        let RData::SOA(long) = long.data else {
            unreachable!()
        };
        assert_eq!((long.refresh, long.retry, long.minimum), (300, 300, 300));
    }

    #[test]
    fn addresses_are_a_or_aaaa_by_family() {
        let a = builder().address(name("x.waypost."), ip("10.1.2.3"));
        assert_eq!(shown(&[a]), [("x.waypost.".into(), 5, "10.1.2.3".into())]);
        let aaaa = builder().address(name("x.waypost."), ip("fe80::1"));
        assert_eq!(aaaa.record_type(), RecordType::AAAA);
    }
}
