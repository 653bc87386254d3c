//! `/watch`: snapshot then changes; resume by `Last-Event-ID` or `?since=` with nothing missed
//! and nothing doubled; a stale or foreign resume point gets a fresh snapshot.

mod common;

use common::*;
use serde_json::{Value, json};

async fn churn(cp: &TestControlPlane, from: u16, to: u16) {
    for port in from..to {
        register(cp, seed("web", port)).await;
        if port % 3 == 0 {
            post(cp, "/deregister", seed("web", port)).await;
        }
        if port % 5 == 0 {
            register(cp, seed("db", port)).await;
        }
    }
}

/// Reads events until one with revision `until`, checking revisions strictly increase.
async fn read_until(w: &mut Watch, after: u64, until: u64) -> (Vec<u64>, String) {
    let mut revs = Vec::new();
    let mut last_id = String::new();
    let mut prev = after;
    while prev < until {
        let (ev, data) = w.next().await;
        let rev = data["revision"].as_u64().unwrap();
        assert!(
            rev > prev,
            "revision {rev} after {prev}: doubled or reordered"
        );
        assert_eq!(ev.id, format!("{}-{rev}", ev.id.split('-').next().unwrap()));
        revs.push(rev);
        prev = rev;
        last_id = ev.id;
    }
    (revs, last_id)
}

#[tokio::test]
async fn resume_across_disconnects_misses_and_doubles_nothing() {
    let cp = TestControlPlane::start(|_| {}).await;
    register(&cp, seed("web", 1)).await;

    let mut w = Watch::open(&cp, "", None).await;
    let (ev, snap) = w.next().await;
    assert_eq!(ev.event, "snapshot");
    assert_eq!(snap["revision"], 1);
    assert_eq!(snap["instances"].as_array().unwrap().len(), 1);
    let epoch = snap["epoch"].as_str().unwrap().to_owned();
    assert_eq!(ev.id, format!("{epoch}-1"));

    let mut seen: Vec<u64> = vec![];
    let mut after = 1;
    for round in 0..5u16 {
        churn(&cp, 10 + round * 40, 10 + (round + 1) * 40).await;
        let head = get(&cp, "/health").await.body["revision"].as_u64().unwrap();
        // Read part of the changes, then drop the connection mid-stream.
        let half = after + (head - after) / 2;
        let (revs, last_id) = read_until(&mut w, after, half).await;
        seen.extend(&revs);
        drop(w);
        after = *revs.last().unwrap();
        // More changes while disconnected.
        churn(&cp, 500 + round * 10, 500 + (round + 1) * 10).await;
        w = Watch::open(&cp, "", Some(&last_id)).await;
        let head = get(&cp, "/health").await.body["revision"].as_u64().unwrap();
        let (revs, _) = read_until(&mut w, after, head).await;
        seen.extend(&revs);
        after = head;
    }
    let head = get(&cp, "/health").await.body["revision"].as_u64().unwrap();
    assert_eq!(
        seen,
        (2..=head).collect::<Vec<_>>(),
        "every revision exactly once"
    );
    assert!(head > 300, "a meaningful number of changes: {head}");
}

#[tokio::test]
async fn since_parameter_and_service_filter() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("web", 1)).await; // 1
    register(&cp, seed("db", 2)).await; // 2
    register(&cp, seed("web", 3)).await; // 3
    post(&cp, "/deregister", seed("db", 2)).await; // 4
    let epoch = get(&cp, "/health").await.body["epoch"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut w = Watch::open(&cp, &format!("?since=1&epoch={epoch}"), None).await;
    let kinds: Vec<(String, u64)> = {
        let mut v = vec![];
        for _ in 0..3 {
            let (ev, d) = w.next().await;
            v.push((ev.event, d["revision"].as_u64().unwrap()));
        }
        v
    };
    assert_eq!(
        kinds,
        [
            ("upsert".into(), 2),
            ("upsert".into(), 3),
            ("remove".into(), 4)
        ]
    );

    // Filtered to one service: its snapshot, then only its changes.
    let mut w = Watch::open(&cp, "?service=db", None).await;
    let (ev, snap) = w.next().await;
    assert_eq!(ev.event, "snapshot");
    assert_eq!(snap["instances"], json!([]));
    register(&cp, seed("web", 4)).await; // 5, filtered out
    register(&cp, seed("db", 5)).await; // 6
    let (_, d) = w.next().await;
    assert_eq!(
        (d["type"].as_str(), d["revision"].as_u64()),
        (Some("upsert"), Some(6))
    );
    assert_eq!(d["instance"]["service"], "db");
    assert_eq!(d["reason"], "registered");
}

#[tokio::test]
async fn stale_or_foreign_resume_points_get_a_snapshot() {
    let cp = TestControlPlane::in_memory(|c| c.history = 5).await;
    for port in 1..=20 {
        register(&cp, seed("web", port)).await;
    }
    let epoch = get(&cp, "/health").await.body["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases = [
        format!("{epoch}-3"),              // older than the kept history
        format!("{:016x}-19", 0xdead_u64), // another epoch
        format!("{epoch}-999"),            // beyond the head
    ];
    for last in cases {
        let mut w = Watch::open(&cp, "", Some(&last)).await;
        let (ev, snap): (_, Value) = w.next().await;
        assert_eq!(ev.event, "snapshot", "resume from {last}");
        assert_eq!(snap["revision"], 20);
        assert_eq!(snap["instances"].as_array().unwrap().len(), 20);
    }
    // Within the history: exactly the rest.
    let mut w = Watch::open(&cp, "", Some(&format!("{epoch}-17"))).await;
    for want in 18..=20 {
        let (ev, d) = w.next().await;
        assert_eq!(
            (ev.event.as_str(), d["revision"].as_u64()),
            ("upsert", Some(want))
        );
    }
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    use futures_util::StreamExt;
    let cp =
        TestControlPlane::in_memory(|c| c.watch_keepalive = std::time::Duration::from_millis(100))
            .await;
    let res = client().get(cp.at("/watch")).send().await.unwrap();
    let mut stream = res.bytes_stream();
    let mut text = String::new();
    // A comment line starts with ':'; it must arrive on a stream with no changes.
    tokio::time::timeout(DEADLINE, async {
        while !text.lines().any(|l| l.starts_with(':')) {
            let chunk = stream.next().await.expect("stream open").expect("chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("a keep-alive comment within the deadline");
}
