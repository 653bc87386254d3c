//! The registry: the state machine of the control plane.
//!
//! Every change arrives as a [`Command`] from the replicated log and is applied here, in log
//! order, on every node ([`apply`]): the indexes in [`state`] change, the next revision is
//! given and the change is appended to the [`changes`] log. Applying is a pure function of the
//! state and the command, so every node gives the same revision to the same change.
//!
//! What is not replicated lives here too, per node: heartbeat deadlines (a heartbeat only moves
//! a deadline, no revision, no log entry) and the expiry queue. Only the leader turns overdue
//! deadlines into [`Command::Expire`] ([`Registry::expire_due`]); a new leader first gives
//! every instance a fresh TTL plus a grace ([`Registry::lead`]).
//!
//! The one lock is a `std::sync::Mutex` held for microseconds and never across an `.await`.
//! Readers (watch streams, blocking queries) follow the applied head, published on a
//! `tokio::sync::watch`: an entry is applied only once a majority has it on disk, so nobody
//! sees a change that a crash could still lose.

mod apply;
pub(crate) mod changes;
mod error;
pub mod expiry;
pub(crate) mod state;
mod vips;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::watch;
use waypost_model::{
    DiscoveredInstance, Epoch, Health, Instance, InstanceId, InstanceRef, RegisterRequest,
    Revision, ServiceName, ServiceSummary, Status, Timestamp,
};

pub(crate) use self::changes::{Change, ChangeKind, Stale};
pub use self::error::RegistryError;
pub use self::vips::VipRange;
use self::{
    changes::ChangeLog,
    expiry::{ExpiryQueue, HOLD_RECHECK, Key, Preservation, Queued, SelfPreservation, Verdict},
    state::{Entry, State},
    vips::Vips,
};
use crate::{
    command::{Command, Image, Rejection},
    metrics::Metrics,
};

/// What the registry needs from the configuration. In a cluster, the limits and the VIP range
/// must be the same on every node: applying a command checks them.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// TTL for registrations that give none, in seconds.
    pub default_ttl_seconds: u32,
    /// The heartbeat interval suggested to clients (capped at a third of each instance's TTL).
    pub heartbeat_interval: Duration,
    /// Changes kept for watchers to resume from.
    pub history: usize,
    /// Most instances held at once.
    pub max_instances: usize,
    /// Most instances in one service.
    pub max_instances_per_service: usize,
    /// The self-preservation rule.
    pub self_preservation: SelfPreservation,
    /// Where services' virtual IPs come from (`None`: no VIPs).
    pub vip_range: Option<VipRange>,
}

/// The applied head, as published to readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The newest revision applied (so committed by a majority and durable on it).
    pub revision: Revision,
    /// The last log index applied.
    pub index: u64,
    /// The store failed: nothing more will be applied.
    pub failed: bool,
}

/// A successful registration.
#[derive(Debug)]
pub struct Registered {
    /// The stored instance.
    pub instance: Arc<Instance>,
    /// New (201) or updated (200).
    pub created: bool,
}

/// A renewed instance.
#[derive(Debug)]
pub struct Renewed {
    /// Its service.
    pub service: ServiceName,
    /// Its id.
    pub id: InstanceId,
    /// Its TTL in seconds.
    pub ttl_seconds: u32,
    /// Wall-clock deadline.
    pub expires_at: SystemTime,
}

/// Discovery filters.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// Every one of these metadata pairs.
    pub meta: Vec<(String, String)>,
    /// `true` (default): only `up` instances; `false`: draining ones too.
    pub healthy_only: bool,
}

impl Filter {
    fn matches(&self, i: &Instance) -> bool {
        (!self.healthy_only || i.takes_work())
            && self.tags.iter().all(|t| i.tags.iter().any(|it| it == t))
            && self
                .meta
                .iter()
                .all(|(k, v)| i.metadata.get(k).is_some_and(|iv| iv == v))
    }
}

/// Liveness details for `/health`.
#[derive(Debug, Clone, Copy)]
pub struct RegistryStatus {
    /// Registered instances.
    pub instances: usize,
    /// Expiry is held by self-preservation.
    pub self_preservation_active: bool,
    /// The store failed.
    pub store_failed: bool,
    /// The applied head revision.
    pub revision: Revision,
}

struct Inner {
    state: State,
    changes: ChangeLog,
    expiry: ExpiryQueue,
    head: Revision,
    /// The last log index applied.
    applied: u64,
    preservation: Preservation,
    vips: Option<Vips>,
    /// This node decides expiry (it is the leader).
    leading: bool,
}

