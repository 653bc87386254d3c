use std::{
    collections::BTreeSet,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use openraft::{
    AnyError, BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader,
    RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership, Vote,
    storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine},
    testing::{StoreBuilder, Suite},
};
use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};
use tempfile::TempDir;
use waypost_model::Instance;

use super::{LogStore, StateMachine, Store, StoreHandle};
use crate::{
    command::{Command, Image, Machine, NodeId, Reply, TypeConfig},
    metrics::Metrics,
};

/// Counts what it applies; its state is an image set by the test or restored from a snapshot.
#[derive(Debug, Default)]
struct Counter {
    commands: AtomicU64,
    last_index: AtomicU64,
    image: Mutex<Image>,
}

impl Machine for Counter {
    fn apply(&self, index: u64, _command: &Command) -> Reply {
        self.commands.fetch_add(1, Ordering::SeqCst);
        self.last_index.store(index, Ordering::SeqCst);
        Reply::Nothing
    }

    fn applied(&self, index: u64) {
        self.last_index.store(index, Ordering::SeqCst);
    }

    fn export(&self) -> Image {
        self.image.lock().expect("image lock").clone()
    }

    fn restore(&self, image: Image, index: u64) {
        *self.image.lock().expect("image lock") = image;
        self.last_index.store(index, Ordering::SeqCst);
    }
}

fn split(store: Store, machine: Arc<Counter>) -> (LogStore, StateMachine, StoreHandle) {
    store.into_parts(machine, Arc::new(Metrics::new()))
}

fn open(dir: &Path) -> Store {
    Store::open(Some(dir), 1 << 20).expect("store opens")
}

fn to_storage(e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(e)).into()
}

/// A fresh store in a temporary directory for each of openraft's storage tests.
struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for OnDisk {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| to_storage(&e))?;
        let store = Store::open(Some(dir.path()), 1 << 20).map_err(|e| to_storage(&e))?;
        let (log, sm, _) = split(store, Arc::default());
        Ok((dir, log, sm))
    }
}

/// The same with redb's in-memory backend.
struct InMemory;

impl StoreBuilder<TypeConfig, LogStore, StateMachine> for InMemory {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<NodeId>> {
        let store = Store::open(None, 1 << 20).map_err(|e| to_storage(&e))?;
        let (log, sm, _) = split(store, Arc::default());
        Ok(((), log, sm))
    }
}

#[test]
fn openraft_storage_suite_on_disk() {
    Suite::test_all(OnDisk).expect("openraft's storage suite passes");
}

#[test]
fn openraft_storage_suite_in_memory() {
    Suite::test_all(InMemory).expect("openraft's storage suite passes");
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn command(term: u64, index: u64, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(command),
    }
}

fn membership(voters: &[NodeId]) -> Membership<NodeId, BasicNode> {
    Membership::new(vec![voters.iter().copied().collect::<BTreeSet<_>>()], None)
}

fn membership_entry(term: u64, index: u64, voters: &[NodeId]) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(membership(voters)),
    }
}

fn instance(service: &str, id: &str, revision: u64) -> Instance {
    serde_json::from_value(serde_json::json!({
        "id": id,
        "service": service,
        "address": "10.0.0.1:8080",
        "host": "10.0.0.1",
        "port": 8080,
        "tags": ["blue"],
        "metadata": {"zone": "a"},
        "weight": 1,
        "status": "up",
        "ttl_seconds": 30,
        "registered_at": "2026-01-02T03:04:05.000Z",
        "revision": revision,
    }))
    .expect("instance parses")
}

