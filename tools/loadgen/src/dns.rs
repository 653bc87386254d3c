//! The DNS benchmark's data and the propagation measurement.
//!
//! - `dns-seed`: registers N services (two instances each) with the control plane and writes the
//!   same names for dnsmasq (a hosts file and `srv-host` lines), for knot and unbound (a zone
//!   file whose records are the sidecar's own, SRV targets and TTL included) and the query files
//!   for dnsperf, so every server answers the same questions from the same data.
//! - `propagation`: registers a new instance, then asks the sidecar over UDP until the answer
//!   has it; prints p50/p99/max of the time from the register's acknowledgement to the answer.

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
    client::{Call, Conn, Target},
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
    /// Where to write `hosts`, `dnsmasq.conf`, `waypost.zone`, `queries-a.txt` and
    /// `queries-srv.txt`.
    #[arg(long)]
    out: PathBuf,
}

/// The two instance addresses of service `s`.
fn addresses(s: u32) -> [Ipv4Addr; 2] {
    let (hi, lo) = ((s >> 8) as u8, (s & 0xff) as u8);
    [Ipv4Addr::new(10, hi, lo, 1), Ipv4Addr::new(10, hi, lo, 2)]
}

fn service(s: u32) -> String {
    format!("svc-{s:05}")
}

pub(crate) async fn seed(args: SeedArgs) -> Result<(), Error> {
    std::fs::create_dir_all(&args.out)?;
    let mut conn = Conn::open(&args.target).await?;
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
        for (i, ip) in addresses(s).into_iter().enumerate() {
            let body = serde_json::json!({
                "service": name, "address": format!("{ip}:8000"), "ttl_seconds": 86_400
            });
            let (status, answer) = conn.send(&Call::post("/register", &body)).await?;
            if !status.is_success() {
                return Err(format!("register {name}: {status} {answer:?}").into());
            }
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
        "registered {} services x 2 instances; wrote {}",
        args.services,
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
}

pub(crate) async fn propagation(args: PropagationArgs) -> Result<(), Error> {
    if !args.dns.ip().is_loopback() {
        return Err("this tool only queries loopback addresses".into());
    }
    let mut conn = Conn::open(&args.target).await?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(args.dns).await?;
    let run = std::process::id();
    let mut times = Vec::with_capacity(args.trials as usize);
    let mut missed = 0u32;
    for t in 0..args.trials {
        let name = format!("prop-{run}-{t}");
        let ip = Ipv4Addr::new(10, 200, (t >> 8) as u8, (t & 0xff) as u8);
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
    Ok(())
}

/// An A query for `name` with message id `id`, encoded.
pub(crate) fn query(name: &str, id: u16) -> Result<Vec<u8>, Error> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(m.to_vec()?)
}