/// The registry's state machine. Cheap to share behind an `Arc`.
pub struct Registry {
    inner: Mutex<Inner>,
    /// A copy of `Inner::head` readable without the lock (stamped on every HTTP answer).
    head: AtomicU64,
    /// The cluster's epoch (0 until the first leader names it).
    epoch: AtomicU64,
    committed: watch::Sender<Committed>,
    failed: AtomicBool,
    config: RegistryConfig,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Builds the registry from the image the store held (a snapshot, or nothing), applied up
    /// to log `index`. Instances get a fresh TTL from now, so a restart never mass-expires.
    pub(crate) fn new(
        config: RegistryConfig,
        image: Image,
        index: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (committed, _) = watch::channel(Committed {
            revision: 0,
            index: 0,
            failed: false,
        });
        let registry = Self {
            head: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                state: State::default(),
                changes: ChangeLog::new(0, config.history),
                expiry: ExpiryQueue::default(),
                head: 0,
                applied: 0,
                preservation: Preservation::new(config.self_preservation),
                vips: None,
                leading: false,
            }),
            committed,
            failed: AtomicBool::new(false),
            config,
            metrics,
        };
        registry.load(image, index, Instant::now());
        registry
    }

    /// Replaces the whole state with `image` (start-up, or a snapshot from the leader). The
    /// change log starts again at the image's revision: watchers behind it get a snapshot.
    pub(crate) fn load(&self, image: Image, index: u64, now: Instant) {
        let mut inner = self.lock();
        let mut state = State::default();
        let mut expiry = ExpiryQueue::default();
        let mut vips = self.config.vip_range.map(Vips::new);
        if let Some(vips) = vips.as_mut() {
            for (service, vip) in &image.vips {
                vips.restore(service, *vip);
            }
        }
        for instance in image.instances {
            if let (Some(vips), Some(vip)) = (vips.as_mut(), instance.vip) {
                vips.restore(&instance.service, vip);
            }
            let deadline = now + Duration::from_secs(instance.ttl_seconds.into());
            let registered = instance.registered_at.to_system_time();
            let revision = instance.revision;
            let key = (instance.service.clone(), instance.id.clone());
            let queued = expiry.schedule(deadline, key, revision);
            state.insert(
                Entry::new(Arc::new(instance), registered, deadline, queued),
                revision,
            );
        }
        for (name, svc) in &state.services {
            self.metrics.set_instances(name, svc.instances.len());
        }
        self.metrics.revision.set(image.revision as i64);
        inner.state = state;
        inner.expiry = expiry;
        inner.vips = vips;
        inner.changes = ChangeLog::new(image.revision, self.config.history);
        inner.head = image.revision;
        inner.applied = index;
        inner.preservation = Preservation::new(self.config.self_preservation);
        self.head.store(image.revision, Ordering::Release);
        self.epoch.store(image.epoch, Ordering::Release);
        self.committed.send_replace(Committed {
            revision: image.revision,
            index,
            failed: self.failed.load(Ordering::Acquire),
        });
    }

    /// The whole state, for a snapshot.
    pub(crate) fn image(&self) -> Image {
        let inner = self.lock();
        Image {
            epoch: self.epoch(),
            revision: inner.head,
            instances: inner.state.instances(None),
            vips: inner.vips.as_ref().map(Vips::assigned).unwrap_or_default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the indexes half-changed in a way later
        // code depends on (each write completes before the next line), so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The epoch of this revision history (the cluster's).
    pub fn epoch(&self) -> Epoch {
        self.epoch.load(Ordering::Acquire)
    }

    /// Follows the applied head.
    pub fn subscribe(&self) -> watch::Receiver<Committed> {
        self.committed.subscribe()
    }

    /// The heartbeat interval to suggest for an instance with `ttl_seconds`.
    pub fn interval_hint(&self, ttl_seconds: u32) -> u32 {
        let hint = self.config.heartbeat_interval.as_secs().max(1) as u32;
        hint.min((ttl_seconds / 3).max(1))
    }

    /// Marks the store failed: readers stop waiting, writes are refused.
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.committed.send_modify(|c| c.failed = true);
    }

    /// Refuses writes once the store failed.
    pub fn ensure_writable(&self) -> Result<(), RegistryError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(RegistryError::StoreUnavailable);
        }
        Ok(())
    }

    /// Checks a registration and turns it into the command that applies it: the instance as
    /// registered now, before the registry merges what it keeps (health, VIP, registration
    /// time of an existing instance).
    pub fn prepare_register(&self, req: &RegisterRequest) -> Result<Command, RegistryError> {
        let reg = req.validate(self.config.default_ttl_seconds)?;
        self.ensure_writable()?;
        Ok(Command::Register {
            instance: Instance {
                id: reg.id,
                service: reg.service,
                address: reg.address,
                host: reg.endpoint.host,
                port: reg.endpoint.port,
                tags: reg.tags,
                metadata: reg.metadata,
                weight: reg.weight,
                status: reg.status,
                ttl_seconds: reg.ttl_seconds,
                check: reg.check.map(Box::new),
                node: reg.node.map(String::into_boxed_str),
                health: Health::Passing,
                health_output: None,
                vip: None,
                registered_at: Timestamp::now(),
                revision: 0,
            },
        })
    }

    /// On the leader: when `command` would change nothing visible (the same registration
    /// again, a drain of a draining instance, the health it already has), its answer, after
    /// renewing the instance's deadline for a registration; such writes need no log entry.
    pub fn unchanged(&self, command: &Command) -> Option<crate::command::Reply> {
        use crate::command::Reply;
        let now = Instant::now();
        let mut inner = self.lock();
        match command {
            Command::Register { instance } => {
                let entry = inner.state.get_mut(&instance.service, &instance.id)?;
                let merged = apply::merge(&entry.instance, instance);
                if merged != *entry.instance {
                    return None;
                }
                let found = entry.instance.clone();
                let ttl = Duration::from_secs(found.ttl_seconds.into());
                inner.state.renew(&found.service, &found.id, now + ttl);
                Some(Reply::Registered {
                    instance: found,
                    created: false,
                })
            }
            Command::Drain { target, draining } => {
                let (service, identity) = target.resolve().ok()?;
                let found = inner.state.find(&service, &identity)?;
                let want = if *draining {
                    Status::Draining
                } else {
                    Status::Up
                };
                (found.instance.status == want).then(|| Reply::Amended {
                    instance: found.instance.clone(),
                })
            }
            Command::Check { target, health, .. } => {
                let (service, identity) = target.resolve().ok()?;
                let found = inner.state.find(&service, &identity)?;
                (found.instance.health == *health).then(|| Reply::Amended {
                    instance: found.instance.clone(),
                })
            }
            _ => None,
        }
    }

    /// Renews an instance's deadline. No revision, no log entry.
    pub fn heartbeat(&self, r: &InstanceRef) -> Result<Renewed, RegistryError> {
        self.heartbeat_at(r, Instant::now())
    }

    /// [`Registry::heartbeat`] at a given instant.
    pub(crate) fn heartbeat_at(
        &self,
        r: &InstanceRef,
        now: Instant,
    ) -> Result<Renewed, RegistryError> {
        let (service, identity) = r.resolve()?;
        let mut inner = self.lock();
        let Some(found) = inner.state.find(&service, &identity) else {
            drop(inner);
            self.metrics.heartbeat(false);
            return Err(RegistryError::NotFound {
                id: identity_text(&identity),
                service,
            });
        };
        let id = found.instance.id.clone();
        let ttl_seconds = found.instance.ttl_seconds;
        let ttl = Duration::from_secs(ttl_seconds.into());
        inner.state.renew(&service, &id, now + ttl);
        drop(inner);
        self.metrics.heartbeat(true);
        Ok(Renewed {
            service,
            id,
            ttl_seconds,
            expires_at: SystemTime::now() + ttl,
        })
    }

    /// Renews instances by key, as forwarded by another node (which answered the client):
    /// unknown ones are skipped.
    pub(crate) fn renew_keys(&self, keys: &[(ServiceName, InstanceId)], now: Instant) {
        let mut inner = self.lock();
        for (service, id) in keys {
            if let Some(entry) = inner.state.get_mut(service, id) {
                let ttl = Duration::from_secs(entry.instance.ttl_seconds.into());
                inner.state.renew(service, id, now + ttl);
            }
        }
    }

    /// Becomes the node that decides expiry (`true`) or stops (`false`). A new leader does
    /// not know when each instance last heartbeated elsewhere, so it gives every instance a
    /// fresh TTL plus `grace` (the election timeout) before expiring anything, as etcd does
    /// with leases.
    pub(crate) fn lead(&self, leading: bool, grace: Duration, now: Instant) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.leading == leading {
            return;
        }
        inner.leading = leading;
        inner.preservation = Preservation::new(self.config.self_preservation);
        let mut expiry = ExpiryQueue::default();
        for svc in inner.state.services.values_mut() {
            for entry in svc.instances.values_mut() {
                let ttl = Duration::from_secs(entry.instance.ttl_seconds.into());
                entry.deadline = now + ttl + grace;
                entry.held = false;
                let key = (entry.instance.service.clone(), entry.instance.id.clone());
                entry.queued = expiry.schedule(entry.deadline, key, entry.queued.registration);
            }
        }
        inner.state.held = 0;
        inner.expiry = expiry;
        self.metrics.set_self_preservation(false, 0);
    }

    /// On the leader: the expiries due at `now`, as commands to propose, unless
    /// self-preservation holds them. On other nodes: only keeps the queue small.
    ///
    /// Nothing is removed here: removal happens when the command is applied. Each decided
    /// instance is queued again a little later, so that an expiry lost with a leadership
    /// change is decided again.
    pub fn expire_due(&self, now: Instant) -> Vec<Command> {
        if self.failed.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut candidates: Vec<(Instant, Key, Queued)> = Vec::new();
        let mut held_among = 0;
        for (key, queued) in inner.expiry.pop_due(now) {
            let Some(entry) = inner.state.get_mut(&key.0, &key.1) else {
                continue; // removed since it was queued
            };
            if entry.queued != queued {
                continue; // stale: the instance's live entry is another one
            }
            if entry.deadline <= now && inner.leading {
                held_among += usize::from(entry.held);
                candidates.push((entry.deadline, key, queued));
            } else {
                // Renewed meanwhile: queue it again at its deadline. Not ours to decide (a
                // follower): look again a TTL later, which keeps the queue small.
                let at = if inner.leading {
                    entry.deadline
                } else {
                    entry
                        .deadline
                        .max(now + Duration::from_secs(entry.instance.ttl_seconds.into()))
                };
                entry.queued = inner.expiry.schedule(at, key, queued.registration);
            }
        }
        if candidates.is_empty() {
            self.metrics
                .set_self_preservation(inner.preservation.active(), inner.state.held);
            return Vec::new();
        }
        // Longest silent first: a partial release expires those, and holds the rest.
        candidates.sort_unstable_by_key(|(deadline, ..)| *deadline);
        let verdict = inner.preservation.judge(
            now,
            candidates.len(),
            inner.state.count,
            inner.state.held - held_among,
        );
        let expire = match verdict {
            Verdict::Hold { became_active } => {
                if became_active {
                    tracing::warn!(
                        overdue = candidates.len(),
                        instances = inner.state.count,
                        max_hold_s = self.config.self_preservation.max_hold.as_secs(),
                        "self-preservation: holding expiry, too many instances stopped heartbeating at once"
                    );
                }
                0
            }
            Verdict::Expire { count } => count,
        };
        let held = candidates.split_off(expire);
        if !held.is_empty() && expire > 0 {
            tracing::warn!(
                expired = expire,
                still_held = held.len(),
                "self-preservation: releasing instances held longer than the maximum hold"
            );
        }
        self.metrics.held.inc_by(held.len() as u64);
        let again = now + HOLD_RECHECK;
        let mut commands = Vec::with_capacity(candidates.len());
        for (_, key, queued) in candidates {
            commands.push(Command::Expire {
                service: key.0.clone(),
                id: key.1.clone(),
                registration: queued.registration,
                decided_at: inner.applied,
            });
            // Decided, not yet applied: look again later in case the command is lost.
            let requeued = inner
                .expiry
                .schedule(again, key.clone(), queued.registration);
            if let Some(entry) = inner.state.get_mut(&key.0, &key.1) {
                entry.queued = requeued;
            }
        }
        for (_, key, queued) in held {
            inner.state.hold(&key.0, &key.1);
            let requeued = inner
                .expiry
                .schedule(again, key.clone(), queued.registration);
            if let Some(entry) = inner.state.get_mut(&key.0, &key.1) {
                entry.queued = requeued;
            }
        }
        self.metrics
            .set_self_preservation(inner.preservation.active(), inner.state.held);
        commands
    }

    /// Waits until log `index` is applied on this node. Fails when the store failed first.
    pub async fn wait_applied(&self, index: u64) -> Result<(), RegistryError> {
        let mut rx = self.committed.subscribe();
        let c = *rx
            .wait_for(|c| c.index >= index || c.failed)
            .await
            .map_err(|_| RegistryError::StoreUnavailable)?;
        if c.index >= index {
            Ok(())
        } else {
            Err(RegistryError::StoreUnavailable)
        }
    }

    /// The last log index applied on this node.
    pub fn applied_index(&self) -> u64 {
        self.committed.borrow().index
    }

    /// Matching instances of `service` and the head revision they were read at.
    pub fn discover(&self, service: &str, filter: &Filter) -> (Vec<DiscoveredInstance>, Revision) {
        let now = SystemTime::now();
        let inner = self.lock();
        let list = inner
            .state
            .services
            .get(service)
            .map(|s| {
                s.instances
                    .values()
                    .filter(|e| filter.matches(&e.instance))
                    .map(|e| DiscoveredInstance {
                        instance: e.instance.clone(),
                        uptime_seconds: now
                            .duration_since(e.registered)
                            .unwrap_or_default()
                            .as_secs_f64(),
                        held: e.held,
                    })
                    .collect()
            })
            .unwrap_or_default();
        (list, inner.head)
    }

    /// The JSON body of a discovery answer (a [`waypost_model::DiscoverResponse`]) and the head
    /// revision, assembled from each instance's pre-serialised JSON.
    pub fn discover_body(&self, service: &str, filter: &Filter) -> (Vec<u8>, Revision) {
        use std::fmt::Write as _;
        let now = SystemTime::now();
        let mut body = String::with_capacity(256);
        body.push_str("{\"service\":");
        // A validated service name needs no escaping, but let serde decide.
        body.push_str(&serde_json::to_string(service).unwrap_or_default());
        body.push_str(",\"instances\":[");
        let mut count = 0;
        let inner = self.lock();
        if let Some(s) = inner.state.services.get(service) {
            for e in s.instances.values().filter(|e| filter.matches(&e.instance)) {
                if count > 0 {
                    body.push(',');
                }
                count += 1;
                body.push_str(&e.json);
                let uptime = now.duration_since(e.registered).unwrap_or_default();
                // f64's Display never uses exponents, so it is valid JSON.
                let _ = write!(body, ",\"uptime_seconds\":{}", uptime.as_secs_f64());
                body.push_str(if e.held { ",\"held\":true}" } else { "}" });
            }
        }
        let revision = inner.head;
        let vip = inner.vips.as_ref().and_then(|v| v.get(service));
        drop(inner);
        let _ = write!(body, "],\"count\":{count},\"revision\":{revision}");
        if let Some(vip) = vip {
            let _ = write!(body, ",\"vip\":\"{vip}\"");
        }
        body.push('}');
        (body.into_bytes(), revision)
    }

    /// Summaries of every service and the head revision.
    pub fn services(&self) -> (BTreeMap<String, ServiceSummary>, Revision) {
        let inner = self.lock();
        let mut summaries = inner.state.summaries();
        if let Some(vips) = &inner.vips {
            for (name, summary) in &mut summaries {
                summary.vip = vips.get(name);
            }
        }
        (summaries, inner.head)
    }

    /// The revision of the last change to `service` (or the oldest remembered revision).
    pub fn service_revision(&self, service: &str) -> Revision {
        let inner = self.lock();
        inner.state.service_revision(service, inner.changes.floor())
    }

    /// The in-memory head revision.
    pub fn head(&self) -> Revision {
        self.head.load(Ordering::Acquire)
    }

    /// Every instance (of one service, or all) at the head revision.
    pub fn snapshot(&self, service: Option<&str>) -> (Vec<Instance>, Revision) {
        let inner = self.lock();
        (inner.state.instances(service), inner.head)
    }

    /// The committed changes after `after` up to `up_to`.
    pub(crate) fn changes_since(
        &self,
        after: Revision,
        up_to: Revision,
    ) -> Result<Vec<Change>, Stale> {
        self.lock().changes.since(after, up_to)
    }

    /// Liveness details.
    pub fn status(&self) -> RegistryStatus {
        let inner = self.lock();
        RegistryStatus {
            instances: inner.state.count,
            self_preservation_active: inner.preservation.active(),
            store_failed: self.failed.load(Ordering::Acquire),
            revision: inner.head,
        }
    }
}

fn identity_text(identity: &waypost_model::heartbeat::Identity) -> String {
    match identity {
        waypost_model::heartbeat::Identity::Id(id) => id.to_string(),
        waypost_model::heartbeat::Identity::Endpoint(ep) => ep.host_port(),
    }
}

impl From<Rejection> for RegistryError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::NotFound { service, id } => Self::NotFound { service, id },
            Rejection::Full { max } => Self::Full(max),
            Rejection::ServiceFull { service, max } => Self::ServiceFull { service, max },
            Rejection::Invalid { message } => Self::Field(waypost_model::FieldError {
                code: waypost_model::ErrorCode::InvalidField,
                field: "instance".to_owned(),
                message,
            }),
        }
    }
}

#[cfg(test)]
mod testkit;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model_tests;
