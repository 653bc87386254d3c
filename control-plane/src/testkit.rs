//! Test helpers: start a real control plane on `127.0.0.1:0`, durable in a temporary
//! directory (or in memory), and stop it. Used by this crate's tests and by the SDK's,
//! sidecar's and examples' tests.

use std::{future::Future, path::PathBuf, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{Config, Running};

/// A control plane started for a test; stops when dropped.
#[derive(Debug)]
pub struct TestControlPlane {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Cancels to shut down.
    pub token: CancellationToken,
    /// The running server.
    pub running: Running,
    /// The data directory (kept alive while the test runs); `None` in memory mode.
    pub dir: Option<tempfile::TempDir>,
}

impl TestControlPlane {
    /// Starts a durable control plane in a fresh temporary directory, with `tweak` applied to
    /// [`Config::for_test`].
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary data directory");
        let path = dir.path().to_path_buf();
        Self::start_in(Some(dir), Some(path), tweak).await
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
        let token = CancellationToken::new();
        let running = crate::start(config, token.clone())
            .await
            .expect("start the control plane");
        Self {
            url: format!("http://{}", running.addr),
            token,
            running,
            dir,
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
