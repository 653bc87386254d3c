//! The registry: the single writer of the control plane's state.
//!
//! Every write (register, deregister, drain, expiry) takes the one lock, changes the indexes in
//! [`state`], appends to the [`changes`] log with the next revision and hands the change to the
//! store's writer. Heartbeats take the same lock but only move a deadline: no revision, no store
//! write. The lock is a `std::sync::Mutex` held for microseconds and never across an `.await`.
//!
//! Readers (watch streams, blocking queries, replies to writes) follow the *committed* revision,
//! published on a `tokio::sync::watch` once the store has made a change durable, so nobody sees
//! an acknowledgement for something a crash could still lose.

pub(crate) mod changes;
mod error;
pub mod expiry;
pub(crate) mod state;
mod vips;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::watch;
use waypost_model::{
    ChangeReason, DiscoveredInstance, Epoch, Health, Instance, InstanceId, InstanceRef,
    RegisterRequest, Revision, ServiceName, ServiceSummary, Status, Timestamp,
    limits::MAX_CHECK_OUTPUT_LEN,
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
    metrics::Metrics,
    store::{Loaded, StoreOp, StoreWriter},
};

/// What the registry needs from the configuration.
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

/// The durable head, as published to readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The newest revision the store has made durable (in memory mode: applied).
    pub revision: Revision,
    /// The store failed a commit: no later revision will be committed.
    pub failed: bool,
}

/// A successful registration.
#[derive(Debug)]
pub struct Registered {
    /// The stored instance.
    pub instance: Arc<Instance>,
    /// New (201) or updated (200).
    pub created: bool,
    /// Wait for this revision to be committed before answering.
    pub revision: Revision,
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
    /// The store failed a commit.
    pub store_failed: bool,
    /// The in-memory head revision.
    pub revision: Revision,
}

struct Inner {
    state: State,
    changes: ChangeLog,
    expiry: ExpiryQueue,
    head: Revision,
    preservation: Preservation,
    vips: Option<Vips>,
}

/// The single writer of registry state. Cheap to share behind an `Arc`.
pub struct Registry {
    inner: Mutex<Inner>,
    /// A copy of `Inner::head` readable without the lock (stamped on every HTTP answer).
    head: AtomicU64,
    committed: Arc<watch::Sender<Committed>>,
    store: Option<StoreWriter>,
    epoch: Epoch,
    config: RegistryConfig,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Builds the registry from what the store loaded (or from nothing, in memory mode).
    /// Restored instances get a fresh TTL from `now`, so a restart never mass-expires.
    pub(crate) fn new(
        config: RegistryConfig,
        loaded: Loaded,
        store: Option<StoreWriter>,
        committed: Arc<watch::Sender<Committed>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::restore(config, loaded, store, committed, metrics, Instant::now())
    }

