//! The sidecar's view of the registry: the mutable [`Mirror`] that the subscription task
//! alone writes, and the immutable [`Snapshot`] it publishes after every change, with
//! everything readers need already derived (DNS record sets per service).
//!
//! Readers hold a [`Snapshots`] handle and load the current `Arc<Snapshot>` without a lock
//! (`arc-swap`), so a DNS query never waits for the writer and never sees half an update.
//!
//! One change costs the changed service, not the registry: the snapshot's service map is a
//! persistent map ([`Services`]) whose copy is a pointer copy and whose insert copies one path
//! of its tree, so the next snapshot shares every other service with the one before it; the
//! totals it reports and the host names the writer resolves are kept up to date per change
//! rather than counted over every instance. (At 100,000 instances in 10,000 services, copying
//! the whole map and walking every instance per change made one change cost about 11 ms, and
//! now about 0.05 ms; a lookup costs about 10 ns more than in a standard `HashMap`, which no DNS
//! or proxy rate shows: BENCHMARKS.md, issue 18.)

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use waypost_model::{ChangeReason, Instance, Revision, ServicePolicy, WatchEvent};

use crate::dns::records::{RecordBuilder, ServiceRecords, Up};

/// Services with at least one instance, by name: a persistent map, so that a snapshot and the
/// next share every service that did not change (copying one is a pointer copy).
pub type Services = imbl::HashMap<String, Arc<ServiceView>>;

/// One service as readers see it.
#[derive(Debug)]
pub struct ServiceView {
    /// Every instance (draining ones too), ordered by id.
    pub instances: Vec<Arc<Instance>>,
    /// `up` instances with the addresses they are reached at.
    pub up: Vec<Target>,
    /// The service's virtual IP, when the control plane gave it one.
    pub vip: Option<IpAddr>,
    /// DNS answers for the service, built once per change.
    pub records: ServiceRecords,
    /// The service's protection policy, when an operator set one.
    pub policy: Option<ServicePolicy>,
    /// `never_empty` holds: expiry or failing checks left no instance that takes work, so
    /// `up` is the last set that had one (less those deregistered or drained since).
    pub protected: bool,
}

/// An `up` instance and its addresses: the instance's IP, or what its host name resolved to
/// when the snapshot was built.
#[derive(Debug, Clone)]
pub struct Target {
    /// The instance.
    pub instance: Arc<Instance>,
    /// Its addresses (empty when its host name did not resolve).
    pub addrs: Vec<IpAddr>,
}

impl Target {
    /// The target as DNS records are built from it.
    pub fn up(&self) -> Up<'_> {
        (&*self.instance, self.addrs.as_slice())
    }

    /// Where the proxies connect to it: its first address and its port (`None` when its host
    /// name resolved to nothing).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(*self.addrs.first()?, self.instance.port))
    }
}

/// The registry at one revision, immutable.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The control plane's epoch (`None` before the first snapshot).
    pub epoch: Option<String>,
    /// The last revision applied.
    pub revision: Revision,
    /// Services with at least one instance, by name.
    pub services: Services,
    /// Instances in `services`, all statuses (kept per change, not counted).
    pub instances: usize,
    /// Services in `services` that are `protected`.
    pub protected: usize,
}

impl Snapshot {
    /// Every instance, for `/snapshot` and the file on disk, as a `snapshot` event.
    pub fn to_event(&self) -> WatchEvent {
        let mut names: Vec<&String> = self.services.keys().collect();
        names.sort();
        WatchEvent::Snapshot {
            epoch: self.epoch.clone().unwrap_or_default(),
            revision: self.revision,
            instances: names
                .into_iter()
                .flat_map(|n| self.services[n].instances.iter().map(|i| (**i).clone()))
                .collect(),
        }
    }
}

/// The read handle on the current snapshot: lock-free loads, and a notification per change.
#[derive(Debug, Clone)]
pub struct Snapshots {
    current: Arc<ArcSwap<Snapshot>>,
    changed: watch::Receiver<Revision>,
}

