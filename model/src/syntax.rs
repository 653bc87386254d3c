//! The syntax of every string the API accepts, as regular expressions for the OpenAPI document
//! (ECMA 262 as JSON Schema reads them, in the subset that Rust's `regex` and Python's `re`
//! read the same way: no look-around, no Unicode classes).
//!
//! Each pattern is built from the limits in [`crate::limits`], so no number is written twice. The
//! validators ([`ServiceName::new`](crate::ServiceName::new), [`check_tag`](crate::name::check_tag),
//! [`Endpoint::parse_address`](crate::Endpoint::parse_address)...) stay hand-written for their
//! error messages; the tests at the end of this file hold each of them to its pattern, both ways:
//! what the pattern generates is accepted, and an arbitrary string is accepted exactly when the
//! pattern matches it.
//!
//! One rule is beyond a regular expression of sensible size: a DNS name inside an `address` or a
//! check's URL is at most [`MAX_HOST_LEN`](crate::limits::MAX_HOST_LEN) characters. The `host` field carries it as
//! `maxLength`; inside an address it is stated in the field's description.

use crate::limits::{
    MAX_DNS_LABEL_LEN, MAX_INSTANCE_ID_LEN, MAX_METADATA_KEY_LEN, MAX_NODE_LEN,
    MAX_SERVICE_NAME_LEN, MAX_TAG_LEN, MAX_VERSION_LEN,
};

/// The characters of an instance id besides ASCII letters and digits.
pub(crate) const ID_EXTRA_CHARS: &str = "-_.:@[]";

/// The characters of a metadata key or a node name besides ASCII letters and digits.
pub(crate) const KEY_EXTRA_CHARS: &str = "-_.";

/// The characters of a URL's path, query and fragment (RFC 3986 `pchar`, `/`, `?`, `#`; `%` as
/// is) besides ASCII letters and digits.
pub(crate) const URL_REST_EXTRA_CHARS: &str = "-._~!$&'()*+,;=:@/?#%";

/// Hex digits of an epoch (a `u64`), as event ids write it.
pub const EPOCH_HEX_DIGITS: usize = (u64::BITS / 4) as usize;

/// Decimal digits of a revision in an event id: as many as always fit a `u64`.
pub const REVISION_DIGITS: usize = u64::MAX.ilog10() as usize;

/// URL schemes whose port may be left out, with that port.
pub(crate) const DEFAULT_PORTS: &[(&str, u16)] = &[
    ("http", 80),
    ("https", 443),
    ("ws", 80),
    ("wss", 443),
    ("ftp", 21),
];

fn anchored(body: &str) -> String {
    format!("^(?:{body})$")
}

/// A scheme name matched in any case: `http` -> `[Hh][Tt][Tt][Pp]`.
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
        .collect()
}

fn service_name_body() -> String {
    format!(
        "[a-z0-9](?:[a-z0-9-]{{0,{}}}[a-z0-9])?",
        MAX_SERVICE_NAME_LEN - 2
    )
}

fn instance_id_body() -> String {
    format!("[A-Za-z0-9_.:@\\[\\]-]{{1,{MAX_INSTANCE_ID_LEN}}}")
}

fn tag_body() -> String {
    format!("[A-Za-z0-9_-]{{1,{MAX_TAG_LEN}}}")
}

fn metadata_key_body() -> String {
    format!("[A-Za-z0-9_.-]{{1,{MAX_METADATA_KEY_LEN}}}")
}

fn node_body() -> String {
    format!("[A-Za-z0-9_.-]{{1,{MAX_NODE_LEN}}}")
}

fn version_body() -> String {
    format!("[A-Za-z0-9_.-]{{1,{MAX_VERSION_LEN}}}")
}

/// A DNS name: labels of letters, digits, `-` and `_`, not starting or ending with `-`, joined
/// by dots, with an optional final dot. (IPv4 addresses are DNS names by this rule.)
fn dns_name_body() -> String {
    let label = format!(
        "[A-Za-z0-9_](?:[A-Za-z0-9_-]{{0,{}}}[A-Za-z0-9_])?",
        MAX_DNS_LABEL_LEN - 2
    );
    format!("{label}(?:\\.{label})*\\.?")
}

