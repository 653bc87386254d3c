//! `waypost dev` as a real process: register with HTTP, then the name answers over DNS.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::UdpSocket,
    process::Command,
};

const DEADLINE: Duration = Duration::from_secs(15);

async fn a_records(dns: SocketAddr, name: &str) -> Vec<String> {
    let mut query = Message::new(7, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&query.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .expect("a DNS answer")
        .unwrap();
    Message::from_vec(&buf[..n])
        .unwrap()
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn waypost_dev_brings_up_a_control_plane_and_a_sidecar() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_waypost"))
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--dns-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the banner line")
        .unwrap()
        .unwrap();
    // "waypost dev: control plane http://A, DNS B (udp+tcp), sidecar admin http://C"
    let words: Vec<&str> = banner.split_whitespace().collect();
    let url = words[4].trim_end_matches(',');
    let dns: SocketAddr = words[6].parse().unwrap();

    let registered = reqwest::Client::new()
        .post(format!("{url}/register"))
        .json(&serde_json_body())
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);

    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if a_records(dns, "web.service.waypost.").await == vec!["127.0.0.1".to_owned()] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "DNS never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

fn serde_json_body() -> std::collections::HashMap<&'static str, &'static str> {
    std::collections::HashMap::from([("service", "web"), ("address", "127.0.0.1:8080")])
}
