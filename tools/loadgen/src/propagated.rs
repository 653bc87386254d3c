//! `propagated`: how long a registration takes to reach every sidecar (issue 15), measured as
//! a deploy tool sees it: from sending `POST /register?wait=propagated` to the answer that says
//! `complete`. In the same run, and interleaved with it, the same registration without the
//! wait is the baseline: what the write alone costs.
//!
//! The control plane's `complete` is its own account (the sidecars' reports). To check it from
//! outside, right after each answer every sidecar's DNS is asked once, without retrying, for
//! the new name: after a complete wait every sidecar should already answer it; after the
//! baseline's answer, the count shows what the wait buys.
//!
//! Writes go one after another (one connection), each after a pause (`--gap`), bounded by
//! `--trials` and `--duration`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use hickory_proto::{op::Message, rr::RData};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::{
    Error,
    bench::percentile,
    client::{Call, Conn, Target},
    dns,
    procfs::{self, CpuUse},
};

/// The longest the sidecars may take to show up live in `GET /nodes`.
const NODES_LIMIT: Duration = Duration::from_secs(60);

/// How long one DNS check waits for the sidecars' answers: long enough for a busy machine,
/// short enough not to hold up the run when a sidecar drops a query.
const DNS_CHECK_LIMIT: Duration = Duration::from_millis(500);

/// Instances outlive the run (nothing expires or changes while it is measured).
const TTL_SECONDS: u32 = 3_600;

/// Arguments of `propagated`.
#[derive(Debug, clap::Args)]
pub(crate) struct PropagatedArgs {
    /// The control plane, as `http://127.0.0.1:PORT`.
    #[arg(long)]
    target: Target,
    /// How many sidecars must be live (and caught up) in `GET /nodes` before the clock starts.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    nodes: u32,
    /// A sidecar's DNS address, asked once for the new name after each answer (repeat for each
    /// sidecar; none: no DNS check).
    #[arg(long)]
    dns: Vec<SocketAddr>,
    /// The control plane's process id (CPU time and resident memory).
    #[arg(long)]
    pid: u32,
    /// A sidecar's process id (repeat for each).
    #[arg(long)]
    sidecar_pid: Vec<u32>,
    /// Pairs of registrations (one without the wait, one with it) to time.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=30_000))]
    trials: u32,
    /// No trial starts after this long.
    #[arg(long, default_value = "300s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// The pause before each registration. Above the sidecars' 20 ms between reports, every
    /// write finds them idle (a deploy tool's case); 0 sends the writes back to back.
    #[arg(long, default_value = "50ms", value_parser = crate::parse_duration)]
    gap: Duration,
    /// The wait's `timeout`.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// Names this run's services (`PREFIX-b-N` without the wait, `PREFIX-w-N` with it), so
    /// several runs against one control plane register distinct names.
    #[arg(long, default_value = "prop")]
    prefix: String,
}

/// What one kind of registration saw over the run.
#[derive(Debug, Default)]
struct Side {
    /// Latency of every answer counted, in nanoseconds.
    latencies_ns: Vec<u64>,
    /// Transport failures, timeouts and non-2xx answers.
    errors: u64,
    /// DNS checks: sidecars that answered with the new address, and those that did not.
    dns_had: u64,
    dns_missed: u64,
}

/// What the waited registrations said about propagation.
#[derive(Debug, Default)]
struct Waits {
    /// Answers with `complete: false` (the wait timed out).
    incomplete: u64,
    /// Complete answers that named fewer sidecars than `--nodes` as applied.
    short: u64,
    /// The control plane's `waited_ms` of each complete answer.
    waited_ms: Vec<u64>,
}

