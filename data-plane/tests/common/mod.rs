//! The sidecar's test kit, shared by every test file of this crate (`mod common;`): a sidecar
//! started in-process on 127.0.0.1:0 against a real control plane, read through its admin
//! endpoints, and DNS questions asked over UDP and TCP with hickory's message types.
//!
//! Each test file uses part of it; the rest is dead code for that file's binary.
#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{Name, RData, Record, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};
use tokio_util::sync::CancellationToken;
use waypost_control::testkit::eventually;
use waypost_sidecar::{Config, Running};

/// For a sidecar to catch up, a change to arrive, a listener to open, a shutdown to finish.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// How long one DNS answer may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A sidecar started for a test; shuts down when dropped (without waiting).
pub(crate) struct TestSidecar {
    /// What `waypost_sidecar::start` returned.
    pub(crate) running: Running,
    /// Cancels to shut down.
    pub(crate) token: CancellationToken,
}

impl Drop for TestSidecar {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl TestSidecar {
    /// A sidecar following `control`, without a data directory, with `tweak` applied to
    /// [`Config::for_test`].
    pub(crate) async fn start(control: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_at(control, None, tweak).await
    }

    /// As [`TestSidecar::start`], saving its snapshot in `data_dir`.
    pub(crate) async fn start_at(
        control: &str,
        data_dir: Option<&Path>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::for_test(control, data_dir.map(Path::to_path_buf));
        tweak(&mut config);
        let token = CancellationToken::new();
        let running = waypost_sidecar::start(config, token.clone())
            .await
            .expect("start the sidecar");
        Self { running, token }
    }

    /// The DNS address (UDP and TCP).
    pub(crate) fn dns(&self) -> SocketAddr {
        self.running.dns_addr
    }

    /// The HTTP proxy's address.
    pub(crate) fn http(&self) -> SocketAddr {
        self.running.http_addr
    }

    /// The URL of an admin endpoint.
    pub(crate) fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.admin_addr)
    }

    /// Waits until the sidecar serves `revision` (or later).
    pub(crate) async fn caught_up(&self, revision: u64) {
        tokio::time::timeout(
            DEADLINE,
            self.running.snapshots.wait_for(|s| s.revision >= revision),
        )
        .await
        .expect("the sidecar catches up");
    }

    /// The `/health` document.
    pub(crate) async fn health(&self) -> serde_json::Value {
        reqwest::get(self.admin("/health"))
            .await
            .expect("/health answers")
            .json()
            .await
            .expect("a JSON health document")
    }

    /// The Prometheus text of `/metrics`.
    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(self.admin("/metrics"))
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("the metrics text")
    }

    /// The value of the metric line that starts with `series` (name and labels), 0 when absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().expect("a number"))
    }

    /// Shuts down and waits (up to [`DEADLINE`]) until the sidecar has stopped.
    pub(crate) async fn stop(mut self) {
        self.token.cancel();
        let _ = tokio::time::timeout(DEADLINE, &mut self.running.join).await;
    }
}

/// A DNS query for `name` and `rtype` in wire form, with EDNS and its payload size when given.
pub(crate) fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Sends `bytes` to `server` over UDP; the answer, or `None` without one within 2 s.
pub(crate) async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Message> {
    let answer = udp_bytes(server, bytes).await?;
    Some(Message::from_vec(&answer).expect("a well-formed answer"))
}

/// [`udp_raw`]'s answer as the bytes received.
pub(crate) async fn udp_bytes(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(ANSWER_WITHIN, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    buf.truncate(n);
    Some(buf)
}

/// Asks `server` over UDP.
pub(crate) async fn udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    udp_raw(server, &query(name, rtype, None))
        .await
        .expect("an answer within 2 s")
}

/// Asks `server` over UDP with EDNS, offering `size` bytes for the answer.
pub(crate) async fn udp_edns(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    size: u16,
) -> Message {
    udp_raw(server, &query(name, rtype, Some(size)))
        .await
        .expect("an answer within 2 s")
}

/// Asks `server` over a new TCP connection.
pub(crate) async fn tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    tcp_exchange(&mut stream, name, rtype).await
}

/// One query and its answer on an open DNS-over-TCP connection.
pub(crate) async fn tcp_exchange(stream: &mut TcpStream, name: &str, rtype: RecordType) -> Message {
    let query = query(name, rtype, None);
    stream
        .write_all(&(query.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&query).await.unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await.unwrap();
    Message::from_vec(&answer).unwrap()
}

/// Sends `bytes` to `server` on a new DNS-over-TCP connection; the answer.
pub(crate) async fn tcp_raw(server: SocketAddr, bytes: &[u8]) -> Message {
    Message::from_vec(&tcp_bytes(server, bytes).await).unwrap()
}

/// [`tcp_raw`]'s answer as the bytes received (without the length prefix).
pub(crate) async fn tcp_bytes(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await.unwrap();
    answer
}

/// The addresses of the A and AAAA records among `records`.
pub(crate) fn ips(records: &[Record]) -> BTreeSet<IpAddr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// `list` parsed as a set of addresses.
pub(crate) fn ip_set(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// The addresses `name` answers an A query with, over UDP.
pub(crate) async fn a_records(dns: SocketAddr, name: &str) -> BTreeSet<IpAddr> {
    ips(&udp(dns, name, RecordType::A).await.answers)
}

/// Waits until `name` answers exactly `want` (A records, over UDP).
pub(crate) async fn answers(dns: SocketAddr, name: &str, want: &[&str]) {
    let want = ip_set(want);
    eventually(DEADLINE, &format!("{name} to answer {want:?}"), || async {
        (a_records(dns, name).await == want).then_some(())
    })
    .await;
}
