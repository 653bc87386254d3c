//! Cluster mode: the registry replicated with Raft (openraft) over the nodes' own listeners.
//!
//! Every write becomes a [`Command`] in the Raft log; the leader appends it, a majority makes
//! it durable, and every node applies it to its registry in log order. A node that is not the
//! leader forwards the command to the leader (one hop) and answers once it has applied the
//! entry itself, so a client reads its own writes from the node it wrote to. A cluster of one
//! (no `--peers`) is the same machinery with a single voter.
//!
//! Not replicated: heartbeats. Any node accepts them; followers pass them on to the leader in
//! batches, where the deadlines that decide expiry live. Nor sidecars' reports: the node that
//! hears one passes it on to every other member (`fanout`).
//!
//! Reads are linearizable by default. The leader answers from its own state while it holds a
//! lease: a majority acknowledged it within a third of the election timeout, and followers
//! refuse to vote for anyone else for half of it after hearing from it, so no other leader can
//! exist (the lease assumes clocks that run at about the same rate, as etcd's and Consul's
//! lease reads do). Without the lease, or with `?consistent`, the node learns the leader's
//! commit index (one round of leader heartbeats, shared by every read that arrived meanwhile)
//! and waits until it has applied it. `?stale` skips all of that.

mod fanout;
mod network;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use openraft::{
    BasicNode, Raft, ServerState, SnapshotPolicy,
    error::{ClientWriteError, RaftError},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use waypost_model::{InstanceId, ServiceName};

use self::network::Network;
pub(crate) use self::{fanout::SharedReport, network::PeerClient};
use crate::{
    command::{Command, NodeId, Reply, TypeConfig},
    config::ClusterConfig,
    metrics::Metrics,
    registry::{Registry, RegistryError},
    store::{LogStore, StateMachine},
};

impl ClusterError {
    /// The same error for another waiter of a batch.
    fn copy(&self) -> Self {
        match self {
            Self::NoLeader(m) => Self::NoLeader(m.clone()),
            Self::Registry(_) => Self::Registry(RegistryError::StoreUnavailable),
        }
    }
}

/// Why a replicated operation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No leader is known within the election timeout (an election, or this node is on the
    /// minority side of a partition). Retry, or read with `?stale`.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// The registry refused the operation.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// How often followers pass heartbeats on to the leader: a deadline on the leader is at most
/// this late.
const HEARTBEAT_FORWARD: Duration = Duration::from_millis(100);
/// How often a follower with no heartbeats to pass on still reports to the leader (its
/// applied index, for `GET /cluster`).
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Most heartbeats in one forwarded batch.
const HEARTBEAT_BATCH: usize = 10_000;
/// How often the leader looks for overdue instances: expiry lands within TTL + this.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// Most commands in one log entry. Entries travel in append requests of up to
/// `max_payload_entries`: this keeps one request to a few megabytes.
const MAX_PROPOSAL_BATCH: usize = 256;

/// A write waiting to be proposed, and who waits for its answer.
type Proposal = (Command, oneshot::Sender<Result<WriteAnswer, ClusterError>>);

/// A forwarded write's answer: the reply and the log index to wait for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WriteAnswer {
    pub(crate) reply: Reply,
    pub(crate) index: u64,
}

/// A read index from the leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReadIndex {
    pub(crate) index: u64,
}

/// What a follower sends the leader every [`HEARTBEAT_FORWARD`] while instances heartbeat
/// through it, and every [`REPORT_EVERY`] otherwise.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    /// The follower.
    pub(crate) node: NodeId,
    /// The last log index it applied.
    pub(crate) applied: u64,
    /// The heartbeats it accepted since its last report.
    pub(crate) beats: Vec<(ServiceName, InstanceId)>,
}

/// How current a default read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: from the leader's state under its lease, else after a read-index round.
    Default,
    /// Linearizable, and always confirmed by a read-index round (`?consistent`).
    Consistent,
}

/// Who leads, as this node knows it.
enum Leader {
    Me,
    Other { id: NodeId, url: String },
}

/// A read waiting for a read index, and whether it asked for a round (`?consistent`).
type ReadWaiter = (oneshot::Sender<Result<u64, String>>, Consistency);

/// What the leader last heard from one member.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Seen {
    /// When the member last answered a Raft message.
    pub(crate) contact: Option<Instant>,
    /// The applied index it last reported.
    pub(crate) applied: Option<u64>,
}

/// What the leader hears from each member (answers to Raft messages, reports), for
/// `GET /cluster`. Written by the Raft network and the report route.
#[derive(Debug, Default)]
pub(crate) struct Members(std::sync::Mutex<BTreeMap<NodeId, Seen>>);

