//! `store-read`: how fast redb reads N instance records on this machine, the yardstick for the
//! control plane's start-up (`tools/startup-bench.sh`). It writes N registered-instance records,
//! as JSON of the size the control plane stores, into a fresh redb file in one transaction,
//! drops the database, and then times opening it again and reading every record back: raw
//! (bytes only), and decoded into [`Instance`]s. It does the same for one value holding all N
//! as a JSON array, the shape of the control plane's stored snapshot.
//!
//! The file is read from the page cache, as a restarted control plane reads its own file (the
//! kernel still holds it): the figures are redb and JSON, not the disk.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use waypost_model::Instance;

use crate::Error;

/// One record per instance, keyed `service/id` (as the single-node store kept them).
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// One value holding every instance, as the snapshot does.
const BLOB: TableDefinition<&str, &[u8]> = TableDefinition::new("blob");

/// Arguments of `store-read`.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreReadArgs {
    /// Records to write and read back (at most 1,000,000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    records: u32,
    /// Instances per service in the records' names.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    per_service: u32,
    /// A directory for the file (removed afterwards); the system's temporary directory if
    /// not given.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Times to repeat the reads (the best is printed, and each on stderr).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
}

/// An instance record as the control plane stores it (fields as registered, with its
/// timestamps and revision).
fn record(n: u32, per_service: u32) -> serde_json::Value {
    let (s, i) = (n / per_service, n % per_service);
    let host = format!("10.{}.{}.{}", (s >> 8) & 0xff, s & 0xff, i + 1);
    serde_json::json!({
        "id": format!("{host}:8000"), "service": format!("svc-{s:05}"),
        "address": format!("{host}:8000"), "host": host, "port": 8000,
        "tags": [], "metadata": {}, "weight": 1, "status": "up", "health": "passing",
        "ttl_seconds": 86_400, "registered_at": "2026-11-23T00:00:00Z",
        "status_since": "2026-11-23T00:00:00Z", "health_since": "2026-11-23T00:00:00Z",
        "revision": n + 1
    })
}

/// One round's times.
#[derive(Debug, Clone, Copy)]
struct Times {
    open: Duration,
    raw: Duration,
    decoded: Duration,
    blob_raw: Duration,
    blob_decoded: Duration,
}

pub(crate) fn run(args: &StoreReadArgs) -> Result<(), Error> {
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let path = dir.path().join("read.redb");
    let n = args.records;
    let (bytes, blob_bytes) = write(&path, n, args.per_service)?;
    let mut best: Option<Times> = None;
    for round in 1..=args.rounds {
        let t = read(&path, n)?;
        eprintln!("round {round}: {t:?}");
        best = Some(match best {
            None => t,
            Some(b) => Times {
                open: b.open.min(t.open),
                raw: b.raw.min(t.raw),
                decoded: b.decoded.min(t.decoded),
                blob_raw: b.blob_raw.min(t.blob_raw),
                blob_decoded: b.blob_decoded.min(t.blob_decoded),
            },
        });
    }
    let t = best.ok_or("no round ran")?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rate = |d: Duration| f64::from(n) / d.as_secs_f64().max(1e-9);
    let mib_s = |b: usize, d: Duration| b as f64 / 1048576.0 / d.as_secs_f64().max(1e-9);
    println!(
        "| read | records | MiB | ms | records/s | MiB/s |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    );
    let mib = |b: usize| b as f64 / 1048576.0;
    println!("| open the file | - | - | {:.1} | - | - |", ms(t.open));
    for (what, b, d) in [
        ("one record each, bytes only", bytes, t.raw),
        ("one record each, decoded", bytes, t.decoded),
        ("one value for all, bytes only", blob_bytes, t.blob_raw),
        ("one value for all, decoded", blob_bytes, t.blob_decoded),
    ] {
        println!(
            "| {what} | {n} | {:.1} | {:.1} | {:.0} | {:.0} |",
            mib(b),
            ms(d),
            rate(d),
            mib_s(b, d)
        );
    }
    Ok(())
}

/// Writes the records and the blob; returns their sizes in bytes.
fn write(path: &std::path::Path, n: u32, per_service: u32) -> Result<(usize, usize), Error> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    let mut bytes = 0;
    let mut all = Vec::with_capacity(n as usize);
    {
        let mut table = txn.open_table(RECORDS)?;
        for i in 0..n {
            // Through `Instance`, so the bytes are what the control plane would write.
            let instance: Instance = serde_json::from_value(record(i, per_service))?;
            let key = format!("{}/{}", instance.service.as_str(), instance.id.as_str());
            let json = serde_json::to_vec(&instance)?;
            bytes += json.len();
            table.insert(key.as_str(), json.as_slice())?;
            all.push(instance);
        }
    }
    let blob = serde_json::to_vec(&all)?;
    txn.open_table(BLOB)?.insert("all", blob.as_slice())?;
    txn.commit()?;
    Ok((bytes, blob.len()))
}

/// Opens the file and reads it back in each form.
fn read(path: &std::path::Path, n: u32) -> Result<Times, Error> {
    let started = Instant::now();
    let db = Database::open(path)?;
    let open = started.elapsed();
    let txn = db.begin_read()?;

    let started = Instant::now();
    let mut seen = 0u64;
    for row in txn.open_table(RECORDS)?.iter()? {
        let (k, v) = row?;
        seen += (k.value().len() + v.value().len()) as u64;
    }
    let raw = started.elapsed();
    std::hint::black_box(seen);

    let started = Instant::now();
    let mut decoded = Vec::with_capacity(n as usize);
    for row in txn.open_table(RECORDS)?.iter()? {
        let (_, v) = row?;
        decoded.push(serde_json::from_slice::<Instance>(v.value())?);
    }
    let decoded_took = started.elapsed();
    if decoded.len() != n as usize {
        return Err(format!("read {} records of {n}", decoded.len()).into());
    }
    drop(decoded);

    let started = Instant::now();
    let blob = txn
        .open_table(BLOB)?
        .get("all")?
        .map(|v| v.value().to_vec())
        .ok_or("the blob is missing")?;
    let blob_raw = started.elapsed();
    let started = Instant::now();
    let all: Vec<Instance> = serde_json::from_slice(&blob)?;
    let blob_decoded = started.elapsed() + blob_raw;
    if all.len() != n as usize {
        return Err(format!("decoded {} instances of {n}", all.len()).into());
    }
    Ok(Times {
        open,
        raw,
        decoded: decoded_took,
        blob_raw,
        blob_decoded,
    })
}