pub(crate) async fn run(args: PropagatedArgs) -> Result<(), Error> {
    if args.dns.iter().any(|a| !a.ip().is_loopback()) {
        return Err("this tool only queries loopback addresses".into());
    }
    let mut conn = Conn::open(&args.target).await?;
    let names = wait_for_nodes(&mut conn, args.nodes).await?;
    eprintln!(
        "{} sidecars live and caught up: {}",
        names.len(),
        names.join(", ")
    );
    let mut sockets = Vec::with_capacity(args.dns.len());
    for addr in &args.dns {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(addr).await?;
        sockets.push(socket);
    }

    let request_timeout = args.timeout + Duration::from_secs(5);
    let wait_path = format!(
        "/register?wait=propagated&timeout={}ms",
        args.timeout.as_millis()
    );
    let (mut base, mut waited, mut waits) = (Side::default(), Side::default(), Waits::default());
    let mut pids = vec![args.pid];
    pids.extend(&args.sidecar_pid);
    let cpu_before = CpuUse::now(&pids)?;
    let control_before = procfs::cpu_time(args.pid)?;
    let started = Instant::now();
    let mut trials = 0u32;
    let mut check_id = 0u16;
    while trials < args.trials && started.elapsed() < args.duration {
        let t = trials;
        trials += 1;
        for with_wait in [false, true] {
            tokio::time::sleep(args.gap).await;
            // Distinct names and addresses for the two kinds: 10.200.x.y without the wait,
            // 10.201.x.y with it.
            let (path, letter, octet) = if with_wait {
                (wait_path.as_str(), 'w', 201)
            } else {
                ("/register", 'b', 200)
            };
            let service = format!("{}-{letter}-{t}", args.prefix);
            let ip = Ipv4Addr::new(10, octet, (t >> 8) as u8, t as u8);
            let body = json!({"service": service, "address": format!("{ip}:8000"),
                "ttl_seconds": TTL_SECONDS});
            let call = Call::post(path, &body);
            let sent = Instant::now();
            let outcome = tokio::time::timeout(request_timeout, conn.send(&call)).await;
            let took = sent.elapsed();
            let side = if with_wait { &mut waited } else { &mut base };
            let answer = match outcome {
                Ok(Ok((status, answer))) if status.is_success() => answer,
                Ok(Ok((status, answer))) => {
                    side.errors += 1;
                    eprintln!("{service}: {status} {}", String::from_utf8_lossy(&answer));
                    continue;
                }
                failed => {
                    side.errors += 1;
                    match failed {
                        Ok(Err(err)) => eprintln!("{service}: {err}"),
                        _ => eprintln!("{service}: no answer within {request_timeout:?}"),
                    }
                    // The connection is in an unknown state.
                    conn = Conn::open(&args.target).await?;
                    continue;
                }
            };
            // Ask the sidecars before anything else, so that the check sees what a caller
            // would see right after the answer.
            check_id = check_id.wrapping_add(1);
            let name = format!("{service}.service.waypost.");
            let (had, missed) = dns_check(&sockets, &name, ip, check_id).await?;
            if with_wait {
                let mut answer: Value = serde_json::from_slice(&answer)?;
                let propagation = answer["propagation"].take();
                if propagation["complete"] != Value::Bool(true) {
                    waits.incomplete += 1;
                    eprintln!("{service}: incomplete after {took:?}: {propagation}");
                    continue;
                }
                waits
                    .waited_ms
                    .push(propagation["waited_ms"].as_u64().unwrap_or(0));
                let applied = propagation["applied"].as_array().map_or(0, Vec::len);
                if applied < args.nodes as usize {
                    waits.short += 1;
                }
            }
            side.latencies_ns.push(took.as_nanos() as u64);
            side.dns_had += had;
            side.dns_missed += missed;
        }
    }
    let wall = started.elapsed();
    let cpu = CpuUse::now(&pids)?.since(&cpu_before);
    let control_cpu = procfs::cpu_time(args.pid)?.saturating_sub(control_before);

    report(&args, trials, wall, &mut base, &mut waited, &mut waits);
    let cores = crate::procfs::machine_cpus() as f64;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / (cores * wall.as_secs_f64().max(1e-9));
    let sidecars_cpu = cpu.server.unwrap_or_default().saturating_sub(control_cpu);
    println!();
    println!(
        "CPU during the run ({:.1} s, share of all {cores} cores): control plane {:.1}%, \
         {} sidecars {:.1}% together, load generator {:.1}%, other processes {:.1}%",
        wall.as_secs_f64(),
        share(control_cpu),
        args.sidecar_pid.len(),
        share(sidecars_cpu),
        share(cpu.load),
        share(cpu.other()),
    );
    print_rss(args.pid, &args.sidecar_pid)?;
    Ok(())
}

