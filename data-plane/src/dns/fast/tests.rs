//! The fast path against the handler it stands in for: the same snapshot, the same queries,
//! and the same bytes (once the answers are in the same order); and the queries it must leave
//! to the handler.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, Metadata, OpCode, Query as Question, ResponseCode},
    rr::{Name, Record, RecordType},
    serialize::binary::BinEncoder,
};
use hickory_server::{
    net::{NetError, runtime::TokioTime, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::{MessageResponse, MessageResponseBuilder},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use waypost_model::Instance;

use super::*;
use crate::{
    dns::{handler::Handler, records::RecordBuilder},
    snapshot::{self, ServiceView, Target},
};

/// An instance of `service` at `host:port` with `weight`.
fn instance(service: &str, host: &str, port: u16, weight: u32) -> Instance {
    serde_json::from_value(serde_json::json!({
        "id": format!("{host}:{port}"), "service": service, "address": format!("{host}:{port}"),
        "host": host, "port": port, "tags": ["v2"], "metadata": {}, "weight": weight,
        "status": "up", "ttl_seconds": 30, "registered_at": "2026-11-23T00:00:00Z",
        "revision": 1
    }))
    .unwrap()
}

fn records() -> RecordBuilder {
    RecordBuilder::new(
        Name::from_ascii("waypost.").unwrap(),
        Duration::from_secs(5),
    )
}

/// An instance as (host, port, weight), its host an IP.
type At<'a> = (&'a str, u16, u32);

/// A snapshot of services given as (name, instances).
// Field by field over the default, so that the helper does not name how the snapshot keeps
// its map or what else it holds.
#[allow(clippy::field_reassign_with_default)]
fn snapshot(services: &[(&str, &[At<'_>])]) -> snapshot::Snapshot {
    let mut map = Vec::new();
    for (name, instances) in services {
        let all: Vec<Arc<Instance>> = instances
            .iter()
            .map(|(host, port, weight)| Arc::new(instance(name, host, *port, *weight)))
            .collect();
        let up: Vec<Target> = all
            .iter()
            .map(|i| Target {
                instance: i.clone(),
                addrs: vec![i.host.parse::<IpAddr>().unwrap()],
            })
            .collect();
        let records = records().service(name, up.iter().map(Target::up), None);
        let view = ServiceView {
            instances: all,
            up,
            vip: None,
            records,
            policy: None,
            protected: false,
        };
        map.push(((*name).to_owned(), Arc::new(view)));
    }
    let mut snapshot = snapshot::Snapshot::default();
    snapshot.epoch = Some("e".into());
    snapshot.revision = 7;
    snapshot.services = map.into_iter().collect();
    snapshot
}

/// The services every test below queries.
fn services() -> snapshot::Snapshot {
    snapshot(&[
        (
            "web",
            &[
                ("127.0.0.2", 8001, 3),
                ("127.0.0.3", 8002, 1),
                ("127.0.0.3", 8003, 1),
                ("::1", 8004, 2),
            ],
        ),
        ("one", &[("127.0.0.5", 80, 1)]),
        (
            "big",
            &[
                ("10.0.0.1", 80, 1),
                ("10.0.0.2", 80, 1),
                ("10.0.0.3", 80, 1),
                ("10.0.0.4", 80, 1),
                ("10.0.0.5", 80, 1),
                ("10.0.0.6", 80, 1),
                ("10.0.0.7", 80, 1),
                ("10.0.0.8", 80, 1),
            ],
        ),
    ])
}

/// A query for `name` and `rtype`, with RD set and EDNS with `payload` when given.
fn query(name: &str, rtype: RecordType, payload: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Question::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(payload) = payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        m.set_edns(edns);
    }
    m.to_vec().unwrap()
}

/// Keeps the bytes the handler sends.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
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
        let (info, bytes) = crate::dns::udp::encode(response)?;
        *self.0.lock().unwrap() = bytes;
        Ok(info)
    }
}

/// The handler's answer to `packet` over UDP, on `snapshot`.
async fn handler_answer(snapshot: snapshot::Snapshot, packet: &[u8]) -> Vec<u8> {
    let (publisher, snapshots) = snapshot::channel();
    publisher.publish(snapshot);
    let handler = Handler {
        snapshots,
        records: records(),
        forwarder: None,
        metrics: Arc::new(Metrics::new()),
    };
    let request = Request::from_bytes(
        packet.to_vec(),
        "127.0.0.1:5353".parse().unwrap(),
        Protocol::Udp,
    )
    .unwrap();
    let capture = Capture::default();
    handler
        .handle_request::<_, TokioTime>(&request, capture.clone())
        .await;
    capture.0.lock().unwrap().clone()
}

/// The fast path's answer to `packet` on `snapshot`.
fn fast_answer(snapshot: &snapshot::Snapshot, packet: &[u8]) -> Option<Vec<u8>> {
    let query = Query::parse(packet)?;
    let mut out = Vec::new();
    let domain = Domain::new(&Name::from_ascii("waypost.").unwrap());
    answer(snapshot, &domain, &query, &mut Order::default(), &mut out)?;
    Some(out)
}

/// hickory's encoding of `answer`'s own records, in its order, as the handler would send
/// them for `packet`: the fast path's bytes must be exactly these.
fn reencoded(packet: &[u8], answer: &Message) -> Vec<u8> {
    let request = Request::from_bytes(
        packet.to_vec(),
        "127.0.0.1:5353".parse().unwrap(),
        Protocol::Udp,
    )
    .unwrap();
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = true;
    let edns = request.edns.as_ref().map(|e| {
        let mut edns = Edns::new();
        edns.set_max_payload(e.max_payload().clamp(512, 1232));
        edns
    });
    let mut builder = MessageResponseBuilder::from_message_request(&request);
    if let Some(edns) = &edns {
        builder.edns(edns);
    }
    let message = builder.build(
        metadata,
        answer.answers.iter(),
        std::iter::empty(),
        std::iter::empty(),
        answer.additionals.iter(),
    );
    let mut bytes = Vec::new();
    message
        .destructive_emit(&mut BinEncoder::new(&mut bytes))
        .unwrap();
    bytes
}

/// The answer's records in presentation form, sorted: equal sets whatever the order.
fn sorted(records: &[Record]) -> Vec<String> {
    let mut shown: Vec<String> = records.iter().map(ToString::to_string).collect();
    shown.sort();
    shown
}

/// `name` with each letter's case flipped at random (the 0x20 trick resolvers use).
fn randomise_case(name: &str, rng: &mut StdRng) -> String {
    name.chars()
        .map(|c| {
            if rng.random::<bool>() {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[tokio::test]
async fn fast_answers_are_the_handlers_answers() {
    let snapshot = services();
    let mut rng = StdRng::seed_from_u64(20);
    let cases = [
        ("web.service.waypost.", RecordType::A),
        ("web.service.waypost.", RecordType::AAAA),
        ("web.service.waypost.", RecordType::SRV),
        ("_web._tcp.service.waypost.", RecordType::SRV),
        ("one.service.waypost.", RecordType::A),
        ("one.service.waypost.", RecordType::SRV),
        ("big.service.waypost.", RecordType::A),
    ];
    for (name, rtype) in cases {
        for payload in [None, Some(512), Some(1232), Some(4096)] {
            for _ in 0..8 {
                let name = randomise_case(name, &mut rng);
                let packet = query(&name, rtype, payload);
                let fast = fast_answer(&snapshot, &packet)
                    .unwrap_or_else(|| panic!("{name} {rtype} {payload:?} takes the fast path"));
                let slow = handler_answer(services(), &packet).await;
                let (f, s) = (
                    Message::from_vec(&fast).unwrap(),
                    Message::from_vec(&slow).unwrap(),
                );
                let case = format!("{name} {rtype} EDNS {payload:?}");
                // The same header, question (in the client's case), records and EDNS ...
                assert_eq!(f.metadata, s.metadata, "{case}");
                let question = 12..12 + Query::parse(&packet).unwrap().question.len();
                assert_eq!(fast[question.clone()], packet[question.clone()], "{case}");
                assert_eq!(fast[question.clone()], slow[question], "{case}");
                assert_eq!(sorted(&f.answers), sorted(&s.answers), "{case}");
                assert_eq!(f.additionals, s.additionals, "{case}");
                assert_eq!(f.authorities, s.authorities, "{case}");
                assert_eq!(f.edns, s.edns, "{case}");
                assert_eq!(fast.len(), slow.len(), "{case}");
                // ... and the very bytes hickory writes for the fast path's order.
                assert_eq!(fast, reencoded(&packet, &f), "{case}");
                if f.answers.len() == 1 {
                    assert_eq!(fast, slow, "{case}");
                }
            }
        }
    }
}

#[tokio::test]
async fn other_queries_are_left_to_the_handler() {
    let snapshot = services();
    let cases: [(&str, RecordType, Option<u16>, ResponseCode); 9] = [
        // No such service: NXDOMAIN with the SOA (its serial is the revision).
        (
            "nobody.service.waypost.",
            RecordType::A,
            None,
            ResponseCode::NXDomain,
        ),
        // An IPv4-only service asked for AAAA: NODATA with the SOA.
        (
            "one.service.waypost.",
            RecordType::AAAA,
            None,
            ResponseCode::NoError,
        ),
        // Tags, other types, the apex, names outside the domain.
        (
            "v2.web.service.waypost.",
            RecordType::A,
            None,
            ResponseCode::NoError,
        ),
        (
            "web.service.waypost.",
            RecordType::ANY,
            None,
            ResponseCode::NoError,
        ),
        (
            "web.service.waypost.",
            RecordType::TXT,
            None,
            ResponseCode::NoError,
        ),
        (
            "_web._tcp.service.waypost.",
            RecordType::A,
            None,
            ResponseCode::NoError,
        ),
        (
            "service.waypost.",
            RecordType::A,
            None,
            ResponseCode::NoError,
        ),
        ("example.com.", RecordType::A, None, ResponseCode::Refused),
        // Eight SRV records and their targets do not fit 512 bytes: hickory truncates.
        (
            "big.service.waypost.",
            RecordType::SRV,
            Some(512),
            ResponseCode::NoError,
        ),
    ];
    for (name, rtype, payload, code) in cases {
        let packet = query(name, rtype, payload);
        assert_eq!(fast_answer(&snapshot, &packet), None, "{name} {rtype}");
        let slow = Message::from_vec(&handler_answer(services(), &packet).await).unwrap();
        assert_eq!(slow.metadata.response_code, code, "{name} {rtype}");
    }
    let big = query("big.service.waypost.", RecordType::SRV, Some(512));
    let truncated = Message::from_vec(&handler_answer(services(), &big).await).unwrap();
    assert!(truncated.metadata.truncation);
    // With room enough, the same query is the fast path's.
    let roomy = query("big.service.waypost.", RecordType::SRV, Some(1232));
    assert!(fast_answer(&snapshot, &roomy).is_some());
}

/// Sets bytes of a query to make it something the fast path leaves alone.
fn altered(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut packet = query("web.service.waypost.", RecordType::A, Some(1232));
    edit(&mut packet);
    packet
}

#[test]
fn only_plain_queries_are_parsed() {
    let plain = query("web.service.waypost.", RecordType::A, None);
    let parsed = Query::parse(&plain).expect("a plain query");
    assert_eq!(parsed.id, [0xbe, 0xef]);
    assert_eq!(parsed.flags, [0x01, 0]);
    assert_eq!(parsed.qtype, 1);
    assert_eq!(parsed.edns, None);
    assert_eq!(parsed.label_count, 3);
    assert_eq!(parsed.label(0), b"web");

    // EDNS: the payload size is the one the answer announces, 512 to 1232.
    let edns = |payload| {
        let packet = query("a.waypost.", RecordType::A, Some(payload));
        Query::parse(&packet).unwrap().edns
    };
    assert_eq!(edns(4096), Some(1232));
    assert_eq!(edns(600), Some(600));
    assert_eq!(edns(100), Some(512));

    // CD and AD are allowed (dig sets AD); CD comes back.
    let cd = altered(|p| p[3] |= 0x30);
    assert_eq!(Query::parse(&cd).unwrap().flags, [0x01, 0x10]);

    // An option hickory keeps opaque (a cookie, as dig sends) is fine; one it parses is not.
    let option = |code: u16| {
        altered(|p| {
            let len = p.len();
            p[len - 2..].copy_from_slice(&6u16.to_be_bytes());
            p.extend_from_slice(&code.to_be_bytes());
            p.extend_from_slice(&2u16.to_be_bytes());
            p.extend_from_slice(&[1, 2]);
        })
    };
    assert!(Query::parse(&option(10)).is_some());
    assert!(Query::parse(&option(8)).is_none(), "client subnet");
    assert!(Query::parse(&option(3)).is_none(), "NSID");

    let not_plain = [
        ("a response", altered(|p| p[2] |= 0x80)),
        ("an update", altered(|p| p[2] |= 5 << 3)),
        ("truncated", altered(|p| p[2] |= 0x02)),
        ("a code set", altered(|p| p[3] |= 0x01)),
        ("two questions", altered(|p| p[5] = 2)),
        ("an answer", altered(|p| p[7] = 1)),
        ("class CH", altered(|p| p[36] = 3)),
        ("EDNS version 1", altered(|p| p[43] = 1)),
        ("bytes after the message", altered(|p| p.push(0))),
        ("cut short", altered(|p| p.truncate(p.len() - 1))),
        ("a compression pointer", altered(|p| p[12 + 4] = 0xC0)),
        ("no header", vec![0; 11]),
    ];
    for (what, packet) in not_plain {
        assert_eq!(Query::parse(&packet), None, "{what}");
    }
}

/// Whatever bytes arrive, the fast path does not panic, and what it answers hickory also reads
/// as a query and the handler answers the same way: mutated queries (bytes changed, cut or
/// added, seeded so that a failure repeats) checked against the handler.
#[tokio::test]
async fn mutated_queries_are_answered_as_the_handler_would_or_left_to_it() {
    let snapshot = services();
    let mut rng = StdRng::seed_from_u64(18);
    let names = [
        ("web.service.waypost.", RecordType::A),
        ("web.service.waypost.", RecordType::SRV),
        ("_web._tcp.service.waypost.", RecordType::SRV),
        ("one.service.waypost.", RecordType::AAAA),
    ];
    let (mut fast, mut left) = (0, 0);
    for _ in 0..3000 {
        let (name, rtype) = names[rng.random_range(0..names.len())];
        let payload = [None, Some(512), Some(4096)][rng.random_range(0..3)];
        let mut packet = query(name, rtype, payload);
        for _ in 0..rng.random_range(1..=3) {
            match rng.random_range(0..10) {
                0 => packet.truncate(rng.random_range(0..packet.len().max(1))),
                1 => packet.push(rng.random()),
                // A case flip in the name, as 0x20 randomisation does.
                2..=4 if packet.len() > 12 => {
                    let at = rng.random_range(12..packet.len());
                    packet[at] ^= 0x20;
                }
                _ => {
                    let at = rng.random_range(0..packet.len().max(1));
                    if let Some(byte) = packet.get_mut(at) {
                        *byte = rng.random();
                    }
                }
            }
        }
        let Some(answer) = fast_answer(&snapshot, &packet) else {
            left += 1;
            continue;
        };
        fast += 1;
        let slow = handler_answer(services(), &packet).await;
        let (f, s) = (
            Message::from_vec(&answer).unwrap(),
            Message::from_vec(&slow).unwrap(),
        );
        let case = format!("{packet:?}");
        assert_eq!(f.metadata, s.metadata, "{case}");
        assert_eq!(f.queries, s.queries, "{case}");
        assert_eq!(sorted(&f.answers), sorted(&s.answers), "{case}");
        assert_eq!(f.additionals, s.additionals, "{case}");
        assert_eq!(f.edns, s.edns, "{case}");
        assert_eq!(answer.len(), slow.len(), "{case}");
    }
    // Both kinds were seen (the counts are fixed by the seed).
    assert!(fast > 100 && left > 100, "{fast} answered, {left} left");
}
