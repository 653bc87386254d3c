//! Active health checks: the sidecar runs the `check` of the instances it is responsible for
//! (those whose `node` is this sidecar's node name, or all of them with `check_all`) at the
//! declared interval and timeout, decides a health from the results ([`state`]: thresholds,
//! then flap damping), and reports to the control plane when that differs from what the
//! control plane shows. Comparing with the registry's view, not with the last report, makes
//! reporting self-healing: after a restart of either side the next check sets the record
//! straight. An instance critical for longer than `deregister_critical_after` is
//! deregistered.
//!
//! Damping lives here rather than in the control plane because the sidecar sees every result
//! and the control plane only the reports: held here, a flapping instance costs one report and
//! one revision, not one per change for every watcher, and the registry's state machine needs
//! no clock.

mod probe;
mod state;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::metrics::gauge::Gauge;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use waypost_client::Client;
use waypost_model::{
    Check, CheckReport, Health, Instance, InstanceRef, limits::MAX_CHECK_OUTPUT_LEN,
};

pub(crate) use probe::Prober;
use state::{CheckState, Event, Rules};

use crate::{metrics::Metrics, snapshot::Snapshots};

/// Which instances this sidecar checks, and what to do with long-critical ones.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// This host's node name: instances registered with it are checked here.
    pub node: Option<String>,
    /// Check every instance with a check (a single-host setup).
    pub check_all: bool,
    /// Deregister an instance critical for this long (zero: never). A flapping instance
    /// counts from the moment its check last decided `critical`: one that keeps coming back
    /// is not deregistered, one that flapped and then stayed down is.
    pub deregister_critical_after: Duration,
    /// PEM CA certificates trusted by HTTPS checks besides the system's.
    pub ca_cert: Option<PathBuf>,
}

impl CheckConfig {
    fn mine(&self, instance: &Instance) -> bool {
        instance.check.is_some()
            && (self.check_all
                || (self.node.is_some() && instance.node.as_deref() == self.node.as_deref()))
    }
}

struct Shared {
    snapshots: Snapshots,
    client: Client,
    prober: Prober,
    config: CheckConfig,
    metrics: Arc<Metrics>,
}

/// Keeps one check task per instance this sidecar is responsible for, following the snapshot.
pub(crate) async fn run(
    snapshots: Snapshots,
    client: Client,
    prober: Prober,
    config: CheckConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        prober,
        metrics,
        snapshots: snapshots.clone(),
        client,
        config,
    });
    // The check loops, owned here: dropping the set at the end stops them all.
    let mut checking = JoinSet::new();
    let mut running: HashMap<(String, String), (Check, AbortHandle)> = HashMap::new();
    let mut changes = snapshots.clone();
    loop {
        let snapshot = snapshots.current();
        let mut wanted = HashMap::new();
        for view in snapshot.services.values() {
            for instance in &view.instances {
                if shared.config.mine(instance)
                    && let Some(check) = &instance.check
                {
                    let key = (
                        instance.service.as_str().to_owned(),
                        instance.id.as_str().to_owned(),
                    );
                    wanted.insert(key, (**check).clone());
                }
            }
        }
        running.retain(|key, (check, task)| {
            let keep = wanted.get(key) == Some(check) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, check) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                let task = checking.spawn(check_loop(
                    shared.clone(),
                    slot.key().clone(),
                    check.clone(),
                ));
                slot.insert((check, task));
            }
        }
        // Forget the loops that ended (their instance left), so the set holds only live ones.
        while checking.try_join_next().is_some() {}
        drop(snapshot);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = changes.changed() => {}
        }
    }
}

