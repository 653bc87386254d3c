//! Active health checks: a real upstream whose /healthz the test breaks and mends, a real
//! control plane, a real sidecar told to check everything; DNS, proxy and discovery follow.
//!
//! The threshold and damping tests use a scripted upstream: its n-th probe gets the n-th
//! answer of a script, and before answering it asks the control plane what health the
//! instance has. The sidecar runs one check after the other and awaits its report before the
//! next, so the health seen at probe n is exactly what results 1 to n-1 decided: the tests
//! compare that log with what the rules say, with no timing in the assertions.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{TestSidecar, a_records};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use waypost_client::{
    Client, Filter,
    model::{Check, Health, RegisterRequest},
};
use waypost_control::testkit::{TestControlPlane, TestPki, eventually};

/// An upstream answering 200 on every path, except /healthz while `sick`.
async fn upstream(sick: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sick = sick.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let failing = req.uri().path() == "/healthz" && sick.load(Ordering::Relaxed);
                async move {
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    if failing {
                        *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn a_count(dns: SocketAddr, name: &str) -> usize {
    a_records(dns, name).await.len()
}

#[tokio::test]
async fn a_failing_check_takes_the_instance_out_of_dns_and_the_proxy_and_back() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let sick = Arc::new(AtomicBool::new(false));
    let addr = upstream(sick.clone()).await;
    let request = RegisterRequest {
        check: Some(Check {
            interval_seconds: 1,
            timeout_seconds: 1,
            ..Check::http(format!("http://{addr}/healthz"))
        }),
        ttl_seconds: Some(600),
        ..RegisterRequest::new("web", addr.to_string())
    };
    client.register_once(&request).await.unwrap();
    let sidecar = TestSidecar::start(&cp.url, |c| {
        c.checks.check_all = true;
        c.checks.deregister_critical_after = Duration::from_secs(3);
    })
    .await;
    let dns = sidecar.dns();
    let name = "web.service.waypost.";
    let http = reqwest::Client::new();
    let proxy_status = || async {
        http.get(format!("http://{}/", sidecar.http()))
            .header("host", "web")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // One check interval (1 s) plus slack for scheduling on a busy machine.
    let within_an_interval = Duration::from_secs(3);

    eventually(Duration::from_secs(10), "DNS to answer", || async {
        (a_count(dns, name).await == 1).then_some(())
    })
    .await;
    assert_eq!(proxy_status().await, 200);

    sick.store(true, Ordering::Relaxed);
    eventually(within_an_interval, "the instance to leave DNS", || async {
        (a_count(dns, name).await == 0).then_some(())
    })
    .await;
    assert_eq!(proxy_status().await, 503);
    let all = client
        .discover("web", &Filter::default().include_draining())
        .await
        .unwrap();
    let instance = &all.instances[0].instance;
    assert_eq!(instance.health, Health::Critical);
    assert!(
        instance
            .health_output
            .as_deref()
            .is_some_and(|o| o.contains("503")),
        "{instance:?}"
    );
    assert_eq!(
        client
            .discover("web", &Filter::default())
            .await
            .unwrap()
            .count,
        0
    );

    sick.store(false, Ordering::Relaxed);
    eventually(within_an_interval, "the instance to come back", || async {
        (a_count(dns, name).await == 1).then_some(())
    })
    .await;
    assert_eq!(proxy_status().await, 200);

    // Critical for longer than deregister_critical_after (3 s): deregistered.
    sick.store(true, Ordering::Relaxed);
    eventually(
        Duration::from_secs(10),
        "the critical instance to be deregistered",
        || async {
            let all = client
                .discover("web", &Filter::default().include_draining())
                .await
                .unwrap();
            (all.count == 0).then_some(())
        },
    )
    .await;
    sidecar.stop().await;
}

/// What a scripted upstream saw: for each probe, when it arrived and the instance's health in
/// the registry at that moment.
type ProbeLog = Arc<Mutex<Vec<(Instant, Health)>>>;

/// An upstream whose n-th `/healthz` answer is `script[n]` (`true`: 200, `false`: 503; the
/// last entry repeats), logging the registry's health of `service`'s one instance at each.
async fn scripted(
    script: Vec<bool>,
    control: Client,
    service: &'static str,
) -> (SocketAddr, ProbeLog) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: ProbeLog = Arc::default();
    let script = Arc::new(script);
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (log, script, control) = (seen.clone(), script.clone(), control.clone());
            let service = service_fn(move |req: Request<Incoming>| {
                let (log, script, control) = (log.clone(), script.clone(), control.clone());
                async move {
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    if req.uri().path() != "/healthz" {
                        return Ok::<_, Infallible>(response);
                    }
                    let arrived = Instant::now();
                    let found = control
                        .discover(service, &Filter::default().include_draining())
                        .await
                        .expect("discover from the scripted upstream");
                    let health = found.instances[0].instance.health;
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push((arrived, health));
                        log.len() - 1
                    };
                    if !script[n.min(script.len() - 1)] {
                        *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok(response)
                }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, log)
}

/// Waits until `log` holds at least `n` probes; its entries then.
async fn probes(log: &ProbeLog, n: usize) -> Vec<(Instant, Health)> {
    eventually(Duration::from_secs(60), &format!("{n} probes"), || async {
        let log = log.lock().unwrap().clone();
        (log.len() >= n).then_some(log)
    })
    .await
}

fn letters(log: &[(Instant, Health)]) -> String {
    log.iter()
        .map(|(_, h)| match h {
            Health::Passing => 'P',
            Health::Critical => 'C',
            Health::Flapping => 'F',
        })
        .collect()
}

#[tokio::test]
async fn critical_only_after_n_failures_in_a_row_and_passing_only_after_m_successes() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let script = "+--+---+-+++";
    let (addr, log) = scripted(
        script.chars().map(|c| c == '+').collect(),
        client.clone(),
        "web",
    )
    .await;
    let request = RegisterRequest {
        check: Some(Check {
            interval_seconds: 1,
            timeout_seconds: 1,
            failures_before_critical: 3,
            successes_before_passing: 2,
            ..Check::http(format!("http://{addr}/healthz"))
        }),
        ttl_seconds: Some(600),
        ..RegisterRequest::new("web", addr.to_string())
    };
    client.register_once(&request).await.unwrap();
    let sidecar = TestSidecar::start(&cp.url, |c| c.checks.check_all = true).await;

    let seen = probes(&log, script.len()).await;
    // Probe n sees what results 1..n-1 decided. Two failures (2, 3) are not enough, a success
    // (4) starts the count again, the third failure in a row (7) makes it critical; a success
    // (8) and a failure (9) change nothing, two successes in a row (10, 11) bring it back.
    assert_eq!(letters(&seen[..script.len()]), "PPPPPPPCCCCP");
    // Passing again: the failure's output is gone.
    let all = client
        .discover("web", &Filter::default().include_draining())
        .await
        .unwrap();
    assert!(all.instances[0].instance.health_output.is_none());
    sidecar.stop().await;
}

#[tokio::test]
async fn an_instance_that_keeps_changing_is_held_as_flapping_until_stable_for_the_window() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    // Fails and passes in turn for six probes, then passes for good.
    let script = "-+-+-+";
    let (addr, log) = scripted(
        script.chars().map(|c| c == '+').collect(),
        client.clone(),
        "web",
    )
    .await;
    let window = Duration::from_secs(6);
    let request = RegisterRequest {
        check: Some(Check {
            interval_seconds: 1,
            timeout_seconds: 1,
            flap_changes: 2,
            flap_window_seconds: 6,
            ..Check::http(format!("http://{addr}/healthz"))
        }),
        ttl_seconds: Some(600),
        ..RegisterRequest::new("web", addr.to_string())
    };
    client.register_once(&request).await.unwrap();
    let sidecar = TestSidecar::start(&cp.url, |c| c.checks.check_all = true).await;
    let dns = sidecar.dns();
    let name = "web.service.waypost.";

    // Probe 8 sees the hold after the last change (probe 6) and one passing result since:
    // the check passes, and the instance is still out of rotation.
    let seen = probes(&log, 8).await;
    // Critical, passing, critical: the third change within 6 s is one more than 2, so the
    // instance is held from then on, however the check goes.
    assert_eq!(letters(&seen[..8]), "PCPFFFFF");
    let found = client
        .discover("web", &Filter::default().include_draining())
        .await
        .unwrap();
    let instance = &found.instances[0].instance;
    assert_eq!(instance.health, Health::Flapping);
    let output = instance.health_output.as_deref().unwrap_or_default();
    assert!(
        output.contains("3 changes")
            && output.contains("within 6 s")
            && output.contains("at most 2"),
        "{output}"
    );
    assert_eq!(
        client
            .discover("web", &Filter::default())
            .await
            .unwrap()
            .count,
        0,
        "a flapping instance takes no work"
    );
    // The release cannot come before 6 s after probe 6 (about 5 s from now): DNS and the
    // proxy, caught up with the hold, leave it out, and the gauges count it.
    sidecar.caught_up(instance.revision).await;
    assert_eq!(a_count(dns, name).await, 0);
    let proxied = reqwest::Client::new()
        .get(format!("http://{}/", sidecar.http()))
        .header("host", "web")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status().as_u16(), 503);
    assert_eq!(sidecar.metric("waypost_sidecar_checks_flapping").await, 1.0);
    assert_eq!(cp_metric(&cp, "waypost_flapping_instances").await, 1.0);

    // Stable for the window: released. A probe after the release sees it passing.
    let seen = eventually(
        Duration::from_secs(30),
        "a probe after the release",
        || async {
            let log = log.lock().unwrap().clone();
            letters(&log)[3..].contains('P').then_some(log)
        },
    )
    .await;
    let text = letters(&seen);
    let released = text[3..].find('P').expect("a passing probe") + 3;
    assert!(text[3..released].chars().all(|c| c == 'F'), "{text}");
    // A lower bound only, which no scheduling delay can break: the sidecar released it at
    // least a window after probe 6 (the last change) arrived here.
    assert!(
        seen[released].0.duration_since(seen[5].0) >= window,
        "{text}"
    );
    eventually(Duration::from_secs(10), "DNS to answer again", || async {
        (a_count(dns, name).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        sidecar.metric("waypost_sidecar_check_flapping_total").await,
        1.0
    );
    assert_eq!(sidecar.metric("waypost_sidecar_checks_flapping").await, 0.0);
    assert_eq!(cp_metric(&cp, "waypost_flapping_total").await, 1.0);
    assert_eq!(cp_metric(&cp, "waypost_flapping_instances").await, 0.0);
    sidecar.stop().await;
}

/// The value of the control plane's metric line that starts with `series`, 0 when absent.
async fn cp_metric(cp: &TestControlPlane, series: &str) -> f64 {
    reqwest::get(cp.at("/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("the metrics text")
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// An HTTPS upstream with `pki`'s server certificate (for 127.0.0.1, from a CA the sidecar
/// does not trust unless told), answering 200 to every request and counting them.
async fn https_upstream(pki: &TestPki) -> (SocketAddr, Arc<AtomicUsize>) {
    let config = pki
        .server_files(false)
        .server_config()
        .expect("the test TLS configuration");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |_req: Request<Incoming>| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, requests)
}

async fn health_of(client: &Client, service: &str) -> (Health, String) {
    let all = client
        .discover(service, &Filter::default().include_draining())
        .await
        .unwrap();
    let instance = &all.instances[0].instance;
    (
        instance.health,
        instance
            .health_output
            .as_deref()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn https_checks_verify_certificates_unless_told_not_to() {
    let pki = TestPki::new();
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let (addr, requests) = https_upstream(&pki).await;
    for (service, skip) in [("verified", false), ("unverified", true)] {
        let request = RegisterRequest {
            check: Some(Check {
                interval_seconds: 1,
                timeout_seconds: 1,
                tls_skip_verify: skip,
                ..Check::http(format!("https://{addr}/{service}"))
            }),
            ttl_seconds: Some(600),
            ..RegisterRequest::new(service, addr.to_string())
        };
        client.register_once(&request).await.unwrap();
    }

    // Without the CA: the verifying check fails on the certificate and says so.
    let sidecar = TestSidecar::start(&cp.url, |c| c.checks.check_all = true).await;
    let output = eventually(
        Duration::from_secs(10),
        "the verifying check to fail",
        || async {
            let (health, output) = health_of(&client, "verified").await;
            (health == Health::Critical).then_some(output)
        },
    )
    .await;
    assert!(
        output.contains("https://") && output.contains("certificate"),
        "{output}"
    );
    // The skipping check got through to HTTP; once two of its requests arrived (checks run
    // one after the other), the first one's result is in: it passes.
    eventually(Duration::from_secs(10), "two requests", || async {
        (requests.load(Ordering::Relaxed) >= 2).then_some(())
    })
    .await;
    assert_eq!(health_of(&client, "unverified").await.0, Health::Passing);
    sidecar.stop().await;

    // With the CA as --check-ca-cert: the verifying check passes too (host name included:
    // the certificate names 127.0.0.1).
    let sidecar = TestSidecar::start(&cp.url, |c| {
        c.checks.check_all = true;
        c.checks.ca_cert = Some(pki.ca.clone());
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the verifying check to pass",
        || async { (health_of(&client, "verified").await.0 == Health::Passing).then_some(()) },
    )
    .await;
    sidecar.stop().await;
}

#[tokio::test]
async fn a_sidecar_with_an_unusable_check_ca_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate").unwrap();
    let mut config = waypost_sidecar::Config::for_test("http://127.0.0.1:9", None);
    config.checks.ca_cert = Some(empty);
    let err = waypost_sidecar::start(config, Default::default())
        .await
        .expect_err("a CA file without certificates is refused");
    assert!(err.to_string().contains("check_ca_cert"), "{err}");
}
