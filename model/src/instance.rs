//! The stored instance and the pieces a registration is made of.

use std::{
    collections::BTreeMap,
    net::Ipv6Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{
    FieldError, InstanceId, ServiceName,
    limits::{
        CHECK_SECONDS_RANGE, CHECK_THRESHOLD_RANGE, FLAP_CHANGES_RANGE, FLAP_WINDOW_SECONDS_RANGE,
        MAX_ADDRESS_LEN, MAX_DNS_LABEL_LEN, MAX_HOST_LEN,
    },
    syntax::{DEFAULT_PORTS, URL_REST_EXTRA_CHARS},
};

/// Whether an instance takes new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Registered, heartbeating and in default discovery results.
    #[default]
    Up,
    /// Registered and heartbeating, but out of default discovery results (DNS and proxies send
    /// it no new work), as during a rolling deploy. Shown with `?healthy=false`.
    Draining,
}

/// A health check for the sidecar to run against the instance: exactly one of `http` or `tcp`,
/// with how often, how many results in a row change the instance's health, and when a check
/// that keeps changing is held as `flapping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "http": "http://10.0.0.7:8001/healthz", "interval_seconds": 10, "timeout_seconds": 2,
    "failures_before_critical": 3, "successes_before_passing": 2
})))]
pub struct Check {
    /// An HTTP(S) URL that answers 2xx when the instance is healthy.
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::check_http))]
    pub http: Option<String>,
    /// A `host:port` that accepts TCP connections when the instance is healthy.
    #[serde(
        default,
        deserialize_with = "crate::de::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::check_tcp))]
    pub tcp: Option<String>,
    /// Seconds between checks (1 to 3600; default 10).
    #[serde(
        default = "default_check_interval",
        deserialize_with = "crate::de::integer"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::check_interval))]
    pub interval_seconds: u32,
    /// Seconds before one check counts as failed (1 to 3600; default 2). It may exceed the
    /// interval: the sidecar runs checks one after the other.
    #[serde(
        default = "default_check_timeout",
        deserialize_with = "crate::de::integer"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::check_timeout))]
    pub timeout_seconds: u32,
    /// Failed checks in a row that make a passing instance `critical` (1 to 100; default 1).
    #[serde(default = "one", deserialize_with = "crate::de::integer")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::check_failures))]
    pub failures_before_critical: u32,
    /// Passed checks in a row that make a critical instance `passing` again (1 to 100;
    /// default 1).
    #[serde(default = "one", deserialize_with = "crate::de::integer")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::check_successes))]
    pub successes_before_passing: u32,
    /// Changes of health (passing to critical or back) allowed within `flap_window_seconds`;
    /// one more and the instance is held as `flapping` (0 to 100; default 4; 0: no damping).
    #[serde(
        default = "default_flap_changes",
        deserialize_with = "crate::de::integer"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::check_flap_changes))]
    pub flap_changes: u32,
    /// The flap window, in seconds: changes are counted within it, and a flapping instance is
    /// released once its check has not changed for this long (1 to 3600; default 120).
    #[serde(
        default = "default_flap_window",
        deserialize_with = "crate::de::integer"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::check_flap_window))]
    pub flap_window_seconds: u32,
    /// For an `https://` check: accept any certificate (self-signed, expired, another name).
    /// Dangerous: anyone who can answer on that address passes the check. Default `false`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::check_tls_skip_verify))]
    pub tls_skip_verify: bool,
}

fn default_check_interval() -> u32 {
    Check::DEFAULT_INTERVAL_SECONDS
}

fn default_check_timeout() -> u32 {
    Check::DEFAULT_TIMEOUT_SECONDS
}

fn one() -> u32 {
    1
}

fn default_flap_changes() -> u32 {
    Check::DEFAULT_FLAP_CHANGES
}

fn default_flap_window() -> u32 {
    Check::DEFAULT_FLAP_WINDOW_SECONDS
}

