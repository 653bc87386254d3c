//! Reports this sidecar to the control plane (`PUT /nodes/{node}`): its version, where it
//! serves, the revision its answers come from and whether it is stale. A report goes at once
//! when that revision or the staleness changes (so that writes waiting with
//! `?wait=propagated` are released as soon as this sidecar routes by them), no more often than
//! every [`MIN_GAP`], and every keep-alive otherwise, so the control plane can tell a quiet
//! sidecar from a lost one.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use waypost_client::{Client, model::NodeReport};

use crate::{snapshot::Snapshots, subscription::StreamStatus};

/// The shortest time between two reports: under a stream of changes, a sidecar reports at
/// most this often.
const MIN_GAP: Duration = Duration::from_millis(20);

/// How often staleness is looked at when nothing else happens (it has no notification).
const LOOK: Duration = Duration::from_secs(1);

/// After a failed report, the next try waits this long.
const RETRY: Duration = Duration::from_secs(1);

/// What the reports say that does not change while the sidecar runs.
pub(crate) struct Reporter {
    pub(crate) client: Client,
    pub(crate) node: String,
    /// The report with its fixed fields filled in.
    pub(crate) base: NodeReport,
    pub(crate) snapshots: Snapshots,
    pub(crate) status: Arc<StreamStatus>,
    pub(crate) keepalive: Duration,
}

impl Reporter {
    /// Reports until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut changes = self.snapshots.clone();
        // What the control plane was last told, and when.
        let mut told: Option<(Option<String>, u64, bool)> = None;
        let mut last = Instant::now();
        let mut failing = false;
        loop {
            let snapshot = self.snapshots.current();
            let now = (
                snapshot.epoch.clone(),
                snapshot.revision,
                self.status.stale(),
            );
            let news = told.as_ref() != Some(&now);
            let due = if failing {
                last.elapsed() >= RETRY
            } else {
                news || last.elapsed() >= self.keepalive
            };
            if due {
                let report = NodeReport {
                    epoch: now.0.clone(),
                    revision: now.1,
                    stale: now.2,
                    ..self.base.clone()
                };
                last = Instant::now();
                let sent = tokio::select! {
                    () = shutdown.cancelled() => return,
                    sent = tokio::time::timeout(
                        self.keepalive,
                        self.client.report_node(&self.node, &report),
                    ) => sent,
                };
                match sent {
                    Ok(Ok(_)) => {
                        if failing {
                            tracing::info!(node = %self.node, "reporting to the control plane again");
                        }
                        told = Some(now);
                        failing = false;
                    }
                    Ok(Err(err)) => {
                        if !failing {
                            tracing::warn!(node = %self.node, %err, "cannot report to the control plane");
                        }
                        failing = true;
                    }
                    Err(_) => {
                        if !failing {
                            tracing::warn!(node = %self.node, "a report to the control plane timed out");
                        }
                        failing = true;
                    }
                }
                tokio::time::sleep(MIN_GAP).await;
                continue;
            }
            let wait = if failing {
                RETRY.saturating_sub(last.elapsed())
            } else {
                LOOK.min(self.keepalive.saturating_sub(last.elapsed()))
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = changes.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// This host's name as a node name: the kernel's host name with anything a node name may not
/// hold replaced by `-` (`sidecar` when there is none).
pub(crate) fn host_node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .take(waypost_client::model::limits::MAX_NODE_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "sidecar".to_owned()
    } else {
        name
    }
}
