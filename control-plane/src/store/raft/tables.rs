//! The tables, the conversion of a single-node data file, and loading at start-up.

use std::collections::BTreeMap;

use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::{Serialize, de::DeserializeOwned};
use waypost_model::Instance;

use super::{Entries, Stored, StoredVote};
use crate::{
    command::{Image, NodeId},
    store::StoreError,
};

/// Log index → entry JSON.
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// [`VOTE_KEY`], [`COMMITTED_KEY`], [`PURGED_KEY`] → JSON.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The one current snapshot: [`SNAPSHOT_META_KEY`] → meta JSON, [`SNAPSHOT_DATA_KEY`] → data.
pub(super) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

pub(super) const VOTE_KEY: &str = "vote";
pub(super) const COMMITTED_KEY: &str = "committed";
pub(super) const PURGED_KEY: &str = "purged";
pub(super) const SNAPSHOT_META_KEY: &str = "meta";
pub(super) const SNAPSHOT_DATA_KEY: &str = "data";

/// The single-node store's tables: `service/id` → instance JSON, and `epoch`/`revision`.
const OLD_INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const OLD_META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The snapshot id of a converted single-node store (it has no log id).
const CONVERTED: &str = "converted";

/// What the file held at open.
pub(super) struct Disk {
    pub(super) entries: Entries,
    pub(super) vote: Option<StoredVote>,
    pub(super) committed: Option<openraft::LogId<NodeId>>,
    pub(super) purged: Option<openraft::LogId<NodeId>>,
    pub(super) snapshot: Option<Stored>,
}

pub(super) fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

pub(super) fn encode(what: &'static str, value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { what, source })
}

pub(super) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

/// Creates the tables, converting a single-node store first if the file holds one: in one
/// transaction, so that a crash leaves either the old tables or the new ones.
pub(super) fn prepare(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    let names: Vec<String> = txn
        .list_tables()
        .map_err(db_err)?
        .map(|t| t.name().to_owned())
        .collect();
    let has = |name: &str| names.iter().any(|n| n == name);
    if !has(SNAPSHOT.name()) && (has(OLD_INSTANCES.name()) || has(OLD_META.name())) {
        convert(&txn)?;
    }
    txn.open_table(LOG).map_err(db_err)?;
    txn.open_table(META).map_err(db_err)?;
    txn.open_table(SNAPSHOT).map_err(db_err)?;
    txn.commit().map_err(db_err)?;
    Ok(())
}

/// Turns the single-node tables into a snapshot without a log id (the registry starts from
/// it; the first log entry of the new cluster follows it) and drops them.
fn convert(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut image = Image::default();
    {
        let meta = txn.open_table(OLD_META).map_err(db_err)?;
        let get = |k: &str| -> Result<u64, StoreError> {
            Ok(meta.get(k).map_err(db_err)?.map_or(0, |v| v.value()))
        };
        image.epoch = get("epoch")?;
        image.revision = get("revision")?;
        let instances = txn.open_table(OLD_INSTANCES).map_err(db_err)?;
        for row in instances.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let instance: Instance = decode(k.value(), v.value())?;
            image.instances.push(std::sync::Arc::new(instance));
        }
    }
    txn.delete_table(OLD_INSTANCES).map_err(db_err)?;
    txn.delete_table(OLD_META).map_err(db_err)?;
    let meta = openraft::SnapshotMeta::<NodeId, openraft::BasicNode> {
        last_log_id: None,
        last_membership: openraft::StoredMembership::default(),
        snapshot_id: CONVERTED.to_owned(),
    };
    let mut table = txn.open_table(SNAPSHOT).map_err(db_err)?;
    table
        .insert(
            SNAPSHOT_META_KEY,
            encode("snapshot meta", &meta)?.as_slice(),
        )
        .map_err(db_err)?;
    table
        .insert(SNAPSHOT_DATA_KEY, encode("image", &image)?.as_slice())
        .map_err(db_err)?;
    tracing::info!(
        instances = image.instances.len(),
        revision = image.revision,
        "converted the single-node store"
    );
    Ok(())
}

/// Reads everything the store keeps in memory, and the stored snapshot.
pub(super) fn load(db: &Database) -> Result<Disk, StoreError> {
    use redb::ReadableDatabase;

    let txn = db.begin_read().map_err(db_err)?;
    let mut entries = BTreeMap::new();
    for row in txn
        .open_table(LOG)
        .map_err(db_err)?
        .iter()
        .map_err(db_err)?
    {
        let (k, v) = row.map_err(db_err)?;
        let index = k.value();
        entries.insert(index, decode(&format!("raft_log/{index}"), v.value())?);
    }
    let meta = txn.open_table(META).map_err(db_err)?;
    let vote = read(&meta, VOTE_KEY)?;
    let committed = read(&meta, COMMITTED_KEY)?.flatten();
    let purged = read(&meta, PURGED_KEY)?;
    let snapshot = read_snapshot(&txn.open_table(SNAPSHOT).map_err(db_err)?)?;
    Ok(Disk {
        entries,
        vote,
        committed,
        purged,
        snapshot,
    })
}

/// The stored snapshot, if there is one.
pub(super) fn read_snapshot(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<Stored>, StoreError> {
    let Some(meta) = read(table, SNAPSHOT_META_KEY)? else {
        return Ok(None);
    };
    // Written in the same transaction as the meta; were it missing, the empty data would fail
    // to parse as an image where it is used.
    let data = table
        .get(SNAPSHOT_DATA_KEY)
        .map_err(db_err)?
        .map(|v| v.value().to_vec())
        .unwrap_or_default();
    Ok(Some((meta, data)))
}

/// The meta of the stored snapshot, without its data.
pub(super) fn read_snapshot_meta(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<openraft::SnapshotMeta<NodeId, openraft::BasicNode>>, StoreError> {
    read(table, SNAPSHOT_META_KEY)
}

fn read<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(key).map_err(db_err)? {
        Some(v) => decode(key, v.value()).map(Some),
        None => Ok(None),
    }
}
