//! The sidecar's HTTP proxy with real upstreams: small hyper servers on 127.0.0.1:0 that the
//! test can make fail or kill outright.

mod common;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{DEADLINE, TestSidecar};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, task::AbortHandle};
use waypost_client::{Client, model::InstanceRef, model::RegisterRequest};
use waypost_control::testkit::{TestControlPlane, eventually};
use waypost_sidecar::Config;

/// An upstream that answers `name version path via x-forwarded-for`, or 500 while failing.
struct Upstream {
    name: String,
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
    /// `/held` requests arrived, and the permits that let them be answered.
    held: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
}

/// Counts a connection as open until its task ends or is aborted.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Upstream {
    async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let failing = Arc::new(AtomicBool::new(false));
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let open: Arc<AtomicUsize> = Arc::default();
        let held: Arc<AtomicUsize> = Arc::default();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (label, fail, spawned) = (name.to_owned(), failing.clone(), tasks.clone());
        let (arrived, gate) = (held.clone(), release.clone());
        let counted = open.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (label, fail) = (label.clone(), fail.clone());
                let (arrived, gate) = (arrived.clone(), gate.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let hold = req.uri().path() == "/held";
                    let (arrived, gate) = (arrived.clone(), gate.clone());
                    let failing = fail.load(Ordering::Relaxed);
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let text = format!(
                        "{label} {:?} {} {} {}",
                        req.version(),
                        req.uri().path(),
                        header("via"),
                        header("x-forwarded-for"),
                    );
                    async move {
                        if hold {
                            arrived.fetch_add(1, Ordering::SeqCst);
                            gate.acquire().await.unwrap().forget();
                        }
                        let mut response = Response::new(Full::new(Bytes::from(text)));
                        if failing {
                            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                counted.fetch_add(1, Ordering::SeqCst);
                let guard = Open(counted.clone());
                let conn = tokio::spawn(async move {
                    let _guard = guard;
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
                spawned.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Self {
            name: name.to_owned(),
            addr,
            failing,
            tasks,
            open,
            held,
            release,
        }
    }

    /// Closes every connection (as an upstream does with idle keep-alive connections) and
    /// waits until they are gone; the listener stays.
    async fn close_connections(&self) {
        for task in self.tasks.lock().unwrap().drain(1..) {
            task.abort();
        }
        eventually(DEADLINE, "the upstream's connections close", || async {
            (self.open.load(Ordering::SeqCst) == 0).then_some(())
        })
        .await;
    }

    /// Gone at once: listener closed, every connection reset.
    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

struct Setup {
    _cp: TestControlPlane,
    client: Client,
    sidecar: TestSidecar,
    upstreams: Vec<Upstream>,
}

/// A control plane, `n` upstreams registered as `web` (with `meta` and weights), a sidecar.
async fn setup(
    n: usize,
    meta: &[(&str, &str)],
    weights: &[u32],
    tweak: impl FnOnce(&mut Config),
) -> Setup {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let mut upstreams = Vec::new();
    let mut last = 0;
    for i in 0..n {
        let upstream = Upstream::start(&format!("u{i}")).await;
        let request = RegisterRequest {
            id: Some(upstream.name.clone()),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            weight: weights.get(i).copied(),
            ttl_seconds: Some(600),
            ..RegisterRequest::new("web", upstream.addr.to_string())
        };
        last = client.register_once(&request).await.unwrap().revision;
        upstreams.push(upstream);
    }
    let sidecar = TestSidecar::start(&cp.url, tweak).await;
    sidecar.caught_up(last).await;
    Setup {
        _cp: cp,
        client,
        sidecar,
        upstreams,
    }
}

impl Setup {
    /// Waits until the sidecar serves `revision` (or later).
    async fn caught_up(&self, revision: u64) {
        self.sidecar.caught_up(revision).await;
    }

    /// The sidecar's Prometheus text.
    async fn metrics(&self) -> String {
        self.sidecar.metrics().await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sidecar.http())
    }

    async fn send(&self, http: &reqwest::Client, host: &str, path: &str) -> reqwest::Response {
        http.get(self.url(path))
            .header("host", host)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, http: &reqwest::Client, host: &str, path: &str) -> (u16, String) {
        let response = self.send(http, host, path).await;
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Who answered `n` sequential GETs.
    async fn spread(&self, n: usize) -> BTreeMap<String, usize> {
        let http = reqwest::Client::new();
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let (status, body) = self.get(&http, "web", "/").await;
            assert_eq!(status, 200, "{body}");
            *counts
                .entry(body.split(' ').next().unwrap().to_owned())
                .or_default() += 1;
        }
        counts
    }
}

#[tokio::test]
async fn round_robin_weighted_and_least_request_spread_requests() {
    let rr = setup(3, &[("waypost.balance", "round_robin")], &[], |_| {}).await;
    let counts = rr.spread(300).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100]
    );

    let weighted = setup(2, &[("waypost.balance", "weighted")], &[1, 3], |_| {}).await;
    let counts = weighted.spread(400).await;
    // Expected 100 / 300 (standard deviation about 8.7).
    assert!((60..140).contains(&counts["u0"]), "{counts:?}");

    // Least request (the default): sequential requests find every instance idle, so the two
    // random draws spread them over all three.
    let least = setup(3, &[], &[], |_| {}).await;
    let counts = least.spread(300).await;
    assert!(
        counts.len() == 3 && counts.values().all(|&n| n > 50),
        "{counts:?}"
    );
}

#[tokio::test]
async fn routing_headers_and_errors() {
    let s = setup(1, &[], &[], |c| c.proxy.route_by_path = true).await;
    let http = reqwest::Client::new();

    // By Host, with the domain, with a port; the request line's path goes through.
    for host in [
        "web",
        "web.service.waypost",
        "WEB.service.waypost.:8081",
        "web.SERVICE.Waypost",
    ] {
        let (status, body) = s.get(&http, host, "/a/b").await;
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.starts_with("u0 HTTP/1.1 /a/b"), "{body}");
    }
    // Forwarding headers: Via and X-Forwarded-For (the client is 127.0.0.1).
    let (_, body) = s.get(&http, "web", "/").await;
    assert!(body.ends_with("1.1 waypost 127.0.0.1"), "{body}");
    // By path prefix when the Host names no service: the prefix is removed.
    let (status, body) = s.get(&http, "localhost", "/web/x?y=1").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("u0 HTTP/1.1 /x"), "{body}");

    // Unknown service: 404 problem+json; no healthy instance: 503.
    let response = s.send(&http, "nobody", "/").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        response.headers()["x-waypost-proxy-error"],
        "unknown_service"
    );
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "unknown_service");

    let answer = s
        .client
        .drain(InstanceRef::by_id("web", "u0"), true)
        .await
        .unwrap();
    s.caught_up(answer.revision).await;
    let response = s.send(&http, "web", "/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["x-waypost-proxy-error"],
        "no_healthy_instance"
    );
}