impl Members {
    pub(crate) fn contact(&self, id: NodeId) {
        if let Ok(mut seen) = self.0.lock() {
            seen.entry(id).or_default().contact = Some(Instant::now());
        }
    }

    fn applied(&self, id: NodeId, index: u64) {
        if let Ok(mut seen) = self.0.lock() {
            seen.entry(id).or_default().applied = Some(index);
        }
    }

    fn get(&self, id: NodeId) -> Seen {
        self.0
            .lock()
            .map(|seen| seen.get(&id).copied().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// A node's handle on the cluster. Cheap to share behind an `Arc`.
pub struct Cluster {
    id: NodeId,
    raft: Raft<TypeConfig>,
    registry: Arc<Registry>,
    client: PeerClient,
    election_timeout: Duration,
    reads: mpsc::UnboundedSender<ReadWaiter>,
    proposals: mpsc::UnboundedSender<Proposal>,
    beats: mpsc::Sender<(ServiceName, InstanceId)>,
    /// Milliseconds since `origin` when the leader last reached this node (leaders: now).
    last_contact: AtomicU64,
    /// Milliseconds since `origin` when a majority last acknowledged this node as leader
    /// (0: not leading). Taken from openraft's metrics when they change, so it can only be
    /// later than the truth by the time the metrics took to arrive: the lease's margin
    /// (followers refuse votes for e/2, the lease is e/3) covers that.
    quorum_acked: AtomicU64,
    /// What the leader hears from each member.
    members: Arc<Members>,
    /// The control plane's tasks, for those started later (naming the epoch).
    tasks: waypost_runtime::TaskTracker,
    /// `--snapshot-entries`.
    snapshot_entries: u64,
    /// `waypost_read_index_total{kind="lease"}` and `{kind="round"}`, looked up once: a
    /// leader counts one per read.
    lease_reads: prometheus_client::metrics::counter::Counter,
    round_reads: prometheus_client::metrics::counter::Counter,
    origin: Instant,
    metrics: Arc<Metrics>,
    /// Sidecars' reports on their way to the other members.
    fanout: fanout::Fanout,
    /// The control plane's shutdown, for tasks started later.
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What `start` needs beyond the config.
pub(crate) struct Parts {
    pub(crate) log: LogStore,
    pub(crate) machine: StateMachine,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    /// This node's own base URL (used when there are no peers).
    pub(crate) own_url: String,
    /// This node's HTTPS files: its certificate is also its client certificate towards peers.
    pub(crate) tls: Option<crate::tls::TlsFiles>,
    /// The control plane's tracker: the cluster's tasks are its.
    pub(crate) tasks: waypost_runtime::TaskTracker,
}

impl Cluster {
    /// Starts Raft on this node, initialises a new cluster (or a cluster of one), and starts
    /// the tasks that follow leadership, decide expiry and forward heartbeats.
    pub(crate) async fn start(
        config: &ClusterConfig,
        parts: Parts,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let raft_config = raft_config(config)?;
        let identity = parts
            .tls
            .as_ref()
            .map(|t| (t.cert.as_path(), t.key.as_path()));
        let client = PeerClient::new(config.peer_ca.as_deref(), identity, config.token.clone())?;
        let seen = Arc::new(Members::default());
        let network = Network {
            client: client.clone(),
            members: seen.clone(),
        };
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network,
            parts.log,
            parts.machine,
        )
        .await
        .map_err(|err| format!("raft: {err}"))?;
        form(&raft, config, &parts.own_url).await?;
        let (reads, read_rx) = mpsc::unbounded_channel();
        let (proposals, proposal_rx) = mpsc::unbounded_channel();
        let (beats, beat_rx) = mpsc::channel(HEARTBEAT_BATCH * 4);
        let lease_reads = parts
            .metrics
            .read_index
            .get_or_create(&"lease".into())
            .clone();
        let round_reads = parts
            .metrics
            .read_index
            .get_or_create(&"round".into())
            .clone();
        let cluster = Arc::new(Self {
            id: config.node_id,
            raft,
            registry: parts.registry,
            client,
            election_timeout: config.election_timeout,
            reads,
            proposals,
            beats,
            last_contact: AtomicU64::new(0),
            quorum_acked: AtomicU64::new(0),
            members: seen,
            tasks: parts.tasks.clone(),
            snapshot_entries: config.snapshot_entries.max(1),
            lease_reads,
            round_reads,
            origin: Instant::now(),
            metrics: parts.metrics,
            fanout: fanout::Fanout::default(),
            shutdown: shutdown.clone(),
        });
        let tasks = &parts.tasks;
        tasks.spawn(cluster.clone().follow_leadership(shutdown.clone()));
        tasks.spawn(cluster.clone().expire(shutdown.clone()));
        tasks.spawn(
            cluster
                .clone()
                .forward_heartbeats(beat_rx, shutdown.clone()),
        );
        tasks.spawn(cluster.clone().serve_reads(read_rx, shutdown.clone()));
        tasks.spawn(cluster.clone().propose(proposal_rx, shutdown));
        Ok(cluster)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The Raft handle (for the cluster routes).
    pub(crate) fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Stops Raft; call after the HTTP server has stopped.
    pub(crate) async fn shutdown(&self) {
        if let Err(err) = self.raft.shutdown().await {
            tracing::warn!(%err, "raft shutdown");
        }
    }

    /// The leader this node knows of, if any: itself while a majority acknowledges it, or
    /// another node that reached this one within two election timeouts (Raft keeps naming a
    /// leader that went away until an election ends, which on a minority never happens).
    pub fn known_leader(&self) -> Option<NodeId> {
        let m = self.raft.metrics();
        let m = m.borrow();
        self.fresh_leader(&m)
    }

    fn fresh_leader(&self, m: &openraft::RaftMetrics<NodeId, BasicNode>) -> Option<NodeId> {
        let leader = m.current_leader?;
        if leader == self.id {
            let voters = m.membership_config.membership().voter_ids().count();
            let acked = m.millis_since_quorum_ack.unwrap_or(u64::MAX);
            let fresh = voters <= 1 || Duration::from_millis(acked) <= self.election_timeout * 2;
            return (m.state == ServerState::Leader && fresh).then_some(leader);
        }
        match self.since_contact() {
            // Not reached yet since start-up: trust Raft (it learned the leader by a vote).
            None => Some(leader),
            Some(ms) => (Duration::from_millis(ms) <= self.election_timeout * 2).then_some(leader),
        }
    }

    /// Milliseconds since the leader last reached this node; `None` before it ever did.
    fn since_contact(&self) -> Option<u64> {
        match self.last_contact.load(Ordering::Acquire) {
            0 => None,
            at => Some(self.millis().saturating_sub(at)),
        }
    }

    /// Milliseconds since this node last heard from the leader (0 on the leader itself);
    /// `None` before it ever did.
    fn last_contact_ms(&self, m: &openraft::RaftMetrics<NodeId, BasicNode>) -> Option<u64> {
        if m.current_leader == Some(self.id) {
            Some(0)
        } else {
            self.since_contact()
        }
    }

    /// `X-Waypost-Known-Leader` and `X-Waypost-Last-Contact` for an answer.
    pub fn contact_headers(&self) -> (&'static str, Option<u64>) {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let contact = self.last_contact_ms(&m);
        let known = if self.fresh_leader(&m).is_some() {
            "true"
        } else {
            "false"
        };
        (known, contact)
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes that the leader reached this node (an append or a heartbeat arrived).
    pub(crate) fn contact(&self) {
        self.last_contact
            .store(self.millis().max(1), Ordering::Release);
    }

    /// Whether this node may answer a write that would change nothing from its own applied
    /// state, without a log entry. Two conditions:
    /// - it leads, and a majority acknowledged it within half an election timeout: no other
    ///   node can have been elected since (followers wait at least an election timeout
    ///   without hearing from the leader before they vote);
    /// - it has applied an entry of its own term. A new leader learns that the entries of
    ///   earlier terms are committed only when the first entry of its term is, and applies
    ///   them after that: until then its state can lack a change the previous leader already
    ///   acknowledged (a deregistration, say), and "this registration is already there" would
    ///   be a stale read, its acknowledgement lost once the change is applied.
    pub(crate) fn may_answer_unchanged(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        self.leased(&m)
            && m.last_applied
                .is_some_and(|l| l.leader_id.term == m.current_term)
    }

    /// Whether this node leads and holds the lease: a majority acknowledged it (counted from
    /// when the acknowledged message was sent) within a third of the election timeout.
    /// Followers refuse to vote for half an election timeout after they last heard from the
    /// leader, so no other node can have become leader meanwhile.
    fn leased(&self, m: &openraft::RaftMetrics<NodeId, BasicNode>) -> bool {
        if m.current_leader != Some(self.id) || m.state != ServerState::Leader {
            return false;
        }
        if m.membership_config.membership().voter_ids().count() <= 1 {
            return true;
        }
        match self.quorum_acked.load(Ordering::Acquire) {
            0 => false,
            at => {
                Duration::from_millis(self.millis().saturating_sub(at)) < self.election_timeout / 3
            }
        }
    }

    /// Whether this node is the only voter and leads: then its applied state is the
    /// cluster's, and reads need no round trip.
    fn sole_voter_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id)
            && m.state == ServerState::Leader
            && m.membership_config.membership().voter_ids().eq([self.id])
    }

    /// The leader, waiting up to the election timeout for one to be known. A leader that has
    /// not heard from a majority for an election timeout is not counted: it is on the minority
    /// side of a partition and cannot commit.
    async fn leader(&self) -> Result<Leader, ClusterError> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + self.election_timeout;
        loop {
            {
                let m = rx.borrow_and_update();
                match self.fresh_leader(&m) {
                    Some(id) if id == self.id => return Ok(Leader::Me),
                    Some(id) => {
                        if let Some(node) = m.membership_config.membership().get_node(&id) {
                            return Ok(Leader::Other {
                                id,
                                url: node.addr.clone(),
                            });
                        }
                    }
                    None => {}
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ClusterError::NoLeader("raft stopped".into())),
                Err(_) => {
                    return Err(ClusterError::NoLeader(format!(
                        "no leader known after {} ms",
                        self.election_timeout.as_millis()
                    )));
                }
            }
        }
    }

    /// Replicates `command`: appended by the leader (this node, or forwarded to it), committed
    /// by a majority, and applied on this node before the reply is returned.
    pub async fn write(&self, command: Command) -> Result<Reply, ClusterError> {
        self.registry.ensure_writable()?;
        // Every revision belongs to the epoch: none is given before the epoch is named.
        if self.registry.epoch() == 0 && !matches!(command, Command::Init { .. }) {
            self.name_epoch().await?;
        }
        self.write_once(command).await
    }

    /// Proposes [`Command::Init`] with a new random epoch; the first one in the log names the
    /// cluster's epoch, any later one changes nothing. Done once applied here.
    async fn name_epoch(&self) -> Result<(), ClusterError> {
        let epoch = loop {
            let e: u64 = rand::random();
            if e != 0 {
                break e;
            }
        };
        self.write_once(Command::Init { epoch }).await.map(|_| ())
    }

    async fn write_once(&self, command: Command) -> Result<Reply, ClusterError> {
        match self.leader().await? {
            Leader::Me => {
                let answer = self.write_here(command).await?;
                Ok(answer.reply)
            }
            Leader::Other { id, url } => {
                self.metrics.forwarded.get_or_create(&"write".into()).inc();
                let answer: WriteAnswer = self
                    .client
                    .post(&url, "/cluster/write", &command, self.election_timeout * 2)
                    .await
                    .map_err(|err| {
                        ClusterError::NoLeader(format!("forwarding to leader {id}: {err}"))
                    })?;
                self.wait_applied(answer.index).await?;
                Ok(answer.reply)
            }
        }
    }

    /// Appends `command` on this node, which must lead; for [`Self::write`] and for writes
    /// forwarded by other nodes. The command joins the next log entry ([`Self::propose`]).
    pub(crate) async fn write_here(&self, command: Command) -> Result<WriteAnswer, ClusterError> {
        let (done, answer) = oneshot::channel();
        self.proposals
            .send((command, done))
            .map_err(|_| ClusterError::NoLeader("shutting down".into()))?;
        answer
            .await
            .map_err(|_| ClusterError::NoLeader("shutting down".into()))?
    }

    /// Turns the writes waiting here into log entries, one entry at a time: every write that
    /// arrived while the previous entry was being appended and committed goes into the next
    /// one, as a [`Command::Batch`]. openraft 0.9 makes each entry durable before it takes
    /// the next, so one entry per write would cost one sync per write, in series; batching
    /// gives the group commit back (one sync serves the whole batch).
    ///
    /// At shutdown it proposes what is queued, then ends: later writes are refused.
    async fn propose(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Proposal>,
        shutdown: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                biased;
                next = rx.recv() => match next {
                    Some(p) => p,
                    None => return,
                },
                () = shutdown.cancelled() => match rx.try_recv() {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_PROPOSAL_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let (commands, waiters): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
            let single = commands.len() == 1;
            let command = if single {
                commands.into_iter().next().unwrap_or(Command::Batch {
                    commands: Vec::new(),
                })
            } else {
                Command::Batch { commands }
            };
            match self.append(command).await {
                Ok(WriteAnswer {
                    reply: Reply::Batch { replies },
                    index,
                }) if !single => {
                    for (waiter, reply) in waiters.into_iter().zip(replies) {
                        let _ = waiter.send(Ok(WriteAnswer { reply, index }));
                    }
                }
                Ok(answer) => {
                    for waiter in waiters {
                        let _ = waiter.send(Ok(WriteAnswer {
                            reply: answer.reply.clone(),
                            index: answer.index,
                        }));
                    }
                }
                Err(err) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(err.copy()));
                    }
                }
            }
        }
    }

    /// Appends one entry and waits until it is committed and applied here.
    async fn append(&self, command: Command) -> Result<WriteAnswer, ClusterError> {
        // Committing needs a majority: on the minority side of a partition this would wait
        // for ever, so it is bounded by the election timeout (after which the outcome is
        // unknown to the client, as with any timeout).
        let written = tokio::time::timeout(
            self.election_timeout.max(Duration::from_millis(500)),
            self.raft.client_write(command),
        )
        .await
        .map_err(|_| {
            tracing::warn!(
                timeout_ms = self.election_timeout.as_millis() as u64,
                "a write was not committed in time"
            );
            ClusterError::NoLeader("the write was not committed within the election timeout".into())
        })?;
        match written {
            Ok(done) => Ok(WriteAnswer {
                reply: done.data,
                index: done.log_id.index,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(
                ClusterError::NoLeader(format!("leadership moved to {:?}", f.leader_id)),
            ),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ClusterError::NoLeader(e.to_string()))
            }
            Err(RaftError::Fatal(err)) => {
                tracing::error!(%err, "raft failed; refusing writes");
                self.registry.fail();
                Err(RegistryError::StoreUnavailable.into())
            }
        }
    }

    async fn wait_applied(&self, index: u64) -> Result<(), ClusterError> {
        tokio::time::timeout(self.election_timeout * 2, self.registry.wait_applied(index))
            .await
            .map_err(|_| {
                ClusterError::NoLeader(format!("log index {index} not applied here in time"))
            })??;
        Ok(())
    }

    /// Makes the next read linearizable: afterwards this node has applied everything that was
    /// committed before the call.
    pub async fn linearize(&self, consistency: Consistency) -> Result<(), ClusterError> {
        if self.sole_voter_leader() {
            return Ok(());
        }
        if consistency == Consistency::Default
            && let Some(head) = self.leased_head()
        {
            return self.wait_applied(head).await;
        }
        let (tx, rx) = oneshot::channel();
        self.reads
            .send((tx, consistency))
            .map_err(|_| ClusterError::NoLeader("shutting down".into()))?;
        let index = rx
            .await
            .map_err(|_| ClusterError::NoLeader("shutting down".into()))?
            .map_err(ClusterError::NoLeader)?;
        self.wait_applied(index).await
    }

    /// Answers read-index requests in rounds: every request that arrived while a round was
    /// out waits for the next one, so each is answered by a round that started after it.
    async fn serve_reads(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<ReadWaiter>,
        shutdown: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return,
                next = rx.recv() => match next {
                    Some(w) => w,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while let Ok(w) = rx.try_recv() {
                batch.push(w);
            }
            let consistency = if batch.iter().any(|(_, c)| *c == Consistency::Consistent) {
                Consistency::Consistent
            } else {
                Consistency::Default
            };
            let result = self
                .read_index(consistency)
                .await
                .map_err(|e| e.to_string());
            for (w, _) in batch {
                let _ = w.send(result.clone());
            }
        }
    }

    /// The commit index a linearizable read must wait for.
    async fn read_index(&self, consistency: Consistency) -> Result<u64, ClusterError> {
        match self.leader().await? {
            Leader::Me => self.read_index_here(consistency).await,
            Leader::Other { id, url } => {
                self.metrics.forwarded.get_or_create(&"read".into()).inc();
                let path = match consistency {
                    Consistency::Default => "/cluster/read-index",
                    Consistency::Consistent => "/cluster/read-index?consistent",
                };
                let answer: ReadIndex = self
                    .client
                    .post(&url, path, &(), self.election_timeout)
                    .await
                    .map_err(|err| {
                        ClusterError::NoLeader(format!("read index from leader {id}: {err}"))
                    })?;
                Ok(answer.index)
            }
        }
    }

    /// Under the lease: this leader's last log index. Every entry committed so far is in it
    /// (a leader has every committed entry), so a read that waits until it is applied sees
    /// every write acknowledged before the read began.
    fn leased_head(&self) -> Option<u64> {
        let head = {
            let m = self.raft.metrics();
            let m = m.borrow();
            self.leased(&m).then(|| m.last_log_index.unwrap_or(0))
        };
        if head.is_some() {
            self.lease_reads.inc();
        }
        head
    }

    /// On the leader: the index a linearizable read waits for, from the lease when it holds
    /// and the read allows it, else after confirming leadership with a majority.
    pub(crate) async fn read_index_here(
        &self,
        consistency: Consistency,
    ) -> Result<u64, ClusterError> {
        if consistency == Consistency::Default
            && let Some(head) = self.leased_head()
        {
            return Ok(head);
        }
        self.round_reads.inc();
        let got = tokio::time::timeout(self.election_timeout, self.raft.get_read_log_id())
            .await
            .map_err(|_| {
                ClusterError::NoLeader("leadership not confirmed by a majority in time".into())
            })?
            .map_err(|err| ClusterError::NoLeader(err.to_string()))?;
        Ok(got.0.map_or(0, |l| l.index))
    }

    /// Passes a heartbeat this node accepted on to the leader (dropped when this node leads,
    /// or when the queue is full: the instance heartbeats again within its interval).
    pub fn forward_heartbeat(&self, service: ServiceName, id: InstanceId) {
        if self.known_leader() != Some(self.id) {
            let _ = self.beats.try_send((service, id));
        }
    }

    /// Reports to the leader: the heartbeats accepted here, at most [`HEARTBEAT_FORWARD`]
    /// after they came, and this node's applied index, at least every [`REPORT_EVERY`].
    async fn forward_heartbeats(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<(ServiceName, InstanceId)>,
        shutdown: CancellationToken,
    ) {
        let mut beats = Vec::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                next = rx.recv() => match next {
                    Some(k) => beats.push(k),
                    None => return,
                },
                () = tokio::time::sleep(REPORT_EVERY) => {}
            }
            if !beats.is_empty() {
                // Collect for at most the forwarding interval, then send what came.
                let until = tokio::time::Instant::now() + HEARTBEAT_FORWARD;
                while beats.len() < HEARTBEAT_BATCH {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(k)) => beats.push(k),
                        Ok(None) | Err(_) => break,
                    }
                }
                beats.sort_unstable();
                beats.dedup();
            }
            let leader = match self.leader().await {
                Ok(leader) => leader,
                Err(err) => {
                    tracing::debug!(%err, count = beats.len(), "heartbeats not forwarded");
                    beats.clear();
                    continue;
                }
            };
            let report = Report {
                node: self.id,
                applied: self.registry.applied_index(),
                beats: std::mem::take(&mut beats),
            };
            match leader {
                Leader::Me => self.reported(&report),
                Leader::Other { id, url } => {
                    if !report.beats.is_empty() {
                        self.metrics
                            .forwarded
                            .get_or_create(&"heartbeat".into())
                            .inc_by(report.beats.len() as u64);
                    }
                    let sent: Result<serde_json::Value, _> = self
                        .client
                        .post(&url, "/cluster/heartbeats", &report, self.election_timeout)
                        .await;
                    if let Err(err) = sent {
                        tracing::debug!(%err, leader = id, count = report.beats.len(), "heartbeats not forwarded");
                    }
                }
            }
        }
    }

    /// On the leader: a member's report (or this node's own heartbeats).
    pub(crate) fn reported(&self, report: &Report) {
        self.members.applied(report.node, report.applied);
        self.registry.renew_keys(&report.beats, Instant::now());
    }

    /// Follows leadership changes: a new leader takes over expiry with a fresh grace for
    /// every instance, and names the epoch of a new cluster.
    async fn follow_leadership(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.raft.metrics();
        let mut leading = false;
        let mut known: Option<NodeId> = None;
        // The snapshot index a snapshot was last asked for after (not again until it is done).
        let mut snapshot_asked: Option<u64> = None;
        loop {
            let (now_leading, leader, term, snapshot) = {
                let m = rx.borrow_and_update();
                let last_snapshot = m.snapshot.map_or(0, |l| l.index);
                let applied = m.last_applied.map_or(0, |l| l.index);
                let snapshot = (snapshot_asked != Some(last_snapshot)
                    && snapshot_due(applied, last_snapshot, self.snapshot_entries, self.id))
                .then_some(last_snapshot);
                let acked = match m.millis_since_quorum_ack {
                    Some(ms) if m.state == ServerState::Leader => {
                        self.millis().saturating_sub(ms).max(1)
                    }
                    _ => 0,
                };
                self.quorum_acked.store(acked, Ordering::Release);
                let head = m.last_log_index.unwrap_or(0);
                self.metrics.raft_last_log_index.set(head as i64);
                self.metrics
                    .raft_applied_index
                    .set(m.last_applied.map_or(0, |l| l.index) as i64);
                if let Some(replication) = &m.replication {
                    for (peer, matched) in replication.iter() {
                        let lag = head.saturating_sub(matched.as_ref().map_or(0, |l| l.index));
                        self.metrics
                            .raft_replication_lag
                            .get_or_create(&crate::metrics::PeerLabel { peer: *peer })
                            .set(lag as i64);
                    }
                }
                (
                    m.current_leader == Some(self.id) && m.state == ServerState::Leader,
                    m.current_leader,
                    m.current_term,
                    snapshot,
                )
            };
            if let Some(last) = snapshot {
                snapshot_asked = Some(last);
                if let Err(err) = self.raft.trigger().snapshot().await {
                    tracing::warn!(%err, "could not start a snapshot");
                }
            }
            self.metrics.raft_term.set(term as i64);
            if self.raft.metrics().borrow().running_state.is_err() {
                tracing::error!("raft stopped on a storage error; refusing writes");
                self.registry.fail();
            }
            if leader != known {
                if leader.is_some() {
                    self.metrics.leader_changes.inc();
                }
                tracing::info!(leader = ?leader, term, "leader");
                known = leader;
            }
            if now_leading != leading {
                leading = now_leading;
                // Deadlines run out on the leader: a new one cannot know when instances last
                // heartbeated elsewhere, so each gets its TTL again plus the longest election.
                self.registry
                    .lead(leading, self.election_timeout * 2, Instant::now());
                if leading && self.registry.epoch() == 0 {
                    self.tasks
                        .spawn(self.clone().name_epoch_while_leading(shutdown.clone()));
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
    }

    /// On a new leader of a cluster without an epoch: names it, trying again (a leader that
    /// was just elected may not have heard from a majority within the first try's wait) until
    /// it is named or this node no longer leads. Client writes name it too if need be
    /// ([`Self::write`]); this is for a cluster that has none yet, so that the first watchers
    /// get ids in the epoch for good.
    async fn name_epoch_while_leading(self: Arc<Self>, shutdown: CancellationToken) {
        while self.registry.epoch() == 0 && !shutdown.is_cancelled() {
            {
                let m = self.raft.metrics();
                let m = m.borrow();
                if m.state != ServerState::Leader || m.current_leader != Some(self.id) {
                    return;
                }
            }
            match self.name_epoch().await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(%err, "could not name the cluster's epoch yet; trying again");
                    tokio::time::sleep(self.election_timeout / 4).await;
                }
            }
        }
    }

    /// On the leader: proposes the expiries due.
    async fn expire(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Proposed together, so that many expiries share the log's group commits; one
            // that fails was queued again by the registry and is decided anew later.
            let proposed = self
                .registry
                .expire_due(Instant::now())
                .into_iter()
                .map(|command| self.write_here(command));
            for result in futures_util::future::join_all(proposed).await {
                if let Err(err) = result {
                    tracing::debug!(%err, "expiry not applied");
                }
            }
        }
    }

    /// The cluster as this node sees it, for `GET /cluster`.
    pub fn status(&self) -> waypost_model::ClusterStatus {
        let m = self.raft.metrics();
        let m = m.borrow();
        let last_contact_ms = self.last_contact_ms(&m);
        let membership = m.membership_config.membership();
        let leader = m.current_leader;
        let head = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map_or(0, |l| l.index);
        let leading = leader == Some(self.id) && m.state == ServerState::Leader;
        let replication = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let voter = membership.voter_ids().any(|v| v == *id);
                let role = if Some(*id) == leader {
                    "leader"
                } else if voter {
                    "follower"
                } else {
                    "learner"
                };
                let matched = if *id == self.id {
                    m.last_log_index
                } else {
                    replication
                        .get(id)
                        .and_then(|l| l.as_ref().map(|l| l.index))
                };
                let (last_contact_ms, applied_index) = if *id == self.id {
                    (Some(0), Some(applied))
                } else if leading {
                    let seen = self.members.get(*id);
                    let since = seen
                        .contact
                        .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
                    (since, seen.applied)
                } else if Some(*id) == leader {
                    (last_contact_ms, None)
                } else {
                    (None, None)
                };
                waypost_model::ClusterMember {
                    id: *id,
                    url: node.addr.clone(),
                    role: role.to_owned(),
                    matched_index: matched,
                    lag: matched.map(|i| head.saturating_sub(i)),
                    last_contact_ms,
                    applied_index,
                }
            })
            .collect();
        waypost_model::ClusterStatus {
            node_id: self.id,
            state: format!("{:?}", m.state).to_lowercase(),
            leader,
            term: m.current_term,
            last_log_index: head,
            applied_index: applied,
            last_contact_ms,
            snapshot_index: m.snapshot.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            members,
        }
    }

    /// `/ready`: a leader is known and this node is not behind its own log.
    pub fn ready(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        self.fresh_leader(&m).is_some()
            && m.last_applied.map_or(0, |l| l.index) >= m.last_log_index.unwrap_or(0)
    }
}

