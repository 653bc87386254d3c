//! Failover with real processes: three `waypost-control` nodes, clients registering through
//! random nodes, and the leader killed with SIGKILL in the middle, then restarted.
//!
//! Every acknowledged registration must be on both survivors (linearizable reads) and, once it
//! caught up, on the restarted node; no two acknowledgements carry the same revision; and a
//! `/watch` stream opened on a follower before the fault, moved to other nodes with
//! `Last-Event-ID` when its connection breaks, sees every change once, in order, with no second
//! snapshot. Registrations that failed with 503 `no_leader` or without an answer are of unknown
//! outcome: they may be there or not.

mod cluster_procs;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cluster_procs::*;
use serde_json::json;

const CLIENTS: usize = 4;
const OPS: usize = 60;
const SERVICES: usize = 3;

/// An acknowledged registration.
#[derive(Debug, Clone)]
struct Ack {
    key: Key,
    revision: u64,
}

/// What one client did.
#[derive(Debug, Default)]
struct Done {
    acks: Vec<Ack>,
    /// Registrations of unknown outcome.
    unknown: Vec<Key>,
    /// Answers no fault explains (a bug).
    unexpected: Vec<String>,
}

async fn client(
    c: usize,
    http: reqwest::Client,
    urls: Vec<String>,
    done: Arc<AtomicUsize>,
) -> Done {
    let mut rng = Rng::new(0x5eed_0000 + c as u64);
    let mut out = Done::default();
    for n in 0..OPS {
        let node = rng.below(urls.len());
        let service = format!("fo-{}", rng.below(SERVICES));
        let address = format!("http://10.1.{c}.{n}:8000");
        let key = (service.clone(), format!("10.1.{c}.{n}:8000"));
        let body = json!({"service": service, "address": address});
        let r = post(&http, &urls[node], "/register", &body).await;
        match r.status() {
            Some(201) => out.acks.push(Ack {
                key,
                revision: r.body()["revision"].as_u64().expect("a revision"),
            }),
            _ if r.is_indeterminate() => {
                out.unknown.push(key);
                // Back off, as a client would, while the cluster has no leader.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => out
                .unexpected
                .push(format!("register {key:?} on node {}: {r:?}", node + 1)),
        }
        done.fetch_add(1, Ordering::AcqRel);
        tokio::time::sleep(Duration::from_millis(20 + rng.below(15) as u64)).await;
    }
    out
}

/// The instances of every test service on node `i`: linearizable reads, or `?stale` ones.
async fn contents(procs: &Procs, i: usize, stale: bool) -> BTreeSet<Key> {
    let mut keys = BTreeSet::new();
    for s in 0..SERVICES {
        let service = format!("fo-{s}");
        let path = if stale {
            format!("/discover/{service}?healthy=false&stale")
        } else {
            format!("/discover/{service}?healthy=false")
        };
        let r = procs.read(i, &path).await;
        assert_eq!(r.status(), Some(200), "{path} on node {}: {r:?}", i + 1);
        for inst in r.body()["instances"].as_array().expect("instances") {
            keys.insert((service.clone(), inst["id"].as_str().unwrap().to_owned()));
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_registrations_survive_the_leader_killed_and_restarted() {
    let mut procs = Procs::start(3).await;
    let urls = procs.urls();
    let leader = procs.leader().await;
    let watched = (0..3).find(|i| *i != leader).unwrap();
    let other = (0..3).find(|i| *i != leader && *i != watched).unwrap();

    // The watcher: opened on a follower before anything happens.
    let (hop, hops) = tokio::sync::mpsc::unbounded_channel();
    let (until, until_rx) = tokio::sync::watch::channel(None);
    let (opened, opened_rx) = tokio::sync::oneshot::channel();
    let watcher = tokio::spawn(follow_watch(
        procs.client.clone(),
        urls.clone(),
        watched,
        hops,
        until_rx,
        opened,
    ));
    let start = tokio::time::timeout(SETTLE, opened_rx)
        .await
        .expect("the watch opened")
        .unwrap();

    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(c, procs.client.clone(), urls.clone(), done.clone())))
        .collect();

    // The fault: SIGKILL the leader a fifth of the way in.
    progress(&done, CLIENTS * OPS / 5).await;
    procs.nodes[leader].kill();
    // The watcher's connection breaks (as a network would break it): it resumes on the
    // other survivor, most likely while there is no leader yet.
    hop.send(other).unwrap();
    let new_leader = procs.leader_among(&[watched, other]).await;
    assert_ne!(new_leader, leader);
    // Restart it on the same port and data directory while the clients go on, and move the
    // watcher to it before it has caught up.
    progress(&done, CLIENTS * OPS * 3 / 5).await;
    procs.nodes[leader].start().await;
    hop.send(leader).unwrap();
    procs.wait_ready(leader).await;

    let mut acks = Vec::new();
    let mut unknown = BTreeSet::new();
    let mut unexpected = Vec::new();
    for c in clients {
        let d = c.await.unwrap();
        acks.extend(d.acks);
        unknown.extend(d.unknown);
        unexpected.extend(d.unexpected);
    }
    assert!(
        unexpected.is_empty(),
        "answers no fault explains: {unexpected:#?}"
    );
    // (On a loaded host many writes time out; only a test that acknowledged nothing at all
    // would prove nothing.)
    assert!(
        acks.len() >= 20,
        "too few acknowledged registrations to mean much: {}",
        acks.len()
    );
    println!(
        "failover: node {} killed, node {} led next; {} acknowledged, {} of unknown outcome",
        leader + 1,
        new_leader + 1,
        acks.len(),
        unknown.len()
    );

    // No revision was given twice.
    let mut by_revision: BTreeMap<u64, &Ack> = BTreeMap::new();
    for a in &acks {
        if let Some(prev) = by_revision.insert(a.revision, a) {
            panic!(
                "revision {} acknowledged twice: {prev:?} and {a:?}",
                a.revision
            );
        }
    }

    // Every acknowledged registration is on both survivors, read linearizably; nothing is
    // there that no client attempted.
    let head = procs.settled_head(new_leader).await;
    let acked: BTreeSet<Key> = acks.iter().map(|a| a.key.clone()).collect();
    let mut survivor_view = None;
    for i in [watched, other] {
        let have = contents(&procs, i, false).await;
        let lost: Vec<_> = acked.difference(&have).collect();
        assert!(
            lost.is_empty(),
            "node {} lost acknowledged registrations: {lost:?}",
            i + 1
        );
        let phantom: Vec<_> = have
            .iter()
            .filter(|k| !acked.contains(*k) && !unknown.contains(*k))
            .collect();
        assert!(
            phantom.is_empty(),
            "node {} has instances never registered: {phantom:?}",
            i + 1
        );
        if let Some(v) = &survivor_view {
            assert_eq!(v, &have, "the survivors disagree");
        }
        survivor_view = Some(have);
    }
    // The restarted node, once at the same head, has the same instances (read `?stale`:
    // its own applied state).
    procs.wait_head(leader, head).await;
    let restarted = contents(&procs, leader, true).await;
    assert_eq!(
        Some(&restarted),
        survivor_view.as_ref(),
        "the restarted node at head {head} differs from the survivors"
    );

    // The watcher saw every change exactly once, in order, without a second snapshot, and
    // each acknowledged registration as the upsert of its revision.
    until.send(Some(head)).unwrap();
    let seen = tokio::time::timeout(SETTLE, watcher)
        .await
        .expect("the watcher reached the head")
        .unwrap();
    // One epoch for the whole history, named before the first revision, the same everywhere.
    let mut epochs = BTreeSet::new();
    for i in 0..3 {
        let h = get(&procs.client, procs.url(i), "/health").await;
        epochs.insert(h.body()["epoch"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(epochs.len(), 1, "the nodes' epochs: {epochs:?}");
    let epoch = epochs.pop_first().unwrap();
    assert_ne!(epoch, "0000000000000000");
    if let Err(err) = check_watch(&seen, head, &epoch) {
        panic!("the watch stream: {err}");
    }
    let at: BTreeMap<u64, &Seen> = seen.iter().map(|s| (s.revision, s)).collect();
    for a in &acks {
        assert!(
            a.revision > start,
            "{a:?} at or before the watch's snapshot {start}"
        );
        let s = at[&a.revision];
        assert!(
            s.kind == "upsert" && s.key.as_ref() == Some(&a.key),
            "revision {} is {s:?} on the watch, acknowledged as {a:?}",
            a.revision
        );
    }
    let nodes: BTreeSet<usize> = seen.iter().map(|s| s.node).collect();
    assert!(nodes.len() >= 2, "the watcher never moved: {nodes:?}");
}
