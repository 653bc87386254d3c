//! `memory`: how much resident memory the server gains per registered instance. Registers many
//! instances (bounded concurrency, bounded time) and compares the server's `VmRSS` before and
//! after. Run it against a fresh server, so the growth is the registrations and not earlier load.

use std::time::{Duration, Instant};

use crate::{
    Error,
    client::{Plan, Target, drive},
    procfs,
    scenario::{self, MAX_UNIQUE},
};

/// Services the instances are spread over (100 instances each at 100,000 instances).
const SERVICES: u64 = 1000;

/// The header that goes above [`run`]'s rows.
const HEADER: &str = "| target | instances | errors | RSS before MiB | RSS after MiB | bytes/instance |\n\
                      | --- | ---: | ---: | ---: | ---: | ---: |";

/// Arguments of `memory`.
#[derive(Debug, clap::Args)]
pub(crate) struct MemoryArgs {
    /// The server, as `http://127.0.0.1:PORT`.
    #[arg(long)]
    target: Target,
    /// The server's process id (its `/proc/PID/status` is read).
    #[arg(long)]
    pid: u32,
    /// Instances to register.
    #[arg(long, default_value_t = 100_000)]
    instances: u64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Give up registering after this long.
    #[arg(long, default_value = "300s", value_parser = crate::parse_duration)]
    limit: Duration,
    /// Pause between the last registration and the second reading (lets writers settle).
    #[arg(long, default_value = "2s", value_parser = crate::parse_duration)]
    settle: Duration,
    /// Name of the target in the row.
    #[arg(long, default_value = "target")]
    label: String,
    /// Print the table header before the row.
    #[arg(long)]
    header: bool,
}

/// Registers, measures and prints one row on stdout.
pub(crate) async fn run(args: MemoryArgs) -> Result<(), Error> {
    if args.instances == 0 || args.instances > MAX_UNIQUE {
        return Err(format!("--instances must be 1 to {MAX_UNIQUE}").into());
    }
    if args.concurrency == 0 || args.concurrency > 1024 {
        return Err("--concurrency must be 1 to 1024".into());
    }
    let before = procfs::rss_bytes(args.pid)?;
    let run = scenario::run_id();
    let plan = Plan {
        make: Box::new(move |n| scenario::register_new("mem", SERVICES, n, run)),
        deadline: Instant::now() + args.limit,
        max_requests: args.instances,
        request_timeout: Duration::from_secs(10),
        record_latency: false,
    };
    let (tally, took) = drive(&args.target, args.concurrency, plan).await?;
    if let Some(first) = &tally.first_error {
        eprintln!("{} errors; the first: {first}", tally.errors);
    }
    let registered = tally.requests - tally.errors;
    eprintln!(
        "registered {registered} instances in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        registered as f64 / took.as_secs_f64().max(1e-9)
    );
    tokio::time::sleep(args.settle).await;
    let after = procfs::rss_bytes(args.pid)?;
    let per_instance = after.saturating_sub(before) as f64 / registered.max(1) as f64;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    if args.header {
        println!("{HEADER}");
    }
    println!(
        "| {} | {registered} | {} | {:.1} | {:.1} | {per_instance:.0} |",
        args.label,
        tally.errors,
        mib(before),
        mib(after),
    );
    Ok(())
}
