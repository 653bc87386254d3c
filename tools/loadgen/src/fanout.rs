//! `watchers`: the `/watch` fan-out under load (issue 18). It registers SERVICES x INSTANCES
//! instances, opens STREAMS concurrent `/watch` streams (each of one service chosen Zipf-like,
//! plus UNFILTERED streams of everything, as sidecars hold), then makes RATE changes per second
//! for DURATION and records, for each change, the delay from sending the write until the last
//! stream that should get it has it. It also reports the server's memory per open stream and
//! its CPU time per delivered event.
//!
//! A change is a registration of an existing instance with new metadata: one `upsert` that
//! reaches the streams of its service and every unfiltered stream. Streams are spread over the
//! `--watch` targets (a cluster's nodes); writes go to `--write`.
//!
//! With `--blocking`, the streams of one service are blocking queries instead
//! (`/discover/{service}?index=R&wait=60s`, asked again as each answer comes): the tool then
//! reports the server's CPU per change and per answer, which shows whether a change wakes the
//! queries of other services.
//!
//! With `--xds ADDR`, they are xDS (ADS) streams instead, as gRPC's proxyless clients hold:
//! each subscribes to the endpoints of `--xds-services` services (the first is the stream's
//! Zipf-drawn service, the rest drawn the same way) and ACKs every response. A push names the
//! registry revision it was read at and holds the services whose endpoints moved; a change of
//! service S at revision R has reached a stream with the first push holding S at a version of
//! at least R. (The version is read just after the endpoints, so a change applied in between
//! would count as reached one push early: a window of microseconds.) The report gives the delay
//! until the last stream that follows S has it, and the server's CPU per change and per push.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::{
    config::{core::v3::Node, endpoint::v3::ClusterLoadAssignment},
    service::discovery::v3::{
        DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes, client::conn::http1, header::HOST};
use hyper_util::rt::TokioIo;
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;
use tokio::{net::TcpStream, sync::Semaphore};

use crate::{
    Error,
    client::{Call, Conn, Plan, Target, drive},
    procfs,
};

/// Arguments of `watchers`.
#[derive(Debug, clap::Args)]
pub(crate) struct WatchersArgs {
    /// Control planes to open streams on, as `http://127.0.0.1:PORT` (streams are spread over
    /// them in turn).
    #[arg(long = "watch", required = true)]
    watch: Vec<Target>,
    /// The control plane to write to (a cluster's leader).
    #[arg(long)]
    write: Target,
    /// PIDs of the control planes, for memory and CPU.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Services to register.
    #[arg(long, default_value_t = 10_000)]
    services: u64,
    /// Instances per service.
    #[arg(long, default_value_t = 10)]
    instances: u64,
    /// Streams of one service each.
    #[arg(long, default_value_t = 10_000)]
    streams: u64,
    /// Streams of every service.
    #[arg(long, default_value_t = 100)]
    unfiltered: u64,
    /// Zipf exponent of the service popularity (streams and changes).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Changes per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// How long changes are made.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Streams opened per second.
    #[arg(long, default_value_t = 2_000)]
    open_rate: u64,
    /// Skip registering (the data set is already there).
    #[arg(long)]
    no_seed: bool,
    /// The longest wait for deliveries after the last change.
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    settle: Duration,
    /// Hold blocking queries in place of the streams of one service.
    #[arg(long)]
    blocking: bool,
    /// Hold xDS streams on these xDS listeners (`http://127.0.0.1:PORT`, spread in turn) in
    /// place of the streams of one service.
    #[arg(long = "xds", conflicts_with = "blocking")]
    xds: Vec<Target>,
    /// Services each xDS stream subscribes to.
    #[arg(long, default_value_t = 10)]
    xds_services: u64,
}

/// The most services [`address`] can tell apart.
const MAX_SERVICES: u64 = (256 - 64) << 8;

/// Service number `s`'s name.
fn service(s: u64) -> String {
    format!("fan-{s:05}")
}

/// Instance `i` of service `s`: a distinct address for up to [`MAX_SERVICES`] services of 250
/// instances.
fn address(s: u64, i: u64) -> String {
    format!("10.{}.{}.{}:8080", 64 + (s >> 8), s & 0xff, i + 1)
}

/// Service ranks drawn with probability proportional to `1 / rank^exponent`.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: u64, exponent: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut impl Rng) -> u64 {
        let total = *self.cumulative.last().unwrap_or(&1.0);
        let u = rng.random::<f64>() * total;
        self.cumulative.partition_point(|c| *c < u) as u64
    }
}