fn indexes(entries: &[Entry<TypeConfig>]) -> Vec<(u64, u64)> {
    entries
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

#[tokio::test]
async fn the_log_vote_and_committed_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _sm, handle) = split(open(dir.path()), Arc::default());
    log.blocking_append([
        blank(1, 1),
        command(1, 2, Command::Init { epoch: 9 }),
        membership_entry(1, 3, &[1, 2, 3]),
        blank(1, 4),
    ])
    .await
    .expect("append");
    log.save_vote(&Vote::new(2, 2)).await.expect("vote");
    log.save_committed(Some(log_id(1, 2)))
        .await
        .expect("committed");
    // A new leader replaces the uncommitted tail with a shorter one.
    log.truncate(log_id(1, 3)).await.expect("truncate");
    log.blocking_append([blank(2, 3)]).await.expect("append");
    log.purge(log_id(1, 1)).await.expect("purge");
    handle.close().await;
    assert!(!handle.failed());

    // Closed: writes fail, reads of what is in memory still answer.
    assert!(log.blocking_append([blank(2, 4)]).await.is_err());
    assert!(log.save_vote(&Vote::new(3, 3)).await.is_err());
    assert_eq!(log.try_get_log_entries(..).await.expect("read").len(), 2);

    let (mut log, _sm, handle) = split(open(dir.path()), Arc::default());
    let entries = log.try_get_log_entries(..).await.expect("read");
    assert_eq!(indexes(&entries), [(1, 2), (2, 3)]);
    assert_eq!(
        entries[0].payload,
        EntryPayload::Normal(Command::Init { epoch: 9 })
    );
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(2, 3)));
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(2, 2)));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 2))
    );
    let mut reader = log.get_log_reader().await;
    assert_eq!(
        indexes(&reader.try_get_log_entries(3..5).await.expect("read")),
        [(2, 3)]
    );
    handle.close().await;
}

#[tokio::test]
async fn a_committed_log_id_alone_is_written_at_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _sm, handle) = split(open(dir.path()), Arc::default());
    log.blocking_append([blank(1, 1), blank(1, 2)])
        .await
        .expect("append");
    log.save_committed(Some(log_id(1, 2)))
        .await
        .expect("committed");
    handle.close().await;
    let (mut log, _sm, handle) = split(open(dir.path()), Arc::default());
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 2))
    );
    handle.close().await;
}

#[tokio::test]
async fn purging_past_the_last_entry_leaves_the_purged_id_as_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _sm, handle) = split(open(dir.path()), Arc::default());
    log.blocking_append([blank(1, 1), blank(1, 2)])
        .await
        .expect("append");
    log.purge(log_id(2, 7)).await.expect("purge");
    handle.close().await;
    let (mut log, _sm, handle) = split(open(dir.path()), Arc::default());
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 7)));
    assert_eq!(state.last_log_id, Some(log_id(2, 7)));
    assert!(log.try_get_log_entries(..).await.expect("read").is_empty());
    handle.close().await;
}

#[tokio::test]
async fn apply_hands_commands_to_the_machine_and_tracks_membership() {
    let machine = Arc::new(Counter::default());
    let (_log, mut sm, handle) = split(
        Store::open(None, 1 << 20).expect("store opens"),
        machine.clone(),
    );
    let replies = sm
        .apply([
            blank(1, 1),
            membership_entry(1, 2, &[1, 2]),
            command(1, 3, Command::Init { epoch: 5 }),
            command(1, 4, Command::Init { epoch: 5 }),
        ])
        .await
        .expect("apply");
    assert_eq!(replies, vec![Reply::Nothing; 4]);
    assert_eq!(machine.commands.load(Ordering::SeqCst), 2);
    assert_eq!(machine.last_index.load(Ordering::SeqCst), 4);
    let (applied, stored) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 4)));
    assert_eq!(
        stored,
        StoredMembership::new(Some(log_id(1, 2)), membership(&[1, 2]))
    );
    handle.close().await;
}

