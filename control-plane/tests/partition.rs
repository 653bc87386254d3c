//! A network partition with real processes in network namespaces (needs root and iproute2;
//! skipped with a message where namespaces are not permitted): the leader is cut off from the
//! two other nodes. On its side (a minority of one) writes and default reads answer 503
//! `no_leader` and `?stale` reads still answer; the majority elects a new leader and takes
//! writes. Once healed, the old leader follows the new one (its term is at least the new
//! leader's) and every acknowledged write, wherever it was acknowledged, is on all three nodes.
//! Namespaces and links are in `cluster_procs/netns.rs`.

mod cluster_procs;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use cluster_procs::{netns::Net, *};
use serde_json::json;

const WRITERS: usize = 2;
/// The most registrations each background writer makes.
const OPS: usize = 80;

/// Acknowledged registrations of one background writer.
async fn writer(
    w: usize,
    http: reqwest::Client,
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> (Vec<Key>, Vec<String>) {
    let mut rng = Rng::new(0x9a27_0000 + w as u64);
    let mut acked = Vec::new();
    let mut unexpected = Vec::new();
    for n in 0..OPS {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let node = rng.below(urls.len());
        let body = json!({"service": "part", "address": format!("http://10.3.{w}.{n}:8000")});
        let r = post(&http, &urls[node], "/register", &body).await;
        match r.status() {
            Some(201) => acked.push(("part".to_owned(), format!("10.3.{w}.{n}:8000"))),
            _ if r.is_indeterminate() => {}
            _ => unexpected.push(format!("register on node {}: {r:?}", node + 1)),
        }
        done.fetch_add(1, Ordering::AcqRel);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    (acked, unexpected)
}

/// Polls `f` until it returns `Some`, up to [`SETTLE`].
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn instances(procs: &Procs, i: usize, query: &str) -> BTreeSet<Key> {
    let r = procs
        .read(i, &format!("/discover/part?healthy=false{query}"))
        .await;
    assert_eq!(r.status(), Some(200), "node {}: {r:?}", i + 1);
    r.body()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| ("part".to_owned(), i["id"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_isolated_leader_stops_answering_and_the_majority_goes_on() {
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        println!("SKIPPED: network namespaces not permitted: the ip command (iproute2) is missing");
        return;
    }
    let net = match Net::build(3) {
        Ok(net) => net,
        Err(reason) => {
            println!("SKIPPED: network namespaces not permitted: {reason}");
            return;
        }
    };
    let peers = (0..3)
        .map(|i| format!("{}=http://{}:9000", i + 1, net.addr(i)))
        .collect::<Vec<_>>()
        .join(",");
    let specs = (0..3)
        .map(|i| Spec {
            id: i as u64 + 1,
            listen: format!("{}:9000", net.addr(i)),
            url: format!("http://{}:9000", net.addr(i)),
            peers: peers.clone(),
            netns: Some(net.ns(i)),
            extra: vec!["--insecure".to_owned()],
        })
        .collect();
    let procs = Procs::start_specs(specs).await;
    let urls = procs.urls();
    let old = procs.leader().await;
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let before = procs.status(old).await.unwrap();

    // Writers through random nodes, the isolated one included, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(writer(
                w,
                procs.client.clone(),
                urls.clone(),
                stop.clone(),
                done.clone(),
            ))
        })
        .collect();
    progress(&done, 10).await;

    net.isolate(old);
    let mut acked: Vec<Key> = Vec::new();
    // The minority: writes answer no_leader (one that still succeeds would have to survive,
    // so it is counted as acknowledged).
    let deadline = Instant::now() + SETTLE;
    for n in 1.. {
        let body = json!({"service": "part", "address": format!("http://10.4.0.{n}:8000")});
        let r = post(&procs.client, procs.url(old), "/register", &body).await;
        if r.is_no_leader() {
            break;
        }
        assert_eq!(
            r.status(),
            Some(201),
            "a write on the isolated leader: {r:?}"
        );
        acked.push(("part".to_owned(), format!("10.4.0.{n}:8000")));
        assert!(
            Instant::now() < deadline,
            "the isolated leader still takes writes after {SETTLE:?}"
        );
    }
    until(
        "a default read on the isolated leader to answer no_leader",
        || async {
            get(&procs.client, procs.url(old), "/discover/part")
                .await
                .is_no_leader()
                .then_some(())
        },
    )
    .await;
    let stale = get(&procs.client, procs.url(old), "/discover/part?stale").await;
    assert_eq!(
        stale.status(),
        Some(200),
        "a stale read on the minority: {stale:?}"
    );

    // The majority elects a leader of its own and takes writes through either node.
    let new = procs.leader_among(&majority).await;
    assert_ne!(new, old);
    for (k, &i) in majority.iter().enumerate() {
        let body = json!({"service": "part", "address": format!("http://10.5.0.{k}:8000")});
        // (Retried while it times out on a loaded host; 200 if a timed-out try took effect.)
        let deadline = Instant::now() + SETTLE;
        loop {
            let r = post(&procs.client, procs.url(i), "/register", &body).await;
            if matches!(r.status(), Some(200 | 201)) {
                break;
            }
            assert!(
                r.is_indeterminate() && Instant::now() < deadline,
                "a write on the majority: {r:?}"
            );
        }
        acked.push(("part".to_owned(), format!("10.5.0.{k}:8000")));
    }
    let new_status = procs.status(new).await.unwrap();
    assert!(new_status["term"].as_u64() > before["term"].as_u64());
    // Still no leader on the minority side.
    let r = post(
        &procs.client,
        procs.url(old),
        "/register",
        &json!({"service": "part", "address": "http://10.4.1.1:8000"}),
    )
    .await;
    assert!(
        r.is_no_leader(),
        "a write on the minority after the election: {r:?}"
    );

    // Heal: the old leader follows the new one.
    net.heal(old);
    let leader_id = new as u64 + 1;
    let term = new_status["term"].as_u64().unwrap();
    until("the old leader to follow the new one", || async {
        let s = procs.status(old).await?;
        (s["leader"].as_u64() == Some(leader_id)
            && s["state"] == "follower"
            && s["term"].as_u64() >= Some(term))
        .then_some(())
    })
    .await;
    stop.store(true, Ordering::Release);
    let mut unexpected = Vec::new();
    for w in writers {
        let (a, odd) = w.await.unwrap();
        acked.extend(a);
        unexpected.extend(odd);
    }
    assert!(
        unexpected.is_empty(),
        "answers no fault explains: {unexpected:#?}"
    );

    // Nothing acknowledged is lost, on any node: linearizable reads, then each node's own
    // state once at the same head.
    let head = procs.settled_head(new).await;
    for i in 0..3 {
        procs.wait_head(i, head).await;
        for query in ["", "&stale"] {
            let have = instances(&procs, i, query).await;
            let lost: Vec<_> = acked.iter().filter(|k| !have.contains(*k)).collect();
            assert!(
                lost.is_empty(),
                "node {} ({query:?}) lost acknowledged writes: {lost:?}",
                i + 1
            );
        }
    }
    println!(
        "partition: {} acknowledged writes, node {} isolated, node {} led the majority at term {term}",
        acked.len(),
        old + 1,
        new + 1
    );
    drop(procs);
    drop(net);
}
