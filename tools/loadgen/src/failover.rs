//! `failover`: kills a cluster's leader with `kill -9` and times how long the cluster takes to
//! acknowledge a write again: from just before the kill to the first successful registration
//! answered by one of the survivors.
//!
//! Writes do not wait for each other: every `--interval` a new registration goes to each
//! survivor on a fresh connection, whatever the earlier ones are doing (some wait for a leader,
//! some are refused at once), so the figure is not rounded up to a retry timeout. At most
//! [`MAX_IN_FLIGHT`] are out at once, and nothing is sent after `--limit`.

use std::time::{Duration, Instant};

use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    Error,
    client::{Conn, Target},
    scenario::{register_new, run_id},
};

/// Most write attempts waiting for an answer at once.
const MAX_IN_FLIGHT: usize = 400;

/// Arguments of `failover`.
#[derive(Debug, clap::Args)]
pub(crate) struct FailoverArgs {
    /// A surviving node, as `http://127.0.0.1:PORT` (repeat for each survivor).
    #[arg(long, required = true)]
    target: Vec<Target>,
    /// The leader's process id: killed with `kill -9` when the clock starts.
    #[arg(long)]
    kill_pid: u32,
    /// A new write to each survivor this often.
    #[arg(long, default_value = "10ms", value_parser = crate::parse_duration)]
    interval: Duration,
    /// Give up (and fail) when no write was acknowledged within this long.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    limit: Duration,
}

/// What one write attempt saw: the time of its acknowledgement since the kill, or why not.
type Outcome = Result<(Duration, usize), String>;

/// Checks that every survivor takes a write, kills the leader, and prints on stdout the
/// milliseconds from the kill to the first acknowledged write (details on stderr).
pub(crate) async fn run(args: FailoverArgs) -> Result<(), Error> {
    if args.interval.is_zero() {
        return Err("--interval must be above zero".into());
    }
    // Services named after the killed process, so that no trial repeats an earlier address.
    let prefix = format!("failover-{}", args.kill_pid);
    let run = run_id();
    for (i, target) in args.target.iter().enumerate() {
        let mut conn = Conn::open(target).await?;
        let call = register_new(&prefix, 10, i as u64, run);
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), conn.send(&call))
            .await
            .map_err(|_| "a survivor did not take a write before the kill")??;
        if !status.is_success() {
            return Err(format!(
                "a survivor refused a write before the kill: {status} {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
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
    let mut n = args.target.len() as u64;
    let (mut sent, mut failed, mut first_failure) = (0u64, 0u64, None::<String>);
    loop {
        tokio::select! {
            outcome = rx.recv() => match outcome {
                Some(Ok((at, who))) => {
                    eprintln!(
                        "first acknowledged write after {:.1} ms, by {}; {sent} sent, {failed} failed \
                         before it{}",
                        at.as_secs_f64() * 1e3,
                        args.target[who].url(),
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
                        "no write acknowledged within {:?} of the kill ({sent} sent, {failed} failed; \
                         first failure: {})",
                        args.limit,
                        first_failure.unwrap_or_default()
                    )
                    .into());
                }
                while attempts.try_join_next().is_some() {}
                for (who, target) in args.target.iter().enumerate() {
                    if attempts.len() >= MAX_IN_FLIGHT {
                        break;
                    }
                    let call = register_new(&prefix, 10, n, run);
                    n += 1;
                    sent += 1;
                    let (target, tx) = (target.clone(), tx.clone());
                    attempts.spawn(async move {
                        let outcome = attempt(&target, &call, deadline).await.map(|()| (started.elapsed(), who));
                        let _ = tx.send(outcome);
                    });
                }
            }
        }
    }
}

/// One registration on a new connection, answered (2xx) before `deadline`.
async fn attempt(
    target: &Target,
    call: &crate::client::Call,
    deadline: Instant,
) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let sent = async {
        let mut conn = Conn::open(target).await.map_err(|e| e.to_string())?;
        conn.send(call).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(left, sent).await {
        Ok(Ok((status, _))) if status.is_success() => Ok(()),
        Ok(Ok((status, body))) => Err(format!(
            "{status} {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
        Ok(Err(err)) => Err(err),
        Err(_) => Err("no answer before the limit".to_owned()),
    }
}
