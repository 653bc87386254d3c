//! The control plane's change stream (`GET /watch`, Server-Sent Events) as Rust streams.
//!
//! [`WatchStream`] is the one subscription in the workspace (the sidecar uses it too). A
//! background task holds the connection and forwards each event in order. On any failure
//! (refused connection, reset, a connection silent past [`IDLE_LIMIT`]) it reports the
//! disconnection, waits with backoff and jitter, moves to the next endpoint, and reconnects with
//! `Last-Event-ID` set to the last event it forwarded: the control plane then sends exactly the
//! changes after it, or a fresh snapshot when it no longer has them (or its epoch changed). A
//! snapshot older than what was already forwarded (from a node of a cluster that has not caught
//! up yet) is not forwarded: the task tries another endpoint instead, for up to
//! [`BEHIND_LIMIT`]. The task ends when the stream is dropped.
//!
//! [`Watch`] folds one service's events into whole instance sets.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use url::Url;
use waypost_model::{
    Epoch, Instance, Revision, WatchEvent, query::parse_epoch, watch::parse_event_id,
};

use crate::transport::{Transport, backoff};

/// The instances of one service at one revision.
///
/// ```
/// use waypost_client::ServiceSet;
///
/// let empty = ServiceSet { service: "web".into(), revision: 7, instances: vec![], deregistered: vec![] };
/// assert_eq!(empty.up().count(), 0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSet {
    /// The service.
    pub service: String,
    /// The revision of the last change applied.
    pub revision: Revision,
    /// Every instance (draining ones too), ordered by id.
    pub instances: Vec<Arc<Instance>>,
    /// The ids the change that made this set deregistered (not those that expired): a
    /// `never_empty` service keeps what left otherwise ([`crate::Resolver`]).
    pub deregistered: Vec<String>,
}

impl ServiceSet {
    /// The instances that take new work (status `up`, health `passing`).
    ///
    /// ```
    /// # use waypost_client::ServiceSet;
    /// # let set = ServiceSet { service: "web".into(), revision: 7, instances: vec![], deregistered: vec![] };
    /// for instance in set.up() {
    ///     println!("{}:{}", instance.host, instance.port);
    /// }
    /// ```
    pub fn up(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.instances.iter().filter(|i| i.takes_work())
    }

    /// The instance ids, in order (handy in logs and tests).
    ///
    /// ```
    /// # use waypost_client::ServiceSet;
    /// # let set = ServiceSet { service: "web".into(), revision: 7, instances: vec![], deregistered: vec![] };
    /// assert!(set.ids().is_empty());
    /// ```
    pub fn ids(&self) -> Vec<&str> {
        self.instances.iter().map(|i| i.id.as_str()).collect()
    }
}

/// What a [`WatchStream`] reports, in order.
///
/// ```
/// use waypost_client::StreamEvent;
///
/// let event = StreamEvent::Connected { endpoint: "http://127.0.0.1:9000/".into() };
/// assert!(matches!(event, StreamEvent::Connected { .. }));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Connected to a control plane. Events follow: a `snapshot` first, unless the stream
    /// resumed after the last event forwarded.
    Connected {
        /// The control plane's base URL.
        endpoint: String,
    },
    /// One change-stream event.
    Event {
        /// Its SSE id, `<epoch>-<revision>`.
        id: String,
        /// The event (boxed: an instance is large next to the other variants).
        event: Box<WatchEvent>,
    },
    /// The connection failed or ended; a reconnection follows after a backoff.
    Disconnected {
        /// The control plane's base URL.
        endpoint: String,
        /// Why.
        error: String,
    },
}

/// The control plane's change stream with reconnection and resume: every [`WatchEvent`] in
/// order, with connection changes in between. Made by
/// [`Client::watch_events`](crate::Client::watch_events). Never ends on its own.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), waypost_client::Error> {
/// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
/// use futures_util::StreamExt;
/// use waypost_client::{StreamEvent, model::WatchEvent};
///
/// let client = waypost_client::Client::new(&cp.url)?;
/// let mut events = client.watch_events(None); // every service
/// assert!(matches!(events.next().await, Some(StreamEvent::Connected { .. })));
/// match events.next().await {
///     Some(StreamEvent::Event { event, .. }) if matches!(*event, WatchEvent::Snapshot { .. }) => {
///         println!("the registry at revision {}", event.revision());
///     }
///     other => panic!("expected a snapshot first, got {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WatchStream {
    events: mpsc::Receiver<StreamEvent>,
    resync: Arc<Notify>,
}

