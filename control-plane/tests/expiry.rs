//! Expiry and self-preservation through the real server. How long an instance lives (its
//! deadline, heartbeats renewing it, a fresh TTL after a restart) is tested on the registry
//! with explicit instants, in `registry/tests.rs`; here the server must act on it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn silent_instances_expire() {
    let cp = TestControlPlane::start(|_| {}).await;
    let mut watch = Watch::open(&cp, "", None).await;
    assert_eq!(watch.next().await.0.event, "snapshot");
    register(
        &cp,
        json!({"service": "web", "address": "10.0.0.1:80", "ttl_seconds": 1}),
    )
    .await;
    register(
        &cp,
        json!({"service": "web", "address": "10.0.0.2:80", "ttl_seconds": 30}),
    )
    .await;
    assert_eq!(watch.next().await.0.event, "upsert");
    assert_eq!(watch.next().await.0.event, "upsert");

    let (ev, data) = watch.next().await;
    assert_eq!(ev.event, "remove");
    assert_eq!(data["reason"], "expired");
    assert_eq!(data["id"], "10.0.0.1:80");
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

/// Registers four instances of `web` with the default TTL, and six of `silent` (ports 5 to
/// 10) with a TTL of 1 s that never heartbeat.
async fn four_live_six_silent(cp: &TestControlPlane, silent: &str) {
    for port in 1..=4 {
        register(
            cp,
            json!({"service": "web", "address": format!("10.0.0.1:{port}")}),
        )
        .await;
    }
    for port in 5..=10 {
        register(
            cp,
            json!({"service": silent, "address": format!("10.0.0.1:{port}"), "ttl_seconds": 1}),
        )
        .await;
    }
}

#[tokio::test]
async fn self_preservation_holds_a_mass_expiry() {
    // A threshold so low that any expiry pass is over it: the six need not fall due in the
    // same 250 ms pass (on a loaded machine their registrations may straddle two).
    let cp = TestControlPlane::in_memory(|c| {
        c.self_preservation.min_instances = 1;
        c.self_preservation.threshold = 0.05;
    })
    .await;
    // 4 long-lived instances and 6 that go silent together.
    four_live_six_silent(&cp, "web").await;
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

/// Issue 12: held instances are shown as held, and a fleet that is really gone is released
/// once the maximum hold has passed, instead of being held for as long as nothing changes.
#[tokio::test]
async fn held_instances_are_shown_and_released_after_the_maximum_hold() {
    let cp = TestControlPlane::in_memory(|c| {
        c.self_preservation.min_instances = 1;
        c.self_preservation.threshold = 0.3;
        c.self_preservation.window = Duration::from_secs(1);
        c.self_preservation.max_hold = Duration::from_secs(2);
    })
    .await;
    four_live_six_silent(&cp, "gone").await;
    eventually(DEADLINE, "held instances shown as held", || async {
        let found = get(&cp, "/discover/gone").await.body;
        let held = found["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["held"] == true)
            .count();
        let text = text(&cp, "/metrics").await;
        (held > 0 && text.contains(&format!("waypost_self_preservation_held_instances {held}")))
            .then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(2) + 2 * DEADLINE,
        "the dead ones are released",
        || async { (get(&cp, "/discover/gone").await.body["count"] == 0).then_some(()) },
    )
    .await;
    assert_eq!(get(&cp, "/discover/web").await.body["count"], 4);
    let text = text(&cp, "/metrics").await;
    assert!(text.contains("waypost_expirations_total 6"), "{text}");
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
async fn restored_instances_are_served_after_a_restart() {
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
