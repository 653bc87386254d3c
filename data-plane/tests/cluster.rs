//! The sidecar against a cluster of three control planes in this process (`TestCluster`, on
//! 127.0.0.1, 500 ms election timeout), queried with real DNS over UDP: it follows the node it
//! is subscribed to, that node (the leader) is killed (`TestCluster::kill`: every task of the
//! node dropped at once, its connections cut mid-stream), and the sidecar moves to a survivor,
//! resumes where it was and keeps answering.

mod common;

use std::{
    cell::RefCell,
    collections::BTreeSet,
    future::Future,
    net::{IpAddr, SocketAddr},
};

use common::{DEADLINE, TestSidecar, ip_set, ips, udp};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use waypost_client::{
    Client, Error,
    model::{InstanceRef, RegisterRequest},
};
use waypost_control::testkit::{TestCluster, eventually};

const NAME: &str = "web.service.waypost.";

/// A client of node `i` only.
fn through(c: &TestCluster, i: usize) -> Client {
    Client::new(&c.urls[i]).expect("a client of one node")
}

/// Makes `call` until it succeeds, for up to [`DEADLINE`] while it fails with a retryable
/// error. A write can meet an election besides the one a test causes (on a loaded host
/// heartbeats are late), and is answered 503 `no_leader`; a caller retries then.
async fn retried<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    eventually(DEADLINE, what, || {
        let attempt = call();
        async move {
            match attempt.await {
                Ok(value) => Some(value),
                Err(err) if err.is_retryable() => None,
                Err(err) => panic!("{what}: {err}"),
            }
        }
    })
    .await
}

/// Registers `address` (with a long TTL, no heartbeats) through node `i`; returns its revision.
async fn register(c: &TestCluster, i: usize, address: &str) -> u64 {
    let request = RegisterRequest {
        ttl_seconds: Some(600),
        ..RegisterRequest::new("web", address)
    };
    let client = through(c, i);
    retried("a registration", || client.register_once(&request))
        .await
        .revision
}

