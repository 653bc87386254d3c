//! The DNS benchmark's data and the propagation measurement.
//!
//! - `dns-seed`: registers N services (two instances each, or `--per-service`) with the control
//!   plane and writes the same names for dnsmasq (a hosts file and `srv-host` lines), for knot
//!   and unbound (a zone file whose records are the sidecar's own, SRV targets and TTL
//!   included) and the query files for dnsperf, so every server answers the same questions from
//!   the same data.
//! - `propagation`: registers a new instance (in a new service, or in one of the seeded ones),
//!   then asks the sidecar over UDP until the answer has it; prints p50/p99/max of the time
//!   from the register's acknowledgement to the answer, and with `--sidecar-admin` the
//!   sidecar's own apply time over the same changes (its `apply_seconds` histogram).

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Args;
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
};
use tokio::net::UdpSocket;

use crate::{
    Error,
    client::{Call, Conn, Plan, Target, drive},
};

/// `dns-seed` arguments.
#[derive(Debug, Args)]
pub(crate) struct SeedArgs {
    /// The control plane, as `http://127.0.0.1:PORT`.
    #[arg(long)]
    target: Target,
    /// How many services (at most 60,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    services: u32,
    /// Instances per service (at most 250).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=250))]
    per_service: u32,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,
    /// Where to write `hosts`, `dnsmasq.conf`, `waypost.zone`, `queries-a.txt` and
    /// `queries-srv.txt`.
    #[arg(long)]
    out: PathBuf,
}

/// Instance `i`'s address in service `s`.
fn address(s: u32, i: u32) -> Ipv4Addr {
    let (hi, lo) = ((s >> 8) as u8, (s & 0xff) as u8);
    Ipv4Addr::new(10, hi, lo, (i + 1) as u8)
}

fn service(s: u32) -> String {
    format!("svc-{s:05}")
}