impl WatchStream {
    pub(crate) fn start(transport: Arc<Transport>, service: Option<String>) -> Self {
        // Small: a consumer that stops reading holds the task (and its connection) back
        // rather than letting events pile up.
        let (tx, events) = mpsc::channel(64);
        let resync = Arc::new(Notify::new());
        let query = service
            .map(|s| vec![("service".to_owned(), s)])
            .unwrap_or_default();
        tokio::spawn(follow(transport, query, tx, resync.clone()));
        Self { events, resync }
    }

    /// Drops the connection and starts again from a fresh snapshot: for a consumer that found
    /// a gap in what it received (a revision skipped) and will not guess across it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use futures_util::StreamExt;
    /// use waypost_client::{StreamEvent, model::WatchEvent};
    ///
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// let mut events = client.watch_events(None);
    /// events.resync();
    /// // Whatever was under way, a snapshot comes again.
    /// loop {
    ///     if let Some(StreamEvent::Event { event, .. }) = events.next().await {
    ///         if matches!(*event, WatchEvent::Snapshot { .. }) {
    ///             break;
    ///         }
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn resync(&self) {
        self.resync.notify_one();
    }
}

impl Stream for WatchStream {
    type Item = StreamEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamEvent>> {
        self.events.poll_recv(cx)
    }
}

/// A stream of a service's [`ServiceSet`]s: the current set first, then one set per change,
/// in revision order, across reconnections. Made by [`Client::watch`](crate::Client::watch).
///
/// It never ends on its own and never yields errors: failures are logged (`tracing`, target
/// `waypost_client::watch`) and retried. Dropping it closes the connection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), waypost_client::Error> {
/// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
/// use futures_util::StreamExt;
///
/// let client = waypost_client::Client::new(&cp.url)?;
/// let mut watch = client.watch("web");
/// if let Some(set) = watch.next().await {
///     println!("web at revision {}: {:?}", set.revision, set.ids());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Watch {
    events: WatchStream,
    view: View,
    /// Snapshots received so far (see [`Watch::snapshots`]).
    snapshots: u64,
}

/// A connection silent for this long (no event, no keep-alive comment: the control plane
/// sends one every 15 s by default) is presumed dead and replaced.
///
/// ```
/// assert_eq!(waypost_client::IDLE_LIMIT.as_secs(), 45); // three missed keep-alives
/// ```
pub const IDLE_LIMIT: Duration = Duration::from_secs(45);

/// The first reconnection waits about this long; each further one twice as long, up to
/// [`RECONNECT_CAP`].
const RECONNECT_BASE: Duration = Duration::from_millis(100);
/// The longest wait between reconnections.
///
/// ```
/// assert_eq!(waypost_client::RECONNECT_CAP.as_secs(), 5);
/// ```
pub const RECONNECT_CAP: Duration = Duration::from_secs(5);

/// How long a watch refuses snapshots older than what it already forwarded before it takes
/// one anyway. Within a cluster such a snapshot comes from a node that has not applied the
/// log as far as the node the watch left (it catches up within moments, or another node
/// serves); a control plane whose history really went back (restored from an old copy) is
/// followed once this has passed.
///
/// ```
/// assert_eq!(waypost_client::BEHIND_LIMIT.as_secs(), 30);
/// ```
pub const BEHIND_LIMIT: Duration = Duration::from_secs(30);

impl Watch {
    pub(crate) fn new(events: WatchStream, service: String) -> Self {
        Self {
            events,
            view: View {
                service,
                revision: 0,
                instances: BTreeMap::new(),
                sent: false,
                deregistered: Vec::new(),
            },
            snapshots: 0,
        }
    }

    /// How many snapshots this watch has received so far: 1 once its first connection
    /// delivered the current set. A reconnection that resumed after the last change seen (the
    /// usual case, also on another control plane of a cluster) adds none; one that could not
    /// (the control plane no longer had the changes since, or its epoch changed) adds one,
    /// and so does a resync after an unreadable event. Counted as the stream is read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use futures_util::StreamExt;
    ///
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// let mut watch = client.watch("web");
    /// assert_eq!(watch.snapshots(), 0);
    /// watch.next().await; // the current set, from a snapshot
    /// assert_eq!(watch.snapshots(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn snapshots(&self) -> u64 {
        self.snapshots
    }
}

impl Stream for Watch {
    type Item = ServiceSet;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServiceSet>> {
        loop {
            match ready!(self.events.poll_next_unpin(cx)) {
                None => return Poll::Ready(None),
                Some(StreamEvent::Event { event, .. }) => {
                    if matches!(*event, WatchEvent::Snapshot { .. }) {
                        self.snapshots += 1;
                    }
                    if self.view.apply(*event) {
                        self.view.sent = true;
                        return Poll::Ready(Some(self.view.set()));
                    }
                }
                Some(StreamEvent::Disconnected { endpoint, error }) => {
                    tracing::warn!(%endpoint, service = %self.view.service, %error, "watch disconnected");
                }
                Some(StreamEvent::Connected { .. }) => {}
            }
        }
    }
}

