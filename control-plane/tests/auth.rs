//! Authorization with bearer tokens: 401 without a configured token, 403 outside a token's
//! role or services, nothing changed by a refused request; the binary refuses to serve a
//! non-loopback address without tokens; `hash-token` prints the digest the config takes.

mod common;

use std::io::Write;

use common::*;
use serde_json::{Value, json};
use waypost_control::{
    auth::{Role, hash_token},
    testkit::tokens,
};

const OPERATOR: &str = "op-3f9c2a";
const READER: &str = "read-77b1e0";
const PAYMENTS: &str = "svc-payments-d41c";

async fn with_tokens() -> TestControlPlane {
    TestControlPlane::in_memory(|c| {
        c.tokens = tokens(&[
            (OPERATOR, Role::Operator, &[]),
            (READER, Role::Read, &[]),
            (PAYMENTS, Role::Service, &["payments", "billing-*"]),
        ]);
    })
    .await
}

async fn send(
    cp: &TestControlPlane,
    bearer: Option<&str>,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = match body {
        Some(b) => client().post(cp.at(path)).json(&b),
        None => client().get(cp.at(path)),
    };
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

/// Asserts a problem answer with `status` and `code`.
fn refused(answer: &(u16, Value, reqwest::header::HeaderMap), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["code"], code, "{}", answer.1);
    assert_eq!(answer.2["content-type"], "application/problem+json");
}

