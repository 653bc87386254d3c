//! The rich forms: ids, host + port, tags, metadata, weights, checks, updates, filters, drain,
//! batch heartbeats, metrics and readiness.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn rich_registration_is_stored_and_updated() {
    let cp = TestControlPlane::start(|_| {}).await;
    let body = json!({
        "service": "cart", "id": "cart-1", "host": "10.0.0.7", "port": 8080,
        "tags": ["v2", "primary", "v2"], "metadata": {"zone": "a"}, "weight": 10, "ttl_seconds": 45,
        "check": {"http": "http://10.0.0.7:8080/healthz", "interval_seconds": 5, "timeout_seconds": 1}
    });
    let a = post(&cp, "/register", body.clone()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let i = &a.body["instance"];
    assert_eq!(i["id"], "cart-1");
    assert_eq!(i["address"], "10.0.0.7:8080");
    assert_eq!(
        (i["host"].as_str(), i["port"].as_u64()),
        (Some("10.0.0.7"), Some(8080))
    );
    assert_eq!(i["tags"], json!(["primary", "v2"]), "sorted, deduplicated");
    assert_eq!(i["metadata"], json!({"zone": "a"}));
    assert_eq!(
        (i["weight"].as_u64(), i["ttl_seconds"].as_u64()),
        (Some(10), Some(45))
    );
    assert_eq!(i["status"], "up");
    assert_eq!(i["check"]["interval_seconds"], 5);
    assert_eq!(a.body["heartbeat_interval_seconds"], 10);
    let first_rev = a.body["revision"].as_u64().unwrap();
    assert_eq!(i["revision"].as_u64(), Some(first_rev));

    // Same id again with a change: 200, a new revision, registration time kept.
    let mut changed = body.clone();
    changed["weight"] = json!(20);
    let b = post(&cp, "/register", changed).await;
    assert_eq!(b.status, 200);
    assert_eq!(b.body["status"], "updated");
    assert_eq!(b.body["revision"].as_u64(), Some(first_rev + 1));
    assert_eq!(b.body["instance"]["registered_at"], i["registered_at"]);

    // Address as host:port, and a short TTL caps the interval hint.
    let c = register(
        &cp,
        json!({"service": "cart", "address": "10.0.0.8:8080", "ttl_seconds": 6}),
    )
    .await;
    assert_eq!(c["instance"]["id"], "10.0.0.8:8080");
    assert_eq!(c["heartbeat_interval_seconds"], 2);
}

