//! DNS over UDP: our receive loop in place of hickory's, so that the common query is answered
//! from prepared bytes ([`super::fast`]) in the loop itself, and every other packet goes to
//! the [`Handler`] as hickory's server would hand it over.
//!
//! hickory's UDP server spawns a task per packet, parses the whole message, and sends the
//! answer through a channel to the task that owns the socket. The loop here reads packets
//! while the socket has them and answers a fast-path query on the spot. The rest is parsed by
//! hickory (`Request::from_bytes`) and answered by the handler on a task of its own (a
//! forwarded query waits for its upstream without holding the loop), encoded by hickory with
//! the same size limit and truncation, and sent on the same socket. What hickory's server did
//! before the handler is done the same way here: no answer to a source it cannot answer (port
//! 0, an unspecified or broadcast address, IPv4-mapped or not), to a packet shorter than a
//! header, or to a response (QR set, whatever follows its header); FORMERR to a query's header
//! followed by an unreadable message.

use std::{
    io::{self, ErrorKind},
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::Arc,
};

use hickory_proto::{
    op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode},
    rr::Record,
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use hickory_server::{
    net::{NetError, runtime::TokioTime, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::{MessageResponse, MessageResponseBuilder, Queries},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{
    fast::{Domain, FastPath},
    handler::Handler,
};

/// The largest query read (as hickory's server reads); a longer datagram is cut, and its
/// message then fails to parse.
const MAX_QUERY: usize = 4096;

/// Packets handled in one turn before the loop lets the runtime's other tasks run: a steady
/// flood never empties the socket, and the snapshot's writer and the admin endpoint share the
/// thread on a one-worker sidecar.
const TURN: usize = 64;

/// The socket, registered with the runtime for readability only. A tokio `UdpSocket` also
/// asks for writability, and then every answer sent wakes the loop once more (the kernel
/// signals room to write as each answer leaves), which doubled the loop's system calls per
/// query at low rates. Answers are sent without waiting (see [`send`]).
type Socket = AsyncFd<UdpSocket>;

/// Answers DNS on `socket` until `shutdown`: prepared answers in the loop, everything else by
/// `handler`. Queries still with the handler when it stops are dropped.
pub(crate) async fn serve(
    socket: tokio::net::UdpSocket,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
) {
    // `AsyncFd::with_interest` is deprecated because it accepts any raw descriptor; a
    // `std::net::UdpSocket` owns its descriptor for as long as the `AsyncFd` holds it, which is
    // what makes the registration sound (its replacement is `unsafe`, which we forbid).
    #[allow(deprecated)]
    let registered = socket
        .into_std()
        .and_then(|socket| AsyncFd::with_interest(socket, Interest::READABLE));
    let socket = match registered {
        Ok(socket) => Arc::new(socket),
        Err(err) => {
            tracing::error!(%err, "cannot serve DNS over UDP");
            return;
        }
    };
    let mut fast = FastPath::new(
        handler.snapshots.clone(),
        Domain::new(handler.records.domain()),
        handler.metrics.clone(),
    );
    let mut packet = vec![0u8; MAX_QUERY];
    let mut answer = Vec::with_capacity(usize::from(super::handler::MAX_UDP_PAYLOAD));
    let mut ordinary = JoinSet::new();
    // One wait for shutdown for the whole loop, not one registered and dropped per wake.
    let stop = shutdown.cancelled();
    tokio::pin!(stop);
    loop {
        let mut ready = tokio::select! {
            biased;
            () = &mut stop => break,
            ready = socket.readable() => match ready {
                Ok(ready) => ready,
                Err(err) => {
                    tracing::warn!(%err, "the DNS UDP socket failed");
                    break;
                }
            },
        };
        let mut drained = false;
        for _ in 0..TURN {
            let (len, src) = match socket.get_ref().recv_from(&mut packet) {
                Ok(received) => received,
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    ready.clear_ready();
                    drained = true;
                    break;
                }
                Err(err) => {
                    tracing::debug!(%err, "cannot receive a DNS query");
                    continue;
                }
            };
            let query = &packet[..len];
            if !answerable(src) || !is_query(query) {
                continue;
            }
            if fast.answer(query, &mut answer) {
                if let Err(err) = send(&socket, &answer, src).await {
                    tracing::debug!(%err, dst = %src, "cannot send a DNS answer");
                }
            } else {
                ordinary.spawn(answer_ordinary(
                    query.to_vec(),
                    src,
                    socket.clone(),
                    handler.clone(),
                ));
                // Forget finished ones so the set holds only queries still being answered.
                while ordinary.try_join_next().is_some() {}
            }
        }
        drop(ready);
        if !drained {
            tokio::task::yield_now().await;
        }
    }
}

/// Sends `answer` to `dst` at once. When the socket's buffer is full (answers waiting in slow
/// clients' queues), waits for room through a registration of its own, made for the moment:
/// the loop's registration does not ask for writability.
async fn send(socket: &Socket, answer: &[u8], dst: SocketAddr) -> io::Result<()> {
    match socket.get_ref().send_to(answer, dst) {
        Err(err) if err.kind() == ErrorKind::WouldBlock => {
            let writer = tokio::net::UdpSocket::from_std(socket.get_ref().try_clone()?)?;
            writer.send_to(answer, dst).await.map(drop)
        }
        sent => sent.map(drop),
    }
}

/// Whether an answer can go to `src` (hickory's server checks the same before answering). An
/// IPv4 address mapped into IPv6 (a dual-stack socket's view of an IPv4 client) is judged as
/// the IPv4 address it is.
fn answerable(src: SocketAddr) -> bool {
    let v4 = |ip: Ipv4Addr| !ip.is_unspecified() && !ip.is_broadcast();
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(ip) => v4(ip),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(ip) => v4(ip),
                None => !ip.is_unspecified(),
            },
        }
}

