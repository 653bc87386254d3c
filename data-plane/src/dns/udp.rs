//! DNS over UDP: our receive loop in place of hickory's, so that the common query is answered
//! from prepared bytes ([`super::fast`]) in the loop itself, and every other packet goes to
//! the [`Handler`] as hickory's server would hand it over.
//!
//! hickory's UDP server spawns a task per packet, parses the whole message, and sends the
//! answer through a channel to the task that owns the socket. The loop here runs on a thread
//! of its own, blocked in `recvfrom(2)`, and answers a fast-path query on the spot. The rest
//! is parsed by hickory (`Request::from_bytes`) and answered by the handler on a task of the
//! runtime (a forwarded query waits for its upstream without holding the loop), encoded by
//! hickory with the same size limit and truncation, and sent on the same socket. What hickory's server did
//! before the handler is done the same way here: no answer to a source it cannot answer (port
//! 0, an unspecified or broadcast address, IPv4-mapped or not), to a packet shorter than a
//! header, or to a response (QR set, whatever follows its header); FORMERR to a query's header
//! followed by an unreadable message.
//!
//! Unlike hickory's server, nothing here waits for room to send, and what cannot be taken is
//! dropped and counted (`dns_dropped_total`): a packet for the handler beyond [`MAX_ORDINARY`]
//! at once, and an answer that finds the socket's send buffer full. UDP clients ask again.

use std::{
    io::{self, ErrorKind},
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
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
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    fast::{Domain, FastPath},
    handler::Handler,
};
use crate::metrics::DropReason;

/// The largest query read (as hickory's server reads); a longer datagram is cut, and its
/// message then fails to parse.
const MAX_QUERY: usize = 4096;

/// Packets with the handler at once (parsed, answered, or forwarded and waiting up to 2 s per
/// upstream for its answer). Beyond it, a packet the fast path does not answer is dropped and
/// counted (`dns_dropped_total{reason="busy"}`): each holds a task and, when forwarded, a
/// socket, and UDP clients ask again. Twice the DNS-over-TCP connection cap: a UDP query
/// holds less, and a forwarded one holds its socket for at most the upstreams' timeouts.
const MAX_ORDINARY: usize = 1024;

/// How long the receiving thread waits for a packet before it looks at the shutdown token: the
/// bound on how long shutdown waits for it.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// The socket, blocking on receive (with [`STOP_CHECK`] as its timeout) for the receiving
/// thread; every send on it is made with `MSG_DONTWAIT`, so no sender ever waits.
type Socket = Arc<UdpSocket>;

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
///
/// The loop runs on a thread of its own, blocked in `recvfrom(2)`, not on the runtime: a query
/// wakes that thread directly, where a runtime's loop is woken through `epoll_wait(2)`, then
/// polls the task and reads until the socket says it is empty, three system calls and a
/// scheduler's turn for each query at low rates instead of one. At 10,000 queries/s that was
/// the difference in latency with knot (BENCHMARKS, issue 18). The handler's queries still
/// run on the runtime, spawned from the thread.
async fn serve_within(
    socket: tokio::net::UdpSocket,
    handler: Arc<Handler>,
    max_ordinary: usize,
    shutdown: CancellationToken,
) {
    let blocking = socket.into_std().and_then(|socket| {
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(STOP_CHECK))?;
        Ok(socket)
    });
    let socket = match blocking {
        Ok(socket) => Arc::new(socket),
        Err(err) => {
            tracing::error!(%err, "cannot serve DNS over UDP");
            return;
        }
    };
    let runtime = tokio::runtime::Handle::current();
    // The thread stops at shutdown, and also when this future is dropped without one.
    let stop = shutdown.child_token();
    let _stop_on_drop = stop.clone().drop_guard();
    // What the thread reads after each packet: the token's own test takes a lock.
    let stopping = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let (stop, stopping) = (stop.clone(), stopping.clone());
        async move {
            stop.cancelled().await;
            stopping.store(true, Ordering::Relaxed);
        }
    });
    // Sent (or dropped, should the thread panic) when the loop is over: the thread ends within
    // `STOP_CHECK` of `stop`, and is waited for without blocking the runtime.
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let receiving = std::thread::Builder::new()
        .name("dns-udp".into())
        .spawn(move || {
            receive(&socket, &handler, max_ordinary, &stop, &stopping, &runtime);
            let _ = done.send(());
        });
    match receiving {
        Ok(_) => {
            if finished.await.is_err() {
                tracing::error!("the DNS UDP thread failed: DNS over UDP has stopped");
            }
        }
        Err(err) => tracing::error!(%err, "cannot start the DNS UDP thread"),
    }
}