impl Check {
    /// `interval_seconds` when none is given.
    pub const DEFAULT_INTERVAL_SECONDS: u32 = 10;
    /// `timeout_seconds` when none is given.
    pub const DEFAULT_TIMEOUT_SECONDS: u32 = 2;
    /// `flap_changes` when none is given. A restart is two changes (down, up) and a deploy
    /// that restarts an instance twice within the window is four, so neither is damped; a fifth
    /// change within two minutes is an instance going round in circles, which is better kept
    /// out of rotation than sent traffic in between. At the default interval (10 s) a check
    /// can change at most 12 times in the window.
    pub const DEFAULT_FLAP_CHANGES: u32 = 4;
    /// `flap_window_seconds` when none is given: two minutes, long enough to span a few
    /// restarts at the default interval, short enough that a repaired instance is back within
    /// minutes.
    pub const DEFAULT_FLAP_WINDOW_SECONDS: u32 = 120;

    /// An HTTP(S) check of `url` with every other setting at its default.
    pub fn http(url: impl Into<String>) -> Self {
        Self {
            http: Some(url.into()),
            ..Self::target_less()
        }
    }

    /// A TCP check of `host_port` with every other setting at its default.
    pub fn tcp(host_port: impl Into<String>) -> Self {
        Self {
            tcp: Some(host_port.into()),
            ..Self::target_less()
        }
    }

    fn target_less() -> Self {
        Self {
            http: None,
            tcp: None,
            interval_seconds: Self::DEFAULT_INTERVAL_SECONDS,
            timeout_seconds: Self::DEFAULT_TIMEOUT_SECONDS,
            failures_before_critical: 1,
            successes_before_passing: 1,
            flap_changes: Self::DEFAULT_FLAP_CHANGES,
            flap_window_seconds: Self::DEFAULT_FLAP_WINDOW_SECONDS,
            tls_skip_verify: false,
        }
    }

    /// Checks that exactly one target is set and well formed, and every number is in range.
    pub fn validate(&self) -> Result<(), FieldError> {
        match (&self.http, &self.tcp) {
            (Some(url), None) => {
                check_http_url(url).map_err(|m| FieldError::new("check.http", m))?;
            }
            (None, Some(addr)) => {
                if addr.len() > MAX_ADDRESS_LEN {
                    return Err(FieldError::new(
                        "check.tcp",
                        format!("is longer than {MAX_ADDRESS_LEN} characters"),
                    ));
                }
                Endpoint::parse_host_port(addr).map_err(|m| FieldError::new("check.tcp", m))?;
            }
            _ => {
                return Err(FieldError::new(
                    "check",
                    "give exactly one of `http` (URL) or `tcp` (host:port)",
                ));
            }
        }
        // A timeout longer than the interval is allowed (as in Consul): the sidecar runs one
        // check after the other, so it only spaces them further apart.
        for (field, v, range) in [
            (
                "check.interval_seconds",
                self.interval_seconds,
                CHECK_SECONDS_RANGE,
            ),
            (
                "check.timeout_seconds",
                self.timeout_seconds,
                CHECK_SECONDS_RANGE,
            ),
            (
                "check.failures_before_critical",
                self.failures_before_critical,
                CHECK_THRESHOLD_RANGE,
            ),
            (
                "check.successes_before_passing",
                self.successes_before_passing,
                CHECK_THRESHOLD_RANGE,
            ),
            ("check.flap_changes", self.flap_changes, FLAP_CHANGES_RANGE),
            (
                "check.flap_window_seconds",
                self.flap_window_seconds,
                FLAP_WINDOW_SECONDS_RANGE,
            ),
        ] {
            if !range.contains(&v) {
                return Err(FieldError::new(field, format!("{v} is outside {range:?}")));
            }
        }
        // `tls_skip_verify` on a plain check means nothing and is let be: the OpenAPI document
        // cannot say that one field depends on another's value.
        Ok(())
    }

    /// `true` for an `http` check of an `https://` URL.
    pub fn is_https(&self) -> bool {
        self.http.as_deref().is_some_and(|url| {
            url.get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        })
    }
}

/// Where an instance listens: a host (IP literal or DNS name, IPv6 without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// IP address or DNS name.
    pub host: String,
    /// TCP port, 1 to 65535.
    pub port: u16,
}

