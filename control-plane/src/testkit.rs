//! Test helpers: start a real control plane on `127.0.0.1:0`, durable in a temporary
//! directory (or in memory), and stop it. Used by this crate's tests and by the SDK's,
//! sidecar's and examples' tests.

use std::{future::Future, path::PathBuf, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{Config, Running};

/// A control plane started for a test; stops when dropped.
#[derive(Debug)]
pub struct TestControlPlane {
    /// `http://127.0.0.1:PORT` (`https://` when TLS is configured).
    pub url: String,
    /// Cancels to shut down.
    pub token: CancellationToken,
    /// The running server.
    pub running: Running,
    /// The data directory (kept alive while the test runs); `None` in memory mode.
    pub dir: Option<tempfile::TempDir>,
    /// The runtime of a [`TestCluster`] node, which runs on one of its own so that
    /// [`TestCluster::kill`] can drop all of its tasks at once.
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestControlPlane {
    /// Starts a durable control plane in a fresh temporary directory, with `tweak` applied to
    /// [`Config::for_test`].
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary data directory");
        let path = dir.path().to_path_buf();
        Self::start_in(Some(dir), Some(path), tweak).await
    }

    /// Starts a durable control plane on an existing data directory (the caller keeps it).
    pub async fn start_at(path: PathBuf, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(None, Some(path), tweak).await
    }

    /// Starts an in-memory control plane.
    pub async fn in_memory(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(None, None, tweak).await
    }

    async fn start_in(
        dir: Option<tempfile::TempDir>,
        path: Option<PathBuf>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::for_test(path);
        tweak(&mut config);
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let token = CancellationToken::new();
        let running = crate::start(config, token.clone())
            .await
            .expect("start the control plane");
        Self {
            url: format!("{scheme}://{}", running.addr),
            token,
            running,
            dir,
            runtime: None,
        }
    }

    /// A URL on this control plane.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Shuts down and waits for the drain; returns the data directory for a restart.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        self.token.cancel();
        let join = std::mem::replace(&mut self.running.join, tokio::spawn(async {}));
        let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
        self.dir.take()
    }
}

impl Drop for TestControlPlane {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts a cluster node on a runtime of its own (one worker thread).
async fn start_node(
    config: Config,
    url: String,
    dir: Option<tempfile::TempDir>,
) -> TestControlPlane {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("test-node")
        .enable_all()
        .build()
        .expect("build a node's runtime");
    let token = CancellationToken::new();
    // A node killed just before (see `TestCluster::kill`) may still hold its data file for a
    // moment, until its store's writer thread has seen its tasks go: try again meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let running = loop {
        match runtime
            .spawn(crate::start(config.clone(), token.clone()))
            .await
            .expect("a node's start-up task")
        {
            Ok(running) => break running,
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%err, "node start failed; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("start a cluster node: {err}"),
        }
    };
    TestControlPlane {
        url,
        token,
        running,
        dir,
        runtime: Some(runtime),
    }
}

/// A free port on 127.0.0.1 for a cluster node, never one this process handed out before.
///
/// A node's port is picked before it binds (every node's peers name all of them), so the
/// kernel may give a released port again. Two clusters of one test binary given the same port
/// would send each other Raft messages, which fail a node (most likely what failed a CI run in
/// stop 26: a port found in use, and another cluster's node failed in openraft).
fn pick_port() -> u16 {
    static PICKED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut picked = PICKED.lock().unwrap_or_else(|e| e.into_inner());
    // Bounded: the kernel has thousands of ports to give, and this process picks a few dozen.
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("pick a port")
            .port();
        if !picked.contains(&port) {
            picked.push(port);
            return port;
        }
    }
    panic!("no port left that this process has not used");
}

