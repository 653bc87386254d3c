//! Sidecars and propagation: the calls a sidecar reports itself with, the table of sidecars,
//! and writes that answer once every sidecar routes by them ([`Propagate`]).

use std::time::Duration;

use waypost_model::{
    DeregisterResponse, DrainRequest, DrainResponse, InstanceRef, NodeReport, NodeStatus,
    NodesResponse, Propagation, RegisterRequest, RegisterResponse, Revision,
};

use crate::{Client, Error, transport::Method};

/// Which sidecars a write waits for, and for how long: every live one by default, or those
/// named. The write is done whatever the outcome; the answer's `propagation` says who is
/// behind when time ran out.
///
/// ```
/// use std::time::Duration;
/// use waypost_client::Propagate;
///
/// let wait = Propagate::all(Duration::from_secs(5)).node("node-1");
/// assert_eq!(wait.query(), vec![
///     ("wait".to_owned(), "propagated".to_owned()),
///     ("timeout".to_owned(), "5000ms".to_owned()),
///     ("node".to_owned(), "node-1".to_owned()),
/// ]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propagate {
    /// The longest the control plane waits.
    pub timeout: Duration,
    /// Wait for these sidecars only (empty: every live one).
    pub nodes: Vec<String>,
}

impl Propagate {
    /// Every live sidecar, for at most `timeout`.
    pub fn all(timeout: Duration) -> Self {
        Self {
            timeout,
            nodes: Vec::new(),
        }
    }

    /// Waits for the sidecar `node` (repeat for several) instead of every live one.
    #[must_use]
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.nodes.push(node.into());
        self
    }

    /// The query parameters of a write that waits.
    pub fn query(&self) -> Vec<(String, String)> {
        let mut q = vec![
            ("wait".to_owned(), "propagated".to_owned()),
            (
                "timeout".to_owned(),
                format!("{}ms", self.timeout.as_millis()),
            ),
        ];
        q.extend(self.nodes.iter().map(|n| ("node".to_owned(), n.clone())));
        q
    }
}

impl Client {
    /// Reports this sidecar (what `waypost-sidecar` does at every change and keep-alive).
    pub async fn report_node(&self, node: &str, report: &NodeReport) -> Result<NodeStatus, Error> {
        self.transport()
            .call(Method::PUT, &["nodes", node], &[], Some(report))
            .await
    }

    /// Every sidecar the control plane knows, with its applied revision and lag.
    pub async fn nodes(&self) -> Result<NodesResponse, Error> {
        self.transport()
            .call::<_, ()>(Method::GET, &["nodes"], &[], None)
            .await
    }

    /// Waits until the sidecars in `wait` have applied `revision` (a write's answer gives it),
    /// or `wait.timeout` passes; answers who has and who has not.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use std::time::Duration;
    /// use waypost_client::{Client, Propagate, model::RegisterRequest};
    ///
    /// let client = Client::new(&cp.url)?;
    /// let answer = client.register_once(&RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// // No sidecar reports to this control plane: nobody is waited for.
    /// let seen = client.propagation(answer.revision, &Propagate::all(Duration::from_secs(1))).await?;
    /// assert!(seen.complete && seen.applied.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn propagation(
        &self,
        revision: Revision,
        wait: &Propagate,
    ) -> Result<Propagation, Error> {
        let mut query = vec![
            ("revision".to_owned(), revision.to_string()),
            (
                "timeout".to_owned(),
                format!("{}ms", wait.timeout.as_millis()),
            ),
        ];
        query.extend(wait.nodes.iter().map(|n| ("node".to_owned(), n.clone())));
        self.transport()
            .call_within::<_, ()>(Method::GET, &["propagation"], &query, None, wait.timeout)
            .await
    }

    /// [`Client::register_once`], answered once the sidecars in `wait` route to the instance
    /// (or the time passed; see the answer's `propagation`).
    pub async fn register_propagated(
        &self,
        request: &RegisterRequest,
        wait: &Propagate,
    ) -> Result<RegisterResponse, Error> {
        self.transport()
            .call_within(
                Method::POST,
                &["register"],
                &wait.query(),
                Some(request),
                wait.timeout,
            )
            .await
    }

    /// [`Client::drain`], answered once the sidecars in `wait` no longer send the instance new
    /// work: after this, stopping it drops no request a sidecar routed.
    pub async fn drain_propagated(
        &self,
        instance: InstanceRef,
        draining: bool,
        wait: &Propagate,
    ) -> Result<DrainResponse, Error> {
        let body = DrainRequest { instance, draining };
        self.transport()
            .call_within(
                Method::POST,
                &["drain"],
                &wait.query(),
                Some(&body),
                wait.timeout,
            )
            .await
    }

    /// [`Client::deregister`], answered once the sidecars in `wait` have dropped the instance.
    pub async fn deregister_propagated(
        &self,
        instance: InstanceRef,
        wait: &Propagate,
    ) -> Result<DeregisterResponse, Error> {
        self.transport()
            .call_within(
                Method::POST,
                &["deregister"],
                &wait.query(),
                Some(&instance),
                wait.timeout,
            )
            .await
    }
}
