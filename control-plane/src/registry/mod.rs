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
mod bodies;
pub(crate) mod changes;
mod deadlines;
mod departures;
mod error;
pub mod expiry;
mod explain;
mod reads;
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
    Epoch, Health, Instance, InstanceId, RegisterRequest, Revision, ServiceName, ServicePolicy,
    Status, Timestamp,
};

pub(crate) use self::changes::{Change, ChangeKind, Stale};
pub use self::error::RegistryError;
pub use self::vips::VipRange;
use self::{
    changes::ChangeLog,
    expiry::{ExpiryQueue, Preservation, SelfPreservation},
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
    /// `true` (default): only instances that take work; `false`: draining, critical and
    /// flapping ones too.
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
    /// Instances that left lately, for explain.
    departures: departures::Departures,
    /// Services' protection policies (services without instances included).
    policies: BTreeMap<ServiceName, ServicePolicy>,
    /// `GET /services`'s body as last built ([`bodies`]).
    services_body: Option<bodies::Cached>,
    /// Counts [`Registry::load`]s, so that a body built before one is never kept after it.
    loads: u64,
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
    /// Held while `GET /services`'s body is rebuilt, so that requests arriving meanwhile wait
    /// for that body instead of each building their own ([`bodies`]).
    services_builder: tokio::sync::Mutex<()>,
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
                departures: departures::Departures::default(),
                policies: BTreeMap::new(),
                services_body: None,
                loads: 0,
            }),
            committed,
            failed: AtomicBool::new(false),
            services_builder: tokio::sync::Mutex::new(()),
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
            state.insert(Entry::new(instance, registered, deadline, queued), revision);
        }
        // A service's last change may be newer than all of its instances (a removal) and the
        // image keeps no record of it, so every service is taken as changed at the image's
        // revision: a blocking query from before the image answers once more, never misses a
        // change, and no service's revision goes backwards.
        for svc in state.services.values_mut() {
            svc.modified = image.revision;
        }
        for (name, svc) in &state.services {
            self.metrics.set_instances(name, svc.instances.len());
        }
        self.metrics.revision.set(image.revision as i64);
        self.metrics.flapping_instances.set(state.flapping as i64);
        inner.state = state;
        inner.expiry = expiry;
        inner.vips = vips;
        inner.policies = image.policies;
        inner.changes = ChangeLog::new(image.revision, self.config.history);
        inner.head = image.revision;
        inner.applied = index;
        inner.preservation = Preservation::new(self.config.self_preservation);
        // A revision names the same state on every node (applying is deterministic), so a body
        // built here before the load would still be right at its revision; dropping it anyway
        // keeps that argument out of the cache's correctness.
        inner.services_body = None;
        inner.loads += 1;
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
            policies: inner.policies.clone(),
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
                status_since: None,
                health_since: None,
                policy: None,
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
            Command::Drain {
                target, draining, ..
            } => {
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
pub(crate) mod tests;

#[cfg(test)]
mod model_tests;