/// The receive loop (see [`serve_within`]), until `shutdown`.
fn receive(
    socket: &Socket,
    handler: &Arc<Handler>,
    max_ordinary: usize,
    shutdown: &CancellationToken,
    stopping: &AtomicBool,
    runtime: &tokio::runtime::Handle,
) {
    let mut fast = FastPath::new(
        handler.snapshots.clone(),
        Domain::new(handler.records.domain()),
        handler.metrics.clone(),
    );
    let mut packet = vec![0u8; MAX_QUERY];
    let mut answer = Vec::with_capacity(usize::from(super::handler::MAX_UDP_PAYLOAD));
    // Dropped when the loop ends, which cancels the queries still with the handler.
    let mut ordinary = JoinSet::new();
    let places = Arc::new(Semaphore::new(max_ordinary));
    let busy = handler.metrics.dns_dropped(DropReason::Busy);
    let send_buffer_full = handler.metrics.dns_dropped(DropReason::SendBufferFull);
    // `stopping` is looked at after every packet: the receive timeout restarts with each one,
    // so a slow trickle of queries would keep the loop from ever timing out. The token itself
    // is looked at on each timeout, in case nothing on the runtime is left to set the flag.
    while !stopping.load(Ordering::Relaxed) {
        let (len, src) = match socket.recv_from(&mut packet) {
            Ok(received) => received,
            // The receive timeout.
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            // Including the ICMP errors of earlier answers (a client gone): never the end.
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
            // Not waiting for room: the loop would stop reading for everyone while one answer
            // waits. A full buffer means answers are leaving slower than they are made; this
            // one is dropped and the client asks again, as for a lost packet.
            match send(socket, &answer, src) {
                Ok(()) => {}
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
            let answering = answer_ordinary(query.to_vec(), src, socket.clone(), handler.clone());
            ordinary.spawn_on(
                async move {
                    answering.await;
                    drop(place);
                },
                runtime,
            );
        }
    }
}

/// Sends `answer` to `dst` without waiting: `WouldBlock` when the socket's send buffer is full.
fn send(socket: &UdpSocket, answer: &[u8], dst: SocketAddr) -> io::Result<()> {
    rustix::net::sendto(socket, answer, rustix::net::SendFlags::DONTWAIT, &dst)
        .map(drop)
        .map_err(io::Error::from)
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
async fn answer_ordinary(raw: Vec<u8>, src: SocketAddr, socket: Socket, handler: Arc<Handler>) {
    // The loop passes only packets with a whole header and QR clear (`is_query`); a header
    // hickory cannot read has no id to answer with.
    let Ok(header) = Header::read(&mut BinDecoder::new(&raw)) else {
        return;
    };
    let mut reply = Reply {
        socket,
        dst: src,
        metrics: handler.metrics.clone(),
    };
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
    socket: Socket,
    dst: SocketAddr,
    metrics: Arc<crate::metrics::Metrics>,
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
        // As the loop's answers: not waiting for room (the socket's descriptor is blocking, for
        // the receiving thread), dropped and counted when the buffer is full.
        if let Err(err) = send(&self.socket, &bytes, self.dst) {
            if err.kind() == ErrorKind::WouldBlock {
                self.metrics.dns_dropped(DropReason::SendBufferFull).inc();
            }
            return Err(err.into());
        }
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
