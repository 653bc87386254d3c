//! Real `waypost-control` processes as a Raft cluster on one host, for the fault tests
//! (`failover.rs`, `linearizable.rs`, `partition.rs`).
//!
//! Each node is the binary under test (`CARGO_BIN_EXE_waypost-control`) with its own temporary
//! data directory, `--log-format json` and a 500 ms election timeout, on a port picked before
//! start (bind `127.0.0.1:0`, release) so that a node killed with SIGKILL comes back on the
//! same address and data directory. Standard error is drained by a thread that keeps the last
//! lines, printed when a test fails. Requests go through one `reqwest` client without proxies.
//!
//! Also here: a small deterministic PRNG for the clients, the outcome of one request as the
//! fault tests classify it, and a `/watch` follower that moves to another node with
//! `Last-Event-ID` when its connection breaks.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod history;
pub mod netns;

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::Value;

/// The election timeout every node runs with.
pub const ELECTION: &str = "500ms";
/// Deadline for things that take a few election rounds (a new leader, a catch-up).
pub const SETTLE: Duration = Duration::from_secs(20);
/// Lines of each node's log kept for the report of a failed test.
const LOG_TAIL: usize = 400;

/// The HTTP client of the fault tests: no proxies (the nodes are on private addresses), and
/// bounded waits, so that a request to a dead or cut-off node ends as a transport error.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("build a reqwest client")
}

/// What one request came to.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An HTTP answer: its status, `X-Waypost-Index` (when present) and JSON body.
    Answer {
        status: u16,
        index: Option<u64>,
        body: Value,
    },
    /// No answer: connection refused or reset, or timed out.
    Transport(String),
}

impl Reply {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Answer { status, .. } => Some(*status),
            Self::Transport(_) => None,
        }
    }

    pub fn body(&self) -> &Value {
        match self {
            Self::Answer { body, .. } => body,
            Self::Transport(_) => &Value::Null,
        }
    }

    /// An error answer with this problem code.
    pub fn is_problem(&self, status: u16, code: &str) -> bool {
        matches!(self, Self::Answer { status: s, body, .. } if *s == status && body["code"] == code)
    }

    /// 503 `no_leader`: the operation may or may not have happened (a write), or did not
    /// answer (a read).
    pub fn is_no_leader(&self) -> bool {
        self.is_problem(503, "no_leader")
    }

    /// A failure whose outcome is unknown for a write: 503 `no_leader` or no answer at all.
    pub fn is_indeterminate(&self) -> bool {
        self.is_no_leader() || matches!(self, Self::Transport(_))
    }
}

async fn finish(res: Result<reqwest::Response, reqwest::Error>) -> Reply {
    let res = match res {
        Ok(res) => res,
        Err(err) => return Reply::Transport(format!("{err:?}")),
    };
    let status = res.status().as_u16();
    let index = res
        .headers()
        .get("x-waypost-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match res.bytes().await {
        Ok(bytes) => Reply::Answer {
            status,
            index,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        },
        Err(err) => Reply::Transport(format!("reading the body: {err:?}")),
    }
}

pub async fn post(client: &reqwest::Client, base: &str, path: &str, body: &Value) -> Reply {
    finish(client.post(format!("{base}{path}")).json(body).send().await).await
}

pub async fn get(client: &reqwest::Client, base: &str, path: &str) -> Reply {
    finish(client.get(format!("{base}{path}")).send().await).await
}

/// A small deterministic PRNG (splitmix64): the clients' choices are the same on every run
/// for a seed; only the timing of the fault against them varies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Ports picked by binding `127.0.0.1:0` and releasing them (all bound at once, so distinct).
pub fn pick_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// Where and how a node runs.
#[derive(Debug, Clone)]
pub struct Spec {
    /// 1-based Raft node id.
    pub id: u64,
    /// `--listen`.
    pub listen: String,
    /// The URL the test reaches it at.
    pub url: String,
    /// `--peers`, the same for every node.
    pub peers: String,
    /// Run under `ip netns exec` in this namespace.
    pub netns: Option<String>,
    /// Extra flags.
    pub extra: Vec<String>,
}

/// One node: its spec, data directory, and the process while it runs.
pub struct Node {
    pub spec: Spec,
    dir: tempfile::TempDir,
    child: Option<Child>,
    log: Arc<Mutex<VecDeque<String>>>,
    /// How many times it was started.
    starts: u32,
}

