//! Choosing an upstream: the balancing policies over one service's endpoints, and the
//! proxy-local facts they use (requests in flight, consecutive failures, ejections), keyed by
//! instance id. These facts never flow back into the snapshot.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::Rng;
use waypost_model::ServicePolicy;

/// How a service's requests are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Each endpoint in turn.
    RoundRobin,
    /// At random, in proportion to each instance's `weight`.
    Weighted,
    /// Power of two choices: two endpoints at random (by weight), the one with fewer requests
    /// in flight wins. Follows load without global coordination.
    #[default]
    LeastRequest,
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" => Ok(Self::RoundRobin),
            "weighted" => Ok(Self::Weighted),
            "least_request" => Ok(Self::LeastRequest),
            other => Err(format!(
                "unknown balancing policy {other:?}; use round_robin, weighted or least_request"
            )),
        }
    }
}

/// One upstream the proxy can send to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The instance id (the key of the proxy-local facts).
    pub id: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative weight.
    pub weight: u32,
    /// Speaks HTTP/2 without TLS (prior knowledge).
    pub h2c: bool,
    /// What the proxy has seen of it (shared across routes by [`Balancer::attach`]).
    pub stats: Arc<Stats>,
    /// Its service's protection policy (the panic threshold may be the service's own).
    pub policy: Option<ServicePolicy>,
}

/// What the proxy has seen of one endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests in flight.
    pub in_flight: AtomicUsize,
    /// Failures in a row.
    pub failures: AtomicU32,
    /// How often it was ejected (the ejection time grows with it).
    pub ejections: AtomicU32,
    /// Ejected until this many milliseconds after the proxy started (0: not ejected).
    pub ejected_until_ms: AtomicU64,
}

/// The outlier rule: eject after `failures` consecutive failures, for `base` times the number
/// of ejections so far (at most `max`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outlier {
    /// Consecutive failures that eject.
    pub failures: u32,
    /// The first ejection's length.
    pub base: Duration,
    /// The longest ejection.
    pub max: Duration,
}

/// Whether a service is balanced in panic mode now, and by which threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Panic {
    /// Too few endpoints are usable: ejected ones (or, in the HTTP proxy's routes, ones that
    /// just vanished) are balanced over too.
    pub active: bool,
    /// The share of endpoints (0 to 1) that must be usable for ejections to be honoured.
    pub threshold: f64,
}

/// One endpoint's facts at one moment, as plain values (what the admin's explain shows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// Requests (or TCP connections) in flight.
    pub in_flight: usize,
    /// Failures in a row.
    pub failures: u32,
    /// Ejections so far.
    pub ejections: u32,
    /// How much longer it stays ejected (`None`: it is not ejected).
    pub ejected_for: Option<Duration>,
}

/// Per-service state: the round-robin cursor and the stats of each endpoint.
#[derive(Debug, Default)]
pub struct ServiceState {
    cursor: AtomicUsize,
    stats: Mutex<HashMap<String, Arc<Stats>>>,
}

/// Every service's state.
#[derive(Debug)]
pub struct Balancer {
    started: Instant,
    services: Mutex<HashMap<String, Arc<ServiceState>>>,
    outlier: Outlier,
    panic_threshold: f64,
}

/// The outcome of choosing.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    /// The index of the endpoint chosen.
    pub index: usize,
    /// Chosen in panic mode: too few endpoints were healthy, so ejected ones were used too.
    pub panic: bool,
}