impl Endpoint {
    /// Parses an `address` as registered: a URL (`http://localhost:8001`; the scheme's default
    /// port when none is given, for http, https, ws, wss and ftp) or `host:port`
    /// (`10.0.0.7:8001`, `[::1]:8001`). The syntax is [`crate::syntax::address`]: no user name in a
    /// URL, an IPv6 host in brackets, a port in decimal without leading zeros.
    pub fn parse_address(address: &str) -> Result<Self, String> {
        if address.len() > MAX_ADDRESS_LEN {
            return Err(format!(
                "is {} characters long; the limit is {MAX_ADDRESS_LEN}",
                address.len()
            ));
        }
        match address.split_once("://") {
            Some((scheme, rest)) => Self::parse_url(scheme, rest),
            None => Self::parse_host_port(address),
        }
    }

    /// Parses what follows `scheme://` in a URL: host, optional port, then a path, query or
    /// fragment of URL characters.
    fn parse_url(scheme: &str, rest: &str) -> Result<Self, String> {
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_ok {
            return Err(format!("{scheme:?} is not a URL scheme"));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if let Some(c) = tail
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || URL_REST_EXTRA_CHARS.contains(*c)))
        {
            return Err(format!(
                "the URL's path contains {c:?}; percent-encode it (RFC 3986)"
            ));
        }
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (ip, after) = inner
                .split_once(']')
                .ok_or("an IPv6 host must be written [addr]")?;
            let ip: Ipv6Addr = ip
                .parse()
                .map_err(|_| format!("[{ip}] is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("expected :port after ]")?),
            };
            (ip.to_string(), port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if host.contains('@') {
                return Err("a URL with a user name is not an endpoint".to_owned());
            }
            check_dns_name(host)?;
            (host.to_ascii_lowercase(), port)
        };
        let port = match port {
            Some(p) => parse_port(p)?,
            None => {
                let lower = scheme.to_ascii_lowercase();
                DEFAULT_PORTS
                    .iter()
                    .find(|(s, _)| *s == lower)
                    .map(|(_, p)| *p)
                    .ok_or_else(|| format!("the URL has no port and {scheme}: has no default"))?
            }
        };
        Ok(Self { host, port })
    }

    /// Parses `host:port`, with IPv6 hosts in brackets.
    pub fn parse_host_port(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix('[') {
            let (ip, port) = rest
                .split_once("]:")
                .ok_or("an IPv6 address must be written [addr]:port")?;
            ip.parse::<Ipv6Addr>()
                .map_err(|_| format!("[{ip}] is not an IPv6 address"))?;
            return Ok(Self {
                host: ip.to_owned(),
                port: parse_port(port)?,
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or("must be a URL or host:port, for example 10.0.0.7:8001")?;
        if host.contains(':') {
            return Err("an IPv6 address must be written [addr]:port".to_owned());
        }
        let port = parse_port(port)?;
        check_dns_name(host)?;
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Validates a host (a DNS name or an IP address, IPv6 with or without brackets) and a port.
    pub fn new(host: &str, port: u16) -> Result<Self, String> {
        if port == 0 {
            return Err("port must be from 1 to 65535".to_owned());
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if bare.parse::<Ipv6Addr>().is_ok() {
            return Ok(Self {
                host: bare.to_owned(),
                port,
            });
        }
        if bare.len() != host.len() {
            return Err(format!("[{bare}] is not an IPv6 address"));
        }
        check_dns_name(host)?;
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The endpoint as `host:port`, IPv6 in brackets: also the default instance id.
    pub fn host_port(&self) -> String {
        if self.host.parse::<Ipv6Addr>().is_ok() {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A port in decimal, 1 to 65535, without sign or leading zeros.
fn parse_port(p: &str) -> Result<u16, String> {
    let digits = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0');
    match p.parse::<u16>() {
        Ok(port) if digits => Ok(port),
        _ => Err(format!("port {p:?} is not a number from 1 to 65535")),
    }
}

/// A DNS name (IPv4 addresses are DNS names by this rule): at most [`MAX_HOST_LEN`] characters
/// as written, labels of letters, digits, `-` and `_` not starting or ending with `-`, an
/// optional final dot.
fn check_dns_name(host: &str) -> Result<(), String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || host.len() > MAX_HOST_LEN {
        return Err(format!(
            "host must be an IP address or a DNS name of 1 to {MAX_HOST_LEN} characters"
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= MAX_DNS_LABEL_LEN
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "host {host:?} is neither an IP address nor a DNS name"
            ));
        }
    }
    Ok(())
}

/// Checks an HTTP check's URL: `http://` or `https://`, a host, an optional port and path, as
/// [`crate::syntax::http_url`] says.
pub fn check_http_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_ADDRESS_LEN {
        return Err(format!(
            "is {} characters long; the limit is {MAX_ADDRESS_LEN}",
            url.len()
        ));
    }
    match url.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            Endpoint::parse_url(scheme, rest).map(drop)
        }
        _ => Err("must be an http:// or https:// URL with a host".to_owned()),
    }
}

/// A UTC time with millisecond precision, written as RFC 3339 (`2026-11-22T10:00:00.000Z`).
/// Kept as milliseconds since the Unix epoch: 8 bytes per instance instead of a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Self(
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_rfc3339_millis(self.to_system_time()).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Self::from)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}")))
    }
}