/// A cluster of control planes on `127.0.0.1`, each durable in its own temporary directory.
#[derive(Debug)]
pub struct TestCluster {
    /// The nodes by position (node id = position + 1); `None` once stopped.
    pub nodes: Vec<Option<TestControlPlane>>,
    /// Each node's base URL, also while it is stopped.
    pub urls: Vec<String>,
    /// Each node's data directory, kept across a stop for a restart.
    dirs: Vec<Option<tempfile::TempDir>>,
    peers: Vec<(u64, String)>,
}

impl TestCluster {
    /// Starts `n` nodes that know each other, with `tweak` applied to each one's config.
    /// Their ports are picked first (bound to port 0, then released), since every node's
    /// `peers` names all of them.
    pub async fn start(n: usize, tweak: impl Fn(&mut Config)) -> Self {
        Self::start_with("http", n, tweak).await
    }

    /// [`Self::start`] with URLs of `scheme` (`https` when `tweak` turns TLS on).
    pub async fn start_with(scheme: &str, n: usize, tweak: impl Fn(&mut Config)) -> Self {
        let ports: Vec<u16> = (0..n).map(|_| pick_port()).collect();
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("{scheme}://127.0.0.1:{p}"))
            .collect();
        let peers: Vec<(u64, String)> = urls
            .iter()
            .enumerate()
            .map(|(i, u)| (i as u64 + 1, u.clone()))
            .collect();
        let mut cluster = Self {
            nodes: (0..n).map(|_| None).collect(),
            urls,
            dirs: (0..n)
                .map(|_| Some(tempfile::tempdir().expect("create a data directory")))
                .collect(),
            peers,
        };
        let starts: Vec<_> = (0..n)
            .map(|i| {
                let (dir, config) = cluster.config(i, &tweak);
                start_node(config, cluster.urls[i].clone(), dir)
            })
            .collect();
        for (i, node) in futures_util::future::join_all(starts)
            .await
            .into_iter()
            .enumerate()
        {
            cluster.nodes[i] = Some(node);
        }
        cluster
    }

    fn config(
        &mut self,
        i: usize,
        tweak: &impl Fn(&mut Config),
    ) -> (Option<tempfile::TempDir>, Config) {
        let dir = self.dirs[i].take().expect("the node's data directory");
        let mut config = Config::for_test(Some(dir.path().to_path_buf()));
        config.listen = self.urls[i]
            .split_once("://")
            .map_or(self.urls[i].as_str(), |(_, addr)| addr)
            .parse()
            .expect("a socket address");
        config.cluster.node_id = i as u64 + 1;
        config.cluster.peers = self.peers.clone();
        config.cluster.election_timeout = Duration::from_millis(500);
        tweak(&mut config);
        (Some(dir), config)
    }

    /// Stops node `i` (a graceful stop; its data stays for [`Self::restart`]).
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            self.dirs[i] = node.stop().await;
        }
    }

    /// Kills node `i` as `kill -9` would, as far as its peers and clients can tell: every
    /// task on its runtime is dropped at once, so its connections break mid-stream and
    /// nothing is drained or shut down in order. Its data stays for [`Self::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            if let Some(runtime) = node.runtime.take() {
                runtime.shutdown_background();
            }
            self.dirs[i] = node.dir.take();
        }
    }

    /// Starts node `i` again on its address and data directory.
    pub async fn restart(&mut self, i: usize, tweak: impl Fn(&mut Config)) {
        let (dir, config) = self.config(i, &tweak);
        self.nodes[i] = Some(start_node(config, self.urls[i].clone(), dir).await);
    }

    /// Starts one more node with `--join` (not a member until `POST /cluster/members` adds
    /// it); returns its position (its node id is position + 1).
    pub async fn join(&mut self, tweak: impl Fn(&mut Config)) -> usize {
        let port = pick_port();
        let i = self.nodes.len();
        self.urls.push(format!("http://127.0.0.1:{port}"));
        self.dirs
            .push(Some(tempfile::tempdir().expect("create a data directory")));
        self.nodes.push(None);
        let peers = std::mem::take(&mut self.peers);
        let (dir, config) = self.config(i, &|c: &mut Config| {
            c.cluster.peers.clear();
            c.cluster.join = true;
            tweak(c);
        });
        self.peers = peers;
        self.nodes[i] = Some(start_node(config, self.urls[i].clone(), dir).await);
        i
    }

    /// The position of the node that leads, as the running nodes agree, waiting up to
    /// `deadline`.
    pub async fn leader(&self, deadline: Duration) -> usize {
        eventually(deadline, "a leader the running nodes agree on", || async {
            let mut seen = None;
            for node in self.nodes.iter().flatten() {
                let leader = node.running.cluster.known_leader()?;
                if seen.is_some_and(|s| s != leader) {
                    return None;
                }
                seen = Some(leader);
            }
            let id = seen?;
            let i = usize::try_from(id).ok()?.checked_sub(1)?;
            self.nodes.get(i)?.as_ref().map(|_| i)
        })
        .await
    }

    /// A running node other than `not`.
    pub fn other_than(&self, not: usize) -> usize {
        (0..self.nodes.len())
            .find(|i| *i != not && self.nodes[*i].is_some())
            .expect("another running node")
    }
}

