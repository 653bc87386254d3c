//! Expiry within TTL + 1 s, self-preservation, and the grace period after a restart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn silent_instances_expire_within_ttl_plus_one_second() {
    let cp = TestControlPlane::start(|_| {}).await;
    let mut watch = Watch::open(&cp, "", None).await;
    assert_eq!(watch.next().await.0.event, "snapshot");
    register(
        &cp,
        json!({"service": "web", "address": "10.0.0.1:80", "ttl_seconds": 1}),
    )
    .await;
    let registered = Instant::now();
    register(
        &cp,
        json!({"service": "web", "address": "10.0.0.2:80", "ttl_seconds": 30}),
    )
    .await;
    assert_eq!(watch.next().await.0.event, "upsert");
    assert_eq!(watch.next().await.0.event, "upsert");

    let (ev, data) = watch.next().await;
    let elapsed = registered.elapsed();
    assert_eq!(ev.event, "remove");
    assert_eq!(data["reason"], "expired");
    assert_eq!(data["id"], "10.0.0.1:80");
    assert!(
        elapsed < Duration::from_secs(2),
        "expired after {elapsed:?}, TTL 1 s"
    );
    assert_eq!(ids(&cp, "web", "").await, ["10.0.0.2:80"]);
    post(
        &cp,
        "/heartbeat",
        json!({"service": "web", "id": "10.0.0.1:80"}),
    )
    .await
    .assert_problem(404, "instance_not_found");

    let text = text(&cp, "/metrics").await;
    assert!(text.contains("waypost_expirations_total 1"), "{text}");
}

#[tokio::test]
async fn heartbeats_keep_an_instance_past_its_ttl() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(
        &cp,
        json!({"service": "web", "address": "10.0.0.1:80", "ttl_seconds": 1}),
    )
    .await;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let a = post(
            &cp,
            "/heartbeat",
            json!({"service": "web", "address": "10.0.0.1:80"}),
        )
        .await;
        assert_eq!(a.status, 200, "expired despite heartbeats: {}", a.body);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(ids(&cp, "web", "").await, ["10.0.0.1:80"]);
}

#[tokio::test]
async fn self_preservation_holds_a_mass_expiry() {
    let cp = TestControlPlane::in_memory(|c| {
        c.self_preservation.min_instances = 3;
    })
    .await;
    // 4 long-lived instances and 6 that go silent together: 60% > 50%.
    for port in 1..=4 {
        register(
            &cp,
            json!({"service": "web", "address": format!("10.0.0.1:{port}")}),
        )
        .await;
    }
    for port in 5..=10 {
        register(
            &cp,
            json!({"service": "web", "address": format!("10.0.0.1:{port}"), "ttl_seconds": 1}),
        )
        .await;
    }
    let health = eventually(DEADLINE, "self-preservation to engage", || async {
        let h = get(&cp, "/health").await;
        (h.body["self_preservation"] == true).then_some(h)
    })
    .await;
    assert_eq!(health.body["status"], "degraded");
    assert_eq!(health.body["instances"], 10, "nothing expired");
    let text = text(&cp, "/metrics").await;
    assert!(
        text.contains("waypost_self_preservation_active 1"),
        "{text}"
    );
    assert!(text.contains("waypost_expirations_total 0"), "{text}");
    // Held instances can still heartbeat and come back.
    assert_eq!(
        post(
            &cp,
            "/heartbeat",
            json!({"service": "web", "id": "10.0.0.1:5"})
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn self_preservation_can_be_turned_off() {
    let cp = TestControlPlane::in_memory(|c| {
        c.self_preservation.enabled = false;
        c.self_preservation.min_instances = 3;
    })
    .await;
    for port in 1..=6 {
        register(
            &cp,
            json!({"service": "web", "address": format!("10.0.0.1:{port}"), "ttl_seconds": 1}),
        )
        .await;
    }
    eventually(DEADLINE, "all six to expire", || async {
        (get(&cp, "/health").await.body["instances"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn restored_instances_get_a_fresh_ttl() {
    let cp = TestControlPlane::start(|_| {}).await;
    register(
        &cp,
        json!({"service": "web", "address": "10.0.0.1:80", "ttl_seconds": 2}),
    )
    .await;
    let dir = cp
        .stop()
        .await
        .expect("durable test instance has a directory");
    // Let the TTL pass entirely while the control plane is down.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let path = dir.path().to_path_buf();
    let cp = TestControlPlane::start(|c| c.data_dir = Some(path)).await;
    assert_eq!(
        ids(&cp, "web", "").await,
        ["10.0.0.1:80"],
        "restart must not mass-expire"
    );
    assert_eq!(
        post(
            &cp,
            "/heartbeat",
            json!({"service": "web", "address": "10.0.0.1:80"})
        )
        .await
        .status,
        200
    );
    drop(dir);
}
