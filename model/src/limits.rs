//! Every explicit limit of the API, with the reason for its size. The control plane enforces
//! them; the OpenAPI document and the README quote them.

/// Longest request target (path and query). Ours is far shorter than any real request needs
/// (the longest is a `/discover` with every filter) and well below the HTTP library's own
/// limit, so an overlong one gets our `uri_too_long` problem rather than a bare status.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Most request header fields. Below the HTTP library's own limit (100), which answers a bare
/// 431 beyond it.
pub const MAX_HEADERS: usize = 64;

/// Most bytes in all request header names and values together (nginx's default buffers hold
/// 8 KiB a line); the HTTP library refuses heads over 64 KiB with a bare 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Largest accepted request body. A registration with the maximum tags and metadata fits well
/// within it; anything larger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// RFC 1123 caps a DNS label at 63 octets, and service names become DNS labels.
pub const MAX_SERVICE_NAME_LEN: usize = 63;

/// A host name may be a full DNS name (RFC 1035: 253 characters, counted as written, a final
/// dot included) or an IP literal.
pub const MAX_HOST_LEN: usize = 253;

/// One label of a DNS name (RFC 1035).
pub const MAX_DNS_LABEL_LEN: usize = 63;

/// Instance ids are opaque but bounded, so keys in the store and the indexes stay small. The
/// bound fits the id derived from any valid endpoint (`host:port`, the longest host and port), so
/// that every address that is valid yields a valid id.
pub const MAX_INSTANCE_ID_LEN: usize = MAX_HOST_LEN + ":65535".len();

/// An `address` is a URL or `host:port`; longer than this is not an endpoint.
pub const MAX_ADDRESS_LEN: usize = 512;

/// Tags select instances in DNS (`<tag>.<service>.service.waypost.`), so each is label-sized.
pub const MAX_TAG_LEN: usize = 63;

/// Tags per instance.
pub const MAX_TAGS: usize = 32;

/// Metadata entries per instance.
pub const MAX_METADATA_ENTRIES: usize = 64;

/// Length of one metadata key.
pub const MAX_METADATA_KEY_LEN: usize = 128;

/// Length of one metadata value, in characters (as JSON Schema's `maxLength` counts).
pub const MAX_METADATA_VALUE_LEN: usize = 512;

/// Smallest and largest instance weight for weighted balancing.
pub const WEIGHT_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;

/// Shortest and longest TTL an instance may ask for, in seconds.
pub const TTL_SECONDS_RANGE: std::ops::RangeInclusive<u32> = 1..=86_400;

/// Health-check interval and timeout bounds, in seconds.
pub const CHECK_SECONDS_RANGE: std::ops::RangeInclusive<u32> = 1..=3_600;

/// Instances in one batch heartbeat.
pub const MAX_BATCH_HEARTBEAT: usize = 1_000;

/// The longest a blocking query may wait (Consul caps at 10 minutes too); a longer `wait` is
/// cut to this, as Consul does.
pub const MAX_BLOCKING_WAIT_SECONDS: u64 = 600;

/// Largest revision a query may name (`index`, `since`): the document declares them `int64`,
/// which every generated client can hold. Revisions never come near it (one change per
/// nanosecond would take 292 years).
pub const MAX_QUERY_REVISION: u64 = i64::MAX as u64;

/// Longest `?tag=`, `?meta=KEY:VALUE` or `?meta.KEY=VALUE` filter value (decoded).
pub const MAX_FILTER_LEN: usize = 512;

/// Longest node name (a host name: letters, digits, `-`, `_`, `.`).
pub const MAX_NODE_LEN: usize = 253;

/// Longest health check output kept with an instance (longer output is cut).
pub const MAX_CHECK_OUTPUT_LEN: usize = 1024;

/// Longest version a sidecar reports (letters, digits, `-`, `_`, `.`).
pub const MAX_VERSION_LEN: usize = 64;

/// Most listen addresses of one kind (DNS, HTTP proxy, TCP proxy) in a sidecar's report.
pub const MAX_NODE_LISTENERS: usize = 64;

/// Most sidecars one propagation wait or query names (`?node=`): 30 names of the longest
/// kind still fit a request target of [`MAX_URI_BYTES`].
pub const MAX_NAMED_NODES: usize = 30;

// The names, each as `&node=NAME`, and room for the path and the other parameters.
const _: () = assert!(MAX_NAMED_NODES * ("&node=".len() + MAX_NODE_LEN) + 256 <= MAX_URI_BYTES);

/// Consecutive results a check needs to change an instance's health
/// (`failures_before_critical`, `successes_before_passing`). A hundred results at the shortest
/// interval is over a minute and a half; beyond that a threshold hides an outage rather than
/// a blip.
pub const CHECK_THRESHOLD_RANGE: std::ops::RangeInclusive<u32> = 1..=100;

/// State changes a check may make within its flap window (`flap_changes`); more and the
/// instance is held as `flapping`. 0 turns damping off. The sidecar remembers one more change
/// than this per check, so the bound is also its memory bound.
pub const FLAP_CHANGES_RANGE: std::ops::RangeInclusive<u32> = 0..=100;

/// The flap window, in seconds (`flap_window_seconds`): an hour at most, as a check's interval.
pub const FLAP_WINDOW_SECONDS_RANGE: std::ops::RangeInclusive<u32> = 1..=3_600;