/// Polls `probe` until it returns `Some`, or panics after `deadline` naming `what`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() > until {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Certificates made for one test with rcgen, as PEM files in a temporary directory: a CA, a
/// server certificate for `127.0.0.1` and `localhost`, a client certificate from the same CA,
/// and a client certificate from another CA (one the server does not trust).
#[derive(Debug)]
pub struct TestPki {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server: (PathBuf, PathBuf),
    /// A client certificate and key signed by `ca`.
    pub client: (PathBuf, PathBuf),
    /// A client certificate and key signed by another CA.
    pub stranger: (PathBuf, PathBuf),
}

impl TestPki {
    /// Generates everything.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        let ca = |name: &str| {
            let key = KeyPair::generate().expect("CA key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).expect("self-sign the CA");
            (cert.pem(), Issuer::new(params, key))
        };
        let leaf = |issuer: &Issuer<'_, KeyPair>, names: &[&str], file: &str| {
            let key = KeyPair::generate().expect("leaf key");
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, file);
            let cert = params.signed_by(&key, issuer).expect("sign the leaf");
            (
                write(&format!("{file}.pem"), cert.pem()),
                write(&format!("{file}-key.pem"), key.serialize_pem()),
            )
        };
        let (ca_pem, issuer) = ca("waypost test CA");
        let (_, other) = ca("another CA");
        Self {
            ca: write("ca.pem", ca_pem),
            server: leaf(&issuer, &["127.0.0.1", "localhost"], "server"),
            client: leaf(&issuer, &["client.test"], "client"),
            stranger: leaf(&other, &["stranger.test"], "stranger"),
            dir,
        }
    }

    /// The control plane's TLS files; with `mtls`, client certificates from [`Self::ca`] are
    /// required.
    pub fn server_files(&self, mtls: bool) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            cert: self.server.0.clone(),
            key: self.server.1.clone(),
            client_ca: mtls.then(|| self.ca.clone()),
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// Tokens for a test: `(secret, role, services)`, named `<role>-<position>`.
pub fn tokens(entries: &[(&str, crate::auth::Role, &[&str])]) -> crate::auth::Tokens {
    use crate::auth::{AuthSettings, TokenSettings, hash_token};
    crate::auth::Tokens::from_settings(&AuthSettings {
        tokens: entries
            .iter()
            .enumerate()
            .map(|(i, (secret, role, services))| TokenSettings {
                name: format!("{}-{i}", role.as_str()),
                sha256: hash_token(secret),
                role: *role,
                services: services.iter().map(|s| (*s).to_owned()).collect(),
            })
            .collect(),
    })
    .expect("valid test tokens")
}
