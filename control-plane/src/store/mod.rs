//! The durable store: the Raft log, the vote and the state machine's snapshots, in one redb
//! file (openraft's storage, see [`raft`]). It knows the commands it holds and the
//! [`Machine`](crate::command::Machine) that applies them, never the registry.

mod raft;

use std::sync::Arc;

pub(crate) use self::raft::{LogStore, StateMachine, Store, StoreHandle};

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
    /// A record could not be encoded.
    #[error("store: cannot encode {what}: {source}")]
    Encode {
        /// What it was.
        what: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// The writer thread could not be started.
    #[error("store: cannot start the writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The store was closed (or its writer thread is gone).
    #[error("store: closed")]
    Closed,
    /// An earlier commit failed: nothing more is written, so that the disk never skips a write.
    #[error("store: an earlier commit failed; refusing writes")]
    Failed,
    /// The transaction holding this write failed to commit (shared by every write in it).
    #[error("store: commit failed: {0}")]
    Commit(Arc<StoreError>),
}
