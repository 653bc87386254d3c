//! Every metric of the control plane, named and registered in one place, rendered as
//! Prometheus text at `GET /metrics`.

use std::sync::Mutex;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use waypost_model::ServiceName;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

/// The label of forwarded requests: `write`, `read` or `heartbeat`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    kind: String,
}

impl From<&str> for KindLabel {
    fn from(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
        }
    }
}

/// The label of per-peer metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabel {
    pub(crate) peer: u64,
}

/// The label of propagation waits: `complete` or `timeout`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Labels of the request latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template, e.g. `/discover/{service}`; `unmatched` for 404s.
    /// Static strings: labelling a request allocates nothing.
    pub route: &'static str,
    /// The HTTP method (`other` for extension methods).
    pub method: &'static str,
    /// The response status code.
    pub status: u16,
}

/// The control plane's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    instances: Family<ServiceLabel, Gauge>,
    pub(crate) registrations: Counter,
    heartbeats: Family<ResultLabel, Counter>,
    pub(crate) deregistrations: Counter,
    pub(crate) expirations: Counter,
    pub(crate) flapping_entered: Counter,
    pub(crate) flapping_instances: Gauge,
    pub(crate) held: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) unauthorized: Counter,
    pub(crate) forbidden: Counter,
    pub(crate) request_timeouts: Counter,
    pub(crate) header_timeouts: Counter,
    pub(crate) idle_closed: Counter,
    pub(crate) tls_handshake_failures: Counter,
    pub(crate) http_connections: Gauge,
    self_preservation: Gauge,
    held_instances: Gauge,
    pub(crate) revision: Gauge,
    pub(crate) watch_streams: Gauge,
    pub(crate) watch_live: Gauge,
    pub(crate) watch_events: Counter,
    pub(crate) watch_detached: Counter,
    pub(crate) watch_encoded: Counter,
    pub(crate) blocking_wakeups: Counter,
    pub(crate) blocking_held: Gauge,
    pub(crate) xds_streams: Gauge,
    pub(crate) xds_wakeups: Counter,
    xds_pushes: Family<KindLabel, Counter>,
    xds_nacks: Family<KindLabel, Counter>,
    store_commits: Counter,
    store_batch: Histogram,
    http: Family<HttpLabels, Histogram>,
    pub(crate) raft_term: Gauge,
    pub(crate) leader_changes: Counter,
    pub(crate) raft_last_log_index: Gauge,
    pub(crate) raft_applied_index: Gauge,
    pub(crate) raft_replication_lag: Family<PeerLabel, Gauge>,
    pub(crate) forwarded: Family<KindLabel, Counter>,
    pub(crate) read_index: Family<KindLabel, Counter>,
    pub(crate) node_reports: Counter,
    pub(crate) propagation_waits: Family<OutcomeLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::with_prefix("waypost")),
            instances: Family::default(),
            registrations: Counter::default(),
            heartbeats: Family::default(),
            deregistrations: Counter::default(),
            expirations: Counter::default(),
            flapping_entered: Counter::default(),
            flapping_instances: Gauge::default(),
            held: Counter::default(),
            rate_limited: Counter::default(),
            unauthorized: Counter::default(),
            forbidden: Counter::default(),
            request_timeouts: Counter::default(),
            header_timeouts: Counter::default(),
            idle_closed: Counter::default(),
            tls_handshake_failures: Counter::default(),
            http_connections: Gauge::default(),
            self_preservation: Gauge::default(),
            held_instances: Gauge::default(),
            revision: Gauge::default(),
            watch_streams: Gauge::default(),
            watch_live: Gauge::default(),
            watch_events: Counter::default(),
            watch_detached: Counter::default(),
            watch_encoded: Counter::default(),
            blocking_wakeups: Counter::default(),
            blocking_held: Gauge::default(),
            xds_streams: Gauge::default(),
            xds_wakeups: Counter::default(),
            xds_pushes: Family::default(),
            xds_nacks: Family::default(),
            store_commits: Counter::default(),
            store_batch: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
            ]),
            raft_term: Gauge::default(),
            leader_changes: Counter::default(),
            raft_last_log_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_replication_lag: Family::default(),
            forwarded: Family::default(),
            read_index: Family::default(),
            node_reports: Counter::default(),
            propagation_waits: Family::default(),
            http: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.000_05, 2.0, 18,
                ))
            }),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "instances",
                "Registered instances per service",
                m.instances.clone(),
            );
            r.register("raft_term", "The current Raft term", m.raft_term.clone());
            r.register(
                "raft_leader_changes",
                "Times this node saw a new leader",
                m.leader_changes.clone(),
            );
            r.register(
                "raft_last_log_index",
                "The last index in this node's Raft log",
                m.raft_last_log_index.clone(),
            );
            r.register(
                "raft_applied_index",
                "The last Raft log index applied to this node's registry",
                m.raft_applied_index.clone(),
            );
            r.register(
                "raft_replication_lag",
                "On the leader: log entries each peer is behind",
                m.raft_replication_lag.clone(),
            );
            r.register(
                "forwarded",
                "Requests this node passed on to the leader, by kind (write, read, heartbeat)",
                m.forwarded.clone(),
            );
            r.register(
                "read_index",
                "On the leader: read indexes given to linearizable reads, by kind (lease: under \
                 the leader's lease; round: confirmed by a majority)",
                m.read_index.clone(),
            );
            r.register(
                "node_reports",
                "Sidecar reports received first-hand (PUT /nodes/{node})",
                m.node_reports.clone(),
            );
            r.register(
                "propagation_waits",
                "Writes sent with ?wait=propagated, by outcome (complete: every sidecar waited \
                 for applied them; timeout: some were still behind)",
                m.propagation_waits.clone(),
            );
            r.register(
                "registrations",
                "Register requests accepted",
                m.registrations.clone(),
            );
            r.register(
                "heartbeats",
                "Heartbeats by result (ok, not_found)",
                m.heartbeats.clone(),
            );
            r.register(
                "rate_limited",
                "Writes refused with 429: over a client's --write-rate",
                m.rate_limited.clone(),
            );
            r.register(
                "unauthorized",
                "Requests refused with 401: no bearer token, or one not configured",
                m.unauthorized.clone(),
            );
            r.register(
                "forbidden",
                "Requests refused with 403: the token does not allow the action",
                m.forbidden.clone(),
            );
            r.register(
                "request_timeouts",
                "Writes cut off with 408: not received and answered within --request-timeout",
                m.request_timeouts.clone(),
            );
            r.register(
                "tls_handshake_failures",
                "Connections closed because the TLS handshake failed or took longer than --header-read-timeout",
                m.tls_handshake_failures.clone(),
            );
            r.register(
                "header_timeouts",
                "Connections closed for not sending a request's headers within --header-read-timeout \
                 (nothing at all, an HTTP/2 preface only, or part of a request)",
                m.header_timeouts.clone(),
            );
            r.register(
                "idle_closed",
                "Connections closed after --idle-timeout without a new request",
                m.idle_closed.clone(),
            );
            r.register(
                "http_connections",
                "Open HTTP connections (at most --max-connections)",
                m.http_connections.clone(),
            );
            r.register(
                "deregistrations",
                "Instances deregistered",
                m.deregistrations.clone(),
            );
            r.register(
                "expirations",
                "Instances expired for missing heartbeats",
                m.expirations.clone(),
            );
            r.register(
                "flapping",
                "Instances that entered `flapping` (a sidecar's flap damping held them out of \
                 rotation), as applied on this node",
                m.flapping_entered.clone(),
            );
            r.register(
                "flapping_instances",
                "Instances held as `flapping` right now",
                m.flapping_instances.clone(),
            );
            r.register(
                "self_preservation_held",
                "Expiries held back by self-preservation (counted per pass)",
                m.held.clone(),
            );
            r.register(
                "self_preservation_active",
                "1 while self-preservation holds expiry",
                m.self_preservation.clone(),
            );
            r.register(
                "self_preservation_held_instances",
                "Overdue instances kept registered by self-preservation right now",
                m.held_instances.clone(),
            );
            r.register("revision", "Current head revision", m.revision.clone());
            r.register(
                "watch_streams",
                "Open /watch streams",
                m.watch_streams.clone(),
            );
            r.register(
                "watch_live_streams",
                "Open /watch streams taking their events from the live fan-out (the others are sending a snapshot or reading the change log)",
                m.watch_live.clone(),
            );
            r.register(
                "watch_events",
                "Events handed to live /watch streams by the fan-out",
                m.watch_events.clone(),
            );
            r.register(
                "watch_detached",
                "/watch streams taken off the live fan-out because their reader fell behind (they read the change log instead)",
                m.watch_detached.clone(),
            );
            r.register(
                "watch_encoded",
                "Changes the /watch fan-out encoded (once per change, whatever the number of streams that get it)",
                m.watch_encoded.clone(),
            );
            r.register(
                "blocking_wakeups",
                "Times a held blocking query woke to look at its state again (one of a service is woken only by changes of that service)",
                m.blocking_wakeups.clone(),
            );
            r.register(
                "blocking_queries",
                "Blocking queries held right now",
                m.blocking_held.clone(),
            );
            r.register(
                "xds_streams",
                "Open xDS (ADS) streams",
                m.xds_streams.clone(),
            );
            r.register(
                "xds_wakeups",
                "Times an xDS stream woke to look at the endpoints it follows (only changes of a service it subscribed to wake it)",
                m.xds_wakeups.clone(),
            );
            r.register(
                "xds_pushes",
                "xDS responses sent, by resource kind (listener, cluster, endpoints)",
                m.xds_pushes.clone(),
            );
            r.register(
                "xds_nacks",
                "xDS responses a client refused (NACK), by resource kind",
                m.xds_nacks.clone(),
            );
            r.register(
                "store_commits",
                "Durable store transactions committed",
                m.store_commits.clone(),
            );
            r.register(
                "store_commit_batch_size",
                "Writes per store transaction",
                m.store_batch.clone(),
            );
            r.register(
                "http_request_duration_seconds",
                "HTTP request latency by route, method and status",
                m.http.clone(),
            );
        }
        m
    }

    pub(crate) fn set_instances(&self, service: &ServiceName, count: usize) {
        let label = ServiceLabel {
            service: service.to_string(),
        };
        if count == 0 {
            self.instances.remove(&label);
        } else {
            self.instances.get_or_create(&label).set(count as i64);
        }
    }

    pub(crate) fn heartbeat(&self, ok: bool) {
        let result = if ok { "ok" } else { "not_found" };
        self.heartbeats.get_or_create(&ResultLabel { result }).inc();
    }

    pub(crate) fn set_self_preservation(&self, active: bool, held: usize) {
        self.self_preservation.set(i64::from(active));
        self.held_instances.set(held as i64);
    }

    pub(crate) fn xds_push(&self, kind: crate::xds::resources::Kind) {
        self.xds_pushes
            .get_or_create(&KindLabel::from(kind.as_str()))
            .inc();
    }

    pub(crate) fn xds_nack(&self, kind: crate::xds::resources::Kind) {
        self.xds_nacks
            .get_or_create(&KindLabel::from(kind.as_str()))
            .inc();
    }

    pub(crate) fn store_commit(&self, writes: usize) {
        self.store_commits.inc();
        self.store_batch.observe(writes as f64);
    }

    pub(crate) fn observe_http(&self, labels: &HttpLabels, seconds: f64) {
        self.http.get_or_create(labels).observe(seconds);
    }

    /// Renders every metric as Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }
}