/// One service as the events so far describe it.
#[derive(Debug)]
struct View {
    service: String,
    revision: Revision,
    instances: BTreeMap<String, Arc<Instance>>,
    /// Whether any set was sent yet (the first snapshot is always sent, even when empty).
    sent: bool,
    /// Deregistered by the change being applied.
    deregistered: Vec<String>,
}

impl View {
    fn set(&mut self) -> ServiceSet {
        ServiceSet {
            service: self.service.clone(),
            revision: self.revision,
            instances: self.instances.values().cloned().collect(),
            deregistered: std::mem::take(&mut self.deregistered),
        }
    }

    /// Applies one event; `true` when the set changed and must be sent.
    fn apply(&mut self, event: WatchEvent) -> bool {
        match event {
            WatchEvent::Snapshot {
                revision,
                instances,
                ..
            } => {
                let fresh: BTreeMap<String, Arc<Instance>> = instances
                    .into_iter()
                    .filter(|i| i.service.as_str() == self.service)
                    .map(|i| (i.id.as_str().to_owned(), Arc::new(i)))
                    .collect();
                let changed = !self.sent || fresh != self.instances;
                self.instances = fresh;
                self.revision = revision;
                changed
            }
            WatchEvent::Upsert {
                revision, instance, ..
            } => {
                self.revision = revision;
                if instance.service.as_str() != self.service {
                    return false;
                }
                self.instances
                    .insert(instance.id.as_str().to_owned(), Arc::new(instance));
                true
            }
            WatchEvent::Remove {
                revision,
                service,
                id,
                reason,
            } => {
                self.revision = revision;
                let removed = service.as_str() == self.service
                    && self.instances.remove(id.as_str()).is_some();
                if removed && reason == waypost_model::ChangeReason::Deregistered {
                    self.deregistered.push(id.as_str().to_owned());
                }
                removed
            }
        }
    }
}

async fn follow(
    transport: Arc<Transport>,
    query: Vec<(String, String)>,
    tx: mpsc::Sender<StreamEvent>,
    resync: Arc<Notify>,
) {
    let mut progress = Progress::default();
    let mut failures = 0u32;
    loop {
        for (idx, base) in transport.rotation() {
            let mut connection = Connection {
                transport: &transport,
                base,
                tx: &tx,
                progress: &mut progress,
                failures: &mut failures,
            };
            let error = match connection.run(&query, &resync).await {
                Ended::Receiver => return,
                Ended::Resync => {
                    progress.last_event_id = None;
                    "resynchronising from a fresh snapshot".to_owned()
                }
                Ended::Failed(error) => error,
                Ended::Closed => {
                    transport.prefer(idx);
                    "the control plane closed the stream".to_owned()
                }
            };
            let endpoint = base.to_string();
            if tx
                .send(StreamEvent::Disconnected { endpoint, error })
                .await
                .is_err()
            {
                return;
            }
            failures += 1;
            tokio::time::sleep(backoff(failures, RECONNECT_BASE, RECONNECT_CAP)).await;
        }
    }
}

enum Ended {
    /// The consumer dropped the stream.
    Receiver,
    /// The consumer asked for a fresh snapshot.
    Resync,
    /// The server ended the stream (a shutdown, a restart).
    Closed,
    /// Connecting or reading failed.
    Failed(String),
}

/// Where the stream stands, across connections.
#[derive(Debug, Default)]
struct Progress {
    /// The id of the last event forwarded, sent as `Last-Event-ID`; cleared by a resync.
    last_event_id: Option<String>,
    /// The epoch and revision of the last event forwarded; kept across a resync.
    forwarded: Option<(Epoch, Revision)>,
    /// Since when snapshots older than `forwarded` have been refused, with no connection that
    /// served in between.
    behind_since: Option<Instant>,
}

impl Progress {
    /// Whether a snapshot at `epoch` and `revision` is older than what was forwarded: of the
    /// same epoch and an earlier revision, or without an epoch (a node that has not applied the
    /// cluster's first entries yet) after events that had one. Another epoch is another
    /// history: its snapshot is taken.
    fn behind(&self, epoch: &str, revision: Revision) -> bool {
        let Some((had_epoch, had_revision)) = self.forwarded else {
            return false;
        };
        match parse_epoch(epoch) {
            _ if had_epoch == 0 => false,
            Some(0) => true,
            Some(epoch) => epoch == had_epoch && revision < had_revision,
            None => false,
        }
    }

    /// Notes an event forwarded with SSE id `id`.
    fn forward(&mut self, id: String) {
        if id.is_empty() {
            return;
        }
        self.forwarded = parse_event_id(&id).and_then(|(epoch, revision)| Some((epoch?, revision)));
        self.last_event_id = Some(id);
    }
}