    /// [`Registry::new`] at a given instant (the model test drives the clock).
    pub(crate) fn restore(
        config: RegistryConfig,
        loaded: Loaded,
        store: Option<StoreWriter>,
        committed: Arc<watch::Sender<Committed>>,
        metrics: Arc<Metrics>,
        now: Instant,
    ) -> Self {
        let mut state = State::default();
        let mut expiry = ExpiryQueue::default();
        let mut vips = config.vip_range.map(Vips::new);
        for instance in loaded.instances {
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
            metrics.set_instances(name, svc.instances.len());
        }
        metrics.revision.set(loaded.revision as i64);
        committed.send_replace(Committed {
            revision: loaded.revision,
            failed: false,
        });
        Self {
            head: AtomicU64::new(loaded.revision),
            inner: Mutex::new(Inner {
                state,
                changes: ChangeLog::new(loaded.revision, config.history),
                expiry,
                head: loaded.revision,
                preservation: Preservation::new(config.self_preservation),
                vips,
            }),
            committed,
            store,
            epoch: loaded.epoch,
            config,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the indexes half-changed in a way later
        // code depends on (each write completes before the next line), so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The epoch of this revision history.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Follows the committed head.
    pub fn subscribe(&self) -> watch::Receiver<Committed> {
        self.committed.subscribe()
    }

    /// The heartbeat interval to suggest for an instance with `ttl_seconds`.
    pub fn interval_hint(&self, ttl_seconds: u32) -> u32 {
        let hint = self.config.heartbeat_interval.as_secs().max(1) as u32;
        hint.min((ttl_seconds / 3).max(1))
    }

    fn ensure_writable(&self) -> Result<(), RegistryError> {
        if self.committed.borrow().failed {
            return Err(RegistryError::StoreUnavailable);
        }
        Ok(())
    }

    /// Appends a visible change: next revision, change log, store, metrics.
    fn record(&self, inner: &mut Inner, kind: ChangeKind) -> Revision {
        inner.head += 1;
        let revision = inner.head;
        self.head.store(revision, Ordering::Release);
        let change = Change { revision, kind };
        let service = change.service().clone();
        if let Some(store) = &self.store {
            store.send(revision, StoreOp::from(&change));
        } else {
            self.committed.send_replace(Committed {
                revision,
                failed: false,
            });
        }
        inner.changes.push(change);
        let floor = inner.changes.floor();
        inner.state.prune_tombstones(floor);
        let count = inner
            .state
            .services
            .get(&service)
            .map_or(0, |s| s.instances.len());
        self.metrics.set_instances(&service, count);
        self.metrics.revision.set(revision as i64);
        revision
    }

    /// Registers or updates an instance. The caller waits for the returned revision.
    pub fn register(&self, req: &RegisterRequest) -> Result<Registered, RegistryError> {
        self.register_at(req, Instant::now())
    }

    /// [`Registry::register`] at a given instant.
    pub(crate) fn register_at(
        &self,
        req: &RegisterRequest,
        now: Instant,
    ) -> Result<Registered, RegistryError> {
        let reg = req.validate(self.config.default_ttl_seconds)?;
        self.ensure_writable()?;
        let deadline = now + Duration::from_secs(reg.ttl_seconds.into());
        let mut guard = self.lock();
        let inner = &mut *guard;
        let existing = inner
            .state
            .get_mut(&reg.service, &reg.id)
            .map(|e| (e.instance.clone(), e.registered, e.queued));
        if existing.is_some() {
            inner.state.renew(&reg.service, &reg.id, deadline);
        }
        if existing.is_none() && inner.state.count >= self.config.max_instances {
            return Err(RegistryError::Full(self.config.max_instances));
        }
        let in_service = inner
            .state
            .services
            .get(&reg.service)
            .map_or(0, |s| s.instances.len());
        if existing.is_none() && in_service >= self.config.max_instances_per_service {
            return Err(RegistryError::ServiceFull {
                service: reg.service.clone(),
                max: self.config.max_instances_per_service,
            });
        }
        let (registered_at, registered) = match &existing {
            Some((old, at, _)) => (old.registered_at, *at),
            None => {
                let at = SystemTime::now();
                (Timestamp::from(at), at)
            }
        };
        let vip = {
            let state = &inner.state;
            inner.vips.as_mut().and_then(|v| {
                v.assign(&reg.service, |s| {
                    state
                        .services
                        .get(s)
                        .is_some_and(|e| !e.instances.is_empty())
                })
            })
        };
        let mut instance = Instance {
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
            // Registering again keeps the last reported health: only checks change it.
            health: existing
                .as_ref()
                .map_or(Health::Passing, |(old, _, _)| old.health),
            health_output: existing
                .as_ref()
                .and_then(|(old, _, _)| old.health_output.clone()),
            vip,
            registered_at,
            revision: 0,
        };
        self.metrics.registrations.inc();
        if let Some((old, _, _)) = &existing {
            instance.revision = old.revision;
            if **old == instance {
                // Same fields again: a renewal, not a visible change.
                return Ok(Registered {
                    instance: old.clone(),
                    created: false,
                    revision: old.revision,
                });
            }
        }
        let revision = inner.head + 1;
        instance.revision = revision;
        let instance = Arc::new(instance);
        let key = (instance.service.clone(), instance.id.clone());
        // An update keeps its registration's queue entry unless its deadline moved earlier
        // (a shorter TTL); a new registration gets its own.
        let queued = match &existing {
            Some((_, _, queued)) if queued.at <= deadline => *queued,
            Some((_, _, queued)) => inner.expiry.schedule(deadline, key, queued.registration),
            None => inner.expiry.schedule(deadline, key, revision),
        };
        inner.state.insert(
            Entry::new(instance.clone(), registered, deadline, queued),
            revision,
        );
        let reason = if existing.is_some() {
            ChangeReason::Updated
        } else {
            ChangeReason::Registered
        };
        let recorded = self.record(
            inner,
            ChangeKind::Upsert {
                reason,
                instance: instance.clone(),
            },
        );
        debug_assert_eq!(recorded, revision);
        Ok(Registered {
            instance,
            created: existing.is_none(),
            revision,
        })
    }

    /// Renews an instance's deadline. No revision, no store write.
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

    /// Removes an instance.
    pub fn deregister(
        &self,
        r: &InstanceRef,
    ) -> Result<(ServiceName, InstanceId, Revision), RegistryError> {
        let (service, identity) = r.resolve()?;
        self.ensure_writable()?;
        let mut inner = self.lock();
        let id = match inner.state.find(&service, &identity) {
            Some(e) => e.instance.id.clone(),
            None => {
                return Err(RegistryError::NotFound {
                    id: identity_text(&identity),
                    service,
                });
            }
        };
        let revision = inner.head + 1;
        inner.state.remove(&service, &id, revision);
        self.record(
            &mut inner,
            ChangeKind::Remove {
                reason: ChangeReason::Deregistered,
                service: service.clone(),
                id: id.clone(),
            },
        );
        self.metrics.deregistrations.inc();
        Ok((service, id, revision))
    }

    /// Moves an instance into or out of `draining`. Returns the instance and the revision to
    /// wait for (its last change when nothing changed).
    pub fn drain(
        &self,
        r: &InstanceRef,
        draining: bool,
    ) -> Result<(Arc<Instance>, Revision), RegistryError> {
        let want = if draining {
            Status::Draining
        } else {
            Status::Up
        };
        self.amend(r, ChangeReason::StatusChanged, |i| {
            if i.status == want {
                return false;
            }
            i.status = want;
            true
        })
    }

    /// Records a health check's result. A change of health is a visible change (a revision);
    /// the same health again changes nothing (its output is not updated either).
    pub fn report_check(
        &self,
        r: &InstanceRef,
        health: Health,
        output: Option<&str>,
    ) -> Result<(Arc<Instance>, Revision), RegistryError> {
        self.amend(r, ChangeReason::HealthChanged, |i| {
            if i.health == health {
                return false;
            }
            i.health = health;
            i.health_output = match health {
                Health::Passing => None,
                Health::Critical => output.map(|o| {
                    let cut: String = o.chars().take(MAX_CHECK_OUTPUT_LEN).collect();
                    cut.into_boxed_str()
                }),
            };
            true
        })
    }

    /// Changes one field of a registered instance: `change` edits a copy and says whether it
    /// changed anything visible; if so, the copy is stored with the next revision. Returns the
    /// instance and the revision to wait for (its last change when nothing changed).
    fn amend(
        &self,
        r: &InstanceRef,
        reason: ChangeReason,
        change: impl FnOnce(&mut Instance) -> bool,
    ) -> Result<(Arc<Instance>, Revision), RegistryError> {
        let (service, identity) = r.resolve()?;
        self.ensure_writable()?;
        let mut inner = self.lock();
        let Some(found) = inner.state.find(&service, &identity) else {
            return Err(RegistryError::NotFound {
                id: identity_text(&identity),
                service,
            });
        };
        let mut changed = Instance::clone(&found.instance);
        if !change(&mut changed) {
            return Ok((found.instance.clone(), found.instance.revision));
        }
        let revision = inner.head + 1;
        changed.revision = revision;
        let changed = Arc::new(changed);
        let mut entry = Entry::new(
            changed.clone(),
            found.registered,
            found.deadline,
            found.queued,
        );
        entry.held = found.held;
        inner.state.insert(entry, revision);
        self.record(
            &mut inner,
            ChangeKind::Upsert {
                reason,
                instance: changed.clone(),
            },
        );
        Ok((changed, revision))
    }

    /// Waits until `revision` is durable. Fails when the store failed before committing it.
    pub async fn wait_committed(&self, revision: Revision) -> Result<(), RegistryError> {
        let mut rx = self.committed.subscribe();
        let c = *rx
            .wait_for(|c| c.revision >= revision || c.failed)
            .await
            .map_err(|_| RegistryError::StoreUnavailable)?;
        if c.revision >= revision {
            Ok(())
        } else {
            Err(RegistryError::StoreUnavailable)
        }
    }

    /// Expires every instance whose deadline passed, unless self-preservation holds them.
    pub fn expire_due(&self, now: Instant) {
        if self.committed.borrow().failed {
            return;
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
            if entry.deadline <= now {
                held_among += usize::from(entry.held);
                candidates.push((entry.deadline, key, queued));
            } else {
                // Renewed meanwhile: queue it again at its real deadline.
                let at = entry.deadline;
                entry.queued = inner.expiry.schedule(at, key, queued.registration);
            }
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
        if !held.is_empty() {
            if expire > 0 {
                tracing::warn!(
                    expired = expire,
                    still_held = held.len(),
                    "self-preservation: releasing instances held longer than the maximum hold"
                );
            }
            self.metrics.held.inc_by(held.len() as u64);
            let again = now + HOLD_RECHECK;
            for (_, key, queued) in held {
                inner.state.hold(&key.0, &key.1);
                let requeued = inner
                    .expiry
                    .schedule(again, key.clone(), queued.registration);
                if let Some(entry) = inner.state.get_mut(&key.0, &key.1) {
                    entry.queued = requeued;
                }
            }
        }
        for (_, (service, id), _) in candidates {
            let revision = inner.head + 1;
            if inner.state.remove(&service, &id, revision).is_none() {
                continue;
            }
            tracing::info!(%service, %id, revision, "instance expired");
            self.record(
                inner,
                ChangeKind::Remove {
                    reason: ChangeReason::Expired,
                    service,
                    id,
                },
            );
            self.metrics.expirations.inc();
        }
        self.metrics
            .set_self_preservation(inner.preservation.active(), inner.state.held);
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
        let failed = self.committed.borrow().failed;
        let inner = self.lock();
        RegistryStatus {
            instances: inner.state.count,
            self_preservation_active: inner.preservation.active(),
            store_failed: failed,
            revision: inner.head,
        }
    }

    /// Commits what is queued and closes the store; call after the last write.
    pub(crate) async fn close_store(&self) {
        if let Some(store) = &self.store {
            store.close().await;
        }
    }
}

fn identity_text(identity: &waypost_model::heartbeat::Identity) -> String {
    match identity {
        waypost_model::heartbeat::Identity::Id(id) => id.to_string(),
        waypost_model::heartbeat::Identity::Endpoint(ep) => ep.host_port(),
    }
}

#[cfg(test)]
impl Registry {
    pub(crate) fn in_memory_for_test(config: RegistryConfig) -> Self {
        let (tx, _) = watch::channel(Committed {
            revision: 0,
            failed: false,
        });
        Self::new(
            config,
            Loaded::empty(7),
            None,
            Arc::new(tx),
            Arc::new(Metrics::new()),
        )
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model_tests;