/// An IPv6 address as RFC 3986 writes it (`IPv6address`), which is what Rust's `Ipv6Addr`
/// parses: `::` stands for one group or more, a dotted IPv4 address may end it.
fn ipv6_body() -> String {
    let h16 = "[0-9A-Fa-f]{1,4}";
    let dec = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let ls32 = format!("(?:{h16}:{h16}|(?:{dec}\\.){{3}}{dec})");
    let head = |n: usize| {
        if n == 0 {
            String::new()
        } else {
            format!("(?:(?:{h16}:){{0,{}}}{h16})?", n - 1)
        }
    };
    [
        format!("(?:{h16}:){{6}}{ls32}"),
        format!("::(?:{h16}:){{5}}{ls32}"),
        format!("(?:{h16})?::(?:{h16}:){{4}}{ls32}"),
        format!("{}::(?:{h16}:){{3}}{ls32}", head(2)),
        format!("{}::(?:{h16}:){{2}}{ls32}", head(3)),
        format!("{}::{h16}:{ls32}", head(4)),
        format!("{}::{ls32}", head(5)),
        format!("{}::{h16}", head(6)),
        format!("{}::", head(7)),
    ]
    .map(|alt| format!("(?:{alt})"))
    .join("|")
}

/// A TCP port, 1 to 65535, in decimal without leading zeros.
fn port_body() -> &'static str {
    "6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}"
}

/// `host:port`, an IPv6 host in brackets.
fn host_port_body() -> String {
    format!(
        "(?:{}|\\[(?:{})\\]):(?:{})",
        dns_name_body(),
        ipv6_body(),
        port_body()
    )
}

/// A socket address: an IPv4 address or an IPv6 address in brackets, and a port.
fn socket_addr_body() -> String {
    let dec = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    format!(
        "(?:(?:{dec}\\.){{3}}{dec}|\\[(?:{})\\]):(?:{})",
        ipv6_body(),
        port_body()
    )
}

/// A URL's host, port and whatever follows, after `scheme://`; the port as `port`.
fn url_tail(port: &str) -> String {
    let rest = format!(
        "[/?#][A-Za-z0-9{}]*",
        regex_class_escape(URL_REST_EXTRA_CHARS)
    );
    format!(
        "(?:{}|\\[(?:{})\\]){port}(?:{rest})?",
        dns_name_body(),
        ipv6_body()
    )
}

fn address_body() -> String {
    let defaults = DEFAULT_PORTS
        .iter()
        .map(|(scheme, _)| any_case(scheme))
        .collect::<Vec<_>>()
        .join("|");
    let port = port_body();
    format!(
        "(?:{defaults})://{}|[A-Za-z][A-Za-z0-9+.-]*://{}|{}",
        url_tail(&format!("(?::(?:{port}))?")),
        url_tail(&format!(":(?:{port})")),
        host_port_body()
    )
}

fn http_url_body() -> String {
    let port = port_body();
    format!(
        "(?:{}|{})://{}",
        any_case("http"),
        any_case("https"),
        url_tail(&format!("(?::(?:{port}))?"))
    )
}

/// A `host` field: a DNS name or an IP address, an IPv6 address with or without brackets.
fn host_body() -> String {
    let v6 = ipv6_body();
    format!("{}|{v6}|\\[(?:{v6})\\]", dns_name_body())
}

/// `?wait=`: seconds, or whole numbers with units (`30s`, `5m`, `1m30s`, `250ms`, `1h`).
fn wait_body() -> &'static str {
    "[0-9]+|(?:[0-9]+(?:ms|s|m|h))+"
}

fn epoch_body() -> String {
    format!("[0-9A-Fa-f]{{1,{EPOCH_HEX_DIGITS}}}")
}

fn event_id_body() -> String {
    format!("(?:{}-)?[0-9]{{1,{REVISION_DIGITS}}}", epoch_body())
}

/// `?meta=KEY:VALUE`: a metadata key, a colon, then the value (anything, even nothing).
fn meta_filter_body() -> String {
    format!("{}:[\\s\\S]*", metadata_key_body())
}

/// Escapes characters that are special inside a regex character class.
fn regex_class_escape(chars: &str) -> String {
    chars
        .chars()
        .map(|c| match c {
            '\\' | ']' | '[' | '^' | '-' => format!("\\{c}"),
            c => c.to_string(),
        })
        .collect()
}

/// Service name: an RFC 1123 label.
pub fn service_name() -> String {
    anchored(&service_name_body())
}

/// Instance id.
pub fn instance_id() -> String {
    anchored(&instance_id_body())
}

/// One tag.
pub fn tag() -> String {
    anchored(&tag_body())
}

/// One metadata key.
pub fn metadata_key() -> String {
    anchored(&metadata_key_body())
}

/// A node name.
pub fn node() -> String {
    anchored(&node_body())
}

/// A sidecar's version.
pub fn version() -> String {
    anchored(&version_body())
}

/// An instance's `address`: a URL (the port may be left out for http, https, ws, wss and ftp)
/// or `host:port`.
pub fn address() -> String {
    anchored(&address_body())
}

/// A registration's `host`.
pub fn host() -> String {
    anchored(&host_body())
}

/// `host:port`, as a TCP check's target.
pub fn host_port() -> String {
    anchored(&host_port_body())
}

/// A listen address (`ip:port`, IPv6 in brackets), as sidecars report them.
pub fn socket_addr() -> String {
    anchored(&socket_addr_body())
}

