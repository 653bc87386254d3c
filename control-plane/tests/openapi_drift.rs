//! The served OpenAPI document equals the committed `openapi/openapi.json`.

mod common;

use common::*;

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
