//! The fan-out of changes to `/watch` streams: one task reads each committed change once,
//! encodes it once as a Server-Sent Event, and hands the same bytes to every live stream that
//! wants it.
//!
//! Before this, every stream woke on every commit, read the change log itself and encoded each
//! event for itself: with 10,000 streams one write cost 10,000 wake-ups and up to 10,000
//! encodings (the trouble consul#1244 describes). Now a commit costs one log read, one encoding
//! per change that anyone watches, and one queue push per stream that watches its service (or
//! everything); a stream of one service costs nothing when other services change.
//!
//! Each live stream has a queue of `buffer` events. A stream whose queue is full (its reader is
//! slower than the changes) is taken off the live fan-out at once, so the server never buffers
//! more than that for it; the stream then reads the shared change log at its reader's pace
//! (etcd's "unsynced" watchers do the same), and gets a snapshot if it falls behind the kept
//! history, exactly what a reconnection with `Last-Event-ID` would get. Once it has caught up
//! it joins the live fan-out again.
//!
//! Blocking queries on one service (`/discover/{service}?index=R`) and xDS streams (which
//! follow a set of services that changes with their subscriptions) wait here too, each on a
//! [`Following`]: the dispatch wakes it when it passes a change of a service it follows, so a
//! commit wakes the waits on its own service only, where every held query and every xDS stream
//! used to wake on every commit.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::body::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use waypost_model::{Epoch, Revision, ServiceName, WatchEvent, watch::event_id};

use crate::{
    metrics::Metrics,
    registry::{Change, Registry, Stale},
};

/// One encoded event on its way to a stream: the revision it brings the stream to, and its
/// bytes, shared by every stream that gets it.
pub(crate) type Frame = (Revision, Bytes);

/// Why a stream could not join the live fan-out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The stream's position is older than the kept history, or of another epoch: it needs a
    /// snapshot first.
    Stale,
    /// The fan-out is further ahead than a queue holds: read the log up to the head first.
    Behind,
    /// The registry failed or the server is stopping: end the stream.
    Closed,
}

/// The fan-out hub: shared by the dispatch task and every stream.
pub(crate) struct Fanout {
    hub: Mutex<Hub>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// Events queued per live stream.
    buffer: usize,
    /// The whole registry's snapshot event at one revision, kept for the next unfiltered stream
    /// that starts at that revision (sidecars reconnecting after a restart all do).
    full_snapshot: Mutex<Option<(Epoch, Revision, Bytes)>>,
    /// The hub's `closed`, readable without its lock (blocking queries look at it on every
    /// wake-up).
    closed: AtomicBool,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Hub {
    /// Every change up to here has been offered to the streams live at the time.
    dispatched: Revision,
    /// The epoch `dispatched` belongs to.
    epoch: Epoch,
    /// Live streams of one service.
    services: HashMap<ServiceName, HashMap<u64, Sub>>,
    /// Live streams of everything.
    all: HashMap<u64, Sub>,
    /// Every [`Following`]'s wake-up, by its id...
    following: HashMap<u64, Arc<Notify>>,
    /// ...and the ids of those that follow each service.
    followers: HashMap<ServiceName, HashSet<u64>>,
    next_id: u64,
    closed: bool,
}

struct Sub {
    tx: mpsc::Sender<Frame>,
    /// Changes up to here already reached the stream (it joined after them).
    after: Revision,
}

/// A stream's place in the live fan-out; leaving it (dropping this) takes the stream out.
pub(crate) struct Live {
    pub(crate) rx: mpsc::Receiver<Frame>,
    fanout: Arc<Fanout>,
    service: Option<ServiceName>,
    id: u64,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.fanout.metrics.watch_live.dec();
        let mut hub = self.fanout.lock();
        match &self.service {
            None => {
                hub.all.remove(&self.id);
            }
            Some(s) => {
                if let Some(subs) = hub.services.get_mut(s) {
                    subs.remove(&self.id);
                    if subs.is_empty() {
                        hub.services.remove(s);
                    }
                }
            }
        }
    }
}

