//! [`Watch`]: one service's instance sets as a `Stream`, fed by the control plane's `/watch`
//! Server-Sent Events stream.
//!
//! A background task holds the connection. It applies the snapshot and change events to its
//! own copy of the service, and sends the whole set after each change. On any failure (refused
//! connection, reset, a silent connection past the idle limit) it waits with backoff and
//! jitter, moves to the next endpoint, and reconnects with `Last-Event-ID` set to the last event
//! it applied: the control plane then sends exactly the changes after it, or a fresh snapshot
//! when it no longer has them. The task ends when the `Watch` is dropped.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use reqwest::header;
use tokio::sync::mpsc;
use waypost_model::{Instance, Revision, Status, WatchEvent};

use crate::{
    Error,
    client::{Transport, backoff, read},
};

/// The instances of one service at one revision.
///
/// ```
/// use waypost_client::ServiceSet;
///
/// let empty = ServiceSet { service: "web".into(), revision: 7, instances: vec![] };
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
}

impl ServiceSet {
    /// The instances that take new work (status `up`).
    ///
    /// ```
    /// # use waypost_client::ServiceSet;
    /// # let set = ServiceSet { service: "web".into(), revision: 7, instances: vec![] };
    /// for instance in set.up() {
    ///     println!("{}:{}", instance.host, instance.port);
    /// }
    /// ```
    pub fn up(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.instances.iter().filter(|i| i.status == Status::Up)
    }

    /// The instance ids, in order (handy in logs and tests).
    ///
    /// ```
    /// # use waypost_client::ServiceSet;
    /// # let set = ServiceSet { service: "web".into(), revision: 7, instances: vec![] };
    /// assert!(set.ids().is_empty());
    /// ```
    pub fn ids(&self) -> Vec<&str> {
        self.instances.iter().map(|i| i.id.as_str()).collect()
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
    sets: mpsc::Receiver<ServiceSet>,
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

impl Watch {
    pub(crate) fn start(transport: Arc<Transport>, service: String) -> Self {
        // Small: a consumer that stops reading holds the task (and its connection) back
        // rather than letting sets pile up.
        let (tx, sets) = mpsc::channel(16);
        tokio::spawn(follow(transport, service, tx));
        Self { sets }
    }
}

impl Stream for Watch {
    type Item = ServiceSet;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServiceSet>> {
        self.sets.poll_recv(cx)
    }
}

/// The task's view of the service.
struct View {
    service: String,
    revision: Revision,
    instances: BTreeMap<String, Arc<Instance>>,
    /// The SSE id of the last event applied, sent back as `Last-Event-ID`.
    last_event_id: Option<String>,
    /// Whether any set was sent yet (the first snapshot is always sent, even when empty).
    sent: bool,
}

impl View {
    fn set(&self) -> ServiceSet {
        ServiceSet {
            service: self.service.clone(),
            revision: self.revision,
            instances: self.instances.values().cloned().collect(),
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
                ..
            } => {
                self.revision = revision;
                service.as_str() == self.service && self.instances.remove(id.as_str()).is_some()
            }
        }
    }
}

async fn follow(transport: Arc<Transport>, service: String, tx: mpsc::Sender<ServiceSet>) {
    let mut view = View {
        service,
        revision: 0,
        instances: BTreeMap::new(),
        last_event_id: None,
        sent: false,
    };
    let mut failures = 0u32;
    loop {
        for (idx, base) in transport.rotation() {
            match stream_from(&transport, base, &mut view, &tx, &mut failures).await {
                Ok(Ended::Receiver) => return,
                Ok(Ended::Stream) => {
                    transport.prefer(idx);
                    tracing::debug!(endpoint = %base, "watch stream ended; reconnecting");
                }
                Err(err) => {
                    if !tx.is_closed() {
                        tracing::warn!(endpoint = %base, service = %view.service, %err, "watch disconnected");
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            failures += 1;
            tokio::time::sleep(backoff(failures, RECONNECT_BASE, RECONNECT_CAP)).await;
        }
    }
}

enum Ended {
    /// The `Watch` was dropped.
    Receiver,
    /// The server closed the stream (a shutdown, a restart).
    Stream,
}

/// One connection: read events until it fails, ends or the receiver goes away. A connection
/// that was accepted resets `failures`, so backoff grows only while nothing answers.
async fn stream_from(
    transport: &Transport,
    base: &url::Url,
    view: &mut View,
    tx: &mpsc::Sender<ServiceSet>,
    failures: &mut u32,
) -> Result<Ended, Error> {
    let url = Transport::url(
        base,
        &["watch"],
        &[("service".to_owned(), view.service.clone())],
    );
    let mut request = transport
        .http
        .get(url)
        .header(header::ACCEPT, "text/event-stream");
    if let Some(id) = &view.last_event_id {
        request = request.header("last-event-id", id);
    }
    let transport_err = |source| Error::Transport {
        endpoint: base.to_string(),
        source,
    };
    let response = request.send().await.map_err(transport_err)?;
    if !response.status().is_success() {
        return Err(read::<serde_json::Value>(base, response)
            .await
            .err()
            .unwrap_or(Error::Unexpected {
                endpoint: base.to_string(),
                status: 0,
                body: "a success status with an error".into(),
            }));
    }
    *failures = 0;
    let mut events = response.bytes_stream().eventsource();
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(IDLE_LIMIT, events.next()) => next,
            () = tx.closed() => return Ok(Ended::Receiver),
        };
        let event = match next {
            Err(_) => {
                return Err(Error::Unexpected {
                    endpoint: base.to_string(),
                    status: 200,
                    body: format!("no event or keep-alive for {IDLE_LIMIT:?}"),
                });
            }
            Ok(None) => return Ok(Ended::Stream),
            Ok(Some(Err(err))) => {
                return Err(Error::Unexpected {
                    endpoint: base.to_string(),
                    status: 200,
                    body: format!("broken event stream: {err}"),
                });
            }
            Ok(Some(Ok(event))) => event,
        };
        let parsed: WatchEvent = match serde_json::from_str(&event.data) {
            Ok(parsed) => parsed,
            Err(err) => {
                // An event kind from a newer server: skip it, but never skip a revision we
                // could not apply silently.
                tracing::warn!(%err, kind = %event.event, "unreadable watch event; resyncing");
                view.last_event_id = None;
                return Ok(Ended::Stream);
            }
        };
        if view.apply(parsed) {
            view.sent = true;
            if tx.send(view.set()).await.is_err() {
                return Ok(Ended::Receiver);
            }
        }
        if !event.id.is_empty() {
            view.last_event_id = Some(event.id);
        }
    }
}
