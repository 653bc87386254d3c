//! Passing sidecars' reports on to every other member, so that each holds the whole table
//! of sidecars (see `crate::nodes`).
//!
//! One queue and one sending task per peer: a peer that is down or slow delays only its own
//! queue. A queue keeps the newest report per sidecar, so it is bounded by the number of
//! sidecars however long a peer is away, and a send carries whatever came while the previous
//! one was in flight (at once when idle).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use waypost_model::NodeReport;

use super::Cluster;
use crate::command::NodeId;

/// Most reports in one request to a peer (a report is at most a public request body).
const MAX_SHARED_BATCH: usize = 256;

/// A sidecar's report as one member passes it to another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SharedReport {
    /// The sidecar's node name.
    pub(crate) node: String,
    /// What it reported.
    pub(crate) report: NodeReport,
    /// Milliseconds since the sender heard it.
    pub(crate) age_ms: u64,
}

/// The reports waiting for one peer.
#[derive(Debug, Default)]
pub(crate) struct PeerQueue {
    pending: Mutex<HashMap<String, (NodeReport, Instant)>>,
    ready: Notify,
}

/// The queues, by peer.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    queues: Mutex<HashMap<NodeId, Arc<PeerQueue>>>,
}

impl Cluster {
    /// Passes a report heard here on to every other member.
    pub fn share_node(self: &Arc<Self>, node: &str, report: &NodeReport) {
        let peers: Vec<NodeId> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| *id != self.id)
                .collect()
        };
        let now = Instant::now();
        for peer in peers {
            let queue = {
                let mut queues = self
                    .fanout
                    .queues
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                queues
                    .entry(peer)
                    .or_insert_with(|| {
                        let queue = Arc::new(PeerQueue::default());
                        self.tasks.spawn(self.clone().send_reports(
                            peer,
                            queue.clone(),
                            self.shutdown.clone(),
                        ));
                        queue
                    })
                    .clone()
            };
            queue
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(node.to_owned(), (report.clone(), now));
            queue.ready.notify_one();
        }
    }

    /// Sends `peer` the reports queued for it, until shutdown or until it leaves the cluster.
    async fn send_reports(
        self: Arc<Self>,
        peer: NodeId,
        queue: Arc<PeerQueue>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = queue.ready.notified() => {}
            }
            let url = {
                let m = self.raft.metrics();
                let m = m.borrow();
                m.membership_config
                    .membership()
                    .get_node(&peer)
                    .map(|n| n.addr.clone())
            };
            let Some(url) = url else {
                // Gone from the cluster: forget its queue (a new one starts if it returns).
                self.fanout
                    .queues
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&peer);
                return;
            };
            let pending =
                std::mem::take(&mut *queue.pending.lock().unwrap_or_else(PoisonError::into_inner));
            let mut batch: Vec<SharedReport> = pending
                .into_iter()
                .map(|(node, (report, at))| SharedReport {
                    node,
                    report,
                    age_ms: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
                })
                .collect();
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(MAX_SHARED_BATCH));
                let sent: Result<serde_json::Value, _> = self
                    .client
                    .post(&url, "/cluster/nodes", &batch, self.election_timeout)
                    .await;
                if let Err(err) = sent {
                    // Dropped: each sidecar reports again within its keep-alive.
                    tracing::debug!(%err, peer, count = batch.len(), "sidecar reports not shared");
                }
                batch = rest;
            }
            // At most one send per peer every few milliseconds, however fast reports come.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
