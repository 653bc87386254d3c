//! Applying commands: the registry's side of [`Machine`]. Runs on every node, in log order,
//! so nothing here may depend on the node or the moment except heartbeat deadlines (which
//! are per node and never replicated).

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use waypost_model::{
    ChangeReason, Health, Instance, InstanceRef, Revision, ServiceName, ServicePolicy, Status,
    Timestamp, limits::MAX_CHECK_OUTPUT_LEN,
};

use super::{
    Committed, Inner, Registry,
    departures::{Departure, Left},
    identity_text,
    state::Entry,
};
use crate::{
    command::{Command, Image, Machine, Reply},
    registry::{ChangeKind, changes::Change},
};

/// `proposed` registered over `old`: what an update keeps of the stored instance (its
/// registration time, its last reported health, its VIP and revision) and what it replaces.
pub(super) fn merge(old: &Instance, proposed: &Instance) -> Instance {
    // A registration that changes the status changes it now (its proposer's time).
    let status_since = if old.status == proposed.status {
        old.status_since
    } else {
        Some(proposed.registered_at)
    };
    Instance {
        health: old.health,
        health_output: old.health_output.clone(),
        health_since: old.health_since,
        status_since,
        vip: old.vip,
        policy: old.policy,
        registered_at: old.registered_at,
        revision: old.revision,
        ..proposed.clone()
    }
}

impl Machine for Registry {
    fn apply(&self, index: u64, command: &Command) -> Reply {
        self.apply_at(index, command, Instant::now())
    }

    fn applied(&self, index: u64) {
        let mut inner = self.lock();
        inner.applied = inner.applied.max(index);
        self.publish(&inner);
    }

    fn export(&self) -> Image {
        self.image()
    }

    fn restore(&self, image: Image, index: u64) {
        self.load(image, index, Instant::now());
    }
}

impl Registry {
    /// [`Machine::apply`] with the clock given (deadlines are the only use of it).
    pub(crate) fn apply_at(&self, index: u64, command: &Command, now: Instant) -> Reply {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.applied = inner.applied.max(index);
        let reply = self.apply_one(inner, index, command, now);
        self.publish(inner);
        reply
    }

    /// Applies one command (or each command of a batch, in order) under the lock.
    fn apply_one(&self, inner: &mut Inner, index: u64, command: &Command, now: Instant) -> Reply {
        match command {
            Command::Batch { commands } => Reply::Batch {
                replies: commands
                    .iter()
                    .map(|c| self.apply_one(inner, index, c, now))
                    .collect(),
            },
            Command::Init { epoch } => {
                if self.epoch() == 0 {
                    self.epoch.store(*epoch, Ordering::Release);
                    tracing::info!(epoch = %format!("{epoch:016x}"), "cluster epoch set");
                }
                Reply::Nothing
            }
            Command::Register { instance } => self.apply_register(inner, index, instance, now),
            Command::SetPolicy { service, policy } => self.apply_policy(inner, service, *policy),
            Command::Deregister { target, at, by } => {
                self.apply_deregister(inner, target, *at, by.clone())
            }
            Command::Drain {
                target,
                draining,
                at,
            } => {
                let want = if *draining {
                    Status::Draining
                } else {
                    Status::Up
                };
                self.amend(inner, target, ChangeReason::StatusChanged, |i| {
                    if i.status == want {
                        return false;
                    }
                    i.status = want;
                    i.status_since = *at;
                    true
                })
            }
            Command::Check {
                target,
                health,
                output,
                at,
            } => self.amend(inner, target, ChangeReason::HealthChanged, |i| {
                if i.health == *health {
                    return false;
                }
                if *health == Health::Flapping {
                    self.metrics.flapping_entered.inc();
                }
                i.health = *health;
                i.health_since = *at;
                i.health_output = match health {
                    Health::Passing => None,
                    // Flapping: the sidecar's account of the changes in its window.
                    Health::Critical | Health::Flapping => output.as_deref().map(|o| {
                        let cut: String = o.chars().take(MAX_CHECK_OUTPUT_LEN).collect();
                        cut.into_boxed_str()
                    }),
                };
                true
            }),
            Command::Expire {
                service,
                id,
                registration,
                decided_at,
                at,
            } => {
                let current = inner.state.get_mut(service, id).is_some_and(|e| {
                    e.queued.registration == *registration && e.touched <= *decided_at
                });
                if current {
                    let revision = inner.head + 1;
                    if let Some(e) = inner.state.get_mut(service, id) {
                        let instance = e.instance.clone();
                        inner.departures.push(Departure {
                            instance,
                            left: Left::Expired,
                            at: *at,
                            by: None,
                        });
                    }
                    inner.state.remove(service, id, revision);
                    tracing::info!(%service, %id, revision, "instance expired");
                    self.record(
                        inner,
                        ChangeKind::Remove {
                            reason: ChangeReason::Expired,
                            service: service.clone(),
                            id: id.clone(),
                        },
                    );
                    self.metrics.expirations.inc();
                    Reply::Removed {
                        service: service.clone(),
                        id: id.clone(),
                        revision,
                    }
                } else {
                    // Registered again, or gone, since the leader decided.
                    Reply::Nothing
                }
            }
        }
    }

