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
//!
//! Unlike hickory's server, the loop never waits, and what it cannot take it drops and counts
//! (`dns_dropped_total`): a packet for the handler beyond [`MAX_ORDINARY`] at once, and a
//! prepared answer that finds the socket's send buffer full. UDP clients ask again.

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
    sync::Semaphore,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{
    fast::{Domain, FastPath},
    handler::Handler,
};
use crate::metrics::DropReason;

/// The largest query read (as hickory's server reads); a longer datagram is cut, and its
/// message then fails to parse.
const MAX_QUERY: usize = 4096;

/// Packets handled in one turn before the loop lets the runtime's other tasks run: a steady
/// flood never empties the socket, and the snapshot's writer and the admin endpoint share the
/// thread on a one-worker sidecar.
const TURN: usize = 64;

/// Packets with the handler at once (parsed, answered, or forwarded and waiting up to 2 s per
/// upstream for its answer). Beyond it, a packet the fast path does not answer is dropped and
/// counted (`dns_dropped_total{reason="busy"}`): each holds a task and, when forwarded, a
/// socket, and UDP clients ask again. Twice the DNS-over-TCP connection cap: a UDP query
/// holds less, and a forwarded one holds its socket for at most the upstreams' timeouts.
const MAX_ORDINARY: usize = 1024;

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
    serve_within(socket, handler, MAX_ORDINARY, shutdown).await;
}

/// [`serve`], with at most `max_ordinary` packets with the handler at once.
async fn serve_within(
    socket: tokio::net::UdpSocket,
    handler: Arc<Handler>,
    max_ordinary: usize,
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
    let places = Arc::new(Semaphore::new(max_ordinary));
    let busy = handler.metrics.dns_dropped(DropReason::Busy);
    let send_buffer_full = handler.metrics.dns_dropped(DropReason::SendBufferFull);
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
                // Not waiting for room: the loop would stop reading for everyone while one
                // answer waits. A full buffer means answers are leaving slower than they are
                // made; this one is dropped and the client asks again, as for a lost packet.
                match socket.get_ref().send_to(&answer, src) {
                    Ok(_) => {}
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {
                        send_buffer_full.inc();
                    }
                    Err(err) => tracing::debug!(%err, dst = %src, "cannot send a DNS answer"),
                }
            } else {
                // Forget finished ones so the set holds only queries still being answered.
                while ordinary.try_join_next().is_some() {}
                let Ok(place) = places.clone().try_acquire_owned() else {
                    busy.inc();
                    continue;
                };
                let answering =
                    answer_ordinary(query.to_vec(), src, socket.clone(), handler.clone());
                ordinary.spawn(async move {
                    answering.await;
                    drop(place);
                });
            }
        }
        drop(ready);
        if !drained {
            tokio::task::yield_now().await;
        }
    }
}

/// Sends the handler's `answer` to `dst` at once. When the socket's buffer is full (answers
/// waiting in slow clients' queues), waits for room (on the answer's own task, not the loop)
/// through a registration of its own, made for the moment: the loop's registration does not
/// ask for writability, and a standing one would wake the runtime as each answer leaves.
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
    use std::time::Duration;

    use hickory_proto::{
        op::{Message, Query},
        rr::Name,
    };
    use waypost_control::testkit::eventually;

    use super::*;
    use crate::{
        dns::{forward::Forwarder, records::RecordBuilder},
        metrics::Metrics,
        snapshot,
    };

    const DEADLINE: Duration = Duration::from_secs(10);

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

    /// A query for `name` (A) with `id`.
    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii(name).unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        m.to_vec().unwrap()
    }

    /// The next datagram on `socket` and where it came from.
    async fn receive(socket: &tokio::net::UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 4096];
        let (n, from) = tokio::time::timeout(DEADLINE, socket.recv_from(&mut buf))
            .await
            .expect("a datagram")
            .unwrap();
        buf.truncate(n);
        (buf, from)
    }

    #[tokio::test]
    async fn packets_beyond_the_limit_with_the_handler_are_dropped_and_counted() {
        // The upstream is a socket of the test's, which answers when the test says so: until
        // then each forwarded query holds its place.
        let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (_publisher, snapshots) = snapshot::channel();
        let metrics = Arc::new(Metrics::new());
        let handler = Handler {
            snapshots,
            records: RecordBuilder::new(
                Name::from_ascii("waypost.").unwrap(),
                Duration::from_secs(5),
            ),
            forwarder: Forwarder::new(&[upstream.local_addr().unwrap()]),
            metrics: metrics.clone(),
        };
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dns = socket.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(serve_within(socket, Arc::new(handler), 2, shutdown.clone()));
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let busy = metrics.dns_dropped(DropReason::Busy);

        // Two forwarded queries take both places (the upstream has them)...
        let mut held = Vec::new();
        for id in [1, 2] {
            client
                .send_to(&query(id, "example.com."), dns)
                .await
                .unwrap();
            held.push(receive(&upstream).await);
        }
        // ...so a third is dropped, and counted.
        client
            .send_to(&query(3, "example.com."), dns)
            .await
            .unwrap();
        eventually(DEADLINE, "the third query to be dropped", || async {
            (busy.get() > 0).then_some(())
        })
        .await;
        assert_eq!(busy.get(), 1);

        // Answered, the two give their places back: the next query is forwarded.
        for (bytes, from) in held {
            let mut answer = Message::from_vec(&bytes).unwrap();
            answer.metadata.message_type = MessageType::Response;
            upstream
                .send_to(&answer.to_vec().unwrap(), from)
                .await
                .unwrap();
        }
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (bytes, _) = receive(&client).await;
            ids.push(Message::from_vec(&bytes).unwrap().metadata.id);
        }
        ids.sort_unstable();
        assert_eq!(ids, [1, 2], "the dropped query got no answer");
        client
            .send_to(&query(4, "example.com."), dns)
            .await
            .unwrap();
        let (forwarded, _) = receive(&upstream).await;
        assert_eq!(Message::from_vec(&forwarded).unwrap().metadata.id, 4);
        assert_eq!(busy.get(), 1);

        shutdown.cancel();
        serving.await.unwrap();
    }
}
