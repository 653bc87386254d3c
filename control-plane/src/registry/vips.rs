//! Virtual IPs: each service gets a stable IPv4 address from a configured range, so that a
//! sidecar in VIP mode can listen on `VIP:port` and any program that resolves the service's
//! name reaches a healthy instance without knowing about Waypost.
//!
//! The VIP is written into each of the service's instances (so it is stored, restored and
//! streamed with them, with no table of its own). A service keeps its VIP while it exists, and
//! also after it empties (snapshots keep the map); only when the range is exhausted are
//! the VIPs of services without instances given to new services.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    str::FromStr,
};

use waypost_model::ServiceName;

/// An IPv4 range written `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRange {
    first: u32,
    size: u32,
}

impl FromStr for VipRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: write the VIP range as a.b.c.d/len"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|e| format!("{s:?}: {ip:?} is not an IPv4 address: {e}"))?;
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| format!("{s:?}: the prefix length must be from 8 to 30"))?;
        let mask = u32::MAX << (32 - len);
        Ok(Self {
            // Skip the network address itself.
            first: (u32::from(ip) & mask) + 1,
            size: (1u32 << (32 - len)) - 2,
        })
    }
}

impl VipRange {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n >= self.first && n < self.first + self.size
    }
}

/// The service-to-VIP map.
#[derive(Debug)]
pub(crate) struct Vips {
    range: VipRange,
    by_service: HashMap<ServiceName, Ipv4Addr>,
    taken: HashSet<Ipv4Addr>,
    /// Every address of the range below this offset is taken: the search for the lowest free
    /// one starts here, so that a new service costs the addresses skipped since the last one,
    /// not every address taken. (Searching from the start of the range each time made a
    /// restart with 10,000 services spend 0.7 s here: BENCHMARKS.md, issue 18.)
    lowest_free: u32,
}

impl Vips {
    pub(crate) fn new(range: VipRange) -> Self {
        Self {
            range,
            by_service: HashMap::new(),
            taken: HashSet::new(),
            lowest_free: 0,
        }
    }

    /// Remembers a VIP restored with an instance (ignored when outside the range).
    pub(crate) fn restore(&mut self, service: &ServiceName, vip: Ipv4Addr) {
        if self.range.contains(vip) && !self.by_service.contains_key(service) {
            self.by_service.insert(service.clone(), vip);
            self.taken.insert(vip);
        }
    }

    /// Every service's VIP.
    pub(crate) fn assigned(&self) -> std::collections::BTreeMap<ServiceName, Ipv4Addr> {
        self.by_service
            .iter()
            .map(|(s, ip)| (s.clone(), *ip))
            .collect()
    }

    /// The service's VIP, if it has one.
    pub(crate) fn get(&self, service: &str) -> Option<Ipv4Addr> {
        self.by_service.get(service).copied()
    }

    /// The service's VIP, allocating one when it has none. `in_use` tells whether a service
    /// still has instances (only VIPs of services without any are reclaimed, and only when the
    /// range is full). `None` when the range is exhausted.
    pub(crate) fn assign(
        &mut self,
        service: &ServiceName,
        in_use: impl Fn(&ServiceName) -> bool,
    ) -> Option<Ipv4Addr> {
        if let Some(vip) = self.by_service.get(service) {
            return Some(*vip);
        }
        if self.taken.len() as u64 >= u64::from(self.range.size) {
            let idle: Vec<ServiceName> = self
                .by_service
                .keys()
                .filter(|s| !in_use(s))
                .cloned()
                .collect();
            for s in idle {
                if let Some(vip) = self.by_service.remove(&s) {
                    self.taken.remove(&vip);
                    let offset = u32::from(vip) - self.range.first;
                    self.lowest_free = self.lowest_free.min(offset);
                }
            }
        }
        // The lowest free address: a pure function of what is taken, so that every node of a
        // cluster (and one restored from a snapshot) picks the same.
        for offset in self.lowest_free..self.range.size {
            let candidate = Ipv4Addr::from(self.range.first + offset);
            if self.taken.insert(candidate) {
                self.lowest_free = offset + 1;
                self.by_service.insert(service.clone(), candidate);
                return Some(candidate);
            }
        }
        self.lowest_free = self.range.size;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    #[test]
    fn ranges_parse() {
        let r: VipRange = "127.100.0.0/16".parse().unwrap();
        assert!(r.contains("127.100.0.1".parse().unwrap()));
        assert!(!r.contains("127.100.0.0".parse().unwrap()));
        assert!(!r.contains("127.101.0.1".parse().unwrap()));
        for bad in ["127.100.0.0", "x/16", "127.100.0.0/31", "127.100.0.0/4"] {
            assert!(bad.parse::<VipRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stable_distinct_and_reclaimed_only_when_full() {
        let mut vips = Vips::new("10.0.0.0/30".parse().unwrap()); // two usable addresses
        let a = vips.assign(&name("a"), |_| true).unwrap();
        let b = vips.assign(&name("b"), |_| true).unwrap();
        assert_ne!(a, b);
        assert_eq!(vips.assign(&name("a"), |_| true), Some(a), "stable");
        assert_eq!(vips.assign(&name("c"), |_| true), None, "full, all in use");
        // `a` has no instances any more: its VIP goes to `c`.
        let c = vips.assign(&name("c"), |s| s.as_str() != "a").unwrap();
        assert_eq!(c, a);
        assert_eq!(vips.get("a"), None);
    }

    #[test]
    fn the_lowest_free_address_is_taken_after_restores_and_reclaims() {
        let mut vips = Vips::new("10.0.0.0/29".parse().unwrap()); // .1 to .6
        let ip = |d: u8| Ipv4Addr::new(10, 0, 0, d);
        vips.restore(&name("r2"), ip(2));
        vips.restore(&name("r4"), ip(4));
        assert_eq!(vips.assign(&name("a"), |_| true), Some(ip(1)));
        assert_eq!(vips.assign(&name("b"), |_| true), Some(ip(3)));
        assert_eq!(vips.assign(&name("c"), |_| true), Some(ip(5)));
        assert_eq!(vips.assign(&name("d"), |_| true), Some(ip(6)));
        assert_eq!(vips.assign(&name("e"), |_| true), None, "full");
        // `r2` and `b` emptied: the lower of their addresses goes first, then the other.
        let idle = |s: &ServiceName| s.as_str() != "r2" && s.as_str() != "b";
        assert_eq!(vips.assign(&name("e"), idle), Some(ip(2)));
        assert_eq!(vips.assign(&name("f"), |_| true), Some(ip(3)));
        assert_eq!(vips.assign(&name("g"), |_| true), None);
    }

    #[test]
    fn restored_vips_are_kept() {
        let mut vips = Vips::new("127.100.0.0/16".parse().unwrap());
        vips.restore(&name("a"), "127.100.0.7".parse().unwrap());
        assert_eq!(vips.get("a"), Some("127.100.0.7".parse().unwrap()));
        let b = vips.assign(&name("b"), |_| true).unwrap();
        assert_ne!(b, "127.100.0.7".parse::<Ipv4Addr>().unwrap());
    }
}
