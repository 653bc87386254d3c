//! The sidecars this control plane hears from, and which of them have applied a revision.
//!
//! Each sidecar reports itself (`PUT /nodes/{node}`) to whichever member it talks to; that
//! member passes the report on to every other member (`Cluster::share_node`), so every
//! member holds the whole table and answers `/nodes`, `/propagation` and `?wait=propagated`
//! from it, with no leader in the way and nothing lost when the leader changes. The table is
//! soft state, as Consul keeps agent liveness out of its log: a restarted member knows a
//! sidecar again at its next report, which comes at once when a change reaches the sidecar
//! and within its keep-alive otherwise. Writing it to the Raft log would cost a durable write
//! per report to say what the next report says anyway.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use waypost_model::{
    Behind, Epoch, NodeReport, NodeState, NodeStatus, NodesResponse, Propagation, Revision,
    query::parse_epoch,
};

use crate::registry::Registry;

/// The table's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NodesConfig {
    /// Silent for this long: `lost`.
    pub lost_after: Duration,
    /// Silent for this long: forgotten.
    pub forget_after: Duration,
    /// Most sidecars known at once.
    pub max_nodes: usize,
}

/// A new sidecar was refused: the table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the control plane already knows {0} sidecars (--max-nodes)")]
pub struct NodesFull(pub usize);

/// The head revisions this member applied and when: how long a sidecar has been behind.
/// Bounded; a sidecar further behind than the oldest entry is as late as that entry says.
const TIMELINE_LEN: usize = 4_096;

/// How often waiters look again when no report came (a sidecar may have become lost).
const RECHECK: Duration = Duration::from_secs(1);

/// A report and when it was heard.
#[derive(Debug)]
struct Seen {
    report: NodeReport,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    table: BTreeMap<String, Seen>,
    timeline: VecDeque<(Revision, Instant)>,
}

/// The sidecars' table. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Nodes {
    config: NodesConfig,
    registry: Arc<Registry>,
    inner: Mutex<Inner>,
    /// Moves on every report that may finish a wait (a new revision, a change of staleness,
    /// a new sidecar).
    changed: watch::Sender<u64>,
}

