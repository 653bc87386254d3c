//! The served OpenAPI document equals the committed `openapi/openapi.json`.

mod common;

use common::*;
use serde_json::json;

const REGENERATE: &str = "cargo run -p waypost-control -- openapi --out openapi/openapi.json";

#[tokio::test]
async fn served_document_matches_the_committed_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}; create it with: {REGENERATE}"));
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let served = text(&cp, "/openapi.json").await;
    assert!(
        served == committed,
        "openapi/openapi.json differs from the served document; regenerate it with:\n    {REGENERATE}"
    );
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for route in [
        "/register",
        "/heartbeat",
        "/deregister",
        "/drain",
        "/discover/{service}",
        "/services",
        "/watch",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/docs",
    ] {
        assert!(
            doc["paths"][route].is_object(),
            "{route} missing from the document"
        );
    }
}

#[tokio::test]
async fn docs_ui_is_served_without_external_links() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let page = client().get(cp.at("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("https://"),
        "the docs page links outside: {html}"
    );
    let init = client()
        .get(cp.at("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    assert!(init.text().await.unwrap().contains("/openapi.json"));
    let bundle = client()
        .get(cp.at("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
}

/// The document's bounds are the limits the server enforces (one source: `model/src/limits.rs`),
/// and the repeatable filters are declared so that generated clients can send them.
#[test]
fn the_document_takes_its_bounds_from_the_limits() {
    use waypost_model::limits::*;
    let doc: serde_json::Value =
        serde_json::from_str(&waypost_control::api::openapi_pretty()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let reg = &schemas["RegisterRequest"]["properties"];
    assert_eq!(reg["weight"]["minimum"], *WEIGHT_RANGE.start());
    assert_eq!(reg["weight"]["maximum"], *WEIGHT_RANGE.end());
    assert_eq!(reg["ttl_seconds"]["maximum"], *TTL_SECONDS_RANGE.end());
    assert_eq!(reg["service"]["maxLength"], MAX_SERVICE_NAME_LEN);
    assert_eq!(reg["id"]["maxLength"], MAX_INSTANCE_ID_LEN);
    assert_eq!(reg["address"]["maxLength"], MAX_ADDRESS_LEN);
    assert_eq!(reg["host"]["maxLength"], MAX_HOST_LEN);
    assert_eq!(reg["node"]["maxLength"], MAX_NODE_LEN);
    assert_eq!(reg["tags"]["maxItems"], MAX_TAGS);
    assert_eq!(reg["tags"]["items"]["maxLength"], MAX_TAG_LEN);
    assert_eq!(reg["metadata"]["maxProperties"], MAX_METADATA_ENTRIES);
    assert_eq!(
        reg["metadata"]["propertyNames"]["maxLength"],
        MAX_METADATA_KEY_LEN
    );
    assert_eq!(
        reg["metadata"]["additionalProperties"]["maxLength"],
        MAX_METADATA_VALUE_LEN
    );
    let check = &schemas["Check"]["properties"];
    assert_eq!(
        check["interval_seconds"]["maximum"],
        *CHECK_SECONDS_RANGE.end()
    );
    assert_eq!(
        schemas["HeartbeatRequest"]["properties"]["instances"]["maxItems"],
        MAX_BATCH_HEARTBEAT
    );
    // Optional fields are not nullable: the server refuses `null` for them.
    for name in [
        "RegisterRequest",
        "Check",
        "InstanceRef",
        "HeartbeatRequest",
        "DrainRequest",
        "CheckReport",
        "HeartbeatEntry",
    ] {
        let text = schemas[name].to_string();
        assert!(
            !text.contains("\"null\""),
            "{name} has a nullable field: {text}"
        );
    }
    // Which fields go together.
    assert!(schemas["RegisterRequest"]["allOf"][0]["oneOf"].is_array());
    assert!(schemas["HeartbeatRequest"]["allOf"][0]["oneOf"].is_array());
    assert!(schemas["InstanceRef"]["allOf"][0]["anyOf"].is_array());
    // The filters: `tag` and `meta` repeat (form, exploded), `index` is an int64.
    let params = doc["paths"]["/discover/{service}"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let param = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
    };
    for name in ["tag", "meta"] {
        let p = param(name);
        assert_eq!(p["schema"]["type"], "array", "{name}");
        assert_eq!((&p["style"], &p["explode"]), (&json!("form"), &json!(true)));
    }
    assert_eq!(
        param("meta")["schema"]["items"]["maxLength"],
        MAX_FILTER_LEN
    );
    assert_eq!(param("index")["schema"]["maximum"], MAX_QUERY_REVISION);
    assert_eq!(param("service")["in"], "path");
    assert_eq!(param("service")["required"], true);
}
