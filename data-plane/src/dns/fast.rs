//! The UDP fast path: a query for a service's addresses or SRV records, answered from the
//! bytes prepared with the snapshot ([`super::prepared`]) without building a message.
//!
//! It reads just enough of a query to know that it is the plain kind (a standard query with
//! one question of class IN, no unusual flag, at most an OPT record) for a name the snapshot
//! has prepared answers for, and that the whole answer fits what the client can take. Then it
//! writes the header (the query's id, RD and CD copied as hickory does), the question as the
//! client sent it (so a 0x20-randomised case comes back unchanged), and the prepared sections
//! in a weighted random order drawn as [`super::handler`] draws it, plus an OPT record when
//! the query had one. Anything else returns `None` and is answered by the handler, through
//! hickory, exactly as before: other types and names, negative answers (their SOA carries the
//! revision), tags, answers that need truncating, malformed or unusual messages.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::{
    dns::{
        handler::MAX_UDP_PAYLOAD,
        prepared::{MAX_RECORDS, Prepared},
        weighted::Order,
    },
    metrics::{Metrics, QueryLabels},
    snapshot::{Snapshot, Snapshots},
};

/// The answer size without EDNS (RFC 1035 4.2.1).
const PLAIN_UDP_PAYLOAD: u16 = 512;

/// The OPT record of an answer: root owner, type 41, the payload size (written in), and a
/// zero TTL (extended code, version 0, no flags) and data length.
const OPT: [u8; 11] = [0, 0, 41, 0, 0, 0, 0, 0, 0, 0, 0];

/// Record types the fast path answers.
const A: u16 = 1;
const AAAA: u16 = 28;
const SRV: u16 = 33;

/// EDNS options hickory parses (NSID, DAU, client subnet): a malformed one is a FORMERR there,
/// so queries carrying them take the ordinary path.
const PARSED_OPTIONS: [u16; 3] = [3, 5, 8];

/// What a query asks for, when it is the plain kind.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Query<'a> {
    /// The query's id.
    id: [u8; 2],
    /// The RD and CD flags, where the answer's header has them.
    flags: [u8; 2],
    /// The question in wire form, as received.
    question: &'a [u8],
    /// Where each label of the question's name starts (its length byte) in `question`: the
    /// first `label_count` (a name of 255 bytes has at most 127 labels).
    labels: [u8; 128],
    label_count: usize,
    qtype: u16,
    /// With an OPT record: the payload size the answer announces and may fill.
    edns: Option<u16>,
}

impl<'a> Query<'a> {
    /// Reads `packet`, or `None` unless it is the plain kind of query.
    pub(crate) fn parse(packet: &'a [u8]) -> Option<Self> {
        let header = packet.get(..12)?;
        // QR, opcode, AA and TC clear (RD may be set); RA, Z and the code clear (AD, CD may be
        // set); one question, nothing else but at most one OPT record.
        if header[2] & 0xFE != 0 || header[3] & 0xCF != 0 {
            return None;
        }
        let counts = [
            u16::from_be_bytes([header[4], header[5]]),
            u16::from_be_bytes([header[6], header[7]]),
            u16::from_be_bytes([header[8], header[9]]),
            u16::from_be_bytes([header[10], header[11]]),
        ];
        if counts[..3] != [1, 0, 0] || counts[3] > 1 {
            return None;
        }
        let mut labels = [0u8; 128];
        let mut label_count = 0;
        let mut at = 12;
        loop {
            let len = *packet.get(at)?;
            if len == 0 {
                break;
            }
            // A compression pointer or an extended label type: not the plain kind.
            if len > 63 {
                return None;
            }
            *labels.get_mut(label_count)? = u8::try_from(at - 12).ok()?;
            label_count += 1;
            at += 1 + usize::from(len);
        }
        let name_end = at + 1;
        if name_end - 12 > 255 {
            return None;
        }
        let fixed = packet.get(name_end..name_end + 4)?;
        let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        if fixed[2..] != [0, 1] {
            return None;
        }
        let question_end = name_end + 4;
        let edns = match counts[3] {
            0 if packet.len() == question_end => None,
            1 => Some(opt(packet.get(question_end..)?)?),
            _ => return None,
        };
        Some(Self {
            id: [header[0], header[1]],
            flags: [header[2] & 0x01, header[3] & 0x10],
            question: &packet[12..question_end],
            labels,
            label_count,
            qtype,
            edns,
        })
    }

