//! The revisioned change log: a bounded window of the most recent visible changes, so that a
//! watcher can resume exactly where it left off. Revisions in the log are contiguous (one change
//! per revision), which makes `since` a slice, not a search.

use std::{collections::VecDeque, sync::Arc};

use waypost_model::{ChangeReason, Instance, InstanceId, Revision, ServiceName, WatchEvent};

/// One visible change.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) revision: Revision,
    pub(crate) kind: ChangeKind,
}

#[derive(Debug, Clone)]
pub(crate) enum ChangeKind {
    Upsert {
        reason: ChangeReason,
        instance: Arc<Instance>,
    },
    Remove {
        reason: ChangeReason,
        service: ServiceName,
        id: InstanceId,
    },
}

impl Change {
    pub(crate) fn service(&self) -> &ServiceName {
        match &self.kind {
            ChangeKind::Upsert { instance, .. } => &instance.service,
            ChangeKind::Remove { service, .. } => service,
        }
    }

    pub(crate) fn to_event(&self) -> WatchEvent {
        match &self.kind {
            ChangeKind::Upsert { reason, instance } => WatchEvent::Upsert {
                revision: self.revision,
                reason: *reason,
                instance: Instance::clone(instance),
            },
            ChangeKind::Remove {
                reason,
                service,
                id,
            } => WatchEvent::Remove {
                revision: self.revision,
                reason: *reason,
                service: service.clone(),
                id: id.clone(),
            },
        }
    }
}

/// The requested revision is older than the kept history (or newer than the head): the caller
/// needs a fresh snapshot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stale;

#[derive(Debug)]
pub(crate) struct ChangeLog {
    entries: VecDeque<Change>,
    capacity: usize,
    /// The revision just before the oldest kept change: `since(floor)` is the oldest resumable.
    floor: Revision,
}

impl ChangeLog {
    pub(crate) fn new(head: Revision, capacity: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
            floor: head,
        }
    }

    pub(crate) fn floor(&self) -> Revision {
        self.floor
    }

    /// Appends the change for `floor + len + 1`; drops the oldest beyond capacity.
    pub(crate) fn push(&mut self, change: Change) {
        debug_assert_eq!(change.revision, self.floor + self.entries.len() as u64 + 1);
        if self.entries.len() == self.capacity
            && let Some(old) = self.entries.pop_front()
        {
            self.floor = old.revision;
        }
        self.entries.push_back(change);
    }

    /// The changes with `after < revision <= up_to`, or [`Stale`] when `after` is older than
    /// the log or newer than `up_to`.
    pub(crate) fn since(&self, after: Revision, up_to: Revision) -> Result<Vec<Change>, Stale> {
        let head = self.floor + self.entries.len() as u64;
        if after < self.floor || after > up_to || up_to > head {
            return Err(Stale);
        }
        let start = (after - self.floor) as usize;
        let end = (up_to - self.floor) as usize;
        Ok(self.entries.range(start..end).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remove(revision: Revision) -> Change {
        Change {
            revision,
            kind: ChangeKind::Remove {
                reason: ChangeReason::Deregistered,
                service: ServiceName::new("s").unwrap(),
                id: InstanceId::new("i").unwrap(),
            },
        }
    }

    fn revs(v: Vec<Change>) -> Vec<Revision> {
        v.into_iter().map(|c| c.revision).collect()
    }

    #[test]
    fn since_slices_exactly_and_reports_stale() {
        let mut log = ChangeLog::new(10, 3);
        for r in 11..=15 {
            log.push(remove(r));
        }
        // Kept: 13, 14, 15; floor 12.
        assert_eq!(log.floor(), 12);
        assert_eq!(revs(log.since(12, 15).unwrap()), vec![13, 14, 15]);
        assert_eq!(revs(log.since(13, 14).unwrap()), vec![14]);
        assert_eq!(revs(log.since(15, 15).unwrap()), Vec::<Revision>::new());
        assert_eq!(log.since(11, 15).unwrap_err(), Stale);
        assert_eq!(log.since(16, 16).unwrap_err(), Stale);
        assert_eq!(log.since(14, 13).unwrap_err(), Stale);
    }
}
