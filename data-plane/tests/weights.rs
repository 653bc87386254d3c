//! Weights mean the same everywhere: one service of three instances weighted 1, 2 and 5, each
//! a real HTTP backend on its own loopback address, picked many times through the SDK's
//! resolver, the sidecar's HTTP proxy and the first A record of the sidecar's DNS answers.
//! Each distribution is checked against the weights with a chi-square bound that a uniform
//! choice fails.

mod common;

use std::{collections::BTreeMap, convert::Infallible, net::IpAddr};

use bytes::Bytes;
use common::{DEADLINE, TestSidecar, ips, udp};
use hickory_proto::rr::{RData, RecordType};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, task::JoinSet};
use waypost_client::{Balance, Client, Resolver, model::RegisterRequest};
use waypost_control::testkit::{TestControlPlane, eventually};
use waypost_sidecar::proxy::balance::Policy;

/// The instances: a loopback address each (Linux routes all of 127.0.0.0/8 to lo) and a weight.
const INSTANCES: [([u8; 4], u32); 3] = [
    ([127, 0, 0, 11], 1),
    ([127, 0, 0, 12], 2),
    ([127, 0, 0, 13], 5),
];

/// Picks per path. Against the weights, a uniform choice scores `PICKS × 0.51` (1,533 here),
/// far above [`CRITICAL`]; see the check in [`assert_follows_weights`].
const PICKS: usize = 3_000;

/// The chi-square value that two degrees of freedom exceed with probability 1e-6. With two
/// degrees of freedom the distribution is exponential: P(X > x) = e^(-x/2), so x = -2 ln 1e-6.
const CRITICAL: f64 = 27.63;

/// A tiny HTTP server that answers every request with its own IP address; stops when dropped.
struct Backend {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    async fn start(ip: IpAddr) -> Self {
        let listener = TcpListener::bind((ip, 0))
            .await
            .expect("bind a backend on a loopback address");
        let port = listener.local_addr().expect("a bound address").port();
        let task = tokio::spawn(async move {
            // Connections are owned by the set, so they end with the accept loop.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let service = service_fn(move |_: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(ip.to_string()))))
                });
                connections.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { port, task }
    }
}

/// Pearson's chi-square statistic of `observed` counts against the shares that `weights`
/// predict for the same total.
fn chi_square(observed: &[f64], weights: &[u32]) -> f64 {
    let n: f64 = observed.iter().sum();
    let total: f64 = weights.iter().copied().map(f64::from).sum();
    observed
        .iter()
        .zip(weights)
        .map(|(&seen, &w)| {
            let expected = n * f64::from(w) / total;
            (seen - expected).powi(2) / expected
        })
        .sum()
}

/// Checks that `picks` (one address per pick) follow the instances' weights, and that the
/// sample is large enough for a uniform choice to fail the same check.
fn assert_follows_weights(path: &str, picks: &[IpAddr]) {
    assert_eq!(picks.len(), PICKS, "{path}: every pick counted");
    let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for ip in picks {
        *counts.entry(*ip).or_default() += 1;
    }
    let observed: Vec<f64> = INSTANCES
        .iter()
        .map(|(ip, _)| counts.remove(&IpAddr::from(*ip)).unwrap_or(0) as f64)
        .collect();
    assert!(counts.is_empty(), "{path}: picks of strangers {counts:?}");
    let weights: Vec<u32> = INSTANCES.iter().map(|(_, w)| *w).collect();
    let statistic = chi_square(&observed, &weights);
    let uniform = chi_square(&[PICKS as f64 / 3.0; 3], &weights);
    eprintln!(
        "{path}: {PICKS} picks {observed:?} for weights {weights:?}: chi-square {statistic:.2} \
         (bound {CRITICAL}; a uniform choice's expected counts score {uniform:.1})"
    );
    assert!(
        uniform > CRITICAL,
        "{path}: {PICKS} picks are too few to tell weighted from uniform"
    );
    assert!(
        statistic < CRITICAL,
        "{path}: {observed:?} does not follow the weights {weights:?} (chi-square {statistic:.2})"
    );
}

#[tokio::test]
async fn the_resolver_the_proxy_and_dns_pick_by_weight() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).expect("a client");
    let mut backends = Vec::new();
    let mut last = 0;
    for (ip, weight) in INSTANCES {
        let ip = IpAddr::from(ip);
        let backend = Backend::start(ip).await;
        let request = RegisterRequest {
            weight: Some(weight),
            ttl_seconds: Some(600),
            ..RegisterRequest::new("web", format!("{ip}:{}", backend.port))
        };
        last = client
            .register_once(&request)
            .await
            .expect("register")
            .revision;
        backends.push(backend);
    }
    let sidecar = TestSidecar::start(&cp.url, |c| c.proxy.balance = Policy::Weighted).await;
    sidecar.caught_up(last).await;

    // 1. The SDK's resolver, weighted random.
    let resolver = Resolver::new(&client, ["web"], Balance::WeightedRandom);
    eventually(DEADLINE, "the resolver to know all three", || async {
        (resolver.instances("web")?.len() == INSTANCES.len()).then_some(())
    })
    .await;
    let picks: Vec<IpAddr> = (0..PICKS)
        .map(|_| {
            let instance = resolver.pick("web").expect("an up instance");
            instance.host.parse().expect("registered by IP")
        })
        .collect();
    assert_follows_weights("resolver", &picks);

    // 2. The sidecar's HTTP proxy with the weighted policy: the backend says who answered.
    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("an HTTP client");
    let url = format!("http://{}/", sidecar.http());
    let mut picks = Vec::with_capacity(PICKS);
    for _ in 0..PICKS {
        let response = http
            .get(&url)
            .header("host", "web")
            .send()
            .await
            .expect("the proxy answers");
        assert_eq!(response.status(), 200);
        let body = response.text().await.expect("a body");
        picks.push(body.parse().expect("a backend names its address"));
    }
    assert_follows_weights("proxy", &picks);

    // 3. DNS: the first A record of each answer, over UDP. Every answer holds all three.
    let all = ips(&udp(sidecar.dns(), "web.service.waypost.", RecordType::A)
        .await
        .answers);
    assert_eq!(all.len(), INSTANCES.len(), "{all:?}");
    let mut picks = Vec::with_capacity(PICKS);
    for _ in 0..PICKS {
        let answer = udp(sidecar.dns(), "web.service.waypost.", RecordType::A).await;
        assert_eq!(ips(&answer.answers), all);
        match &answer.answers[0].data {
            RData::A(a) => picks.push(IpAddr::V4(a.0)),
            other => panic!("not an A record first: {other:?}"),
        }
    }
    assert_follows_weights("dns", &picks);
}
