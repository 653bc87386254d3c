//! `GET /discover/{service}/explain`: every instance with whether `/discover` with the same
//! parameters returns it, and why not: draining, critical (since when, with the check's
//! output), a tag or metadata the query lacks; and the instances that expired or were
//! deregistered lately, with when and by whom.

mod common;

use common::*;
use serde_json::{Value, json};
use waypost_control::testkit::eventually;

/// The explained instance with `id`.
fn find<'a>(answer: &'a Value, id: &str) -> &'a Value {
    answer["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"]["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {answer}"))
}

/// The codes of its reasons that keep it out, and those that do not.
fn codes(i: &Value) -> (Vec<&str>, Vec<&str>) {
    let reasons = i["reasons"].as_array().unwrap();
    let of = |excludes: bool| {
        reasons
            .iter()
            .filter(|r| r["excludes"] == excludes)
            .map(|r| r["code"].as_str().unwrap())
            .collect()
    };
    (of(true), of(false))
}

#[tokio::test]
async fn explain_says_why_each_instance_is_in_or_out() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let reg = |id: &str, port: u16, tags: Value, meta: Value, ttl: u32| {
        json!({"service": "web", "id": id, "address": format!("127.0.0.1:{port}"),
               "tags": tags, "metadata": meta, "ttl_seconds": ttl})
    };
    register(
        &cp,
        reg("ok", 8001, json!(["v2"]), json!({"zone": "a"}), 600),
    )
    .await;
    register(
        &cp,
        reg("drained", 8002, json!(["v2"]), json!({"zone": "a"}), 600),
    )
    .await;
    register(
        &cp,
        reg("sick", 8003, json!(["v2"]), json!({"zone": "a"}), 600),
    )
    .await;
    register(
        &cp,
        reg("old", 8004, json!(["v1"]), json!({"zone": "b"}), 600),
    )
    .await;
    register(&cp, reg("gone", 8005, json!(["v2"]), json!({}), 600)).await;
    register(&cp, reg("short", 8006, json!(["v2"]), json!({}), 1)).await;
    let drained = post(&cp, "/drain", json!({"service": "web", "id": "drained"})).await;
    assert_eq!(drained.status, 200, "{}", drained.body);
    let sick = json!({"service": "web", "id": "sick", "health": "critical", "output": "GET /healthz: 503"});
    assert_eq!(post(&cp, "/check", sick).await.status, 200);
    assert_eq!(
        post(&cp, "/deregister", json!({"service": "web", "id": "gone"}))
            .await
            .status,
        200
    );
    // `short` expires (no heartbeats, a TTL of 1 s).
    eventually(
        std::time::Duration::from_secs(10),
        "short expired",
        || async { (!ids(&cp, "web", "").await.contains(&"short".to_owned())).then_some(()) },
    )
    .await;

    let query = "tag=v2&meta=zone:a";
    let answer = get(&cp, &format!("/discover/web/explain?{query}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = &answer.body;
    // Exactly what /discover returns is included.
    assert_eq!(ids(&cp, "web", &format!("?{query}")).await, ["ok"]);
    assert_eq!(body["included"], 1);
    assert_eq!(find(body, "ok")["included"], true);
    assert_eq!(codes(find(body, "ok")), (vec![], vec![]));
    // What is left of the TTL of 600 s: some, and never more than the TTL.
    let left = find(body, "ok")["expires_in_ms"].as_u64().unwrap();
    assert!(left > 0 && left <= 600_000, "{left}");
    assert!(find(body, "gone").get("expires_in_ms").is_none());

    let d = find(body, "drained");
    assert_eq!(
        (d["included"].as_bool(), codes(d).0),
        (Some(false), vec!["draining"])
    );
    assert!(d["reasons"][0]["since"].is_string(), "{d}");
    assert!(d["instance"]["status_since"].is_string(), "{d}");

    let s = find(body, "sick");
    assert_eq!(codes(s).0, ["critical"]);
    assert!(
        s["reasons"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("GET /healthz: 503")
    );
    assert!(s["reasons"][0]["since"].is_string(), "{s}");

    assert_eq!(
        codes(find(body, "old")).0,
        ["tag_mismatch", "metadata_mismatch"]
    );

    let g = find(body, "gone");
    assert_eq!(
        (g["registered"].as_bool(), codes(g).0),
        (Some(false), vec!["deregistered"])
    );
    assert!(g["reasons"][0]["since"].is_string(), "{g}");
    let e = find(body, "short");
    assert_eq!(
        (e["registered"].as_bool(), codes(e).0),
        (Some(false), vec!["expired"])
    );

    // With healthy=false, draining and critical ones are in, the reasons kept as notes.
    let all = get(&cp, "/discover/web/explain?healthy=false").await.body;
    assert_eq!(find(&all, "drained")["included"], true);
    assert_eq!(codes(find(&all, "sick")), (vec![], vec!["critical"]));
    assert_eq!(all["included"], 4);

    // Bad input as /discover has it; an unknown service has nothing to explain.
    get(&cp, "/discover/Web/explain")
        .await
        .assert_problem(400, "invalid_service_name");
    get(&cp, "/discover/web/explain?colour=red")
        .await
        .assert_problem(400, "invalid_query");
    let none = get(&cp, "/discover/nobody/explain").await;
    assert_eq!(
        (
            none.status.as_u16(),
            none.body["instances"].as_array().map(Vec::len)
        ),
        (200, Some(0))
    );
}