    /// Tells readers what is applied.
    fn publish(&self, inner: &Inner) {
        self.committed.send_replace(Committed {
            revision: inner.head,
            index: inner.applied,
            failed: self.failed.load(Ordering::Acquire),
        });
    }

    /// Appends a visible change: next revision, change log, metrics.
    fn record(&self, inner: &mut Inner, kind: ChangeKind) -> Revision {
        inner.head += 1;
        let revision = inner.head;
        self.head.store(revision, Ordering::Release);
        let change = Change { revision, kind };
        let service = change.service().clone();
        inner.changes.push(change);
        let floor = inner.changes.floor();
        inner.state.prune_tombstones(floor);
        let count = inner
            .state
            .services
            .get(&service)
            .map_or(0, |s| s.instances.len());
        self.metrics.set_instances(&service, count);
        self.metrics
            .flapping_instances
            .set(inner.state.flapping as i64);
        self.metrics.revision.set(revision as i64);
        revision
    }

    fn apply_register(
        &self,
        inner: &mut Inner,
        index: u64,
        proposed: &Instance,
        now: Instant,
    ) -> Reply {
        let deadline = now + Duration::from_secs(proposed.ttl_seconds.into());
        let existing = inner
            .state
            .get_mut(&proposed.service, &proposed.id)
            .map(|e| (e.instance.clone(), e.registered, e.queued));
        self.metrics.registrations.inc();
        if let Some((old, ..)) = &existing {
            inner.state.renew(&old.service, &old.id, deadline);
            if let Some(e) = inner.state.get_mut(&old.service, &old.id) {
                e.touched = index;
            }
            if merge(old, proposed) == **old {
                // Same fields again: a renewal, not a visible change.
                return Reply::Registered {
                    instance: old.clone(),
                    created: false,
                };
            }
        } else {
            if inner.state.count >= self.config.max_instances {
                return Reply::Rejected(crate::command::Rejection::Full {
                    max: self.config.max_instances,
                });
            }
            let in_service = inner
                .state
                .services
                .get(&proposed.service)
                .map_or(0, |s| s.instances.len());
            if in_service >= self.config.max_instances_per_service {
                return Reply::Rejected(crate::command::Rejection::ServiceFull {
                    service: proposed.service.clone(),
                    max: self.config.max_instances_per_service,
                });
            }
        }
        let vip = {
            let state = &inner.state;
            inner.vips.as_mut().and_then(|v| {
                v.assign(&proposed.service, |s| {
                    state
                        .services
                        .get(s)
                        .is_some_and(|e| !e.instances.is_empty())
                })
            })
        };
        let revision = inner.head + 1;
        let (mut instance, registered) = match &existing {
            Some((old, registered, _)) => (merge(old, proposed), *registered),
            None => (
                proposed.clone(),
                proposed
                    .registered_at
                    .to_system_time()
                    .min(SystemTime::now()),
            ),
        };
        instance.vip = vip;
        instance.policy = inner.policies.get(&instance.service).copied();
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
        let mut entry = Entry::new(instance.clone(), registered, deadline, queued);
        entry.touched = index;
        inner.state.insert(entry, revision);
        let reason = if existing.is_some() {
            ChangeReason::Updated
        } else {
            ChangeReason::Registered
        };
        self.record(
            inner,
            ChangeKind::Upsert {
                reason,
                instance: instance.clone(),
            },
        );
        Reply::Registered {
            instance,
            created: existing.is_none(),
        }
    }

