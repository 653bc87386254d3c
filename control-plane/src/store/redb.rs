//! The one file that knows the embedded database. redb: pure Rust (no C toolchain, no
//! separate server), ACID with copy-on-write pages and a checksummed commit, so a `kill -9` at
//! any moment leaves the last committed transaction intact.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use waypost_model::{Instance, Revision};

use super::{Loaded, StoreError, StoreOp, key};

/// `service/id` → instance JSON.
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
/// `revision` and `epoch`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) struct Db(Database);

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

impl Db {
    pub(super) fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(db_err)?;
        // Create the tables and the epoch on first open.
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(INSTANCES).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            if meta.get("epoch").map_err(db_err)?.is_none() {
                meta.insert("epoch", rand::random::<u64>())
                    .map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(Self(db))
    }

    pub(super) fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.0.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let get = |k: &str| -> Result<u64, StoreError> {
            Ok(meta.get(k).map_err(db_err)?.map(|v| v.value()).unwrap_or(0))
        };
        let epoch = get("epoch")?;
        let revision = get("revision")?;
        let table = txn.open_table(INSTANCES).map_err(db_err)?;
        let mut instances = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let instance: Instance =
                serde_json::from_slice(v.value()).map_err(|source| StoreError::Corrupt {
                    key: k.value().to_owned(),
                    source,
                })?;
            instances.push(instance);
        }
        Ok(Loaded {
            epoch,
            revision,
            instances,
        })
    }

    /// Applies `ops` (in revision order) in one durable transaction.
    pub(super) fn commit(&self, ops: &[(Revision, StoreOp)]) -> Result<(), StoreError> {
        let txn = self.0.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(INSTANCES).map_err(db_err)?;
            let mut buf = Vec::with_capacity(512);
            for (_, op) in ops {
                match op {
                    StoreOp::Put(i) => {
                        buf.clear();
                        serde_json::to_writer(&mut buf, &**i).map_err(|source| {
                            StoreError::Corrupt {
                                key: key(i.service.as_str(), i.id.as_str()),
                                source,
                            }
                        })?;
                        table
                            .insert(
                                key(i.service.as_str(), i.id.as_str()).as_str(),
                                buf.as_slice(),
                            )
                            .map_err(db_err)?;
                    }
                    StoreOp::Delete(k) => {
                        table.remove(k.as_str()).map_err(db_err)?;
                    }
                }
            }
            if let Some((last, _)) = ops.last() {
                let mut meta = txn.open_table(META).map_err(db_err)?;
                meta.insert("revision", *last).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(())
    }
}
