//! Shutdown is one drain of the sidecar's task tracker: every task it started (listeners,
//! proxied connections, upstream connections, health checks, the subscription) ends once the
//! shutdown token is cancelled, so the drain is over long before its grace period.

mod common;

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use common::{DEADLINE, TestSidecar};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::{TcpListener, TcpStream};
use waypost_client::{
    Client,
    model::{Check, RegisterRequest},
};
use waypost_control::testkit::TestControlPlane;
use waypost_sidecar::proxy::{http::PROTOCOL_KEY, tcp::TcpRoute};

/// An upstream answering 200 over HTTP/1.1 and h2c.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn every_task_ends_at_shutdown_well_within_the_grace_period() {
    // Longer than DEADLINE: a task left running would hold the drain until it.
    let grace = 3 * DEADLINE;
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let (h2c, h1) = (upstream().await, upstream().await);
    let mut request = RegisterRequest::new("h2", h2c.to_string());
    request
        .metadata
        .insert(PROTOCOL_KEY.to_owned(), "h2c".to_owned());
    request.ttl_seconds = Some(600);
    client.register_once(&request).await.unwrap();
    let request = RegisterRequest {
        ttl_seconds: Some(600),
        check: Some(Check {
            interval_seconds: 1,
            timeout_seconds: 1,
            ..Check::http(format!("http://{h1}/"))
        }),
        ..RegisterRequest::new("web", h1.to_string())
    };
    let last = client.register_once(&request).await.unwrap().revision;
    let mut sidecar = TestSidecar::start(&cp.url, |c| {
        c.shutdown_grace = grace;
        c.vip_mode = true;
        c.checks.check_all = true;
        c.tcp = vec![TcpRoute {
            listen: "127.0.0.1:0".parse().unwrap(),
            service: "web".into(),
        }];
    })
    .await;
    sidecar.caught_up(last).await;

    // An upstream connection of each kind in the pool (h2c runs on a task of its own), and a
    // relayed TCP connection left open.
    let http = reqwest::Client::new();
    for host in ["h2", "web"] {
        let response = http
            .get(format!("http://{}/", sidecar.http()))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
    let _relayed = TcpStream::connect(sidecar.running.tcp_addrs[0])
        .await
        .unwrap();

    sidecar.token.cancel();
    tokio::time::timeout(DEADLINE, &mut sidecar.running.join)
        .await
        .expect("every task ends at shutdown, long before the grace period")
        .unwrap();
}
