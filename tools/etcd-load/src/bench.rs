//! `bench`: N clients repeat one etcd operation, bounded by time and count; one markdown row
//! with the columns of `waypost-load bench`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use etcd_client::{Client, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions};

use crate::{
    Endpoint, Error, SEED_INSTANCES, SEED_SERVICES, connect, instance_value, procfs::CpuUse,
    seed_service,
};

/// Registrations a run may make: addresses are unique below this count.
const MAX_UNIQUE: u64 = 1 << 23;

/// What the load repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// Lease grant, then a put of a new instance's key with that lease.
    Register,
    /// One keep-alive round trip on a seeded lease, cycling over them.
    Heartbeat,
    /// A linearizable range over a seeded service's prefix (10 keys), cycling over them.
    Discover,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Heartbeat => "heartbeat",
            Self::Discover => "discover",
        }
    }
}

/// How the clients reach etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Connections {
    /// One client shared by every worker, its requests multiplexed on one HTTP/2 connection,
    /// as etcd's own client does. On this machine etcd served more operations per second so.
    Shared,
    /// One client (one HTTP/2 connection) per worker, like `waypost-load`'s one HTTP/1.1
    /// connection per worker.
    PerClient,
}

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// etcd client URLs, comma-separated; one pins the load to that member.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<Endpoint>,
    /// What to repeat.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Concurrent workers, each with one request outstanding.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to send for, as `10s`.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Stop after this many operations even if time remains.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// The servers' process ids (comma-separated): their CPU time per operation goes in the row.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Name of the target in the row.
    #[arg(long, default_value = "etcd")]
    label: String,
    /// Print the table header before the row.
    #[arg(long)]
    header: bool,
    /// An operation slower than this counts as an error.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    request_timeout: Duration,
    /// TTL of the leases `register` grants, in seconds.
    #[arg(long, default_value_t = 30)]
    ttl: i64,
    /// One connection for all workers, or one per worker.
    #[arg(long, value_enum, default_value = "shared")]
    connections: Connections,
}

/// The header above the rows (the columns of `waypost-load bench`).
const HEADER: &str = "| target | scenario | conns | requests | errors | req/s | p50 ms | p99 ms | server µs/req | load-gen µs/req | other CPU |\n\
                      | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";

/// One worker's means of doing its operation.
enum Op {
    Register {
        client: Client,
        run: u64,
        ttl: i64,
    },
    Discover {
        client: Client,
    },
    Heartbeat {
        keepers: Vec<(LeaseKeeper, LeaseKeepAliveStream)>,
        next: usize,
    },
}

impl Op {
    /// Operation number `n` (numbered across all workers).
    async fn once(&mut self, n: u64) -> Result<(), String> {
        match self {
            Self::Register { client, run, ttl } => {
                let service = format!("reg-{:03}", n % 100);
                let address = unique_address(n, *run);
                let lease = client
                    .lease_grant(*ttl, None)
                    .await
                    .map_err(|e| format!("lease grant: {e}"))?
                    .id();
                client
                    .put(
                        format!("/services/{service}/{address}"),
                        instance_value(&service, &address, *ttl),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                    .await
                    .map_err(|e| format!("put: {e}"))?;
                Ok(())
            }
            Self::Discover { client } => {
                let service = seed_service(n % SEED_SERVICES);
                let got = client
                    .get(
                        format!("/services/{service}/"),
                        Some(GetOptions::new().with_prefix()),
                    )
                    .await
                    .map_err(|e| format!("range: {e}"))?;
                if got.kvs().len() as u64 != SEED_INSTANCES {
                    return Err(format!(
                        "{service}: {} instances, not {SEED_INSTANCES}",
                        got.kvs().len()
                    ));
                }
                Ok(())
            }
            Self::Heartbeat { keepers, next } => {
                let this = *next;
                *next = (this + 1) % keepers.len();
                let (keeper, stream) = &mut keepers[this];
                keeper
                    .keep_alive()
                    .await
                    .map_err(|e| format!("keep-alive: {e}"))?;
                match stream.message().await {
                    Ok(Some(answer)) if answer.ttl() > 0 => Ok(()),
                    Ok(Some(_)) => Err(format!("lease {:x} expired", keeper.id())),
                    Ok(None) => Err("keep-alive stream ended".to_owned()),
                    Err(e) => Err(format!("keep-alive: {e}")),
                }
            }
        }
    }
}

/// Address number `n` in 10.128.0.0/9, the port from `run` (as `waypost-load`).
fn unique_address(n: u64, run: u64) -> String {
    let n = n % MAX_UNIQUE;
    format!(
        "10.{}.{}.{}:{}",
        128 + (n >> 16),
        (n >> 8) & 0xff,
        n & 0xff,
        1024 + run % 60_000
    )
}

/// What the workers saw, merged.
#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    latencies_ns: Vec<u64>,
    first_error: Option<String>,
}

