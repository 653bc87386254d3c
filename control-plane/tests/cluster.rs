//! Cluster mode with three control planes in this process, each on its own port and data
//! directory: writes through any node, the same revisions everywhere, a watcher that moves
//! from node to node, the leader stopped, a minority without a leader, and a data directory
//! from before cluster mode.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use waypost_control::testkit::TestCluster;

const ELECTION: Duration = Duration::from_secs(10);

fn node(c: &TestCluster, i: usize) -> &TestControlPlane {
    c.nodes[i].as_ref().expect("a running node")
}

/// `/health`'s revision on node `i`, read without a round to the leader.
async fn head(c: &TestCluster, i: usize) -> u64 {
    get(node(c, i), "/discover/none?stale").await.index()
}

#[tokio::test]
async fn writes_through_any_node_are_read_everywhere_with_the_same_revisions() {
    let c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(ELECTION).await;
    let follower = c.other_than(leader);

    // A write to a follower is forwarded to the leader, and answered once applied there.
    let a = post(node(&c, follower), "/register", seed("web", 1)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let revision = a.body["revision"].as_u64().unwrap();
    // Read-your-writes on the node written to, and a linearizable read on every node.
    for i in 0..3 {
        assert_eq!(
            ids(node(&c, i), "web", "").await,
            ["127.0.0.1:1"],
            "node {i}"
        );
    }
    let b = post(node(&c, leader), "/register", seed("web", 2)).await;
    assert_eq!(b.status, 201);
    assert_eq!(b.body["revision"].as_u64().unwrap(), revision + 1);
    // Every node gave the same revisions and knows the leader.
    for i in 0..3 {
        let d = get(node(&c, i), "/discover/web").await;
        assert_eq!(d.index(), revision + 1, "node {i}");
        assert_eq!(d.headers["x-waypost-known-leader"], "true");
        assert!(d.headers.contains_key("x-waypost-last-contact"));
        let status = get(node(&c, i), "/cluster").await;
        assert_eq!(status.body["leader"], leader as u64 + 1, "{}", status.body);
        assert_eq!(status.body["members"].as_array().unwrap().len(), 3);
    }
    // Drain and deregister through the other follower.
    let other = (0..3).find(|i| *i != leader && *i != follower).unwrap();
    let d = post(
        node(&c, other),
        "/drain",
        json!({"service": "web", "id": "127.0.0.1:1"}),
    )
    .await;
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(ids(node(&c, leader), "web", "").await, ["127.0.0.1:2"]);
    let gone = post(node(&c, other), "/deregister", seed("web", 2)).await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert!(ids(node(&c, follower), "web", "").await.is_empty());
    // Heartbeats are accepted anywhere; an unknown instance is 404 everywhere.
    for i in 0..3 {
        let h = post(node(&c, i), "/heartbeat", seed("web", 1)).await;
        assert_eq!(h.status, 200, "node {i}: {}", h.body);
        post(node(&c, i), "/heartbeat", seed("web", 9))
            .await
            .assert_problem(404, "instance_not_found");
    }
    // The epoch is the cluster's: the same on every node.
    let c = &c;
    let epochs: Vec<String> = futures_util::future::join_all((0..3).map(|i| async move {
        get(node(c, i), "/health").await.body["epoch"]
            .as_str()
            .unwrap()
            .to_owned()
    }))
    .await;
    assert!(
        epochs
            .iter()
            .all(|e| e == &epochs[0] && e != "0000000000000000")
    );
}

#[tokio::test]
async fn a_watcher_moves_to_another_node_and_misses_nothing() {
    let c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(ELECTION).await;
    for port in 1..=3 {
        register(node(&c, leader), seed("api", port)).await;
    }
    let first = c.other_than(leader);
    let mut w = Watch::open(node(&c, first), "", None).await;
    let (ev, snap) = w.next().await;
    assert_eq!(ev.event, "snapshot");
    let start = snap["revision"].as_u64().unwrap();
    for port in 4..=6 {
        register(node(&c, leader), seed("api", port)).await;
    }
    let mut last = String::new();
    let mut seen = vec![];
    while seen.len() < 3 {
        let (ev, data) = w.next().await;
        seen.push(data["revision"].as_u64().unwrap());
        last = ev.id;
    }
    assert_eq!(seen, [start + 1, start + 2, start + 3]);
    drop(w);
    // More changes while the watcher is away, then it resumes on another node.
    for port in 7..=9 {
        register(node(&c, first), seed("api", port)).await;
    }
    let second = (0..3).find(|i| *i != first).unwrap();
    let mut w = Watch::open(node(&c, second), "", Some(&last)).await;
    let mut resumed = vec![];
    while resumed.len() < 3 {
        let (ev, data) = w.next().await;
        assert_ne!(ev.event, "snapshot", "resumed without a snapshot: {data}");
        resumed.push(data["revision"].as_u64().unwrap());
    }
    assert_eq!(resumed, [start + 4, start + 5, start + 6]);
}

#[tokio::test]
async fn the_leader_stops_and_the_others_go_on_with_everything_acknowledged() {
    let mut c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(ELECTION).await;
    let follower = c.other_than(leader);
    for port in 1..=10 {
        register(node(&c, follower), seed("pay", port)).await;
    }
    let before = head(&c, follower).await;
    c.stop(leader).await;
    let new_leader = c.leader(ELECTION).await;
    assert_ne!(new_leader, leader);
    // Writes go on through either survivor.
    for i in (0..3).filter(|i| *i != leader) {
        let a = post(node(&c, i), "/register", seed("pay", 100 + i as u16)).await;
        assert_eq!(a.status, 201, "node {i}: {}", a.body);
        assert!(a.body["revision"].as_u64().unwrap() > before);
    }
    let everything = ids(node(&c, new_leader), "pay", "").await;
    assert_eq!(everything.len(), 12, "{everything:?}");
    // The stopped node comes back and catches up.
    c.restart(leader, |_| {}).await;
    eventually(ELECTION, "the restarted node to catch up", || async {
        let a = get(node(&c, leader), "/discover/pay?stale").await;
        (a.body["count"] == 12).then_some(())
    })
    .await;
    // Instances renewed before the failover are not expired by the new leader at once.
    assert_eq!(ids(node(&c, leader), "pay", "").await.len(), 12);
}

#[tokio::test]
async fn a_node_without_a_majority_answers_no_leader_quickly_and_stale_reads_still_work() {
    let mut c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(ELECTION).await;
    register(node(&c, leader), seed("db", 1)).await;
    let keep = c.other_than(leader);
    // Let the kept node apply the write before the others go.
    eventually(ELECTION, "the write to reach every node", || async {
        (get(node(&c, keep), "/discover/db?stale").await.body["count"] == 1).then_some(())
    })
    .await;
    for i in 0..3 {
        if i != keep {
            c.stop(i).await;
        }
    }
    // Answered (not held until a client gives up): the wait for a leader is bounded by the
    // election timeout.
    post(node(&c, keep), "/register", seed("db", 2))
        .await
        .assert_problem(503, "no_leader");
    get(node(&c, keep), "/discover/db")
        .await
        .assert_problem(503, "no_leader");
    let stale = get(node(&c, keep), "/discover/db?stale").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body["count"], 1);
    // Unready once the leader has been silent for two election timeouts.
    let unready = eventually(ELECTION, "/ready to turn 503", || async {
        let a = get(node(&c, keep), "/ready").await;
        (a.status == 503).then_some(a)
    })
    .await;
    unready.assert_problem(503, "no_leader");
    let a = get(node(&c, keep), "/discover/db?stale").await;
    assert_eq!(a.headers["x-waypost-known-leader"], "false");
}

