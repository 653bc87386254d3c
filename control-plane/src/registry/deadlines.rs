//! What only the leader keeps and nothing replicates: heartbeats move deadlines (no revision,
//! no log entry), a new leader gives every instance a fresh TTL plus a grace, and overdue
//! deadlines become [`Command::Expire`]s for the leader to propose, unless self-preservation
//! holds them.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime},
};

use waypost_model::{InstanceId, InstanceRef, ServiceName, Timestamp};

use super::{
    Registry, RegistryError, Renewed,
    expiry::{ExpiryQueue, HOLD_RECHECK, Key, Preservation, Queued, Verdict},
    identity_text,
};
use crate::command::Command;

impl Registry {
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
                at: Some(Timestamp::now()),
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
}