/// The result of an instance's health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The check passes (or no result was reported yet).
    #[default]
    Passing,
    /// The check fails: the instance takes no work until it passes again.
    Critical,
    /// The check changed between passing and critical more often than its flap damping
    /// allows (`flap_changes` within `flap_window_seconds`): the instance takes no work, as
    /// when critical, until its check has been stable for the window.
    Flapping,
}

impl Health {
    /// `true` for [`Health::Passing`].
    pub fn is_passing(&self) -> bool {
        *self == Self::Passing
    }

    /// The name as the API writes it (`passing`, `critical`, `flapping`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Critical => "critical",
            Self::Flapping => "flapping",
        }
    }
}

impl Instance {
    /// `true` when the instance should get new work: status `up` and health `passing` (not
    /// `critical`, not `flapping`).
    pub fn takes_work(&self) -> bool {
        self.status == Status::Up && self.health == Health::Passing
    }
}

/// A registered instance as the control plane stores and returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "id": "10.0.0.7:8001", "service": "user-service", "address": "http://10.0.0.7:8001",
    "host": "10.0.0.7", "port": 8001, "tags": ["v2"], "metadata": {"zone": "a"},
    "weight": 1, "status": "up", "ttl_seconds": 30,
    "registered_at": "2026-11-22T10:00:00.000Z", "revision": 42
})))]
pub struct Instance {
    /// Unique within the service.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: InstanceId,
    /// The service it belongs to.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub service: ServiceName,
    /// The address as registered (a URL or `host:port`), or `host:port` when registered by
    /// `host` and `port`.
    pub address: String,
    /// IP address or DNS name (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u16,
    /// Free-form labels; selectable in discovery (`?tag=`) and DNS.
    pub tags: Vec<String>,
    /// Free-form string pairs; selectable in discovery (`?meta.KEY=VALUE`).
    pub metadata: BTreeMap<String, String>,
    /// Relative share of traffic under weighted balancing.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub weight: u32,
    /// `up` or `draining`.
    pub status: Status,
    /// Seconds without a heartbeat after which the instance expires.
    pub ttl_seconds: u32,
    /// The health check the sidecar runs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: most instances have no check, and `None` then costs 8 bytes instead of 56.
    pub check: Option<Box<Check>>,
    /// The host the instance runs on: the sidecar configured with this node name runs its check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub node: Option<Box<str>>,
    /// The check's result as last reported: `passing` (also before any report), `critical` or
    /// `flapping`. A critical or flapping instance takes no work: it leaves default discovery,
    /// DNS and the proxies. Absent means `passing` (left out of answers to keep them, and
    /// memory, small).
    #[serde(default, skip_serializing_if = "Health::is_passing")]
    pub health: Health,
    /// What the last failing check said; for a flapping instance, how many changes in which
    /// window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub health_output: Option<Box<str>>,
    /// When `status` last changed (RFC 3339); absent: as registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub status_since: Option<Timestamp>,
    /// When `health` last changed (RFC 3339); absent: passing since it was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub health_since: Option<Timestamp>,
    /// The service's protection policy (the same on every instance of the service), when an
    /// operator set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::ServicePolicy>,
    /// The service's virtual IP (the same for every instance of the service), when the control
    /// plane allocates them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "127.100.0.1"))]
    pub vip: Option<std::net::Ipv4Addr>,
    /// When the instance was first registered (RFC 3339, UTC). An update keeps it.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub registered_at: Timestamp,
    /// The revision of the last visible change to this instance.
    pub revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn addresses_parse_as_urls_or_host_port() {
        let cases = [
            ("http://localhost:8001", ep("localhost", 8001)),
            ("http://LocalHost:8001/", ep("localhost", 8001)),
            ("https://api.example.com", ep("api.example.com", 443)),
            ("http://10.0.0.7", ep("10.0.0.7", 80)),
            ("http://[::1]:9000", ep("::1", 9000)),
            ("10.0.0.7:8001", ep("10.0.0.7", 8001)),
            ("[fe80::1]:53", ep("fe80::1", 53)),
            ("db-1.internal:5432", ep("db-1.internal", 5432)),
        ];
        for (input, want) in cases {
            assert_eq!(Endpoint::parse_address(input), Ok(want), "{input}");
        }
        for bad in [
            "localhost",
            "10.0.0.7:0",
            "10.0.0.7:70000",
            "::1:80",
            "foo bar:80",
            "ftp2://x",
            "http://",
            "-bad-.com:80",
        ] {
            assert!(Endpoint::parse_address(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn host_port_brackets_ipv6() {
        assert_eq!(ep("::1", 80).host_port(), "[::1]:80");
        assert_eq!(ep("a.b", 80).host_port(), "a.b:80");
    }

    #[test]
    fn checks_need_exactly_one_target() {
        let mut c = Check::http("http://10.0.0.1:80/health");
        assert!(c.validate().is_ok());
        c.tcp = Some("10.0.0.1:80".into());
        assert!(c.validate().is_err());
        c.http = None;
        assert!(c.validate().is_ok());
        // A timeout beyond the interval is allowed, as in Consul.
        c.timeout_seconds = 11;
        assert!(c.validate().is_ok());
        c.timeout_seconds = 3601;
        assert!(c.validate().is_err());
    }

    #[test]
    fn thresholds_and_damping_are_bounded() {
        let ok = Check::http("https://10.0.0.1/health");
        assert!(ok.validate().is_ok());
        let field = |c: Check| c.validate().unwrap_err().field;
        for (c, want) in [
            (
                Check {
                    failures_before_critical: 0,
                    ..ok.clone()
                },
                "check.failures_before_critical",
            ),
            (
                Check {
                    successes_before_passing: 101,
                    ..ok.clone()
                },
                "check.successes_before_passing",
            ),
            (
                Check {
                    flap_changes: 101,
                    ..ok.clone()
                },
                "check.flap_changes",
            ),
            (
                Check {
                    flap_window_seconds: 0,
                    ..ok.clone()
                },
                "check.flap_window_seconds",
            ),
        ] {
            assert_eq!(field(c), want);
        }
        // 0 turns damping off; skipping verification is allowed (it means something on https
        // only).
        for c in [
            Check {
                tls_skip_verify: true,
                ..Check::http("http://10.0.0.1/health")
            },
            Check {
                flap_changes: 0,
                ..ok.clone()
            },
            Check {
                tls_skip_verify: true,
                ..ok.clone()
            },
        ] {
            assert!(c.validate().is_ok(), "{c:?}");
        }
    }

    #[test]
    fn a_check_without_the_new_fields_keeps_the_old_behaviour() {
        let c: Check = serde_json::from_str(r#"{"tcp": "10.0.0.1:80"}"#).unwrap();
        assert_eq!(c, Check::tcp("10.0.0.1:80"));
        assert_eq!(
            (c.failures_before_critical, c.successes_before_passing),
            (1, 1)
        );
        assert!(!c.tls_skip_verify);
    }
}
