//! `GET /explain/{service}` on a real sidecar following a real control plane: four instances
//! of `web`, each out of rotation for a different reason or in it, and the document checked
//! against what the registry was told, what DNS answers and what the proxy did.

mod common;

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use common::{DEADLINE, TestSidecar, a_records, ip_set};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::Value;
use tokio::net::TcpListener;
use waypost_client::{
    Client,
    model::{CheckReport, Health, InstanceRef, RegisterRequest},
};
use waypost_control::testkit::{TestControlPlane, eventually};
use waypost_sidecar::proxy::tcp::TcpRoute;

/// An upstream on 127.0.0.1 that answers 200 `ok` to everything.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|_: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// `/explain/{service}`: the status and the JSON body (a problem for errors).
async fn explain(sidecar: &TestSidecar, service: &str) -> (u16, Option<String>, Value) {
    let response = reqwest::get(sidecar.admin(&format!("/explain/{service}")))
        .await
        .expect("/explain answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.expect("a JSON body");
    (status, content_type, body)
}

/// The entry of `list` (a JSON array) whose `id` is `id`.
fn by_id<'v>(list: &'v Value, id: &str) -> &'v Value {
    list.as_array()
        .expect("an array")
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in {list}"))
}

/// The `code`s of an instance's reasons.
fn reason_codes(instance: &Value) -> Vec<&str> {
    instance["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["code"].as_str().expect("a code"))
        .collect()
}

#[tokio::test]
async fn explain_says_why_each_instance_is_in_or_out_of_dns_and_the_proxy() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let backend = upstream().await;
    // Four instances on four loopback addresses, so that each has an A record of its own.
    // `refuses` has the backend's port on 127.0.0.3, where nothing listens: every connect is
    // refused, at once.
    let instances = [
        ("up", backend),
        (
            "drained",
            SocketAddr::from(([127, 0, 0, 2], backend.port())),
        ),
        (
            "refuses",
            SocketAddr::from(([127, 0, 0, 3], backend.port())),
        ),
        ("sick", SocketAddr::from(([127, 0, 0, 4], backend.port()))),
    ];
    for (id, addr) in instances {
        let request = RegisterRequest {
            id: Some(id.to_owned()),
            ttl_seconds: Some(600),
            ..RegisterRequest::new("web", addr.to_string())
        };
        client.register_once(&request).await.unwrap();
    }
    client
        .drain(InstanceRef::by_id("web", "drained"), true)
        .await
        .unwrap();
    let report = CheckReport {
        instance: InstanceRef::by_id("web", "sick"),
        health: Health::Critical,
        output: Some("GET /healthz: 503".to_owned()),
    };
    let last = client.report_check(&report).await.unwrap().revision;

    let sidecar = TestSidecar::start(&cp.url, |c| {
        // One failure ejects, for long enough that the ejection is still on when it is read.
        c.proxy.outlier.failures = 1;
        c.proxy.outlier.base = Duration::from_secs(60);
        c.tcp = vec![TcpRoute {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            service: "web".to_owned(),
        }];
    })
    .await;
    sidecar.caught_up(last).await;

    // Requests through the proxy until it has tried `refuses` and ejected it. A request that
    // lands there first may be retried on `up` or answered 502; either is fine here.
    let http = reqwest::Client::new();
    let proxy = format!("http://{}/", sidecar.http());
    let doc = eventually(DEADLINE, "the proxy to eject `refuses`", || async {
        http.get(&proxy).header("host", "web").send().await.ok()?;
        let (status, _, doc) = explain(&sidecar, "web").await;
        assert_eq!(status, 200, "{doc}");
        let refuses = by_id(&doc["proxy"]["http"]["endpoints"], "refuses");
        (!refuses["ejected"].is_null()).then_some(doc)
    })
    .await;

    // The snapshot: at least the last write, live.
    assert!(
        doc["snapshot"]["revision"].as_u64().unwrap() >= last,
        "{doc}"
    );
    assert_eq!(doc["snapshot"]["stale"], false, "{doc}");
    assert!(doc["snapshot"]["epoch"].is_string(), "{doc}");

    // Every instance, in or out, with its reason.
    let listed = &doc["instances"];
    assert_eq!(listed.as_array().unwrap().len(), 4, "{doc}");
    let up = by_id(listed, "up");
    assert_eq!(up["included"], true, "{up}");
    assert!(reason_codes(up).is_empty(), "{up}");
    let drained = by_id(listed, "drained");
    assert_eq!(drained["included"], false, "{drained}");
    assert_eq!(drained["status"], "draining", "{drained}");
    assert_eq!(reason_codes(drained), ["draining"], "{drained}");
    let sick = by_id(listed, "sick");
    assert_eq!(sick["included"], false, "{sick}");
    assert_eq!(sick["health"], "critical", "{sick}");
    assert_eq!(reason_codes(sick), ["critical"], "{sick}");
    let detail = sick["reasons"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("GET /healthz: 503"), "{sick}");
    // Ejection is the proxy's own business: the registry, and so DNS, still has it.
    let refuses = by_id(listed, "refuses");
    assert_eq!(refuses["included"], true, "{refuses}");

    // DNS: the two instances that take work, in explain and in a real answer alike.
    let want = ip_set(&["127.0.0.1", "127.0.0.3"]);
    let explained: std::collections::BTreeSet<IpAddr> = doc["dns"]["a"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(explained, want, "{doc}");
    assert_eq!(a_records(sidecar.dns(), "web.service.waypost.").await, want);
    assert_eq!(doc["dns"]["name"], "web.service.waypost.", "{doc}");
    assert!(doc["dns"]["vip"].is_null(), "{doc}");
    let srv_ports: Vec<u64> = doc["dns"]["srv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["port"].as_u64().unwrap())
        .collect();
    assert_eq!(srv_ports, [u64::from(backend.port()); 2], "{doc}");

    // The HTTP proxy: `refuses` ejected after one failure, until a time ahead; `up` chosen.
    let balancing = &doc["proxy"]["http"];
    assert_eq!(balancing["outlier_failures"], 1, "{doc}");
    let endpoints = balancing["endpoints"].as_array().unwrap();
    let mut ids: Vec<&str> = endpoints
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["refuses", "up"],
        "only instances that take work: {doc}"
    );
    let ejected = by_id(&balancing["endpoints"], "refuses");
    assert_eq!(ejected["ejections"], 1, "{ejected}");
    assert_eq!(ejected["chosen_from"], false, "{ejected}");
    assert_eq!(
        ejected["addr"],
        format!("127.0.0.3:{}", backend.port()),
        "{ejected}"
    );
    let until = humantime::parse_rfc3339(ejected["ejected"]["until"].as_str().unwrap())
        .expect("an RFC 3339 time");
    assert!(until > SystemTime::now(), "the ejection is over: {ejected}");
    assert!(
        ejected["ejected"]["remaining_ms"].as_u64().unwrap() > 0,
        "{ejected}"
    );
    let chosen = by_id(&balancing["endpoints"], "up");
    assert_eq!(chosen["chosen_from"], true, "{chosen}");
    assert!(chosen["ejected"].is_null(), "{chosen}");
    // One of two usable is not below half: no panic.
    let panic = &balancing["panic"];
    assert_eq!(panic["active"], false, "{panic}");
    assert_eq!(panic["threshold"], 0.5, "{panic}");
    assert_eq!(panic["usable"], 1, "{panic}");
    assert_eq!(panic["endpoints"], 2, "{panic}");
    // The TCP route serves `web` too; its balancer has seen nothing yet.
    let tcp = &doc["proxy"]["tcp"];
    assert_eq!(tcp["endpoints"].as_array().unwrap().len(), 2, "{doc}");
    assert!(
        by_id(&tcp["endpoints"], "refuses")["ejected"].is_null(),
        "{doc}"
    );

    // Drain `up`: the ejected instance is the only endpoint left, so panic is on and the proxy
    // chooses from it after all.
    let drained_up = client
        .drain(InstanceRef::by_id("web", "up"), true)
        .await
        .unwrap()
        .revision;
    sidecar.caught_up(drained_up).await;
    let (_, _, doc) = explain(&sidecar, "web").await;
    assert!(doc["snapshot"]["revision"].as_u64().unwrap() >= drained_up);
    assert_eq!(reason_codes(by_id(&doc["instances"], "up")), ["draining"]);
    let balancing = &doc["proxy"]["http"];
    assert_eq!(balancing["panic"]["active"], true, "{doc}");
    let endpoints = balancing["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{doc}");
    assert_eq!(endpoints[0]["id"], "refuses", "{doc}");
    assert!(!endpoints[0]["ejected"].is_null(), "{doc}");
    assert_eq!(endpoints[0]["chosen_from"], true, "{doc}");

    // Errors: problem+json with a stable code.
    let (status, content_type, problem) = explain(&sidecar, "nosuch").await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(problem["code"], "unknown_service", "{problem}");
    let (status, content_type, problem) = explain(&sidecar, "Not_A_Name").await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(problem["code"], "invalid_service_name", "{problem}");
}

#[tokio::test]
async fn in_vip_mode_explain_shows_the_vip_that_dns_answers_and_the_tcp_proxy() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let backend = upstream().await;
    let request = RegisterRequest {
        id: Some("only".to_owned()),
        ttl_seconds: Some(600),
        ..RegisterRequest::new("db", backend.to_string())
    };
    let registered = client.register_once(&request).await.unwrap();
    let vip = registered
        .instance
        .vip
        .expect("the control plane gives db a VIP");
    let sidecar = TestSidecar::start(&cp.url, |c| c.vip_mode = true).await;
    sidecar.caught_up(registered.revision).await;

    let (status, _, doc) = explain(&sidecar, "db").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["dns"]["vip"], vip.to_string(), "{doc}");
    let a: Vec<&str> = doc["dns"]["a"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(a, [vip.to_string()], "{doc}");
    assert_eq!(
        a_records(sidecar.dns(), "db.service.waypost.").await,
        ip_set(&[&vip.to_string()])
    );
    // The VIP listener's proxy: the instance itself is the endpoint.
    let tcp = &doc["proxy"]["tcp"];
    assert_eq!(
        by_id(&tcp["endpoints"], "only")["addr"],
        backend.to_string(),
        "{doc}"
    );
}
