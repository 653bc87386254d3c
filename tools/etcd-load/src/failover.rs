//! `failover`: kills etcd's leader with `kill -9` and times how long the cluster takes to
//! acknowledge a put again, measured as `waypost-load failover` measures Waypost: every
//! `--interval` a new put goes to each survivor, whatever the earlier ones are doing, and the
//! figure is the time from just before the kill to the first acknowledgement.

use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::{sync::mpsc, task::JoinSet};

use crate::{Endpoint, Error, connect};

/// Most puts waiting for an answer at once.
const MAX_IN_FLIGHT: usize = 400;

/// Arguments of `failover`.
#[derive(Debug, clap::Args)]
pub(crate) struct FailoverArgs {
    /// The surviving members' client URLs, comma-separated: each gets puts of its own.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<Endpoint>,
    /// The leader's process id: killed with `kill -9` when the clock starts.
    #[arg(long)]
    kill_pid: u32,
    /// A new put to each survivor this often.
    #[arg(long, default_value = "10ms", value_parser = crate::parse_duration)]
    interval: Duration,
    /// Give up (and fail) when no put was acknowledged within this long.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    limit: Duration,
}

type Outcome = Result<(Duration, usize), String>;

/// Checks that every survivor takes a put, kills the leader, and prints on stdout the
/// milliseconds from the kill to the first acknowledged put (details on stderr).
pub(crate) async fn run(args: FailoverArgs) -> Result<(), Error> {
    if args.interval.is_zero() {
        return Err("--interval must be above zero".into());
    }
    let prefix = format!("/failover/{}", args.kill_pid);
    let mut clients: Vec<Client> = Vec::new();
    for endpoint in &args.endpoints {
        let mut client = connect(std::slice::from_ref(endpoint)).await?;
        tokio::time::timeout(
            Duration::from_secs(5),
            client.put(format!("{prefix}/warm/{endpoint}"), "x", None),
        )
        .await
        .map_err(|_| format!("{endpoint} did not take a put before the kill"))??;
        clients.push(client);
    }

    let started = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-9", &args.kill_pid.to_string()])
        .status()?;
    if !killed.success() {
        return Err(format!("kill -9 {} failed", args.kill_pid).into());
    }
    let deadline = started + args.limit;
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let mut attempts = JoinSet::new();
    let mut tick = tokio::time::interval(args.interval);
    let mut n = 0u64;
    let (mut failed, mut first_failure) = (0u64, None::<String>);
    loop {
        tokio::select! {
            outcome = rx.recv() => match outcome {
                Some(Ok((at, who))) => {
                    eprintln!(
                        "first acknowledged put after {:.1} ms, by {}; {n} sent, {failed} failed \
                         before it{}",
                        at.as_secs_f64() * 1e3,
                        args.endpoints[who],
                        first_failure.map(|f| format!(" (first failure: {f})")).unwrap_or_default(),
                    );
                    println!("{:.1}", at.as_secs_f64() * 1e3);
                    attempts.abort_all();
                    return Ok(());
                }
                Some(Err(why)) => {
                    failed += 1;
                    first_failure.get_or_insert(why);
                }
                None => return Err("attempts channel closed".into()),
            },
            _ = tick.tick() => {
                if Instant::now() >= deadline {
                    attempts.abort_all();
                    return Err(format!(
                        "no put acknowledged within {:?} of the kill ({n} sent, {failed} failed; \
                         first failure: {})",
                        args.limit,
                        first_failure.unwrap_or_default()
                    )
                    .into());
                }
                while attempts.try_join_next().is_some() {}
                for (who, client) in clients.iter().enumerate() {
                    if attempts.len() >= MAX_IN_FLIGHT {
                        break;
                    }
                    let (mut client, tx, key) = (client.clone(), tx.clone(), format!("{prefix}/{n}"));
                    n += 1;
                    attempts.spawn(async move {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let outcome = match tokio::time::timeout(left, client.put(key, "x", None)).await {
                            Ok(Ok(_)) => Ok((started.elapsed(), who)),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err("no answer before the limit".to_owned()),
                        };
                        let _ = tx.send(outcome);
                    });
                }
            }
        }
    }
}
