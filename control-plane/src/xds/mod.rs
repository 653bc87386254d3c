//! xDS for proxyless gRPC: an Aggregated Discovery Service (state of the world, and
//! incremental) on a listener of its own (`--xds-listen`), so that gRPC's own libraries can dial `xds:///S` and get the
//! endpoints, weights and health of service `S` pushed to them, with no sidecar and no SDK.
//!
//! Each stream is one task that follows the services it subscribed to through the `/watch`
//! fan-out (a [`Following`]: a change of another service does not wake it; see [`stream`] for
//! the protocol's bookkeeping and [`resources`] for what is served), so every node of a cluster
//! serves it from its own applied state. Version info is the registry
//! revision a response was read at; a NACK is logged with the client's node id and counted.
//!
//! With tokens configured, a stream needs `authorization: Bearer <token>` (any configured
//! token: they all may read); with TLS configured, the listener takes TLS with the same
//! certificate as the HTTP listener. The incremental (delta) variant is served too ([`delta`]):
//! gRPC clients use the state of the world, Envoy may use either.

mod cache;
mod delta;
pub mod resources;
mod stream;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_server::{
            AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
        },
    },
    google::protobuf::Any,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status, Streaming, metadata::MetadataMap};
use waypost_model::{Epoch, Revision, ServiceName};
use waypost_runtime::conn::{H2_KEEPALIVE_INTERVAL, H2_KEEPALIVE_TIMEOUT};

use self::{
    cache::EndpointsCache,
    delta::DeltaStream,
    resources::Kind,
    stream::{AdsStream, Received},
};
use crate::{
    auth::Tokens,
    fanout::{Fanout, Following},
    metrics::Metrics,
    registry::Registry,
};

/// Responses in flight per stream: a client that does not read makes its stream wait (its
/// next response then holds everything that changed meanwhile).
const STREAM_BUFFER: usize = 4;
/// Accepted connections waiting for the gRPC server to take them.
const ACCEPT_BUFFER: usize = 16;

/// What the ADS streams share.
#[derive(Debug)]
pub(crate) struct Ads {
    pub(crate) registry: Arc<Registry>,
    /// Wakes a stream when a service it follows changes.
    pub(crate) fanout: Arc<Fanout>,
    /// Endpoints encoded once per service version, for every stream.
    pub(crate) endpoints: Arc<EndpointsCache>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tokens: Tokens,
    /// Bounds open streams (the same number as `--max-watchers`).
    pub(crate) streams: Arc<Semaphore>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// The xDS listener's settings.
#[derive(Clone)]
pub(crate) struct Listen {
    pub(crate) tls: Option<TlsAcceptor>,
    /// The longest a TLS handshake may take (`--header-read-timeout`).
    pub(crate) handshake_timeout: Duration,
}

/// Serves ADS on `listener` until `shutdown`; then stops accepting, ends every stream (the
/// clients reconnect, to another node if they know one) and lets the connections close.
pub(crate) async fn serve(listener: TcpListener, ads: Ads, listen: Listen) {
    let shutdown = ads.shutdown.clone();
    let tasks = ads.tasks.clone();
    let service = AggregatedDiscoveryServiceServer::new(ads);
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(H2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(H2_KEEPALIVE_TIMEOUT));
    let result = match listen.tls {
        None => {
            let incoming = futures_util::stream::unfold(listener, |listener| async {
                let (stream, _) = waypost_runtime::net::accept(&listener, &shutdown).await?;
                Some((Ok::<TcpStream, std::io::Error>(stream), listener))
            });
            server
                .serve_with_incoming_shutdown(service, incoming, shutdown.cancelled())
                .await
        }
        Some(acceptor) => {
            let incoming = ReceiverStream::new(accept_tls(
                listener,
                acceptor,
                listen.handshake_timeout,
                &tasks,
                shutdown.clone(),
            ));
            server
                .serve_with_incoming_shutdown(service, incoming, shutdown.cancelled())
                .await
        }
    };
    if let Err(err) = result {
        tracing::error!(%err, "xDS server failed");
    }
}

type TlsConn = Result<TlsStream<TcpStream>, std::io::Error>;

/// Accepts and runs each TLS handshake on a task of its own (a slow one never holds up
/// accepting), under `timeout`; hands over the connections that complete one.
fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    timeout: Duration,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> mpsc::Receiver<TlsConn> {
    let (tx, rx) = mpsc::channel(ACCEPT_BUFFER);
    tasks.spawn(async move {
        let handshakes = TaskTracker::new();
        while let Some((stream, peer)) = waypost_runtime::net::accept(&listener, &shutdown).await {
            let (acceptor, tx, shutdown) = (acceptor.clone(), tx.clone(), shutdown.clone());
            handshakes.spawn(async move {
                let handshake = tokio::time::timeout(timeout, acceptor.accept(stream));
                tokio::select! {
                    done = handshake => match done {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(err)) => tracing::debug!(%err, %peer, "xDS: TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "xDS: TLS handshake timed out"),
                    },
                    () = shutdown.cancelled() => {}
                }
            });
        }
        handshakes.close();
        handshakes.wait().await;
    });
    rx
}

/// The token of an `authorization: Bearer ...` entry, if any.
fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Ads {
    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if !self.tokens.enabled() || bearer(metadata).and_then(|t| self.tokens.find(t)).is_some() {
            return Ok(());
        }
        self.metrics.unauthorized.inc();
        Err(Status::unauthenticated(
            "this control plane requires a token: send `authorization: Bearer <token>` with a \
             configured token",
        ))
    }
}