/// What the streams saw: per revision, how many got it and when the last one did.
#[derive(Default)]
struct Receipts {
    shards: [Mutex<HashMap<u64, (u64, u64)>>; 16],
}

impl Receipts {
    fn record(&self, revision: u64, at_ns: u64) {
        let mut shard = self.shards[(revision % 16) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let entry = shard.entry(revision).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = entry.1.max(at_ns);
    }

    fn get(&self, revision: u64) -> Option<(u64, u64)> {
        self.shards[(revision % 16) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&revision)
            .copied()
    }
}

/// A change made: its revision, when it was due (ns from the start), how many streams were
/// expected to get it, and its service.
type Sent = (u64, u64, u64, u64);

/// Shared by the streams.
struct Shared {
    receipts: Receipts,
    /// Streams that have received their snapshot.
    ready: AtomicU64,
    /// Of those, the streams of each service...
    ready_by_service: Vec<AtomicU64>,
    /// ...and of every service.
    ready_unfiltered: AtomicU64,
    /// Events (after the snapshot) received in all.
    events: AtomicU64,
    /// Streams that ended or failed.
    ended: AtomicU64,
    start: Instant,
    /// xDS streams that have their first response, by stream.
    xds_ready: Vec<AtomicBool>,
    /// Every service in every xDS push after the first: (stream, service, version, time).
    xds_receipts: Mutex<Vec<(u32, u32, u64, u64)>>,
}

pub(crate) async fn run(args: WatchersArgs) -> Result<(), Error> {
    if args.services == 0
        || args.services > MAX_SERVICES
        || args.instances == 0
        || args.instances > 250
    {
        return Err(
            format!("--services must be 1 to {MAX_SERVICES} and --instances 1 to 250").into(),
        );
    }
    if !args.xds.is_empty() && args.unfiltered > 0 {
        // Their events would count as pushes.
        return Err("--xds counts every event as a push: set --unfiltered 0".into());
    }
    waypost_runtime::fds::raise_open_files();
    if !args.no_seed {
        seed(&args).await?;
    }
    let zipf = Zipf::new(args.services, args.zipf);
    let mut rng = StdRng::seed_from_u64(18);
    let filters: Vec<u64> = (0..args.streams).map(|_| zipf.sample(&mut rng)).collect();
    let mut subscriptions: Vec<Vec<u64>> = Vec::new();
    if !args.xds.is_empty() {
        subscriptions = filters
            .iter()
            .map(|s| {
                let mut set = vec![*s];
                set.extend((1..args.xds_services).map(|_| zipf.sample(&mut rng)));
                set
            })
            .collect();
    }
    let rss =
        |pids: &[u32]| -> u64 { pids.iter().filter_map(|p| procfs::rss_bytes(*p).ok()).sum() };
    let rss_before = rss(&args.server_pids);

    // Open the streams, bounded in rate.
    let shared = Arc::new(Shared {
        receipts: Receipts::default(),
        ready: AtomicU64::new(0),
        ready_by_service: (0..args.services).map(|_| AtomicU64::new(0)).collect(),
        ready_unfiltered: AtomicU64::new(0),
        events: AtomicU64::new(0),
        ended: AtomicU64::new(0),
        start: Instant::now(),
        xds_ready: (0..subscriptions.len())
            .map(|_| AtomicBool::new(false))
            .collect(),
        xds_receipts: Mutex::default(),
    });
    let total = args.streams + args.unfiltered;
    let opened = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / args.open_rate.max(1) as f64);
    for k in 0..total {
        let target = args.watch[k as usize % args.watch.len()].clone();
        let filter = filters.get(k as usize).copied();
        match filter {
            Some(s) if args.blocking => tokio::spawn(blocking(target, s, shared.clone())),
            Some(_) if !args.xds.is_empty() => tokio::spawn(xds(
                args.xds[k as usize % args.xds.len()].clone(),
                k as u32,
                subscriptions[k as usize].clone(),
                shared.clone(),
            )),
            _ => tokio::spawn(stream(target, filter, shared.clone())),
        };
        tokio::time::sleep_until((opened + gap * (k as u32 + 1)).into()).await;
    }
    let open_deadline = Instant::now() + Duration::from_secs(120);
    while shared.ready.load(Ordering::Relaxed) + shared.ended.load(Ordering::Relaxed) < total {
        if Instant::now() > open_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = shared.ready.load(Ordering::Relaxed);
    let open_time = opened.elapsed();
    // Let allocations settle (snapshot buffers freed) before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_streams = rss(&args.server_pids);
    let per_stream = rss_streams.saturating_sub(rss_before) as f64 / ready.max(1) as f64;
    println!(
        "streams: {ready} of {total} open in {:.1} s ({} ended or failed); server RSS {:.1} MiB before, {:.1} MiB with them: {:.1} KiB per stream",
        open_time.as_secs_f64(),
        shared.ended.load(Ordering::Relaxed),
        rss_before as f64 / 1048576.0,
        rss_streams as f64 / 1048576.0,
        per_stream / 1024.0
    );

    // Changes at a steady rate.
    let count = args.rate * args.duration.as_secs().max(1);
    let cpu_before = procfs::CpuUse::now(&args.server_pids)?;
    let events_before = shared.events.load(Ordering::Relaxed);
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let in_flight = Arc::new(Semaphore::new(64));
    let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let began = Instant::now();
    let mut failures = 0u64;
    let mut tasks = Vec::with_capacity(count as usize);
    for n in 0..count {
        let due = began + Duration::from_secs_f64(n as f64 / args.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let s = zipf.sample(&mut rng);
        let i = rng.random_range(0..args.instances);
        // Only streams that are open count: one that failed to open cannot make a change
        // incomplete.
        let expected = shared.ready_by_service[s as usize].load(Ordering::Relaxed)
            + shared.ready_unfiltered.load(Ordering::Relaxed);
        // The delay counts from when the change was due, so a tool that falls behind its
        // schedule shows in the figures instead of hiding there.
        let t0 = due.duration_since(shared.start).as_nanos() as u64;
        let call = Call::post(
            "/register",
            &json!({
                "service": service(s),
                "address": address(s, i),
                "ttl_seconds": 86_400,
                "metadata": {"change": n.to_string()},
            }),
        );
        let permit = in_flight.clone().acquire_owned().await?;
        let (target, sent, conns) = (args.write.clone(), sent.clone(), conns.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let pooled = conns.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut answer = match pooled {
                Some(mut conn) => conn.send(&call).await.map(|a| (a, conn)),
                None => Err("no pooled connection".into()),
            };
            if answer.is_err() {
                // A pooled connection the server closed while it idled (the keep-alive
                // timeout), or none yet: one fresh connection, timed from here.
                let mut conn = Conn::open(&target).await?;
                answer = conn.send(&call).await.map(|a| (a, conn));
            }
            let ((status, body), conn) = answer?;
            if !status.is_success() {
                let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                return Err::<(), Error>(format!("register -> {status} {body}").into());
            }
            let revision = serde_json::from_slice::<serde_json::Value>(&body)?["revision"]
                .as_u64()
                .ok_or("no revision in the answer")?;
            sent.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((revision, t0, expected, s));
            conns.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            Ok(())
        }));
    }
    let mut first_failure = None;
    for t in tasks {
        let failure = match t.await {
            Ok(Ok(())) => continue,
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        failures += 1;
        first_failure.get_or_insert(failure);
    }
    if let Some(failure) = first_failure {
        println!("first failed change: {failure}");
    }
    let writing = began.elapsed();
    let changes = std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()));
    if !args.xds.is_empty() {
        return report_xds(
            &args,
            &shared,
            &subscriptions,
            &changes,
            cpu_before,
            events_before,
            writing,
            failures,
        )
        .await;
    }
    if args.blocking {
        // Answers (and pushes) carry the head revision, not the change's: count them and the
        // CPU.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu = procfs::CpuUse::now(&args.server_pids)?.since(&cpu_before);
        let answers = shared.events.load(Ordering::Relaxed) - events_before;
        let server = cpu.server.unwrap_or_default().as_secs_f64();
        let (held, plural, answer) = if args.blocking {
            ("queries", "answers", "answer")
        } else {
            ("xDS streams", "pushes", "push")
        };
        println!(
            "| {held} | unfiltered | changes/s | {plural} | server CPU | per change | per {answer} | load CPU | failed changes |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {ready} | {} | {:.0} | {answers} | {server:.2} s | {:.1} µs | {:.1} µs | {:.1} s | {failures} |",
            args.unfiltered,
            changes.len() as f64 / writing.as_secs_f64(),
            server * 1e6 / changes.len().max(1) as f64,
            server * 1e6 / answers.max(1) as f64,
            cpu.load.as_secs_f64(),
        );
        return Ok(());
    }
    // Wait until every change reached every stream that should get it, or the settle time.
    let settle_deadline = Instant::now() + args.settle;
    let complete = |c: &Sent| shared.receipts.get(c.0).is_some_and(|(got, _)| got >= c.2);
    while !changes.iter().all(complete) && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = procfs::CpuUse::now(&args.server_pids)?.since(&cpu_before);
    let delivered = shared.events.load(Ordering::Relaxed) - events_before;

    // A change some stream never got counts as an infinite delay, so it can only raise the
    // percentiles.
    let mut delays: Vec<u64> = Vec::with_capacity(changes.len());
    let mut incomplete = 0;
    for c in &changes {
        match shared.receipts.get(c.0) {
            Some((got, last)) if got >= c.2 => delays.push(last.saturating_sub(c.1)),
            _ => {
                incomplete += 1;
                delays.push(u64::MAX);
            }
        }
    }
    delays.sort_unstable();
    let pct = |p: f64| percentile(&delays, p);
    let expected_total: u64 = changes.iter().map(|c| c.2).sum();
    let server_cpu = cpu.server.unwrap_or_default();
    println!(
        "changes: {} made in {:.1} s ({:.0}/s, {failures} failed); {} events expected, {delivered} delivered ({:.0}/s); {} of the streams ended",
        changes.len(),
        writing.as_secs_f64(),
        changes.len() as f64 / writing.as_secs_f64(),
        expected_total,
        delivered as f64 / writing.as_secs_f64(),
        shared.ended.load(Ordering::Relaxed),
    );
    println!(
        "| streams | unfiltered | changes/s | change-to-last-watcher p50 | p99 | max | incomplete | server CPU per delivered event | server CPU | load CPU | other CPU | server RSS per stream |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {ready} | {} | {:.0} | {} | {} | {} | {incomplete} | {:.2} µs | {:.1} s | {:.1} s | {:.1} s | {:.1} KiB |",
        args.unfiltered,
        changes.len() as f64 / writing.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        server_cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64,
        server_cpu.as_secs_f64(),
        cpu.load.as_secs_f64(),
        cpu.other().as_secs_f64(),
        per_stream / 1024.0,
    );
    Ok(())
}