/// openraft's settings for the election timeout `e` and the snapshot policy.
fn raft_config(config: &ClusterConfig) -> Result<openraft::Config, String> {
    let e = u64::try_from(config.election_timeout.as_millis()).unwrap_or(u64::MAX);
    // openraft 0.9 lets a follower that knows a leader start an election only after the
    // leader lease (`election_timeout_max`, during which it also refuses to vote) plus its
    // random timeout (from `min` to `max`) since it last heard from the leader; a
    // candidate tries again after the random timeout alone; timers are checked every tick
    // (1.5 heartbeat intervals, and the minimum must exceed the heartbeat interval). With
    // 3e/10 and e/2 a follower waits 4e/5 to e, plus up to a tick (3e/8): below etcd's e
    // to 2e with its default settings. e and 2e made that 3e to 4e (a median failover of
    // 4.1 s at the default 1 s), e/3 and 2e/3 gave 1.4 s against etcd's 1.3 s
    // (BENCHMARKS.md, issue 13).
    openraft::Config {
        cluster_name: "waypost".into(),
        election_timeout_min: e.saturating_mul(3) / 10,
        election_timeout_max: e / 2,
        // Also the timeout of each append: generous for a loaded host.
        heartbeat_interval: (e / 4).max(20),
        install_snapshot_timeout: 10_000,
        // Snapshots are triggered by `follow_leadership`, staggered between the nodes.
        snapshot_policy: SnapshotPolicy::Never,
        // Keep a tenth of a snapshot's worth of log after it, so that a follower a little
        // behind catches up from the log, not from a whole snapshot.
        max_in_snapshot_log_to_keep: (config.snapshot_entries / 10).max(1),
        // An entry can hold a batch of up to MAX_PROPOSAL_BATCH commands.
        max_payload_entries: 16,
        ..Default::default()
    }
    .validate()
    .map_err(|err| format!("raft settings: {err}"))
}

