//! The writer thread: the only place that writes the file, one transaction per batch.
//!
//! Writes are queued in the order openraft issued them and committed in that order, which is
//! what storage v2 asks ("all write IO must be serialized"): a vote and the appends around it,
//! a truncation and the appends after it, never reorder.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use openraft::{BasicNode, LogId, SnapshotMeta, storage::LogFlushed};
use redb::{Database, ReadableDatabase};
use tokio::sync::{mpsc, oneshot};

use super::{
    Stored, StoredVote,
    tables::{
        self, COMMITTED_KEY, LOG, META, PURGED_KEY, SNAPSHOT, SNAPSHOT_DATA_KEY, SNAPSHOT_META_KEY,
        VOTE_KEY, db_err, encode,
    },
};
use crate::{
    command::{NodeId, TypeConfig},
    metrics::Metrics,
    store::StoreError,
};

/// Most queued operations in one transaction; bounds the latency of the first in a burst.
const MAX_BATCH: usize = 4096;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One operation for the writer thread.
pub(super) enum Op {
    /// Log entries (index, JSON), already readable in memory; `done` is told once durable.
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        done: LogFlushed<TypeConfig>,
    },
    /// Removes entries from `since` on.
    Truncate { since: u64 },
    /// Removes entries up to `upto` and records it as the last purged.
    Purge { upto: LogId<NodeId> },
    /// The committed log id: written with the next transaction that has anything else in it
    /// (openraft allows it to lag), so that advancing it never costs a sync of its own.
    Committed(Option<LogId<NodeId>>),
    /// The vote; `done` once durable.
    Vote { vote: StoredVote, done: Reply<()> },
    /// Replaces the snapshot (unless `keep_newer` and the stored one is newer); `done` gets the
    /// data back once durable.
    PutSnapshot {
        meta: SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
        keep_newer: bool,
        done: Reply<Vec<u8>>,
    },
    /// Reads the stored snapshot.
    GetSnapshot { done: Reply<Option<Stored>> },
    /// Commits what came before, closes the database and stops.
    Close { done: oneshot::Sender<()> },
}

/// Why queued operations were not done: one value for every waiter of a batch.
#[derive(Clone)]
enum Refusal {
    Closed,
    Failed,
    Commit(Arc<StoreError>),
}

impl Refusal {
    fn error(&self) -> StoreError {
        match self {
            Self::Closed => StoreError::Closed,
            Self::Failed => StoreError::Failed,
            Self::Commit(e) => StoreError::Commit(e.clone()),
        }
    }
}

impl Op {
    /// Tells the waiter that the operation was not done.
    fn refuse(self, why: &Refusal) {
        match self {
            Self::Append { done, .. } => {
                done.log_io_completed(Err(std::io::Error::other(why.error())));
            }
            Self::Vote { done, .. } => {
                let _ = done.send(Err(why.error()));
            }
            Self::PutSnapshot { done, .. } => {
                let _ = done.send(Err(why.error()));
            }
            Self::GetSnapshot { done } => {
                let _ = done.send(Err(why.error()));
            }
            Self::Close { done } => {
                let _ = done.send(());
            }
            Self::Truncate { .. } | Self::Purge { .. } | Self::Committed(_) => {}
        }
    }
}

/// The storage halves' way to the thread.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    tx: mpsc::UnboundedSender<Op>,
    /// A commit failed: writes are refused from then on.
    pub(super) failed: Arc<AtomicBool>,
}

impl Writer {
    /// Why a write would be refused now, if it would.
    pub(super) fn refused(&self) -> Option<StoreError> {
        if self.failed.load(Ordering::Acquire) {
            Some(StoreError::Failed)
        } else if self.tx.is_closed() {
            Some(StoreError::Closed)
        } else {
            None
        }
    }

    /// Queues `op`, or says why it cannot be done (dropping it: the caller returns the error
    /// instead of waiting).
    pub(super) fn send(&self, op: Op) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Failed);
        }
        self.tx.send(op).map_err(|_| StoreError::Closed)
    }

    /// Queues the operation `make` builds around a reply channel and waits for its result.
    pub(super) async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// See [`super::StoreHandle::close`].
    pub(super) async fn close(&self) {
        let (done, rx) = oneshot::channel();
        // Not `send`: a store whose commit failed still has to let go of its file.
        if self.tx.send(Op::Close { done }).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Gives the thread its database once the store is split up.
pub(super) struct Starter(std::sync::mpsc::SyncSender<(Database, Arc<Metrics>)>);

impl Starter {
    pub(super) fn start(self, db: Database, metrics: Arc<Metrics>) {
        // A thread that is gone has dropped its receivers: writes then fail as closed.
        let _ = self.0.send((db, metrics));
    }
}

/// Starts the thread; it waits for [`Starter::start`] and ends when every [`Writer`] is gone
/// or on [`Op::Close`].
pub(super) fn spawn() -> Result<(Writer, Starter), StoreError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (start_tx, start_rx) = std::sync::mpsc::sync_channel::<(Database, Arc<Metrics>)>(1);
    let failed = Arc::new(AtomicBool::new(false));
    let flag = failed.clone();
    std::thread::Builder::new()
        .name("waypost-raft-store".into())
        .spawn(move || {
            if let Ok((db, metrics)) = start_rx.recv() {
                run(db, &metrics, rx, &flag);
            }
        })
        .map_err(StoreError::Thread)?;
    Ok((Writer { tx, failed }, Starter(start_tx)))
}

