//! Raft's messages between nodes: JSON over HTTP(S) to the peer's own listener, under
//! `/cluster/raft/...`, with the cluster token when authorization is on. One pooled HTTP
//! client serves every peer; openraft bounds each call with its own timeout.

use std::{sync::Arc, time::Duration};

use openraft::{
    BasicNode, RaftNetwork, RaftNetworkFactory,
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use crate::command::{NodeId, TypeConfig};

/// The HTTP client of the cluster: Raft messages, forwarded writes, reads and heartbeats.
#[derive(Clone)]
pub(crate) struct PeerClient {
    http: reqwest::Client,
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient").finish_non_exhaustive()
    }
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    /// No connection, or it broke.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The peer answered with an error status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// Where.
        url: String,
        /// The status.
        status: u16,
        /// The body (a problem document).
        body: String,
    },
    /// The answer did not parse.
    #[error("{url} answered something unreadable: {source}")]
    Decode {
        /// Where.
        url: String,
        /// Why.
        source: serde_json::Error,
    },
}

impl PeerClient {
    /// A client that trusts `ca` (PEM) besides the system roots, presents `token`, and, when
    /// `identity` (this node's certificate chain and key, PEM) is given, presents it as its
    /// client certificate, so that peers requiring client certificates (mTLS) accept it.
    pub(crate) fn new(
        ca: Option<&std::path::Path>,
        identity: Option<(&std::path::Path, &std::path::Path)>,
        token: Option<String>,
    ) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        if let Some(path) = ca {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read peer_ca {}: {e}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("peer_ca {}: {e}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = identity {
            let mut pem = std::fs::read(cert)
                .map_err(|e| format!("cannot read tls_cert {}: {e}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| format!("cannot read tls_key {}: {e}", key.display()))?,
            );
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("tls_cert and tls_key as a client identity: {e}"))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the peer HTTP client: {e}"))?;
        Ok(Self {
            http,
            token: token.map(Into::into),
        })
    }

    /// POSTs `body` as JSON to `base` + `path` and reads a JSON answer.
    pub(crate) async fn post<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, PeerError> {
        let url = format!("{base}{path}");
        let mut req = self.http.post(&url).json(body).timeout(timeout);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.map_err(|source| PeerError::Unreachable {
            url: url.clone(),
            source,
        })?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|source| PeerError::Unreachable {
            url: url.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(PeerError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| PeerError::Decode { url, source })
    }
}

/// Builds one [`Peer`] per target for openraft.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub(crate) client: PeerClient,
    /// Where answers from members are noted, for `GET /cluster`.
    pub(crate) members: Arc<super::Members>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            base: node.addr.clone(),
            client: self.client.clone(),
            members: self.members.clone(),
        }
    }
}

/// The connection to one peer.
#[derive(Debug)]
pub(crate) struct Peer {
    target: NodeId,
    base: String,
    client: PeerClient,
    members: Arc<super::Members>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Peer {
    /// Sends one Raft message; the peer answers `Result<T, RaftError>` as JSON.
    async fn call<B, T, E>(&self, path: &str, body: &B, option: &RPCOption) -> RpcResult<T, E>
    where
        B: Serialize,
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<T, RaftError<NodeId, E>> = self
            .client
            .post(&self.base, path, body, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        // Any answer, even a refusal, is contact.
        self.members.contact(self.target);
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call("/cluster/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call("/cluster/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call("/cluster/raft/vote", &rpc, &option).await
    }
}