#[tokio::test]
async fn a_built_snapshot_is_the_image_after_a_reopen_and_installs_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = Image {
        epoch: 0xfeed,
        revision: 12,
        instances: vec![
            Arc::new(instance("api", "a-1", 11)),
            Arc::new(instance("api", "a-2", 12)),
        ],
        ..Image::default()
    };
    let machine = Arc::new(Counter::default());
    *machine.image.lock().expect("image lock") = image.clone();
    let store = open(dir.path());
    assert_eq!(store.image().expect("image").image, Image::default());
    let (_log, mut sm, handle) = split(store, machine);
    assert!(sm.get_current_snapshot().await.expect("read").is_none());
    sm.apply([
        blank(1, 1),
        membership_entry(1, 2, &[1]),
        command(1, 3, Command::Init { epoch: 0xfeed }),
    ])
    .await
    .expect("apply");
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 3)));
    handle.close().await;
    assert!(sm.get_current_snapshot().await.is_err(), "closed");

    let store = open(dir.path());
    let loaded = store.image().expect("image");
    assert_eq!(loaded.image, image);
    assert_eq!(loaded.last_applied, Some(log_id(1, 3)));
    assert_eq!(
        loaded.membership,
        StoredMembership::new(Some(log_id(1, 2)), membership(&[1]))
    );
    let (_log, mut sm, handle) = split(store, Arc::default());
    assert_eq!(
        sm.applied_state().await.expect("applied state"),
        (loaded.last_applied, loaded.membership.clone())
    );
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("a snapshot");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.get_ref(), built.snapshot.get_ref());
    handle.close().await;

    // A follower installs it: the machine gets the image and the index it stands at.
    let follower = Arc::new(Counter::default());
    let (_log, mut sm, handle) = split(
        Store::open(None, 1 << 20).expect("store opens"),
        follower.clone(),
    );
    let mut data = sm.begin_receiving_snapshot().await.expect("begin");
    *data = *current.snapshot;
    sm.install_snapshot(&current.meta, data)
        .await
        .expect("install");
    assert_eq!(*follower.image.lock().expect("image lock"), image);
    assert_eq!(follower.last_index.load(Ordering::SeqCst), 3);
    assert_eq!(
        sm.applied_state().await.expect("applied state").0,
        Some(log_id(1, 3))
    );
    handle.close().await;
}

#[tokio::test]
async fn an_older_snapshot_built_late_does_not_replace_a_newer_one() {
    let (_log, mut sm, handle) = split(
        Store::open(None, 1 << 20).expect("store opens"),
        Arc::default(),
    );
    sm.apply([blank(1, 1)]).await.expect("apply");
    let mut older = sm.get_snapshot_builder().await;
    sm.apply([blank(1, 2)]).await.expect("apply");
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    older.build_snapshot().await.expect("build");
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("a snapshot");
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 2)));
    handle.close().await;
}

/// The single-node store's tables, as it wrote them.
const OLD_INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const OLD_META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[test]
fn a_single_node_data_file_is_converted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(super::FILE);
    let instances = [instance("api", "a-1", 40), instance("web", "w-1", 42)];
    {
        let db = Database::create(&file).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(OLD_INSTANCES).expect("table");
            for i in &instances {
                let json = serde_json::to_vec(i).expect("json");
                table
                    .insert(format!("{}/{}", i.service, i.id).as_str(), json.as_slice())
                    .expect("insert");
            }
            let mut meta = txn.open_table(OLD_META).expect("table");
            meta.insert("epoch", 0xabcd_u64).expect("insert");
            meta.insert("revision", 42_u64).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let want = Image {
        epoch: 0xabcd,
        revision: 42,
        instances: instances.iter().cloned().map(Arc::new).collect(),
        ..Image::default()
    };
    for _ in 0..2 {
        let store = open(dir.path());
        let loaded = store.image().expect("image");
        assert_eq!(loaded.image, want);
        assert_eq!(loaded.last_applied, None);
        assert_eq!(loaded.membership, StoredMembership::default());
        // Dropped without being split: the file is released at once.
    }
    let db = Database::open(&file).expect("open");
    let txn = db.begin_read().expect("read");
    let tables: Vec<String> = txn
        .list_tables()
        .expect("tables")
        .map(|t| t.name().to_owned())
        .collect();
    assert!(
        !tables.iter().any(|t| t == "instances" || t == "meta"),
        "{tables:?}"
    );
}