/// Polls `GET /nodes` until `want` sidecars are live and have applied the head; returns their
/// names.
async fn wait_for_nodes(conn: &mut Conn, want: u32) -> Result<Vec<String>, Error> {
    let deadline = Instant::now() + NODES_LIMIT;
    loop {
        let (status, body) = conn.send(&Call::get("/nodes".to_owned())).await?;
        let mut ready = Vec::new();
        if status.is_success() {
            let table: Value = serde_json::from_slice(&body)?;
            for node in table["nodes"].as_array().into_iter().flatten() {
                if node["state"] == "live" && node["lag_revisions"] == 0 {
                    ready.push(node["node"].as_str().unwrap_or("?").to_owned());
                }
            }
        }
        if ready.len() >= want as usize {
            return Ok(ready);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "after {NODES_LIMIT:?}, {} of {want} sidecars are live and caught up \
                 (GET /nodes: {status} {})",
                ready.len(),
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks every sidecar once for `name`'s A records: how many answered with `ip`, and how many
/// did not (or did not answer within [`DNS_CHECK_LIMIT`]). All queries go out before any
/// answer is read, so no sidecar is given more time than another.
/// `id` differs from one check to the next, so that a late answer to an earlier check is not
/// taken for this one's.
async fn dns_check(
    sockets: &[UdpSocket],
    name: &str,
    ip: Ipv4Addr,
    id: u16,
) -> Result<(u64, u64), Error> {
    if sockets.is_empty() {
        return Ok((0, 0));
    }
    let query = dns::query(name, id)?;
    for socket in sockets {
        socket.send(&query).await?;
    }
    let deadline = tokio::time::Instant::now() + DNS_CHECK_LIMIT;
    let mut buf = vec![0u8; 4096];
    let (mut had, mut missed) = (0, 0);
    for socket in sockets {
        let found = loop {
            let Ok(Ok(n)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await else {
                break false;
            };
            let Ok(message) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if message.metadata.id != id {
                continue;
            }
            break message
                .answers
                .iter()
                .any(|r| matches!(&r.data, RData::A(a) if a.0 == ip));
        };
        if found {
            had += 1;
        } else {
            missed += 1;
        }
    }
    Ok((had, missed))
}

/// Prints the latency table and the counts.
fn report(
    args: &PropagatedArgs,
    trials: u32,
    wall: Duration,
    base: &mut Side,
    waited: &mut Side,
    waits: &mut Waits,
) {
    base.latencies_ns.sort_unstable();
    waited.latencies_ns.sort_unstable();
    waits.waited_ms.sort_unstable();
    let quantiles = [0.50, 0.90, 0.99, 1.0];
    let ms = |v: &[u64], q: f64| percentile(v, q).map(|ns| ns as f64 / 1e6);
    let cell = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
    let row = |label: &str, n: usize, values: [Option<f64>; 4]| {
        let cells: Vec<String> = values.into_iter().map(cell).collect();
        println!("| {label} | {n} | {} |", cells.join(" | "));
    };
    let pause = if args.gap.is_zero() {
        "no pause between writes".to_owned()
    } else {
        format!("a pause of {:?} before each write", args.gap)
    };
    println!(
        "{trials} trials in {:.1} s (each: one registration without the wait, one with \
         `?wait=propagated&timeout={}ms`), {pause}; {} sidecars waited for",
        wall.as_secs_f64(),
        args.timeout.as_millis(),
        args.nodes
    );
    println!();
    println!("| measure | answers | p50 ms | p90 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let b = quantiles.map(|q| ms(&base.latencies_ns, q));
    let w = quantiles.map(|q| ms(&waited.latencies_ns, q));
    row("register, no wait (baseline)", base.latencies_ns.len(), b);
    row(
        "register, wait=propagated, complete",
        waited.latencies_ns.len(),
        w,
    );
    let diff = std::array::from_fn(|i| w[i].zip(b[i]).map(|(w, b)| w - b));
    row(
        "difference of the percentiles",
        waited.latencies_ns.len(),
        diff,
    );
    let own = quantiles.map(|q| percentile(&waits.waited_ms, q).map(|v| v as f64));
    row(
        "the control plane's `waited_ms` (whole ms)",
        waits.waited_ms.len(),
        own,
    );
    println!();
    println!(
        "Waits incomplete (timed out): {}; complete but fewer than {} sidecars applied: {}; \
         errors: {} without the wait, {} with it",
        waits.incomplete, args.nodes, waits.short, base.errors, waited.errors
    );
    if !args.dns.is_empty() {
        println!();
        println!(
            "| DNS check: each of the {} sidecars asked once, right after the answer | queries | \
             answered with the new address | not (yet) |",
            args.dns.len()
        );
        println!("| --- | ---: | ---: | ---: |");
        for (label, side) in [
            ("after the baseline's answer (no wait)", &*base),
            ("after a complete wait=propagated answer", &*waited),
        ] {
            println!(
                "| {label} | {} | {} | {} |",
                side.dns_had + side.dns_missed,
                side.dns_had,
                side.dns_missed
            );
        }
    }
}

/// Prints the resident memory of the control plane and the sidecars now.
fn print_rss(control: u32, sidecars: &[u32]) -> Result<(), Error> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let control = procfs::rss_bytes(control)?;
    let mut each = sidecars
        .iter()
        .map(|p| procfs::rss_bytes(*p))
        .collect::<Result<Vec<_>, _>>()?;
    each.sort_unstable();
    print!("RSS at the end: control plane {:.1} MiB", mib(control));
    if let (Some(min), Some(max)) = (each.first(), each.last()) {
        print!(
            "; sidecars {:.1} to {:.1} MiB each (median {:.1}), {:.1} MiB together",
            mib(*min),
            mib(*max),
            mib(each[each.len() / 2]),
            mib(each.iter().sum())
        );
    }
    println!();
    Ok(())
}
