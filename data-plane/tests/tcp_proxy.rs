//! The TCP proxy on an explicit route, with real upstreams on 127.0.0.1.

mod common;

use std::net::SocketAddr;

use common::{DEADLINE, TestSidecar, a_records};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use waypost_client::{Client, model::RegisterRequest};
use waypost_control::testkit::TestControlPlane;
use waypost_sidecar::proxy::tcp::TcpRoute;

/// An echo server that answers only after the client has finished sending (it reads to EOF,
/// then writes everything back prefixed with its name, then closes): it works only if the proxy
/// passes the half-close through.
async fn echo_after_eof(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                if stream.read_to_end(&mut received).await.is_ok() {
                    let mut answer = format!("{name}:").into_bytes();
                    answer.extend(received);
                    let _ = stream.write_all(&answer).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_routes_relay_with_half_close_and_skip_dead_instances() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let live = echo_after_eof("live").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut last = 0;
    for addr in [live, dead] {
        last = client
            .register_once(&RegisterRequest::new("db", addr.to_string()))
            .await
            .unwrap()
            .revision;
    }
    let sidecar = TestSidecar::start(&cp.url, |c| {
        c.tcp = vec![TcpRoute {
            listen: "127.0.0.1:0".parse().unwrap(),
            service: "db".into(),
        }];
    })
    .await;
    sidecar.caught_up(last).await;
    let route = sidecar.running.tcp_addrs[0];

    // Every connection reaches the live instance (a refused connect tries the other), and the
    // answer arrives only because our half-close reached the upstream.
    for i in 0..20 {
        let mut stream = TcpStream::connect(route).await.unwrap();
        let payload = format!("ping {i} ").repeat(1000);
        stream.write_all(payload.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
            .await
            .expect("the upstream answers after EOF")
            .unwrap();
        assert_eq!(answer, format!("live:{payload}"));
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn vip_mode_answers_the_vip_and_relays_connections_to_it() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let upstream = echo_after_eof("db").await;
    let registered = client
        .register_once(&RegisterRequest::new("db", upstream.to_string()))
        .await
        .unwrap();
    let vip = registered
        .instance
        .vip
        .expect("the control plane gives a VIP");
    let sidecar = TestSidecar::start(&cp.url, |c| c.vip_mode = true).await;
    sidecar.caught_up(registered.revision).await;

    // DNS answers the VIP for the service's name.
    let ips = a_records(sidecar.dns(), "db.service.waypost.").await;
    assert_eq!(
        ips.into_iter().collect::<Vec<_>>(),
        [std::net::IpAddr::V4(vip)]
    );

    // A program that connects to VIP:port reaches the instance (the listener opens once the
    // snapshot is seen, so wait for it).
    let target = SocketAddr::new(vip.into(), upstream.port());
    let mut stream = waypost_control::testkit::eventually(DEADLINE, "the VIP listener", || async {
        TcpStream::connect(target).await.ok()
    })
    .await;
    stream.write_all(b"hello vip").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "db:hello vip");
    sidecar.stop().await;
}
