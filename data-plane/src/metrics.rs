//! Every metric of the sidecar, named and registered in one place.

use std::{
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// A DNS query's type and answer code, as static strings (no allocation per query).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueryLabels {
    pub(crate) qtype: &'static str,
    pub(crate) rcode: &'static str,
}

/// Why the sidecar closed a DNS-over-TCP connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CloseLabel {
    pub(crate) reason: &'static str,
}

/// Why the sidecar dropped a DNS query received over UDP without answering it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabel {
    pub(crate) reason: &'static str,
}

/// The reasons of `dns_dropped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// As many queries as allowed were already with the handler (forwarded ones wait for
    /// their upstream).
    Busy,
    /// A prepared answer found the socket's send buffer full.
    SendBufferFull,
}

impl DropReason {
    const ALL: [Self; 2] = [Self::Busy, Self::SendBufferFull];

    fn label(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::SendBufferFull => "send_buffer_full",
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub(crate) queries: Family<QueryLabels, Counter>,
    pub(crate) revision: Gauge,
    pub(crate) stale: Gauge,
    pub(crate) lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub(crate) reconnects: Gauge,
    /// Snapshots applied from the change stream (the saved one read at start is not counted).
    pub(crate) snapshots: Counter,
    pub(crate) services: Gauge,
    pub(crate) protected_services: Gauge,
    pub(crate) instances: Gauge,
    /// Seconds from a change's arrival to the publication of its snapshot.
    pub(crate) apply_seconds: Histogram,
    pub(crate) forwarded: Family<QueryLabels, Counter>,
    /// DNS queries answered over UDP from prepared bytes (also counted in `queries`).
    pub(crate) dns_prepared: Counter,
    pub(crate) dns_tcp_connections: Gauge,
    pub(crate) dns_tcp_closed: Family<CloseLabel, Counter>,
    dns_dropped: Family<DropLabel, Counter>,
    proxy_requests: Family<OutcomeLabel, Counter>,
    /// The counters of `proxy_requests`, looked up once (not per request).
    outcomes: Vec<(&'static str, Counter)>,
    pub(crate) proxy_retries: Counter,
    pub(crate) proxy_ejections: Counter,
    pub(crate) proxy_panic: Counter,
    pub(crate) proxy_client_header_timeouts: Counter,
    pub(crate) proxy_client_idle_closed: Counter,
    /// Checks run here that entered flapping.
    pub(crate) check_flapping: Counter,
    /// Instances this sidecar holds as flapping now.
    pub(crate) checks_flapping: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::with_prefix("waypost_sidecar")),
            queries: Family::default(),
            revision: Gauge::default(),
            stale: Gauge::default(),
            lag: Gauge::default(),
            reconnects: Gauge::default(),
            snapshots: Counter::default(),
            services: Gauge::default(),
            protected_services: Gauge::default(),
            instances: Gauge::default(),
            // 10 µs to about 1.3 s, doubling: one change at 100,000 instances takes tens of
            // µs; a snapshot of that size, or a host name lookup, up to about a second.
            apply_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 18)),
            forwarded: Family::default(),
            dns_prepared: Counter::default(),
            dns_tcp_connections: Gauge::default(),
            dns_tcp_closed: Family::default(),
            dns_dropped: Family::default(),
            proxy_requests: Family::default(),
            outcomes: Vec::new(),
            proxy_retries: Counter::default(),
            proxy_ejections: Counter::default(),
            proxy_panic: Counter::default(),
            proxy_client_header_timeouts: Counter::default(),
            proxy_client_idle_closed: Counter::default(),
            check_flapping: Counter::default(),
            checks_flapping: Gauge::default(),
        };
        let mut m = m;
        m.outcomes = [
            "ok",
            "unknown_service",
            "no_healthy_instance",
            "upstream_unavailable",
            "upstream_timeout",
        ]
        .into_iter()
        .map(|outcome| {
            let counter = m
                .proxy_requests
                .get_or_create(&OutcomeLabel { outcome })
                .clone();
            (outcome, counter)
        })
        .collect();
        // Both reasons show from the start (as 0), so a rate over them has a baseline.
        for reason in ["timeout", "malformed"] {
            let _ = m.dns_tcp_closed.get_or_create(&CloseLabel { reason });
        }
        for reason in DropReason::ALL {
            let _ = m.dns_dropped(reason);
        }
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "dns_queries",
                "DNS queries answered, by query type and response code",
                m.queries.clone(),
            );
            r.register(
                "dns_forwarded",
                "DNS queries forwarded upstream, by query type and response code",
                m.forwarded.clone(),
            );
            r.register(
                "dns_prepared_answers",
                "DNS queries answered over UDP from the wire bytes prepared with the snapshot \
                 (a subset of dns_queries)",
                m.dns_prepared.clone(),
            );
            r.register(
                "dns_tcp_connections",
                "DNS-over-TCP connections open now",
                m.dns_tcp_connections.clone(),
            );
            r.register(
                "dns_tcp_closed",
                "DNS-over-TCP connections closed by the sidecar: timeout (no complete query in time) or malformed (a frame that is not a DNS query)",
                m.dns_tcp_closed.clone(),
            );
            r.register(
                "dns_dropped",
                "DNS queries received over UDP and dropped unanswered: busy (as many queries as \
                 allowed already with the handler) or send_buffer_full (an answer found the \
                 socket's send buffer full)",
                m.dns_dropped.clone(),
            );
            r.register(
                "revision_applied",
                "Revision of the snapshot served",
                m.revision.clone(),
            );
            r.register(
                "stale",
                "1 while the snapshot may be out of date (stream down or not yet synchronised)",
                m.stale.clone(),
            );
            r.register(
                "lag_seconds",
                "Seconds since the stream was last live (0 while live)",
                m.lag.clone(),
            );
            r.register(
                "reconnects",
                "Reconnections of the change stream since start",
                m.reconnects.clone(),
            );
            r.register(
                "snapshots",
                "Snapshots received on the change stream: 1 after the first connection; a \
                 reconnection that resumed adds none, one that could not resume adds one",
                m.snapshots.clone(),
            );
            r.register("services", "Services in the snapshot", m.services.clone());
            r.register(
                "protected_services",
                "Services answered from their last non-empty set (policy never_empty)",
                m.protected_services.clone(),
            );
            r.register(
                "proxy_requests",
                "Proxied HTTP requests by outcome (ok, or the proxy's error code)",
                m.proxy_requests.clone(),
            );
            r.register(
                "proxy_retries",
                "Requests retried on another instance",
                m.proxy_retries.clone(),
            );
            r.register(
                "proxy_ejections",
                "Instances ejected after consecutive failures",
                m.proxy_ejections.clone(),
            );
            r.register(
                "proxy_panic",
                "Choices made in panic mode (too few healthy instances: balanced over all)",
                m.proxy_panic.clone(),
            );
            r.register(
                "proxy_client_header_timeouts",
                "Client connections closed for not sending a first request within \
                 --client-header-timeout (nothing, an HTTP/2 preface only, or part of a request)",
                m.proxy_client_header_timeouts.clone(),
            );
            r.register(
                "proxy_client_idle_closed",
                "Client connections closed after --idle-timeout without a new request",
                m.proxy_client_idle_closed.clone(),
            );
            r.register(
                "check_flapping",
                "Times a check run here changed more often than its flap damping allows and \
                 its instance was held as flapping",
                m.check_flapping.clone(),
            );
            r.register(
                "checks_flapping",
                "Instances whose checks run here held as flapping now",
                m.checks_flapping.clone(),
            );
            r.register(
                "instances",
                "Instances in the snapshot (all statuses)",
                m.instances.clone(),
            );
            r.register(
                "apply_seconds",
                "Seconds from a change's arrival on the stream to the publication of the snapshot \
                 that holds it (changes that arrive together are applied and counted once)",
                m.apply_seconds.clone(),
            );
        }
        m
    }

    /// The counter of UDP queries dropped for `reason`, to keep and count with.
    pub(crate) fn dns_dropped(&self, reason: DropReason) -> Counter {
        self.dns_dropped
            .get_or_create(&DropLabel {
                reason: reason.label(),
            })
            .clone()
    }

    pub(crate) fn proxy_outcome(&self, outcome: &'static str) {
        match self.outcomes.iter().find(|(o, _)| *o == outcome) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                self.proxy_requests
                    .get_or_create(&OutcomeLabel { outcome })
                    .inc();
            }
        }
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }
}