/// Initialises a new cluster (every node of it with the same membership; the election picks
/// the first leader) unless this node joins a running one, and elects a cluster of one at
/// once, so that a restarted single node takes writes without waiting for a timeout.
async fn form(
    raft: &Raft<TypeConfig>,
    config: &ClusterConfig,
    own_url: &str,
) -> Result<(), String> {
    let members: BTreeMap<NodeId, BasicNode> = if config.peers.is_empty() {
        BTreeMap::from([(config.node_id, BasicNode::new(own_url))])
    } else {
        config
            .peers
            .iter()
            .map(|(id, url)| (*id, BasicNode::new(url)))
            .collect()
    };
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|err| format!("raft: {err}"))?;
    if !initialized && !config.join {
        // Every node of a new cluster starts with the same membership; which one becomes
        // the first leader is up to the election.
        if let Err(err) = raft.initialize(members).await {
            tracing::warn!(%err, "cluster initialisation");
        }
    }
    // A cluster of one has no one to wait for: elect now rather than after a timeout,
    // so that a restarted single node takes writes at once.
    let sole = {
        let m = raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .voter_ids()
            .eq([config.node_id])
    };
    if sole {
        let _ = raft.trigger().elect().await;
        let waited = raft
            .wait(Some(config.election_timeout * 4))
            .metrics(
                |m| m.current_leader == Some(config.node_id),
                "single node leads",
            )
            .await;
        if let Err(err) = waited {
            tracing::warn!(%err, "a single node did not become leader in time");
        }
    }
    Ok(())
}

