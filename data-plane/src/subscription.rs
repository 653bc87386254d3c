//! The one writer: follows the control plane's change stream, applies each event to the
//! [`Mirror`], builds and publishes the next [`Snapshot`](crate::snapshot::Snapshot), and
//! saves it to disk at most once a second.
//!
//! Events that are already waiting are applied together and published once, so a burst of
//! changes costs one rebuild. A revision gap is never guessed across: the stream is asked for a
//! fresh snapshot. Instances registered by host name are resolved here, when the snapshot is
//! built (and again every [`RESOLVE_EVERY`]), so DNS answers carry addresses, not CNAMEs.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use waypost_client::{StreamEvent, WatchStream};
use waypost_model::WatchEvent;

use crate::{
    dns::records::RecordBuilder,
    metrics::{Metrics, now_ms},
    persist::SnapshotFile,
    snapshot::{self, Changed, Mirror, Publisher, Snapshots},
};

/// How often host names are resolved again.
pub(crate) const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// How long one host name lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most often the snapshot file is rewritten.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// How the subscription is doing: written by the subscription task alone, read by `/health`,
/// `/ready` and `/metrics`.
#[derive(Debug, Default)]
pub struct StreamStatus {
    /// The stream is connected and has delivered its snapshot.
    pub(crate) live: AtomicBool,
    /// A snapshot (live or from disk) is being served.
    pub(crate) serving: AtomicBool,
    /// Unix milliseconds when the stream was last known to be live (0: never).
    pub(crate) live_at_ms: AtomicU64,
    /// Reconnections so far.
    pub(crate) reconnects: AtomicU64,
}

impl StreamStatus {
    /// `true` while the answers may be out of date: not connected, or never synchronised.
    pub fn stale(&self) -> bool {
        !self.live.load(Ordering::Relaxed)
    }

    /// `true` once any snapshot is served.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// How far behind the control plane the answers may be: 0 while live, else the seconds
    /// since the stream was last live (since start when it never was).
    pub fn lag_seconds(&self, started_ms: u64) -> f64 {
        if !self.stale() {
            return 0.0;
        }
        let since = match self.live_at_ms.load(Ordering::Relaxed) {
            0 => started_ms,
            at => at,
        };
        now_ms().saturating_sub(since) as f64 / 1000.0
    }

    pub(crate) fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Relaxed);
        if live {
            self.live_at_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Marks the stream as live now (called for every applied event while connected).
    pub(crate) fn touch(&self) {
        if !self.stale() {
            self.live_at_ms.store(now_ms(), Ordering::Relaxed);
        }
    }
}

/// The writer's state: the stream it follows, the mirror it applies events to, and where it
/// publishes and saves the result.
pub(crate) struct Subscription {
    events: WatchStream,
    mirror: Mirror,
    publisher: Publisher,
    records: RecordBuilder,
    /// Instances' host names and what they resolved to.
    names: HashMap<String, Vec<IpAddr>>,
    status: Arc<StreamStatus>,
    metrics: Arc<Metrics>,
    file: Option<SnapshotFile>,
    /// DNS answers services' virtual IPs.
    vip_mode: bool,
}

impl Subscription {
    /// A subscription to `events`, building DNS records with `records`, saving to `file`;
    /// with the read handle on what it will publish.
    pub(crate) fn new(
        events: WatchStream,
        records: RecordBuilder,
        status: Arc<StreamStatus>,
        metrics: Arc<Metrics>,
        file: Option<SnapshotFile>,
        vip_mode: bool,
    ) -> (Self, Snapshots) {
        let (publisher, snapshots) = snapshot::channel();
        let subscription = Self {
            events,
            mirror: Mirror::default(),
            publisher,
            records,
            names: HashMap::new(),
            status,
            metrics,
            file,
            vip_mode,
        };
        (subscription, snapshots)
    }

    /// Serves the saved snapshot, if any, until the control plane's arrives.
    pub(crate) async fn restore(&mut self) {
        let Some(saved) = self.file.as_ref().and_then(SnapshotFile::load) else {
            return;
        };
        if self.mirror.apply(saved).is_ok() {
            self.publish(Changed::All).await;
            self.status.serving.store(true, Ordering::Relaxed);
            tracing::info!(
                revision = self.mirror.revision,
                "serving the saved snapshot until the control plane answers"
            );
        }
    }