impl Node {
    pub fn url(&self) -> &str {
        &self.spec.url
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn command(&self) -> Command {
        let bin = env!("CARGO_BIN_EXE_waypost-control");
        let mut cmd = match &self.spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["--node-id", &self.spec.id.to_string()])
            .args(["--listen", &self.spec.listen])
            .args(["--peers", &self.spec.peers])
            .args(["--election-timeout", ELECTION])
            .args(["--log-format", "json"])
            // No instance expires while a test runs (nothing heartbeats).
            .args(["--default-ttl", "1h"])
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.spec.extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the process and waits for its `listening` line (retrying a few times when the
    /// port is briefly still taken after a kill).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already runs", self.spec.id);
        for attempt in 0..20 {
            self.starts += 1;
            let mut child = self.command().spawn().expect("start waypost-control");
            let stderr = child.stderr.take().expect("stderr is piped");
            let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
            let log = self.log.clone();
            let tag = format!("[node {} start {}]", self.spec.id, self.starts);
            log.lock().unwrap().push_back(format!("{tag} spawned"));
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if tx.is_some() {
                        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                        let message = v["message"].as_str().or(v["fields"]["message"].as_str());
                        if message == Some("listening") {
                            let _ = tx.take().unwrap().send(Ok(()));
                        }
                    }
                    let mut log = log.lock().unwrap();
                    if log.len() == LOG_TAIL {
                        log.pop_front();
                    }
                    log.push_back(format!("{tag} {line}"));
                }
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Err("exited before listening".into()));
                }
            });
            match tokio::time::timeout(SETTLE, rx).await {
                Ok(Ok(Ok(()))) => {
                    self.child = Some(child);
                    return;
                }
                other => {
                    let _ = child.kill();
                    let status = child.wait();
                    let tail = self.tail(5);
                    if attempt < 19 && tail.contains("ddress") {
                        // "Address in use": the old socket is not gone yet.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    panic!(
                        "node {} did not start ({other:?}, {status:?}):\n{tail}",
                        self.spec.id
                    );
                }
            }
        }
    }

    /// SIGKILL (`Child::kill`), and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            self.log
                .lock()
                .unwrap()
                .push_back(format!("[node {}] killed with SIGKILL", self.spec.id));
        }
    }

    /// The last `n` log lines.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let skip = log.len().saturating_sub(n);
        log.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// N nodes of one cluster.
pub struct Procs {
    pub nodes: Vec<Node>,
    pub client: reqwest::Client,
}

impl Procs {
    /// `n` nodes on pre-picked loopback ports.
    pub async fn start(n: usize) -> Self {
        let ports = pick_ports(n);
        let peers = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=http://127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let specs = ports
            .iter()
            .enumerate()
            .map(|(i, p)| Spec {
                id: i as u64 + 1,
                listen: format!("127.0.0.1:{p}"),
                url: format!("http://127.0.0.1:{p}"),
                peers: peers.clone(),
                netns: None,
                extra: Vec::new(),
            })
            .collect();
        Self::start_specs(specs).await
    }