fn run(db: Database, metrics: &Metrics, mut rx: mpsc::UnboundedReceiver<Op>, failed: &AtomicBool) {
    // The committed log id received but not written yet.
    let mut committed: Option<Option<LogId<NodeId>>> = None;
    let mut close = None;
    while close.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && !matches!(batch.last(), Some(Op::Close { .. })) {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Some(Op::Close { .. }) = batch.last()
            && let Some(Op::Close { done }) = batch.pop()
        {
            close = Some(done);
        }
        let mut writes = 0;
        for op in &batch {
            match op {
                Op::Append { entries, .. } => writes += entries.len(),
                Op::Truncate { .. }
                | Op::Purge { .. }
                | Op::Vote { .. }
                | Op::PutSnapshot { .. } => writes += 1,
                Op::Committed(c) => committed = Some(*c),
                Op::GetSnapshot { .. } | Op::Close { .. } => {}
            }
        }
        if failed.load(Ordering::Acquire) {
            for op in batch {
                match op {
                    Op::GetSnapshot { done } => {
                        let _ = done.send(read_snapshot(&db));
                    }
                    op => op.refuse(&Refusal::Failed),
                }
            }
            continue;
        }
        if writes == 0 && (close.is_none() || committed.is_none()) {
            for op in batch {
                if let Op::GetSnapshot { done } = op {
                    let _ = done.send(read_snapshot(&db));
                }
            }
            continue;
        }
        match commit(&db, &batch, committed) {
            Ok(()) => {
                committed = None;
                metrics.store_commit(writes);
                for op in batch {
                    match op {
                        Op::Append { done, .. } => done.log_io_completed(Ok(())),
                        Op::Vote { done, .. } => {
                            let _ = done.send(Ok(()));
                        }
                        Op::PutSnapshot { data, done, .. } => {
                            let _ = done.send(Ok(data));
                        }
                        Op::GetSnapshot { done } => {
                            let _ = done.send(read_snapshot(&db));
                        }
                        Op::Truncate { .. }
                        | Op::Purge { .. }
                        | Op::Committed(_)
                        | Op::Close { .. } => {}
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, "raft store commit failed; refusing writes");
                failed.store(true, Ordering::Release);
                let why = Refusal::Commit(Arc::new(err));
                for op in batch {
                    op.refuse(&why);
                }
            }
        }
    }
    // Whatever was queued after the close (or raced with the end) is refused, not dropped
    // silently: openraft waits on an append's callback.
    rx.close();
    let mut late = Vec::new();
    while let Ok(op) = rx.try_recv() {
        late.push(op);
    }
    // The file is released before anyone hears that the store is closed.
    drop(db);
    for op in late {
        op.refuse(&Refusal::Closed);
    }
    if let Some(done) = close {
        let _ = done.send(());
    }
}

/// Writes `batch` (in order) and the pending committed log id in one durable transaction.
fn commit(
    db: &Database,
    batch: &[Op],
    committed: Option<Option<LogId<NodeId>>>,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut log = txn.open_table(LOG).map_err(db_err)?;
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let mut snapshot = txn.open_table(SNAPSHOT).map_err(db_err)?;
        for op in batch {
            match op {
                Op::Append { entries, .. } => {
                    for (index, bytes) in entries {
                        log.insert(*index, bytes.as_slice()).map_err(db_err)?;
                    }
                }
                Op::Truncate { since } => {
                    log.retain_in(*since.., |_, _| false).map_err(db_err)?;
                }
                Op::Purge { upto } => {
                    log.retain_in(..=upto.index, |_, _| false).map_err(db_err)?;
                    meta.insert(PURGED_KEY, encode("purged log id", upto)?.as_slice())
                        .map_err(db_err)?;
                }
                Op::Vote { vote, .. } => {
                    meta.insert(VOTE_KEY, encode("vote", vote)?.as_slice())
                        .map_err(db_err)?;
                }
                Op::PutSnapshot {
                    meta: m,
                    data,
                    keep_newer,
                    ..
                } => {
                    if *keep_newer
                        && let Some(stored) = tables::read_snapshot_meta(&snapshot)?
                        && stored.last_log_id > m.last_log_id
                    {
                        // A snapshot installed while this one was being built is newer.
                        continue;
                    }
                    snapshot
                        .insert(SNAPSHOT_META_KEY, encode("snapshot meta", m)?.as_slice())
                        .map_err(db_err)?;
                    snapshot
                        .insert(SNAPSHOT_DATA_KEY, data.as_slice())
                        .map_err(db_err)?;
                }
                Op::Committed(_) | Op::GetSnapshot { .. } | Op::Close { .. } => {}
            }
        }
        if let Some(c) = committed {
            meta.insert(COMMITTED_KEY, encode("committed log id", &c)?.as_slice())
                .map_err(db_err)?;
        }
    }
    txn.commit().map_err(db_err)?;
    Ok(())
}

fn read_snapshot(db: &Database) -> Result<Option<Stored>, StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let table = txn.open_table(SNAPSHOT).map_err(db_err)?;
    tables::read_snapshot(&table)
}
