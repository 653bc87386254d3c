//! The OpenAPI schemas of request fields and query parameters, built from [`crate::limits`] and
//! [`crate::syntax`] so that the document states the bounds the control plane enforces without
//! a second copy of any number. Fields use them with `#[schema(schema_with = ...)]`; [`Shapes`]
//! adds which fields go together, which the derive cannot say.

use serde_json::json;
use utoipa::openapi::{
    Array, ArrayBuilder, KnownFormat, Object, ObjectBuilder, OpenApi, Ref, RefOr, Schema,
    SchemaFormat, Type, extensions::Extensions,
};

use crate::{
    Check,
    limits::{
        CHECK_SECONDS_RANGE, CHECK_THRESHOLD_RANGE, FLAP_CHANGES_RANGE, FLAP_WINDOW_SECONDS_RANGE,
        MAX_ADDRESS_LEN, MAX_BATCH_HEARTBEAT, MAX_FILTER_LEN, MAX_HOST_LEN, MAX_INSTANCE_ID_LEN,
        MAX_METADATA_ENTRIES, MAX_METADATA_KEY_LEN, MAX_METADATA_VALUE_LEN, MAX_NODE_LEN,
        MAX_NODE_LISTENERS, MAX_QUERY_REVISION, MAX_SERVICE_NAME_LEN, MAX_TAG_LEN, MAX_TAGS,
        MAX_VERSION_LEN, TTL_SECONDS_RANGE, WEIGHT_RANGE,
    },
    syntax,
};

fn string(pattern: String, min: usize, max: usize, description: String) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .description(Some(description))
}

fn integer(range: &std::ops::RangeInclusive<u32>, description: String) -> Object {
    integer_builder(range, description).build()
}

fn integer_builder(range: &std::ops::RangeInclusive<u32>, description: String) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(*range.start()))
        .maximum(Some(*range.end()))
        .description(Some(description))
}

/// An integer in `range` that takes `default` when left out.
fn integer_or(range: &std::ops::RangeInclusive<u32>, default: u32, description: String) -> Object {
    integer_builder(range, description)
        .default(Some(json!(default)))
        .build()
}

const SERVICE_RULE: &str =
    "an RFC 1123 label: lowercase letters, digits and `-`, not starting or ending with `-`";

fn service(description: &str) -> Object {
    string(
        syntax::service_name(),
        1,
        MAX_SERVICE_NAME_LEN,
        format!("{description}: {SERVICE_RULE}, 1 to {MAX_SERVICE_NAME_LEN} characters."),
    )
    .examples(["user-service"])
    .build()
}

fn id(description: &str) -> Object {
    string(
        syntax::instance_id(),
        1,
        MAX_INSTANCE_ID_LEN,
        format!(
            "{description} 1 to {MAX_INSTANCE_ID_LEN} letters, digits, `-`, `_`, `.`, `:`, `@`, \
             `[` or `]`."
        ),
    )
    .examples(["10.0.0.7:8001"])
    .build()
}

fn address(description: &str) -> Object {
    string(
        syntax::address(),
        1,
        MAX_ADDRESS_LEN,
        format!(
            "{description} A URL (`http://localhost:8001`; the port may be left out for http, \
             https, ws, wss and ftp; no user name; a path, query or fragment of RFC 3986 \
             characters may follow) or `host:port` (`10.0.0.7:8001`, `[::1]:8001`). The host is \
             a DNS name of at most {MAX_HOST_LEN} characters (labels of letters, digits, `-` and \
             `_`) or an IP address, IPv6 in brackets; the port is 1 to 65535 without leading \
             zeros. At most {MAX_ADDRESS_LEN} characters."
        ),
    )
    .examples(["http://10.0.0.7:8001"])
    .build()
}

/// `service` of a registration.
pub fn register_service() -> Object {
    service("Service name")
}

/// `service` naming an instance's service (heartbeat, deregister, drain, check).
pub fn ref_service() -> Object {
    service("The instance's service")
}

/// `id` of a registration.
pub fn register_id() -> Object {
    id("Instance id, unique within the service. Default: the endpoint as `host:port`.")
}

/// `id` naming an instance.
pub fn ref_id() -> Object {
    id("Instance id, as `/register` answered it; it wins when `address` is given too.")
}

/// `address` of a registration.
pub fn register_address() -> Object {
    address("The endpoint, instead of `host` and `port`.")
}