    /// Starts a node per spec, then waits until every one is ready.
    pub async fn start_specs(specs: Vec<Spec>) -> Self {
        let mut nodes: Vec<Node> = specs
            .into_iter()
            .map(|spec| Node {
                spec,
                dir: tempfile::tempdir().expect("a data directory"),
                child: None,
                log: Arc::default(),
                starts: 0,
            })
            .collect();
        for node in &mut nodes {
            node.start().await;
        }
        let procs = Self {
            nodes,
            client: http(),
        };
        for i in 0..procs.nodes.len() {
            procs.wait_ready(i).await;
        }
        // And the first leader named the cluster's epoch (before any revision).
        for i in 0..procs.nodes.len() {
            let until = Instant::now() + SETTLE;
            loop {
                let h = get(&procs.client, procs.url(i), "/health").await;
                if h.body()["epoch"]
                    .as_str()
                    .is_some_and(|e| e != "0000000000000000")
                {
                    break;
                }
                assert!(Instant::now() < until, "no epoch on node {}: {h:?}", i + 1);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        procs
    }

    pub fn url(&self, i: usize) -> &str {
        self.nodes[i].url()
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url().to_owned()).collect()
    }

    /// `/ready` is 200 on node `i` (a leader known, its log applied).
    pub async fn wait_ready(&self, i: usize) {
        let until = Instant::now() + SETTLE;
        loop {
            if get(&self.client, self.url(i), "/ready").await.status() == Some(200) {
                return;
            }
            assert!(
                Instant::now() < until,
                "node {} not ready within {SETTLE:?}:\n{}",
                i + 1,
                self.nodes[i].tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /cluster` on node `i`.
    pub async fn status(&self, i: usize) -> Option<Value> {
        match get(&self.client, self.url(i), "/cluster").await {
            Reply::Answer {
                status: 200, body, ..
            } => Some(body),
            _ => None,
        }
    }

    /// The position of the leader that the nodes in `among` agree on (and that says it
    /// leads), waiting up to [`SETTLE`].
    pub async fn leader_among(&self, among: &[usize]) -> usize {
        let until = Instant::now() + SETTLE;
        loop {
            if let Some(l) = self.agreed_leader(among).await {
                return l;
            }
            assert!(
                Instant::now() < until,
                "no leader agreed on by nodes {among:?} within {SETTLE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn agreed_leader(&self, among: &[usize]) -> Option<usize> {
        let mut seen = None;
        for &i in among {
            let s = self.status(i).await?;
            let l = s["leader"].as_u64()?;
            if seen.is_some_and(|x| x != l) {
                return None;
            }
            seen = Some(l);
        }
        let i = usize::try_from(seen?).ok()?.checked_sub(1)?;
        if !among.contains(&i) {
            return None;
        }
        let s = self.status(i).await?;
        (s["state"] == "leader").then_some(i)
    }

    /// The leader all running nodes agree on.
    pub async fn leader(&self) -> usize {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].running())
            .collect();
        self.leader_among(&running).await
    }

    /// `/health`'s revision on node `i` (its applied head; no round to the leader).
    pub async fn head(&self, i: usize) -> Option<u64> {
        get(&self.client, self.url(i), "/health").await.body()["revision"].as_u64()
    }

    /// A linearizable `GET path` on node `i`, retried only while it answers 503
    /// `no_leader`, up to [`SETTLE`].
    pub async fn read(&self, i: usize, path: &str) -> Reply {
        let until = Instant::now() + SETTLE;
        loop {
            let r = get(&self.client, self.url(i), path).await;
            if !r.is_no_leader() || Instant::now() > until {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The cluster's final head, once the clients are done, through node `i`: a write that
    /// was answered 503 (its commit timed out) can still be committed afterwards, so first a
    /// barrier, a registration of its own, retried until acknowledged. Whatever else the
    /// leader took before it is committed with it, and nothing comes after it.
    pub async fn settled_head(&self, i: usize) -> u64 {
        let body = serde_json::json!({"service": "barrier", "address": "http://10.9.9.9:9"});
        let until = Instant::now() + SETTLE;
        loop {
            let r = post(&self.client, self.url(i), "/register", &body).await;
            if matches!(r.status(), Some(200 | 201)) {
                break;
            }
            assert!(
                r.is_indeterminate() && Instant::now() < until,
                "the barrier write on node {}: {r:?}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.linear_head(i).await
    }

    /// The cluster's head, read linearizably on node `i`: after a linearizable read the node
    /// has applied everything committed before it.
    pub async fn linear_head(&self, i: usize) -> u64 {
        let r = self.read(i, "/discover/none").await;
        assert_eq!(
            r.status(),
            Some(200),
            "linearizable read on node {}: {r:?}",
            i + 1
        );
        self.head(i).await.expect("a revision in /health")
    }

    /// Waits until node `i`'s applied head is at least `head`.
    pub async fn wait_head(&self, i: usize, head: u64) {
        let until = Instant::now() + SETTLE;
        loop {
            let h = self.head(i).await;
            if h.is_some_and(|h| h >= head) {
                assert_eq!(h, Some(head), "node {} went past the final head", i + 1);
                return;
            }
            assert!(
                Instant::now() < until,
                "node {} at {h:?}, not at head {head} within {SETTLE:?}:\n{}",
                i + 1,
                self.nodes[i].tail(20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "==== node {} log (last lines) ====\n{}",
                    node.spec.id,
                    node.tail(150)
                );
            }
        }
    }
}

/// An instance key: service and id.
pub type Key = (String, String);

/// What a `/watch` follower saw: each event's kind, revision, and instance key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: String,
    /// The epoch in its id.
    pub epoch: String,
    pub revision: u64,
    pub key: Option<Key>,
    /// The node it came from (0-based).
    pub node: usize,
}

/// Follows `/watch` on `urls[first]`; when the connection breaks, or when told to through
/// `hop`, it reconnects to another node (the one `hop` names, or the next that answers) with
/// the `Last-Event-ID` of the last event it got. Stops once it has seen revision `until`
/// (set once the final head is known).
pub async fn follow_watch(
    client: reqwest::Client,
    urls: Vec<String>,
    first: usize,
    mut hop: tokio::sync::mpsc::UnboundedReceiver<usize>,
    until: tokio::sync::watch::Receiver<Option<u64>>,
    opened: tokio::sync::oneshot::Sender<u64>,
) -> Vec<Seen> {
    let mut seen: Vec<Seen> = Vec::new();
    let mut last_id: Option<String> = None;
    let mut at = first;
    let mut opened = Some(opened);
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = |seen: &[Seen], until: &tokio::sync::watch::Receiver<Option<u64>>| {
        let target = *until.borrow();
        target.is_some_and(|t| seen.last().is_some_and(|s| s.revision >= t))
    };
    'connect: loop {
        assert!(
            Instant::now() < deadline,
            "the watcher did not finish: {seen:?}"
        );
        let mut req = client
            .get(format!("{}/watch", urls[at]))
            .timeout(Duration::from_secs(120));
        if let Some(id) = &last_id {
            req = req.header("last-event-id", id.as_str());
        }
        let res = match req.send().await {
            Ok(res) if res.status() == 200 => res,
            other => {
                // Not answering (killed, or cut off): try the next node.
                let _ = other.map(|r| r.status());
                at = (at + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue 'connect;
            }
        };
        let mut events = res.bytes_stream().eventsource();
        loop {
            if done(&seen, &until) {
                return seen;
            }
            let next = tokio::select! {
                biased;
                Some(to) = hop.recv() => {
                    // Told to drop this connection (as a network break would) and move.
                    at = to;
                    continue 'connect;
                }
                ev = tokio::time::timeout(Duration::from_millis(200), events.next()) => ev,
            };
            let ev = match next {
                Err(_) => continue, // no event for a while: look at `until` again
                Ok(Some(Ok(ev))) => ev,
                Ok(Some(Err(_)) | None) => {
                    // The connection broke: resume on the next node.
                    at = (at + 1) % urls.len();
                    continue 'connect;
                }
            };
            let data: Value = serde_json::from_str(&ev.data).expect("event data is JSON");
            let revision = data["revision"].as_u64().expect("a revision");
            let key = match ev.event.as_str() {
                "upsert" => Some((
                    data["instance"]["service"].as_str().unwrap().to_owned(),
                    data["instance"]["id"].as_str().unwrap().to_owned(),
                )),
                "remove" => Some((
                    data["service"].as_str().unwrap().to_owned(),
                    data["id"].as_str().unwrap().to_owned(),
                )),
                _ => None,
            };
            if let Some(tx) = opened.take() {
                let _ = tx.send(revision);
            }
            seen.push(Seen {
                kind: ev.event.clone(),
                epoch: ev.id.split('-').next().unwrap_or("").to_owned(),
                revision,
                key,
                node: at,
            });
            last_id = Some(ev.id);
        }
    }
}

/// Where the `/watch` follower's events fall short: anything but one snapshot first, then
/// every revision after it up to `head` exactly once, in order, all in `epoch`.
pub fn check_watch(seen: &[Seen], head: u64, epoch: &str) -> Result<(), String> {
    let first = seen.first().ok_or("no events")?;
    if first.kind != "snapshot" {
        return Err(format!("the first event is not a snapshot: {first:?}"));
    }
    if let Some(other) = seen.iter().find(|s| s.epoch != epoch) {
        return Err(format!(
            "an event outside the cluster's epoch {epoch}: {other:?}"
        ));
    }
    let mut want = first.revision + 1;
    for s in &seen[1..] {
        if s.kind == "snapshot" {
            return Err(format!(
                "a second snapshot at revision {} (from node {}) after resuming",
                s.revision,
                s.node + 1
            ));
        }
        if s.revision != want {
            return Err(format!(
                "revision {} (from node {}) where {want} was due",
                s.revision,
                s.node + 1
            ));
        }
        want += 1;
    }
    if want != head + 1 {
        return Err(format!("stopped at {} before head {head}", want - 1));
    }
    Ok(())
}

/// The process's own id, for unique names.
pub fn pid() -> u32 {
    std::process::id()
}

/// Waits until the clients' count of finished operations reaches `n` (up to a minute).
pub async fn progress(done: &std::sync::atomic::AtomicUsize, n: usize) {
    let until = Instant::now() + Duration::from_secs(60);
    while done.load(std::sync::atomic::Ordering::Acquire) < n {
        assert!(
            Instant::now() < until,
            "the clients stopped making progress"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Microseconds since `origin`.
pub fn micros(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}