/// Ids in `/discover/{service}`, read with the operator token.
async fn ids_of(cp: &TestControlPlane, service: &str) -> Vec<String> {
    let (status, body, _) = send(cp, Some(OPERATOR), &format!("/discover/{service}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn tokens_decide_who_may_do_what_and_refusals_change_nothing() {
    let cp = with_tokens().await;
    // Probes and the API description stay open.
    for path in ["/health", "/ready", "/openapi.json"] {
        assert_eq!(send(&cp, None, path, None).await.0, 200, "{path}");
    }
    // The operator may do anything.
    for body in [seed("payments", 1), seed("web", 1), seed("billing-eu", 1)] {
        let (status, answer, _) = send(&cp, Some(OPERATOR), "/register", Some(body)).await;
        assert_eq!(status, 201, "{answer}");
    }
    let (_, _, headers) = send(&cp, Some(READER), "/services", None).await;
    let index_before = headers["x-waypost-index"].to_str().unwrap().to_owned();

    // No token, or one that is not configured: 401 with a challenge, for reads and writes.
    for bearer in [None, Some("nope"), Some(hash_token(OPERATOR).as_str())] {
        let answer = send(&cp, bearer, "/deregister", Some(seed("payments", 1))).await;
        refused(&answer, 401, "unauthorized");
        assert_eq!(answer.2["www-authenticate"], "Bearer realm=\"waypost\"");
        refused(
            &send(&cp, bearer, "/discover/payments", None).await,
            401,
            "unauthorized",
        );
        refused(
            &send(&cp, bearer, "/watch", None).await,
            401,
            "unauthorized",
        );
        refused(
            &send(&cp, bearer, "/sd/prometheus", None).await,
            401,
            "unauthorized",
        );
    }
    // A read token reads but does not write.
    assert_eq!(
        send(&cp, Some(READER), "/discover/payments", None).await.0,
        200
    );
    assert_eq!(send(&cp, Some(READER), "/metrics", None).await.0, 200);
    // Prometheus's discovery is a read like /discover.
    let (status, targets, _) = send(&cp, Some(READER), "/sd/prometheus", None).await;
    assert_eq!(status, 200, "{targets}");
    assert_eq!(targets.as_array().map(Vec::len), Some(3), "{targets}");
    refused(
        &send(&cp, Some(READER), "/register", Some(seed("payments", 2))).await,
        403,
        "forbidden",
    );
    refused(
        &send(&cp, Some(READER), "/deregister", Some(seed("payments", 1))).await,
        403,
        "forbidden",
    );
    // A service token writes its own services (names and prefixes), reads everything, and
    // may not touch other services; a batch with one foreign entry is refused whole.
    let service = Some(PAYMENTS);
    refused(
        &send(&cp, service, "/deregister", Some(seed("web", 1))).await,
        403,
        "forbidden",
    );
    refused(
        &send(&cp, service, "/register", Some(seed("web", 2))).await,
        403,
        "forbidden",
    );
    refused(
        &send(&cp, service, "/register", Some(seed("billing", 2))).await,
        403,
        "forbidden",
    );
    let drain = json!({"service": "web", "address": "http://127.0.0.1:1", "draining": true});
    refused(
        &send(&cp, service, "/drain", Some(drain)).await,
        403,
        "forbidden",
    );
    let check = json!({"service": "web", "address": "http://127.0.0.1:1", "health": "critical"});
    refused(
        &send(&cp, service, "/check", Some(check)).await,
        403,
        "forbidden",
    );
    let batch = json!({"instances": [
        {"service": "payments", "address": "http://127.0.0.1:1"},
        {"service": "web", "address": "http://127.0.0.1:1"},
    ]});
    refused(
        &send(&cp, service, "/heartbeat", Some(batch)).await,
        403,
        "forbidden",
    );

    // Nothing above changed anything: same revision, same instances, no heartbeat counted.
    let (_, _, headers) = send(&cp, Some(READER), "/services", None).await;
    assert_eq!(headers["x-waypost-index"].to_str().unwrap(), index_before);
    assert_eq!(ids_of(&cp, "web").await.len(), 1);
    assert_eq!(ids_of(&cp, "payments").await.len(), 1);
    let (_, metrics, _) = send(&cp, Some(READER), "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        !metrics.contains("waypost_heartbeats_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("waypost_unauthorized_total 12"),
        "{metrics}"
    );
    assert!(metrics.contains("waypost_forbidden_total 8"), "{metrics}");

    // What the service token may do, it does.
    assert_eq!(
        send(&cp, service, "/register", Some(seed("payments", 2)))
            .await
            .0,
        201
    );
    assert_eq!(
        send(&cp, service, "/register", Some(seed("billing-us", 1)))
            .await
            .0,
        201
    );
    let batch = json!({"instances": [
        {"service": "payments", "address": "http://127.0.0.1:1"},
        {"service": "billing-eu", "address": "http://127.0.0.1:1"},
    ]});
    let (status, answer, _) = send(&cp, service, "/heartbeat", Some(batch)).await;
    assert_eq!(
        (status, answer["renewed"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    let (_, metrics, _) = send(&cp, Some(READER), "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("waypost_heartbeats_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    assert_eq!(
        send(&cp, service, "/deregister", Some(seed("payments", 1)))
            .await
            .0,
        200
    );
    assert_eq!(send(&cp, service, "/discover/web", None).await.0, 200);
    assert_eq!(
        ids_of(&cp, "payments").await,
        vec!["127.0.0.1:2".to_owned()]
    );
}

#[test]
fn the_binary_refuses_a_non_loopback_address_without_tokens() {
    // Refused while loading the config, before anything is bound.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waypost-control"))
        .args(["--listen", "0.0.0.0:0", "--in-memory"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without auth tokens") && stderr.contains("--insecure"),
        "{stderr}"
    );
}

#[tokio::test]
async fn start_refuses_a_non_loopback_address_without_tokens_whoever_built_the_config() {
    // As `waypost dev` does: a configuration built in code, not loaded.
    let mut config = waypost_control::Config::for_test(None);
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = waypost_control::start(config, Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--insecure"), "{err}");
}

#[test]
fn hash_token_prints_the_digest_from_standard_input() {
    // Also when the rest of the configuration would be refused: the tokens are not there yet.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_waypost-control"))
        .args(["--listen", "0.0.0.0:0", "hash-token"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b" abc \n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[tokio::test]
async fn a_sidecar_token_reports_and_checks_but_cannot_change_what_passes() {
    const SIDECAR: &str = "sidecar-5e0a71";
    let cp = TestControlPlane::in_memory(|c| {
        c.tokens = tokens(&[
            (OPERATOR, Role::Operator, &[]),
            (READER, Role::Read, &[]),
            (SIDECAR, Role::Sidecar, &[]),
        ]);
    })
    .await;
    let report = json!({"version": "1.0.0", "revision": 0, "dns": ["127.0.0.1:8600"]});
    let put = |bearer: &'static str| {
        client()
            .put(cp.at("/nodes/node-1"))
            .bearer_auth(bearer)
            .json(&report)
            .send()
    };
    // It reports itself; a read token may not.
    let res = put(SIDECAR).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = put(READER).await.unwrap();
    assert_eq!(res.status(), 403);
    let (status, body, _) = send(&cp, Some(READER), "/nodes", None).await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(1)), "{body}");

    // It may not register, drain or deregister what passes...
    let web = json!({"service": "web", "address": "127.0.0.1:8001"});
    refused(
        &send(&cp, Some(SIDECAR), "/register", Some(web.clone())).await,
        403,
        "forbidden",
    );
    assert_eq!(
        send(&cp, Some(OPERATOR), "/register", Some(web.clone()))
            .await
            .0,
        201
    );
    let drain = json!({"service": "web", "address": "127.0.0.1:8001", "draining": true});
    refused(
        &send(&cp, Some(SIDECAR), "/drain", Some(drain)).await,
        403,
        "forbidden",
    );
    refused(
        &send(&cp, Some(SIDECAR), "/deregister", Some(web.clone())).await,
        403,
        "forbidden",
    );
    assert_eq!(ids_of(&cp, "web").await, ["127.0.0.1:8001"]);

    // ...but reports checks of any service, and removes an instance its check failed.
    let critical = json!({"service": "web", "address": "127.0.0.1:8001", "health": "critical"});
    assert_eq!(
        send(&cp, Some(SIDECAR), "/check", Some(critical)).await.0,
        200
    );
    assert_eq!(
        send(&cp, Some(SIDECAR), "/deregister", Some(web)).await.0,
        200
    );
    let (status, body, _) = send(&cp, Some(OPERATOR), "/discover/web?healthy=false", None).await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(0)), "{body}");
    // Explain says who removed it: the token's name (the test kit names it by role).
    let (status, body, _) = send(&cp, Some(READER), "/discover/web/explain", None).await;
    assert_eq!(status, 200, "{body}");
    let reason = &body["instances"][0]["reasons"][0];
    let said = (reason["code"].as_str(), reason["by"].as_str());
    assert_eq!(said, (Some("deregistered"), Some("sidecar-2")), "{body}");
}

/// The dashboard's files are public like `/docs` (the page asks for a token for its API
/// calls), served with a policy that allows only themselves; an unknown file is a problem.
#[tokio::test]
async fn the_dashboard_files_are_public_and_locked_down() {
    let cp = with_tokens().await;
    for (path, kind, needle) in [
        ("/ui/", "text/html", "/ui/app.js"),
        ("/ui/app.js", "text/javascript", "/watch"),
        ("/ui/app.css", "text/css", "prefers-color-scheme"),
    ] {
        let (status, body, headers) = send(&cp, None, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let content_type = headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(body.as_str().unwrap().contains(needle), "{path}");
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(
            !body.as_str().unwrap().contains("https://"),
            "{path} links outside"
        );
    }
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bare = no_redirects.get(cp.at("/ui")).send().await.unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/ui/");
    refused(
        &send(&cp, None, "/ui/secrets.txt", None).await,
        404,
        "route_not_found",
    );
    // The API the page calls still needs a token.
    refused(&send(&cp, None, "/watch", None).await, 401, "unauthorized");
}
