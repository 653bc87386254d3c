//! The DNS responder on UDP and TCP (same address), our [`handler::Handler`] answering from
//! the snapshot. UDP is hickory's server: malformed packets are answered FORMERR (or dropped
//! when not even a header can be read) before they reach the handler. TCP is accepted by
//! [`tcp`], which holds each connection to a deadline and caps how many are open, then parses
//! and answers with the same hickory types and handler.

pub mod forward;
pub mod handler;
pub mod records;
pub mod tcp;

/// What a query name asks for: the naming scheme, in a crate of its own so that it can be
/// fuzzed without the sidecar.
pub use waypost_dns_names as names;

use std::{net::SocketAddr, sync::Arc};

use hickory_server::{Server, net::NetError};
use tokio::{
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};

use self::{handler::Handler, tcp::TcpLimits};

/// Binds UDP and TCP on `addr` (with port 0: a free port that both can use).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((UdpSocket::bind(addr).await?, TcpListener::bind(addr).await?));
    }
    // A free UDP port may be taken for TCP: try a few.
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
}

/// The running responder; it stops with [`DnsServer::shutdown`].
pub struct DnsServer {
    udp: Server<Handler>,
    tcp: JoinHandle<()>,
}

/// Starts serving UDP and TCP.
pub fn serve(udp: UdpSocket, tcp: TcpListener, handler: Handler, limits: TcpLimits) -> DnsServer {
    let mut server = Server::new(handler.clone());
    server.register_socket(udp);
    // One token stops both: hickory's UDP task and our TCP listener.
    let shutdown = server.shutdown_token().clone();
    let tcp = tokio::spawn(tcp::serve(tcp, Arc::new(handler), limits, shutdown));
    DnsServer { udp: server, tcp }
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DnsServer")
    }
}

impl DnsServer {
    /// Stops accepting, closes open TCP connections and waits for both listeners to end.
    pub async fn shutdown(mut self) -> Result<(), NetError> {
        let udp = self.udp.shutdown_gracefully().await;
        if let Err(err) = self.tcp.await {
            return Err(NetError::from(format!("DNS TCP listener failed: {err}")));
        }
        udp
    }
}
