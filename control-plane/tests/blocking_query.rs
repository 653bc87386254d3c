//! Blocking queries: `?index=R&wait=D` returns when the relevant state passes R, or at D.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn discover_blocks_until_its_service_changes() {
    let cp = TestControlPlane::start(|_| {}).await;
    register(&cp, seed("web", 1)).await;
    let first = get(&cp, "/discover/web").await;
    let index = first.index();

    let url = cp.at(&format!("/discover/web?index={index}&wait=20s"));
    let waiting = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    // A change to another service does not release it.
    register(&cp, seed("db", 2)).await;
    // Give the waiter a chance to (wrongly) return, observed without sleeping on a guess:
    // the blocking request must still be pending after the unrelated write was acknowledged.
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "released by an unrelated change");
    register(&cp, seed("web", 3)).await;
    let res = tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap()
        .unwrap();
    let new_index: u64 = res.headers()["x-waypost-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(new_index > index);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["count"], 2);
}

#[tokio::test]
async fn a_held_query_of_one_service_is_woken_only_by_changes_of_it() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("web", 1)).await;
    let index = get(&cp, "/discover/web").await.index();
    let url = cp.at(&format!("/discover/web?index={index}&wait=20s"));
    let waiting = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    eventually(DEADLINE, "the query held", || async {
        (metric(&cp, "waypost_blocking_queries").await == 1).then_some(())
    })
    .await;
    let woken = metric(&cp, "waypost_blocking_wakeups_total").await;
    for port in 2..22 {
        register(&cp, seed("db", port)).await;
    }
    // The fan-out passes changes in order, so once this one releases the query, the twenty
    // before it have been passed too.
    register(&cp, seed("web", 2)).await;
    let res = tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap()
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["count"], 2);
    // One look after the change of `web`; none for the twenty of `db`.
    assert_eq!(
        metric(&cp, "waypost_blocking_wakeups_total").await,
        woken + 1
    );
    assert_eq!(metric(&cp, "waypost_blocking_queries").await, 0);
}

#[tokio::test]
async fn a_removal_releases_the_service_blocking_query() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("web", 1)).await;
    let index = get(&cp, "/discover/web").await.index();
    let url = cp.at(&format!("/discover/web?index={index}&wait=20s"));
    let waiting = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    post(&cp, "/deregister", seed("web", 1)).await;
    let res = tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap()
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["count"], 0);
}

#[tokio::test]
async fn blocking_returns_at_the_wait_limit_with_the_same_index() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("web", 1)).await;
    let index = get(&cp, "/services").await.index();
    let started = Instant::now();
    let a = get(&cp, &format!("/services?index={index}&wait=300ms")).await;
    assert_eq!(a.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "returned before the wait ended"
    );
    assert_eq!(a.index(), index);
    // An index already passed answers at once.
    let a = get(&cp, &format!("/services?index={}&wait=30s", index - 1)).await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn an_index_from_the_future_answers_at_once_with_the_current_index() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("web", 1)).await;
    let index = get(&cp, "/services").await.index();
    // Held for the whole wait, this would outlast the deadline below.
    for path in [
        // The largest index a query may name (the document's int64).
        format!("/services?index={}&wait=10m", i64::MAX),
        format!("/discover/web?index={}&wait=10m", index + 1000),
    ] {
        let a = tokio::time::timeout(DEADLINE, get(&cp, &path))
            .await
            .expect("answered at once, not held");
        assert_eq!(a.status, 200);
        assert_eq!(a.index(), index, "{path}");
    }
}

#[tokio::test]
async fn services_blocks_until_anything_changes() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("web", 1)).await;
    let index = get(&cp, "/services").await.index();
    let url = cp.at(&format!("/services?index={index}&wait=20s"));
    let waiting = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    register(&cp, seed("db", 2)).await;
    let res = tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap()
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["total_services"], 2);
}

#[tokio::test]
async fn max_query_time_caps_any_wait() {
    let cp = TestControlPlane::in_memory(|c| c.max_query_time = Duration::from_millis(300)).await;
    register(&cp, seed("web", 1)).await;
    let index = get(&cp, "/services").await.index();
    let started = Instant::now();
    // Asked to wait ten minutes; the server holds it for its 300 ms cap.
    let a = tokio::time::timeout(
        DEADLINE,
        get(&cp, &format!("/services?index={index}&wait=10m")),
    )
    .await
    .expect("released at max_query_time");
    assert_eq!(a.status, 200);
    assert_eq!(a.index(), index);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "held for the cap"
    );
}

#[tokio::test]
async fn index_zero_answers_at_once_as_in_consul() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("web", 1)).await;
    let index = get(&cp, "/services").await.index();
    // A client without an index yet asks with index 0: it gets the current state and index at
    // once, not after the 30 s it said it would wait.
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for path in [
        "/services?index=0&wait=30s",
        "/discover/web?index=0&wait=30s",
    ] {
        let res = quick
            .get(cp.at(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: not answered within 10 s: {e}"));
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.url().query().unwrap().contains("wait=30s"));
        let got: u64 = res.headers()["x-waypost-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(got, index, "{path}");
    }
}

#[tokio::test]
async fn waits_over_ten_minutes_are_cut_not_refused() {
    // As in Consul: a wait beyond the limit is held for at most the limit (here the server's
    // smaller --max-query-time), not refused.
    let cp = TestControlPlane::in_memory(|c| c.max_query_time = Duration::from_millis(200)).await;
    register(&cp, seed("web", 1)).await;
    let index = get(&cp, "/services").await.index();
    for wait in ["11m", "2h", "99999999999999999999s"] {
        let a = tokio::time::timeout(
            DEADLINE,
            get(&cp, &format!("/services?index={index}&wait={wait}")),
        )
        .await
        .expect("released at max_query_time");
        assert_eq!(a.status, 200, "wait={wait}: {}", a.body);
    }
}
