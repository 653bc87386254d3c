//! A request's headers on the way upstream and an answer's on the way back: hop-by-hop headers
//! removed (RFC 9110 section 7.6.1), `X-Forwarded-For`, `X-Forwarded-Proto` and `Via` added.
//! One pass over the names finds what is there ([`Names`]), so the common request that carries
//! none of them costs comparisons, not hashed look-ups.

use http::{HeaderMap, HeaderName, HeaderValue, Request, header};
use hyper::body::Incoming;

/// `Connection` names `upgrade` (the caller has seen an `Upgrade` header).
pub(super) fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The fixed hop-by-hop headers (RFC 9110 section 7.6.1 and common practice).
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::UPGRADE
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// What one pass over a request's header names found: comparisons of known names, no hashing,
/// instead of a hashed look-up for each name that might be there.
#[derive(Debug, Clone, Copy)]
pub(super) struct Names {
    pub(super) host: bool,
    pub(super) upgrade: bool,
    pub(super) hop_by_hop: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
}

impl Names {
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let mut seen = Self {
            host: false,
            upgrade: false,
            hop_by_hop: false,
            forwarded_for: false,
            forwarded_proto: false,
        };
        for name in headers.keys() {
            seen.host |= name == header::HOST;
            seen.upgrade |= name == header::UPGRADE;
            seen.hop_by_hop |= is_hop_by_hop(name);
            seen.forwarded_for |= name == X_FORWARDED_FOR;
            seen.forwarded_proto |= name == X_FORWARDED_PROTO;
        }
        seen
    }
}

/// Removes the hop-by-hop headers of RFC 9110 section 7.6.1: those named in `Connection` and
/// the fixed list. For an upgrade, `Connection: upgrade` and `Upgrade` go through. Most
/// messages carry none, so callers check with [`is_hop_by_hop`] (or [`Names`]) first.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    let fixed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n) && !(upgrade && *n == header::UPGRADE))
        .cloned()
        .collect();
    for name in fixed {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A request's headers as they go upstream: hop-by-hop ones removed, forwarding ones added.
/// `names` is what [`Names::of`] found in them.
pub(super) fn forward_headers(
    headers: &mut HeaderMap,
    names: Names,
    upgrade: bool,
    client: HeaderValue,
    version: http::Version,
) {
    if names.hop_by_hop || upgrade {
        strip_hop_by_hop(headers, upgrade);
    }
    // What was removed as hop-by-hop may have been a forwarding header.
    let names = if names.hop_by_hop {
        Names::of(headers)
    } else {
        names
    };
    add_forwarding(headers, client, version, names);
}

/// Adds the client's address to `X-Forwarded-For`, `X-Forwarded-Proto: http` unless set, and
/// `Via`. `client` is the address as a header value, made once per connection; `names` says
/// which of the first two are there.
fn add_forwarding(
    headers: &mut HeaderMap,
    client: HeaderValue,
    version: http::Version,
    names: Names,
) {
    // Room for the three below at once (a parsed request's map is sized to what it holds).
    headers.reserve(3);
    if names.forwarded_for {
        let earlier = headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .map(|earlier| format!("{earlier}, {}", client.to_str().unwrap_or("")));
        let value = earlier
            .and_then(|v| HeaderValue::from_str(&v).ok())
            .unwrap_or(client);
        headers.insert(&X_FORWARDED_FOR, value);
    } else {
        headers.append(&X_FORWARDED_FOR, client);
    }
    if !names.forwarded_proto {
        headers.append(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    headers.append(header::VIA, via(version));
}

/// This proxy's `Via` entry for a message of `version`.
pub(super) fn via(version: http::Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        http::Version::HTTP_2 => "2 waypost",
        http::Version::HTTP_10 => "1.0 waypost",
        _ => "1.1 waypost",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded_as(given: &[(&'static str, &'static str)], upgrade: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in given {
            headers.append(*name, HeaderValue::from_static(value));
        }
        let names = Names::of(&headers);
        forward_headers(
            &mut headers,
            names,
            upgrade,
            HeaderValue::from_static("10.0.0.7"),
            http::Version::HTTP_11,
        );
        headers
    }

    fn forwarded(given: &[(&'static str, &'static str)]) -> HeaderMap {
        forwarded_as(given, false)
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let sent = forwarded(&[
            ("host", "web"),
            ("connection", "keep-alive, x-secret, x-forwarded-proto"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-secret", "hop"),
            ("x-forwarded-proto", "https"),
            ("proxy-authorization", "Basic abc"),
            ("accept", "*/*"),
        ]);
        for gone in [
            "connection",
            "keep-alive",
            "te",
            "x-secret",
            "proxy-authorization",
        ] {
            assert!(!sent.contains_key(gone), "{gone} went upstream: {sent:?}");
        }
        assert_eq!(sent["host"], "web");
        assert_eq!(sent["accept"], "*/*");
        // Named in Connection, so this hop's own: replaced by what this proxy saw.
        assert_eq!(sent["x-forwarded-proto"], "http");

        let upgrade = forwarded_as(
            &[
                ("connection", "Upgrade, keep-alive"),
                ("upgrade", "websocket"),
                ("keep-alive", "timeout=5"),
            ],
            true,
        );
        assert_eq!(upgrade["upgrade"], "websocket");
        assert_eq!(upgrade["connection"], "upgrade");
        assert!(!upgrade.contains_key("keep-alive"));
    }

    #[test]
    fn forwarding_headers_are_added_or_extended() {
        let fresh = forwarded(&[("host", "web")]);
        assert_eq!(fresh["x-forwarded-for"], "10.0.0.7");
        assert_eq!(fresh["x-forwarded-proto"], "http");
        assert_eq!(fresh["via"], "1.1 waypost");

        let behind = forwarded(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-proto", "https"),
            ("via", "1.1 edge"),
        ]);
        assert_eq!(behind["x-forwarded-for"], "192.0.2.1, 10.0.0.7");
        assert_eq!(
            behind["x-forwarded-proto"], "https",
            "kept as the first hop saw it"
        );
        let via: Vec<_> = behind.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 edge", "1.1 waypost"]);
    }
}
