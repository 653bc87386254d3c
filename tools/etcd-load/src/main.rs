//! `etcd-load`: the etcd side of the cluster benchmark (`tools/cluster-bench.sh`, issue 13). It
//! puts the same load shapes on etcd, through its gRPC API, that `waypost-load` puts on
//! Waypost, and prints rows with the same columns, so that the two sit side by side.
//!
//! Subcommands:
//! - `seed`: 100 services x 10 instances under `/services/svc-NNN/<address>`, each key on a
//!   lease of its own (one hour), as Waypost's seeded instances each have a TTL.
//! - `bench`: N concurrent clients repeat one operation, bounded by time and count, and print
//!   one markdown row: `register` (lease grant + put with the lease), `discover` (linearizable
//!   prefix range over a seeded service), `heartbeat` (one keep-alive round trip on a seeded
//!   lease).
//! - `leader`: which endpoint leads, and the Raft term.
//! - `failover`: kills the leader with `kill -9` and times the first put a survivor
//!   acknowledges.
//! - `wait-leases`: waits until at most N leases are left (the benchmark's registrations
//!   expire between runs).
//!
//! It only talks to loopback endpoints.

mod bench;
mod failover;
mod procfs;

use std::{net::SocketAddr, time::Duration};

use clap::{Parser, Subcommand};
use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions};

/// A tool reports an error and exits; nothing matches on its errors.
type Error = Box<dyn std::error::Error + Send + Sync>;

/// Services in the seeded data set (as `waypost-load seed`).
const SEED_SERVICES: u64 = 100;
/// Instances per seeded service.
const SEED_INSTANCES: u64 = 10;
/// TTL of the seeded leases, in seconds: nothing expires while a measurement runs.
const SEED_TTL: i64 = 3600;

/// Load generator for etcd, the peer in Waypost's cluster benchmark.
#[derive(Debug, Parser)]
#[command(name = "etcd-load", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Put the benchmark data set: 100 services x 10 instances, a lease each (idempotent).
    Seed {
        /// etcd client URLs, comma-separated, as `http://127.0.0.1:PORT`.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<Endpoint>,
    },
    /// Run one operation from N clients and print one markdown row.
    Bench(bench::BenchArgs),
    /// Print the leader's client URL and the Raft term.
    Leader {
        /// Every member's client URL, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<Endpoint>,
    },
    /// Kill the leader and time the first put acknowledged after it.
    Failover(failover::FailoverArgs),
    /// Wait until at most N leases are left.
    WaitLeases {
        /// etcd client URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<Endpoint>,
        /// Done when this many leases or fewer are left.
        #[arg(long)]
        at_most: usize,
        /// Fail after this long.
        #[arg(long, default_value = "180s", value_parser = parse_duration)]
        limit: Duration,
    },
}

/// An etcd client URL on a loopback address.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint(String);

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s:?}: give endpoints as http://127.0.0.1:PORT"))?;
        let addr: SocketAddr = rest
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("{s:?}: expected http://IP:PORT ({e})"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{s:?}: this tool only loads loopback addresses"));
        }
        Ok(Self(format!("http://{addr}")))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client of `endpoints` (etcd-client balances over them; one endpoint pins the client to
/// that member).
pub(crate) async fn connect(endpoints: &[Endpoint]) -> Result<Client, Error> {
    let urls: Vec<&str> = endpoints.iter().map(|e| e.0.as_str()).collect();
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(3));
    Ok(Client::connect(urls, Some(options)).await?)
}

/// Name of seeded service `s` (as `waypost-load`).
pub(crate) fn seed_service(s: u64) -> String {
    format!("svc-{s:03}")
}

/// Address of instance `i` of seeded service `s` (as `waypost-load`).
fn seed_address(s: u64, i: u64) -> String {
    format!("10.1.{s}.{}:8080", i + 1)
}

