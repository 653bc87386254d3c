//! The UDP fast path of a real sidecar against its own hickory path: the same query bytes
//! asked over UDP (answered from prepared bytes) and over TCP (always answered by the handler
//! through hickory) get the same answer, whatever the question's case and with or without EDNS;
//! what the fast path does not answer (truncation, unknown names, NODATA) still comes from the
//! handler as before; and every answer is counted.

mod common;

use std::net::SocketAddr;

use common::{TestSidecar, tcp_bytes, udp_bytes};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, Record, RecordType},
};
use waypost_client::{Client, model::RegisterRequest};
use waypost_control::testkit::TestControlPlane;

async fn register(client: &Client, service: &str, address: &str, weight: u32) -> u64 {
    let request = RegisterRequest {
        ttl_seconds: Some(600),
        weight: Some(weight),
        ..RegisterRequest::new(service, address)
    };
    client.register_once(&request).await.unwrap().revision
}

/// A query for `name` (as written: its case is kept) with RD set, and EDNS offering `payload`.
fn query(name: &str, rtype: RecordType, payload: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(payload) = payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        m.set_edns(edns);
    }
    m.to_vec().unwrap()
}

/// The raw answer to `bytes` over UDP.
async fn over_udp(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    udp_bytes(server, bytes).await.expect("a UDP answer")
}

/// Records in presentation form, sorted: the same set whatever the order.
fn sorted(records: &[Record]) -> Vec<String> {
    let mut shown: Vec<String> = records.iter().map(ToString::to_string).collect();
    shown.sort();
    shown
}

/// Flips the case of every other letter of `name`, starting at `phase` (as resolvers that
/// use the 0x20 trick randomise it).
fn mixed_case(name: &str, phase: usize) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i + phase).is_multiple_of(2) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[tokio::test]
async fn udp_answers_from_prepared_bytes_are_the_handlers_answers() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    register(&client, "web", "127.0.0.2:8001", 3).await;
    register(&client, "web", "127.0.0.3:8002", 1).await;
    register(&client, "web", "127.0.0.3:8003", 1).await;
    register(&client, "web", "[::1]:8004", 2).await;
    let last = register(&client, "solo", "127.0.0.9:80", 1).await;
    let sidecar = TestSidecar::start(&cp.url, |_| {}).await;
    sidecar.caught_up(last).await;
    let dns = sidecar.dns();
    let prepared = "waypost_sidecar_dns_prepared_answers_total";
    let a_noerror = "waypost_sidecar_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\"}";

    let cases = [
        ("web.service.waypost.", RecordType::A),
        ("web.service.waypost.", RecordType::AAAA),
        ("web.service.waypost.", RecordType::SRV),
        ("_web._tcp.service.waypost.", RecordType::SRV),
        ("solo.service.waypost.", RecordType::A),
    ];
    // Nothing is asked at start-up: every count below is the test's.
    assert_eq!(sidecar.metric(a_noerror).await, 0.0);
    let mut asked = 0.0;
    let mut asked_a = 0.0;
    for (name, rtype) in cases {
        for payload in [None, Some(1232), Some(4096)] {
            for phase in 0..3 {
                let name = if phase == 2 {
                    name.to_owned()
                } else {
                    mixed_case(name, phase)
                };
                let bytes = query(&name, rtype, payload);
                let case = format!("{name} {rtype} EDNS {payload:?}");
                let (udp, tcp) = (over_udp(dns, &bytes).await, tcp_bytes(dns, &bytes).await);
                asked += 1.0;
                if rtype == RecordType::A {
                    asked_a += 1.0;
                }
                let (u, t) = (
                    Message::from_vec(&udp).unwrap(),
                    Message::from_vec(&tcp).unwrap(),
                );
                assert_eq!(u.metadata, t.metadata, "{case}");
                assert_eq!(u.metadata.response_code, ResponseCode::NoError, "{case}");
                assert!(!u.answers.is_empty(), "{case}");
                // The question comes back as asked, in the client's case.
                let question = 12..12 + name.len() + 1 + 4;
                assert_eq!(udp[question.clone()], bytes[question.clone()], "{case}");
                assert_eq!(udp[question.clone()], tcp[question], "{case}");
                assert_eq!(sorted(&u.answers), sorted(&t.answers), "{case}");
                assert_eq!(u.additionals, t.additionals, "{case}");
                assert_eq!(u.authorities, t.authorities, "{case}");
                assert_eq!(u.edns, t.edns, "{case}");
                assert_eq!(udp.len(), tcp.len(), "{case}");
                if u.answers.len() == 1 {
                    assert_eq!(udp, tcp, "{case}: one record, one possible order");
                }
            }
        }
    }
    // Every UDP answer above came from prepared bytes, and is counted as the handler counts
    // its own: each A question once over UDP (prepared) and once over TCP (the handler).
    assert_eq!(sidecar.metric(prepared).await, asked);
    assert_eq!(sidecar.metric(a_noerror).await, 2.0 * asked_a);

    // What the fast path leaves to the handler is answered as before, and not counted as
    // prepared: a name that does not exist, a type the service has no record of, a payload too
    // small for the answer, a tag.
    let nx = Message::from_vec(
        &over_udp(dns, &query("nobody.service.waypost.", RecordType::A, None)).await,
    )
    .unwrap();
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        nx.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    );
    let nodata = Message::from_vec(
        &over_udp(dns, &query("solo.service.waypost.", RecordType::AAAA, None)).await,
    )
    .unwrap();
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert!(
        nodata
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    );
    assert_eq!(sidecar.metric(prepared).await, asked);
    sidecar.stop().await;
}

#[tokio::test]
async fn answers_too_large_for_the_client_are_truncated_by_the_handler() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let mut last = 0;
    for i in 1..=12 {
        last = register(&client, "wide", &format!("127.0.3.{i}:80"), 1).await;
    }
    let sidecar = TestSidecar::start(&cp.url, |_| {}).await;
    sidecar.caught_up(last).await;
    let dns = sidecar.dns();
    let name = "_wide._tcp.service.waypost.";

    // Twelve SRV records and their targets' addresses take more than 512 bytes: without EDNS,
    // or with a small payload, hickory truncates (TC set); with room enough, they come whole.
    for payload in [None, Some(512)] {
        let small = Message::from_vec(&over_udp(dns, &query(name, RecordType::SRV, payload)).await)
            .unwrap();
        assert!(small.metadata.truncation, "EDNS {payload:?}");
        assert!(small.answers.len() < 12, "EDNS {payload:?}");
    }
    let prepared = "waypost_sidecar_dns_prepared_answers_total";
    assert_eq!(sidecar.metric(prepared).await, 0.0);
    let whole =
        Message::from_vec(&over_udp(dns, &query(name, RecordType::SRV, Some(1232))).await).unwrap();
    assert!(!whole.metadata.truncation);
    assert_eq!(whole.answers.len(), 12);
    assert_eq!(whole.additionals.len(), 12);
    assert_eq!(sidecar.metric(prepared).await, 1.0);
    sidecar.stop().await;
}