impl Fanout {
    pub(crate) fn new(registry: Arc<Registry>, metrics: Arc<Metrics>, buffer: usize) -> Self {
        let hub = Hub {
            dispatched: registry.head(),
            epoch: registry.epoch(),
            ..Hub::default()
        };
        Self {
            hub: Mutex::new(hub),
            registry,
            metrics,
            buffer: buffer.max(1),
            full_snapshot: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        // Every change to the hub completes before the next line; a panic cannot leave it
        // half-changed in a way that matters.
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the applied head and dispatches every change, until shutdown or a store failure
    /// (which ends every stream).
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut committed = self.registry.subscribe();
        loop {
            if committed.borrow_and_update().failed {
                break;
            }
            self.dispatch();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                changed = committed.changed() => if changed.is_err() { break },
            }
        }
        self.close();
    }

    /// Ends the fan-out: live streams leave it, and every wait wakes to see `closed`.
    fn close(&self) {
        let mut hub = self.lock();
        hub.closed = true;
        self.closed.store(true, Ordering::Release);
        hub.services.clear();
        hub.all.clear();
        hub.wake_all_waiting();
    }

    /// Offers every change applied so far (up to the registry's head) to the live streams.
    fn dispatch(&self) {
        let mut hub = self.lock();
        self.advance(&mut hub);
    }

    /// [`Self::dispatch`] under the hub's lock, which [`Self::join`] holds too: a stream never
    /// joins a hub that is behind the registry (say, still in the epoch before a snapshot was
    /// installed).
    fn advance(&self, hub: &mut Hub) {
        // The epoch is read on both sides of the log read: a snapshot of another history
        // installed in between shows as a difference, and nothing read then is sent under
        // either epoch.
        let epoch = self.registry.epoch();
        let head = self.registry.head();
        if hub.epoch == 0 && hub.dispatched == 0 {
            // Epoch 0 is a history not named yet (no leader so far), not another history: the
            // first leader names it with nothing committed before, and what follows continues
            // it. A snapshot installed meanwhile shows as a gap in the log below.
            hub.epoch = epoch;
        }
        if epoch == hub.epoch && head <= hub.dispatched {
            return;
        }
        let changes = if epoch == hub.epoch {
            self.registry
                .changes_since(hub.dispatched, head)
                .ok()
                .filter(|_| self.registry.epoch() == epoch)
        } else {
            None
        };
        let Some(changes) = changes else {
            // A new history (a snapshot installed from the leader) or a gap the log no longer
            // holds: every stream goes back to reading for itself, which ends in a snapshot.
            self.metrics.watch_detached.inc_by(hub.live() as u64);
            hub.services.clear();
            hub.all.clear();
            // Any service may have changed: every blocking query looks again.
            hub.wake_all_waiting();
            hub.dispatched = head;
            hub.epoch = epoch;
            return;
        };
        let mut queued = 0u64;
        let mut detached = 0u64;
        let mut encoded = 0u64;
        let Hub {
            services,
            all,
            following,
            followers,
            ..
        } = hub;
        for change in &changes {
            for id in followers.get(change.service()).into_iter().flatten() {
                if let Some(notify) = following.get(id) {
                    notify.notify_one();
                }
            }
            let mut frame: Option<Bytes> = None;
            let mut offer = |subs: &mut HashMap<u64, Sub>| {
                subs.retain(|_, sub| {
                    if change.revision <= sub.after {
                        return true;
                    }
                    let bytes = frame.get_or_insert_with(|| {
                        encoded += 1;
                        encode_change(epoch, change)
                    });
                    match sub.tx.try_send((change.revision, bytes.clone())) {
                        Ok(()) => {
                            queued += 1;
                            true
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            detached += 1;
                            false
                        }
                        // The stream's reader is gone; its `Live` leaves on drop anyway.
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    }
                });
            };
            if let Some(subs) = services.get_mut(change.service()) {
                offer(subs);
                if subs.is_empty() {
                    services.remove(change.service());
                }
            }
            offer(all);
        }
        hub.dispatched = head;
        self.metrics.watch_events.inc_by(queued);
        self.metrics.watch_detached.inc_by(detached);
        self.metrics.watch_encoded.inc_by(encoded);
    }

