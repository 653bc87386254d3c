//! The DNS responder on UDP and TCP (same address), our [`handler::Handler`] answering from
//! the snapshot. UDP is hickory's server: malformed packets are answered FORMERR (or dropped
//! when not even a header can be read) before they reach the handler. TCP is accepted by
//! [`tcp`], which holds each connection to a deadline and caps how many are open, then parses
//! and answers with the same hickory types and handler.

pub mod forward;
pub mod handler;
pub mod records;
pub mod tcp;
pub mod weighted;

/// What a query name asks for: the naming scheme, in a crate of its own so that it can be
/// fuzzed without the sidecar.
pub use waypost_dns_names as names;

use std::sync::Arc;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use self::{handler::Handler, tcp::TcpLimits};

/// Serves DNS on `udp` (hickory's server, answering from the moment this returns) and on `tcp`
/// (our listener, within `limits`); the future returned drives the TCP listener and, once
/// `shutdown` is cancelled, stops both and finishes when they have.
pub fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    handler: Handler,
    limits: TcpLimits,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let mut server = Server::new(handler.clone());
    server.register_socket(udp);
    // One token stops both: hickory's UDP task and our TCP listener.
    let tcp = tcp::serve(
        tcp,
        Arc::new(handler),
        limits,
        server.shutdown_token().clone(),
    );
    async move {
        let udp = async {
            shutdown.cancelled().await;
            server.shutdown_gracefully().await
        };
        let ((), udp) = tokio::join!(tcp, udp);
        if let Err(err) = udp {
            tracing::warn!(%err, "DNS server stopped with an error");
        }
    }
}
