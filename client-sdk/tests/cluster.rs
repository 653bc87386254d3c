//! The SDK against a cluster of three control planes in this process (`TestCluster`, on
//! 127.0.0.1, 500 ms election timeout). The client knows all three URLs; the leader is
//! killed (`TestCluster::kill`: every task of the node dropped at once, its connections cut
//! mid-stream, nothing drained); registration handles keep their instances alive through the survivors,
//! new registrations work, and a watch resumes on another node without a new snapshot.

use std::{cell::RefCell, future::Future, time::Duration};

use futures_util::StreamExt;
use tokio::time::Instant;
use waypost_client::{
    Client, Error, Filter, ServiceSet, Watch,
    model::{InstanceRef, RegisterRequest},
};
use waypost_control::testkit::{TestCluster, eventually};

/// For an election, a catch-up, one change to arrive.
const DEADLINE: Duration = Duration::from_secs(10);
/// The registrations' TTL: heartbeats go every second.
const TTL: u32 = 3;

fn request(service: &str, port: u16, ttl: u32) -> RegisterRequest {
    RegisterRequest {
        ttl_seconds: Some(ttl),
        ..RegisterRequest::new(service, format!("127.0.0.1:{port}"))
    }
}

/// A client of the running nodes, `first` first. A client sends its calls (and opens its
/// watches) at its first endpoint until that one fails, so this decides where they go.
fn client_from(c: &TestCluster, first: usize) -> Client {
    let order = std::iter::once(first).chain((0..c.urls.len()).filter(|i| *i != first));
    order
        .filter(|i| c.nodes[*i].is_some())
        .fold(Client::builder(), |b, i| b.endpoint(&c.urls[i]))
        .build()
        .expect("a client of the cluster")
}

/// Makes `call` until it succeeds, for up to [`DEADLINE`] while it fails with a retryable
/// error. A write can meet an election besides the one a test causes (on a loaded host
/// heartbeats are late), and is answered 503 `no_leader` on every node; a caller retries then.
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