pub(crate) async fn seed(args: SeedArgs) -> Result<(), Error> {
    std::fs::create_dir_all(&args.out)?;
    let per = args.per_service;
    let total = u64::from(args.services) * u64::from(per);
    let started = Instant::now();
    let plan = Plan {
        make: Box::new(move |n| {
            let (s, i) = ((n / u64::from(per)) as u32, (n % u64::from(per)) as u32);
            let body = serde_json::json!({
                "service": service(s), "address": format!("{}:8000", address(s, i)),
                "ttl_seconds": 86_400
            });
            Call::post("/register", &body)
        }),
        deadline: started + Duration::from_secs(600),
        max_requests: total,
        request_timeout: Duration::from_secs(10),
        record_latency: false,
    };
    let (tally, took) = drive(&args.target, args.concurrency as usize, plan).await?;
    if tally.errors > 0 || tally.requests < total {
        let first = tally.first_error.unwrap_or_else(|| "out of time".into());
        return Err(format!("{} of {total} registrations failed: {first}", tally.errors).into());
    }
    let (mut hosts, mut conf, mut qa, mut qsrv) =
        (String::new(), String::new(), String::new(), String::new());
    // The zone answers as the sidecar does: TTL 5, SRV priority 1 and weight 1, each target
    // `<IP in hex>.addr.waypost.` with its address (the additional section's records).
    let mut zone = String::from(
        "$ORIGIN waypost.\n$TTL 5\n\
         @ IN SOA ns.waypost. hostmaster.waypost. 1 60 60 86400 5\n\
         @ IN NS ns.waypost.\nns IN A 127.0.0.1\n",
    );
    for s in 0..args.services {
        let name = service(s);
        for i in 0..per {
            let ip = address(s, i);
            // dnsmasq: the A records of the service name, and SRV targets with their own A.
            writeln!(hosts, "{ip} {name}.service.waypost")?;
            writeln!(hosts, "{ip} {name}-{i}.node.waypost")?;
            writeln!(
                conf,
                "srv-host=_{name}._tcp.service.waypost,{name}-{i}.node.waypost,8000,1,1"
            )?;
            let hex = format!("{:08x}", u32::from(ip));
            writeln!(zone, "{name}.service IN A {ip}")?;
            writeln!(zone, "_{name}._tcp.service IN SRV 1 1 8000 {hex}.addr")?;
            writeln!(zone, "{hex}.addr IN A {ip}")?;
        }
        writeln!(qa, "{name}.service.waypost A")?;
        writeln!(qsrv, "_{name}._tcp.service.waypost SRV")?;
    }
    std::fs::write(args.out.join("hosts"), hosts)?;
    std::fs::write(args.out.join("dnsmasq.conf"), conf)?;
    std::fs::write(args.out.join("waypost.zone"), zone)?;
    std::fs::write(args.out.join("queries-a.txt"), qa)?;
    std::fs::write(args.out.join("queries-srv.txt"), qsrv)?;
    println!(
        "registered {} services x {per} instances in {:.1} s; wrote {}",
        args.services,
        took.as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// `propagation` arguments.
#[derive(Debug, Args)]
pub(crate) struct PropagationArgs {
    /// The control plane, as `http://127.0.0.1:PORT`.
    #[arg(long)]
    target: Target,
    /// The sidecar's DNS address.
    #[arg(long)]
    dns: SocketAddr,
    /// How many registrations to time (at most 10,000).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    trials: u32,
    /// The longest one trial may wait for its answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Register each trial's instance into one of the first N services of `dns-seed`
    /// (`svc-00000` ...) instead of a new service of its own.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    into_services: Option<u32>,
    /// Which run against the same control plane this is (0 to 55): each uses its own
    /// addresses (10.(200 + RUN).x.y), so a later run never finds an earlier one's instances.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=55))]
    run: u8,
    /// The sidecar's admin address (`127.0.0.1:PORT`): also print its own apply time over the
    /// trials, from its `waypost_sidecar_apply_seconds` histogram.
    #[arg(long)]
    sidecar_admin: Option<SocketAddr>,
}

pub(crate) async fn propagation(args: PropagationArgs) -> Result<(), Error> {
    if !args.dns.ip().is_loopback() {
        return Err("this tool only queries loopback addresses".into());
    }
    if args.sidecar_admin.is_some_and(|a| !a.ip().is_loopback()) {
        return Err("this tool only reads loopback addresses".into());
    }
    let applied_before = match args.sidecar_admin {
        Some(admin) => apply_histogram(admin).await?,
        None => None,
    };
    let mut conn = Conn::open(&args.target).await?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(args.dns).await?;
    let run = std::process::id();
    let mut times = Vec::with_capacity(args.trials as usize);
    let mut missed = 0u32;
    for t in 0..args.trials {
        let name = match args.into_services {
            // Spread over the services, so that none grows much.
            Some(n) => service((t.wrapping_mul(7919)) % n),
            None => format!("prop-{run}-{t}"),
        };
        let ip = Ipv4Addr::new(10, 200 + args.run, (t >> 8) as u8, (t & 0xff) as u8);
        let body =
            serde_json::json!({"service": name, "address": format!("{ip}:80"), "ttl_seconds": 600});
        let (status, answer) = conn.send(&Call::post("/register", &body)).await?;
        if !status.is_success() {
            return Err(format!("register {name}: {status} {answer:?}").into());
        }
        let acked = Instant::now();
        let query = query(&format!("{name}.service.waypost."), t as u16)?;
        let mut buf = vec![0u8; 4096];
        let found = loop {
            if acked.elapsed() > args.timeout {
                break false;
            }
            socket.send(&query).await?;
            let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut buf)).await
            else {
                continue;
            };
            let Ok(message) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let has = message
                .answers
                .iter()
                .any(|r| matches!(&r.data, RData::A(a) if a.0 == ip));
            if has {
                break true;
            }
            // Not there yet: ask again shortly (bounded by the timeout above).
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        if found {
            times.push(acked.elapsed());
        } else {
            missed += 1;
        }
    }
    times.sort_unstable();
    let pick = |q: f64| -> f64 {
        if times.is_empty() {
            return f64::NAN;
        }
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times[i].as_secs_f64() * 1000.0
    };
    println!("| trials | answered | missed | p50 ms | p99 ms | max ms |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {} | {missed} | {:.2} | {:.2} | {:.2} |",
        args.trials,
        times.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    if let Some(admin) = args.sidecar_admin {
        let after = apply_histogram(admin).await?;
        match (applied_before, after) {
            (Some(before), Some(after)) => {
                println!();
                println!("{}", after.since(&before).row());
            }
            _ => println!("\nthe sidecar has no waypost_sidecar_apply_seconds histogram"),
        }
    }
    Ok(())
}

/// The sidecar's `waypost_sidecar_apply_seconds` histogram: bucket upper bounds with their
/// cumulative counts, the sum and the count.
#[derive(Debug, Clone, PartialEq)]
struct ApplyHistogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl ApplyHistogram {
    /// Parses the histogram out of an OpenMetrics text (`None` when it is not there).
    fn parse(text: &str) -> Option<Self> {
        const NAME: &str = "waypost_sidecar_apply_seconds";
        let mut h = Self {
            buckets: Vec::new(),
            sum: 0.0,
            count: 0,
        };
        let mut seen = false;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(NAME) else {
                continue;
            };
            let value = rest.rsplit(' ').next()?;
            if let Some(le) = rest.strip_prefix("_bucket{le=\"") {
                let bound = le.split('"').next()?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                h.buckets.push((bound, value.parse().ok()?));
                seen = true;
            } else if rest.starts_with("_sum ") {
                h.sum = value.parse().ok()?;
            } else if rest.starts_with("_count ") {
                h.count = value.parse().ok()?;
            }
        }
        seen.then_some(h)
    }

    /// What was observed between `before` and `self`.
    fn since(&self, before: &Self) -> Self {
        Self {
            buckets: self
                .buckets
                .iter()
                .zip(&before.buckets)
                .map(|((le, a), (_, b))| (*le, a.saturating_sub(*b)))
                .collect(),
            sum: self.sum - before.sum,
            count: self.count.saturating_sub(before.count),
        }
    }

    /// The upper bound of the bucket that holds quantile `q` (`None` without observations).
    fn quantile_bound(&self, q: f64) -> Option<f64> {
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map(|(le, _)| *le)
    }

    /// A markdown table: applies, mean, and the buckets holding p50 and p99 (in ms).
    fn row(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.3}", v * 1e3));
        let mean = (self.count > 0).then(|| self.sum / self.count as f64);
        format!(
            "| sidecar applies | mean ms | p50 at most ms | p99 at most ms |\n\
             | ---: | ---: | ---: | ---: |\n\
             | {} | {} | {} | {} |",
            self.count,
            ms(mean),
            ms(self.quantile_bound(0.5)),
            ms(self.quantile_bound(0.99)),
        )
    }
}

