//! Each service's encoded endpoints (its `ClusterLoadAssignment`) at one version, shared by every
//! xDS stream: a change of a service followed by many streams is read and encoded once, not
//! once per stream, as a `/watch` event is (issue 18).
//!
//! An entry is exact for its version (epoch and service revision, read under the registry's lock
//! with the instances it was built from), and is replaced when a newer version is asked for.
//! Only services the registry holds are kept, and at most [`MAX_ENTRIES`]: a client that
//! subscribes to names that do not exist, or to very many, cannot grow it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use envoy_types::pb::google::protobuf::Any;
use waypost_model::{Epoch, Revision, ServiceName};

use super::resources::{self, Kind};
use crate::registry::Registry;

/// The most services kept; beyond, the cache starts again empty (it only ever costs a rebuild).
const MAX_ENTRIES: usize = 100_000;

/// The shared cache.
#[derive(Debug, Default)]
pub(crate) struct EndpointsCache {
    entries: Mutex<HashMap<ServiceName, Entry>>,
}

#[derive(Debug)]
struct Entry {
    epoch: Epoch,
    revision: Revision,
    any: Arc<Any>,
}

impl EndpointsCache {
    /// `service`'s endpoints resource and the revision it is at: from the cache when it holds
    /// the registry's current version, else built (and kept).
    pub(crate) fn get(&self, registry: &Registry, service: &ServiceName) -> (Revision, Arc<Any>) {
        let (epoch, revision) = registry.service_version(service.as_str());
        if let Some(e) = self.lock().get(service)
            && e.epoch == epoch
            && e.revision == revision
        {
            return (revision, e.any.clone());
        }
        let (instances, epoch, revision) = registry.service_at(service.as_str());
        let any = Arc::new(resources::packed(
            Kind::Endpoints,
            service.as_str(),
            instances.iter().map(AsRef::as_ref),
        ));
        if revision > 0 {
            let mut entries = self.lock();
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(service) {
                entries.clear();
            }
            // Never replace a newer entry with an older one (two streams may build at once).
            let newer_kept = entries
                .get(service)
                .is_some_and(|e| e.epoch == epoch && e.revision > revision);
            if !newer_kept {
                entries.insert(
                    service.clone(),
                    Entry {
                        epoch,
                        revision,
                        any: any.clone(),
                    },
                );
            }
        }
        (revision, any)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceName, Entry>> {
        // Every change to the map completes before the next line.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
