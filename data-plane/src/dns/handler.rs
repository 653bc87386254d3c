//! The DNS request handler: reads the current snapshot (no lock) and answers.

use std::{net::IpAddr, sync::Arc};

use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode},
    rr::{DNSClass, Record, RecordType},
};
use hickory_server::{
    net::runtime::Time,
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};

use crate::{
    dns::{
        forward::Forwarder,
        names::{self, Lookup},
        records::RecordBuilder,
        weighted::WeightedRecords,
    },
    metrics::{Metrics, QueryLabels},
    snapshot::{Snapshots, Target},
};

/// The largest UDP answer we send, whatever the client advertises (RFC 6891 and the 2020 DNS
/// flag day recommend 1232 to avoid fragmentation).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;

/// Answers queries for the domain from the snapshot; forwards or refuses the rest. One, shared
/// by the UDP loop (for what its fast path leaves) and the TCP listener.
#[derive(Debug, Clone)]
pub struct Handler {
    pub(crate) snapshots: Snapshots,
    pub(crate) records: RecordBuilder,
    pub(crate) forwarder: Option<Forwarder>,
    pub(crate) metrics: Arc<Metrics>,
}

/// An answer before encoding.
#[derive(Default)]
struct Answer {
    code: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    /// Negative answers carry the zone's SOA in the authority section.
    soa: Option<Record>,
}

