//! `bench`: one scenario, N connections, bounded by time and count, reported as one markdown
//! table row so that runs paste straight into `BENCHMARKS.md`.

use std::time::{Duration, Instant};

use crate::{
    Error,
    client::{Plan, Tally, Target, drive},
    procfs::CpuUse,
    scenario::{self, MAX_UNIQUE, Scenario},
};

/// The header that goes above [`run`]'s rows.
/// `server` and `load-gen` are CPU µs per request; `other CPU` is the share of the machine used by
/// other processes during the run (high means the figures are disturbed).
pub(crate) const HEADER: &str = "| target | scenario | conns | requests | errors | req/s | p50 ms | p99 ms | server µs/req | load-gen µs/req | other CPU |\n\
                                 | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The server, as `http://127.0.0.1:PORT`.
    #[arg(long)]
    target: Target,
    /// What to repeat.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Concurrent keep-alive connections, one per worker.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to send for, as `10s`.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Stop after this many requests even if time remains.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// Instances per request in the `heartbeat-batch` scenario.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=waypost_model::limits::MAX_BATCH_HEARTBEAT as u64))]
    batch: u64,
    /// Skip seeding (the target already holds the data set, or is the baseline).
    #[arg(long)]
    no_seed: bool,
    /// The server's process id: adds its CPU time per request to the row. Several (repeated
    /// or comma-separated, as for the nodes of a cluster): their CPU time is added up.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Name of the target in the row.
    #[arg(long, default_value = "target")]
    label: String,
    /// Print the table header before the row.
    #[arg(long)]
    header: bool,
    /// A request slower than this counts as an error.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    request_timeout: Duration,
}

/// Seeds (unless told not to), runs the scenario and prints its row on stdout.
pub(crate) async fn run(args: BenchArgs) -> Result<(), Error> {
    if args.concurrency == 0 || args.concurrency > 1024 {
        return Err("--concurrency must be 1 to 1024".into());
    }
    if args.scenario == Scenario::Register && args.max_requests > MAX_UNIQUE {
        return Err(format!("--max-requests above {MAX_UNIQUE} would repeat addresses").into());
    }
    if !args.no_seed {
        scenario::seed(&args.target, Duration::from_secs(120)).await?;
    }
    let cpu_before = CpuUse::now(&args.pid)?;
    let plan = Plan {
        make: args
            .scenario
            .requests(scenario::run_id(), args.batch as usize),
        deadline: Instant::now() + args.duration,
        max_requests: args.max_requests,
        request_timeout: args.request_timeout,
        record_latency: true,
    };
    let (mut tally, took) = drive(&args.target, args.concurrency, plan).await?;
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
pub(crate) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