    /// Joins the live fan-out at `after` (the revision the stream has reached, in `epoch`). The
    /// changes the fan-out already dispatched after it are queued first.
    pub(crate) fn join(
        self: &Arc<Self>,
        service: Option<&ServiceName>,
        epoch: Epoch,
        after: Revision,
    ) -> Result<Live, Refused> {
        let mut hub = self.lock();
        if hub.closed {
            return Err(Refused::Closed);
        }
        self.advance(&mut hub);
        if epoch != hub.epoch {
            return Err(Refused::Stale);
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        if after < hub.dispatched {
            let gap = self
                .registry
                .changes_since(after, hub.dispatched)
                .map_err(|Stale| Refused::Stale)?;
            let wanted: Vec<&Change> = gap
                .iter()
                .filter(|c| service.is_none_or(|s| s == c.service()))
                .collect();
            if wanted.len() > self.buffer / 2 {
                return Err(Refused::Behind);
            }
            for change in wanted {
                // Cannot fail: the queue is new and large enough.
                let _ = tx.try_send((change.revision, encode_change(epoch, change)));
            }
        }
        let sub = Sub {
            tx,
            after: after.max(hub.dispatched),
        };
        hub.next_id += 1;
        let id = hub.next_id;
        match service {
            None => hub.all.insert(id, sub),
            Some(s) => hub.services.entry(s.clone()).or_default().insert(id, sub),
        };
        self.metrics.watch_live.inc();
        Ok(Live {
            rx,
            fanout: self.clone(),
            service: service.cloned(),
            id,
        })
    }

    /// A snapshot event of one service (or everything) at the applied head, with its epoch
    /// and revision. The whole registry's is kept for the next stream at the same revision.
    pub(crate) fn snapshot(&self, service: Option<&ServiceName>) -> (Bytes, Epoch, Revision) {
        let epoch = self.registry.epoch();
        if service.is_none() {
            let head = self.registry.head();
            let kept = self
                .full_snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some((e, r, bytes)) = kept
                && e == epoch
                && r == head
            {
                return (bytes, e, r);
            }
        }
        let (instances, revision) = self.registry.snapshot(service.map(ServiceName::as_str));
        // A snapshot of another history installed meanwhile: label nothing with the wrong
        // epoch, and keep nothing (the stream sees the new epoch and asks again).
        let cacheable = self.registry.epoch() == epoch;
        let event = WatchEvent::Snapshot {
            epoch: format!("{epoch:016x}"),
            revision,
            instances,
        };
        let bytes = encode(epoch, &event);
        if service.is_none() && cacheable {
            *self.full_snapshot.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((epoch, revision, bytes.clone()));
        }
        (bytes, epoch, revision)
    }

    /// Whether streams must end (store failure or shutdown).
    pub(crate) fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Hub {
    fn live(&self) -> usize {
        self.all.len() + self.services.values().map(HashMap::len).sum::<usize>()
    }

    /// Wakes every [`Following`].
    fn wake_all_waiting(&self) {
        for notify in self.following.values() {
            notify.notify_one();
        }
    }
}

/// A wait on changes of a set of services (a blocking query's one, an xDS stream's): the set
/// changes with [`Self::set`], and [`Self::changed`] completes when the fan-out has passed a
/// change of one of them since the last call, started a new history, or closed. A change passed
/// while the task is busy elsewhere is kept (one wake-up for any number), so none is missed
/// between two calls. Following no service costs the dispatch nothing.
pub(crate) struct Following {
    notify: Arc<Notify>,
    fanout: Arc<Fanout>,
    id: u64,
    services: BTreeSet<ServiceName>,
}

impl Fanout {
    /// A [`Following`] of no service yet.
    pub(crate) fn follow(self: &Arc<Self>) -> Following {
        let notify = Arc::new(Notify::new());
        let mut hub = self.lock();
        hub.next_id += 1;
        let id = hub.next_id;
        hub.following.insert(id, notify.clone());
        if hub.closed {
            // The wake-up that says so has been given: this one's first is that.
            notify.notify_one();
        }
        Following {
            notify,
            fanout: self.clone(),
            id,
            services: BTreeSet::new(),
        }
    }
}

impl Following {
    /// Follows `services` (given in order) from now on, and no other. A change dispatched
    /// before this call is not reported for a service just added: read its state after it.
    pub(crate) fn set<'a>(&mut self, services: impl Iterator<Item = &'a ServiceName> + Clone) {
        // Called on every request of the stream (mostly ACKs, with the same set): compared
        // before anything is copied.
        if services.clone().eq(self.services.iter()) {
            return;
        }
        let services: BTreeSet<ServiceName> = services.cloned().collect();
        let mut hub = self.fanout.lock();
        for gone in self.services.difference(&services) {
            hub.unfollow(gone, self.id);
        }
        for new in services.difference(&self.services) {
            hub.followers
                .entry(new.clone())
                .or_default()
                .insert(self.id);
        }
        drop(hub);
        self.services = services;
    }

    /// Completes at the next change of a followed service (see [`Following`]).
    pub(crate) async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut hub = self.fanout.lock();
        hub.following.remove(&self.id);
        for service in &self.services {
            hub.unfollow(service, self.id);
        }
    }
}