impl Answer {
    fn negative(code: ResponseCode, soa: Record) -> Self {
        Self {
            code,
            soa: Some(soa),
            ..Self::default()
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder_edns = response_edns(request.edns.as_ref());
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &builder_edns {
            builder.edns(edns);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let (qtype, answer) = match (request.metadata.op_code, request.request_info()) {
            // An EDNS version we do not speak (we speak 0): BADVERS, with our OPT record (of
            // version 0) and nothing else, so the client can fall back (RFC 6891 6.1.3). The
            // code's high bits go in the OPT record, which the answer always has here.
            _ if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) => (
                request
                    .request_info()
                    .map_or(RecordType::Unknown(0), |info| info.query.query_type()),
                Answer {
                    code: ResponseCode::BADVERS,
                    ..Answer::default()
                },
            ),
            (OpCode::Query, Ok(info)) => {
                let qtype = info.query.query_type();
                let lookup = names::parse(info.query.name(), self.records.domain());
                if lookup == Lookup::Outside {
                    return self
                        .outside(request, builder, qtype, response, metadata)
                        .await;
                }
                // The domain exists in class IN only: a question in another class (CH, HS,
                // ANY) is refused, as a name outside the domain is without upstreams, rather
                // than answered with IN records. REFUSED and not NOTIMP: the query is
                // understood, and a server that serves the class elsewhere may answer it.
                if info.query.query_class() != DNSClass::IN {
                    (
                        qtype,
                        Answer {
                            code: ResponseCode::Refused,
                            ..Answer::default()
                        },
                    )
                } else {
                    metadata.authoritative = true;
                    (qtype, self.answer(&lookup, qtype))
                }
            }
            (OpCode::Query, Err(_)) => (
                RecordType::Unknown(0),
                Answer {
                    code: ResponseCode::FormErr,
                    ..Answer::default()
                },
            ),
            _ => (
                RecordType::Unknown(0),
                Answer {
                    code: ResponseCode::NotImp,
                    ..Answer::default()
                },
            ),
        };
        metadata.response_code = answer.code;
        self.count(&self.metrics.queries, qtype, answer.code);
        let message = builder.build(
            metadata,
            answer.answers.iter(),
            std::iter::empty(),
            answer.soa.iter(),
            answer.additionals.iter(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(err) => {
                tracing::warn!(%err, "cannot send a DNS answer");
                servfail(request)
            }
        }
    }
}

impl Handler {
    fn answer(&self, lookup: &Lookup, qtype: RecordType) -> Answer {
        let snapshot = self.snapshots.current();
        let soa = || self.records.soa(snapshot.revision);
        // Every list of records is answered in a weighted random order, so that a client that
        // takes the first address (or the first SRV record, ignoring RFC 2782's own weighted
        // pick) spreads load by weight, as the proxy and the SDK do.
        let mut rng = rand::rng();
        let mut pick = |records: &WeightedRecords| records.weighted_order(&mut rng);
        match lookup {
            Lookup::Apex => match qtype {
                RecordType::SOA => Answer {
                    answers: vec![soa()],
                    ..Answer::default()
                },
                _ => Answer::negative(ResponseCode::NoError, soa()),
            },
            Lookup::Service { service, tag } => {
                let Some(view) = snapshot.services.get(service) else {
                    return Answer::negative(ResponseCode::NXDomain, soa());
                };
                let tagged;
                let records = match tag {
                    None => &view.records,
                    Some(tag) => {
                        if !view
                            .instances
                            .iter()
                            .any(|i| i.tags.iter().any(|t| t == tag))
                        {
                            return Answer::negative(ResponseCode::NXDomain, soa());
                        }
                        tagged = self
                            .records
                            .tagged(service, tag, view.up.iter().map(Target::up));
                        &tagged
                    }
                };
                let (answers, additionals) = match qtype {
                    RecordType::A => (pick(&records.a), Vec::new()),
                    RecordType::AAAA => (pick(&records.aaaa), Vec::new()),
                    RecordType::ANY => {
                        let mut all = pick(&records.a);
                        all.extend(pick(&records.aaaa));
                        (all, Vec::new())
                    }
                    RecordType::SRV => (pick(&records.srv), records.targets.clone()),
                    _ => (Vec::new(), Vec::new()),
                };
                positive_or_nodata(answers, additionals, soa)
            }
            Lookup::Srv { service } => {
                let Some(view) = snapshot.services.get(service) else {
                    return Answer::negative(ResponseCode::NXDomain, soa());
                };
                match qtype {
                    RecordType::SRV | RecordType::ANY => positive_or_nodata(
                        pick(&view.records.srv_rfc2782),
                        view.records.targets.clone(),
                        soa,
                    ),
                    _ => Answer::negative(ResponseCode::NoError, soa()),
                }
            }
            Lookup::Addr(ip) => {
                let owner = self
                    .records
                    .domain()
                    .prepend_label("addr")
                    .and_then(|n| n.prepend_label(names::hex_label(*ip)));
                let fits = matches!(
                    (qtype, ip),
                    (RecordType::A | RecordType::ANY, IpAddr::V4(_))
                        | (RecordType::AAAA | RecordType::ANY, IpAddr::V6(_))
                );
                match owner {
                    Ok(owner) if fits => Answer {
                        answers: vec![self.records.address(owner, *ip)],
                        ..Answer::default()
                    },
                    _ => Answer::negative(ResponseCode::NoError, soa()),
                }
            }
            Lookup::NoSuchName | Lookup::Outside => Answer::negative(ResponseCode::NXDomain, soa()),
        }
    }

    /// A name outside the domain: forwarded when upstreams are set, else REFUSED.
    async fn outside<R: ResponseHandler>(
        &self,
        request: &Request,
        builder: MessageResponseBuilder<'_>,
        qtype: RecordType,
        mut response: R,
        mut metadata: Metadata,
    ) -> ResponseInfo {
        let Some(forwarder) = &self.forwarder else {
            metadata.response_code = ResponseCode::Refused;
            self.count(&self.metrics.queries, qtype, ResponseCode::Refused);
            let message = builder.build_no_records(metadata);
            return response.send_response(message).await.unwrap_or_else(|err| {
                tracing::warn!(%err, "cannot send a DNS answer");
                servfail(request)
            });
        };
        let upstream = forwarder.forward(request.as_slice()).await;
        let (code, answers, authorities, additionals) = match upstream {
            Some(message) => {
                metadata.recursion_available = message.metadata.recursion_available;
                metadata.authentic_data = message.metadata.authentic_data;
                (
                    message.metadata.response_code,
                    message.answers,
                    message.authorities,
                    message.additionals,
                )
            }
            None => (ResponseCode::ServFail, Vec::new(), Vec::new(), Vec::new()),
        };
        metadata.response_code = code;
        self.count(&self.metrics.forwarded, qtype, code);
        self.count(&self.metrics.queries, qtype, code);
        let message = builder.build(
            metadata,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            additionals.iter(),
        );
        response.send_response(message).await.unwrap_or_else(|err| {
            tracing::warn!(%err, "cannot send a DNS answer");
            servfail(request)
        })
    }

    fn count(
        &self,
        family: &prometheus_client::metrics::family::Family<
            QueryLabels,
            prometheus_client::metrics::counter::Counter,
        >,
        qtype: RecordType,
        code: ResponseCode,
    ) {
        family
            .get_or_create(&QueryLabels {
                qtype: qtype_label(qtype),
                rcode: rcode_label(code),
            })
            .inc();
    }
}

fn positive_or_nodata(
    answers: Vec<Record>,
    additionals: Vec<Record>,
    soa: impl FnOnce() -> Record,
) -> Answer {
    if answers.is_empty() {
        return Answer::negative(ResponseCode::NoError, soa());
    }
    Answer {
        code: ResponseCode::NoError,
        answers,
        additionals,
        soa: None,
    }
}

/// With EDNS in the query, the answer carries EDNS too, sized to what the client can take (at
/// most [`MAX_UDP_PAYLOAD`]); hickory truncates a UDP answer to it and sets TC.
fn response_edns(query: Option<&Edns>) -> Option<Edns> {
    let query = query?;
    let mut edns = Edns::new();
    edns.set_max_payload(query.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    Some(edns)
}

fn servfail(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

fn qtype_label(qtype: RecordType) -> &'static str {
    match qtype {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::SOA => "SOA",
        RecordType::ANY => "ANY",
        RecordType::NS => "NS",
        RecordType::TXT => "TXT",
        RecordType::PTR => "PTR",
        RecordType::CNAME => "CNAME",
        RecordType::MX => "MX",
        _ => "other",
    }
}

fn rcode_label(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}
