//! The control plane accepts what the OpenAPI document declares, and refuses what it does not
//! (issue 12): one test per behaviour that changed for it. The document side is in
//! `openapi_drift.rs`; schemathesis checks both together (tools/conformance.sh).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_body_that_is_not_json_is_invalid_json_whatever_comes_first() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    // `{"service": 12` is cut off: not JSON, although its first error is a wrong type.
    for body in [
        r#"{"service": 12"#,
        r#"{"service": "web", "address": "#,
        r#"{"service": "web", "address": "10.0.0.1:80"} trailing"#,
        r#"{"service": 12,}"#,
        "{",
        "",
    ] {
        for path in ["/register", "/heartbeat", "/deregister", "/drain", "/check"] {
            let a = post_raw(&cp, path, "application/json", body.into()).await;
            assert_eq!(a.status, 400, "{path} {body:?}: {}", a.body);
            a.assert_problem(400, "invalid_json");
        }
    }
    // JSON of the wrong shape stays 422 invalid_body.
    for body in [r#"{"service": 12}"#, "[1, 2]", r#""web""#] {
        post_raw(&cp, "/register", "application/json", body.into())
            .await
            .assert_problem(422, "invalid_body");
    }
    assert_eq!(get(&cp, "/services").await.body["total_services"], 0);
}

#[tokio::test]
async fn integral_numbers_count_as_integers() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    // JSON Schema counts 981.0 as an integer, so the document's `integer` admits it.
    let a = post(
        &cp,
        "/register",
        json!({"service": "web", "address": "10.0.0.1:80", "weight": 981.0, "ttl_seconds": 6e1,
               "check": {"tcp": "10.0.0.1:80", "interval_seconds": 10.0, "timeout_seconds": 2.0}}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let instance = &a.body["instance"];
    assert_eq!(instance["weight"], json!(981));
    assert_eq!(instance["ttl_seconds"], json!(60));
    assert_eq!(instance["check"]["interval_seconds"], json!(10));
    let a = post(
        &cp,
        "/register",
        json!({"service": "web", "host": "10.0.0.2", "port": 8001.0}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["instance"]["port"], json!(8001));
    // Stored as the integer: discovery and the store see 981, not 981.0.
    let found = get(&cp, "/discover/web").await;
    let weights: Vec<_> = found.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["weight"].clone())
        .collect();
    assert_eq!(weights, [json!(981), json!(1)]);
    // A fraction is not an integer.
    for bad in [
        json!({"service": "web", "address": "10.0.0.1:80", "weight": 981.5}),
        json!({"service": "web", "host": "10.0.0.2", "port": 80.25}),
    ] {
        post(&cp, "/register", bad)
            .await
            .assert_problem(422, "invalid_body");
    }
}

#[tokio::test]
async fn optional_fields_are_left_out_not_null() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("web", 8001)).await;
    let address = "http://127.0.0.1:8001";
    for (path, body) in [
        ("/deregister", json!({"service": "web", "address": null})),
        (
            "/deregister",
            json!({"service": "web", "id": null, "address": address}),
        ),
        (
            "/drain",
            json!({"service": "web", "id": null, "address": address}),
        ),
        (
            "/check",
            json!({"service": "web", "id": null, "address": address, "health": "critical"}),
        ),
        (
            "/check",
            json!({"service": "web", "address": address, "health": "critical", "output": null}),
        ),
        (
            "/heartbeat",
            json!({"service": "web", "address": address, "id": null}),
        ),
        (
            "/register",
            json!({"service": "web", "address": address, "id": null}),
        ),
        (
            "/register",
            json!({"service": "web", "address": address, "weight": null}),
        ),
    ] {
        let a = post(&cp, path, body.clone()).await;
        assert_eq!(a.status, 422, "{path} {body}: {}", a.body);
        a.assert_problem(422, "invalid_body");
    }
    // Nothing changed.
    let found = get(&cp, "/discover/web").await;
    assert_eq!(found.body["count"], 1);
    assert_eq!(found.body["instances"][0]["revision"], 1);
}