async fn check_loop(shared: Arc<Shared>, (service, id): (String, String), check: Check) {
    let interval = Duration::from_secs(check.interval_seconds.into());
    let timeout = Duration::from_secs(check.timeout_seconds.into());
    let rules = Rules::from(&check);
    // Made at the first result, from the health the registry shows then.
    let mut state: Option<CheckState> = None;
    // What the last failed check said, and why the instance is held as flapping.
    let mut failure: Option<String> = None;
    let mut account: Option<String> = None;
    let mut holding = Holding::new(shared.metrics.checks_flapping.clone());
    loop {
        let outcome = shared.prober.probe(&check, timeout).await;
        let now = Instant::now();
        let recorded = shared
            .snapshots
            .current()
            .services
            .get(&service)
            .and_then(|v| v.instances.iter().find(|i| i.id.as_str() == id).cloned());
        let Some(recorded) = recorded else {
            return; // deregistered meanwhile
        };
        if let Err(text) = &outcome {
            failure = Some(text.chars().take(MAX_CHECK_OUTPUT_LEN).collect());
        }
        let state = state.get_or_insert_with(|| CheckState::new(rules, recorded.health, now));
        match state.observe(outcome.is_ok(), now) {
            Event::Held => {
                shared.metrics.check_flapping.inc();
                tracing::warn!(%service, %id, changes = state.recent_changes(), window = ?rules.flap_window, "check flapping: held out of rotation");
                account = Some(flapping_account(&rules, state.recent_changes(), &outcome));
            }
            Event::Released => {
                tracing::info!(%service, %id, health = ?state.health(), "check stable again: released");
            }
            Event::Decided(_) | Event::Nothing => {}
        }
        if state.held() && account.is_none() {
            // Held from the start: the registry showed it flapping when this loop began.
            account = Some(format!(
                "flapping (as the registry showed when this sidecar began checking); out of \
                 rotation until stable for {} s",
                rules.flap_window.as_secs()
            ));
        }
        holding.set(state.held());
        let health = state.health();
        if recorded.health != health {
            let output = match health {
                Health::Passing => None,
                Health::Critical => failure.clone(),
                Health::Flapping => account.clone(),
            };
            let report = CheckReport {
                instance: InstanceRef::by_id(&service, &id),
                health,
                output: output.clone(),
            };
            match shared.client.report_check(&report).await {
                Ok(_) => {
                    tracing::info!(%service, %id, ?health, output = output.as_deref().unwrap_or(""), "health changed")
                }
                Err(err) => tracing::warn!(%service, %id, %err, "cannot report a check result"),
            }
        }
        if !state.held() {
            account = None;
        }
        let limit = shared.config.deregister_critical_after;
        if let Some(since) = state.critical_since()
            && !limit.is_zero()
            && now.duration_since(since) >= limit
        {
            match shared
                .client
                .deregister(InstanceRef::by_id(&service, &id))
                .await
            {
                Ok(_) => {
                    tracing::warn!(%service, %id, critical_for = ?since.elapsed(), "deregistered after being critical too long");
                    return;
                }
                Err(err) => {
                    tracing::warn!(%service, %id, %err, "cannot deregister a critical instance")
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// What a flapping instance's `health_output` says: how many changes in which window, until
/// when, and the last result.
fn flapping_account(rules: &Rules, changes: usize, last: &Result<(), String>) -> String {
    let window = rules.flap_window.as_secs();
    let last = match last {
        Ok(()) => "passed",
        Err(text) => text,
    };
    let text = format!(
        "flapping: {changes} changes between passing and critical within {window} s (at most \
         {} allowed); out of rotation until stable for {window} s; last check: {last}",
        rules.flap_changes,
    );
    text.chars().take(MAX_CHECK_OUTPUT_LEN).collect()
}

/// This loop's share of `waypost_sidecar_checks_flapping`, given back however the loop ends
/// (its instance gone, its check changed, shutdown: the task is aborted then).
struct Holding {
    gauge: Gauge,
    on: bool,
}

impl Holding {
    fn new(gauge: Gauge) -> Self {
        Self { gauge, on: false }
    }

    fn set(&mut self, on: bool) {
        if on != self.on {
            if on {
                self.gauge.inc();
            } else {
                self.gauge.dec();
            }
            self.on = on;
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.set(false);
    }
}
