//! Forwarding names outside the domain to upstream resolvers, so the sidecar can be a host's
//! only resolver. Deliberately small: the query is passed on as received (over UDP, then TCP
//! when the answer is truncated), upstreams are tried in order, each with a timeout.

use std::{net::SocketAddr, time::Duration};

use hickory_proto::op::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// How long one upstream may take to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Upstream resolvers, tried in order.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
}

impl Forwarder {
    /// `None` without upstreams (names outside the domain are then refused).
    pub fn new(upstreams: &[SocketAddr]) -> Option<Self> {
        (!upstreams.is_empty()).then(|| Self {
            upstreams: upstreams.to_vec(),
        })
    }

    /// The first upstream answer to `query` (raw wire bytes), or `None` when none answered.
    pub async fn forward(&self, query: &[u8]) -> Option<Message> {
        for upstream in &self.upstreams {
            match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange(*upstream, query)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(err)) => tracing::debug!(%upstream, %err, "upstream failed"),
                Err(_) => tracing::debug!(%upstream, "upstream timed out"),
            }
        }
        None
    }
}

async fn exchange(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 4096];
    let id = query.get(..2);
    loop {
        let n = socket.recv(&mut buf).await?;
        // Ignore stray datagrams that do not answer this query's id.
        if buf.get(..2) != id {
            continue;
        }
        let answer = Message::from_vec(&buf[..n]).map_err(std::io::Error::other)?;
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        break;
    }
    // Truncated: ask again over TCP (two-byte length prefix, RFC 1035 4.2.2).
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    Message::from_vec(&answer).map_err(std::io::Error::other)
}