/// Whether a node should snapshot its state machine now: every `every` entries, each node at
/// its own point of the cycle (node 1 at multiples of `every`, node 2 a fifth later, and so
/// on), and at least half a cycle after its last snapshot. Writing a snapshot of a large
/// registry holds the node's log writes for as long as it takes; nodes that did it at the
/// same index (openraft's own policy) all stalled at once, and with them the majority every
/// commit needs (BENCHMARKS.md, issue 13): staggered, a majority is always writing.
fn snapshot_due(applied: u64, last_snapshot: u64, every: u64, node: NodeId) -> bool {
    let offset = (node.saturating_sub(1) % 5) * every / 5;
    let earliest = last_snapshot.saturating_add(every / 2);
    let next = earliest + (offset + every - earliest % every) % every;
    applied >= next
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    /// The first index at or after `from` at which `node` snapshots, having last done so at
    /// `last`.
    fn next(node: u64, last: u64, from: u64) -> u64 {
        (from..)
            .find(|a| snapshot_due(*a, last, 10_000, node))
            .unwrap()
    }

    #[test]
    fn nodes_snapshot_a_fifth_of_a_cycle_apart_and_at_most_once_a_cycle() {
        assert_eq!(next(1, 0, 0), 10_000);
        assert_eq!(next(2, 0, 0), 12_000);
        assert_eq!(next(3, 0, 0), 14_000);
        assert_eq!(next(5, 0, 0), 8_000);
        assert_eq!(next(6, 0, 0), 10_000);
        // Built a little after it was due: the next one keeps the node's place in the cycle.
        assert_eq!(next(1, 10_007, 10_007), 20_000);
        assert_eq!(next(2, 12_150, 12_150), 22_000);
        // Never twice within half a cycle, whatever the last one was.
        assert_eq!(next(1, 19_000, 19_000), 30_000);
        assert_eq!(next(3, 3, 3), 14_000);
        // Small cycles (tests use a few entries) work the same.
        assert!(snapshot_due(5, 0, 5, 1));
        assert!(!snapshot_due(4, 0, 5, 1));
    }
}