/// Prepares the workers (connections, keep-alive streams), runs them and prints the row.
pub(crate) async fn run(args: BenchArgs) -> Result<(), Error> {
    if args.concurrency == 0 || args.concurrency > 1024 {
        return Err("--concurrency must be 1 to 1024".into());
    }
    if args.scenario == Scenario::Register && args.max_requests > MAX_UNIQUE {
        return Err(format!("--max-requests above {MAX_UNIQUE} would repeat addresses").into());
    }
    let mut clients = Vec::with_capacity(args.concurrency);
    let shared = connect(&args.endpoints).await?;
    for _ in 0..args.concurrency {
        clients.push(match args.connections {
            Connections::Shared => shared.clone(),
            Connections::PerClient => connect(&args.endpoints).await?,
        });
    }
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ops = match args.scenario {
        Scenario::Register => clients
            .into_iter()
            .map(|client| Op::Register {
                client,
                run: run_id,
                ttl: args.ttl,
            })
            .collect(),
        Scenario::Discover => clients
            .into_iter()
            .map(|client| Op::Discover { client })
            .collect(),
        Scenario::Heartbeat => keepers(shared, clients).await?,
    };

    let cpu_before = CpuUse::now(&args.pid)?;
    let deadline = Instant::now() + args.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = ops
        .into_iter()
        .map(|op| {
            let issued = issued.clone();
            let (max, timeout) = (args.max_requests, args.request_timeout);
            tokio::spawn(worker(op, deadline, max, timeout, issued))
        })
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        let t = w.await?;
        tally.requests += t.requests;
        tally.errors += t.errors;
        tally.latencies_ns.extend(t.latencies_ns);
        if tally.first_error.is_none() {
            tally.first_error = t.first_error;
        }
    }
    let took = started.elapsed();
    let cpu = CpuUse::now(&args.pid)?.since(&cpu_before);
    if let Some(first) = &tally.first_error {
        eprintln!("{} errors; the first: {first}", tally.errors);
    }
    if args.header {
        println!("{HEADER}");
    }
    println!("{}", row(&args, &mut tally, took, &cpu));
    Ok(())
}

/// Opens a keep-alive stream for every seeded lease, each on the client of the worker that
/// will use it (worker `w` takes leases `w`, `w + N`, ...). The opening round trips are not
/// measured.
async fn keepers(mut shared: Client, clients: Vec<Client>) -> Result<Vec<Op>, Error> {
    let seeded = shared
        .get(
            "/services/svc-",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    let leases: Vec<i64> = seeded
        .kvs()
        .iter()
        .map(|kv| kv.lease())
        .filter(|l| *l != 0)
        .collect();
    if (leases.len() as u64) < SEED_SERVICES * SEED_INSTANCES {
        return Err(format!(
            "{} seeded leases found: run `etcd-load seed` first",
            leases.len()
        )
        .into());
    }
    let workers = clients.len();
    let mut ops = Vec::with_capacity(workers);
    for (w, mut client) in clients.into_iter().enumerate() {
        let mut keepers = Vec::new();
        for lease in leases.iter().skip(w).step_by(workers) {
            keepers.push(client.lease_keep_alive(*lease).await?);
        }
        if keepers.is_empty() {
            return Err("more workers than seeded leases".into());
        }
        ops.push(Op::Heartbeat { keepers, next: 0 });
    }
    Ok(ops)
}

async fn worker(
    mut op: Op,
    deadline: Instant,
    max_requests: u64,
    timeout: Duration,
    issued: Arc<AtomicU64>,
) -> Tally {
    let mut tally = Tally::default();
    tally.latencies_ns.reserve(4096);
    while Instant::now() < deadline {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if n >= max_requests {
            break;
        }
        let sent = Instant::now();
        let outcome = tokio::time::timeout(timeout, op.once(n)).await;
        let took = sent.elapsed();
        tally.requests += 1;
        let timed_out = outcome.is_err();
        let failure = match outcome {
            Ok(Ok(())) => {
                tally.latencies_ns.push(took.as_nanos() as u64);
                None
            }
            Ok(Err(why)) => {
                tally.latencies_ns.push(took.as_nanos() as u64);
                Some(why)
            }
            Err(_) => Some(format!("timed out after {took:?}")),
        };
        if let Some(why) = failure {
            tally.errors += 1;
            tally.first_error.get_or_insert(why);
            // A keep-alive stream whose answer is late would hand it to the next request: stop.
            if timed_out && matches!(op, Op::Heartbeat { .. }) {
                break;
            }
        }
    }
    tally
}

fn row(args: &BenchArgs, tally: &mut Tally, took: Duration, cpu: &CpuUse) -> String {
    tally.latencies_ns.sort_unstable();
    let ms = |p: f64| {
        percentile(&tally.latencies_ns, p)
            .map_or("-".to_owned(), |ns| format!("{:.3}", ns as f64 / 1e6))
    };
    let rate = tally.requests as f64 / took.as_secs_f64().max(1e-9);
    let per_req = |t: Option<Duration>| match t {
        Some(t) if tally.requests > 0 => {
            format!("{:.1}", t.as_secs_f64() * 1e6 / tally.requests as f64)
        }
        _ => "-".to_owned(),
    };
    let cores = crate::procfs::machine_cpus() as f64;
    let other = 100.0 * cpu.other().as_secs_f64() / (cores * took.as_secs_f64().max(1e-9));
    format!(
        "| {} | {} | {} | {} | {} | {rate:.0} | {} | {} | {} | {} | {other:.0}% |",
        args.label,
        args.scenario.name(),
        args.concurrency,
        tally.requests,
        tally.errors,
        ms(0.50),
        ms(0.99),
        per_req(cpu.server),
        per_req(Some(cpu.load)),
    )
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn register_addresses_are_distinct() {
        let a: std::collections::HashSet<_> = (0..5000).map(|n| unique_address(n, 3)).collect();
        assert_eq!(a.len(), 5000);
    }
}