/// `address` naming an instance.
pub fn ref_address() -> Object {
    address("The address the instance registered with, or any address of the same host and port.")
}

/// `host` of a registration.
pub fn host() -> Object {
    string(
        syntax::host(),
        1,
        MAX_HOST_LEN,
        format!(
            "The endpoint's host, with `port`, instead of `address`: a DNS name of at most \
             {MAX_HOST_LEN} characters or an IP address (IPv6 with or without brackets)."
        ),
    )
    .examples(["10.0.0.7"])
    .build()
}

/// `port` of a registration.
pub fn port() -> Object {
    integer(
        &(1..=u32::from(u16::MAX)),
        "The endpoint's port, with `host`.".into(),
    )
}

/// `tags` of a registration.
pub fn tags() -> Array {
    ArrayBuilder::new()
        .items(tag("One tag"))
        .max_items(Some(MAX_TAGS))
        .description(Some(format!(
            "Up to {MAX_TAGS} tags; selectable in discovery (`?tag=`) and DNS \
             (`<tag>.<service>.service.waypost.`). Duplicates count once."
        )))
        .build()
}

fn tag(description: &str) -> Object {
    string(
        syntax::tag(),
        1,
        MAX_TAG_LEN,
        format!("{description}: 1 to {MAX_TAG_LEN} letters, digits, `-` or `_`."),
    )
    .build()
}

/// `metadata` of a registration.
pub fn metadata() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(MAX_METADATA_ENTRIES))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_METADATA_KEY_LEN))
                .pattern(Some(syntax::metadata_key())),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_METADATA_VALUE_LEN)),
        ))
        .description(Some(format!(
            "Up to {MAX_METADATA_ENTRIES} string pairs: keys of 1 to {MAX_METADATA_KEY_LEN} \
             letters, digits, `-`, `_` or `.`, values of up to {MAX_METADATA_VALUE_LEN} \
             characters; selectable in discovery (`?meta=KEY:VALUE`)."
        )))
        .examples([json!({"zone": "a"})])
        .build()
}

/// `weight` of a registration.
pub fn weight() -> Object {
    integer(
        &WEIGHT_RANGE,
        format!(
            "Relative weight for weighted balancing, {} to {}. Default 1.",
            WEIGHT_RANGE.start(),
            WEIGHT_RANGE.end()
        ),
    )
}

/// `ttl_seconds` of a registration.
pub fn ttl_seconds() -> Object {
    integer(
        &TTL_SECONDS_RANGE,
        format!(
            "Seconds without a heartbeat before the instance expires, {} to {}. Default: the \
             control plane's `default_ttl` (30 s).",
            TTL_SECONDS_RANGE.start(),
            TTL_SECONDS_RANGE.end()
        ),
    )
}

/// `node` of a registration.
pub fn node() -> Object {
    string(
        syntax::node(),
        1,
        MAX_NODE_LEN,
        format!(
            "The host the instance runs on; the sidecar configured with this node name runs its \
             `check`. 1 to {MAX_NODE_LEN} letters, digits, `-`, `_` or `.`."
        ),
    )
    .examples(["node-7"])
    .build()
}

/// `check.http`.
pub fn check_http() -> Object {
    string(
        syntax::http_url(),
        1,
        MAX_ADDRESS_LEN,
        format!(
            "An `http://` or `https://` URL that answers 2xx when the instance is healthy (host \
             and port as in an `address`; at most {MAX_ADDRESS_LEN} characters)."
        ),
    )
    .examples(["http://10.0.0.7:8001/healthz"])
    .build()
}

/// `check.tcp`.
pub fn check_tcp() -> Object {
    string(
        syntax::host_port(),
        1,
        MAX_ADDRESS_LEN,
        "A `host:port` (IPv6 in brackets) that accepts TCP connections when the instance is \
         healthy."
            .to_owned(),
    )
    .examples(["10.0.0.7:5432"])
    .build()
}

/// `check.interval_seconds`.
pub fn check_interval() -> Object {
    integer_or(
        &CHECK_SECONDS_RANGE,
        Check::DEFAULT_INTERVAL_SECONDS,
        format!(
            "Seconds between checks, {} to {}. Default {}.",
            CHECK_SECONDS_RANGE.start(),
            CHECK_SECONDS_RANGE.end(),
            Check::DEFAULT_INTERVAL_SECONDS
        ),
    )
}