/// Deregisters an instance through `client`, [`retried`]. `instance_not_found` counts as
/// done: when a removal's answer is lost in a leader change (503 `no_leader` for an entry
/// that was committed after all: its outcome is unknown), the SDK repeats it at the next
/// endpoint, which no longer has the instance.
async fn deregister(client: &Client, service: &str, id: &str) {
    retried("a deregistration", || async {
        match client.deregister(InstanceRef::by_id(service, id)).await {
            Err(err) if err.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    })
    .await;
}

/// A running node's `/health` document.
async fn health(c: &TestCluster, i: usize) -> serde_json::Value {
    reqwest::get(format!("{}/health", c.urls[i]))
        .await
        .expect("/health answers")
        .json()
        .await
        .expect("a JSON health document")
}

/// The running nodes.
fn running(c: &TestCluster) -> Vec<usize> {
    (0..c.nodes.len())
        .filter(|i| c.nodes[*i].is_some())
        .collect()
}

/// Waits until each of `nodes` has the cluster's epoch (named by the first leader, in the
/// log like any write) and has applied `revision`: a watcher that moves to any of them then
/// resumes where it was.
async fn settled(c: &TestCluster, nodes: &[usize], revision: u64) {
    let last = RefCell::new(Vec::new());
    let probe = eventually(2 * DEADLINE, "the nodes to settle", || async {
        let mut healths = Vec::new();
        for &i in nodes {
            healths.push(health(c, i).await);
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

/// The value of a control plane's metric line that starts with `series`, 0 when absent.
async fn metric(c: &TestCluster, i: usize, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", c.urls[i]))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("the metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// The ids of a service's `up` instances, read linearizably by `client` ([`retried`]).
async fn ids(client: &Client, service: &str) -> Vec<String> {
    let all = Filter::default();
    let found = retried("a discovery", || client.discover(service, &all)).await;
    let mut ids: Vec<String> = found
        .instances
        .iter()
        .map(|i| i.instance.id.as_str().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn registrations_outlive_the_leader_and_new_ones_work_through_the_survivors() {
    let mut c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(DEADLINE).await;
    // The client's current endpoint is the leader: when it dies, every call must fail over.
    let client = client_from(&c, leader);
    let mut handles = Vec::new();
    for port in 8001..=8003 {
        handles.push(
            retried("a registration", || {
                client.register(request("web", port, TTL))
            })
            .await,
        );
    }
    // A witness whose handle is dropped before the kill: nothing renews it, so the new
    // leader must expire it. That shows expiry is in force after the failover, so the
    // handles' instances that stay are there because their heartbeats reach the survivors.
    let witness = retried("the witness", || {
        client.register(request("witness", 9001, TTL))
    })
    .await;
    drop(witness);

    c.kill(leader);
    let new_leader = c.leader(DEADLINE).await;
    assert_ne!(new_leader, leader);
    let elected = Instant::now();
    // Reads go through the survivors only.
    let survivors = client_from(&c, new_leader);

    // A new registration through the same client, whose first endpoint is gone.
    let fresh = retried("a registration after the kill", || {
        client.register(request("web", 8004, TTL))
    })
    .await;
    let want = [
        "127.0.0.1:8001",
        "127.0.0.1:8002",
        "127.0.0.1:8003",
        "127.0.0.1:8004",
    ];
    // A new leader gives every instance its TTL again plus two election timeouts (4 s here)
    // before expiring anything: three TTLs after the election, an instance whose heartbeats
    // got lost would be gone. Every look in that window must find all four.
    let window = Duration::from_secs(3 * u64::from(TTL));
    eventually(
        window + DEADLINE,
        "three TTLs to pass and the witness to expire",
        || async {
            // A read the survivors cannot answer now (503 `no_leader`, were a loaded host to
            // delay heartbeats into another election) is no look: the next one counts.
            let found = survivors.discover("web", &Filter::default()).await.ok()?;
            let mut found: Vec<&str> = found
                .instances
                .iter()
                .map(|i| i.instance.id.as_str())
                .collect();
            found.sort_unstable();
            assert_eq!(
                found,
                want,
                "an instance with a live handle is gone {:?} after the election",
                elected.elapsed()
            );
            let witness = survivors
                .discover("witness", &Filter::default().include_draining())
                .await
                .ok()?;
            (witness.count == 0 && elected.elapsed() >= window).then_some(())
        },
    )
    .await;
    // Each handle reports its instance registered.
    for handle in handles.iter().chain([&fresh]) {
        let mut state = handle.watch_state();
        tokio::time::timeout(
            DEADLINE,
            state.wait_for(waypost_client::RegistrationState::is_registered),
        )
        .await
        .expect("the handle reports Registered")
        .expect("the heartbeat task runs");
    }
    // Heartbeats reached the survivors (directly, and forwarded to the new leader).
    let mut beats = 0.0;
    for i in (0..3).filter(|i| *i != leader) {
        beats += metric(&c, i, "waypost_heartbeats_total{result=\"ok\"}").await;
    }
    assert!(beats > 0.0, "no heartbeat reached a survivor");

    // Deregistration through the handle works too (see `deregister` for instance_not_found;
    // an election now would leave it to the helper).
    match fresh.deregister().await {
        Ok(_) => {}
        Err(err) if err.is_not_found() => {}
        Err(err) if err.is_retryable() => deregister(&client, "web", "127.0.0.1:8004").await,
        Err(err) => panic!("deregister: {err}"),
    }
    assert_eq!(ids(&survivors, "web").await, want[..3]);
}

/// Registers `127.0.0.1:port` (without a handle) through `client` ([`retried`]); returns
/// its revision.
async fn register_once(client: &Client, service: &str, port: u16) -> u64 {
    let request = request(service, port, 600);
    retried("a registration", || client.register_once(&request))
        .await
        .revision
}

/// [`register_once`] through node `i` first.
async fn register_through(c: &TestCluster, i: usize, service: &str, port: u16) -> u64 {
    register_once(&client_from(c, i), service, port).await
}

async fn next_set(watch: &mut Watch) -> ServiceSet {
    tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("a set within the deadline")
        .expect("the watch never ends")
}

#[tokio::test]
async fn a_watch_on_the_killed_leader_resumes_on_a_survivor_without_a_snapshot() {
    let mut c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(DEADLINE).await;
    settled(&c, &running(&c), 0).await;
    // The watch opens its stream at its client's first endpoint: the leader, the node that is
    // killed below, so that its connection does break.
    let client = client_from(&c, leader);
    let mut watch = client.watch("api");
    let mut seen = vec![next_set(&mut watch).await];
    assert_eq!(watch.snapshots(), 1);
    let streams = "waypost_watch_streams";
    eventually(
        DEADLINE,
        "the watch stream to be open on the leader",
        || async { (metric(&c, leader, streams).await == 1.0).then_some(()) },
    )
    .await;

    // Changes before the failover, written through every node.
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    register_through(&c, followers[0], "api", 1).await;
    register_through(&c, leader, "other", 9).await; // another service: filtered out
    let last = register_through(&c, followers[1], "api", 2).await;
    seen.push(next_set(&mut watch).await);
    seen.push(next_set(&mut watch).await);
    // Every survivor has applied what the watch saw, so it can resume there.
    settled(&c, &running(&c), last).await;

    // The leader dies: its streams break without an end.
    c.kill(leader);
    let new_leader = c.leader(DEADLINE).await;
    assert_ne!(new_leader, leader);

    // Changes after the failover, through the survivors.
    deregister(&client_from(&c, new_leader), "api", "127.0.0.1:1").await;
    register_once(&client, "api", 3).await;
    register_through(&c, c.other_than(new_leader), "api", 4).await;
    for _ in 0..3 {
        seen.push(next_set(&mut watch).await);
    }

    // Each change once, in order, across the move to another node.
    let ids: Vec<Vec<&str>> = seen.iter().map(ServiceSet::ids).collect();
    assert_eq!(
        ids,
        vec![
            vec![],
            vec!["127.0.0.1:1"],
            vec!["127.0.0.1:1", "127.0.0.1:2"],
            vec!["127.0.0.1:2"],
            vec!["127.0.0.1:2", "127.0.0.1:3"],
            vec!["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"],
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[0].revision < w[1].revision),
        "revisions must increase: {:?}",
        seen.iter().map(|s| s.revision).collect::<Vec<_>>()
    );
    // Resumed, not started again: still the one snapshot of the first connection.
    assert_eq!(watch.snapshots(), 1, "the watch received a new snapshot");
    // Its stream is now open on a survivor.
    eventually(
        DEADLINE,
        "the watch stream to be open on a survivor",
        || async {
            let mut open = 0.0;
            for i in &followers {
                open += metric(&c, *i, streams).await;
            }
            (open == 1.0).then_some(())
        },
    )
    .await;
    // Nothing more is pending: no change came twice.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_watch_skips_a_node_that_has_not_caught_up_instead_of_going_back() {
    let mut c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(DEADLINE).await;
    let members = running(&c);
    settled(&c, &members, 0).await;
    // A node started to join the cluster and not added yet serves `/watch` from an empty
    // registry without the cluster's epoch, as a node still catching up would: a resume there
    // is answered with a snapshot older than what the watch already has.
    let behind = c.join(|_| {}).await;
    let followers: Vec<usize> = members.iter().copied().filter(|i| *i != leader).collect();
    // The watch opens at the leader; when the leader dies it tries the node behind next.
    let client = [leader, behind, followers[0], followers[1]]
        .iter()
        .fold(Client::builder(), |b, i| b.endpoint(&c.urls[*i]))
        .build()
        .unwrap();
    let mut watch = client.watch("api");
    let mut seen = vec![next_set(&mut watch).await];
    let last = register_through(&c, followers[0], "api", 1).await;
    seen.push(next_set(&mut watch).await);
    settled(&c, &members, last).await;

    c.kill(leader);
    // `TestCluster::leader` would wait for the node behind to know a leader too: a write
    // through a survivor, retried while the survivors elect, is what is waited for instead.
    register_through(&c, followers[1], "api", 2).await;
    seen.push(next_set(&mut watch).await);
    let ids: Vec<Vec<&str>> = seen.iter().map(ServiceSet::ids).collect();
    assert_eq!(
        ids,
        vec![
            vec![],
            vec!["127.0.0.1:1"],
            vec!["127.0.0.1:1", "127.0.0.1:2"],
        ],
        "the watch went back to the node behind"
    );
    assert_eq!(watch.snapshots(), 1, "the watch took the older snapshot");
}

/// A membership change sent to a member that does not lead is answered with a 307 to the
/// leader; the SDK follows it once, with its token (reqwest's own redirects would drop the
/// token on the way to another port).
#[tokio::test]
async fn membership_changes_through_a_follower_reach_the_leader_with_the_token() {
    use waypost_control::{auth::Role, testkit::tokens};
    let with_tokens = |c: &mut waypost_control::Config| {
        c.tokens = tokens(&[
            ("op-secret", Role::Operator, &[]),
            ("peer-secret", Role::Cluster, &[]),
        ]);
        c.cluster.token = Some("peer-secret".to_owned());
    };
    let mut c = TestCluster::start(3, with_tokens).await;
    let leader = c.leader(DEADLINE).await;
    let follower = c.other_than(leader);
    let new = c.join(with_tokens).await;
    let client = Client::builder()
        .endpoint(&c.urls[follower])
        .token("op-secret")
        .build()
        .unwrap();
    let member = waypost_client::model::AddMember {
        id: new as u64 + 1,
        url: c.urls[new].clone(),
        learner: true,
    };
    let added = retried("add a member", || client.add_member(&member)).await;
    assert_eq!(added.members.len(), 4, "{added:?}");
    assert!(
        added
            .members
            .iter()
            .any(|m| m.id == member.id && m.role == "learner"),
        "{added:?}"
    );
    let removed = retried("remove it", || client.remove_member(member.id)).await;
    assert_eq!(removed.members.len(), 3, "{removed:?}");
    // Without the token the leader refuses, whoever is asked.
    let anonymous = Client::builder()
        .endpoint(&c.urls[follower])
        .build()
        .unwrap();
    let err = anonymous.cluster_status().await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(waypost_client::model::ErrorCode::Unauthorized)
    );
}
