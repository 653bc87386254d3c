//! The sidecar against a real control plane, queried with real DNS over UDP and TCP on
//! 127.0.0.1 (messages built and read with hickory-proto).

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{
    DEADLINE, TestSidecar, a_records, answers, ip_set, ips, query, tcp, tcp_exchange, tcp_raw, udp,
    udp_edns, udp_raw,
};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};
use waypost_client::{Client, model::InstanceRef, model::RegisterRequest};
use waypost_control::testkit::{TestControlPlane, eventually};
use waypost_sidecar::dns::tcp::TcpLimits;

fn has_soa(m: &Message) -> bool {
    m.authorities
        .iter()
        .any(|r| r.record_type() == RecordType::SOA)
}

async fn register(client: &Client, service: &str, address: &str, tags: &[&str]) -> u64 {
    let request = RegisterRequest {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ttl_seconds: Some(600),
        ..RegisterRequest::new(service, address)
    };
    client.register_once(&request).await.unwrap().revision
}

#[tokio::test]
async fn answers_a_aaaa_srv_tags_and_negatives() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    register(&client, "web", "127.0.0.2:8001", &["v2"]).await;
    register(&client, "web", "127.0.0.3:8002", &[]).await;
    register(&client, "web", "[::1]:8003", &[]).await;
    let last = register(&client, "db", "http://localhost:5432", &[]).await;
    let sidecar = TestSidecar::start(&cp.url, |_| {}).await;
    sidecar.caught_up(last).await;
    let dns = sidecar.dns();

    let a = udp(dns, "web.service.waypost.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(ips(&a.answers), ip_set(&["127.0.0.2", "127.0.0.3"]));
    assert!(a.answers.iter().all(|r| r.ttl == 5), "the default TTL");

    let aaaa = udp(dns, "web.service.waypost.", RecordType::AAAA).await;
    assert_eq!(ips(&aaaa.answers), ip_set(&["::1"]));

    // Names are case-insensitive.
    let upper = udp(dns, "WEB.Service.WAYPOST.", RecordType::A).await;
    assert_eq!(ips(&upper.answers), ip_set(&["127.0.0.2", "127.0.0.3"]));

    // SRV, both forms, with the targets' addresses in the additional section.
    for name in ["_web._tcp.service.waypost.", "web.service.waypost."] {
        let srv = udp(dns, name, RecordType::SRV).await;
        let mut ports: Vec<u16> = srv
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.port),
                _ => None,
            })
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, vec![8001, 8002, 8003], "{name}");
        for record in &srv.answers {
            let RData::SRV(s) = &record.data else {
                unreachable!()
            };
            assert!(
                srv.additionals.iter().any(|x| x.name == s.target),
                "no address for SRV target {}",
                s.target
            );
        }
        assert_eq!(
            ips(&srv.additionals),
            ip_set(&["127.0.0.2", "127.0.0.3", "::1"])
        );
    }

    // A host name is resolved when the snapshot is built: localhost answers as an address.
    let db = udp(dns, "db.service.waypost.", RecordType::A).await;
    assert!(ips(&db.answers).contains(&"127.0.0.1".parse().unwrap()));

    // A tag narrows the answer; an unknown tag is no such name.
    let tagged = udp(dns, "v2.web.service.waypost.", RecordType::A).await;
    assert_eq!(ips(&tagged.answers), ip_set(&["127.0.0.2"]));
    let no_tag = udp(dns, "v9.web.service.waypost.", RecordType::A).await;
    assert_eq!(no_tag.metadata.response_code, ResponseCode::NXDomain);

    // Unknown service: NXDOMAIN with the SOA for negative caching.
    let nx = udp(dns, "nobody.service.waypost.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty() && has_soa(&nx));

    // Known name, absent type: NOERROR, no answers, SOA.
    let nodata = udp(dns, "web.service.waypost.", RecordType::TXT).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty() && has_soa(&nodata));

    // Outside the domain without upstreams: REFUSED.
    let refused = udp(dns, "example.com.", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);

    // The same over TCP.
    let over_tcp = tcp(dns, "web.service.waypost.", RecordType::A).await;
    assert_eq!(ips(&over_tcp.answers), ip_set(&["127.0.0.2", "127.0.0.3"]));

    // Metrics count queries by type and code; /snapshot shows what the sidecar believes.
    let metrics = reqwest::get(sidecar.admin("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("waypost_sidecar_dns_queries_total")
                && l.contains("qtype=\"A\"")
                && l.contains("rcode=\"NXDOMAIN\"")),
        "{metrics}"
    );
    let snapshot: serde_json::Value = reqwest::get(sidecar.admin("/snapshot"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        snapshot["services"]["web"]["instances"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let mut last = 0;
    for i in 1..=100 {
        last = register(&client, "big", &format!("127.0.1.{i}:80"), &[]).await;
    }
    let sidecar = TestSidecar::start(&cp.url, |_| {}).await;
    sidecar.caught_up(last).await;

    // Without EDNS a UDP answer is at most 512 bytes: truncated, TC set.
    let small = udp(sidecar.dns(), "big.service.waypost.", RecordType::A).await;
    assert!(small.metadata.truncation, "TC must be set");
    assert!(small.answers.len() < 100);
    // EDNS raises the limit (capped at 1232 bytes): more fits, still not all 100.
    let edns = udp_edns(sidecar.dns(), "big.service.waypost.", RecordType::A, 4096).await;
    assert!(edns.answers.len() > small.answers.len());
    assert!(edns.metadata.truncation && edns.answers.len() < 100);
    // An answer that fits carries EDNS back, with our buffer size.
    let register_one = register(&client, "one", "127.0.0.5:80", &[]).await;
    sidecar.caught_up(register_one).await;
    let fits = udp_edns(sidecar.dns(), "one.service.waypost.", RecordType::A, 4096).await;
    assert_eq!(fits.edns.map(|e| e.max_payload()), Some(1232));
    // Over TCP the whole answer comes.
    let whole = tcp(sidecar.dns(), "big.service.waypost.", RecordType::A).await;
    assert!(!whole.metadata.truncation);
    assert_eq!(whole.answers.len(), 100);
    sidecar.stop().await;
}

#[tokio::test]
async fn answers_follow_register_deregister_and_expiry() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let sidecar = TestSidecar::start(&cp.url, |_| {}).await;
    let dns = sidecar.dns();
    let name = "api.service.waypost.";

    register(&client, "api", "127.0.0.2:80", &[]).await;
    answers(dns, name, &["127.0.0.2"]).await;
    register(&client, "api", "127.0.0.3:80", &[]).await;
    answers(dns, name, &["127.0.0.2", "127.0.0.3"]).await;
    client
        .deregister(InstanceRef::by_id("api", "127.0.0.2:80"))
        .await
        .unwrap();
    answers(dns, name, &["127.0.0.3"]).await;
    let short = RegisterRequest {
        ttl_seconds: Some(1),
        ..RegisterRequest::new("api", "127.0.0.4:80")
    };
    client.register_once(&short).await.unwrap();
    answers(dns, name, &["127.0.0.3", "127.0.0.4"]).await;
    // Not heartbeated: it expires, and DNS follows.
    answers(dns, name, &["127.0.0.3"]).await;
    // Draining leaves DNS too.
    client
        .drain(InstanceRef::by_id("api", "127.0.0.3:80"), true)
        .await
        .unwrap();
    answers(dns, name, &[]).await;
    let nodata = udp(dns, name, RecordType::A).await;
    assert_eq!(
        nodata.metadata.response_code,
        ResponseCode::NoError,
        "known, none up"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn answers_continue_without_the_control_plane_and_a_restart_serves_the_saved_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let url = cp.url.clone();
    let client = Client::new(&cp.url).unwrap();
    let last = register(&client, "pay", "127.0.0.9:443", &[]).await;
    let sidecar = TestSidecar::start_at(&url, Some(dir.path()), |_| {}).await;
    sidecar.caught_up(last).await;
    let name = "pay.service.waypost.";
    answers(sidecar.dns(), name, &["127.0.0.9"]).await;

    // The control plane goes away: answers continue, marked stale.
    cp.stop().await;
    eventually(DEADLINE, "the sidecar to notice", || async {
        let health: serde_json::Value = reqwest::get(sidecar.admin("/health"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (health["stale"] == true).then_some(())
    })
    .await;
    assert_eq!(a_records(sidecar.dns(), name).await, ip_set(&["127.0.0.9"]));
    sidecar.stop().await;

    // Restarted while the control plane is still down: the saved snapshot answers.
    let restarted = TestSidecar::start_at(&url, Some(dir.path()), |_| {}).await;
    assert_eq!(
        a_records(restarted.dns(), name).await,
        ip_set(&["127.0.0.9"])
    );
    let ready = reqwest::get(restarted.admin("/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["stale"], true);
    let metrics = reqwest::get(restarted.admin("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("waypost_sidecar_stale 1"), "{metrics}");
    restarted.stop().await;
}

#[tokio::test]
async fn names_outside_the_domain_go_to_the_upstream_resolvers() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let last = register(&client, "ledger", "127.0.0.7:80", &[]).await;
    // The upstream is another real DNS server: a second sidecar serving the domain `corp.`.
    let upstream = TestSidecar::start(&cp.url, |c| {
        c.domain = Name::from_ascii("corp.").unwrap();
    })
    .await;
    upstream.caught_up(last).await;
    let upstream_addr = upstream.dns();
    let sidecar = TestSidecar::start(&cp.url, |c| c.upstreams = vec![upstream_addr]).await;
    sidecar.caught_up(last).await;

    let forwarded = udp(sidecar.dns(), "ledger.service.corp.", RecordType::A).await;
    assert_eq!(forwarded.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&forwarded.answers), ip_set(&["127.0.0.7"]));
    let nx = udp(sidecar.dns(), "nobody.service.corp.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    // Its own domain is still answered locally.
    assert_eq!(
        a_records(sidecar.dns(), "ledger.service.waypost.").await,
        ip_set(&["127.0.0.7"])
    );
    sidecar.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn malformed_packets_never_stop_the_responder_and_answers_are_shuffled() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let mut last = 0;
    for i in 1..=6 {
        last = register(&client, "mix", &format!("127.0.2.{i}:80"), &[]).await;
    }
    let sidecar = TestSidecar::start(&cp.url, |_| {}).await;
    sidecar.caught_up(last).await;
    let dns = sidecar.dns();

    // Too short for a header: dropped. A header that promises a question it lacks: FORMERR.
    assert!(udp_raw(dns, b"\x12\x34\x01").await.is_none());
    let broken = [
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 3, b'w', b'e',
    ];
    if let Some(answer) = udp_raw(dns, &broken).await {
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    }
    let mut garbage = query("mix.service.waypost.", RecordType::A, None);
    garbage.truncate(garbage.len() - 3);
    if let Some(answer) = udp_raw(dns, &garbage).await {
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    }

    // Still serving, and the order changes between answers (6 records: 720 orders).
    let mut orders = BTreeSet::new();
    for _ in 0..20 {
        let m = udp(dns, "mix.service.waypost.", RecordType::A).await;
        assert_eq!(m.answers.len(), 6);
        orders.insert(
            m.answers
                .iter()
                .map(|r| r.data.to_string())
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        orders.len() > 1,
        "20 answers in the same order: not shuffled"
    );
    sidecar.stop().await;
}

/// A frame with a correct length prefix whose 5 bytes are no DNS message (not even a header).
const GARBAGE_FRAME: &[u8] = b"\x00\x05abcde";

/// `true` when the server closes `stream` (a read returns end of file) before `until`; any
/// bytes it sends first are a failure (these clients sent no query).
async fn closed_by_server(stream: &mut TcpStream, until: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0)) => true,
        Ok(Ok(n)) => panic!("{n} bytes sent to a client that sent no query"),
        Ok(Err(err)) => panic!("expected an orderly close, got {err}"),
    }
}

#[tokio::test]
async fn dns_tcp_connections_without_a_query_are_closed_counted_and_capped() {
    const CAP: usize = 4;
    let idle = Duration::from_secs(1);
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let last = register(&client, "web", "127.0.0.2:8001", &[]).await;
    let sidecar = TestSidecar::start(&cp.url, |c| {
        c.dns_tcp = TcpLimits {
            idle_timeout: idle,
            max_connections: CAP,
        }
    })
    .await;
    sidecar.caught_up(last).await;
    let dns = sidecar.dns();

    // Twice the cap in silent sockets, then two half frames (a lone length byte; a length and
    // half its message) and a garbage frame.
    let mut silent = Vec::new();
    for _ in 0..2 * CAP {
        silent.push(TcpStream::connect(dns).await.unwrap());
    }
    let query = query("web.service.waypost.", RecordType::A, None);
    let mut lone_byte = TcpStream::connect(dns).await.unwrap();
    lone_byte.write_all(&[0]).await.unwrap();
    let mut half_message = TcpStream::connect(dns).await.unwrap();
    half_message
        .write_all(&(query.len() as u16).to_be_bytes())
        .await
        .unwrap();
    half_message
        .write_all(&query[..query.len() / 2])
        .await
        .unwrap();
    let mut garbage = TcpStream::connect(dns).await.unwrap();
    garbage.write_all(GARBAGE_FRAME).await.unwrap();

    // The cap holds: the sidecar serves CAP of them at once, never more (the rest wait in the
    // backlog).
    let open = "waypost_sidecar_dns_tcp_connections";
    eventually(DEADLINE, "the cap to be reached", || async {
        let n = sidecar.metric(open).await;
        assert!(n <= CAP as f64, "{n} DNS TCP connections open, cap {CAP}");
        (n == CAP as f64).then_some(())
    })
    .await;

    // A normal client behind them is still answered (late, once places free up).
    let answer = tokio::time::timeout(
        idle + DEADLINE,
        tcp(dns, "web.service.waypost.", RecordType::A),
    )
    .await
    .expect("a TCP query answered behind the silent sockets");
    assert_eq!(ips(&answer.answers), ip_set(&["127.0.0.2"]));

    // Every one of the others is closed by the sidecar, and counted.
    let until = tokio::time::Instant::now() + 2 * DEADLINE;
    for (i, stream) in silent
        .iter_mut()
        .chain([&mut lone_byte, &mut half_message, &mut garbage])
        .enumerate()
    {
        assert!(
            closed_by_server(stream, until).await,
            "connection {i} still open"
        );
    }
    let timeout = "waypost_sidecar_dns_tcp_closed_total{reason=\"timeout\"}";
    let malformed = "waypost_sidecar_dns_tcp_closed_total{reason=\"malformed\"}";
    assert_eq!(sidecar.metric(timeout).await, (2 * CAP + 2) as f64);
    assert_eq!(sidecar.metric(malformed).await, 1.0);
    sidecar.stop().await;
}

#[tokio::test]
async fn dns_tcp_queries_keep_a_connection_and_repeated_garbage_frames_do_not() {
    let idle = Duration::from_secs(2);
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let last = register(&client, "web", "127.0.0.2:8001", &[]).await;
    let sidecar = TestSidecar::start(&cp.url, |c| c.dns_tcp.idle_timeout = idle).await;
    sidecar.caught_up(last).await;

    // Queries half an idle timeout apart keep one connection past the timeout (it counts from
    // the last query, not from the accept).
    let mut stream = TcpStream::connect(sidecar.dns()).await.unwrap();
    for _ in 0..3 {
        let answer = tokio::time::timeout(
            DEADLINE,
            tcp_exchange(&mut stream, "web.service.waypost.", RecordType::A),
        )
        .await
        .expect("an answer on the same connection");
        assert_eq!(ips(&answer.answers), ip_set(&["127.0.0.2"]));
        // The client's own pace, not a wait for the server.
        tokio::time::sleep(idle / 2).await;
    }

    // A client that sends a well-framed garbage frame every half idle timeout: each complete
    // frame restarted hickory's own timer, which kept such a client forever. Now the first
    // garbage frame closes the connection. Bounded by `until`.
    let mut garbage = TcpStream::connect(sidecar.dns()).await.unwrap();
    let until = tokio::time::Instant::now() + idle + DEADLINE;
    let mut frames = 0;
    let closed = loop {
        if tokio::time::Instant::now() >= until {
            break false;
        }
        if garbage.write_all(GARBAGE_FRAME).await.is_err() {
            break true;
        }
        frames += 1;
        let pause = (tokio::time::Instant::now() + idle / 2).min(until);
        if closed_by_server(&mut garbage, pause).await {
            break true;
        }
    };
    assert!(closed, "{frames} garbage frames, still open");
    assert_eq!(frames, 1, "closed at the first garbage frame");
    let malformed = "waypost_sidecar_dns_tcp_closed_total{reason=\"malformed\"}";
    assert_eq!(sidecar.metric(malformed).await, 1.0);
    sidecar.stop().await;
}

/// A query for `name` and `rtype` in `class`, with EDNS of `version` when given.
fn query_in(name: &str, rtype: RecordType, class: DNSClass, edns: Option<u8>) -> Vec<u8> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    let mut question = Query::query(Name::from_ascii(name).unwrap(), rtype);
    question.set_query_class(class);
    m.add_query(question);
    if let Some(version) = edns {
        let mut e = Edns::new();
        e.set_max_payload(1232).set_version(version);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// A control plane with `web` at 127.0.0.2:8001, and a sidecar that has it.
async fn web_at_a_sidecar() -> (TestControlPlane, TestSidecar) {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let last = register(&client, "web", "127.0.0.2:8001", &[]).await;
    let sidecar = TestSidecar::start(&cp.url, |_| {}).await;
    sidecar.caught_up(last).await;
    (cp, sidecar)
}

#[tokio::test]
async fn an_edns_version_above_0_gets_badvers() {
    let (_cp, sidecar) = web_at_a_sidecar().await;
    let dns = sidecar.dns();
    let name = "web.service.waypost.";

    // EDNS version 1, for a name the fast path answers at version 0 and for one it leaves to
    // the handler: BADVERS (16: 0 in the header, 1 in the OPT record's high bits), an OPT
    // record of version 0, no records. Over TCP the same.
    for asked in [name, "nobody.service.waypost."] {
        let bytes = query_in(asked, RecordType::A, DNSClass::IN, Some(1));
        let over_udp = udp_raw(dns, &bytes).await.expect("a UDP answer");
        for (m, transport) in [(over_udp, "UDP"), (tcp_raw(dns, &bytes).await, "TCP")] {
            let case = format!("{asked} over {transport}");
            assert_eq!(u16::from(m.metadata.response_code), 16, "{case}");
            let edns = m.edns.as_ref().expect("an OPT record");
            assert_eq!(edns.version(), 0, "{case}");
            assert_eq!(edns.rcode_high(), 1, "{case}");
            assert!(m.answers.is_empty(), "{case}");
            assert!(m.authorities.is_empty(), "{case}");
            assert!(m.additionals.is_empty(), "{case}");
        }
    }
    let badvers = "waypost_sidecar_dns_queries_total{qtype=\"A\",rcode=\"BADVERS\"}";
    assert_eq!(sidecar.metric(badvers).await, 4.0);
    // Version 0 is answered.
    let v0 = udp_raw(dns, &query_in(name, RecordType::A, DNSClass::IN, Some(0)))
        .await
        .expect("a UDP answer");
    assert_eq!(v0.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&v0.answers), ip_set(&["127.0.0.2"]));
    sidecar.stop().await;
}

#[tokio::test]
async fn questions_in_another_class_than_in_are_refused() {
    let (_cp, sidecar) = web_at_a_sidecar().await;
    let dns = sidecar.dns();
    let name = "web.service.waypost.";

    // The domain is in class IN only: a question in another class is refused, not answered
    // with IN records, with or without EDNS.
    for class in [DNSClass::CH, DNSClass::HS, DNSClass::ANY] {
        for edns in [None, Some(0)] {
            let bytes = query_in(name, RecordType::A, class, edns);
            let m = udp_raw(dns, &bytes).await.expect("a UDP answer");
            let case = format!("{class:?} EDNS {edns:?}");
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{case}");
            assert!(!m.metadata.authoritative, "{case}");
            assert!(m.answers.is_empty() && m.authorities.is_empty(), "{case}");
            assert_eq!(m.queries[0].query_class(), class, "{case}");
        }
    }
    let refused = "waypost_sidecar_dns_queries_total{qtype=\"A\",rcode=\"REFUSED\"}";
    assert_eq!(sidecar.metric(refused).await, 6.0);
    // Class IN still answers.
    assert_eq!(a_records(dns, name).await, ip_set(&["127.0.0.2"]));
    sidecar.stop().await;
}

#[tokio::test]
async fn responses_get_no_answer_not_even_formerr() {
    let (_cp, sidecar) = web_at_a_sidecar().await;
    let dns = sidecar.dns();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // QR set: a header promising a question it lacks (FORMERR, were it a query), and whole
    // responses for a name the fast path answers and for one the handler does.
    let broken = [
        0x12, 0x34, 0x81, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 3, b'w', b'e',
    ];
    let mut responses = vec![broken.to_vec()];
    for name in ["web.service.waypost.", "nobody.service.waypost."] {
        let mut response = query(name, RecordType::A, None);
        response[2] |= 0x80;
        responses.push(response);
    }
    // Each is followed by a query from the same socket (one the handler answers, as it would
    // have answered the FORMERR): the first datagram back must be that query's answer.
    for (i, response) in responses.iter().enumerate() {
        socket.send_to(response, dns).await.unwrap();
        let follow = query("nobody.service.waypost.", RecordType::A, None);
        socket.send_to(&follow, dns).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(DEADLINE, socket.recv_from(&mut buf))
            .await
            .expect("an answer to the following query")
            .unwrap();
        let answer = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(
            answer.metadata.id,
            u16::from_be_bytes([follow[0], follow[1]]),
            "{i}"
        );
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain, "{i}");
    }
    // Nothing was dropped for want of room; the series shows from the start.
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("waypost_sidecar_dns_dropped_total{reason=\"busy\"} 0\n"),
        "{metrics}"
    );
    sidecar.stop().await;
}