/// An HTTP check's URL.
pub fn http_url() -> String {
    anchored(&http_url_body())
}

/// A blocking query's `wait`.
pub fn wait() -> String {
    anchored(wait_body())
}

/// A revision history's epoch as hex digits.
pub fn epoch() -> String {
    anchored(&epoch_body())
}

/// An SSE event id (`Last-Event-ID`): `<epoch>-<revision>`, or a bare revision.
pub fn event_id() -> String {
    anchored(&event_id_body())
}

/// One `?meta=KEY:VALUE` filter.
pub fn meta_filter() -> String {
    anchored(&meta_filter_body())
}

#[cfg(test)]
mod tests {
    //! Each validator against its pattern. `regex` reads the patterns as the document's
    //! readers do (the subset used means the same in ECMA 262, Rust and Python); `proptest`
    //! draws strings from the patterns and from their neighbourhood.

    use proptest::prelude::*;
    use regex::Regex;

    use super::*;
    use crate::{
        Endpoint, InstanceId, ServiceName,
        instance::check_http_url,
        name::{check_metadata_key, check_node, check_tag, check_version},
        query::{parse_meta_filter, parse_wait},
    };

    /// The compiled pattern (compiled once: the address pattern is large).
    fn re(pattern: &str) -> Regex {
        static CACHE: std::sync::LazyLock<
            std::sync::Mutex<std::collections::HashMap<String, Regex>>,
        > = std::sync::LazyLock::new(Default::default);
        let mut cache = CACHE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .entry(pattern.to_owned())
            .or_insert_with(|| Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}")))
            .clone()
    }

    /// Strings from `body` (unanchored), as `proptest` generates them.
    fn from(body: &str) -> BoxedStrategy<String> {
        proptest::string::string_regex(body)
            .unwrap_or_else(|e| panic!("{body}: {e}"))
            .boxed()
    }

    /// Strings near the language of `body`: generated ones, cut, grown or with one character
    /// replaced by one of `alphabet`, and short strings over `alphabet`.
    fn near(body: &str, alphabet: &'static str) -> BoxedStrategy<String> {
        let chars: Vec<char> = alphabet.chars().collect();
        let pick = proptest::sample::select(chars.clone());
        let edited = (
            from(body),
            any::<prop::sample::Index>(),
            pick.clone(),
            0..4u8,
        )
            .prop_map(|(s, at, c, how)| {
                let mut v: Vec<char> = s.chars().collect();
                let i = if v.is_empty() { 0 } else { at.index(v.len()) };
                match how {
                    0 if !v.is_empty() => {
                        v[i] = c;
                    }
                    1 => v.insert(i, c),
                    2 if !v.is_empty() => {
                        v.remove(i);
                    }
                    _ => v.push(c),
                }
                v.into_iter().collect()
            });
        let short =
            proptest::collection::vec(pick, 0..12).prop_map(|v| v.into_iter().collect::<String>());
        prop_oneof![from(body), edited, short].boxed()
    }

    const NAME_CHARS: &str = "aZ09-_.:@[]/ %\u{e9}";
    const ADDRESS_CHARS: &str = "ahtpsfwHTP09:/.[]-_@?#%fF+ \u{e9}";

