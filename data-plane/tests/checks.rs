//! Active health checks: a real upstream whose /healthz the test breaks and mends, a real
//! control plane, a real sidecar told to check everything; DNS, proxy and discovery follow.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{TestSidecar, a_records};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use waypost_client::{
    Client, Filter,
    model::{Check, Health, RegisterRequest},
};
use waypost_control::testkit::{TestControlPlane, eventually};

/// An upstream answering 200 on every path, except /healthz while `sick`.
async fn upstream(sick: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sick = sick.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let failing = req.uri().path() == "/healthz" && sick.load(Ordering::Relaxed);
                async move {
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    if failing {
                        *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok::<_, Infallible>(response)
                }
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

async fn a_count(dns: SocketAddr, name: &str) -> usize {
    a_records(dns, name).await.len()
}

#[tokio::test]
async fn a_failing_check_takes_the_instance_out_of_dns_and_the_proxy_and_back() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let sick = Arc::new(AtomicBool::new(false));
    let addr = upstream(sick.clone()).await;
    let request = RegisterRequest {
        check: Some(Check {
            interval_seconds: 1,
            timeout_seconds: 1,
            ..Check::http(format!("http://{addr}/healthz"))
        }),
        ttl_seconds: Some(600),
        ..RegisterRequest::new("web", addr.to_string())
    };
    client.register_once(&request).await.unwrap();
    let sidecar = TestSidecar::start(&cp.url, |c| {
        c.checks.check_all = true;
        c.checks.deregister_critical_after = Duration::from_secs(3);
    })
    .await;
    let dns = sidecar.dns();
    let name = "web.service.waypost.";
    let http = reqwest::Client::new();
    let proxy_status = || async {
        http.get(format!("http://{}/", sidecar.http()))
            .header("host", "web")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // One check interval (1 s) plus slack for scheduling on a busy machine.
    let within_an_interval = Duration::from_secs(3);

    eventually(Duration::from_secs(10), "DNS to answer", || async {
        (a_count(dns, name).await == 1).then_some(())
    })
    .await;
    assert_eq!(proxy_status().await, 200);

    sick.store(true, Ordering::Relaxed);
    eventually(within_an_interval, "the instance to leave DNS", || async {
        (a_count(dns, name).await == 0).then_some(())
    })
    .await;
    assert_eq!(proxy_status().await, 503);
    let all = client
        .discover("web", &Filter::default().include_draining())
        .await
        .unwrap();
    let instance = &all.instances[0].instance;
    assert_eq!(instance.health, Health::Critical);
    assert!(
        instance
            .health_output
            .as_deref()
            .is_some_and(|o| o.contains("503")),
        "{instance:?}"
    );
    assert_eq!(
        client
            .discover("web", &Filter::default())
            .await
            .unwrap()
            .count,
        0
    );

    sick.store(false, Ordering::Relaxed);
    eventually(within_an_interval, "the instance to come back", || async {
        (a_count(dns, name).await == 1).then_some(())
    })
    .await;
    assert_eq!(proxy_status().await, 200);

    // Critical for longer than deregister_critical_after (3 s): deregistered.
    sick.store(true, Ordering::Relaxed);
    eventually(
        Duration::from_secs(10),
        "the critical instance to be deregistered",
        || async {
            let all = client
                .discover("web", &Filter::default().include_draining())
                .await
                .unwrap();
            (all.count == 0).then_some(())
        },
    )
    .await;
    sidecar.stop().await;
}