#[tokio::test]
async fn a_converted_image_is_no_snapshot_for_openraft() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Database::create(dir.path().join(super::FILE)).expect("create");
        let txn = db.begin_write().expect("write");
        txn.open_table(OLD_META)
            .expect("table")
            .insert("epoch", 3_u64)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let store = open(dir.path());
    assert_eq!(store.image().expect("image").image.epoch, 3);
    let (_log, mut sm, handle) = split(store, Arc::default());
    assert!(sm.get_current_snapshot().await.expect("read").is_none());
    assert_eq!(sm.applied_state().await.expect("applied").0, None);
    handle.close().await;
}

#[test]
fn a_new_store_starts_empty_with_epoch_zero() {
    let store = Store::open(None, 1 << 20).expect("store opens");
    let loaded = store.image().expect("image");
    assert_eq!(loaded.image, Image::default());
    assert_eq!(loaded.image.epoch, 0);
    assert_eq!(loaded.last_applied, None);
}

#[tokio::test]
async fn writes_queued_during_a_commit_share_one_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::create(dir.path().join(super::FILE)).expect("create");
    super::tables::prepare(&db).expect("tables");
    let (writer, starter) = super::writer::spawn().expect("thread");
    // Queued before the thread has its database: as if they came in while a commit synced.
    let mut acks = Vec::new();
    for term in 1..=20 {
        let (done, ack) = tokio::sync::oneshot::channel();
        writer
            .send(super::writer::Op::Vote {
                vote: Vote::new(term, 1),
                done,
            })
            .expect("queued");
        acks.push(ack);
    }
    let metrics = Arc::new(Metrics::new());
    starter.start(db, metrics.clone());
    for ack in acks {
        ack.await.expect("answered").expect("durable");
    }
    let commits = metrics
        .render()
        .lines()
        .find_map(|l| {
            l.strip_suffix(" 1")
                .filter(|n| n.contains("store_commits_total"))
        })
        .map(str::to_owned);
    assert!(commits.is_some(), "one commit:\n{}", metrics.render());
    writer.close().await;
    // In order within the transaction: the last vote is the one kept.
    let (mut log, _sm, handle) = split(open(dir.path()), Arc::default());
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(20, 1)));
    handle.close().await;
}

/// redb's in-memory backend, whose syncs and writes fail once `fail` is set.
#[derive(Debug)]
struct Flaky {
    inner: redb::backends::InMemoryBackend,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl Flaky {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            Err(std::io::Error::other("the disk is gone"))
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for Flaky {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[tokio::test]
async fn after_a_failed_commit_the_store_refuses_writes() {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let db = Database::builder()
        .create_with_backend(Flaky {
            inner: redb::backends::InMemoryBackend::new(),
            fail: fail.clone(),
        })
        .expect("create");
    let store = Store::with_database(db).expect("store opens");
    let (mut log, mut sm, handle) = split(store, Arc::default());
    log.blocking_append([blank(1, 1)]).await.expect("append");
    assert!(!handle.failed());

    fail.store(true, Ordering::SeqCst);
    // The entry was readable at once; its callback reports the failed commit.
    assert!(log.blocking_append([blank(1, 2)]).await.is_err());
    assert!(handle.failed());
    fail.store(false, Ordering::SeqCst);
    // Refused from then on, even with the disk back: nothing may land after a lost write.
    assert!(log.blocking_append([blank(1, 3)]).await.is_err());
    assert!(log.save_vote(&Vote::new(1, 1)).await.is_err());
    sm.apply([blank(1, 1)]).await.expect("apply needs no disk");
    assert!(
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .is_err()
    );
    assert_eq!(
        indexes(&log.try_get_log_entries(..).await.expect("read")),
        [(1, 1), (1, 2)]
    );
    // Closing still ends the thread rather than waiting forever.
    handle.close().await;
    assert!(log.blocking_append([blank(1, 3)]).await.is_err());
}