    /// Follows the stream until `shutdown`, then saves the last snapshot if it changed.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut save = tokio::time::interval(SAVE_EVERY);
        let mut resolve = tokio::time::interval(RESOLVE_EVERY);
        resolve.reset();
        let mut dirty = false;
        // At most one save in flight, off this task: a write (with its fsync) must never hold
        // back the next change.
        let mut saving: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                next = self.events.next() => {
                    let Some(first) = next else { break };
                    let arrived = Instant::now();
                    let mut changed = self.handle(first);
                    // Apply whatever else is already waiting, then publish once.
                    while let Some(Some(more)) = self.events.next().now_or_never() {
                        changed = merge(changed, self.handle(more));
                    }
                    if changed != Changed::Nothing {
                        self.publish(changed).await;
                        self.metrics.apply_seconds.observe(arrived.elapsed().as_secs_f64());
                        dirty = true;
                    }
                }
                _ = save.tick(), if dirty => {
                    if saving.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                        dirty = false;
                        saving = self.save();
                    }
                }
                _ = resolve.tick() => {
                    if self.resolve_all().await {
                        self.publish(Changed::All).await;
                    }
                }
            }
        }
        if let Some(pending) = saving {
            let _ = pending.await;
        }
        if dirty && let Some(last) = self.save() {
            let _ = last.await;
        }
    }

    /// Applies one stream event; returns what changed.
    fn handle(&mut self, event: StreamEvent) -> Changed {
        match event {
            StreamEvent::Connected { endpoint } => {
                tracing::info!(%endpoint, "following the control plane");
                self.status.set_live(true);
                Changed::Nothing
            }
            StreamEvent::Disconnected { endpoint, error } => {
                if !self.status.stale() {
                    tracing::warn!(%endpoint, %error, "change stream lost; serving the last snapshot");
                }
                self.status.set_live(false);
                self.status.reconnects.fetch_add(1, Ordering::Relaxed);
                Changed::Nothing
            }
            StreamEvent::Event { event, .. } => {
                let is_snapshot = matches!(*event, WatchEvent::Snapshot { .. });
                match self.mirror.apply(*event) {
                    Ok(changed) => {
                        if is_snapshot {
                            self.status.serving.store(true, Ordering::Relaxed);
                            self.metrics.snapshots.inc();
                        }
                        self.status.touch();
                        changed
                    }
                    Err(gap) => {
                        tracing::warn!(
                            applied = gap.applied,
                            received = gap.received,
                            "revision gap in the change stream; asking for a fresh snapshot"
                        );
                        self.status.set_live(false);
                        self.events.resync();
                        Changed::Nothing
                    }
                }
            }
        }
    }

    async fn publish(&mut self, changed: Changed) {
        // Only the changed services' names: a name already resolved waits for the next round.
        let missing: Vec<String> = self
            .mirror
            .host_names_in(&changed)
            .into_iter()
            .filter(|n| !self.names.contains_key(n))
            .collect();
        for (name, addrs) in resolve(missing).await {
            self.names.insert(name, addrs);
        }
        let previous = self.publisher.current();
        let snapshot = self.mirror.build(
            &previous,
            &changed,
            &self.names,
            &self.records,
            self.vip_mode,
        );
        self.metrics.revision.set(snapshot.revision as i64);
        self.metrics.services.set(snapshot.services.len() as i64);
        self.metrics
            .protected_services
            .set(snapshot.protected as i64);
        self.metrics.instances.set(snapshot.instances as i64);
        self.publisher.publish(snapshot);
    }

    /// Resolves every host name again; `true` when an answer changed.
    async fn resolve_all(&mut self) -> bool {
        let wanted = self.mirror.host_names();
        self.names.retain(|n, _| wanted.contains(n));
        let mut changed = false;
        for (name, addrs) in resolve(wanted.into_iter().collect()).await {
            if self.names.get(&name) != Some(&addrs) {
                changed = true;
                self.names.insert(name, addrs);
            }
        }
        changed
    }

    /// Starts writing the current snapshot to disk on a blocking thread.
    fn save(&self) -> Option<tokio::task::JoinHandle<()>> {
        let file = self.file.clone()?;
        let snapshot = self.publisher.current();
        Some(tokio::task::spawn_blocking(move || {
            if let Err(err) = file.save(&snapshot.to_event()) {
                tracing::warn!(%err, "cannot save the snapshot");
            }
        }))
    }
}

fn merge(a: Changed, b: Changed) -> Changed {
    match (a, b) {
        (Changed::All, _) | (_, Changed::All) => Changed::All,
        (Changed::Nothing, x) | (x, Changed::Nothing) => x,
        (Changed::Services(mut x), Changed::Services(y)) => {
            x.extend(y);
            Changed::Services(x)
        }
    }
}

/// Looks up host names concurrently; a name that fails to resolve gets no addresses (and is
/// tried again at the next round).
async fn resolve(names: Vec<String>) -> Vec<(String, Vec<IpAddr>)> {
    let lookups = names.into_iter().map(|name| async move {
        let found = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host(format!("{name}:0")),
        )
        .await;
        let addrs: BTreeSet<IpAddr> = match found {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
            Ok(Err(err)) => {
                tracing::warn!(host = %name, %err, "cannot resolve an instance's host name");
                BTreeSet::new()
            }
            Err(_) => {
                tracing::warn!(host = %name, "resolving an instance's host name timed out");
                BTreeSet::new()
            }
        };
        (name, addrs.into_iter().collect())
    });
    futures_util::future::join_all(lookups).await
}
