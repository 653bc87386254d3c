//! The DNS responder: hickory's server on UDP and TCP (same address), our [`handler::Handler`]
//! answering from the snapshot. Malformed packets are answered FORMERR (or dropped when not
//! even a header can be read) by hickory before they reach the handler.

pub mod forward;
pub mod handler;
pub mod names;
pub mod records;

use std::{net::SocketAddr, time::Duration};

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use self::handler::Handler;

/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Answers buffered per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 64;

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

/// Starts serving; the returned server stops with `shutdown_gracefully`.
pub fn serve(udp: UdpSocket, tcp: TcpListener, handler: Handler) -> Server<Handler> {
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
    server
}