    fn agree(pattern: &str, s: &str, accepted: bool) -> Result<(), TestCaseError> {
        let matches = re(pattern).is_match(s);
        prop_assert_eq!(
            matches,
            accepted,
            "{:?}: pattern {} but the validator {}",
            s,
            if matches { "matches" } else { "does not match" },
            if accepted { "accepts" } else { "refuses" }
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn service_names(s in near(&service_name_body(), "az09-A_.")) {
            agree(&service_name(), &s, ServiceName::new(&s).is_ok())?;
        }

        #[test]
        fn instance_ids(s in near(&instance_id_body(), NAME_CHARS)) {
            agree(&instance_id(), &s, InstanceId::new(&s).is_ok())?;
        }

        #[test]
        fn tags(s in near(&tag_body(), NAME_CHARS)) {
            agree(&tag(), &s, check_tag(&s).is_ok())?;
        }

        #[test]
        fn metadata_keys(s in near(&metadata_key_body(), NAME_CHARS)) {
            agree(&metadata_key(), &s, check_metadata_key(&s).is_ok())?;
        }

        #[test]
        fn nodes(s in near(&node_body(), NAME_CHARS)) {
            agree(&node(), &s, check_node(&s).is_ok())?;
        }

        #[test]
        fn versions(s in near(&version_body(), NAME_CHARS)) {
            agree(&version(), &s, check_version(&s).is_ok())?;
        }

        #[test]
        fn addresses(s in near(&address_body(), ADDRESS_CHARS)) {
            agree_but_long_hosts(&address(), &s, Endpoint::parse_address(&s).is_ok())?;
        }

        #[test]
        fn hosts(s in near(&host_body(), "af09:.[]-_ ")) {
            // The `host` field's length is its `maxLength`, beside the pattern.
            let long = s.len() > crate::limits::MAX_HOST_LEN;
            prop_assert_eq!(Endpoint::new(&s, 80).is_ok(), re(&host()).is_match(&s) && !long, "{:?}", s);
        }

        #[test]
        fn tcp_targets(s in near(&host_port_body(), ADDRESS_CHARS)) {
            agree_but_long_hosts(&host_port(), &s, Endpoint::parse_host_port(&s).is_ok())?;
        }

        #[test]
        fn listen_addresses(s in near(&socket_addr_body(), ADDRESS_CHARS)) {
            agree(&socket_addr(), &s, crate::nodes::check_listener(&s).is_ok())?;
        }

        #[test]
        fn http_urls(s in near(&http_url_body(), ADDRESS_CHARS)) {
            agree_but_long_hosts(&http_url(), &s, check_http_url(&s).is_ok())?;
        }

        #[test]
        fn waits(s in near(wait_body(), "0159smh ")) {
            agree(&wait(), &s, parse_wait(&s).is_some())?;
        }

        #[test]
        fn event_ids(s in near(&event_id_body(), "09af-+ ")) {
            agree(&event_id(), &s, crate::watch::parse_event_id(&s).is_some())?;
        }

        #[test]
        fn meta_filters(s in near(&meta_filter_body(), "az09:.- ")) {
            agree(&meta_filter(), &s, parse_meta_filter(&s).is_some())?;
        }

        #[test]
        fn ipv6_is_what_rust_parses(s in near(&ipv6_body(), "0aF:.")) {
            agree(&anchored(&ipv6_body()), &s, s.parse::<std::net::Ipv6Addr>().is_ok())?;
        }
    }

    /// As [`agree`], but a host longer than the limit inside the address is refused although
    /// the pattern matches (see the module's documentation): accepted exactly when the pattern
    /// matches, the host is within its limit and the whole within `maxLength`.
    fn agree_but_long_hosts(pattern: &str, s: &str, accepted: bool) -> Result<(), TestCaseError> {
        let rest = s.split_once("://").map_or(s, |(_, rest)| rest);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        // And the whole string's limit is its `maxLength`, beside the pattern.
        let long =
            host.len() > crate::limits::MAX_HOST_LEN || s.len() > crate::limits::MAX_ADDRESS_LEN;
        prop_assert_eq!(accepted, re(pattern).is_match(s) && !long, "{:?}", s);
        Ok(())
    }

    #[test]
    fn every_port_as_rust_parses_it() {
        let port = re(&anchored(port_body()));
        for n in 0..=70_000u32 {
            let s = n.to_string();
            assert_eq!(port.is_match(&s), (1..=65_535).contains(&n), "{s}");
        }
        for s in ["", "080", "+80", "0", "00", " 80", "80 "] {
            assert!(!port.is_match(s), "{s:?}");
        }
    }

    #[test]
    fn the_patterns_take_the_limits() {
        assert!(re(&service_name()).is_match(&"a".repeat(63)));
        assert!(!re(&service_name()).is_match(&"a".repeat(64)));
        assert!(re(&instance_id()).is_match(&"a".repeat(MAX_INSTANCE_ID_LEN)));
        assert!(!re(&instance_id()).is_match(&"a".repeat(MAX_INSTANCE_ID_LEN + 1)));
        assert!(re(&tag()).is_match(&"t".repeat(63)));
        assert!(!re(&tag()).is_match(&"t".repeat(64)));
        assert!(re(&address()).is_match(&format!("{}:80", "a".repeat(63))));
        assert!(!re(&address()).is_match(&format!("{}:80", "a".repeat(64))));
    }

    #[test]
    fn examples_of_addresses() {
        let address = re(&address());
        for ok in [
            "http://localhost:8001",
            "HTTP://LocalHost:8001/",
            "https://api.example.com",
            "http://10.0.0.7",
            "http://[::1]:9000/a/b?c=d#e",
            "grpc://10.0.0.7:50051",
            "10.0.0.7:8001",
            "[fe80::1]:53",
            "db-1.internal:5432",
            "localhost.:80",
        ] {
            assert!(address.is_match(ok), "{ok}");
            assert!(Endpoint::parse_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "localhost",
            "10.0.0.7:0",
            "10.0.0.7:080",
            "10.0.0.7:+80",
            "::1:80",
            "grpc://10.0.0.7",
            "http://user@host:80",
            "http://[host]:80",
            "[host]:80",
            "http://a b:80",
            "http://host:80/a b",
            "",
        ] {
            assert!(!address.is_match(bad), "{bad}");
            assert!(Endpoint::parse_address(bad).is_err(), "{bad}");
        }
    }
}
