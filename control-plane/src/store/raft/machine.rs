//! openraft's state machine: the registry behind [`Machine`], persisted only as snapshots.

use std::{fmt::Debug, io::Cursor, sync::Arc};

use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    storage::RaftStateMachine,
};

use super::{
    storage_error,
    tables::{SNAPSHOT_DATA_KEY, decode, encode},
    writer::{Op, Writer},
};
use crate::command::{Image, Machine, NodeId, Reply, TypeConfig};

/// The Raft state machine ([`RaftStateMachine`]).
pub(crate) struct StateMachine {
    machine: Arc<dyn Machine>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    writer: Writer,
}

impl Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("last_applied", &self.last_applied)
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    pub(super) fn new(
        writer: Writer,
        machine: Arc<dyn Machine>,
        last_applied: Option<LogId<NodeId>>,
        membership: StoredMembership<NodeId, BasicNode>,
    ) -> Self {
        Self {
            machine,
            last_applied,
            membership,
            writer,
        }
    }
}

/// Builds a snapshot of the state captured when it was created.
pub(crate) struct SnapshotBuilder {
    image: Image,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    writer: Writer,
}

impl Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder")
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

/// Unique for each snapshot this process builds, and readable in logs.
fn snapshot_id(last: Option<&LogId<NodeId>>) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    match last {
        Some(id) => format!("{}-{}-{nanos:x}", id.leader_id.term, id.index),
        None => format!("0-0-{nanos:x}"),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: snapshot_id(self.last_applied.as_ref()),
        };
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        // Encoding a large registry takes a while: off the runtime's worker threads.
        let image = std::mem::take(&mut self.image);
        let instances = image.instances.len();
        let started = std::time::Instant::now();
        let data = tokio::task::spawn_blocking(move || encode("image", &image))
            .await
            .map_err(|e| {
                openraft::StorageIOError::new(
                    subject(),
                    ErrorVerb::Write,
                    openraft::AnyError::new(&e),
                )
            })?
            .map_err(|e| storage_error(subject(), ErrorVerb::Write, &e))?;
        let (bytes, encoded) = (data.len(), started.elapsed());
        let stored_meta = meta.clone();
        let data = self
            .writer
            .call(|done| Op::PutSnapshot {
                meta: stored_meta,
                data,
                keep_newer: true,
                done,
            })
            .await
            .map_err(|e| storage_error(subject(), ErrorVerb::Write, &e))?;
        // A snapshot's write holds the log's writes on this node meanwhile: worth seeing.
        tracing::info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            instances,
            bytes,
            encode_ms = encoded.as_millis() as u64,
            write_ms = (started.elapsed() - encoded).as_millis() as u64,
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut replies = Vec::with_capacity(entries.size_hint().0);
        for entry in entries {
            let index = entry.log_id.index;
            let reply = match entry.payload {
                EntryPayload::Normal(command) => self.machine.apply(index, &command),
                EntryPayload::Blank => {
                    self.machine.applied(index);
                    Reply::Nothing
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    self.machine.applied(index);
                    Reply::Nothing
                }
            };
            self.last_applied = Some(entry.log_id);
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // On the state machine's task, between applies: the export is exactly the state at
        // `last_applied`.
        SnapshotBuilder {
            image: self.machine.export(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            writer: self.writer.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let image: Image = decode(SNAPSHOT_DATA_KEY, &data)
            .map_err(|e| storage_error(subject(), ErrorVerb::Read, &e))?;
        // Stored before the state is replaced: if storing fails, openraft stops this node with
        // the state machine still consistent with its last_applied.
        let stored_meta = meta.clone();
        self.writer
            .call(|done| Op::PutSnapshot {
                meta: stored_meta,
                data,
                keep_newer: false,
                done,
            })
            .await
            .map_err(|e| storage_error(subject(), ErrorVerb::Write, &e))?;
        self.machine
            .restore(image, meta.last_log_id.map_or(0, |id| id.index));
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = self
            .writer
            .call(|done| Op::GetSnapshot { done })
            .await
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e))?;
        Ok(match stored {
            // A converted single-node store is the state before the log, not a snapshot of it.
            Some((meta, data)) if meta.last_log_id.is_some() => Some(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }),
            _ => None,
        })
    }
}