    /// Label `i` of the question's name.
    fn label(&self, i: usize) -> &'a [u8] {
        let at = usize::from(self.labels[i]);
        let len = usize::from(self.question[at]);
        &self.question[at + 1..at + 1 + len]
    }
}

/// Reads the OPT record that ends a query: the payload size to answer with, or `None` when it
/// is anything but a plain EDNS(0) record ending the packet.
fn opt(record: &[u8]) -> Option<u16> {
    let fixed = record.get(..11)?;
    // Root owner, type OPT, no extended code, version 0 (the DO flag and others may be set).
    if fixed[0] != 0 || fixed[1..3] != [0, 41] || fixed[5..7] != [0, 0] {
        return None;
    }
    let payload = u16::from_be_bytes([fixed[3], fixed[4]]);
    let len = usize::from(u16::from_be_bytes([fixed[9], fixed[10]]));
    let mut options = record.get(11..)?;
    if options.len() != len {
        return None;
    }
    while !options.is_empty() {
        let code = u16::from_be_bytes([*options.first()?, *options.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*options.get(2)?, *options.get(3)?]));
        if PARSED_OPTIONS.contains(&code) {
            return None;
        }
        options = options.get(4 + len..)?;
    }
    // As the handler's answer announces it (`response_edns`).
    Some(payload.clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD))
}

/// Which prepared answer a query gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    A,
    Aaaa,
    Srv,
    SrvRfc2782,
}

impl Kind {
    /// The `qtype` label of the query metrics.
    fn label(self) -> &'static str {
        match self {
            Kind::A => "A",
            Kind::Aaaa => "AAAA",
            Kind::Srv | Kind::SrvRfc2782 => "SRV",
        }
    }
}

/// The domain's labels, lowercase, to match query names against.
#[derive(Debug, Clone)]
pub(crate) struct Domain {
    labels: Vec<Box<[u8]>>,
}

impl Domain {
    /// The labels of `domain` (a fully qualified name).
    pub(crate) fn new(domain: &hickory_proto::rr::Name) -> Self {
        Self {
            labels: domain
                .iter()
                .map(|l| l.to_ascii_lowercase().into_boxed_slice())
                .collect(),
        }
    }

    /// The service and the answer a question asks for: `<service>.service.D` (A, AAAA, SRV)
    /// or `_<service>._tcp.service.D` (SRV), as the naming scheme reads them
    /// ([`super::names::parse`]). The service name is written lowercase into `name`.
    fn lookup<'n>(&self, query: &Query<'_>, name: &'n mut [u8; 63]) -> Option<(&'n str, Kind)> {
        let (n, d) = (query.label_count, self.labels.len());
        let relative = n.checked_sub(d + 1)?;
        for (i, label) in self.labels.iter().enumerate() {
            if !query.label(relative + 1 + i).eq_ignore_ascii_case(label) {
                return None;
            }
        }
        if !query.label(relative).eq_ignore_ascii_case(b"service") {
            return None;
        }
        let (service, kind) = match (relative, query.qtype) {
            (1, A) => (query.label(0), Kind::A),
            (1, AAAA) => (query.label(0), Kind::Aaaa),
            (1, SRV) => (query.label(0), Kind::Srv),
            (2, SRV) if query.label(1).eq_ignore_ascii_case(b"_tcp") => {
                let service = query.label(0).strip_prefix(b"_")?;
                (service, Kind::SrvRfc2782)
            }
            _ => return None,
        };
        let name = &mut name[..service.len()];
        name.copy_from_slice(service);
        name.make_ascii_lowercase();
        Some((std::str::from_utf8(name).ok()?, kind))
    }
}