#[tokio::test]
async fn discovery_filters_by_tag_metadata_and_health() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, json!({"service": "api", "id": "a", "address": "10.0.0.1:80", "tags": ["v1"], "metadata": {"zone": "x"}})).await;
    register(&cp, json!({"service": "api", "id": "b", "address": "10.0.0.2:80", "tags": ["v2"], "metadata": {"zone": "x"}})).await;
    register(&cp, json!({"service": "api", "id": "c", "address": "10.0.0.3:80", "tags": ["v2", "canary"], "metadata": {"zone": "y"}})).await;

    assert_eq!(ids(&cp, "api", "").await, ["a", "b", "c"]);
    assert_eq!(ids(&cp, "api", "?tag=v2").await, ["b", "c"]);
    assert_eq!(ids(&cp, "api", "?tag=v2&tag=canary").await, ["c"]);
    assert_eq!(ids(&cp, "api", "?meta.zone=x").await, ["a", "b"]);
    assert_eq!(ids(&cp, "api", "?meta.zone=x&tag=v2").await, ["b"]);
    assert_eq!(ids(&cp, "api", "?meta.zone=z").await, Vec::<String>::new());

    // Draining: out of default results, still listed with healthy=false, still heartbeating.
    let d = post(&cp, "/drain", json!({"service": "api", "id": "b"})).await;
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.body["status"], "draining");
    assert_eq!(ids(&cp, "api", "").await, ["a", "c"]);
    assert_eq!(ids(&cp, "api", "?healthy=false").await, ["a", "b", "c"]);
    assert_eq!(
        post(&cp, "/heartbeat", json!({"service": "api", "id": "b"}))
            .await
            .status,
        200
    );
    let s = get(&cp, "/services").await;
    assert_eq!(
        s.body["services"]["api"],
        json!({"total_instances": 3, "active_instances": 2, "vip": "127.100.0.1"})
    );
    // A failing health check takes an instance out too, with its output; passing brings it back.
    let c = post(
        &cp,
        "/check",
        json!({"service": "api", "id": "c", "health": "critical", "output": "GET /healthz: 503"}),
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["instance"]["health_output"], "GET /healthz: 503");
    assert_eq!(ids(&cp, "api", "").await, ["a"]);
    let c = post(
        &cp,
        "/check",
        json!({"service": "api", "id": "c", "health": "passing"}),
    )
    .await;
    assert_eq!(c.body["health"], "passing");
    assert_eq!(ids(&cp, "api", "").await, ["a", "c"]);
    // Flapping (a sidecar's flap damping holds it) takes it out as critical does, with the
    // sidecar's account; `?healthy=false` shows it.
    let account = "flapping: 5 changes between passing and critical within 120 s";
    let c = post(
        &cp,
        "/check",
        json!({"service": "api", "id": "c", "health": "flapping", "output": account}),
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(ids(&cp, "api", "").await, ["a"]);
    let all = get(&cp, "/discover/api?healthy=false").await;
    let c_json = all.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "c")
        .unwrap()
        .clone();
    assert_eq!(c_json["health"], "flapping");
    assert_eq!(c_json["health_output"], account);
    assert!(
        text(&cp, "/metrics")
            .await
            .contains("waypost_flapping_instances 1")
    );
    post(
        &cp,
        "/check",
        json!({"service": "api", "id": "c", "health": "passing"}),
    )
    .await;
    assert_eq!(ids(&cp, "api", "").await, ["a", "c"]);
    let unknown = post(
        &cp,
        "/check",
        json!({"service": "api", "id": "zz", "health": "passing"}),
    )
    .await;
    assert_eq!(unknown.status, 404);
    // Every answer about the service carries its virtual IP.
    let found = get(&cp, "/discover/api").await;
    assert_eq!(found.body["vip"], "127.100.0.1");
    assert_eq!(found.body["instances"][0]["vip"], "127.100.0.1");
    // And back, by address this time.
    let u = post(
        &cp,
        "/drain",
        json!({"service": "api", "address": "10.0.0.2:80", "draining": false}),
    )
    .await;
    assert_eq!(u.body["status"], "up");
    assert_eq!(ids(&cp, "api", "").await, ["a", "b", "c"]);
    post(&cp, "/drain", json!({"service": "api", "id": "zzz"}))
        .await
        .assert_problem(404, "instance_not_found");
}

#[tokio::test]
async fn heartbeats_by_id_and_in_batches() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(
        &cp,
        json!({"service": "api", "id": "a", "address": "10.0.0.1:80"}),
    )
    .await;
    register(&cp, json!({"service": "db", "address": "10.0.0.2:5432"})).await;
    let before = get(&cp, "/health").await.body["revision"].clone();

    let one = post(&cp, "/heartbeat", json!({"service": "api", "id": "a"})).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["id"], "a");
    assert_eq!(one.body["ttl_seconds"], 30);
    assert!(one.body["expires_at"].as_str().unwrap().ends_with('Z'));

    let batch = post(
        &cp,
        "/heartbeat",
        json!({"instances": [
            {"service": "api", "id": "a"},
            {"service": "db", "address": "10.0.0.2:5432"},
            {"service": "api", "id": "gone"},
            {"service": "Bad", "id": "x"},
        ]}),
    )
    .await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    assert_eq!(batch.body["renewed"], 2);
    assert_eq!(batch.body["failed"], 2);
    let statuses: Vec<&str> = batch.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["ok", "ok", "instance_not_found", "invalid_service_name"]
    );
    assert_eq!(batch.body["results"][1]["id"], "10.0.0.2:5432");

    // Heartbeats change nothing visible: the revision stays.
    assert_eq!(get(&cp, "/health").await.body["revision"], before);
}

#[tokio::test]
async fn metrics_ready_and_index_headers() {
    let cp = TestControlPlane::start(|_| {}).await;
    register(&cp, seed("web", 8001)).await;
    post(&cp, "/heartbeat", seed("web", 8001)).await;
    get(&cp, "/discover/web").await;

    let r = get(&cp, "/ready").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["ready"], true);

    let res = client().get(cp.at("/metrics")).send().await.unwrap();
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    for needle in [
        "waypost_instances{service=\"web\"} 1",
        "waypost_registrations_total 1",
        "waypost_heartbeats_total{result=\"ok\"} 1",
        "waypost_expirations_total 0",
        "waypost_self_preservation_active 0",
        "waypost_http_request_duration_seconds_bucket{",
        "route=\"/discover/{service}\"",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    // Every answer carries the revision, never 0.
    for path in ["/services", "/discover/web", "/health", "/nope"] {
        assert!(get(&cp, path).await.index() >= 1, "{path}");
    }
}
