//! Reads of the applied state: discovery, summaries, snapshots for watchers, the change log
//! since a revision, and waiting for a log index to be applied here.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::SystemTime,
};

use waypost_model::{
    DiscoveredInstance, Epoch, Health, Instance, InstanceJson, Revision, ServiceName,
    ServicePolicy, ServiceSummary, heartbeat::Identity,
};

use super::{Change, Filter, Inner, Registry, RegistryError, RegistryStatus, Stale};

/// Every service with instances, with its counts, VIP and policy, at `inner`'s head.
pub(super) fn summaries(inner: &Inner) -> BTreeMap<String, ServiceSummary> {
    let mut summaries = inner.state.summaries();
    for (name, summary) in &mut summaries {
        summary.vip = inner.vips.as_ref().and_then(|v| v.get(name));
        summary.policy = inner.policies.get(name.as_str()).copied();
    }
    summaries
}

impl Registry {
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

    /// The health of an instance, if it is registered.
    pub fn health_of(&self, service: &ServiceName, identity: &Identity) -> Option<Health> {
        let inner = self.lock();
        inner
            .state
            .find(service, identity)
            .map(|e| e.instance.health)
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

    /// Matching instances of `service`, or of every service when `None` (by service name,
    /// then id), and the head revision they were read at. Only reference counts are taken
    /// under the lock; the caller shapes its answer after.
    pub fn discover_all(
        &self,
        service: Option<&str>,
        filter: &Filter,
    ) -> (Vec<Arc<Instance>>, Revision) {
        let inner = self.lock();
        let services = &inner.state.services;
        let mut names: Vec<&ServiceName> = match service {
            Some(name) => services
                .get_key_value(name)
                .map(|(k, _)| k)
                .into_iter()
                .collect(),
            None => services.keys().collect(),
        };
        names.sort();
        let list = names
            .into_iter()
            .flat_map(|n| services[n].instances.values())
            .filter(|e| filter.matches(&e.instance))
            .map(|e| e.instance.clone())
            .collect();
        (list, inner.head)
    }

    /// Visits the matching instances of `service` under the lock, each as its pre-serialised
    /// JSON with its uptime and whether it is held, for the API to write the answer
    /// ([`waypost_model::DiscoverBody`]); returns the head revision and the service's VIP.
    pub fn discover_json(
        &self,
        service: &str,
        filter: &Filter,
        mut visit: impl FnMut(&InstanceJson, f64, bool),
    ) -> (Revision, Option<std::net::Ipv4Addr>) {
        let now = SystemTime::now();
        let inner = self.lock();
        if let Some(s) = inner.state.services.get(service) {
            for e in s.instances.values().filter(|e| filter.matches(&e.instance)) {
                let uptime = now.duration_since(e.registered).unwrap_or_default();
                visit(&e.json, uptime.as_secs_f64(), e.held);
            }
        }
        let vip = inner.vips.as_ref().and_then(|v| v.get(service));
        (inner.head, vip)
    }

    /// Summaries of every service and the head revision.
    pub fn services(&self) -> (BTreeMap<String, ServiceSummary>, Revision) {
        let inner = self.lock();
        (summaries(&inner), inner.head)
    }

    /// `service`'s protection policy, if it has one.
    pub fn policy(&self, service: &str) -> Option<ServicePolicy> {
        self.lock().policies.get(service).copied()
    }

    /// The revision of the last change to `service` (or the oldest remembered revision).
    pub fn service_revision(&self, service: &str) -> Revision {
        let inner = self.lock();
        inner.state.service_revision(service, inner.changes.floor())
    }

    /// The revision of the last change to `service`, or 0 for a service the registry does not
    /// hold (never registered, or removed and forgotten). For a follower of one service that
    /// must see no change where there was none (an xDS stream subscribed before the service
    /// exists): [`Registry::service_revision`]'s floor moves with every change elsewhere once
    /// the history is full, which a blocking query needs and such a follower must not see.
    pub fn service_revision_or_zero(&self, service: &str) -> Revision {
        self.lock().state.service_revision(service, 0)
    }

    /// Runs `f` with [`Self::service_revision_or_zero`] for any number of services, all read
    /// under one lock (an xDS stream compares the revisions of every service it follows).
    pub fn with_service_revisions<R>(&self, f: impl FnOnce(&dyn Fn(&str) -> Revision) -> R) -> R {
        let inner = self.lock();
        f(&|service| inner.state.service_revision(service, 0))
    }

    /// [`Self::service_revision_or_zero`] with the epoch it belongs to, read together.
    pub fn service_version(&self, service: &str) -> (Epoch, Revision) {
        let inner = self.lock();
        (self.epoch(), inner.state.service_revision(service, 0))
    }

    /// `service`'s instances with [`Self::service_version`], all read under one lock: what is
    /// built from them is exactly that version.
    pub fn service_at(&self, service: &str) -> (Vec<Arc<Instance>>, Epoch, Revision) {
        let inner = self.lock();
        let instances = inner.state.instances(Some(service));
        (
            instances,
            self.epoch(),
            inner.state.service_revision(service, 0),
        )
    }

    /// The in-memory head revision.
    pub fn head(&self) -> Revision {
        self.head.load(Ordering::Acquire)
    }

    /// Every instance (of one service, or all) at the head revision.
    pub fn snapshot(&self, service: Option<&str>) -> (Vec<Instance>, Revision) {
        let inner = self.lock();
        let instances = inner.state.instances(service);
        let head = inner.head;
        drop(inner);
        (instances.iter().map(|i| Instance::clone(i)).collect(), head)
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
