//! The HTTP/1.1 client side: one keep-alive hyper connection per worker, and [`drive`], the loop
//! every subcommand uses to send many requests bounded by a deadline and a count.
//!
//! hyper's connection API is used directly (no pool) so that a worker is exactly one connection
//! and the measured latency is one request on it, nothing else.

use std::{
    net::SocketAddr,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode,
    body::Bytes,
    client::conn::http1::{self, SendRequest},
    header::{CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Error;

/// A server to load, given as `http://127.0.0.1:PORT`; only loopback addresses are accepted.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    addr: SocketAddr,
    /// `127.0.0.1:PORT`, sent as the `Host` header.
    authority: String,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s:?}: give the target as http://127.0.0.1:PORT"))?;
        let authority = rest.trim_end_matches('/');
        let addr: SocketAddr = authority
            .parse()
            .map_err(|e| format!("{s:?}: expected http://IP:PORT ({e})"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{s:?}: this tool only loads loopback addresses"));
        }
        Ok(Self {
            addr,
            authority: authority.to_owned(),
        })
    }
}

impl Target {
    /// The socket address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, for the `Host` header.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The target as given, `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.authority)
    }
}

/// One request to send: small enough to build per request, cheap to clone when precomputed.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// GET or POST.
    pub(crate) method: Method,
    /// Path and query.
    pub(crate) path: String,
    /// JSON body; empty for GET.
    pub(crate) body: Bytes,
    /// Bytes a 2xx answer's body must contain to count as a success (the batch heartbeat
    /// answers 200 even when entries fail).
    pub(crate) expect: Option<Bytes>,
}

impl Call {
    /// A GET of `path`.
    pub(crate) fn get(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            body: Bytes::new(),
            expect: None,
        }
    }

    /// A POST of a JSON value to `path`.
    pub(crate) fn post(path: &str, json: &serde_json::Value) -> Self {
        Self {
            method: Method::POST,
            path: path.to_owned(),
            body: Bytes::from(json.to_string()),
            expect: None,
        }
    }

    /// The same call, counted as failed unless a 2xx answer's body contains `needle`.
    pub(crate) fn expecting(mut self, needle: &'static str) -> Self {
        self.expect = Some(Bytes::from_static(needle.as_bytes()));
        self
    }
}

/// One open keep-alive connection.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Conn {
    /// Connects and spawns the task that drives the connection.
    pub(crate) async fn open(target: &Target) -> Result<Self, Error> {
        let stream = TcpStream::connect(target.addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes; errors show up on requests.
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            authority: target.authority.clone(),
        })
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn send(&mut self, call: &Call) -> Result<(StatusCode, Bytes), Error> {
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(call.path.as_str())
            .header(HOST, self.authority.as_str());
        if !call.body.is_empty() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(call.body.clone()))?;
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// What to send and when to stop.
pub(crate) struct Plan {
    /// Builds request number `n` (numbered from 0 across all workers).
    pub(crate) make: Box<dyn Fn(u64) -> Call + Send + Sync>,
    /// No request starts after this instant.
    pub(crate) deadline: Instant,
    /// At most this many requests in all.
    pub(crate) max_requests: u64,
    /// A request that takes longer counts as an error and its connection is replaced.
    pub(crate) request_timeout: Duration,
    /// Whether to keep each latency (for percentiles).
    pub(crate) record_latency: bool,
}

/// What the workers saw, merged.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Requests that got an answer or failed.
    pub(crate) requests: u64,
    /// Non-2xx answers plus transport failures and timeouts.
    pub(crate) errors: u64,
    /// Latency of every answered request, in nanoseconds (when recorded).
    pub(crate) latencies_ns: Vec<u64>,
    /// The first failure, to print once.
    pub(crate) first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latencies_ns.extend(other.latencies_ns);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn fail(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// Runs `concurrency` workers, each on its own connection, until the plan's deadline or count is
/// reached. Returns the merged tally and the wall time from start to the last worker's end.
pub(crate) async fn drive(
    target: &Target,
    concurrency: usize,
    plan: Plan,
) -> Result<(Tally, Duration), Error> {
    let plan = Arc::new(plan);
    let issued = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(Conn::open(target).await?);
    }
    let started = Instant::now();
    let workers: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let (plan, issued, target) = (plan.clone(), issued.clone(), target.clone());
            tokio::spawn(worker(conn, target, plan, issued))
        })
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await?);
    }
    Ok((tally, started.elapsed()))
}

async fn worker(mut conn: Conn, target: Target, plan: Arc<Plan>, issued: Arc<AtomicU64>) -> Tally {
    let mut tally = Tally::default();
    if plan.record_latency {
        tally.latencies_ns.reserve(4096);
    }
    while Instant::now() < plan.deadline {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if n >= plan.max_requests {
            break;
        }
        let call = (plan.make)(n);
        let sent = Instant::now();
        let outcome = tokio::time::timeout(plan.request_timeout, conn.send(&call)).await;
        let took = sent.elapsed();
        tally.requests += 1;
        let broken = match outcome {
            Ok(Ok((status, body))) => {
                if plan.record_latency {
                    tally.latencies_ns.push(took.as_nanos() as u64);
                }
                let unexpected = call.expect.as_ref().is_some_and(|needle| {
                    !body.windows(needle.len()).any(|w| w == needle.as_ref())
                });
                if !status.is_success() || unexpected {
                    let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                    tally.fail(format!("{} {} -> {status} {body}", call.method, call.path));
                }
                false
            }
            Ok(Err(err)) => {
                tally.fail(format!("{} {}: {err}", call.method, call.path));
                true
            }
            Err(_) => {
                tally.fail(format!(
                    "{} {}: timed out after {took:?}",
                    call.method, call.path
                ));
                true
            }
        };
        if broken {
            // The connection is in an unknown state: replace it, or stop this worker.
            match tokio::time::timeout(plan.request_timeout, Conn::open(&target)).await {
                Ok(Ok(fresh)) => conn = fresh,
                _ => break,
            }
        }
    }
    tally
}
