//! Each service's encoded endpoints (its `ClusterLoadAssignment`) at one version, shared by every
//! xDS stream: a change of a service followed by many streams is read and encoded once, not
//! once per stream, as a `/watch` event is (issue 18).
//!
//! An entry is exact for its version (epoch and service revision, read under the registry's lock
//! with the instances it was built from), and is replaced when a newer version is asked for.
//! A service the registry does not hold loses its entry when it is asked for, and the entries
//! hold at most [`MAX_BYTES`] of encoded assignments: past that, entries are dropped (any, until
//! the new one fits), which only ever costs rebuilds. An entry that no lookup can match (an
//! older version) may linger until then. A client that subscribes to names that do not exist,
//! or to very many, cannot grow it past the bound.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use envoy_types::pb::google::protobuf::Any;
use waypost_model::{Epoch, Revision, ServiceName};

use super::resources::{self, Kind};
use crate::registry::Registry;

/// The most bytes of encoded assignments kept.
const MAX_BYTES: usize = 64 << 20;

/// The shared cache.
#[derive(Debug, Default)]
pub(crate) struct EndpointsCache {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_service: HashMap<ServiceName, Entry>,
    /// The encoded bytes of every entry.
    bytes: usize,
}

impl Entries {
    fn remove(&mut self, service: &ServiceName) {
        if let Some(old) = self.by_service.remove(service) {
            self.bytes -= old.any.value.len();
        }
    }

    /// Drops entries (in no particular order) until `len` more bytes fit in [`MAX_BYTES`].
    fn make_room(&mut self, len: usize) {
        if self.bytes + len <= MAX_BYTES {
            // The common case, without a walk over every entry.
            return;
        }
        let Self { by_service, bytes } = self;
        by_service.retain(|_, e| {
            if *bytes + len <= MAX_BYTES {
                return true;
            }
            *bytes -= e.any.value.len();
            false
        });
    }
}

#[derive(Debug)]
struct Entry {
    epoch: Epoch,
    revision: Revision,
    any: Arc<Any>,
}

impl EndpointsCache {
    /// `service`'s endpoints resource and the version it is exactly at: from the cache when it
    /// holds the registry's current version, else built (and kept).
    pub(crate) fn get(
        &self,
        registry: &Registry,
        service: &ServiceName,
    ) -> (Epoch, Revision, Arc<Any>) {
        let (epoch, revision) = registry.service_version(service.as_str());
        if let Some(e) = self.lock().by_service.get(service)
            && e.epoch == epoch
            && e.revision == revision
        {
            return (epoch, revision, e.any.clone());
        }
        let (instances, epoch, revision) = registry.service_at(service.as_str());
        let any = Arc::new(resources::packed(
            Kind::Endpoints,
            service.as_str(),
            instances.iter().map(AsRef::as_ref),
        ));
        let mut entries = self.lock();
        if revision == 0 {
            entries.remove(service);
            return (epoch, revision, any);
        }
        // Never replace a newer entry with an older one (two streams may build at once).
        let newer_kept = entries
            .by_service
            .get(service)
            .is_some_and(|e| e.epoch == epoch && e.revision > revision);
        // An assignment too large to share the bound with others is not kept.
        if !newer_kept && any.value.len() <= MAX_BYTES / 4 {
            entries.remove(service);
            entries.make_room(any.value.len());
            entries.bytes += any.value.len();
            entries.by_service.insert(
                service.clone(),
                Entry {
                    epoch,
                    revision,
                    any: any.clone(),
                },
            );
        }
        (epoch, revision, any)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every change to the map completes before the next line.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: usize) -> Entry {
        Entry {
            epoch: 1,
            revision: 1,
            any: Arc::new(Any {
                type_url: String::new(),
                value: vec![0; len],
            }),
        }
    }

    fn add(entries: &mut Entries, name: &str, len: usize) {
        entries.make_room(len);
        entries.bytes += len;
        entries
            .by_service
            .insert(ServiceName::new(name).unwrap(), entry(len));
    }

    #[test]
    fn entries_are_dropped_only_until_a_new_one_fits() {
        let mut entries = Entries::default();
        let quarter = MAX_BYTES / 4;
        for name in ["a", "b", "c", "d"] {
            add(&mut entries, name, quarter);
        }
        assert_eq!((entries.by_service.len(), entries.bytes), (4, MAX_BYTES));
        // One more quarter: exactly one of the four goes.
        add(&mut entries, "e", quarter);
        assert_eq!((entries.by_service.len(), entries.bytes), (4, MAX_BYTES));
        let kept: usize = entries.by_service.values().map(|e| e.any.value.len()).sum();
        assert_eq!(kept, entries.bytes);
        entries.remove(&ServiceName::new("e").unwrap());
        assert_eq!(entries.bytes, 3 * quarter);
    }
}