/// Whether `packet` can be a query: at least a header, with QR clear. Anything else gets no
/// answer, not even FORMERR: a packet shorter than a header has no id to answer with, and
/// answering a response (even a broken one) would let a forged source bounce packets between
/// two DNS servers, or reflect them at a victim.
fn is_query(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN && packet[2] & QR == 0
}

/// The size of a DNS header (RFC 1035 4.1.1).
const HEADER_LEN: usize = 12;

/// The QR bit of the header's third byte: set in a response.
const QR: u8 = 0x80;

/// Answers a packet the fast path did not: parsed by hickory, answered by `handler`.
async fn answer_ordinary(
    raw: Vec<u8>,
    src: SocketAddr,
    socket: Arc<Socket>,
    handler: Arc<Handler>,
) {
    // The loop passes only packets with a whole header and QR clear (`is_query`); a header
    // hickory cannot read has no id to answer with.
    let Ok(header) = Header::read(&mut BinDecoder::new(&raw)) else {
        return;
    };
    let mut reply = Reply { socket, dst: src };
    match Request::from_bytes(raw, src, Protocol::Udp) {
        Ok(request) => {
            handler
                .handle_request::<_, TokioTime>(&request, reply)
                .await;
        }
        Err(err) => {
            tracing::debug!(%err, %src, "malformed DNS query");
            let Ok(none) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return;
            };
            let formerr = MessageResponseBuilder::new(&none, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            if let Err(err) = reply.send_response(formerr).await {
                tracing::debug!(%err, %src, "cannot send a DNS answer");
            }
        }
    }
}

/// Sends the handler's answers on the UDP socket.
#[derive(Clone)]
struct Reply {
    socket: Arc<Socket>,
    dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for Reply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, bytes) = encode(response)?;
        send(&self.socket, &bytes, self.dst).await?;
        Ok(info)
    }
}

/// Encodes an answer for UDP as hickory's own response handle does: at most the payload size
/// of the answer's EDNS record, or 512 bytes without one, truncated (TC set) to fit; SERVFAIL
/// when it cannot be encoded.
pub(super) fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let id = response.metadata().id;
    let max = response.edns().map_or(512, |edns| edns.max_payload());
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    let err = match response.destructive_emit(&mut encoder) {
        Ok(info) => return Ok((info, bytes)),
        Err(err) => err,
    };
    tracing::error!(%err, "cannot encode a DNS answer");
    bytes.clear();
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(512);
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    header.emit(&mut encoder)?;
    Ok((ResponseInfo::from(header), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_sources_are_judged_as_ipv4() {
        for (src, ok) in [
            ("127.0.0.1:53000", true),
            ("0.0.0.0:53000", false),
            ("255.255.255.255:53000", false),
            ("127.0.0.1:0", false),
            ("[::1]:53000", true),
            ("[::]:53000", false),
            ("[::ffff:127.0.0.1]:53000", true),
            ("[::ffff:0.0.0.0]:53000", false),
            ("[::ffff:255.255.255.255]:53000", false),
            ("[::ffff:127.0.0.1]:0", false),
        ] {
            assert_eq!(answerable(src.parse().unwrap()), ok, "{src}");
        }
    }

    #[test]
    fn only_packets_with_a_header_and_qr_clear_are_queries() {
        let mut header = [0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        assert!(is_query(&header));
        assert!(!is_query(&header[..11]));
        header[2] |= 0x80;
        assert!(!is_query(&header));
    }
}
