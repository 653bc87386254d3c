//! Every kind of bad input gets a 4xx problem+json with a stable code and changes nothing.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn check_thresholds_damping_and_tls_settings_are_bounded() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let before = get(&cp, "/health").await.body["revision"].clone();
    let with = |extra: serde_json::Value| {
        let mut check = json!({"http": "https://10.0.0.1:8443/healthz"});
        check
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"service": "web", "address": "10.0.0.1:80", "check": check})
    };
    // Out of range: 400 naming the field.
    for (extra, field) in [
        (
            json!({"failures_before_critical": 0}),
            "check.failures_before_critical",
        ),
        (
            json!({"failures_before_critical": 101}),
            "check.failures_before_critical",
        ),
        (
            json!({"successes_before_passing": 0}),
            "check.successes_before_passing",
        ),
        (
            json!({"successes_before_passing": 101}),
            "check.successes_before_passing",
        ),
        (json!({"flap_changes": 101}), "check.flap_changes"),
        (
            json!({"flap_window_seconds": 0}),
            "check.flap_window_seconds",
        ),
        (
            json!({"flap_window_seconds": 3601}),
            "check.flap_window_seconds",
        ),
    ] {
        let a = post(&cp, "/register", with(extra.clone())).await;
        a.assert_problem(400, "invalid_field");
        let detail = a.body["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{extra}: {detail}");
    }
    // The wrong type: 422, as for every field.
    for extra in [
        json!({"failures_before_critical": "3"}),
        json!({"successes_before_passing": -1}),
        json!({"flap_changes": 2.5}),
        json!({"flap_window_seconds": null}),
        json!({"tls_skip_verify": "yes"}),
    ] {
        post(&cp, "/register", with(extra))
            .await
            .assert_problem(422, "invalid_body");
    }
    assert_eq!(get(&cp, "/health").await.body["revision"], before);

    // The bounds themselves are accepted; left out, each takes its documented default.
    let edge = register(
        &cp,
        with(
            json!({"failures_before_critical": 100, "successes_before_passing": 1,
                    "flap_changes": 0, "flap_window_seconds": 3600, "tls_skip_verify": true}),
        ),
    )
    .await;
    assert_eq!(edge["instance"]["check"]["failures_before_critical"], 100);
    assert_eq!(edge["instance"]["check"]["flap_changes"], 0);
    let plain = register(
        &cp,
        json!({"service": "db", "address": "10.0.0.2:5432", "check": {"tcp": "10.0.0.2:5432"}}),
    )
    .await;
    assert_eq!(
        plain["instance"]["check"],
        json!({"tcp": "10.0.0.2:5432", "interval_seconds": 10, "timeout_seconds": 2,
               "failures_before_critical": 1, "successes_before_passing": 1,
               "flap_changes": 4, "flap_window_seconds": 120, "tls_skip_verify": false})
    );
    // `tls_skip_verify` on a check that is not https:// means nothing, and is accepted.
    let a = post(
        &cp,
        "/register",
        json!({"service": "db", "address": "10.0.0.3:5432",
               "check": {"tcp": "10.0.0.3:5432", "tls_skip_verify": true}}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
}

#[tokio::test]
async fn each_validation_error_has_its_code_and_changes_nothing() {
    let cp = TestControlPlane::start(|_| {}).await;
    register(&cp, seed("web", 8001)).await;
    let before = get(&cp, "/health").await.body["revision"].clone();

    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (
            json!({"service": "Web", "address": "10.0.0.1:80"}),
            400,
            "invalid_service_name",
        ),
        (
            json!({"service": "-web", "address": "10.0.0.1:80"}),
            400,
            "invalid_service_name",
        ),
        (
            json!({"service": "a".repeat(64), "address": "10.0.0.1:80"}),
            400,
            "invalid_service_name",
        ),
        (json!({"service": "web"}), 400, "invalid_field"),
        (
            json!({"service": "web", "address": "10.0.0.1"}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "address": "10.0.0.1:0"}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "address": "http://bad host:80"}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "host": "10.0.0.1"}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "address": "10.0.0.1:80", "id": "has space"}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "address": "10.0.0.1:80", "tags": ["a.b"]}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "address": "10.0.0.1:80", "tags": vec!["t"; 33]}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "address": "10.0.0.1:80", "weight": 0}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "address": "10.0.0.1:80", "ttl_seconds": 0}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "address": "10.0.0.1:80", "metadata": {"bad key": "v"}}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "address": "10.0.0.1:80", "check": {"interval_seconds": 5}}),
            400,
            "invalid_field",
        ),
        (
            json!({"service": "web", "address": "10.0.0.1:80", "check": {"http": "ftp://x", "interval_seconds": 5}}),
            400,
            "invalid_field",
        ),
        (json!({"address": "10.0.0.1:80"}), 422, "invalid_body"),
        (
            json!({"service": 7, "address": "10.0.0.1:80"}),
            422,
            "invalid_body",
        ),
        (
            json!({"service": "web", "port": 70000, "host": "h"}),
            422,
            "invalid_body",
        ),
        (
            json!({"service": "web", "address": "10.0.0.1:80", "status": "sleeping"}),
            422,
            "invalid_body",
        ),
        (json!([1, 2]), 422, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let a = post(&cp, "/register", body.clone()).await;
        assert_eq!(a.status.as_u16(), status, "{body} -> {}", a.body);
        a.assert_problem(status, code);
    }

    // Not JSON, no content type, too large.
    post_raw(
        &cp,
        "/register",
        "application/json",
        b"{\"service\": ".to_vec(),
    )
    .await
    .assert_problem(400, "invalid_json");
    post_raw(&cp, "/register", "text/plain", b"{}".to_vec())
        .await
        .assert_problem(415, "unsupported_media_type");
    let huge = format!(
        "{{\"service\":\"web\",\"address\":\"10.0.0.1:80\",\"pad\":\"{}\"}}",
        "x".repeat(70_000)
    );
    post_raw(&cp, "/register", "application/json", huge.into_bytes())
        .await
        .assert_problem(413, "body_too_large");

    // Identity forms of heartbeat / deregister / drain.
    for path in ["/heartbeat", "/deregister", "/drain"] {
        post(&cp, path, json!({"service": "web"}))
            .await
            .assert_problem(400, "invalid_field");
        post(&cp, path, json!({"service": "WEB", "id": "x"}))
            .await
            .assert_problem(400, "invalid_service_name");
        post(&cp, path, json!({"id": 5}))
            .await
            .assert_problem(422, "invalid_body");
    }
    post(
        &cp,
        "/heartbeat",
        json!({"instances": vec![json!({"service": "web", "id": "x"}); 1001]}),
    )
    .await
    .assert_problem(400, "invalid_field");

    // Queries.
    for q in [
        "/discover/Web",
        "/discover/web?tag=a.b",
        "/discover/web?healthy=maybe",
        "/discover/web?index=x",
        "/discover/web?wait=forever",
        "/discover/web?wait=5min",
        "/discover/web?wait=",
        "/discover/web?tag=",
        "/discover/web?meta=zone",
        "/discover/web?meta=bad%20key:a",
        "/discover/web?meta.bad%20key=a",
        "/discover/web?index=9223372036854775808",
        "/discover/web?index=-1",
        "/services?index=9223372036854775808",
        "/watch?since=9223372036854775808",
        "/watch?service=",
        "/watch?epoch=",
        "/watch?epoch=00000000000000001",
        "/discover/web?colour=red",
        "/services?x=1",
        "/watch?since=x",
        "/watch?service=A_B",
    ] {
        let a = get(&cp, q).await;
        let code = if q.starts_with("/discover/Web") || q.starts_with("/discover/%") {
            "invalid_service_name"
        } else {
            "invalid_query"
        };
        a.assert_problem(400, code);
    }
    let a = client()
        .get(cp.at("/watch"))
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 400);

    // Routes and methods.
    get(&cp, "/nowhere")
        .await
        .assert_problem(404, "route_not_found");
    get(&cp, "/register")
        .await
        .assert_problem(405, "method_not_allowed");
    post(&cp, "/services", json!({}))
        .await
        .assert_problem(405, "method_not_allowed");

    // Nothing above changed state.
    assert_eq!(get(&cp, "/health").await.body["revision"], before);
    assert_eq!(ids(&cp, "web", "").await, ["127.0.0.1:8001"]);
}