/// The value stored for an instance: the JSON Waypost keeps for one instance (the same fields
/// as in its `/register` answer, about 240 bytes), so that both systems store and move as many
/// bytes.
pub(crate) fn instance_value(service: &str, address: &str, ttl: i64) -> String {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "0"));
    format!(
        "{{\"id\":\"{address}\",\"service\":\"{service}\",\"address\":\"{address}\",\
         \"host\":\"{host}\",\"port\":{port},\"tags\":[],\"metadata\":{{}},\"weight\":1,\
         \"status\":\"up\",\"ttl_seconds\":{ttl},\"vip\":\"127.100.0.1\",\
         \"registered_at\":\"2026-11-30T03:27:07.728Z\",\"revision\":1}}"
    )
}

async fn seed(endpoints: &[Endpoint]) -> Result<(), Error> {
    let mut client = connect(endpoints).await?;
    let total = SEED_SERVICES * SEED_INSTANCES;
    let have = client
        .get(
            "/services/svc-",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?
        .count();
    if u64::try_from(have).unwrap_or(0) == total {
        eprintln!("already seeded ({total} instances)");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..16u64 {
        let mut client = client.clone();
        tasks.spawn(async move {
            for k in (part..total).step_by(16) {
                let (s, i) = (k % SEED_SERVICES, k / SEED_SERVICES);
                let (service, address) = (seed_service(s), seed_address(s, i));
                let lease = client.lease_grant(SEED_TTL, None).await?.id();
                client
                    .put(
                        format!("/services/{service}/{address}"),
                        instance_value(&service, &address, SEED_TTL),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                    .await?;
            }
            Ok::<(), etcd_client::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    eprintln!(
        "seeded {SEED_SERVICES} services x {SEED_INSTANCES} instances in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Asks every endpoint for its status and prints the one that leads, and the term.
async fn leader(endpoints: &[Endpoint]) -> Result<(), Error> {
    for endpoint in endpoints {
        let asked = tokio::time::timeout(Duration::from_secs(3), async {
            let mut client = connect(std::slice::from_ref(endpoint)).await?;
            Ok::<_, Error>(client.status().await?)
        })
        .await;
        let Ok(Ok(status)) = asked else { continue };
        let me = status.header().map_or(0, |h| h.member_id());
        if me != 0 && me == status.leader() {
            println!("{endpoint} {}", status.raft_term());
            return Ok(());
        }
    }
    Err("no endpoint says it leads".into())
}

async fn wait_leases(endpoints: &[Endpoint], at_most: usize, limit: Duration) -> Result<(), Error> {
    let mut client = connect(endpoints).await?;
    let started = std::time::Instant::now();
    loop {
        let left = client.leases().await?.leases().len();
        if left <= at_most {
            eprintln!(
                "{left} leases left after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(format!("{left} leases still left after {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Parses a duration such as `10s` or `500ms` for clap.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Seed { endpoints } => seed(&endpoints).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Leader { endpoints } => leader(&endpoints).await,
        Command::Failover(args) => failover::run(args).await,
        Command::WaitLeases {
            endpoints,
            at_most,
            limit,
        } => wait_leases(&endpoints, at_most, limit).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("etcd-load: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn instance_values_are_json_of_waypost_size() {
        // What Waypost answered for this registration (its `instance`), byte for byte.
        let waypost = r#"{"id":"10.1.1.2:8080","service":"svc-001","address":"10.1.1.2:8080","host":"10.1.1.2","port":8080,"tags":[],"metadata":{},"weight":1,"status":"up","ttl_seconds":3600,"vip":"127.100.0.1","registered_at":"2026-11-30T03:27:07.728Z","revision":1}"#;
        assert_eq!(
            super::instance_value("svc-001", "10.1.1.2:8080", 3600),
            waypost
        );
    }

    #[test]
    fn endpoints_are_loopback_only() {
        assert!("http://127.0.0.1:2379".parse::<super::Endpoint>().is_ok());
        assert!("http://10.0.0.1:2379".parse::<super::Endpoint>().is_err());
        assert!("127.0.0.1:2379".parse::<super::Endpoint>().is_err());
    }
}