/// Reads the sidecar's apply histogram from its admin `/metrics`.
async fn apply_histogram(admin: SocketAddr) -> Result<Option<ApplyHistogram>, Error> {
    let target: Target = format!("http://{admin}").parse()?;
    let mut conn = Conn::open(&target).await?;
    let (status, body) = conn.send(&Call::get("/metrics".to_owned())).await?;
    if !status.is_success() {
        return Err(format!("GET http://{admin}/metrics: {status}").into());
    }
    Ok(ApplyHistogram::parse(&String::from_utf8_lossy(&body)))
}

/// An A query for `name` with message id `id`, encoded.
pub(crate) fn query(name: &str, id: u16) -> Result<Vec<u8>, Error> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(m.to_vec()?)
}

#[cfg(test)]
mod tests {
    use super::ApplyHistogram;

    #[test]
    fn the_apply_histogram_is_read_and_differenced() {
        let text = |a: u64, b: u64, inf: u64, sum: f64| {
            format!(
                "# TYPE waypost_sidecar_apply_seconds histogram\n\
                 waypost_sidecar_apply_seconds_sum {sum}\n\
                 waypost_sidecar_apply_seconds_count {inf}\n\
                 waypost_sidecar_apply_seconds_bucket{{le=\"1.0e-5\"}} {a}\n\
                 waypost_sidecar_apply_seconds_bucket{{le=\"2.0e-5\"}} {b}\n\
                 waypost_sidecar_apply_seconds_bucket{{le=\"+Inf\"}} {inf}\n\
                 waypost_sidecar_instances 3\n"
            )
        };
        let before = ApplyHistogram::parse(&text(1, 1, 2, 1.0)).expect("a histogram");
        let after = ApplyHistogram::parse(&text(1, 100, 102, 1.0015)).expect("a histogram");
        let d = after.since(&before);
        assert_eq!(d.count, 100);
        assert_eq!(d.quantile_bound(0.5), Some(2.0e-5));
        assert_eq!(d.quantile_bound(0.99), Some(2.0e-5));
        assert!(ApplyHistogram::parse("waypost_sidecar_instances 3\n").is_none());
    }
}
