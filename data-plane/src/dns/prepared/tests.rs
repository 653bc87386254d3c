//! Prepared answers against hickory's encoder: for every order of each set, the sections
//! written from the prepared pieces equal, byte for byte, what hickory encodes for the same
//! records in the same order after the same question.

use std::{net::IpAddr, time::Duration};

use hickory_proto::{
    op::{Message, MessageType, Metadata, OpCode, Query},
    rr::{Name, Record, RecordType},
    serialize::binary::BinEncoder,
};
use hickory_server::{net::xfer::Protocol, server::Request, zone_handler::MessageResponseBuilder};
use waypost_model::Instance;

use super::*;
use crate::dns::records::{RecordBuilder, ServiceRecords};

fn builder() -> RecordBuilder {
    RecordBuilder::new(
        Name::from_ascii("waypost.").unwrap(),
        Duration::from_secs(5),
    )
}

/// An instance at `host:port` with `weight`.
fn instance(host: &str, port: u16, weight: u32) -> Instance {
    serde_json::from_value(serde_json::json!({
        "id": format!("{host}:{port}"), "service": "web", "address": format!("{host}:{port}"),
        "host": host, "port": port, "tags": [], "metadata": {}, "weight": weight,
        "status": "up", "ttl_seconds": 30, "registered_at": "2026-11-23T00:00:00Z",
        "revision": 1
    }))
    .unwrap()
}

/// The records of `web` for instances given as (host, port, weight, addresses).
fn records(instances: &[(&str, u16, u32, &[&str])]) -> ServiceRecords {
    let built: Vec<(Instance, Vec<IpAddr>)> = instances
        .iter()
        .map(|(host, port, weight, addrs)| {
            (
                instance(host, *port, *weight),
                addrs.iter().map(|a| a.parse().unwrap()).collect(),
            )
        })
        .collect();
    builder().service("web", built.iter().map(|(i, a)| (i, a.as_slice())), None)
}

/// Every permutation of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for rest in permutations(n - 1) {
        for at in 0..=rest.len() {
            let mut order = rest.clone();
            order.insert(at, n - 1);
            all.push(order);
        }
    }
    all
}

/// A query for `name` and `rtype` in wire form.
fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

/// What hickory encodes for `query` answered with `answers` then `additionals`, as the handler
/// builds an answer.
fn hickory(query: &[u8], answers: &[&Record], additionals: &[Record]) -> Vec<u8> {
    let request = Request::from_bytes(
        query.to_vec(),
        "127.0.0.1:5353".parse().unwrap(),
        Protocol::Udp,
    )
    .unwrap();
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = true;
    let message = MessageResponseBuilder::from_message_request(&request).build(
        metadata,
        answers.iter().copied(),
        std::iter::empty(),
        std::iter::empty(),
        additionals.iter(),
    );
    let mut bytes = Vec::new();
    message
        .destructive_emit(&mut BinEncoder::new(&mut bytes))
        .unwrap();
    bytes
}

/// Checks every order of `set` (with `additionals`) after a question for `name`.
fn same_as_hickory(name: &str, rtype: RecordType, set: &WeightedRecords, additionals: &[Record]) {
    let prepared = Prepared::new(set, additionals).expect("a prepared answer");
    let query = query(name, rtype);
    let question_end = query.len();
    for order in permutations(set.records().len()) {
        let answers: Vec<&Record> = order.iter().map(|&i| &set.records()[i]).collect();
        let expected = hickory(&query, &answers, additionals);
        let mut ours = expected[..question_end].to_vec();
        let counts = prepared.write(&mut ours, &order);
        assert_eq!(
            ours[question_end..],
            expected[question_end..],
            "{name} {rtype} in order {order:?}"
        );
        assert_eq!(ours.len(), prepared.message_len(question_end - 12));
        let header = Message::from_vec(&expected).unwrap();
        assert_eq!(
            counts,
            (header.answers.len() as u16, header.additionals.len() as u16)
        );
    }
}