/// `check.timeout_seconds`.
pub fn check_timeout() -> Object {
    integer_or(
        &CHECK_SECONDS_RANGE,
        Check::DEFAULT_TIMEOUT_SECONDS,
        format!(
            "Seconds before one check counts as failed, {} to {}. Default {}. It may exceed the \
             interval (the next check then waits for this one).",
            CHECK_SECONDS_RANGE.start(),
            CHECK_SECONDS_RANGE.end(),
            Check::DEFAULT_TIMEOUT_SECONDS
        ),
    )
}

/// `check.failures_before_critical`.
pub fn check_failures() -> Object {
    integer_or(
        &CHECK_THRESHOLD_RANGE,
        1,
        format!(
            "Failed checks in a row that make a passing instance `critical`, {} to {}. \
             Default 1.",
            CHECK_THRESHOLD_RANGE.start(),
            CHECK_THRESHOLD_RANGE.end()
        ),
    )
}

/// `check.successes_before_passing`.
pub fn check_successes() -> Object {
    integer_or(
        &CHECK_THRESHOLD_RANGE,
        1,
        format!(
            "Passed checks in a row that make a critical instance `passing` again, {} to {}. \
             Default 1.",
            CHECK_THRESHOLD_RANGE.start(),
            CHECK_THRESHOLD_RANGE.end()
        ),
    )
}

/// `check.flap_changes`.
pub fn check_flap_changes() -> Object {
    integer_or(
        &FLAP_CHANGES_RANGE,
        Check::DEFAULT_FLAP_CHANGES,
        format!(
            "Changes of health (after the thresholds above) allowed within \
             `flap_window_seconds`; one more holds the instance as `flapping`, out of \
             rotation, until its check has not changed for the window. {} to {}; 0 turns flap \
             damping off. Default {}.",
            FLAP_CHANGES_RANGE.start(),
            FLAP_CHANGES_RANGE.end(),
            Check::DEFAULT_FLAP_CHANGES
        ),
    )
}

/// `check.flap_window_seconds`.
pub fn check_flap_window() -> Object {
    integer_or(
        &FLAP_WINDOW_SECONDS_RANGE,
        Check::DEFAULT_FLAP_WINDOW_SECONDS,
        format!(
            "The flap window in seconds: changes are counted within it, and a flapping \
             instance is released after this long without a change. {} to {}. Default {}.",
            FLAP_WINDOW_SECONDS_RANGE.start(),
            FLAP_WINDOW_SECONDS_RANGE.end(),
            Check::DEFAULT_FLAP_WINDOW_SECONDS
        ),
    )
}

/// `check.tls_skip_verify`.
pub fn check_tls_skip_verify() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .default(Some(json!(false)))
        .description(Some(
            "For an `https://` check (ignored by others): accept any server certificate \
             (self-signed, expired, for another name). Dangerous: whoever answers on that address \
             passes the check. Default false.",
        ))
        .build()
}

/// `instances` of a batch heartbeat.
pub fn heartbeat_batch() -> Array {
    ArrayBuilder::new()
        .items(Ref::from_schema_name(HEARTBEAT_ENTRY))
        .max_items(Some(MAX_BATCH_HEARTBEAT))
        .description(Some(format!(
            "Batch form: up to {MAX_BATCH_HEARTBEAT} instances renewed in one request; the answer \
             reports each."
        )))
        .build()
}

/// The name of [`heartbeat_entry`]'s schema.
const HEARTBEAT_ENTRY: &str = "HeartbeatEntry";

/// One entry of a batch heartbeat. Its fields are those of an `InstanceRef`, but only their
/// types are required: an entry that is not valid (a bad name, neither `id` nor `address`) is
/// answered in the batch's results with its problem code, like an unknown one, rather than
/// refusing the batch, so one bad entry does not cost the others their renewal.
pub fn heartbeat_entry() -> Object {
    let text = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .required("service")
        .property("service", text("Service name."))
        .property(
            "id",
            text("Instance id; it wins when `address` is given too."),
        )
        .property("address", text("The address the instance registered with."))
        .description(Some(
            "One instance of a batch heartbeat, named as in `InstanceRef` (`service` with `id` or \
             `address`). Only the types are checked up front: an entry that names no valid \
             instance is reported in the answer (`status` is its problem code, such as \
             `invalid_service_name` or `invalid_field`), like an unknown one \
             (`instance_not_found`), and the other entries are still renewed.",
        ))
        .examples([json!({"service": "user-service", "id": "user-1"})])
        .build()
}

