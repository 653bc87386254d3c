//! The seed API's request and response shapes keep working.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn seed_register_heartbeat_discover_services_deregister() {
    let cp = TestControlPlane::start(|_| {}).await;
    let body = json!({"service": "user-service", "address": "http://localhost:8001"});

    let reg = post(&cp, "/register", body.clone()).await;
    assert_eq!(reg.status, 201);
    assert_eq!(reg.body["status"], "registered");
    assert_eq!(
        reg.body["message"],
        "Service user-service registered at http://localhost:8001"
    );

    let hb = post(&cp, "/heartbeat", body.clone()).await;
    assert_eq!(hb.status, 200, "{}", hb.body);
    assert_eq!(hb.body["status"], "ok");

    let d = get(&cp, "/discover/user-service").await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body["service"], "user-service");
    assert_eq!(d.body["count"], 1);
    let inst = &d.body["instances"][0];
    assert_eq!(inst["address"], "http://localhost:8001");
    assert!(inst["uptime_seconds"].as_f64().unwrap() >= 0.0);

    let s = get(&cp, "/services").await;
    assert_eq!(s.body["total_services"], 1);
    // The seed's two counts, unchanged (richer fields such as `vip` come beside them).
    let summary = &s.body["services"]["user-service"];
    assert_eq!(summary["total_instances"], 1);
    assert_eq!(summary["active_instances"], 1);

    let h = get(&cp, "/health").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "healthy");

    let dr = post(&cp, "/deregister", body.clone()).await;
    assert_eq!(dr.status, 200, "{}", dr.body);
    assert_eq!(dr.body["status"], "deregistered");
    assert_eq!(get(&cp, "/discover/user-service").await.body["count"], 0);
    assert_eq!(get(&cp, "/services").await.body["total_services"], 0);

    // Unknown instance: 404 with the code the SDK re-registers on.
    post(&cp, "/heartbeat", body.clone())
        .await
        .assert_problem(404, "instance_not_found");
    post(&cp, "/deregister", body)
        .await
        .assert_problem(404, "instance_not_found");
}

#[tokio::test]
async fn unknown_service_is_an_empty_list() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let d = get(&cp, "/discover/nobody").await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body["count"], 0);
    assert_eq!(d.body["instances"], json!([]));
    assert!(d.index() >= 1, "X-Waypost-Index is never 0");
}

#[tokio::test]
async fn http2_cleartext_is_served() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = h2.get(cp.at("/services")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
}