impl Nodes {
    /// An empty table over `registry`'s revisions.
    pub fn new(config: NodesConfig, registry: Arc<Registry>) -> Self {
        Self {
            config,
            registry,
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes `node`'s report, heard `age` ago (zero first-hand; through another member, the
    /// time it took to get here). An older report than the one held is ignored.
    pub fn report(&self, node: &str, report: NodeReport, age: Duration) -> Result<(), NodesFull> {
        let now = Instant::now();
        let at = now.checked_sub(age).unwrap_or(now);
        let wake = {
            let mut inner = self.lock();
            let known = inner.table.len();
            match inner.table.get_mut(node) {
                Some(seen) if seen.at > at => false,
                Some(seen) => {
                    let wake = seen.report.revision != report.revision
                        || seen.report.stale != report.stale
                        || seen.report.epoch != report.epoch;
                    *seen = Seen { report, at };
                    wake
                }
                None if known >= self.config.max_nodes => {
                    return Err(NodesFull(self.config.max_nodes));
                }
                None => {
                    inner.table.insert(node.to_owned(), Seen { report, at });
                    true
                }
            }
        };
        if wake {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    /// Every sidecar known, by name.
    pub fn list(&self) -> NodesResponse {
        let head = self.registry.head();
        let now = Instant::now();
        let inner = self.lock();
        let nodes: Vec<NodeStatus> = inner
            .table
            .iter()
            .map(|(name, seen)| self.status_of(&inner, name, seen, head, now))
            .collect();
        NodesResponse {
            head,
            count: nodes.len(),
            nodes,
        }
    }

    /// One sidecar, if known.
    pub fn status(&self, node: &str) -> Option<NodeStatus> {
        let head = self.registry.head();
        let inner = self.lock();
        let seen = inner.table.get(node)?;
        Some(self.status_of(&inner, node, seen, head, Instant::now()))
    }

    fn status_of(
        &self,
        inner: &Inner,
        name: &str,
        seen: &Seen,
        head: Revision,
        now: Instant,
    ) -> NodeStatus {
        let applied = applied(&seen.report, self.registry.epoch());
        let lag_ms = if applied >= head {
            0
        } else {
            millis(now.saturating_duration_since(first_after(&inner.timeline, applied, now)))
        };
        NodeStatus {
            node: name.to_owned(),
            state: self.state(seen, now),
            last_contact_ms: millis(now.saturating_duration_since(seen.at)),
            lag_revisions: head.saturating_sub(applied),
            lag_ms,
            report: seen.report.clone(),
        }
    }

    fn state(&self, seen: &Seen, now: Instant) -> NodeState {
        if now.saturating_duration_since(seen.at) > self.config.lost_after {
            NodeState::Lost
        } else {
            NodeState::Live
        }
    }

    /// Which sidecars have applied `revision` now: every live one, or those in `names`.
    pub fn propagation(&self, revision: Revision, names: &[String]) -> Propagation {
        let epoch = self.registry.epoch();
        let now = Instant::now();
        let inner = self.lock();
        let mut answer = Propagation {
            revision,
            complete: true,
            applied: Vec::new(),
            behind: Vec::new(),
            lost: Vec::new(),
            waited_ms: 0,
        };
        let mut judge = |name: &str, seen: Option<&Seen>, named: bool| {
            let Some(seen) = seen else {
                answer.complete = false;
                answer.behind.push(Behind {
                    node: name.to_owned(),
                    revision: None,
                    stale: false,
                });
                return;
            };
            let lost = self.state(seen, now) == NodeState::Lost;
            if lost {
                answer.lost.push(name.to_owned());
            }
            if applied(&seen.report, epoch) >= revision {
                answer.applied.push(name.to_owned());
            } else if named || !lost {
                answer.complete = false;
                answer.behind.push(Behind {
                    node: name.to_owned(),
                    revision: Some(seen.report.revision),
                    stale: seen.report.stale,
                });
            }
        };
        if names.is_empty() {
            for (name, seen) in &inner.table {
                judge(name, Some(seen), false);
            }
        } else {
            let names: std::collections::BTreeSet<&String> = names.iter().collect();
            for name in names {
                judge(name, inner.table.get(name), true);
            }
        }
        answer
    }

    /// Waits until every live sidecar (or every one in `names`) has applied `revision`, or
    /// `timeout` passes; answers either way.
    pub async fn wait(
        &self,
        revision: Revision,
        names: &[String],
        timeout: Duration,
    ) -> Propagation {
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let mut answer = self.propagation(revision, names);
            let now = tokio::time::Instant::now();
            if answer.complete || now >= deadline {
                answer.waited_ms = millis(now - start);
                return answer;
            }
            let _ = tokio::time::timeout_at(deadline.min(now + RECHECK), changed.changed()).await;
        }
    }

    /// Keeps the timeline of applied revisions and forgets sidecars silent for too long,
    /// until `shutdown`.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut committed = self.registry.subscribe();
        let mut sweep = tokio::time::interval(self.config.lost_after.min(Duration::from_secs(10)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = committed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let revision = committed.borrow_and_update().revision;
                    let mut inner = self.lock();
                    let timeline = &mut inner.timeline;
                    // A snapshot installed, or a new epoch: the old revisions mean nothing.
                    if timeline.back().is_some_and(|(r, _)| *r > revision) {
                        timeline.clear();
                    }
                    if timeline.back().is_none_or(|(r, _)| *r < revision) {
                        if timeline.len() == TIMELINE_LEN {
                            timeline.pop_front();
                        }
                        timeline.push_back((revision, Instant::now()));
                    }
                }
                _ = sweep.tick() => {
                    let forget = self.config.forget_after;
                    let now = Instant::now();
                    self.lock()
                        .table
                        .retain(|_, seen| now.saturating_duration_since(seen.at) <= forget);
                }
            }
        }
    }
}

/// The revision `report` shows applied in this epoch (0 in another, or before its first
/// snapshot).
fn applied(report: &NodeReport, epoch: Epoch) -> Revision {
    match report.epoch.as_deref().and_then(parse_epoch) {
        Some(e) if e == epoch => report.revision,
        _ => 0,
    }
}

/// When the first revision after `applied` was applied here (the oldest known when the
/// timeline no longer reaches back that far; `now` when it holds none).
fn first_after(
    timeline: &VecDeque<(Revision, Instant)>,
    applied: Revision,
    now: Instant,
) -> Instant {
    let i = timeline.partition_point(|(r, _)| *r <= applied);
    timeline
        .get(i)
        .or(timeline.front())
        .map_or(now, |(_, at)| *at)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_revision_after_a_sidecars_is_found_in_the_timeline() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let timeline: VecDeque<_> = [(5, at(0)), (9, at(10)), (12, at(20))].into();
        let now = at(100);
        assert_eq!(first_after(&timeline, 4, now), at(0));
        assert_eq!(first_after(&timeline, 5, now), at(10));
        assert_eq!(first_after(&timeline, 10, now), at(20));
        // Behind the oldest entry: as late as the oldest says.
        assert_eq!(first_after(&timeline, 0, now), at(0));
        assert_eq!(first_after(&VecDeque::new(), 3, now), now);
    }

    #[test]
    fn a_revision_counts_only_in_the_current_epoch() {
        let report = NodeReport {
            version: "1".into(),
            epoch: Some("00000000000000ff".into()),
            revision: 7,
            ..NodeReport::default()
        };
        assert_eq!(applied(&report, 0xff), 7);
        assert_eq!(applied(&report, 0xfe), 0);
        assert_eq!(
            applied(
                &NodeReport {
                    epoch: None,
                    ..report
                },
                0xff
            ),
            0
        );
    }
}