#[tokio::test]
async fn http2_end_to_end_with_h2c_upstreams() {
    let s = setup(1, &[("waypost.protocol", "h2c")], &[], |_| {}).await;
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = http
        .get(s.url("/h2"))
        .header("host", "web")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let body = response.text().await.unwrap();
    assert!(body.starts_with("u0 HTTP/2.0 /h2"), "{body}");
}

#[tokio::test]
async fn one_of_three_instances_killed_under_load_fails_no_idempotent_request() {
    let s = setup(3, &[], &[], |_| {}).await;
    let s = Arc::new(s);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    // Bounded: 4 workers x 150 requests.
    for w in 0..4 {
        let (s, failures) = (s.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..150 {
                let (status, body) = s.get(&http, "web", "/").await;
                if status != 200 {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{w}/{i}: {status} {body}"));
                }
                if w == 0 && i == 30 {
                    s.upstreams[1].kill();
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // The kill was felt and absorbed: requests to it were retried elsewhere.
    let metrics = s.metrics().await;
    let retries: f64 = metrics
        .lines()
        .find(|l| l.starts_with("waypost_sidecar_proxy_retries_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(retries >= 1.0, "no retry happened: {metrics}");
}

#[tokio::test]
async fn a_failing_instance_is_ejected_and_readmitted() {
    let s = setup(3, &[("waypost.balance", "round_robin")], &[], |c| {
        c.proxy.outlier.failures = 3;
        c.proxy.outlier.base = Duration::from_millis(500);
    })
    .await;
    let http = reqwest::Client::new();
    s.upstreams[0].failing.store(true, Ordering::Relaxed);
    // Round robin reaches u0 every third request; after three 500s it is ejected.
    let mut errors = 0;
    for _ in 0..12 {
        let (status, _) = s.get(&http, "web", "/").await;
        if status == 500 {
            errors += 1;
        }
    }
    assert_eq!(errors, 3, "ejected after the third failure");
    for _ in 0..30 {
        let (status, body) = s.get(&http, "web", "/").await;
        assert_eq!(status, 200, "an ejected instance gets no requests: {body}");
    }
    // Healed: after the ejection time it takes requests again.
    s.upstreams[0].failing.store(false, Ordering::Relaxed);
    eventually(DEADLINE, "u0 to be readmitted", || async {
        let (_, body) = s.get(&http, "web", "/").await;
        body.starts_with("u0 ").then_some(())
    })
    .await;
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("waypost_sidecar_proxy_ejections_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    // A WebSocket echo upstream.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() || ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let s = setup(0, &[], &[], |_| {}).await;
    let revision = s
        .client
        .register_once(&RegisterRequest::new("ws", addr.to_string()))
        .await
        .unwrap()
        .revision;
    s.caught_up(revision).await;

    // Connect to the proxy; `Host: ws` names the service.
    let stream = tokio::net::TcpStream::connect(s.sidecar.http())
        .await
        .unwrap();
    let request = "ws://ws/echo".into_client_request().unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("the upgrade passes through the proxy");
    assert_eq!(response.status(), 101);
    for text in ["hello", "through", "waypost"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap(), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), &[0u8, 1, 2, 255]);
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_sudden_mass_removal_spreads_over_all_recent_instances_but_draining_does_not() {
    let s = setup(4, &[("waypost.balance", "round_robin")], &[], |_| {}).await;
    assert_eq!(s.spread(8).await.len(), 4, "traffic flows before");
    // Three of four vanish at once (their processes still answer, as during a control-plane
    // accident): below the 50% threshold, so the proxy keeps spreading over all four.
    let mut last = 0;
    for name in ["u1", "u2", "u3"] {
        last = s
            .client
            .deregister(InstanceRef::by_id("web", name))
            .await
            .unwrap()
            .revision;
    }
    s.caught_up(last).await;
    let counts = s.spread(40).await;
    assert_eq!(counts.len(), 4, "{counts:?}");
    let metrics = s.metrics().await;
    assert!(
        !metrics.contains("waypost_sidecar_proxy_panic_total 0"),
        "{metrics}"
    );

    // Draining is deliberate (and a critical check is a known reason): those instances are
    // still registered and get no new work, whatever their number.
    let s = setup(4, &[("waypost.balance", "round_robin")], &[], |_| {}).await;
    for name in ["u1", "u2", "u3"] {
        last = s
            .client
            .drain(InstanceRef::by_id("web", name), true)
            .await
            .unwrap()
            .revision;
    }
    s.caught_up(last).await;
    let counts = s.spread(20).await;
    assert_eq!(counts.keys().collect::<Vec<_>>(), vec!["u0"], "{counts:?}");
}

#[tokio::test]
async fn pooled_connections_closed_by_the_upstream_are_replaced_even_for_a_post() {
    let setup = setup(1, &[], &[], |_| {}).await;
    let http = reqwest::Client::new();
    let (status, _) = setup.get(&http, "web", "/warm").await;
    assert_eq!(status, 200);
    // The sidecar now holds an idle keep-alive connection; the upstream closes it.
    setup.upstreams[0].close_connections().await;
    let response = http
        .post(setup.url("/orders"))
        .header("host", "web")
        .body("a body that must not be lost")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let metrics = setup.metrics().await;
    assert!(
        metrics.contains("waypost_sidecar_proxy_retries_total 0"),
        "a closed idle connection is not an instance failure: {metrics}"
    );
}

/// The binary itself with `--workers 1` (the single-threaded scheduler `main` picks for one
/// worker): it follows the control plane and proxies, reusing its upstream connection.
#[tokio::test]
async fn the_binary_on_one_worker_proxies() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let cp = TestControlPlane::in_memory(|_| {}).await;
    let upstream = Upstream::start("solo").await;
    let client = Client::new(&cp.url).unwrap();
    let request = RegisterRequest {
        ttl_seconds: Some(600),
        ..RegisterRequest::new("web", upstream.addr.to_string())
    };
    client.register_once(&request).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_waypost-sidecar"))
        .args([
            "--control",
            &cp.url,
            "--workers",
            "1",
            "--log-format",
            "json",
        ])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--dns-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The proxy's address, from the "listening" log line.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let proxy = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(http) = entry["http"].as_str() {
                return http.to_owned();
            }
        }
        panic!("the sidecar exited without listening");
    })
    .await
    .expect("the sidecar listens");
    let http = reqwest::Client::new();
    let answer = |path: &'static str| {
        let (http, proxy) = (http.clone(), proxy.clone());
        async move {
            let response = http
                .get(format!("http://{proxy}{path}"))
                .header("host", "web")
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(response.text().await.ok()?)
        }
    };
    let first = eventually(DEADLINE, "the binary proxies to the upstream", || {
        answer("/one")
    })
    .await;
    assert!(
        first.starts_with("solo HTTP/1.1 /one 1.1 waypost 127.0.0.1"),
        "{first}"
    );
    for _ in 0..20 {
        let text = answer("/again")
            .await
            .expect("every later request is answered");
        assert!(text.starts_with("solo HTTP/1.1 /again"), "{text}");
    }
    assert_eq!(
        upstream.open.load(Ordering::SeqCst),
        1,
        "one pooled upstream connection serves them all"
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// Shutdown closes idle keep-alive connections at once and lets the answer in flight finish.
#[tokio::test]
async fn shutdown_closes_idle_connections_and_lets_the_answer_in_flight_finish() {
    let mut setup = setup(1, &[], &[], |_| {}).await;
    // An idle keep-alive connection, after one exchange.
    let stream = tokio::net::TcpStream::connect(setup.sidecar.http())
        .await
        .unwrap();
    let (mut idle, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(
            stream,
        ))
        .await
        .unwrap();
    let idle_conn = tokio::spawn(conn);
    let request = || {
        Request::builder()
            .uri("/warm")
            .header("host", "web")
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    assert_eq!(idle.send_request(request()).await.unwrap().status(), 200);
    // A request the upstream holds.
    let in_flight = tokio::spawn({
        let url = setup.url("/held");
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .header("host", "web")
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    });
    let upstream = &setup.upstreams[0];
    eventually(
        DEADLINE,
        "the held request reaches the upstream",
        || async { (upstream.held.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    setup.sidecar.token.cancel();
    // The idle connection is closed by the proxy while the held answer is still pending.
    tokio::time::timeout(DEADLINE, idle_conn)
        .await
        .expect("the idle connection closes at shutdown")
        .unwrap()
        .unwrap();
    assert!(!in_flight.is_finished());
    upstream.release.add_permits(1);
    let (status, body) = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("the answer in flight finishes")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("u0 HTTP/1.1 /held"), "{body}");
    tokio::time::timeout(DEADLINE, &mut setup.sidecar.running.join)
        .await
        .expect("the sidecar stops once its connections are done")
        .unwrap();
}

/// Issue 12: a client connection that sent nothing, only HTTP/2's preface, or half a request
/// line was held for ever. Now each is closed `--client-header-timeout` after its accept and
/// counted, a client that stays idle after a request is closed after `--idle-timeout`, and a
/// normal client is served even with more silent connections than the connection limit.
#[tokio::test]
async fn silent_and_idle_client_connections_are_closed_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = setup(1, &[], &[], |c| {
        c.proxy.client_header_timeout = Duration::from_millis(500);
        c.proxy.idle_timeout = Duration::from_secs(1);
        c.proxy.max_client_connections = 6;
    })
    .await;
    let mut silent = Vec::new();
    let kinds: [&[u8]; 3] = [b"", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET /hal"];
    for kind in kinds {
        for _ in 0..3 {
            let mut stream = tokio::net::TcpStream::connect(setup.sidecar.http())
                .await
                .unwrap();
            stream.write_all(kind).await.unwrap();
            silent.push(stream);
        }
    }
    // An idle keep-alive connection after one exchange.
    let mut idle = tokio::net::TcpStream::connect(setup.sidecar.http())
        .await
        .unwrap();
    idle.write_all(b"GET /warm HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    assert_eq!(setup.get(&http, "web", "/").await.0, 200);
    for stream in silent.iter_mut().chain([&mut idle]) {
        let mut got = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut got))
            .await
            .expect("the proxy closes the connection")
            .ok();
        let got = String::from_utf8_lossy(&got);
        assert!(!got.contains("400") && !got.contains("502"), "{got}");
    }
    eventually(DEADLINE, "every close is counted", || async {
        let metrics = setup.metrics().await;
        let idle_closed = metrics
            .lines()
            .find_map(|l| l.strip_prefix("waypost_sidecar_proxy_client_idle_closed_total "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        (metrics.contains("waypost_sidecar_proxy_client_header_timeouts_total 9")
            && idle_closed >= 1)
            .then_some(())
    })
    .await;
    assert_eq!(setup.get(&http, "web", "/").await.0, 200);
}