/// Writes the answer to `query` from `snapshot` into `out`, with the answers in an order drawn
/// in `order`; the kind of answer, or `None` when the query is not the fast path's.
fn answer(
    snapshot: &Snapshot,
    domain: &Domain,
    query: &Query<'_>,
    order: &mut Order,
    out: &mut Vec<u8>,
) -> Option<Kind> {
    let mut name = [0u8; 63];
    let (service, kind) = domain.lookup(query, &mut name)?;
    let prepared = &snapshot.services.get(service)?.records.prepared;
    let prepared: &Prepared = match kind {
        Kind::A => prepared.a.as_ref(),
        Kind::Aaaa => prepared.aaaa.as_ref(),
        Kind::Srv => prepared.srv.as_ref(),
        Kind::SrvRfc2782 => prepared.srv_rfc2782.as_ref(),
    }?;
    let limit = query.edns.unwrap_or(PLAIN_UDP_PAYLOAD);
    let opt_len = if query.edns.is_some() { OPT.len() } else { 0 };
    // An answer that needs truncating is hickory's to truncate.
    if prepared.message_len(query.question.len()) + opt_len > usize::from(limit) {
        return None;
    }
    let (weights, uneven) = prepared.weights();
    let order = order.draw(weights, uneven, &mut rand::rng());
    debug_assert!(order.len() <= MAX_RECORDS);
    out.clear();
    out.extend_from_slice(&query.id);
    // QR and AA (authoritative for the domain), the query's RD; its CD, no RA, NOERROR.
    out.extend_from_slice(&[0x84 | query.flags[0], query.flags[1]]);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(query.question);
    let (answers, mut additionals) = prepared.write(out, order);
    if let Some(payload) = query.edns {
        let at = out.len();
        out.extend_from_slice(&OPT);
        out[at + 3..at + 5].copy_from_slice(&payload.to_be_bytes());
        additionals += 1;
    }
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    out[10..12].copy_from_slice(&additionals.to_be_bytes());
    Some(kind)
}

/// The fast path of one UDP receive loop: what it reads, and the room it writes in.
#[derive(Debug)]
pub(crate) struct FastPath {
    snapshots: Snapshots,
    domain: Domain,
    metrics: Arc<Metrics>,
    /// The `dns_queries` counters of NOERROR answers by type (A, AAAA, SRV), looked up at the
    /// first answer of each (so a series appears as it would from the handler).
    counters: [Option<Counter>; 3],
    order: Order,
}

impl FastPath {
    /// A fast path answering from `snapshots` for `domain`, counting in `metrics`.
    pub(crate) fn new(snapshots: Snapshots, domain: Domain, metrics: Arc<Metrics>) -> Self {
        Self {
            snapshots,
            domain,
            metrics,
            counters: [None, None, None],
            order: Order::default(),
        }
    }

    /// Writes the answer to `packet` into `out` and counts it; `false` when the ordinary path
    /// must answer it.
    pub(crate) fn answer(&mut self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(query) = Query::parse(packet) else {
            return false;
        };
        let snapshot = self.snapshots.current();
        let Some(kind) = answer(&snapshot, &self.domain, &query, &mut self.order, out) else {
            return false;
        };
        let slot = match kind {
            Kind::A => 0,
            Kind::Aaaa => 1,
            Kind::Srv | Kind::SrvRfc2782 => 2,
        };
        self.counters[slot]
            .get_or_insert_with(|| {
                self.metrics
                    .queries
                    .get_or_create(&QueryLabels {
                        qtype: kind.label(),
                        rcode: "NOERROR",
                    })
                    .clone()
            })
            .inc();
        self.metrics.dns_prepared.inc();
        true
    }
}

#[cfg(test)]
mod tests;