impl Ads {
    /// Lets a new stream in (its token, and a place among the open streams): its place, held
    /// until it ends, and the task that will follow it.
    fn admit(
        &self,
        metadata: &MetadataMap,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, Follow), Status> {
        self.authorize(metadata)?;
        if self.fanout.closed() {
            return Err(ended());
        }
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("too many xDS streams are open; retry later")
        })?;
        let follow = Follow {
            registry: self.registry.clone(),
            fanout: self.fanout.clone(),
            endpoints: self.endpoints.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
        };
        Ok((permit, follow))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (permit, follow) = self.admit(request.metadata())?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.tasks.spawn(async move {
            follow.run(request.into_inner(), tx).await;
            drop(permit);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (permit, follow) = self.admit(request.metadata())?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.tasks.spawn(async move {
            follow.run_delta(request.into_inner(), tx).await;
            drop(permit);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The version of Listener and Cluster resources in delta responses: they depend on the
/// service name only, so they change only with this program.
const STATIC_VERSION: &str = concat!("waypost-", env!("CARGO_PKG_VERSION"));

/// One stream's task: answers requests and pushes what changed.
struct Follow {
    registry: Arc<Registry>,
    fanout: Arc<Fanout>,
    endpoints: Arc<EndpointsCache>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

type Tx = mpsc::Sender<Result<DiscoveryResponse, Status>>;
type DeltaTx = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

impl Follow {
    async fn run(self, mut inbound: Streaming<DiscoveryRequest>, tx: Tx) {
        self.metrics.xds_streams.inc();
        let _open = OpenStream(&self.metrics);
        let mut state = AdsStream::default();
        // Each subscription is followed before its first read: a change applied after that
        // read wakes the stream.
        let mut following = self.fanout.follow();
        loop {
            while let Some(kind) = state.next_due() {
                let Some(response) = self.build(&mut state, kind) else {
                    continue;
                };
                tracing::debug!(
                    node = state.node(),
                    kind = kind.as_str(),
                    version = %response.version_info,
                    resources = response.resources.len(),
                    "xDS push"
                );
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
                self.metrics.xds_push(kind);
            }
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                () = tx.closed() => return,
                message = inbound.message() => match message {
                    Ok(Some(request)) => {
                        self.receive(&mut state, &request);
                        following.set(state.names(Kind::Endpoints));
                    }
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(node = state.node(), %status, "xDS stream ended");
                        return;
                    }
                },
                () = self.woken(&following) => {
                    if self.fanout.closed() {
                        // Without waiting: a client that does not read gets no say in when this ends.
                        let _ = tx.try_send(Err(ended()));
                        return;
                    }
                    // The epoch first: revisions read after it are of its history or a later
                    // one, whose installation wakes the stream again.
                    state.at_epoch(self.registry.epoch());
                    self.registry.with_service_revisions(|revision_of| state.check_revisions(revision_of));
                }
            }
        }
    }

    /// Follows one delta stream: like [`Follow::run`], with only what the client lacks in each
    /// response.
    async fn run_delta(self, mut inbound: Streaming<DeltaDiscoveryRequest>, tx: DeltaTx) {
        self.metrics.xds_streams.inc();
        let _open = OpenStream(&self.metrics);
        let mut state = DeltaStream::default();
        let mut following = self.fanout.follow();
        // The kinds to look at for something due.
        let mut check = [false; 3];
        loop {
            for kind in Kind::ALL {
                if !std::mem::take(&mut check[kind.index()]) {
                    continue;
                }
                // The revisions under the registry's lock, the versions formatted after it.
                let epoch = self.registry.epoch();
                let revisions: HashMap<ServiceName, Revision> =
                    self.registry.with_service_revisions(|revision_of| {
                        state
                            .names(kind)
                            .map(|s| (s.clone(), revision_of(s.as_str())))
                            .collect()
                    });
                let (names, invalid) = state.due(kind, |s| {
                    self.version_at(kind, epoch, revisions.get(s).copied().unwrap_or(0))
                });
                if names.is_empty() && !invalid {
                    continue;
                }
                let resources = names
                    .into_iter()
                    .map(|service| {
                        let (epoch, revision, any) = self.resource(kind, &service);
                        let version = self.version_at(kind, epoch, revision);
                        (service, version, any)
                    })
                    .collect();
                let response = state.respond(kind, self.registry.head().to_string(), resources);
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
                self.metrics.xds_push(kind);
            }
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                () = tx.closed() => return,
                message = inbound.message() => match message {
                    Ok(Some(request)) => {
                        let received = state.receive(&request);
                        following.set(state.names(Kind::Endpoints));
                        // A NACK (or ACK) may subscribe in the same request: any request that
                        // subscribes is looked at.
                        if let Some(kind) = Kind::from_type_url(&request.type_url)
                            && (matches!(received, Received::Subscribed(_))
                                || !request.resource_names_subscribe.is_empty())
                        {
                            check[kind.index()] = true;
                        }
                        self.log(state.node(), received, &request.response_nonce);
                    }
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(node = state.node(), %status, "xDS delta stream ended");
                        return;
                    }
                },
                () = self.woken(&following) => {
                    if self.fanout.closed() {
                        // Without waiting: a client that does not read gets no say in when this ends.
                        let _ = tx.try_send(Err(ended()));
                        return;
                    }
                    check[Kind::Endpoints.index()] = true;
                }
            }
        }
    }

    /// The next change of a service the stream follows (or the fan-out closing), counted.
    async fn woken(&self, following: &Following) {
        following.changed().await;
        self.metrics.xds_wakeups.inc();
    }

    /// The version of a resource of `kind` in a delta response, for a service at `revision` of
    /// history `epoch`.
    fn version_at(&self, kind: Kind, epoch: Epoch, revision: Revision) -> String {
        match kind {
            Kind::Endpoints => format!("{epoch:016x}-{revision}"),
            Kind::Listener | Kind::Cluster => STATIC_VERSION.to_owned(),
        }
    }

    /// `service`'s resource of `kind`, and the version (history and service revision) it is
    /// exactly at (0 and 0 for Listener and Cluster, which depend on the name only).
    fn resource(&self, kind: Kind, service: &ServiceName) -> (Epoch, Revision, Any) {
        match kind {
            Kind::Endpoints => {
                let (epoch, revision, any) = self.endpoints.get(&self.registry, service);
                (epoch, revision, Any::clone(&any))
            }
            Kind::Listener | Kind::Cluster => (0, 0, resources::packed(kind, service.as_str(), [])),
        }
    }

    fn receive(&self, state: &mut AdsStream, request: &DiscoveryRequest) {
        let received = state.receive(request);
        if let Received::Subscribed(kind) = received {
            tracing::debug!(
                node = state.node(),
                kind = kind.as_str(),
                names = ?request.resource_names,
                "xDS subscription"
            );
        }
        self.log(state.node(), received, &request.response_nonce);
    }

    /// Logs (and counts) what a request was.
    fn log(&self, node: &str, received: Received, nonce: &str) {
        match received {
            Received::Nack { kind, message } => {
                self.metrics.xds_nack(kind);
                tracing::warn!(
                    node,
                    kind = kind.as_str(),
                    nonce,
                    %message,
                    "xDS client refused a response (NACK)"
                );
            }
            Received::UnknownType(type_url) => {
                tracing::debug!(node, %type_url, "xDS: type not served");
            }
            Received::Subscribed(_) | Received::Ack(_) | Received::Stale => {}
        }
    }

    /// Makes the due response of `kind`: every subscribed Listener or Cluster (their responses
    /// are the whole state), and of the endpoints only those the client lacks. The protocol
    /// lets an endpoints response leave out what did not change (a missing one is not
    /// removed), so a change of one service sends that one, not all the stream follows.
    ///
    /// `None` when an endpoints response would be empty (say, after an unsubscription): there
    /// is nothing to send.
    fn build(&self, state: &mut AdsStream, kind: Kind) -> Option<DiscoveryResponse> {
        let names: Vec<ServiceName> = match kind {
            Kind::Endpoints => {
                state.at_epoch(self.registry.epoch());
                self.registry.with_service_revisions(|revision_of| {
                    state.moved(revision_of).cloned().collect()
                })
            }
            Kind::Listener | Kind::Cluster => state.names(kind).cloned().collect(),
        };
        if kind == Kind::Endpoints && names.is_empty() {
            state.settle(kind);
            return None;
        }
        let resources = names
            .into_iter()
            .map(|service| {
                let (_, revision, any) = self.resource(kind, &service);
                (service, revision, any)
            })
            .collect();
        // Read last, so the version is at least the revision of everything in the response.
        let version = self.registry.head();
        Some(state.respond(kind, version, resources))
    }
}

/// Why a stream ends (or is refused) once the fan-out has closed: the store failed, or the
/// server is stopping. This node's state no longer moves; the client should go to another.
fn ended() -> Status {
    Status::unavailable("this control plane is stopping or its store has failed; use another node")
}

/// Decrements the open-streams gauge when a stream ends, however it ends.
struct OpenStream<'a>(&'a Metrics);

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.xds_streams.dec();
    }
}

/// Binds the xDS listen address.
pub(crate) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), std::io::Error> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}
