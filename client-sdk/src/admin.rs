//! The operator's calls: a service's protection policy (`/services/{service}/policy`) and the
//! cluster's membership (`/cluster`).

use waypost_model::{AddMember, ClusterStatus, PolicyResponse, ServicePolicy};

use crate::{Client, Error, transport::Method};

impl Client {
    /// The protection policy in force for `service` (the answer's `policy` is `None` when it
    /// has none).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// assert_eq!(client.get_policy("web").await?.policy, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_policy(&self, service: &str) -> Result<PolicyResponse, Error> {
        self.transport()
            .call::<_, ()>(Method::GET, &["services", service, "policy"], &[], None)
            .await
    }

    /// Sets `service`'s protection policy (an `operator` token when authorization is on); it
    /// replaces the one in force.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::model::ServicePolicy;
    ///
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// let policy = ServicePolicy { min_healthy_percent: Some(30), never_empty: true };
    /// let set = client.set_policy("web", &policy).await?;
    /// assert_eq!(set.policy, Some(policy));
    /// assert_eq!(client.get_policy("web").await?.policy, Some(policy));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_policy(
        &self,
        service: &str,
        policy: &ServicePolicy,
    ) -> Result<PolicyResponse, Error> {
        self.transport()
            .call(
                Method::PUT,
                &["services", service, "policy"],
                &[],
                Some(policy),
            )
            .await
    }

    /// Removes `service`'s protection policy (removing none is not an error).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::model::ServicePolicy;
    ///
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// client.set_policy("web", &ServicePolicy { never_empty: true, ..Default::default() }).await?;
    /// assert_eq!(client.delete_policy("web").await?.policy, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_policy(&self, service: &str) -> Result<PolicyResponse, Error> {
        self.transport()
            .call::<_, ()>(Method::DELETE, &["services", service, "policy"], &[], None)
            .await
    }

    /// The cluster as the answering control plane sees it: the leader, the term, and every
    /// member with its role and lag (`GET /cluster`). A control plane without `--peers` is a
    /// cluster of one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// # // A write is answered once the new node has elected itself.
    /// # client.register_once(&waypost_client::model::RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// let cluster = client.cluster_status().await?;
    /// assert_eq!(cluster.state, "leader");
    /// assert_eq!(cluster.members.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cluster_status(&self) -> Result<ClusterStatus, Error> {
        self.transport()
            .call::<_, ()>(Method::GET, &["cluster"], &[], None)
            .await
    }

    /// Adds a control plane to the cluster: as a learner, then (unless `member.learner`) as a
    /// voter once it caught up. Answered by the leader: a member that does not lead redirects
    /// there, and the call follows. A node that has not caught up within 30 s stays a learner
    /// and the error's code is `catching_up`: call again. An `operator` token when
    /// authorization is on.
    pub async fn add_member(&self, member: &AddMember) -> Result<ClusterStatus, Error> {
        self.transport()
            .call_within(
                Method::POST,
                &["cluster", "members"],
                &[],
                Some(member),
                CATCH_UP,
            )
            .await
    }

    /// Removes a control plane from the cluster (a voter leaves the voting set, a learner
    /// stops receiving the log). Answered by the leader, as [`Client::add_member`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::model::ErrorCode;
    ///
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// # // A write is answered once the new node has elected itself.
    /// # client.register_once(&waypost_client::model::RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// let me = client.cluster_status().await?.node_id;
    /// // The last voter cannot leave.
    /// let err = client.remove_member(me).await.unwrap_err();
    /// assert_eq!(err.code(), Some(ErrorCode::MembershipConflict));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn remove_member(&self, id: u64) -> Result<ClusterStatus, Error> {
        self.transport()
            .call::<_, ()>(
                Method::DELETE,
                &["cluster", "members", &id.to_string()],
                &[],
                None,
            )
            .await
    }
}

/// How much longer than a usual request adding a member may take: the control plane waits up
/// to 30 s for the new node to catch up.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(30);
