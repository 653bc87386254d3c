//! The DNS responder on UDP and TCP (same address), our [`handler::Handler`] answering from
//! the snapshot. `udp` receives on UDP: the common query (a service's addresses or SRV
//! records) is answered by `fast` from the bytes [`prepared`] with the snapshot; every other
//! packet is parsed by hickory and answered by the handler, malformed ones FORMERR (or dropped
//! when not even a header can be read). TCP is accepted by [`tcp`], which holds each
//! connection to a deadline and caps how many are open, then parses and answers with the same
//! hickory types and handler.

mod fast;
pub mod forward;
pub mod handler;
pub mod prepared;
pub mod records;
pub mod tcp;
mod udp;
pub mod weighted;

/// What a query name asks for: the naming scheme, in a crate of its own so that it can be
/// fuzzed without the sidecar.
pub use waypost_dns_names as names;

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use self::{handler::Handler, tcp::TcpLimits};

/// Serves DNS on `udp` and on `tcp` (within `limits`) until `shutdown`; the future returned
/// finishes when both have stopped.
pub fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    handler: Handler,
    limits: TcpLimits,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let handler = Arc::new(handler);
    let udp = udp::serve(udp, handler.clone(), shutdown.clone());
    let tcp = tcp::serve(tcp, handler, limits, shutdown);
    async move {
        tokio::join!(udp, tcp);
    }
}