/// Deregisters `id` through node `i`. `instance_not_found` counts as done: when a removal's
/// answer is lost in a leader change (503 `no_leader` for an entry committed after all), the
/// next attempt no longer finds the instance.
async fn deregister(c: &TestCluster, i: usize, id: &str) {
    let client = through(c, i);
    retried("a deregistration", || async {
        match client.deregister(InstanceRef::by_id("web", id)).await {
            Err(err) if err.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    })
    .await;
}

/// The running nodes.
fn running(c: &TestCluster) -> Vec<usize> {
    (0..c.nodes.len())
        .filter(|i| c.nodes[*i].is_some())
        .collect()
}

/// A node's `/health` document, `None` when it does not answer.
async fn node_health(c: &TestCluster, i: usize) -> Option<serde_json::Value> {
    reqwest::get(format!("{}/health", c.urls[i]))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits until each of `nodes` has the cluster's epoch and has applied `revision`.
async fn settled(c: &TestCluster, nodes: &[usize], revision: u64) {
    let last = RefCell::new(Vec::new());
    let probe = eventually(2 * DEADLINE, "the nodes to settle", || async {
        let mut healths = Vec::new();
        for &i in nodes {
            healths.push(node_health(c, i).await.unwrap_or_default());
        }
        let epoch = &healths[0]["epoch"];
        let done = healths.iter().all(|h| {
            h["revision"].as_u64().is_some_and(|r| r >= revision)
                && &h["epoch"] == epoch
                && epoch != "0000000000000000"
        });
        *last.borrow_mut() = healths;
        done.then_some(())
    });
    if tokio::time::timeout(DEADLINE, probe).await.is_err() {
        panic!(
            "after {DEADLINE:?}, not every node of {nodes:?} has the cluster's epoch and \
             revision {revision}: {:?}",
            last.borrow()
        );
    }
}

/// A sidecar whose control URLs are the nodes in `order`: it subscribes at the first.
async fn sidecar(c: &TestCluster, order: &[usize]) -> TestSidecar {
    TestSidecar::start(&c.urls[order[0]], |config| {
        config.control = order.iter().map(|i| c.urls[*i].clone()).collect();
    })
    .await
}

/// The A records `name` answers with, over UDP; the name must be known.
async fn a_records(dns: SocketAddr, name: &str) -> BTreeSet<IpAddr> {
    let answer = udp(dns, name, RecordType::A).await;
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::NoError,
        "{name}: the sidecar lost the service"
    );
    ips(&answer.answers)
}

/// Waits until `NAME` answers exactly `want`.
async fn answers(dns: SocketAddr, want: &[&str]) {
    let want = ip_set(want);
    eventually(DEADLINE, &format!("{NAME} to answer {want:?}"), || async {
        (a_records(dns, NAME).await == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_sidecar_moves_to_a_survivor_when_its_node_is_killed_and_resumes_without_a_snapshot() {
    let mut c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(DEADLINE).await;
    settled(&c, &running(&c), 0).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // The sidecar subscribes at its first control URL: the leader, the node killed below, so
    // that its stream does break (and the cluster needs a new leader too).
    let sidecar = sidecar(&c, &[leader, followers[0], followers[1]]).await;
    let dns = sidecar.dns();

    // Instances registered through each node.
    register(&c, followers[0], "127.0.0.2:80").await;
    register(&c, leader, "127.0.0.3:80").await;
    let last = register(&c, followers[1], "127.0.0.4:80").await;
    answers(dns, &["127.0.0.2", "127.0.0.3", "127.0.0.4"]).await;
    let snapshots = "waypost_sidecar_snapshots_total";
    assert_eq!(sidecar.metric(snapshots).await, 1.0);
    assert_eq!(sidecar.health().await["stale"], false);
    // The sidecar's stream is open on the leader.
    let streams = "waypost_watch_streams";
    assert_eq!(
        reqwest::get(format!("{}/metrics", c.urls[leader]))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(streams)?.strip_prefix(' ')),
        Some("1"),
        "the sidecar follows the leader"
    );
    // Every survivor has applied what the sidecar saw, so it can resume there.
    settled(&c, &running(&c), last).await;

    c.kill(leader);
    // Still answering, from its snapshot, while the stream moves and the cluster elects.
    assert_eq!(
        a_records(dns, NAME).await,
        ip_set(&["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    );
    let new_leader = c.leader(DEADLINE).await;
    assert_ne!(new_leader, leader);

    // Changes after the failover, through each survivor: one more instance, one fewer.
    register(&c, followers[0], "127.0.0.5:80").await;
    deregister(&c, followers[1], "127.0.0.2:80").await;
    answers(dns, &["127.0.0.3", "127.0.0.4", "127.0.0.5"]).await;

    // It reconnected, to a survivor, and resumed: no second snapshot.
    let h = sidecar.health().await;
    assert_eq!(h["stale"], false, "{h}");
    assert!(h["reconnects"].as_u64().unwrap() >= 1, "{h}");
    assert_eq!(
        h["snapshots"], 1,
        "the sidecar received a new snapshot: {h}"
    );
    assert_eq!(sidecar.metric(snapshots).await, 1.0);
    let revision = h["revision"].as_u64().unwrap();
    assert_eq!(revision, last + 2, "{h}");

    sidecar.stop().await;
}

#[tokio::test]
async fn the_sidecar_skips_a_node_that_has_not_caught_up_and_never_answers_from_the_past() {
    let mut c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(DEADLINE).await;
    let members = running(&c);
    settled(&c, &members, 0).await;
    let followers: Vec<usize> = members.iter().copied().filter(|i| *i != leader).collect();
    // A node started to join and not added yet serves `/watch` from an empty registry without
    // the cluster's epoch, as a node still catching up would. It comes second in the
    // sidecar's list: where the stream goes when the leader dies.
    let behind = c.join(|_| {}).await;
    let sidecar = sidecar(&c, &[leader, behind, followers[0], followers[1]]).await;
    let dns = sidecar.dns();
    register(&c, followers[0], "127.0.0.2:80").await;
    let last = register(&c, leader, "127.0.0.3:80").await;
    answers(dns, &["127.0.0.2", "127.0.0.3"]).await;
    settled(&c, &members, last).await;

    c.kill(leader);
    // `TestCluster::leader` would wait for the node behind to know a leader too: a write
    // through a survivor, retried while the survivors elect, is what is waited for instead.
    register(&c, followers[1], "127.0.0.4:80").await;
    // Until the new instance shows, every answer still has the two from before the kill.
    let before = ip_set(&["127.0.0.2", "127.0.0.3"]);
    let want = ip_set(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    eventually(
        DEADLINE,
        "the instance registered after the kill",
        || async {
            let got = a_records(dns, NAME).await;
            assert!(got.is_superset(&before), "answered from the past: {got:?}");
            (got == want).then_some(())
        },
    )
    .await;
    let h = sidecar.health().await;
    assert_eq!(
        h["snapshots"], 1,
        "the sidecar took the older snapshot: {h}"
    );
    assert_ne!(h["epoch"], "0000000000000000", "{h}");

    sidecar.stop().await;
}