#[tokio::test]
async fn a_watcher_resuming_on_a_node_that_lags_gets_no_second_snapshot() {
    let mut c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(ELECTION).await;
    let lagging = c.other_than(leader);
    let other = (0..3).find(|i| *i != leader && *i != lagging).unwrap();
    register(node(&c, leader), seed("lag", 1)).await;
    eventually(ELECTION, "the first write to reach every node", || async {
        (get(node(&c, lagging), "/discover/lag?stale").await.body["count"] == 1).then_some(())
    })
    .await;
    // Changes the lagging node misses: it is away, the other two commit them.
    c.stop(lagging).await;
    for port in 2..=4 {
        register(node(&c, leader), seed("lag", port)).await;
    }
    let health = get(node(&c, leader), "/health").await.body;
    let last = format!(
        "{}-{}",
        health["epoch"].as_str().unwrap(),
        health["revision"]
    );
    let seen = health["revision"].as_u64().unwrap();
    // It comes back alone: no leader, so it cannot catch up yet. A watcher that saw `seen`
    // elsewhere resumes there: no snapshot of its older state, the stream waits.
    c.stop(leader).await;
    c.stop(other).await;
    c.restart(lagging, |_| {}).await;
    assert!(head(&c, lagging).await < seen);
    let mut w = Watch::open(node(&c, lagging), "", Some(&last)).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), w.next())
            .await
            .is_err(),
        "an event before the node caught up"
    );
    // A majority again: it catches up, and the watcher gets exactly what follows `seen`.
    c.restart(other, |_| {}).await;
    c.leader(ELECTION).await;
    let a = post(node(&c, lagging), "/register", seed("lag", 5)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let (ev, data) = w.next().await;
    assert_eq!(ev.event, "upsert", "{data}");
    assert_eq!(data["revision"].as_u64(), Some(seen + 1));
    assert_eq!(data["instance"]["id"], "127.0.0.1:5");
}
