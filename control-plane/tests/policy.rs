//! `PUT`, `GET` and `DELETE /services/{service}/policy`: set by an operator, checked, carried
//! by every instance of the service (those registered later too), shown in `/services`, kept
//! across a restart of a durable control plane.

mod common;

use common::*;
use serde_json::json;
use waypost_control::{auth::Role, testkit::tokens};

async fn put(
    cp: &TestControlPlane,
    service: &str,
    body: serde_json::Value,
    token: Option<&str>,
) -> Answer {
    let mut req = client()
        .put(cp.at(&format!("/services/{service}/policy")))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    answer(req.send().await.unwrap()).await
}

#[tokio::test]
async fn a_policy_is_checked_carried_by_every_instance_and_kept() {
    let cp = TestControlPlane::start(|_| {}).await;
    register(&cp, seed("web", 8001)).await;
    let set = put(
        &cp,
        "web",
        json!({"min_healthy_percent": 30, "never_empty": true}),
        None,
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(
        set.body["policy"],
        json!({"min_healthy_percent": 30, "never_empty": true})
    );
    register(&cp, seed("web", 8002)).await;
    let found = get(&cp, "/discover/web").await.body;
    for i in found["instances"].as_array().unwrap() {
        assert_eq!(i["policy"]["never_empty"], true, "{i}");
    }
    assert_eq!(
        get(&cp, "/services").await.body["services"]["web"]["policy"]["min_healthy_percent"],
        30
    );
    let explained = get(&cp, "/discover/web/explain").await.body;
    assert_eq!(explained["policy"]["never_empty"], true, "{explained}");

    // Out of range, a bad name, a wrong type: refused, nothing changed.
    put(&cp, "web", json!({"min_healthy_percent": 101}), None)
        .await
        .assert_problem(400, "invalid_field");
    put(&cp, "Web", json!({}), None)
        .await
        .assert_problem(400, "invalid_service_name");
    put(&cp, "web", json!({"never_empty": "yes"}), None)
        .await
        .assert_problem(422, "invalid_body");
    assert_eq!(
        get(&cp, "/services/web/policy").await.body["policy"]["min_healthy_percent"],
        30
    );

    // Kept across a restart (in the store's log or snapshot, with the services' instances).
    let dir = cp
        .stop()
        .await
        .expect("a durable control plane keeps its directory");
    let cp = TestControlPlane::start_at(dir.path().to_path_buf(), |_| {}).await;
    assert_eq!(
        get(&cp, "/services/web/policy").await.body["policy"]["never_empty"],
        true
    );

    // Removed: no instance carries it any more.
    let removed = answer(
        client()
            .delete(cp.at("/services/web/policy"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert!(removed.body.get("policy").is_none(), "{}", removed.body);
    let found = get(&cp, "/discover/web").await.body;
    assert!(
        found["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i.get("policy").is_none())
    );
    drop(dir);
}

#[tokio::test]
async fn only_an_operator_sets_a_policy() {
    let cp = TestControlPlane::in_memory(|c| {
        c.tokens = tokens(&[
            ("op-1a2b", Role::Operator, &[]),
            ("svc-3c4d", Role::Service, &["*"]),
        ]);
    })
    .await;
    put(&cp, "web", json!({"never_empty": true}), Some("svc-3c4d"))
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        put(&cp, "web", json!({"never_empty": true}), Some("op-1a2b"))
            .await
            .status,
        200
    );
}
