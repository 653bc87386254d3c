//! Sidecars known to the control plane, and writes that wait for them: real sidecars report
//! themselves (`PUT /nodes/{node}`), `GET /nodes` lists them, and a write sent with
//! `?wait=propagated` answers only once each has applied it, so that its DNS answers already
//! show the change when the write returns. A stopped sidecar is waited for until it is lost,
//! then no longer; one named in the wait is waited for all the same. In a cluster, a sidecar
//! that reports to one member releases waits on another.

mod common;

use std::time::Duration;

use common::{DEADLINE, TestSidecar, a_records, ip_set};
use waypost_client::{
    Client, Propagate,
    model::{InstanceRef, NodeState, RegisterRequest},
};
use waypost_control::testkit::{TestCluster, TestControlPlane, eventually};

const NAME: &str = "web.service.waypost.";

/// A registration of `web` at `address` that outlives the test without heartbeats.
fn web(address: &str) -> RegisterRequest {
    RegisterRequest {
        ttl_seconds: Some(600),
        ..RegisterRequest::new("web", address)
    }
}

/// A sidecar of `control` reporting as `node`, every 200 ms when idle.
async fn sidecar(control: &str, node: &str) -> TestSidecar {
    let node = node.to_owned();
    TestSidecar::start(control, move |c| {
        c.checks.node = Some(node);
        c.report_keepalive = Duration::from_millis(200);
    })
    .await
}

/// Waits until the control plane lists `names` as live.
async fn listed_live(client: &Client, names: &[&str]) {
    eventually(DEADLINE, "the sidecars listed live", || async {
        let nodes = client.nodes().await.ok()?;
        names
            .iter()
            .all(|n| {
                nodes
                    .nodes
                    .iter()
                    .any(|s| s.node == *n && s.state == NodeState::Live)
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_waits_answers_once_every_sidecar_routes_by_it() {
    let cp = TestControlPlane::in_memory(|c| c.nodes.lost_after = Duration::from_secs(2)).await;
    let client = Client::new(&cp.url).expect("a client");
    let sidecars = [
        sidecar(&cp.url, "node-a").await,
        sidecar(&cp.url, "node-b").await,
        sidecar(&cp.url, "node-c").await,
    ];
    listed_live(&client, &["node-a", "node-b", "node-c"]).await;

    // What each sidecar says of itself.
    let nodes = client.nodes().await.expect("/nodes");
    let a = nodes
        .nodes
        .iter()
        .find(|n| n.node == "node-a")
        .expect("node-a");
    assert_eq!(a.report.dns, vec![sidecars[0].dns().to_string()]);
    assert_eq!(a.report.http, vec![sidecars[0].http().to_string()]);
    assert_eq!(a.report.version, env!("CARGO_PKG_VERSION"));
    assert!(!a.report.stale);

    // Registered with a wait: every sidecar has it when the answer comes, so each one's DNS
    // answers with it at once, without any waiting here.
    let wait = Propagate::all(DEADLINE);
    let answer = client
        .register_propagated(&web("127.0.0.21:8001"), &wait)
        .await
        .expect("a registration that waits");
    let propagation = answer.propagation.expect("the answer says who applied it");
    assert!(propagation.complete, "{propagation:?}");
    assert_eq!(propagation.applied, ["node-a", "node-b", "node-c"]);
    for s in &sidecars {
        assert!(s.running.snapshots.current().revision >= answer.revision);
        assert_eq!(a_records(s.dns(), NAME).await, ip_set(&["127.0.0.21"]));
    }
    let nodes = client.nodes().await.expect("/nodes");
    assert_eq!(nodes.head, answer.revision);
    assert!(
        nodes
            .nodes
            .iter()
            .all(|n| n.lag_revisions == 0 && n.lag_ms == 0)
    );

    // A drain that waits: no sidecar sends the instance new work once it answers.
    let drained = client
        .drain_propagated(InstanceRef::by_id("web", "127.0.0.21:8001"), true, &wait)
        .await
        .expect("a drain that waits");
    assert!(drained.propagation.is_some_and(|p| p.complete));
    for s in &sidecars {
        assert!(a_records(s.dns(), NAME).await.is_empty());
    }

    // A stopped sidecar is still live for a while: a write times out waiting for it, done
    // all the same, and says who is behind.
    let [a, b, c] = sidecars;
    c.stop().await;
    let short = Propagate::all(Duration::from_millis(300));
    let answer = client
        .register_propagated(&web("127.0.0.22:8001"), &short)
        .await
        .expect("the write is done even when the wait is not");
    let propagation = answer.propagation.expect("a propagation answer");
    assert!(!propagation.complete, "{propagation:?}");
    assert_eq!(propagation.applied, ["node-a", "node-b"]);
    assert_eq!(propagation.behind.len(), 1);
    assert_eq!(propagation.behind[0].node, "node-c");
    assert!(propagation.waited_ms >= 300);

    // Once lost, it is no longer waited for, unless named.
    eventually(DEADLINE, "node-c shown lost", || async {
        let nodes = client.nodes().await.ok()?;
        nodes
            .nodes
            .iter()
            .any(|n| n.node == "node-c" && n.state == NodeState::Lost)
            .then_some(())
    })
    .await;
    let seen = client
        .propagation(answer.revision, &Propagate::all(DEADLINE))
        .await
        .expect("/propagation");
    assert!(seen.complete, "{seen:?}");
    assert_eq!(seen.lost, ["node-c"]);
    let named = client
        .propagation(
            answer.revision,
            &Propagate::all(Duration::ZERO).node("node-c").node("node-x"),
        )
        .await
        .expect("/propagation of named sidecars");
    assert!(!named.complete);
    let behind: Vec<_> = named
        .behind
        .iter()
        .map(|b| (b.node.as_str(), b.revision.is_some()))
        .collect();
    assert_eq!(behind, [("node-c", true), ("node-x", false)]);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_reporting_to_one_member_releases_waits_on_another() {
    let cluster = TestCluster::start(3, |c| {
        c.cluster.election_timeout = Duration::from_millis(500);
    })
    .await;
    let leader = cluster.leader(DEADLINE).await;
    let other = cluster.other_than(leader);
    // The sidecar follows and reports to `other` only; the write goes to the leader.
    let s = sidecar(&cluster.urls[other], "node-a").await;
    let leader_client = Client::new(&cluster.urls[leader]).expect("a client of the leader");
    listed_live(&leader_client, &["node-a"]).await;
    let answer = leader_client
        .register_propagated(&web("127.0.0.23:8001"), &Propagate::all(DEADLINE))
        .await
        .expect("a registration that waits");
    let propagation = answer.propagation.expect("a propagation answer");
    assert!(propagation.complete, "{propagation:?}");
    assert_eq!(propagation.applied, ["node-a"]);
    assert_eq!(a_records(s.dns(), NAME).await, ip_set(&["127.0.0.23"]));
}