/// The write side, held by the subscription task only.
#[derive(Debug)]
pub(crate) struct Publisher {
    current: Arc<ArcSwap<Snapshot>>,
    changed: watch::Sender<Revision>,
}

/// A new pair around an empty snapshot.
pub(crate) fn channel() -> (Publisher, Snapshots) {
    let current = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let (tx, rx) = watch::channel(0);
    (
        Publisher {
            current: current.clone(),
            changed: tx,
        },
        Snapshots {
            current,
            changed: rx,
        },
    )
}

impl Publisher {
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        let revision = snapshot.revision;
        self.current.store(Arc::new(snapshot));
        self.changed.send_replace(revision);
    }

    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

impl Snapshots {
    /// The snapshot in force now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Waits for the next published snapshot (at once if one came since the last call).
    pub async fn changed(&mut self) {
        if self.changed.changed().await.is_err() {
            // The writer is gone; nothing will change any more.
            std::future::pending::<()>().await;
        }
    }

    /// Waits until a snapshot satisfying `ready` is published (for tests and readiness).
    pub async fn wait_for(&self, mut ready: impl FnMut(&Snapshot) -> bool) -> Arc<Snapshot> {
        let mut changed = self.changed.clone();
        loop {
            let snapshot = self.current();
            if ready(&snapshot) {
                return snapshot;
            }
            if changed.changed().await.is_err() {
                // The writer is gone; nothing will change any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A revision arrived out of order: something was missed, and only a fresh snapshot heals it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Gap {
    pub(crate) applied: Revision,
    pub(crate) received: Revision,
}

/// The registry as this sidecar mirrors it from the change stream: every instance by service
/// and id. The subscription task's alone; readers see only the [`Snapshot`]s built from it.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    pub(crate) epoch: Option<String>,
    pub(crate) revision: Revision,
    services: BTreeMap<String, BTreeMap<String, Arc<Instance>>>,
    /// Instances deregistered since the last build, by service: a `never_empty` service does
    /// not keep those (an explicit removal is meant). Cleared by every build.
    deregistered: BTreeMap<String, BTreeSet<String>>,
    /// Every host name (not an IP) an instance uses, with how many use it: kept per change so
    /// that finding the names to resolve never walks every instance.
    hosts: HashMap<String, usize>,
}

/// What one applied event changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Changed {
    /// Nothing visible (a duplicate, an event already applied).
    Nothing,
    /// These services.
    Services(BTreeSet<String>),
    /// Everything (a snapshot replaced the mirror).
    All,
}

impl Mirror {
    /// Applies one event of the full (unfiltered) change stream. Changes must come with the
    /// next revision; an older one is a duplicate and ignored, a later one is a [`Gap`].
    pub(crate) fn apply(&mut self, event: WatchEvent) -> Result<Changed, Gap> {
        match event {
            WatchEvent::Snapshot {
                epoch,
                revision,
                instances,
            } => {
                self.services.clear();
                self.hosts.clear();
                for instance in instances {
                    count_host(&mut self.hosts, &instance, true);
                    self.services
                        .entry(instance.service.as_str().to_owned())
                        .or_default()
                        .insert(instance.id.as_str().to_owned(), Arc::new(instance));
                }
                self.epoch = Some(epoch);
                self.revision = revision;
                Ok(Changed::All)
            }
            WatchEvent::Upsert {
                revision, instance, ..
            } => {
                if !self.next(revision)? {
                    return Ok(Changed::Nothing);
                }
                let service = instance.service.as_str().to_owned();
                count_host(&mut self.hosts, &instance, true);
                let before = self
                    .services
                    .entry(service.clone())
                    .or_default()
                    .insert(instance.id.as_str().to_owned(), Arc::new(instance));
                if let Some(before) = before {
                    count_host(&mut self.hosts, &before, false);
                }
                Ok(Changed::Services(BTreeSet::from([service])))
            }
            WatchEvent::Remove {
                revision,
                service,
                id,
                reason,
            } => {
                if !self.next(revision)? {
                    return Ok(Changed::Nothing);
                }
                let name = service.as_str();
                if reason == ChangeReason::Deregistered {
                    self.deregistered
                        .entry(name.to_owned())
                        .or_default()
                        .insert(id.as_str().to_owned());
                }
                if let Some(instances) = self.services.get_mut(name) {
                    if let Some(gone) = instances.remove(id.as_str()) {
                        count_host(&mut self.hosts, &gone, false);
                    }
                    if instances.is_empty() {
                        self.services.remove(name);
                    }
                }
                Ok(Changed::Services(BTreeSet::from([name.to_owned()])))
            }
        }
    }

