//! `GET /services` is served from a body kept per revision (the registry's `bodies`): every
//! answer must be the bytes a fresh serialisation of the registry gives at the answer's
//! revision, across every kind of change, on a single node and on a cluster's followers
//! (`?stale` and the default linearizable read), and a read right after a write must see it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use waypost_control::testkit::TestCluster;
use waypost_model::ServicesResponse;

const ELECTION: Duration = Duration::from_secs(10);

/// `GET path` as its revision header, its content type and its body's bytes.
async fn raw(cp: &TestControlPlane, path: &str) -> (u64, String, Vec<u8>) {
    let res = client().get(cp.at(path)).send().await.expect("GET");
    assert_eq!(res.status(), 200, "GET {path}");
    let index = res.headers()["x-waypost-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    let body = res.bytes().await.expect("read body").to_vec();
    (index, content_type, body)
}

/// `/services`'s body serialised from scratch from `cp`'s registry, and its revision.
fn fresh(cp: &TestControlPlane) -> (u64, Vec<u8>) {
    let (services, revision) = cp.running.registry.services();
    let body = ServicesResponse {
        total_services: services.len(),
        services,
        revision,
    };
    (revision, serde_json::to_vec(&body).unwrap())
}

/// Asks `/services` with each `query` twice (the second answer comes from the kept body) and
/// checks every answer against a fresh serialisation at the same revision. Nothing may write
/// meanwhile. Returns the parsed answer.
async fn same_as_fresh(cp: &TestControlPlane, queries: &[&str]) -> Value {
    let (revision, expected) = fresh(cp);
    for query in queries {
        for round in 0..2 {
            let (index, content_type, body) = raw(cp, &format!("/services{query}")).await;
            assert_eq!(content_type, "application/json");
            assert_eq!(index, revision.max(1), "{query}, round {round}");
            assert_eq!(
                String::from_utf8(body).unwrap(),
                String::from_utf8(expected.clone()).unwrap(),
                "/services{query}, round {round}"
            );
        }
    }
    serde_json::from_slice(&expected).unwrap()
}

const SINGLE: &[&str] = &["", "?stale", "?consistent"];

#[tokio::test]
async fn the_kept_body_is_a_fresh_one_across_every_change() {
    let cp = TestControlPlane::start(|_| {}).await;
    let empty = same_as_fresh(&cp, SINGLE).await;
    assert_eq!(empty["total_services"], 0);

    // Registrations: each read right after the write sees it.
    for (service, port) in [("web", 1), ("web", 2), ("api", 3)] {
        let written = register(&cp, seed(service, port)).await;
        let (index, _, body) = raw(&cp, "/services").await;
        assert!(index >= written["revision"].as_u64().unwrap());
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(body["services"][service].is_object(), "{body}");
        same_as_fresh(&cp, SINGLE).await;
    }
    let body = same_as_fresh(&cp, SINGLE).await;
    assert_eq!(body["services"]["web"]["total_instances"], 2);
    assert_eq!(body["services"]["web"]["active_instances"], 2);

    // A drain changes only a count.
    let drained = post(
        &cp,
        "/drain",
        json!({"service": "web", "id": "127.0.0.1:1"}),
    )
    .await;
    assert_eq!(drained.status, 200, "{}", drained.body);
    let body = same_as_fresh(&cp, SINGLE).await;
    assert_eq!(body["services"]["web"]["active_instances"], 1);

    // A policy reaches the listing through the service's instances.
    let set = client()
        .put(cp.at("/services/web/policy"))
        .json(&json!({"min_healthy_percent": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let body = same_as_fresh(&cp, SINGLE).await;
    assert_eq!(body["services"]["web"]["policy"]["min_healthy_percent"], 50);

    // A deregistration removes a service.
    let gone = post(&cp, "/deregister", seed("api", 3)).await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    let body = same_as_fresh(&cp, SINGLE).await;
    assert!(body["services"].get("api").is_none(), "{body}");

    // An expiry: the kept body from before it must not outlive it.
    register(
        &cp,
        json!({"service": "brief", "address": "10.0.0.9:80", "ttl_seconds": 1}),
    )
    .await;
    let body = same_as_fresh(&cp, SINGLE).await;
    assert_eq!(body["services"]["brief"]["total_instances"], 1);
    eventually(DEADLINE, "the brief instance to expire", || async {
        let (_, _, body) = raw(&cp, "/services").await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        body["services"].get("brief").is_none().then_some(())
    })
    .await;
    let body = same_as_fresh(&cp, SINGLE).await;
    assert_eq!(body["total_services"], 1);
}

#[tokio::test]
async fn a_blocking_query_answers_with_the_change_it_waited_for() {
    let cp = TestControlPlane::start(|_| {}).await;
    register(&cp, seed("web", 1)).await;
    // Kept at this revision.
    let before = same_as_fresh(&cp, &[""]).await;
    let index = before["revision"].as_u64().unwrap();
    let url = cp.at(&format!("/services?index={index}&wait=20s"));
    let waiting = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    register(&cp, seed("api", 2)).await;
    let res = waiting.await.unwrap();
    assert!(
        res.headers()["x-waypost-index"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > index
    );
    let body: Value = res.json().await.unwrap();
    assert!(body["services"]["api"].is_object(), "{body}");
    same_as_fresh(&cp, &[""]).await;
}

fn node(c: &TestCluster, i: usize) -> &TestControlPlane {
    c.nodes[i].as_ref().expect("a running node")
}

/// Waits until every node has applied `revision`, then checks every node's answers (stale
/// and linearizable) against its own fresh serialisation, and that they are the same bytes
/// everywhere.
async fn same_everywhere(c: &TestCluster, revision: u64) -> Value {
    let mut bodies = Vec::new();
    for i in 0..c.nodes.len() {
        let cp = node(c, i);
        eventually(DEADLINE, "the node to apply the write", || async {
            (cp.running.registry.head() >= revision).then_some(())
        })
        .await;
        bodies.push(same_as_fresh(cp, &["?stale", ""]).await);
    }
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(body, &bodies[0], "node {i}");
    }
    bodies.remove(0)
}

#[tokio::test]
async fn followers_serve_kept_bodies_that_match_their_state() {
    let c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(ELECTION).await;
    let follower = c.other_than(leader);
    same_everywhere(&c, 0).await;

    // Written through a follower; read right after on every node, linearizable by default.
    let written = post(node(&c, follower), "/register", seed("web", 1)).await;
    assert_eq!(written.status, 201, "{}", written.body);
    let revision = written.body["revision"].as_u64().unwrap();
    for i in 0..3 {
        let (index, _, body) = raw(node(&c, i), "/services").await;
        assert!(index >= revision, "node {i}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["services"]["web"]["total_instances"], 1, "node {i}");
    }
    same_everywhere(&c, revision).await;

    let second = post(node(&c, leader), "/register", seed("web", 2)).await;
    let revision = second.body["revision"].as_u64().unwrap();
    same_everywhere(&c, revision).await;

    let drained = post(
        node(&c, follower),
        "/drain",
        json!({"service": "web", "id": "127.0.0.1:2"}),
    )
    .await;
    assert_eq!(drained.status, 200, "{}", drained.body);
    let revision = drained.body["revision"].as_u64().unwrap();
    let body = same_everywhere(&c, revision).await;
    assert_eq!(body["services"]["web"]["active_instances"], 1);

    let gone = post(node(&c, follower), "/deregister", seed("web", 1)).await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    let revision = gone.body["revision"].as_u64().unwrap();
    let body = same_everywhere(&c, revision).await;
    assert_eq!(body["services"]["web"]["total_instances"], 1);
}