/// Path parameter `service` of `/discover/{service}`.
pub fn path_service() -> Object {
    service("The service")
}

/// Query parameter `service` of `/sd/prometheus`.
pub fn sd_service() -> Object {
    service("Only instances of this service")
}

/// Query parameter `service` of `/watch`.
pub fn watch_service() -> Object {
    service("Only events of this service")
}

/// Query parameter `tag` (repeatable).
pub fn tag_filter() -> Array {
    ArrayBuilder::new()
        .items(tag("A tag the instances must have"))
        .build()
}

/// Query parameter `meta` (repeatable).
pub fn meta_filter() -> Array {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(2))
                .max_length(Some(MAX_FILTER_LEN))
                .pattern(Some(syntax::meta_filter()))
                .description(Some(format!(
                    "`KEY:VALUE`: a metadata key (1 to {MAX_METADATA_KEY_LEN} letters, digits, \
                     `-`, `_` or `.`), a colon, then the value (everything after the first \
                     colon, possibly empty); at most {MAX_FILTER_LEN} characters."
                )))
                .examples(["zone:a"]),
        )
        .build()
}

/// Query parameters `index` and `since`: a revision, as `int64`.
pub fn revision() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .maximum(Some(MAX_QUERY_REVISION))
        .build()
}

/// Query parameter `wait`.
pub fn wait() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(syntax::wait()))
        .description(Some(format!(
            "Blocking query: the longest to hold, as seconds (`30`) or whole numbers with units \
             `ms`, `s`, `m`, `h` (`30s`, `5m`, `1m30s`). Default 5m; longer than {}m is cut to \
             {}m, as Consul does (and to the control plane's `--max-query-time`).",
            crate::limits::MAX_BLOCKING_WAIT_SECONDS / 60,
            crate::limits::MAX_BLOCKING_WAIT_SECONDS / 60,
        )))
        .examples(["30s"])
        .build()
}

/// Query parameter `epoch` of `/watch`.
pub fn epoch() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(syntax::EPOCH_HEX_DIGITS))
        .pattern(Some(syntax::epoch()))
        .description(Some(
            "The epoch `since` belongs to (hex, as in event ids); another epoch gets a snapshot.",
        ))
        .examples(["c44fa78add87a17f"])
        .build()
}

/// A sidecar report's `version`.
pub fn version() -> Object {
    string(
        syntax::version(),
        1,
        MAX_VERSION_LEN,
        format!("The sidecar's version: 1 to {MAX_VERSION_LEN} letters, digits, `-`, `_` or `.`."),
    )
    .examples(["0.1.0"])
    .build()
}

/// A listen address in a sidecar report.
pub fn listener() -> Object {
    string(
        syntax::socket_addr(),
        1,
        MAX_LISTENER_LEN,
        "A listen address: an IP address (IPv6 in brackets) and a port.".to_owned(),
    )
    .examples(["127.0.0.1:8600"])
    .build()
}

/// The longest listen address: `[` + an IPv6 address with an IPv4 tail (45) + `]:65535`.
const MAX_LISTENER_LEN: usize = 53;

/// A list of listen addresses in a sidecar report.
pub fn listeners() -> Array {
    ArrayBuilder::new()
        .items(listener())
        .max_items(Some(MAX_NODE_LISTENERS))
        .description(Some(format!(
            "Listen addresses (`ip:port`), at most {MAX_NODE_LISTENERS}."
        )))
        .build()
}

/// A sidecar report's `epoch`.
pub fn report_epoch() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(syntax::EPOCH_HEX_DIGITS))
        .pattern(Some(syntax::epoch()))
        .description(Some(
            "The epoch of the revisions the sidecar follows (hex, as in event ids).",
        ))
        .examples(["c44fa78add87a17f"])
        .build()
}

/// A sidecar report's `revision`.
pub fn report_revision() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .maximum(Some(MAX_QUERY_REVISION))
        .description(Some(
            "The revision the sidecar's DNS and proxies answer from.",
        ))
        .build()
}

