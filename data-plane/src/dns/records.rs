//! DNS records for services, built once per change of a service (not per query), and the zone's
//! SOA for negative answers.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use hickory_proto::rr::{
    Name, RData, Record,
    rdata::{A, AAAA, SOA, SRV},
};

use crate::{dns::names::hex_label, snapshot::Target};

/// The answers for one service (or one tag of it).
#[derive(Debug, Default)]
pub struct ServiceRecords {
    /// A records of the `up` instances' IPv4 addresses (deduplicated).
    pub a: Vec<Record>,
    /// AAAA records of their IPv6 addresses.
    pub aaaa: Vec<Record>,
    /// SRV records owned by `<service>.service.D` (or the tag name).
    pub srv: Vec<Record>,
    /// The same SRV records owned by `_<service>._tcp.service.D`.
    pub srv_rfc2782: Vec<Record>,
    /// A/AAAA records of the SRV targets, for the additional section.
    pub targets: Vec<Record>,
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
    pub fn service(&self, service: &str, up: &[Target], vip: Option<IpAddr>) -> ServiceRecords {
        let Ok(owner) = self.service_base.prepend_label(service) else {
            return ServiceRecords::default();
        };
        let rfc2782 = self
            .service_base
            .prepend_label("_tcp")
            .and_then(|n| n.prepend_label(format!("_{service}")))
            .ok();
        let mut records = self.build(&owner, rfc2782.as_ref(), up.iter());
        if let Some(vip) = vip.filter(|_| !up.is_empty()) {
            let record = self.address(owner, vip);
            (records.a, records.aaaa) = match vip {
                IpAddr::V4(_) => (vec![record], Vec::new()),
                IpAddr::V6(_) => (Vec::new(), vec![record]),
            };
        }
        records
    }

    /// The answers for the instances of `service` with `tag` (built per query: tag lookups
    /// are rarer than service lookups, and there are many possible tags).
    pub fn tagged(&self, service: &str, tag: &str, up: &[Target]) -> ServiceRecords {
        let Ok(owner) = self
            .service_base
            .prepend_label(service)
            .and_then(|n| n.prepend_label(tag))
        else {
            return ServiceRecords::default();
        };
        let with_tag = up
            .iter()
            .filter(|t| t.instance.tags.iter().any(|x| x == tag));
        self.build(&owner, None, with_tag)
    }

    fn build<'t>(
        &self,
        owner: &Name,
        rfc2782: Option<&Name>,
        targets: impl Iterator<Item = &'t Target>,
    ) -> ServiceRecords {
        let mut out = ServiceRecords::default();
        let mut ips = BTreeSet::new();
        let mut extra_names = BTreeSet::new();
        for target in targets {
            ips.extend(target.addrs.iter().copied());
            let instance = &target.instance;
            let srv_target = match instance.host.parse::<IpAddr>() {
                Ok(ip) => self.addr_base.prepend_label(hex_label(ip)).ok(),
                Err(_) => Name::from_ascii(format!("{}.", instance.host)).ok(),
            };
            let Some(srv_target) = srv_target else {
                continue;
            };
            let weight = u16::try_from(instance.weight).unwrap_or(u16::MAX);
            let srv = RData::SRV(SRV::new(1, weight, instance.port, srv_target.clone()));
            out.srv
                .push(Record::from_rdata(owner.clone(), self.ttl, srv.clone()));
            if let Some(name) = rfc2782 {
                out.srv_rfc2782
                    .push(Record::from_rdata(name.clone(), self.ttl, srv));
            }
            if extra_names.insert(srv_target.clone()) {
                for ip in &target.addrs {
                    out.targets.push(self.address(srv_target.clone(), *ip));
                }
            }
        }
        for ip in ips {
            let record = self.address(owner.clone(), ip);
            match ip {
                IpAddr::V4(_) => out.a.push(record),
                IpAddr::V6(_) => out.aaaa.push(record),
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