/// Registers the data set, 32 connections at once.
async fn seed(args: &WatchersArgs) -> Result<(), Error> {
    let (services, instances) = (args.services, args.instances);
    let total = services * instances;
    let plan = Plan {
        make: Box::new(move |n| {
            let (s, i) = (n % services, n / services);
            Call::post(
                "/register",
                &json!({"service": service(s), "address": address(s, i), "ttl_seconds": 86_400}),
            )
        }),
        deadline: Instant::now() + Duration::from_secs(600),
        max_requests: total,
        request_timeout: Duration::from_secs(30),
        record_latency: false,
    };
    let started = Instant::now();
    let (tally, _) = drive(&args.write, 32, plan).await?;
    if tally.errors > 0 || tally.requests < total {
        return Err(format!(
            "seeding: {} of {total} registered, {} errors; first: {:?}",
            tally.requests - tally.errors,
            tally.errors,
            tally.first_error
        )
        .into());
    }
    println!(
        "seeded {total} instances in {services} services in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One stream: reads event ids off the SSE body. The first event is the snapshot; each later
/// one is recorded by revision. Only `id:` lines matter, so a line's first bytes are kept and
/// the rest (a snapshot's data can be tens of megabytes) is skipped.
async fn stream(target: Target, filter: Option<u64>, shared: Arc<Shared>) {
    if open_and_read(&target, filter, &shared).await.is_err() {
        shared.ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// One blocking query of service `s`, asked again at each answer (see `--blocking`). Ready
/// once the first answer (without `index`) is in; each later answer counts as an event.
async fn blocking(target: Target, s: u64, shared: Arc<Shared>) {
    if hold(&target, s, &shared).await.is_err() {
        shared.ended.fetch_add(1, Ordering::Relaxed);
    }
}

async fn hold(target: &Target, s: u64, shared: &Shared) -> Result<(), Error> {
    let mut conn = Conn::open(target).await?;
    let path = format!("/discover/{}", service(s));
    let revision = |body: &[u8]| -> Result<u64, Error> {
        serde_json::from_slice::<serde_json::Value>(body)?["revision"]
            .as_u64()
            .ok_or_else(|| "no revision in the answer".into())
    };
    let (status, body) = conn.send(&Call::get(path.clone())).await?;
    if !status.is_success() {
        return Err(format!("GET {path} -> {status}").into());
    }
    let mut index = revision(&body)?;
    shared.ready.fetch_add(1, Ordering::Relaxed);
    shared.ready_by_service[s as usize].fetch_add(1, Ordering::Relaxed);
    // Bounded: the run ends the process; each answer takes a change or the 60 s wait.
    loop {
        let call = Call::get(format!("{path}?index={index}&wait=60s"));
        let (status, body) = conn.send(&call).await?;
        if !status.is_success() {
            return Err(format!("GET {path}?index -> {status}").into());
        }
        index = revision(&body)?;
        shared
            .receipts
            .record(index, shared.start.elapsed().as_nanos() as u64);
        shared.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// Percentile `p` of sorted `delays` (nanoseconds; `u64::MAX` for a change never delivered).
fn percentile(delays: &[u64], p: f64) -> String {
    if delays.is_empty() {
        return "-".to_owned();
    }
    let k = ((delays.len() as f64 * p).ceil() as usize).clamp(1, delays.len()) - 1;
    match delays[k] {
        u64::MAX => "∞ (incomplete)".to_owned(),
        ns => format!("{:.1} ms", ns as f64 / 1e6),
    }
}

/// The `--xds` report: per change, the delay until the last stream that follows its service
/// had a push with it (see the module's notes), and the server's CPU.
#[allow(clippy::too_many_arguments)]
async fn report_xds(
    args: &WatchersArgs,
    shared: &Shared,
    subscriptions: &[Vec<u64>],
    changes: &[Sent],
    cpu_before: procfs::CpuUse,
    events_before: u64,
    writing: Duration,
    failures: u64,
) -> Result<(), Error> {
    // Bounded: the pushes of the last changes arrive within milliseconds when the server
    // keeps up; any later are counted as never delivered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = procfs::CpuUse::now(&args.server_pids)?.since(&cpu_before);
    let pushes = shared.events.load(Ordering::Relaxed) - events_before;
    let receipts = std::mem::take(
        &mut *shared
            .xds_receipts
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    // Per stream and service, the pushes in the order they came (versions only grow).
    let mut got: HashMap<(u32, u32), Vec<(u64, u64)>> = HashMap::new();
    for (stream, service, version, at) in receipts {
        got.entry((stream, service))
            .or_default()
            .push((version, at));
    }
    let mut followers: HashMap<u64, Vec<u32>> = HashMap::new();
    for (k, set) in subscriptions.iter().enumerate() {
        if !shared.xds_ready[k].load(Ordering::Relaxed) {
            continue;
        }
        let mut set = set.clone();
        set.sort_unstable();
        set.dedup();
        for s in set {
            followers.entry(s).or_default().push(k as u32);
        }
    }
    let mut delays = Vec::with_capacity(changes.len());
    let mut incomplete = 0;
    for &(revision, t0, _, s) in changes {
        let mut last = 0u64;
        let mut missed = false;
        for k in followers.get(&s).into_iter().flatten() {
            let first = got
                .get(&(*k, s as u32))
                .and_then(|pushes| pushes.iter().find(|(version, _)| *version >= revision));
            match first {
                Some((_, at)) => last = last.max(*at),
                None => missed = true,
            }
        }
        if missed {
            incomplete += 1;
            delays.push(u64::MAX);
        } else {
            delays.push(last.saturating_sub(t0));
        }
    }
    delays.sort_unstable();
    let server = cpu.server.unwrap_or_default().as_secs_f64();
    let ready = shared
        .xds_ready
        .iter()
        .filter(|r| r.load(Ordering::Relaxed))
        .count();
    println!(
        "| xDS streams | changes/s | pushes | change-to-last-stream p50 | p99 | max | incomplete | server CPU | per change | per push | load CPU | failed changes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {ready} | {:.0} | {pushes} | {} | {} | {} | {incomplete} | {server:.2} s | {:.1} µs | {:.1} µs | {:.1} s | {failures} |",
        changes.len() as f64 / writing.as_secs_f64(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        percentile(&delays, 1.0),
        server * 1e6 / changes.len().max(1) as f64,
        server * 1e6 / pushes.max(1) as f64,
        cpu.load.as_secs_f64(),
    );
    Ok(())
}

/// One ADS stream subscribed to the endpoints of `services`, ACKing every response (see
/// `--xds`). Ready once the first response is in; each later one counts as an event, and
/// the services it holds are recorded with its version.
async fn xds(target: Target, k: u32, services: Vec<u64>, shared: Arc<Shared>) {
    if follow_xds(&target, k, &services, &shared).await.is_err() {
        shared.ended.fetch_add(1, Ordering::Relaxed);
    }
}

async fn follow_xds(
    target: &Target,
    k: u32,
    services: &[u64],
    shared: &Shared,
) -> Result<(), Error> {
    const CLA: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    let request = |version: String, nonce: String| DiscoveryRequest {
        version_info: version,
        node: Some(Node {
            id: "waypost-load".to_owned(),
            ..Node::default()
        }),
        resource_names: services.iter().map(|s| service(*s)).collect(),
        type_url: CLA.to_owned(),
        response_nonce: nonce,
        ..DiscoveryRequest::default()
    };
    let channel = tonic::transport::Endpoint::from_shared(target.url())?
        .connect()
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(request(String::new(), String::new())).await?;
    let mut responses = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut first = true;
    // Bounded: the run ends the process; each response is a change's push.
    while let Some(response) = responses.message().await? {
        if first {
            first = false;
            shared.ready.fetch_add(1, Ordering::Relaxed);
            shared.xds_ready[k as usize].store(true, Ordering::Relaxed);
        } else {
            shared.events.fetch_add(1, Ordering::Relaxed);
            let at = shared.start.elapsed().as_nanos() as u64;
            let version: u64 = response.version_info.parse()?;
            let mut receipts = shared
                .xds_receipts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for resource in &response.resources {
                let cla = ClusterLoadAssignment::decode(resource.value.as_slice())?;
                if let Some(s) = cla
                    .cluster_name
                    .strip_prefix("fan-")
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    receipts.push((k, s, version, at));
                }
            }
        }
        tx.send(request(response.version_info, response.nonce))
            .await?;
    }
    Err("the xDS stream ended".into())
}

async fn open_and_read(target: &Target, filter: Option<u64>, shared: &Shared) -> Result<(), Error> {
    let path = match filter {
        Some(s) => format!("/watch?service={}", service(s)),
        None => "/watch".to_owned(),
    };
    let tcp = TcpStream::connect(target.addr()).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let req = Request::get(&path)
        .header(HOST, target.authority())
        .body(Empty::<Bytes>::new())?;
    let res = sender.send_request(req).await?;
    if !res.status().is_success() {
        return Err(format!("GET {path} -> {}", res.status()).into());
    }
    let mut body = res.into_body();
    let mut line: Vec<u8> = Vec::with_capacity(64);
    let mut seen_snapshot = false;
    // An event's id comes before its name: kept until the name says it is no snapshot (a
    // later snapshot delivers no change).
    let mut pending_id: Option<u64> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let mut rest = &data[..];
        while !rest.is_empty() {
            let end = rest.iter().position(|b| *b == b'\n');
            let piece = &rest[..end.unwrap_or(rest.len())];
            if line.len() < 64 {
                line.extend_from_slice(&piece[..piece.len().min(64 - line.len())]);
            }
            let Some(end) = end else { break };
            rest = &rest[end + 1..];
            if !seen_snapshot {
                // The snapshot is whole once its `data` line ends.
                if line.starts_with(b"data: ") {
                    seen_snapshot = true;
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                    match filter {
                        Some(s) => &shared.ready_by_service[s as usize],
                        None => &shared.ready_unfiltered,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                }
            } else if let Some(id) = line.strip_prefix(b"id: ") {
                pending_id = std::str::from_utf8(id)
                    .ok()
                    .and_then(|s| s.rsplit('-').next())
                    .and_then(|r| r.parse::<u64>().ok());
            } else if let Some(name) = line.strip_prefix(b"event: ")
                && let Some(revision) = pending_id.take()
                && name != b"snapshot"
            {
                let at = shared.start.elapsed().as_nanos() as u64;
                shared.receipts.record(revision, at);
                shared.events.fetch_add(1, Ordering::Relaxed);
            }
            line.clear();
        }
    }
    Err("the stream ended".into())
}