#[tokio::test]
async fn a_heartbeat_is_one_instance_or_a_batch() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("web", 8001)).await;
    let one = json!({"service": "web", "id": "127.0.0.1:8001"});
    // Both forms at once.
    post(
        &cp,
        "/heartbeat",
        json!({"service": "web", "id": "127.0.0.1:8001", "instances": [one]}),
    )
    .await
    .assert_problem(400, "invalid_field");
    // In a batch, a malformed or unknown entry is answered on its own (the document's
    // `HeartbeatEntry` checks only types); a `null` is still a wrong type.
    let a = post(
        &cp,
        "/heartbeat",
        json!({"instances": [one, {"service": "Not A Name", "id": "x"}, {"service": "web", "id": "nobody"}]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let statuses: Vec<_> = a.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            json!("ok"),
            json!("invalid_service_name"),
            json!("instance_not_found")
        ]
    );
    post(
        &cp,
        "/heartbeat",
        json!({"instances": [{"service": "web", "id": null}]}),
    )
    .await
    .assert_problem(422, "invalid_body");
    // An address given with an id is checked too (the id wins).
    post(
        &cp,
        "/heartbeat",
        json!({"service": "web", "id": "127.0.0.1:8001", "address": "no port"}),
    )
    .await
    .assert_problem(400, "invalid_field");
}

#[tokio::test]
async fn filters_repeat_tags_and_metadata() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(
        &cp,
        json!({"service": "web", "id": "a", "address": "10.0.0.1:80", "tags": ["v2", "eu"],
               "metadata": {"zone": "a", "tier": "web", "url": "http://x:1/y"}}),
    )
    .await;
    register(
        &cp,
        json!({"service": "web", "id": "b", "address": "10.0.0.2:80", "tags": ["v2"],
               "metadata": {"zone": "b", "tier": "web"}}),
    )
    .await;
    for (query, want) in [
        ("?tag=v2", vec!["a", "b"]),
        ("?tag=v2&tag=eu", vec!["a"]),
        ("?tag=eu&tag=us", vec![]),
        ("?meta=zone:a", vec!["a"]),
        ("?meta.zone=a", vec!["a"]),
        ("?meta=tier:web", vec!["a", "b"]),
        ("?meta=tier:web&meta=zone:b", vec!["b"]),
        ("?meta=tier:web&meta.zone=b&tag=v2", vec!["b"]),
        ("?meta=zone:b&tag=eu", vec![]),
        // The value is everything after the first colon.
        ("?meta=url:http://x:1/y", vec!["a"]),
        ("?meta=zone:", vec![]),
    ] {
        assert_eq!(ids(&cp, "web", query).await, want, "{query}");
    }
}

#[tokio::test]
async fn a_check_timeout_may_exceed_its_interval() {
    // As in Consul; the sidecar runs one check after the other.
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let a = post(
        &cp,
        "/register",
        json!({"service": "web", "address": "10.0.0.1:80",
               "check": {"http": "http://10.0.0.1:80/healthz", "interval_seconds": 5, "timeout_seconds": 10}}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
}

#[tokio::test]
async fn the_longest_host_derives_a_valid_id() {
    // Every valid address yields a valid id: a 253-character host and a 5-digit port.
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let label = "h".repeat(63);
    let host = format!("{label}.{label}.{label}.{}", "h".repeat(61));
    assert_eq!(host.len(), 253);
    let a = post(
        &cp,
        "/register",
        json!({"service": "web", "address": format!("http://{host}:65535/")}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["instance"]["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 259);
    let beat = post(&cp, "/heartbeat", json!({"service": "web", "id": id})).await;
    assert_eq!(beat.status, 200, "{}", beat.body);
    // One character more is refused.
    post(
        &cp,
        "/register",
        json!({"service": "web", "address": format!("http://h{host}:65535/")}),
    )
    .await
    .assert_problem(400, "invalid_field");
}

#[tokio::test]
async fn revisions_in_queries_are_int64() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("web", 8001)).await;
    for path in [
        "/discover/web?index=9223372036854775808",
        "/services?index=18446744073709551615",
        "/watch?since=9223372036854775808",
        "/services?index=%2B1",
    ] {
        get(&cp, path).await.assert_problem(400, "invalid_query");
    }
    // The largest int64 is an index from the future: answered at once.
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = quick
        .get(cp.at("/services?index=9223372036854775807&wait=30s"))
        .send()
        .await
        .expect("answered before the client's 10 s timeout");
    assert_eq!(res.status(), 200);
}