    /// `Ok(true)` for the next revision (now applied), `Ok(false)` for one already applied.
    fn next(&mut self, revision: Revision) -> Result<bool, Gap> {
        if revision <= self.revision {
            return Ok(false);
        }
        if revision != self.revision + 1 {
            return Err(Gap {
                applied: self.revision,
                received: revision,
            });
        }
        self.revision = revision;
        Ok(true)
    }

    /// Every host name (not an IP) that an instance uses.
    pub(crate) fn host_names(&self) -> BTreeSet<String> {
        self.hosts.keys().cloned().collect()
    }

    /// The host names (not IPs) used by the instances of the services in `changed`: what a
    /// build of `changed` may need resolved. Costs the changed services, or the distinct host
    /// names for [`Changed::All`].
    pub(crate) fn host_names_in(&self, changed: &Changed) -> BTreeSet<String> {
        match changed {
            Changed::Nothing => BTreeSet::new(),
            Changed::All => self.host_names(),
            Changed::Services(set) => set
                .iter()
                .filter_map(|name| self.services.get(name))
                .flat_map(BTreeMap::values)
                .filter(|i| i.host.parse::<IpAddr>().is_err())
                .map(|i| i.host.clone())
                .collect(),
        }
    }

    /// Builds the next snapshot: services in `changed` (or all) are rebuilt, the others are
    /// shared with `previous` (one path of the persistent map is copied per changed service).
    pub(crate) fn build(
        &mut self,
        previous: &Snapshot,
        changed: &Changed,
        names: &HashMap<String, Vec<IpAddr>>,
        records: &RecordBuilder,
        vip_mode: bool,
    ) -> Snapshot {
        let deregistered = std::mem::take(&mut self.deregistered);
        let view = |name: &str| -> Option<Arc<ServiceView>> {
            let before = previous.services.get(name);
            let instances = self.services.get(name);
            let all: Vec<Arc<Instance>> = instances
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let mut up: Vec<Target> = all
                .iter()
                .filter(|i| i.takes_work())
                .map(|i| Target {
                    instance: i.clone(),
                    addrs: match i.host.parse::<IpAddr>() {
                        Ok(ip) => vec![ip],
                        Err(_) => names.get(&i.host).cloned().unwrap_or_default(),
                    },
                })
                .collect();
            // The last instance gone: the policy is the one it carried.
            let policy = all
                .first()
                .map_or_else(|| before.and_then(|b| b.policy), |i| i.policy);
            let mut protected = false;
            if up.is_empty()
                && policy.is_some_and(|p| p.never_empty)
                && let Some(before) = before
            {
                let gone = deregistered.get(name);
                // Kept: the last set, less what was deregistered or drained since.
                let kept: Vec<Target> = before
                    .up
                    .iter()
                    .filter(|t| {
                        let id = t.instance.id.as_str();
                        let now = instances.and_then(|m| m.get(id));
                        ServicePolicy::keeps(
                            now.map(|i| &**i),
                            gone.is_some_and(|g| g.contains(id)),
                        )
                    })
                    .cloned()
                    .collect();
                protected = !kept.is_empty();
                up = kept;
            }
            if all.is_empty() && !protected {
                return None;
            }
            let vip = all
                .iter()
                .find_map(|i| i.vip)
                .or_else(|| up.iter().find_map(|t| t.instance.vip))
                .map(IpAddr::V4);
            let records =
                records.service(name, up.iter().map(Target::up), vip.filter(|_| vip_mode));
            Some(Arc::new(ServiceView {
                instances: all,
                up,
                vip,
                records,
                policy,
                protected,
            }))
        };
        let rebuilt: Vec<String> = match changed {
            // A resynchronisation: protected services the snapshot no longer has are
            // looked at too (their view may still keep the last set).
            Changed::All => self
                .services
                .keys()
                .cloned()
                .chain(
                    previous
                        .services
                        .iter()
                        .filter(|(n, v)| v.protected && !self.services.contains_key(*n))
                        .map(|(n, _)| n.clone()),
                )
                .collect(),
            Changed::Services(set) => set.iter().cloned().collect(),
            Changed::Nothing => Vec::new(),
        };
        // Everything is rebuilt after a snapshot; otherwise the previous map is shared (a
        // pointer copy) and only the changed services are replaced, the totals with them.
        let (mut services, mut instances, mut protected) = match changed {
            Changed::All => (Services::new(), 0, 0),
            _ => (
                previous.services.clone(),
                previous.instances,
                previous.protected,
            ),
        };
        for name in rebuilt {
            if let Some(old) = services.get(&name) {
                instances -= old.instances.len();
                protected -= usize::from(old.protected);
            }
            match view(&name) {
                Some(v) => {
                    instances += v.instances.len();
                    protected += usize::from(v.protected);
                    services.insert(name, v);
                }
                None => {
                    services.remove(&name);
                }
            }
        }
        Snapshot {
            epoch: self.epoch.clone(),
            revision: self.revision,
            services,
            instances,
            protected,
        }
    }
}

/// Counts `instance`'s host name in or out of `hosts` (IP hosts are not counted).
fn count_host(hosts: &mut HashMap<String, usize>, instance: &Instance, add: bool) {
    if instance.host.parse::<IpAddr>().is_ok() {
        return;
    }
    if add {
        *hosts.entry(instance.host.clone()).or_default() += 1;
    } else if let Some(n) = hosts.get_mut(&instance.host) {
        *n -= 1;
        if *n == 0 {
            hosts.remove(&instance.host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waypost_model::{ChangeReason, InstanceId, ServiceName};

    fn instance(service: &str, id: &str, revision: u64) -> Instance {
        instance_at(service, id, "10.0.0.1", revision)
    }

    fn instance_at(service: &str, id: &str, host: &str, revision: u64) -> Instance {
        serde_json::from_value(serde_json::json!({
            "id": id, "service": service, "address": format!("{host}:80"), "host": host,
            "port": 80, "tags": [], "metadata": {}, "weight": 1, "status": "up",
            "ttl_seconds": 30, "registered_at": "2026-11-23T00:00:00Z", "revision": revision
        }))
        .unwrap()
    }

    fn upsert(service: &str, id: &str, revision: u64) -> WatchEvent {
        WatchEvent::Upsert {
            revision,
            reason: ChangeReason::Registered,
            instance: instance(service, id, revision),
        }
    }

    #[test]
    fn changes_apply_in_order_and_gaps_are_refused() {
        let mut r = Mirror::default();
        let snap = WatchEvent::Snapshot {
            epoch: "e".into(),
            revision: 5,
            instances: vec![instance("web", "a", 5)],
        };
        assert_eq!(r.apply(snap), Ok(Changed::All));
        assert_eq!(
            r.apply(upsert("web", "b", 6)),
            Ok(Changed::Services(BTreeSet::from(["web".to_owned()])))
        );
        assert_eq!(r.apply(upsert("web", "b", 6)), Ok(Changed::Nothing));
        assert_eq!(
            r.apply(upsert("db", "c", 9)),
            Err(Gap {
                applied: 6,
                received: 9
            })
        );
        let remove = WatchEvent::Remove {
            revision: 7,
            reason: ChangeReason::Deregistered,
            service: ServiceName::new("web").unwrap(),
            id: InstanceId::new("a").unwrap(),
        };
        assert!(r.apply(remove).is_ok());
        assert_eq!(r.revision, 7);
        assert_eq!(r.services["web"].len(), 1);
    }

    fn remove(service: &str, id: &str, revision: u64) -> WatchEvent {
        WatchEvent::Remove {
            revision,
            reason: ChangeReason::Deregistered,
            service: ServiceName::new(service).unwrap(),
            id: InstanceId::new(id).unwrap(),
        }
    }

    /// Builds the next snapshot of `mirror` after `changed`, on top of `previous`.
    fn build(mirror: &mut Mirror, previous: &Snapshot, changed: &Changed) -> Snapshot {
        let records = RecordBuilder::new(
            hickory_proto::rr::Name::from_ascii("waypost.").unwrap(),
            std::time::Duration::from_secs(5),
        );
        mirror.build(previous, changed, &HashMap::new(), &records, false)
    }

    /// The totals counted the slow way, to check the ones kept per change.
    fn counted(snapshot: &Snapshot) -> (usize, usize) {
        let instances = snapshot.services.values().map(|v| v.instances.len()).sum();
        let protected = snapshot.services.values().filter(|v| v.protected).count();
        (instances, protected)
    }

    #[test]
    fn a_change_rebuilds_its_service_only_and_keeps_the_totals() {
        let mut m = Mirror::default();
        let snap = WatchEvent::Snapshot {
            epoch: "e".into(),
            revision: 5,
            instances: vec![
                instance("web", "a", 5),
                instance("web", "b", 5),
                instance("db", "c", 5),
            ],
        };
        let changed = m.apply(snap).unwrap();
        let first = build(&mut m, &Snapshot::default(), &changed);
        assert_eq!((first.instances, first.protected), (3, 0));
        assert_eq!(first.services.len(), 2);

        let changed = m.apply(upsert("web", "d", 6)).unwrap();
        let second = build(&mut m, &first, &changed);
        // The untouched service is the same allocation; the changed one is new.
        assert!(Arc::ptr_eq(&first.services["db"], &second.services["db"]));
        assert!(!Arc::ptr_eq(
            &first.services["web"],
            &second.services["web"]
        ));
        assert_eq!(second.services["web"].instances.len(), 3);
        assert_eq!((second.instances, second.protected), counted(&second));
        // The earlier snapshot is unchanged for its readers.
        assert_eq!(first.services["web"].instances.len(), 2);

        let changed = m.apply(remove("db", "c", 7)).unwrap();
        let third = build(&mut m, &second, &changed);
        assert!(!third.services.contains_key("db"));
        assert!(Arc::ptr_eq(&second.services["web"], &third.services["web"]));
        assert_eq!((third.instances, third.protected), (3, 0));
        assert_eq!(third.revision, 7);
    }

    #[test]
    fn host_names_are_counted_per_change() {
        let mut m = Mirror::default();
        let snap = WatchEvent::Snapshot {
            epoch: "e".into(),
            revision: 1,
            instances: vec![
                instance_at("web", "a", "web.example", 1),
                instance_at("web", "b", "web.example", 1),
                instance_at("db", "c", "10.0.0.9", 1),
            ],
        };
        let changed = m.apply(snap).unwrap();
        assert_eq!(
            m.host_names_in(&changed),
            BTreeSet::from(["web.example".into()])
        );
        let names = |m: &Mirror| m.host_names().into_iter().collect::<Vec<_>>();
        assert_eq!(names(&m), ["web.example"]);

        // `a` moves to an IP: `b` still uses the name.
        let moved = WatchEvent::Upsert {
            revision: 2,
            reason: ChangeReason::Updated,
            instance: instance_at("web", "a", "10.0.0.2", 2),
        };
        m.apply(moved).unwrap();
        assert_eq!(names(&m), ["web.example"]);
        let changed = m.apply(upsert("db", "d", 3)).unwrap();
        // Only the changed service's names are looked at.
        assert!(m.host_names_in(&changed).is_empty());
        m.apply(remove("web", "b", 4)).unwrap();
        assert!(names(&m).is_empty());
        let changed = m
            .apply(WatchEvent::Upsert {
                revision: 5,
                reason: ChangeReason::Registered,
                instance: instance_at("db", "e", "db.example", 5),
            })
            .unwrap();
        assert_eq!(
            m.host_names_in(&changed),
            BTreeSet::from(["db.example".into()])
        );
        assert_eq!(names(&m), ["db.example"]);
    }
}