/// One connection to one endpoint.
struct Connection<'a> {
    transport: &'a Transport,
    base: &'a Url,
    tx: &'a mpsc::Sender<StreamEvent>,
    progress: &'a mut Progress,
    failures: &'a mut u32,
}

impl Connection<'_> {
    /// Reads events until the connection fails or ends, the consumer goes away or asks for a
    /// resync. An accepted connection resets the failure count, so backoff grows only while
    /// nothing answers (or only nodes that are behind do).
    async fn run(&mut self, query: &[(String, String)], resync: &Notify) -> Ended {
        let resume = self.progress.last_event_id.as_deref();
        let opened = tokio::select! {
            opened = self.transport.open_events(self.base, query, resume) => opened,
            () = self.tx.closed() => return Ended::Receiver,
        };
        let bytes = match opened {
            Ok(bytes) => bytes,
            Err(err) => return Ended::Failed(err.to_string()),
        };
        let failures = std::mem::take(self.failures);
        match self.read(bytes, resync).await {
            Ok(ended) => {
                // This connection served (it resumed, or its snapshot was taken): refusing
                // older snapshots starts over.
                self.progress.behind_since = None;
                ended
            }
            Err(behind) => {
                // Not a connection that served: the backoff keeps growing.
                *self.failures = failures;
                Ended::Failed(behind)
            }
        }
    }

    /// Forwards the events of an accepted connection; `Err` when its snapshot is older than
    /// what was forwarded already, and refused.
    async fn read(
        &mut self,
        bytes: impl Stream<Item = crate::transport::BodyChunks> + Unpin,
        resync: &Notify,
    ) -> Result<Ended, String> {
        let endpoint = self.base.to_string();
        if self
            .tx
            .send(StreamEvent::Connected { endpoint })
            .await
            .is_err()
        {
            return Ok(Ended::Receiver);
        }
        let mut events = bytes.eventsource();
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(IDLE_LIMIT, events.next()) => next,
                () = resync.notified() => return Ok(Ended::Resync),
                () = self.tx.closed() => return Ok(Ended::Receiver),
            };
            let event = match next {
                Err(_) => {
                    let error = format!("no event or keep-alive for {IDLE_LIMIT:?}");
                    return Ok(Ended::Failed(error));
                }
                Ok(None) => return Ok(Ended::Closed),
                Ok(Some(Err(err))) => {
                    return Ok(Ended::Failed(format!("broken event stream: {err}")));
                }
                Ok(Some(Ok(event))) => event,
            };
            let parsed: WatchEvent = match serde_json::from_str(&event.data) {
                Ok(parsed) => parsed,
                Err(err) => {
                    // An event this client cannot read (a newer server's kind): never skip a
                    // change silently; start again from a snapshot instead.
                    tracing::warn!(%err, kind = %event.event, "unreadable watch event; resyncing");
                    return Ok(Ended::Resync);
                }
            };
            if let WatchEvent::Snapshot {
                epoch, revision, ..
            } = &parsed
                && self.progress.behind(epoch, *revision)
            {
                let since = *self.progress.behind_since.get_or_insert_with(Instant::now);
                if since.elapsed() < BEHIND_LIMIT {
                    return Err(format!(
                        "a snapshot at {epoch}-{revision}, older than the last event \
                         forwarded: this control plane has not caught up"
                    ));
                }
                tracing::warn!(%epoch, revision, "taking an older snapshot after {BEHIND_LIMIT:?} of refusing them");
            }
            let id = event.id;
            if self
                .tx
                .send(StreamEvent::Event {
                    id: id.clone(),
                    event: Box::new(parsed),
                })
                .await
                .is_err()
            {
                return Ok(Ended::Receiver);
            }
            self.progress.forward(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_behind_only_when_older_in_the_same_history() {
        let mut p = Progress::default();
        assert!(!p.behind("00000000000000ab", 1), "nothing forwarded yet");
        p.forward("00000000000000ab-7".into());
        assert_eq!(p.last_event_id.as_deref(), Some("00000000000000ab-7"));
        assert!(p.behind("00000000000000ab", 6));
        assert!(!p.behind("00000000000000ab", 7));
        assert!(!p.behind("00000000000000ab", 9));
        // No epoch yet: a node that has not applied the cluster's first entries.
        assert!(p.behind("0000000000000000", 9));
        // Another history (a control plane that started afresh): taken.
        assert!(!p.behind("00000000000000cd", 1));
        // Before the epoch was named, nothing can be compared.
        p.forward("0000000000000000-3".into());
        assert!(!p.behind("0000000000000000", 1));
        assert!(!p.behind("00000000000000ab", 1));
    }
}
