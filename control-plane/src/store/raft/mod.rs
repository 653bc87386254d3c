//! The store of the replicated control plane: openraft's log storage and state machine (the
//! storage-v2 API) over one redb file.
//!
//! - The log ([`LogStore`]) is kept whole in memory (every entry not yet purged), so readers
//!   never wait for the disk and an appended entry is readable at once. One writer thread makes
//!   the changes durable in order: everything that queued while the previous commit was syncing
//!   goes into the next transaction (group commit), and an append is acknowledged to openraft
//!   only once its transaction committed.
//! - The state machine ([`StateMachine`]) is the registry, behind [`Machine`]. It is not
//!   written on apply: it is persisted only as snapshots, and at start-up it is the last
//!   snapshot ([`Store::image`]) with openraft re-applying the log after it up to the committed
//!   index.
//!
//! A data directory of the single-node control plane (tables `instances` and `meta`) is
//! converted on first open into a snapshot without a log id.

mod log;
mod machine;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

use std::{collections::BTreeMap, path::Path, sync::Arc};

use openraft::{
    AnyError, BasicNode, ErrorSubject, ErrorVerb, LogId, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use redb::Database;

pub(crate) use self::{log::LogStore, machine::StateMachine};
use super::StoreError;
use crate::{
    command::{Image, Machine, NodeId, TypeConfig},
    metrics::Metrics,
};

/// The file in the data directory (the same name as the single-node store's, so that an old
/// data directory is found and converted).
const FILE: &str = "waypost.redb";

/// What the state machine held at its last stored snapshot: the registry starts from it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Restored {
    /// The registry's state.
    pub(crate) image: Image,
    /// The last log entry the image includes (`None`: a new or converted store).
    pub(crate) last_applied: Option<LogId<NodeId>>,
    /// The last membership the image includes.
    pub(crate) membership: StoredMembership<NodeId, BasicNode>,
}

/// An opened store, before openraft takes it apart.
pub(crate) struct Store {
    db: Database,
    disk: tables::Disk,
    writer: writer::Writer,
    start: writer::Starter,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("entries", &self.disk.entries.len())
            .field("last_applied", &self.disk.snapshot.as_ref().map(|s| &s.0))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens or creates the store: `dir/waypost.redb`, or in memory with `None`. Converts a
    /// single-node data file, then loads the log into memory.
    pub(crate) fn open(dir: Option<&Path>, cache_bytes: usize) -> Result<Self, StoreError> {
        let mut builder = Database::builder();
        builder.set_cache_size(cache_bytes);
        let db = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                    path: dir.display().to_string(),
                    source,
                })?;
                builder.create(dir.join(FILE)).map_err(redb::Error::from)?
            }
            None => builder
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(redb::Error::from)?,
        };
        Self::with_database(db)
    }

    /// [`Store::open`] on an opened database.
    fn with_database(db: Database) -> Result<Self, StoreError> {
        tables::prepare(&db)?;
        let disk = tables::load(&db)?;
        // Started here, where failing can be reported; it waits for the database until
        // `into_parts`, so that a store dropped before then closes its file at once.
        let (writer, start) = writer::spawn()?;
        Ok(Self {
            db,
            disk,
            writer,
            start,
        })
    }

    /// The state at the last stored snapshot (an empty image, epoch 0, for a new store).
    pub(crate) fn image(&self) -> Result<Restored, StoreError> {
        let Some((meta, data)) = &self.disk.snapshot else {
            return Ok(Restored {
                image: Image::default(),
                last_applied: None,
                membership: StoredMembership::default(),
            });
        };
        let image = serde_json::from_slice(data).map_err(|source| StoreError::Corrupt {
            key: tables::SNAPSHOT_DATA_KEY.to_owned(),
            source,
        })?;
        Ok(Restored {
            image,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        })
    }

    /// Hands the database to the writer thread and splits the store into openraft's two
    /// storage halves and a handle for shutdown and health. `machine` must hold
    /// [`Store::image`] already.
    pub(crate) fn into_parts(
        self,
        machine: Arc<dyn Machine>,
        metrics: Arc<Metrics>,
    ) -> (LogStore, StateMachine, StoreHandle) {
        let Self {
            db,
            disk,
            writer,
            start,
        } = self;
        // A thread that is gone leaves the channel closed: every later write fails as closed.
        start.start(db, metrics);
        let (last_applied, membership) = match disk.snapshot {
            Some((meta, _)) => (meta.last_log_id, meta.last_membership),
            None => (None, StoredMembership::default()),
        };
        let log = LogStore::new(
            writer.clone(),
            disk.entries,
            disk.purged,
            disk.vote,
            disk.committed,
        );
        let sm = StateMachine::new(writer.clone(), machine, last_applied, membership);
        (log, sm, StoreHandle { writer })
    }
}

/// Shutdown and health of a running store; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct StoreHandle {
    writer: writer::Writer,
}

impl StoreHandle {
    /// Commits everything queued before this call, stops the writer thread and closes the
    /// database, so that a new store can open the same file at once. Later writes fail.
    pub(crate) async fn close(&self) {
        self.writer.close().await;
    }

    /// A commit failed: the store refuses writes from then on. (Outside tests, a failure
    /// reaches the registry through openraft, which stops on a storage error.)
    #[cfg(test)]
    pub(crate) fn failed(&self) -> bool {
        self.writer
            .failed
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A stored snapshot: its meta and its data (the image as JSON).
type Stored = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

/// The log entries kept in memory, by index.
type Entries = BTreeMap<u64, openraft::Entry<TypeConfig>>;

/// The vote, as stored.
type StoredVote = Vote<NodeId>;

/// Maps a store error to what openraft expects of its storage.
fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    err: &StoreError,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(err)).into()
}
