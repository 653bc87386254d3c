//! openraft's log storage: every entry not yet purged in memory, written by the writer thread.

use std::{
    fmt::Debug,
    ops::RangeBounds,
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader, StorageError,
    storage::{LogFlushed, RaftLogStorage},
};

use super::{
    Entries, StoredVote, storage_error,
    tables::encode,
    writer::{Op, Writer},
};
use crate::command::{NodeId, TypeConfig};

/// The log as openraft sees it; the entries are shared with the [`LogReader`]s.
struct Log {
    entries: Entries,
    purged: Option<LogId<NodeId>>,
}

/// A poisoned lock only means a reader panicked while copying entries out; the map itself is
/// never left half-changed (each change is one map operation).
fn read(log: &RwLock<Log>) -> RwLockReadGuard<'_, Log> {
    log.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(log: &RwLock<Log>) -> RwLockWriteGuard<'_, Log> {
    log.write().unwrap_or_else(PoisonError::into_inner)
}

/// The Raft log storage ([`RaftLogStorage`]).
pub(crate) struct LogStore {
    log: Arc<RwLock<Log>>,
    vote: Option<StoredVote>,
    committed: Option<LogId<NodeId>>,
    writer: Writer,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let log = read(&self.log);
        f.debug_struct("LogStore")
            .field("entries", &log.entries.len())
            .field("purged", &log.purged)
            .field("vote", &self.vote)
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

/// A reader of the log for openraft's replication tasks; cheap to clone.
#[derive(Clone)]
pub(crate) struct LogReader {
    log: Arc<RwLock<Log>>,
}

impl Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogReader")
    }
}

fn entries_in(log: &RwLock<Log>, range: impl RangeBounds<u64>) -> Vec<Entry<TypeConfig>> {
    read(log)
        .entries
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

impl LogStore {
    pub(super) fn new(
        writer: Writer,
        entries: Entries,
        purged: Option<LogId<NodeId>>,
        vote: Option<StoredVote>,
        committed: Option<LogId<NodeId>>,
    ) -> Self {
        Self {
            log: Arc::new(RwLock::new(Log { entries, purged })),
            vote,
            committed,
            writer,
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(entries_in(&self.log, range))
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(entries_in(&self.log, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let log = read(&self.log);
        let last = log.entries.last_key_value().map(|(_, e)| e.log_id);
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: last.or(log.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            log: self.log.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &StoredVote) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.writer
            .call(|done| Op::Vote { vote, done })
            .await
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
        self.vote = Some(vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<StoredVote>, StorageError<NodeId>> {
        Ok(self.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not waited for (it may lag on disk): it is written in order after the appends it
        // covers, with the next transaction that has anything else in it.
        self.writer
            .send(Op::Committed(committed))
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Encoded here rather than on the thread: an entry that cannot be stored is refused
        // before it becomes readable.
        let entries: Vec<_> = entries.into_iter().collect();
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in &entries {
            let bytes = encode("log entry", entry).map_err(|e| {
                storage_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e)
            })?;
            encoded.push((entry.log_id.index, bytes));
        }
        // Checked before the entries become readable: openraft must not see entries that
        // will never be written.
        if let Some(e) = self.writer.refused() {
            return Err(storage_error(ErrorSubject::Logs, ErrorVerb::Write, &e));
        }
        let first = entries.first().map(|e| e.log_id.index);
        {
            let mut log = write(&self.log);
            for entry in entries {
                log.entries.insert(entry.log_id.index, entry);
            }
        }
        let op = Op::Append {
            entries: encoded,
            done: callback,
        };
        self.writer.send(op).map_err(|e| {
            // Closed in between: take back what was never queued (appends only extend the log,
            // so it is the tail from the first new index).
            if let Some(first) = first {
                write(&self.log).entries.split_off(&first);
            }
            storage_error(ErrorSubject::Logs, ErrorVerb::Write, &e)
        })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        write(&self.log).entries.split_off(&log_id.index);
        // Not waited for: the appends that follow queue behind it, and a failed commit refuses
        // them, so the disk never holds them without the truncation.
        self.writer
            .send(Op::Truncate {
                since: log_id.index,
            })
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut log = write(&self.log);
            log.entries = match log_id.index.checked_add(1) {
                Some(next) => log.entries.split_off(&next),
                None => Entries::new(),
            };
            log.purged = Some(log_id);
        }
        // Not waited for: a purge lost in a crash leaves more log than needed, never less.
        self.writer
            .send(Op::Purge { upto: log_id })
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}
