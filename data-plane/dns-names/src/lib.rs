//! `waypost-dns-names`: what a query name asks for, in the sidecar's naming scheme. Pure, so
//! the scheme is tested as a table and fuzzed (`fuzz/fuzz_targets/dns_names.rs`) without the
//! sidecar; the sidecar uses it as `waypost_sidecar::dns::names`.
//!
//! Under the domain `D` (default `waypost.`):
//! - `<service>.service.D`: the service's `up` instances (A, AAAA, SRV);
//! - `<tag>.<service>.service.D`: only those with the tag;
//! - `_<service>._tcp.service.D`: SRV records (RFC 2782 form);
//! - `<hex>.addr.D`: the IP written in hex (SRV targets of instances registered by IP);
//! - `D`, `service.D`, `addr.D`: names that exist but hold only the zone's SOA.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// The meaning of a query name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// `D`, `service.D` or `addr.D`.
    Apex,
    /// `<service>.service.D` or `<tag>.<service>.service.D`.
    Service {
        /// Service name.
        service: String,
        /// Tag filter.
        tag: Option<String>,
    },
    /// `_<service>._tcp.service.D`.
    Srv {
        /// Service name.
        service: String,
    },
    /// `<hex>.addr.D`.
    Addr(IpAddr),
    /// Inside the domain, but no such name.
    NoSuchName,
    /// Outside the domain.
    Outside,
}

/// Reads `name` (lowercase) against `domain` (lowercase, fully qualified).
pub fn parse(name: &Name, domain: &Name) -> Lookup {
    if !domain.zone_of(name) {
        return Lookup::Outside;
    }
    let relative = usize::from(name.num_labels() - domain.num_labels());
    let labels: Vec<&[u8]> = name.iter().take(relative).collect();
    let text = |l: &[u8]| String::from_utf8_lossy(l).into_owned();
    match labels.as_slice() {
        [] | [b"service"] | [b"addr"] => Lookup::Apex,
        [service, b"_tcp", b"service"] if service.starts_with(b"_") && service.len() > 1 => {
            Lookup::Srv {
                service: text(&service[1..]),
            }
        }
        [service, b"service"] => Lookup::Service {
            service: text(service),
            tag: None,
        },
        [tag, service, b"service"] => Lookup::Service {
            service: text(service),
            tag: Some(text(tag)),
        },
        [hex, b"addr"] => match parse_hex_ip(hex) {
            Some(ip) => Lookup::Addr(ip),
            None => Lookup::NoSuchName,
        },
        _ => Lookup::NoSuchName,
    }
}

/// `7f000001` is 127.0.0.1; 32 hex digits are an IPv6 address.
fn parse_hex_ip(hex: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hex).ok()?;
    match text.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(text, 16).ok()?,
        ))),
        32 => Some(IpAddr::V6(Ipv6Addr::from(
            u128::from_str_radix(text, 16).ok()?,
        ))),
        _ => None,
    }
}

/// The label under `addr.D` for an IP.
pub fn hex_label(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Lookup {
        let domain = Name::from_ascii("waypost.").unwrap();
        parse(&Name::from_ascii(name).unwrap().to_lowercase(), &domain)
    }

    #[test]
    fn the_naming_scheme() {
        let service = |s: &str, t: Option<&str>| Lookup::Service {
            service: s.into(),
            tag: t.map(Into::into),
        };
        let cases = [
            ("waypost.", Lookup::Apex),
            ("service.waypost.", Lookup::Apex),
            ("web.service.waypost.", service("web", None)),
            ("WEB.Service.WayPost.", service("web", None)),
            ("v2.web.service.waypost.", service("web", Some("v2"))),
            (
                "_web._tcp.service.waypost.",
                Lookup::Srv {
                    service: "web".into(),
                },
            ),
            (
                "7f000001.addr.waypost.",
                Lookup::Addr("127.0.0.1".parse().unwrap()),
            ),
            (
                "00000000000000000000000000000001.addr.waypost.",
                Lookup::Addr("::1".parse().unwrap()),
            ),
            ("zz.addr.waypost.", Lookup::NoSuchName),
            ("web.waypost.", Lookup::NoSuchName),
            ("a.b.web.service.waypost.", Lookup::NoSuchName),
            ("example.com.", Lookup::Outside),
            ("waypost.example.", Lookup::Outside),
        ];
        for (name, want) in cases {
            assert_eq!(lookup(name), want, "{name}");
        }
    }

    #[test]
    fn hex_labels_round_trip() {
        for ip in ["127.0.0.1", "10.1.2.3", "::1", "fe80::1:2"] {
            let ip: IpAddr = ip.parse().unwrap();
            let name = format!("{}.addr.waypost.", hex_label(ip));
            assert_eq!(lookup(&name), Lookup::Addr(ip));
        }
    }
}
