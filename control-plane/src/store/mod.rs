//! The durable store: what survives `kill -9`.
//!
//! Writes arrive from the registry in revision order over a channel and are committed by one
//! writer thread in batches: everything that queued while the previous commit was syncing goes
//! into the next transaction (group commit), so durable registration stays fast under
//! concurrency while each acknowledged write is on disk. Only the instances and the head
//! revision are stored; heartbeat deadlines are not (a restart grants a fresh TTL instead).

mod redb;

use std::{path::Path, sync::Arc};

use tokio::sync::{mpsc, oneshot, watch};
use waypost_model::{Epoch, Instance, Revision};

use crate::{
    metrics::Metrics,
    registry::{Change, ChangeKind, Committed},
};

/// Why the store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The embedded database failed.
    #[error("store: {0}")]
    Db(#[from] ::redb::Error),
    /// A stored record does not parse.
    #[error("store: corrupt record {key}: {source}")]
    Corrupt {
        /// Its key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// What a store held at start-up.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The history's identity (new and random for a fresh store or in memory mode).
    pub(crate) epoch: Epoch,
    /// The last committed revision.
    pub(crate) revision: Revision,
    /// The stored instances.
    pub(crate) instances: Vec<Instance>,
}

impl Loaded {
    /// A fresh, empty history.
    pub(crate) fn empty(epoch: Epoch) -> Self {
        Self {
            epoch,
            revision: 0,
            instances: Vec::new(),
        }
    }
}

/// One write for the store.
#[derive(Debug)]
pub(crate) enum StoreOp {
    Put(Arc<Instance>),
    Delete(String),
}

impl From<&Change> for StoreOp {
    fn from(change: &Change) -> Self {
        match &change.kind {
            ChangeKind::Upsert { instance, .. } => Self::Put(instance.clone()),
            ChangeKind::Remove { service, id, .. } => {
                Self::Delete(key(service.as_str(), id.as_str()))
            }
        }
    }
}

/// The store key of an instance: `/` appears in neither a service name nor an id.
pub(crate) fn key(service: &str, id: &str) -> String {
    format!("{service}/{id}")
}

enum Msg {
    Op(Revision, StoreOp),
    /// Commit what came before, close the database (releasing its file lock) and stop.
    Close(oneshot::Sender<()>),
}

/// The registry's handle on the writer thread.
#[derive(Debug)]
pub(crate) struct StoreWriter {
    tx: mpsc::UnboundedSender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Op(rev, _) => write!(f, "Op({rev})"),
            Self::Close(_) => f.write_str("Close"),
        }
    }
}

impl StoreWriter {
    /// Queues a write. Called under the registry lock, so writes queue in revision order.
    pub(crate) fn send(&self, revision: Revision, op: StoreOp) {
        // A closed channel means the store was closed at shutdown, after the server stopped;
        // nothing is left to acknowledge such a write.
        let _ = self.tx.send(Msg::Op(revision, op));
    }

    /// Commits everything queued before this call, then closes the database, so that a new
    /// control plane can open it at once (in-process restarts in tests). Later writes are
    /// dropped: call it after the server has stopped.
    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Most writes in one transaction; bounds the latency of the first write in a burst.
const MAX_BATCH: usize = 4096;

/// Opens (or creates) the store in `dir`, loads it and starts the writer thread, which
/// publishes each committed revision on `committed`.
pub(crate) fn open(
    dir: &Path,
    cache_bytes: usize,
    committed: Arc<watch::Sender<Committed>>,
    metrics: Arc<Metrics>,
) -> Result<(StoreWriter, Loaded), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
        path: dir.display().to_string(),
        source,
    })?;
    let db = redb::Db::open(&dir.join("waypost.redb"), cache_bytes)?;
    let loaded = db.load()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    std::thread::Builder::new()
        .name("waypost-store".into())
        .spawn(move || {
            let mut closed = None;
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                let mut ops = Vec::with_capacity(batch.len());
                for m in batch {
                    match m {
                        Msg::Op(rev, op) if closed.is_none() => ops.push((rev, op)),
                        Msg::Op(..) => {}
                        Msg::Close(done) => closed = Some(done),
                    }
                }
                if let Some(&(last, _)) = ops.last() {
                    if committed.borrow().failed {
                        // Nothing after a failed commit may land, or disk would skip revisions.
                    } else {
                        match db.commit(&ops) {
                            Ok(()) => {
                                metrics.store_commit(ops.len());
                                committed.send_replace(Committed {
                                    revision: last,
                                    failed: false,
                                });
                            }
                            Err(err) => {
                                tracing::error!(%err, revision = last, "store commit failed; refusing writes");
                                committed.send_modify(|c| c.failed = true);
                            }
                        }
                    }
                }
                if closed.is_some() {
                    break;
                }
            }
            drop(db);
            if let Some(done) = closed {
                let _ = done.send(());
            }
        })
        .map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    Ok((StoreWriter { tx }, loaded))
}