#[tokio::test]
async fn the_instance_limit_is_a_clear_503() {
    let cp = TestControlPlane::in_memory(|c| c.max_instances = 2).await;
    register(&cp, seed("web", 1)).await;
    register(&cp, seed("web", 2)).await;
    post(&cp, "/register", seed("web", 3))
        .await
        .assert_problem(503, "registry_full");
    // Updating an existing one still works.
    let mut again = seed("web", 2);
    again["weight"] = json!(3);
    assert_eq!(post(&cp, "/register", again).await.status, 200);
}

/// Issue 12: limits on the request head that are ours to set answer with a problem body
/// (they used to be the HTTP library's bare statuses); past the library's own limits its
/// status stays, as the README's error table says.
#[tokio::test]
async fn overlong_targets_and_headers_get_problems() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let long_tag = "a".repeat(waypost_model::limits::MAX_URI_BYTES);
    let res = client()
        .get(cp.at(&format!("/discover/web?tag={long_tag}")))
        .send()
        .await
        .unwrap();
    let refused = answer(res).await;
    refused.assert_problem(414, "uri_too_long");
    // Refused before authentication: no revision either.
    assert!(!refused.headers.contains_key("x-waypost-index"));

    let mut many = reqwest::header::HeaderMap::new();
    for i in 0..=waypost_model::limits::MAX_HEADERS {
        many.insert(
            reqwest::header::HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
            reqwest::header::HeaderValue::from_static("1"),
        );
    }
    let res = client()
        .get(cp.at("/services"))
        .headers(many)
        .send()
        .await
        .unwrap();
    answer(res).await.assert_problem(431, "headers_too_large");

    let big = "b".repeat(waypost_model::limits::MAX_HEADER_BYTES);
    let res = client()
        .get(cp.at("/services"))
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    answer(res).await.assert_problem(431, "headers_too_large");

    // Beyond the library's limits (here, a head over 64 KiB) it answers by itself.
    let huge = "c".repeat(70 * 1024);
    let res = client()
        .get(cp.at("/services"))
        .header("x-huge", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);
    // And the server keeps serving.
    assert_eq!(get(&cp, "/services").await.status, 200);
}