#[test]
fn addresses_in_every_order_are_hickorys_bytes() {
    let web = records(&[
        ("127.0.0.2", 8001, 3, &["127.0.0.2"]),
        ("127.0.0.3", 8002, 1, &["127.0.0.3"]),
        ("127.0.0.4", 8003, 1, &["127.0.0.4"]),
        ("127.0.0.5", 8004, 2, &["127.0.0.5"]),
        ("::1", 8005, 1, &["::1"]),
        ("fd00::2", 8006, 1, &["fd00::2"]),
    ]);
    same_as_hickory("web.service.waypost.", RecordType::A, &web.a, &[]);
    // The question's case is the client's; the answers' owner is ours either way.
    same_as_hickory("WeB.sErViCe.WAYpost.", RecordType::A, &web.a, &[]);
    same_as_hickory("web.service.waypost.", RecordType::AAAA, &web.aaaa, &[]);
    let one = records(&[("127.0.0.2", 8001, 1, &["127.0.0.2"])]);
    same_as_hickory("web.service.waypost.", RecordType::A, &one.a, &[]);
}

#[test]
fn srv_records_in_every_order_are_hickorys_bytes() {
    // Two ports on one address (one target shared by two SRV records), an IPv6 address, and
    // a host name that resolved to two addresses (one target owning two additional records).
    let web = records(&[
        ("127.0.0.2", 8001, 3, &["127.0.0.2"]),
        ("127.0.0.2", 8002, 1, &["127.0.0.2"]),
        ("::1", 8003, 1, &["::1"]),
        ("db.example", 8004, 1, &["10.0.0.1", "10.0.0.2"]),
    ]);
    assert_eq!(web.targets.len(), 4);
    same_as_hickory(
        "web.service.waypost.",
        RecordType::SRV,
        &web.srv,
        &web.targets,
    );
    same_as_hickory(
        "_WEB._tcp.service.waypost.",
        RecordType::SRV,
        &web.srv_rfc2782,
        &web.targets,
    );
}

#[test]
fn srv_targets_that_end_other_names_are_pointed_to_as_hickory_does() {
    // `example.` ends `a.example.`, and `waypost.` ends the answers' owner: hickory points an
    // additional owner to the first name that ends with it, whichever record that is.
    let web = records(&[
        ("a.example", 80, 1, &["10.0.0.1"]),
        ("example", 81, 1, &["10.0.0.2"]),
        ("waypost", 82, 1, &["10.0.0.3"]),
        ("unresolved.example", 83, 1, &[]),
    ]);
    same_as_hickory(
        "web.service.waypost.",
        RecordType::SRV,
        &web.srv,
        &web.targets,
    );
}

#[test]
fn empty_and_oversized_sets_are_not_prepared() {
    let none = records(&[]);
    assert!(none.prepared.a.is_none() && none.prepared.srv.is_none());
    // A host name that did not resolve: an SRV record, no address.
    let unresolved = records(&[("db.example", 5432, 1, &[])]);
    assert!(unresolved.prepared.a.is_none());
    assert!(unresolved.prepared.srv.is_some());

    let hosts: Vec<String> = (0..=MAX_RECORDS)
        .map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let built: Vec<(Instance, Vec<IpAddr>)> = hosts
        .iter()
        .map(|h| (instance(h, 80, 1), vec![h.parse().unwrap()]))
        .collect();
    let too_many = builder().service("web", built.iter().map(|(i, a)| (i, a.as_slice())), None);
    assert_eq!(too_many.a.records().len(), MAX_RECORDS + 1);
    assert!(too_many.prepared.a.is_none(), "more than MAX_RECORDS");
    // Each SRV target adds its labels to hickory's compression candidates: past 64, hickory
    // stops remembering them, and the set is left to it.
    assert!(too_many.prepared.srv.is_none());
    let fits = builder().service(
        "web",
        built[..MAX_RECORDS].iter().map(|(i, a)| (i, a.as_slice())),
        None,
    );
    assert!(fits.prepared.a.is_some());
}

#[test]
fn a_vip_is_prepared_as_the_single_address() {
    let web = instance("127.0.0.2", 8001, 1);
    let ips = ["127.0.0.2".parse().unwrap()];
    let vip = "127.240.0.1".parse().unwrap();
    let records = builder().service("web", [(&web, &ips[..])], Some(vip));
    same_as_hickory("web.service.waypost.", RecordType::A, &records.a, &[]);
    assert!(records.prepared.aaaa.is_none());
}