/// Path parameter `node` of `PUT /nodes/{node}`, and the repeatable query parameter `node`.
pub fn report_node() -> Object {
    string(
        syntax::node(),
        1,
        MAX_NODE_LEN,
        format!("A sidecar's node name: 1 to {MAX_NODE_LEN} letters, digits, `-`, `_` or `.`."),
    )
    .examples(["node-7"])
    .build()
}

/// Query parameter `node` (repeatable) of a propagation wait.
pub fn named_nodes() -> Array {
    ArrayBuilder::new()
        .items(report_node())
        .max_items(Some(crate::limits::MAX_NAMED_NODES))
        .build()
}

/// Query parameter `wait` of a write.
pub fn write_wait() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["propagated"]))
        .build()
}

/// Query parameter `timeout` of a propagation wait.
pub fn propagation_timeout() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(syntax::wait()))
        .description(Some(
            "Seconds (`5`) or whole numbers with units `ms`, `s`, `m`, `h` (`5s`, `1m30s`); cut \
             to the control plane's `--max-query-time`.",
        ))
        .examples(["5s"])
        .build()
}

/// A policy's `min_healthy_percent`.
pub fn min_healthy_percent() -> Object {
    integer(
        &(0..=100),
        "The proxies' panic threshold for the service, in percent (0 to 100; 0: never).".to_owned(),
    )
}

/// Header `Last-Event-ID` of `/watch`.
pub fn last_event_id() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(syntax::event_id()))
        .description(Some(
            "Resume after this event id (`<epoch>-<revision>`, or a bare revision).",
        ))
        .examples(["c44fa78add87a17f-42"])
        .build()
}

/// Says which fields of the request bodies go together (JSON Schema's `oneOf`, `anyOf` and
/// `not` over `required`), which `#[derive(ToSchema)]` cannot. Each constraint is one `allOf`
/// entry beside the derived `properties`, a form both openapi-python-client and
/// openapi-typescript read without losing the properties.
#[derive(Debug, Clone, Copy)]
pub struct Shapes;

fn present(fields: &[&str]) -> serde_json::Value {
    json!({ "required": fields })
}

fn none_of(fields: &[&str]) -> serde_json::Value {
    match fields {
        [one] => json!({ "not": present(&[one]) }),
        _ => {
            json!({ "not": { "anyOf": fields.iter().map(|f| present(&[f])).collect::<Vec<_>>() } })
        }
    }
}

fn with(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

impl Shapes {
    /// `(component, constraint)`: the constraints, by schema name.
    pub fn constraints() -> Vec<(&'static str, serde_json::Value)> {
        let by_id_or_address = json!({ "anyOf": [present(&["id"]), present(&["address"])] });
        vec![
            (
                "RegisterRequest",
                json!({ "oneOf": [
                    with(
                        with(present(&["address"]), none_of(&["host", "port"])),
                        json!({ "description": "The endpoint as `address`." }),
                    ),
                    with(
                        with(present(&["host", "port"]), none_of(&["address"])),
                        json!({ "description": "The endpoint as `host` and `port`." }),
                    ),
                ]}),
            ),
            ("InstanceRef", by_id_or_address.clone()),
            (
                "HeartbeatRequest",
                json!({ "oneOf": [
                    with(
                        with(with(present(&["service"]), by_id_or_address), none_of(&["instances"])),
                        json!({ "description": "One instance, by `id` or `address`." }),
                    ),
                    with(
                        with(present(&["instances"]), none_of(&["service", "id", "address"])),
                        json!({ "description": "A batch." }),
                    ),
                ]}),
            ),
            (
                "Check",
                json!({ "oneOf": [present(&["http"]), present(&["tcp"])] }),
            ),
        ]
    }
}

impl utoipa::Modify for Shapes {
    fn modify(&self, doc: &mut OpenApi) {
        let schemas = &mut doc.components.get_or_insert_with(Default::default).schemas;
        // Named by `HeartbeatRequest.instances`, which has no type of its own.
        schemas.insert(HEARTBEAT_ENTRY.to_owned(), heartbeat_entry().into());
        for (name, constraint) in Self::constraints() {
            match schemas.get_mut(name) {
                Some(RefOr::T(Schema::Object(object))) => {
                    object
                        .extensions
                        .get_or_insert_with(Extensions::default)
                        .insert("allOf".to_owned(), json!([constraint]));
                }
                _ => panic!("the document has no object schema {name} to shape"),
            }
        }
    }
}