    fn apply_deregister(
        &self,
        inner: &mut Inner,
        target: &InstanceRef,
        at: Option<Timestamp>,
        by: Option<String>,
    ) -> Reply {
        let (service, identity) = match target.resolve() {
            Ok(found) => found,
            Err(e) => return invalid(&e.message),
        };
        let Some(instance) = inner
            .state
            .find(&service, &identity)
            .map(|e| e.instance.clone())
        else {
            return not_found(service, &identity);
        };
        let id = instance.id.clone();
        inner.departures.push(Departure {
            instance,
            left: Left::Deregistered,
            at,
            by,
        });
        let revision = inner.head + 1;
        inner.state.remove(&service, &id, revision);
        self.record(
            inner,
            ChangeKind::Remove {
                reason: ChangeReason::Deregistered,
                service: service.clone(),
                id: id.clone(),
            },
        );
        self.metrics.deregistrations.inc();
        Reply::Removed {
            service,
            id,
            revision,
        }
    }

    /// Sets or removes `service`'s policy, and puts it on each of its instances (one visible
    /// change each, so that every follower of the change stream learns it).
    fn apply_policy(
        &self,
        inner: &mut Inner,
        service: &ServiceName,
        policy: Option<ServicePolicy>,
    ) -> Reply {
        match policy {
            Some(p) => inner.policies.insert(service.clone(), p),
            None => inner.policies.remove(service),
        };
        let stale: Vec<Entry> = inner
            .state
            .services
            .get(service)
            .map(|s| {
                s.instances
                    .values()
                    .filter(|e| e.instance.policy != policy)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for found in stale {
            let mut changed = Instance::clone(&found.instance);
            changed.policy = policy;
            self.store_changed(inner, &found, changed, ChangeReason::Updated);
        }
        Reply::PolicySet {
            revision: inner.head,
        }
    }

    /// Changes one field of a registered instance: `change` edits a copy and says whether it
    /// changed anything visible; if so, the copy is stored with the next revision.
    fn amend(
        &self,
        inner: &mut Inner,
        target: &InstanceRef,
        reason: ChangeReason,
        change: impl FnOnce(&mut Instance) -> bool,
    ) -> Reply {
        let (service, identity) = match target.resolve() {
            Ok(found) => found,
            Err(e) => return invalid(&e.message),
        };
        let Some(found) = inner.state.find(&service, &identity) else {
            return not_found(service, &identity);
        };
        let mut changed = Instance::clone(&found.instance);
        if !change(&mut changed) {
            return Reply::Amended {
                instance: found.instance.clone(),
            };
        }
        let found = found.clone();
        let instance = self.store_changed(inner, &found, changed, reason);
        Reply::Amended { instance }
    }

    /// Stores `changed`, a new copy of `found`'s instance, with the next revision: the entry
    /// keeps its registration time, deadline, queue entry and hold.
    fn store_changed(
        &self,
        inner: &mut Inner,
        found: &Entry,
        mut changed: Instance,
        reason: ChangeReason,
    ) -> Arc<Instance> {
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
        entry.touched = found.touched;
        inner.state.insert(entry, revision);
        self.record(
            inner,
            ChangeKind::Upsert {
                reason,
                instance: changed.clone(),
            },
        );
        changed
    }
}

fn not_found(
    service: waypost_model::ServiceName,
    identity: &waypost_model::heartbeat::Identity,
) -> Reply {
    Reply::Rejected(crate::command::Rejection::NotFound {
        service,
        id: identity_text(identity),
    })
}

fn invalid(message: &str) -> Reply {
    Reply::Rejected(crate::command::Rejection::Invalid {
        message: message.to_owned(),
    })
}
