//! The in-memory indexes: services by name, instances by id within each. Pure and synchronous;
//! the registry holds it under its one lock.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::{Instant, SystemTime},
};

use super::expiry::Queued;
use waypost_model::{
    Health, Instance, InstanceId, InstanceJson, Revision, ServiceName, ServiceSummary,
    heartbeat::Identity,
};

/// One registered instance with the facts that are not on the wire.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) instance: Arc<Instance>,
    /// The instance serialised once per change, for discovery answers.
    pub(crate) json: InstanceJson,
    /// Wall-clock registration time, for `uptime_seconds`.
    pub(crate) registered: SystemTime,
    /// Expires when this passes without a heartbeat.
    pub(crate) deadline: Instant,
    /// Its one live entry in the expiry queue.
    pub(crate) queued: Queued,
    /// Overdue, but kept by self-preservation (until a heartbeat or its release).
    pub(crate) held: bool,
    /// The log index of the last registration applied to it: an expiry decided before that
    /// index no longer applies.
    pub(crate) touched: u64,
}

impl Entry {
    pub(crate) fn new(
        instance: Arc<Instance>,
        registered: SystemTime,
        deadline: Instant,
        queued: Queued,
    ) -> Self {
        Self {
            json: InstanceJson::new(&instance),
            instance,
            registered,
            deadline,
            queued,
            held: false,
            touched: 0,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct ServiceEntry {
    pub(crate) instances: BTreeMap<InstanceId, Entry>,
    /// Instances with status `up`, kept current so `/services` never walks instances.
    pub(crate) active: usize,
    /// The revision of the last change to this service; kept after its last instance leaves
    /// (a tombstone), so blocking queries on it see the removal.
    pub(crate) modified: Revision,
}

impl ServiceEntry {
    pub(crate) fn summary(&self) -> ServiceSummary {
        ServiceSummary {
            total_instances: self.instances.len(),
            active_instances: self.active,
            vip: None,
            policy: None,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) services: HashMap<ServiceName, ServiceEntry>,
    pub(crate) count: usize,
    /// Entries with `held` set.
    pub(crate) held: usize,
    /// Instances whose health is `flapping`, kept current for the gauge.
    pub(crate) flapping: usize,
    /// Services emptied at a revision; pruned once the change log has moved past it.
    tombstones: VecDeque<(Revision, ServiceName)>,
}

impl State {
    /// Finds an instance by id, or by endpoint: first as the derived id `host:port`, then by
    /// scanning the service's instances for that host and port.
    pub(crate) fn find(&self, service: &ServiceName, identity: &Identity) -> Option<&Entry> {
        let entry = self.services.get(service)?;
        match identity {
            Identity::Id(id) => entry.instances.get(id),
            Identity::Endpoint(ep) => entry.instances.get(ep.host_port().as_str()).or_else(|| {
                entry
                    .instances
                    .values()
                    .find(|e| e.instance.host == ep.host && e.instance.port == ep.port)
            }),
        }
    }

    pub(crate) fn get_mut(&mut self, service: &ServiceName, id: &InstanceId) -> Option<&mut Entry> {
        self.services.get_mut(service)?.instances.get_mut(id)
    }

    pub(crate) fn insert(&mut self, entry: Entry, revision: Revision) -> Option<Entry> {
        let service = entry.instance.service.clone();
        let id = entry.instance.id.clone();
        let svc = self.services.entry(service).or_default();
        svc.modified = revision;
        svc.active += usize::from(entry.instance.takes_work());
        self.held += usize::from(entry.held);
        self.flapping += usize::from(entry.instance.health == Health::Flapping);
        let old = svc.instances.insert(id, entry);
        match &old {
            Some(o) => {
                svc.active -= usize::from(o.instance.takes_work());
                self.held -= usize::from(o.held);
                self.flapping -= usize::from(o.instance.health == Health::Flapping);
            }
            None => self.count += 1,
        }
        old
    }

    /// Moves an instance's deadline (a heartbeat or a registration): it is no longer held.
    pub(crate) fn renew(&mut self, service: &ServiceName, id: &InstanceId, deadline: Instant) {
        if let Some(entry) = self.get_mut(service, id) {
            entry.deadline = deadline;
            let was_held = std::mem::take(&mut entry.held);
            self.held -= usize::from(was_held);
        }
    }

    /// Marks an overdue instance as kept by self-preservation.
    pub(crate) fn hold(&mut self, service: &ServiceName, id: &InstanceId) {
        if let Some(entry) = self.get_mut(service, id)
            && !entry.held
        {
            entry.held = true;
            self.held += 1;
        }
    }

    pub(crate) fn remove(
        &mut self,
        service: &ServiceName,
        id: &InstanceId,
        revision: Revision,
    ) -> Option<Entry> {
        let svc = self.services.get_mut(service)?;
        let old = svc.instances.remove(id)?;
        self.count -= 1;
        self.held -= usize::from(old.held);
        self.flapping -= usize::from(old.instance.health == Health::Flapping);
        svc.active -= usize::from(old.instance.takes_work());
        svc.modified = revision;
        if svc.instances.is_empty() {
            self.tombstones.push_back((revision, service.clone()));
        }
        Some(old)
    }

    /// Drops empty services whose removal is older than `floor`: a blocking query on them then
    /// falls back to the floor, which is just as correct.
    pub(crate) fn prune_tombstones(&mut self, floor: Revision) {
        while let Some((rev, _)) = self.tombstones.front() {
            if *rev > floor {
                break;
            }
            if let Some((rev, name)) = self.tombstones.pop_front()
                && let Some(svc) = self.services.get(&name)
                && svc.instances.is_empty()
                && svc.modified == rev
            {
                self.services.remove(&name);
            }
        }
    }

    /// The revision of the last change to `service`, or `floor` when none is remembered.
    pub(crate) fn service_revision(&self, service: &str, floor: Revision) -> Revision {
        self.services.get(service).map_or(floor, |s| s.modified)
    }

    /// Summaries of every non-empty service, by name.
    pub(crate) fn summaries(&self) -> BTreeMap<String, ServiceSummary> {
        self.services
            .iter()
            .filter(|(_, s)| !s.instances.is_empty())
            .map(|(name, s)| (name.to_string(), s.summary()))
            .collect()
    }

    /// Every instance of `service` (or of all services), ordered by service then id.
    pub(crate) fn instances(&self, service: Option<&str>) -> Vec<Arc<Instance>> {
        match service {
            Some(name) => self
                .services
                .get(name)
                .map(|s| s.instances.values().map(|e| e.instance.clone()).collect())
                .unwrap_or_default(),
            None => {
                let mut names: Vec<&ServiceName> = self.services.keys().collect();
                names.sort();
                names
                    .into_iter()
                    .flat_map(|n| self.services[n].instances.values())
                    .map(|e| e.instance.clone())
                    .collect()
            }
        }
    }
}