impl Balancer {
    /// A balancer with an outlier rule and a panic threshold (a share of endpoints, 0 to 1).
    pub fn new(outlier: Outlier, panic_threshold: f64) -> Self {
        Self {
            started: Instant::now(),
            services: Mutex::default(),
            outlier,
            panic_threshold,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The panic rule, the only place it is written: with `usable` of a service's `total`
    /// endpoints usable (not ejected; for a route, still registered), panic is on when fewer
    /// than the threshold's share are. Then spreading over all beats overloading the few.
    ///
    /// The threshold is the service's own when its protection policy sets one
    /// (`min_healthy_percent`), else the sidecar's `--panic-threshold`.
    #[inline]
    pub fn panic(&self, policy: Option<ServicePolicy>, usable: usize, total: usize) -> Panic {
        let threshold = policy
            .and_then(|p| p.panic_threshold())
            .unwrap_or(self.panic_threshold);
        Panic {
            active: (usable as f64) < threshold * total as f64,
            threshold,
        }
    }

    /// The outlier rule in force.
    pub fn outlier(&self) -> Outlier {
        self.outlier
    }

    /// What the balancer has seen of `service`'s endpoints, by instance id: empty before the
    /// proxy first routed to it. Reads only: nothing is created or reset.
    pub fn observe(&self, service: &str) -> HashMap<String, Observed> {
        let state = {
            let services = self.services.lock().unwrap_or_else(|e| e.into_inner());
            match services.get(service) {
                Some(state) => state.clone(),
                None => return HashMap::new(),
            }
        };
        let now = self.now_ms();
        let map = state.stats.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(id, stats)| {
                let until = stats.ejected_until_ms.load(Ordering::Relaxed);
                let observed = Observed {
                    in_flight: stats.in_flight.load(Ordering::Relaxed),
                    failures: stats.failures.load(Ordering::Relaxed),
                    ejections: stats.ejections.load(Ordering::Relaxed),
                    // The same test as `choose`: ejected while the deadline is ahead.
                    ejected_for: (until > now).then(|| Duration::from_millis(until - now)),
                };
                (id.clone(), observed)
            })
            .collect()
    }

    fn service(&self, name: &str) -> Arc<ServiceState> {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = services.get(name) {
            return state.clone();
        }
        services.entry(name.to_owned()).or_default().clone()
    }

    /// Gives each endpoint its lasting stats (kept per service and instance id across
    /// snapshots), and forgets the stats of instances that left. Call when building a route.
    pub fn attach(&self, service: &str, endpoints: &mut [Endpoint]) {
        let state = self.service(service);
        let mut map = state.stats.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > endpoints.len() * 2 {
            map.retain(|id, _| endpoints.iter().any(|e| &e.id == id));
        }
        for endpoint in endpoints {
            endpoint.stats = map.entry(endpoint.id.clone()).or_default().clone();
        }
    }

    /// Chooses one of `endpoints` (of `service`) by `policy`, skipping the `tried` indexes and
    /// ejected ones. When fewer than the panic threshold's share are usable, ejection is
    /// ignored (better to spread over all than to overload the few); `panic` then says so.
    pub fn choose(
        &self,
        service: &str,
        endpoints: &[Endpoint],
        policy: Policy,
        tried: &[usize],
    ) -> Option<Choice> {
        if endpoints.is_empty() {
            return None;
        }
        let now = self.now_ms();
        let ejected = |i: usize| endpoints[i].stats.ejected_until_ms.load(Ordering::Relaxed) > now;
        if endpoints.len() == 1 {
            // The common single-instance case, without counting or drawing: the same answer
            // as the general rule below.
            let out = ejected(0);
            let panic = out && self.panic(endpoints[0].policy, 0, 1).active;
            return (tried.is_empty() && (!out || panic)).then_some(Choice { index: 0, panic });
        }
        let healthy = (0..endpoints.len()).filter(|&i| !ejected(i)).count();
        let panic = self
            .panic(endpoints[0].policy, healthy, endpoints.len())
            .active;
        // Filtered on the fly rather than collected: this runs for every request.
        let usable = |i: &usize| (panic || !ejected(*i)) && !tried.contains(i);
        let count = (0..endpoints.len()).filter(usable).count();
        if count == 0 {
            return None;
        }
        let weight = |i: usize| u64::from(endpoints[i].weight.max(1));
        let by_weight = |rng: &mut rand::rngs::ThreadRng| {
            let total: u64 = (0..endpoints.len()).filter(usable).map(weight).sum();
            let mut point = rng.random_range(0..total);
            let mut last = 0;
            for i in (0..endpoints.len()).filter(usable) {
                if point < weight(i) {
                    return i;
                }
                point -= weight(i);
                last = i;
            }
            last
        };
        let mut rng = rand::rng();
        let index = match policy {
            Policy::RoundRobin => {
                let state = self.service(service);
                let nth = state.cursor.fetch_add(1, Ordering::Relaxed) % count;
                (0..endpoints.len()).filter(usable).nth(nth).unwrap_or(0)
            }
            Policy::Weighted => by_weight(&mut rng),
            Policy::LeastRequest => {
                let a = by_weight(&mut rng);
                let b = by_weight(&mut rng);
                let load = |i: usize| endpoints[i].stats.in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        };
        Some(Choice { index, panic })
    }

    /// Records a success: the failure streak ends.
    pub fn succeeded(&self, stats: &Stats) {
        stats.failures.store(0, Ordering::Relaxed);
    }

    /// Records a failure; returns `true` when it ejected the endpoint.
    pub fn failed(&self, stats: &Stats) -> bool {
        let failures = stats.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.outlier.failures {
            return false;
        }
        stats.failures.store(0, Ordering::Relaxed);
        let ejections = stats.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = self
            .outlier
            .base
            .saturating_mul(ejections)
            .min(self.outlier.max);
        stats
            .ejected_until_ms
            .store(self.now_ms() + length.as_millis() as u64, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(b: &Balancer, weights: &[u32]) -> Vec<Endpoint> {
        let mut eps: Vec<Endpoint> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Endpoint {
                id: format!("e{i}"),
                addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                weight: w,
                h2c: false,
                stats: Arc::default(),
                policy: None,
            })
            .collect();
        b.attach("s", &mut eps);
        eps
    }

    fn balancer() -> Balancer {
        Balancer::new(
            Outlier {
                failures: 3,
                base: Duration::from_secs(60),
                max: Duration::from_secs(300),
            },
            0.5,
        )
    }

    fn counts(b: &Balancer, eps: &[Endpoint], policy: Policy, n: usize) -> Vec<usize> {
        let mut counts = vec![0; eps.len()];
        for _ in 0..n {
            counts[b.choose("s", eps, policy, &[]).unwrap().index] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_even() {
        let b = balancer();
        let eps = endpoints(&b, &[1, 1, 1]);
        assert_eq!(counts(&b, &eps, Policy::RoundRobin, 300), vec![100; 3]);
    }

    #[test]
    fn weighted_follows_weights() {
        let b = balancer();
        let eps = endpoints(&b, &[1, 3]);
        let c = counts(&b, &eps, Policy::Weighted, 4000);
        // Expected 1000 / 3000 (standard deviation about 27).
        assert!((800..1200).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn least_request_avoids_the_busy_one() {
        let b = balancer();
        let eps = endpoints(&b, &[1, 1]);
        eps[0].stats.in_flight.store(10, Ordering::Relaxed);
        let c = counts(&b, &eps, Policy::LeastRequest, 400);
        // Only when both draws hit the busy one (a quarter of the time) is it chosen.
        assert!(c[0] < 160, "{c:?}");
    }

    #[test]
    fn stats_outlive_routes() {
        let b = balancer();
        let first = endpoints(&b, &[1, 1]);
        first[1].stats.in_flight.store(3, Ordering::Relaxed);
        let again = endpoints(&b, &[1, 1]);
        assert_eq!(again[1].stats.in_flight.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn ejection_and_panic() {
        let b = balancer();
        let eps = endpoints(&b, &[1, 1, 1, 1]);
        assert!(!b.failed(&eps[0].stats) && !b.failed(&eps[0].stats));
        assert!(b.failed(&eps[0].stats), "the third failure ejects");
        let c = counts(&b, &eps, Policy::RoundRobin, 300);
        assert_eq!(c[0], 0, "{c:?}");
        // Eject two more: only one of four is left, below the 50% threshold: panic, all used.
        for ep in &eps[1..3] {
            for _ in 0..3 {
                b.failed(&ep.stats);
            }
        }
        assert!(b.choose("s", &eps, Policy::RoundRobin, &[]).unwrap().panic);
        assert!(
            counts(&b, &eps, Policy::RoundRobin, 400)
                .iter()
                .all(|&n| n == 100)
        );
    }

    #[test]
    fn the_panic_rule_is_a_share_of_usable_endpoints() {
        let b = balancer();
        // Threshold 0.5: half usable is enough, fewer is panic; an empty service is not.
        assert!(!b.panic(None, 2, 4).active);
        assert!(b.panic(None, 1, 4).active);
        assert!(b.panic(None, 0, 1).active);
        assert!(!b.panic(None, 0, 0).active);
        // A service's policy sets its own threshold: 80% makes 3 of 4 a panic, 0% never.
        let strict = ServicePolicy {
            min_healthy_percent: Some(80),
            never_empty: false,
        };
        assert!(b.panic(Some(strict), 3, 4).active);
        assert!(!b.panic(None, 3, 4).active);
        let never = ServicePolicy {
            min_healthy_percent: Some(0),
            never_empty: false,
        };
        assert!(!b.panic(Some(never), 0, 4).active);
        assert_eq!(b.panic(None, 1, 4).threshold, 0.5);
        // A single ejected endpoint is chosen in panic, as the rule says.
        let one = endpoints(&b, &[1]);
        for _ in 0..3 {
            b.failed(&one[0].stats);
        }
        assert!(b.choose("s", &one, Policy::RoundRobin, &[]).unwrap().panic);
    }

    #[test]
    fn observing_reads_the_stats_and_creates_nothing() {
        let b = balancer();
        assert!(b.observe("s").is_empty());
        assert!(
            b.services.lock().unwrap().is_empty(),
            "observing made no state"
        );
        let eps = endpoints(&b, &[1, 1]);
        eps[1].stats.in_flight.store(2, Ordering::Relaxed);
        b.failed(&eps[0].stats);
        let seen = b.observe("s");
        assert_eq!(seen["e0"].failures, 1);
        assert_eq!(seen["e0"].ejected_for, None);
        assert_eq!(seen["e1"].in_flight, 2);
        b.failed(&eps[0].stats);
        b.failed(&eps[0].stats);
        let e0 = b.observe("s")["e0"];
        assert_eq!((e0.failures, e0.ejections), (0, 1));
        // Ejected for the first ejection's length (60 s), less the time since.
        let left = e0.ejected_for.expect("ejected");
        assert!(
            left > Duration::ZERO && left <= Duration::from_secs(60),
            "{left:?}"
        );
    }

    #[test]
    fn tried_endpoints_are_skipped() {
        let b = balancer();
        let eps = endpoints(&b, &[1, 1]);
        for _ in 0..20 {
            assert_eq!(
                b.choose("s", &eps, Policy::LeastRequest, &[0])
                    .unwrap()
                    .index,
                1
            );
        }
        assert!(b.choose("s", &eps, Policy::LeastRequest, &[0, 1]).is_none());
    }
}
