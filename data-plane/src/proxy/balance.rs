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

/// How a service's requests are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
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
#[derive(Debug)]
pub struct Choice {
    /// The endpoint chosen.
    pub endpoint: Endpoint,
    /// Its stats (the caller records the outcome there).
    pub stats: Arc<Stats>,
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

    fn service(&self, name: &str) -> Arc<ServiceState> {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        services.entry(name.to_owned()).or_default().clone()
    }

    /// Chooses an endpoint of `service` by `policy`, skipping `tried` ones and ejected ones.
    /// When fewer than the panic threshold's share are usable, ejection is ignored (better to
    /// spread over all than to overload the few); `panic` then says so.
    pub fn choose(
        &self,
        service: &str,
        endpoints: &[Endpoint],
        policy: Policy,
        tried: &[String],
    ) -> Option<Choice> {
        if endpoints.is_empty() {
            return None;
        }
        let state = self.service(service);
        let now = self.now_ms();
        let stats: Vec<Arc<Stats>> = {
            let mut map = state.stats.lock().unwrap_or_else(|e| e.into_inner());
            // Forget instances that left, so the map follows the registry.
            if map.len() > endpoints.len() * 2 {
                map.retain(|id, _| endpoints.iter().any(|e| &e.id == id));
            }
            endpoints
                .iter()
                .map(|e| map.entry(e.id.clone()).or_default().clone())
                .collect()
        };
        let healthy: Vec<usize> = (0..endpoints.len())
            .filter(|&i| stats[i].ejected_until_ms.load(Ordering::Relaxed) <= now)
            .collect();
        let panic = (healthy.len() as f64) < self.panic_threshold * endpoints.len() as f64;
        let mut pool: Vec<usize> = if panic {
            (0..endpoints.len()).collect()
        } else {
            healthy
        };
        pool.retain(|&i| !tried.contains(&endpoints[i].id));
        if pool.is_empty() {
            return None;
        }
        let weight = |i: usize| u64::from(endpoints[i].weight.max(1));
        let by_weight = |rng: &mut rand::rngs::ThreadRng| {
            let total: u64 = pool.iter().map(|&i| weight(i)).sum();
            let mut point = rng.random_range(0..total);
            for &i in &pool {
                if point < weight(i) {
                    return i;
                }
                point -= weight(i);
            }
            pool[pool.len() - 1]
        };
        let mut rng = rand::rng();
        let chosen = match policy {
            Policy::RoundRobin => pool[state.cursor.fetch_add(1, Ordering::Relaxed) % pool.len()],
            Policy::Weighted => by_weight(&mut rng),
            Policy::LeastRequest => {
                let a = by_weight(&mut rng);
                let b = by_weight(&mut rng);
                let load = |i: usize| stats[i].in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        };
        Some(Choice {
            endpoint: endpoints[chosen].clone(),
            stats: stats[chosen].clone(),
            panic,
        })
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

    fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Endpoint {
                id: format!("e{i}"),
                addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                weight: w,
                h2c: false,
            })
            .collect()
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
            let c = b.choose("s", eps, policy, &[]).unwrap();
            counts[c.endpoint.id[1..].parse::<usize>().unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_even() {
        let eps = endpoints(&[1, 1, 1]);
        assert_eq!(
            counts(&balancer(), &eps, Policy::RoundRobin, 300),
            vec![100; 3]
        );
    }

    #[test]
    fn weighted_follows_weights() {
        let eps = endpoints(&[1, 3]);
        let c = counts(&balancer(), &eps, Policy::Weighted, 4000);
        // Expected 1000 / 3000 (standard deviation about 27).
        assert!((800..1200).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn least_request_avoids_the_busy_one() {
        let b = balancer();
        let eps = endpoints(&[1, 1]);
        let busy = b.choose("s", &eps, Policy::RoundRobin, &[]).unwrap();
        busy.stats.in_flight.store(10, Ordering::Relaxed);
        let c = counts(&b, &eps, Policy::LeastRequest, 400);
        let busy_index: usize = busy.endpoint.id[1..].parse().unwrap();
        // Only when both draws hit the busy one (a quarter of the time) is it chosen.
        assert!(c[busy_index] < 160, "{c:?}");
    }

    #[test]
    fn ejection_and_panic() {
        let b = balancer();
        let eps = endpoints(&[1, 1, 1, 1]);
        let first = b.choose("s", &eps, Policy::RoundRobin, &[]).unwrap();
        assert!(!b.failed(&first.stats) && !b.failed(&first.stats));
        assert!(b.failed(&first.stats), "the third failure ejects");
        let c = counts(&b, &eps, Policy::RoundRobin, 300);
        let ejected: usize = first.endpoint.id[1..].parse().unwrap();
        assert_eq!(c[ejected], 0, "{c:?}");
        // Eject two more: only one of four is left, below the 50% threshold: panic, all used.
        for id in eps.iter().filter(|e| e.id != first.endpoint.id).take(2) {
            let stats = b.service("s").stats.lock().unwrap()[&id.id].clone();
            for _ in 0..3 {
                b.failed(&stats);
            }
        }
        let c = b.choose("s", &eps, Policy::RoundRobin, &[]).unwrap();
        assert!(c.panic);
        assert!(
            counts(&b, &eps, Policy::RoundRobin, 400)
                .iter()
                .all(|&n| n == 100)
        );
    }

    #[test]
    fn tried_endpoints_are_skipped() {
        let b = balancer();
        let eps = endpoints(&[1, 1]);
        for _ in 0..20 {
            let c = b
                .choose("s", &eps, Policy::LeastRequest, &["e0".into()])
                .unwrap();
            assert_eq!(c.endpoint.id, "e1");
        }
        assert!(
            b.choose("s", &eps, Policy::LeastRequest, &["e0".into(), "e1".into()])
                .is_none()
        );
    }
}
