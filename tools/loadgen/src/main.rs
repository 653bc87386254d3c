//! `waypost-load`: measures the control plane (issue 2), the sidecar's DNS (issue 4) and how
//! fast a write reaches every sidecar (issue 15), so that the targets in `BENCHMARKS.md` are
//! figures anyone can reproduce with `tools/bench.sh`, `tools/dns-bench.sh` and
//! `tools/propagation-bench.sh`, not impressions.
//!
//! Subcommands:
//! - `seed`: registers 100 services x 10 instances, the data set every read scenario uses.
//! - `bench`: N keep-alive connections repeat one scenario's request, bounded by time and count,
//!   and print one markdown table row (requests, errors, req/s, p50, p99, CPU per request of the
//!   server and of the load generator, and how busy the rest of the machine was).
//! - `baseline`: a bare axum server answering the same routes with bytes captured from a real
//!   control plane, doing no registry work: the yardstick for "at least 70% of a bare handler".
//! - `memory`: registers many instances and reports the server's resident memory per instance.
//! - `backend`: a bare upstream for the proxy benchmark (`tools/proxy-bench.sh`).
//! - `dns-seed`: registers N services x 2 instances and writes the same names for dnsmasq, a
//!   zone file for knot and unbound, and the query files for dnsperf.
//! - `propagation`: times register-acknowledged to answered-by-the-sidecar, p50/p99/max.
//! - `propagated`: times `POST /register?wait=propagated` until every sidecar has applied it,
//!   against the same registration without the wait (`tools/propagation-bench.sh`).
//! - `watchers`: holds thousands of `/watch` streams and times each change until the last
//!   stream that should get it has it (`tools/fanout-bench.sh`, issue 18).
//! - `failover`: kills a cluster's leader and times the first write a survivor acknowledges
//!   (`tools/cluster-bench.sh`).
//! - `store-read`: how fast redb reads 100,000 instance records here, the yardstick for the
//!   control plane's start-up (`tools/startup-bench.sh`).
//!
//! The tool only talks to loopback addresses: it is a benchmark, not a way to load someone else's
//! server.

mod backend;
mod baseline;
mod bench;
mod client;
mod dns;
mod failover;
mod fanout;
mod memory;
mod procfs;
mod propagated;
mod scenario;
mod store_read;

use std::{net::SocketAddr, time::Duration};

use clap::{Parser, Subcommand};

use crate::client::Target;

/// A tool reports an error and exits; nothing matches on its errors, so one boxed type is enough.
type Error = Box<dyn std::error::Error + Send + Sync>;

/// Load generator and measurements for the Waypost control plane.
#[derive(Debug, Parser)]
#[command(name = "waypost-load", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register the benchmark data set: 100 services x 10 instances (idempotent).
    Seed {
        /// The control plane, as `http://127.0.0.1:PORT`.
        #[arg(long)]
        target: Target,
    },
    /// Run one scenario and print one markdown table row.
    Bench(bench::BenchArgs),
    /// Serve the scenario routes with captured bodies and no registry work.
    Baseline {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// A seeded control plane to capture the answer bodies from, as `http://127.0.0.1:PORT`.
        #[arg(long)]
        capture_from: Target,
    },
    /// Register many instances and report the server's resident memory per instance.
    Memory(memory::MemoryArgs),
    /// Serve a bare upstream for the proxy benchmark (same small body for every request).
    Backend {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Register N services for the DNS benchmark and write dnsmasq's, knot's and unbound's (a
    /// zone file) and dnsperf's files.
    DnsSeed(dns::SeedArgs),
    /// Time register-to-DNS-answer through a sidecar (p50/p99 over many trials).
    Propagation(dns::PropagationArgs),
    /// Kill a cluster's leader and time the first write acknowledged after it.
    Failover(failover::FailoverArgs),
    /// Hold many `/watch` streams and time each change until every stream that should has it.
    Watchers(fanout::WatchersArgs),
    /// Time register-to-all-sidecars-applied (`?wait=propagated`) against a plain register.
    Propagated(propagated::PropagatedArgs),
    /// Time redb reading N instance records back (raw and decoded), for the start-up target.
    StoreRead(store_read::StoreReadArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Seed { target } => scenario::seed(&target, Duration::from_secs(120)).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Baseline {
            listen,
            capture_from,
        } => baseline::serve(listen, &capture_from).await,
        Command::Memory(args) => memory::run(args).await,
        Command::DnsSeed(args) => dns::seed(args).await,
        Command::Backend { listen } => backend::serve(listen).await,
        Command::Propagation(args) => dns::propagation(args).await,
        Command::Failover(args) => failover::run(args).await,
        Command::Propagated(args) => propagated::run(args).await,
        Command::Watchers(args) => fanout::run(args).await,
        Command::StoreRead(args) => store_read::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("waypost-load: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses a duration such as `10s` or `500ms` for clap.
fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