impl Hub {
    fn unfollow(&mut self, service: &ServiceName, id: u64) {
        if let Some(ids) = self.followers.get_mut(service) {
            ids.remove(&id);
            if ids.is_empty() {
                self.followers.remove(service);
            }
        }
    }
}

/// Encodes one change as a Server-Sent Event.
pub(crate) fn encode_change(epoch: Epoch, change: &Change) -> Bytes {
    encode(epoch, &change.to_event())
}

/// Encodes one event as a Server-Sent Event: its id, its name, and its JSON on one `data`
/// line (JSON without pretty-printing has no line breaks).
pub(crate) fn encode(epoch: Epoch, event: &WatchEvent) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(event_id(epoch, event.revision()).as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(event.kind().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Serialising owned model types into a Vec cannot fail.
    serde_json::to_writer(&mut out, event).expect("a watch event serialises");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use waypost_model::RegisterRequest;

    use super::*;
    use crate::registry::RegistryConfig;

    fn fanout() -> Arc<Fanout> {
        let registry = Registry::in_memory_for_test(RegistryConfig {
            max_instances: 100,
            ..crate::registry::tests::config()
        });
        Arc::new(Fanout::new(
            Arc::new(registry),
            Arc::new(Metrics::new()),
            16,
        ))
    }

    fn change(f: &Fanout, service: &str, port: u16) {
        f.registry
            .register(&RegisterRequest::new(service, format!("10.0.0.1:{port}")))
            .unwrap();
        f.dispatch();
    }

    /// Whether a wake-up is waiting, taken without waiting.
    fn woken(following: &Following) -> bool {
        following.changed().now_or_never().is_some()
    }

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    #[test]
    fn a_following_wakes_once_for_changes_of_its_services_only() {
        let f = fanout();
        let mut following = f.follow();
        following.set([name("a"), name("c")].iter());
        change(&f, "b", 1);
        assert!(!woken(&following), "b is not followed");
        // Two changes while the stream is busy: one wake-up, kept until taken.
        change(&f, "a", 1);
        change(&f, "c", 1);
        assert!(woken(&following));
        assert!(!woken(&following));
        // The set moves: a no longer wakes it, b does.
        following.set([name("b")].iter());
        change(&f, "a", 2);
        assert!(!woken(&following));
        change(&f, "b", 2);
        assert!(woken(&following));
        drop(following);
        let hub = f.lock();
        assert!(hub.following.is_empty() && hub.followers.is_empty());
    }

    #[test]
    fn closing_wakes_every_following_and_one_made_after_at_once() {
        let f = fanout();
        let idle = f.follow();
        f.close();
        assert!(woken(&idle), "even one that follows nothing");
        assert!(woken(&f.follow()), "made after the close");
    }
}
