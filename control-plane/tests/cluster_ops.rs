//! Cluster operations: adding a node that catches up from a snapshot and removing it,
//! authorization between nodes, heartbeats through a follower, the metrics, and a data
//! directory from before cluster mode.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use waypost_control::{
    auth::Role,
    testkit::{TestCluster, tokens},
};

const ELECTION: Duration = Duration::from_secs(10);

fn node(c: &TestCluster, i: usize) -> &TestControlPlane {
    c.nodes[i].as_ref().expect("a running node")
}

#[tokio::test]
async fn a_node_added_later_catches_up_from_a_snapshot_and_can_be_removed() {
    let small = |c: &mut waypost_control::Config| c.cluster.snapshot_entries = 20;
    let mut c = TestCluster::start(3, small).await;
    let leader = c.leader(ELECTION).await;
    for port in 1..=60 {
        register(node(&c, leader), seed("big", port)).await;
    }
    // The leader has snapshotted and purged the log before its snapshot.
    let status = get(node(&c, leader), "/cluster").await.body;
    assert!(status["snapshot_index"].as_u64().unwrap() >= 20, "{status}");

    let new = c.join(small).await;
    let at = node(&c, new).url.clone();
    // Sent to a follower: redirected to the leader.
    let follower = c.other_than(leader);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects
        .post(node(&c, follower).at("/cluster/members"))
        .json(&json!({"id": new + 1, "url": at}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 307);
    assert_eq!(
        res.headers()["location"],
        node(&c, leader).at("/cluster/members").as_str()
    );
    let added = post(
        node(&c, leader),
        "/cluster/members",
        json!({"id": new + 1, "url": at}),
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.body);
    let roles: Vec<(u64, String)> = members(&added.body);
    assert_eq!(roles.len(), 4, "{roles:?}");
    assert!(
        roles.contains(&(new as u64 + 1, "follower".to_owned())),
        "{roles:?}"
    );
    // The new node has everything, from a snapshot (the log it needed was purged).
    let mine = eventually(ELECTION, "the new node to catch up", || async {
        let a = get(node(&c, new), "/discover/big?stale").await;
        (a.body["count"] == 60).then_some(a)
    })
    .await;
    assert_eq!(mine.body["count"], 60);
    let its = get(node(&c, new), "/cluster").await.body;
    assert!(its["snapshot_index"].as_u64().is_some(), "{its}");
    // It takes writes and linearizable reads like any member.
    let a = post(node(&c, new), "/register", seed("big", 61)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(ids(node(&c, new), "big", "").await.len(), 61);

    let removed = answer(
        client()
            .delete(node(&c, leader).at(&format!("/cluster/members/{}", new + 1)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(members(&removed.body).len(), 3);
}

fn members(status: &Value) -> Vec<(u64, String)> {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn nodes_talk_with_a_cluster_token_and_other_tokens_cannot() {
    let with_tokens = |c: &mut waypost_control::Config| {
        c.tokens = tokens(&[
            ("op-secret", Role::Operator, &[]),
            ("peer-secret", Role::Cluster, &[]),
            ("svc-secret", Role::Service, &["web"]),
            ("ro-secret", Role::Read, &[]),
        ]);
        c.cluster.token = Some("peer-secret".to_owned());
    };
    let c = TestCluster::start(3, with_tokens).await;
    let leader = c.leader(ELECTION).await;
    let follower = c.other_than(leader);
    let http = client();
    let call = |token: Option<&'static str>, method: reqwest::Method, url: String, body: Value| {
        let mut req = http.request(method, url).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { answer(req.send().await.unwrap()).await }
    };
    use reqwest::Method;
    // A write through a follower is forwarded with the follower's cluster token.
    let a = call(
        Some("svc-secret"),
        Method::POST,
        node(&c, follower).at("/register"),
        seed("web", 1),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let r = call(
        Some("ro-secret"),
        Method::GET,
        node(&c, follower).at("/discover/web"),
        Value::Null,
    )
    .await;
    assert_eq!(r.body["count"], 1);
    // The routes between nodes: only cluster (and operator) tokens.
    let vote = json!({"vote": {"leader_id": {"term": 99, "node_id": 9}, "committed": false}, "last_log_id": null});
    call(
        None,
        Method::POST,
        node(&c, follower).at("/cluster/raft/vote"),
        vote.clone(),
    )
    .await
    .assert_problem(401, "unauthorized");
    for token in ["ro-secret", "svc-secret"] {
        call(
            Some(token),
            Method::POST,
            node(&c, follower).at("/cluster/write"),
            json!({"op": "init", "epoch": 5}),
        )
        .await
        .assert_problem(403, "forbidden");
    }
    // A cluster token may not write through the public API, nor change the membership.
    call(
        Some("peer-secret"),
        Method::POST,
        node(&c, leader).at("/register"),
        seed("web", 2),
    )
    .await
    .assert_problem(403, "forbidden");
    call(
        Some("svc-secret"),
        Method::POST,
        node(&c, leader).at("/cluster/members"),
        json!({"id": 9, "url": "http://127.0.0.1:9"}),
    )
    .await
    .assert_problem(403, "forbidden");
    let s = call(
        Some("ro-secret"),
        Method::GET,
        node(&c, leader).at("/cluster"),
        Value::Null,
    )
    .await;
    assert_eq!(s.status, 200);
}

#[tokio::test]
async fn heartbeats_sent_only_to_a_follower_keep_an_instance_alive_on_the_leader() {
    let c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(ELECTION).await;
    let follower = c.other_than(leader);
    let mut body = seed("beat", 1);
    body["ttl_seconds"] = json!(2);
    register(node(&c, follower), body).await;
    // Three TTLs of heartbeats through the follower only, every 400 ms (bounded).
    for _ in 0..15 {
        let h = post(node(&c, follower), "/heartbeat", seed("beat", 1)).await;
        assert_eq!(h.status, 200, "{}", h.body);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(ids(node(&c, leader), "beat", "").await.len(), 1);
    let metrics = text(node(&c, leader), "/metrics").await;
    assert!(
        metrics.contains("waypost_expirations_total 0"),
        "nothing expired on the leader"
    );
    let forwarded = text(node(&c, follower), "/metrics").await;
    assert!(
        forwarded.contains("waypost_forwarded_total{kind=\"heartbeat\"}"),
        "the follower counts the heartbeats it passed on"
    );
    // Silent: the leader expires it, and every node sees the removal.
    eventually(ELECTION, "the silent instance to expire", || async {
        ids(node(&c, follower), "beat", "")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn cluster_metrics_are_exposed() {
    let c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(ELECTION).await;
    let follower = c.other_than(leader);
    register(node(&c, follower), seed("m", 1)).await;
    let leader_metrics = text(node(&c, leader), "/metrics").await;
    for name in [
        "waypost_raft_term ",
        "waypost_raft_leader_changes_total ",
        "waypost_raft_last_log_index ",
        "waypost_raft_applied_index ",
        "waypost_raft_replication_lag{peer=",
    ] {
        assert!(leader_metrics.contains(name), "leader lacks {name}");
    }
    let follower_metrics = text(node(&c, follower), "/metrics").await;
    // The registration, and perhaps the naming of the epoch before it.
    let forwarded: f64 = follower_metrics
        .lines()
        .find_map(|l| l.strip_prefix("waypost_forwarded_total{kind=\"write\"} "))
        .expect("a forwarded-writes counter")
        .parse()
        .unwrap();
    assert!(forwarded >= 1.0, "{forwarded}");
}

#[tokio::test]
async fn the_leader_shows_each_members_last_contact_and_applied_index() {
    let mut c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(ELECTION).await;
    let follower = c.other_than(leader);
    register(node(&c, follower), seed("seen", 1)).await;
    let applied = get(node(&c, leader), "/cluster").await.body["applied_index"]
        .as_u64()
        .unwrap();
    assert!(applied > 0);
    // Followers report their applied index at least every second; the leader hears from
    // each with every Raft heartbeat.
    let c_ref = &c;
    eventually(ELECTION, "every member's report", || async move {
        let status = get(node(c_ref, leader), "/cluster").await.body;
        let members = status["members"].as_array()?.clone();
        members
            .iter()
            .all(|m| {
                m["applied_index"].as_u64().is_some_and(|a| a >= applied)
                    && m["last_contact_ms"].as_u64().is_some_and(|ms| ms < 2_000)
            })
            .then_some(())
    })
    .await;
    // A follower knows its own figures and its contact with the leader, not the others'.
    let status = get(node(&c, follower), "/cluster").await.body;
    for m in status["members"].as_array().unwrap() {
        let id = m["id"].as_u64().unwrap();
        if id == follower as u64 + 1 {
            assert_eq!(m["last_contact_ms"], 0, "{status}");
            assert!(m["applied_index"].as_u64().unwrap() >= applied, "{status}");
        } else if id == leader as u64 + 1 {
            assert!(m["last_contact_ms"].is_u64(), "{status}");
            assert!(m["applied_index"].is_null(), "{status}");
        } else {
            assert!(m["last_contact_ms"].is_null(), "{status}");
        }
    }
    // A member that dies stops answering: its last contact on the leader grows.
    c.kill(follower);
    let gone = follower as u64 + 1;
    let c_ref = &c;
    eventually(
        ELECTION,
        "the dead member's contact to age",
        || async move {
            let status = get(node(c_ref, leader), "/cluster").await.body;
            let m = status["members"]
                .as_array()?
                .iter()
                .find(|m| m["id"] == gone)?
                .clone();
            (m["last_contact_ms"].as_u64()? > 3_000).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn reads_take_consistent_or_stale_and_consistent_wins() {
    let c = TestCluster::start(3, |_| {}).await;
    let leader = c.leader(ELECTION).await;
    let follower = c.other_than(leader);
    register(node(&c, follower), seed("modes", 1)).await;
    for i in [leader, follower] {
        for query in ["?consistent", "?consistent=true", "?consistent=false", ""] {
            let d = get(node(&c, i), &format!("/discover/modes{query}")).await;
            assert_eq!(d.status, 200, "node {i} {query}: {}", d.body);
            assert_eq!(d.body["count"], 1, "node {i} {query}");
        }
        // Both: the stronger one wins.
        let both = get(node(&c, i), "/discover/modes?stale&consistent").await;
        assert_eq!(both.body["count"], 1, "{}", both.body);
        get(node(&c, i), "/services?consistent=maybe")
            .await
            .assert_problem(400, "invalid_query");
    }
    // On the leader a default read is answered under its lease, a consistent one after a
    // round; a follower's reads ask the leader, which answers the same way.
    let counted = |kind: &'static str| {
        let leader = node(&c, leader);
        async move {
            text(leader, "/metrics")
                .await
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("waypost_read_index_total{{kind=\"{kind}\"}} "))
                        .map(str::to_owned)
                })
                .map_or(0.0, |v| v.parse::<f64>().unwrap())
        }
    };
    for (query, kind) in [("", "lease"), ("?consistent", "round")] {
        for i in [leader, follower] {
            let before = counted(kind).await;
            let d = get(node(&c, i), &format!("/discover/modes{query}")).await;
            assert_eq!(d.body["count"], 1);
            // The lease lapses when a heartbeat is late; a read then takes a round instead,
            // and the next one is tried.
            eventually(ELECTION, &format!("a read counted as {kind}"), || async {
                let d = get(node(&c, i), &format!("/discover/modes{query}")).await;
                assert_eq!(d.body["count"], 1);
                (counted(kind).await > before).then_some(())
            })
            .await;
        }
    }
}

#[tokio::test]
async fn a_data_directory_from_before_cluster_mode_keeps_its_instances() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(dir.path().join("waypost.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let instances: redb::TableDefinition<&str, &[u8]> =
                redb::TableDefinition::new("instances");
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            let mut t = txn.open_table(instances).unwrap();
            let instance = json!({
                "id": "10.0.0.1:80", "service": "old", "address": "10.0.0.1:80",
                "host": "10.0.0.1", "port": 80, "tags": ["v1"], "metadata": {}, "weight": 1,
                "status": "up", "ttl_seconds": 30, "vip": "127.100.0.1",
                "registered_at": "2026-11-29T10:00:00.000Z", "revision": 7
            });
            t.insert(
                "old/10.0.0.1:80",
                serde_json::to_vec(&instance).unwrap().as_slice(),
            )
            .unwrap();
            let mut m = txn.open_table(meta).unwrap();
            m.insert("epoch", 0xabc_u64).unwrap();
            m.insert("revision", 7_u64).unwrap();
        }
        txn.commit().unwrap();
    }
    let path = dir.path().to_path_buf();
    let cp = TestControlPlane::start_at(path.clone(), |_| {}).await;
    let found = get(&cp, "/discover/old").await;
    assert_eq!(found.body["count"], 1, "{}", found.body);
    assert_eq!(found.body["instances"][0]["revision"], 7);
    assert_eq!(found.body["vip"], "127.100.0.1");
    assert_eq!(found.index(), 7);
    let health = get(&cp, "/health").await.body;
    assert_eq!(health["epoch"], "0000000000000abc");
    // The history goes on from the old revision, and survives a restart.
    let next = register(&cp, seed("new", 1)).await;
    assert_eq!(next["revision"], 8);
    cp.stop().await;
    let cp = TestControlPlane::start_at(path, |_| {}).await;
    assert_eq!(get(&cp, "/discover/old").await.body["count"], 1);
    assert_eq!(get(&cp, "/discover/new").await.body["count"], 1);
    assert_eq!(get(&cp, "/health").await.body["revision"], 8);
    drop(dir);
}

#[tokio::test]
async fn nodes_talk_https_and_present_their_certificates_to_peers_that_require_them() {
    let pki = waypost_control::testkit::TestPki::new();
    let mtls = |c: &mut waypost_control::Config| {
        c.tls = Some(pki.server_files(true));
        c.cluster.peer_ca = Some(pki.ca.clone());
    };
    let c = TestCluster::start_with("https", 3, mtls).await;
    let leader = c.leader(ELECTION).await;
    let follower = c.other_than(leader);
    let pem = |p: &std::path::Path| std::fs::read(p).unwrap();
    let mut identity = pem(&pki.client.0);
    identity.extend(pem(&pki.client.1));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem(&pki.ca)).unwrap())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap();
    // A write through a follower crosses to the leader over HTTPS with the follower's
    // certificate, and replicates back.
    let a = answer(
        http.post(node(&c, follower).at("/register"))
            .json(&seed("tls", 1))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    for i in 0..3 {
        let d = answer(
            http.get(node(&c, i).at("/discover/tls"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(d.body["count"], 1, "node {i}: {}", d.body);
    }
    assert!(node(&c, leader).url.starts_with("https://"));
}
