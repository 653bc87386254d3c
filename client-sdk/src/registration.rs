//! [`Registration`] handles and the one heartbeat task per [`Client`] behind them.
//!
//! The task owns every registration of its client. It wakes at the earliest heartbeat due,
//! sends every heartbeat due soon in one request (the batch form when there are several),
//! re-registers what the control plane no longer knows, and backs off on failures. Handles
//! talk to it over a channel, so a deregistration waits until no request for that instance is
//! in flight: a late re-registration can never resurrect a deregistered instance.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use waypost_model::{
    DeregisterResponse, HeartbeatAnswer, HeartbeatRequest, Instance, InstanceRef, RegisterRequest,
    RegisterResponse, limits::MAX_BATCH_HEARTBEAT,
};

use crate::{
    Client, Error,
    transport::{Transport, backoff, jitter},
};

/// Where a [`Registration`] stands, as its heartbeat task last saw it.
///
/// ```
/// use waypost_client::RegistrationState;
///
/// let state = RegistrationState::Retrying { attempts: 2, error: "connection refused".into() };
/// assert!(!state.is_registered());
/// assert!(RegistrationState::Registered.is_registered());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// The last heartbeat or registration succeeded.
    Registered,
    /// Recent attempts failed, but less than one TTL ago: the control plane most likely still
    /// holds the instance. Retrying with backoff, across endpoints.
    Retrying {
        /// Failed attempts in a row.
        attempts: u32,
        /// The last failure.
        error: String,
    },
    /// No success for longer than the TTL: the control plane has most likely expired the
    /// instance. Still retrying; it registers again as soon as a control plane answers.
    Lost {
        /// Failed attempts in a row.
        attempts: u32,
        /// The last failure.
        error: String,
    },
    /// [`Registration::deregister`] removed the instance.
    Deregistered,
}

impl RegistrationState {
    /// `true` for [`RegistrationState::Registered`].
    ///
    /// ```
    /// assert!(waypost_client::RegistrationState::Registered.is_registered());
    /// ```
    pub fn is_registered(&self) -> bool {
        matches!(self, Self::Registered)
    }
}

/// A registered instance kept alive in the background; made by [`Client::register`].
///
/// Dropping the handle stops its heartbeats (the instance then expires after its TTL);
/// [`Registration::deregister`] removes it at once. [`crate::deregister_on_shutdown`] ties that
/// to SIGINT/SIGTERM.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), waypost_client::Error> {
/// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
/// use waypost_client::{Client, model::RegisterRequest};
///
/// let client = Client::new(&cp.url)?;
/// let handle = client.register(RegisterRequest::new("web", "127.0.0.1:8001")).await?;
/// let mut state = handle.watch_state(); // observe Registered / Retrying / Lost
/// assert!(state.borrow_and_update().is_registered());
/// handle.deregister().await?;
/// assert_eq!(*state.borrow(), waypost_client::RegistrationState::Deregistered);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Registration {
    key: u64,
    client: Client,
    instance: Instance,
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<RegistrationState>,
    /// Cleared by `deregister`, so that `Drop` does not remove the entry a second time.
    attached: bool,
}

pub(crate) enum Command {
    Add(Box<Entry>),
    /// Stops heartbeating; answers with the entry's state sender once no request for it is
    /// in flight, so the handle can announce `Deregistered` to every state receiver.
    Remove {
        key: u64,
        done: oneshot::Sender<Option<watch::Sender<RegistrationState>>>,
    },
    Forget {
        key: u64,
    },
}

pub(crate) struct Entry {
    key: u64,
    request: RegisterRequest,
    service: String,
    id: String,
    interval: Duration,
    ttl: Duration,
    due: Instant,
    last_ok: Instant,
    attempts: u32,
    needs_register: bool,
    state: watch::Sender<RegistrationState>,
}

impl Registration {
    pub(crate) fn start(
        client: Client,
        commands: mpsc::UnboundedSender<Command>,
        request: RegisterRequest,
        answer: &RegisterResponse,
    ) -> Self {
        let key = rand::random::<u64>();
        let (state_tx, state) = watch::channel(RegistrationState::Registered);
        let interval = Duration::from_secs(answer.heartbeat_interval_seconds.max(1).into());
        let now = Instant::now();
        let entry = Entry {
            key,
            // Registering again must name the same instance even if the id was derived.
            request: RegisterRequest {
                id: Some(answer.instance.id.as_str().to_owned()),
                ..request
            },
            service: answer.instance.service.as_str().to_owned(),
            id: answer.instance.id.as_str().to_owned(),
            interval,
            ttl: Duration::from_secs(answer.instance.ttl_seconds.into()),
            due: now + jitter(interval),
            last_ok: now,
            attempts: 0,
            needs_register: false,
            state: state_tx,
        };
        // A send fails only when the task is gone (runtime shutting down); the state then
        // never changes from Registered, and the instance expires as if the process had died.
        let _ = commands.send(Command::Add(Box::new(entry)));
        Self {
            key,
            client,
            instance: answer.instance.clone(),
            commands,
            state,
            attached: true,
        }
    }

    /// The instance's id (given, or derived by the control plane as `host:port`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// # let client = waypost_client::Client::new(&cp.url)?;
    /// let handle = client
    ///     .register(waypost_client::model::RegisterRequest::new("web", "http://127.0.0.1:8001"))
    ///     .await?;
    /// assert_eq!(handle.id(), "127.0.0.1:8001");
    /// # Ok(())
    /// # }
    /// ```
    pub fn id(&self) -> &str {
        self.instance.id.as_str()
    }

    /// The service name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// # let client = waypost_client::Client::new(&cp.url)?;
    /// let handle = client
    ///     .register(waypost_client::model::RegisterRequest::new("web", "127.0.0.1:8001"))
    ///     .await?;
    /// assert_eq!(handle.service(), "web");
    /// # Ok(())
    /// # }
    /// ```
    pub fn service(&self) -> &str {
        self.instance.service.as_str()
    }

    /// The instance as the control plane stored it at registration.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// # let client = waypost_client::Client::new(&cp.url)?;
    /// let handle = client
    ///     .register(waypost_client::model::RegisterRequest::new("web", "127.0.0.1:8001"))
    ///     .await?;
    /// assert_eq!(handle.instance().ttl_seconds, 30);
    /// # Ok(())
    /// # }
    /// ```
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The current state.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// # let client = waypost_client::Client::new(&cp.url)?;
    /// let handle = client
    ///     .register(waypost_client::model::RegisterRequest::new("web", "127.0.0.1:8001"))
    ///     .await?;
    /// assert_eq!(handle.state(), waypost_client::RegistrationState::Registered);
    /// # Ok(())
    /// # }
    /// ```
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change (for a readiness probe, a log line, an alert).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// # let client = waypost_client::Client::new(&cp.url)?;
    /// let handle = client
    ///     .register(waypost_client::model::RegisterRequest::new("web", "127.0.0.1:8001"))
    ///     .await?;
    /// let states = handle.watch_state();
    /// tokio::spawn(async move {
    ///     let mut states = states;
    ///     while states.changed().await.is_ok() {
    ///         println!("registration is now {:?}", *states.borrow());
    ///     }
    /// });
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch_state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Stops the heartbeats and removes the instance from the control plane now.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// # let client = waypost_client::Client::new(&cp.url)?;
    /// let handle = client
    ///     .register(waypost_client::model::RegisterRequest::new("web", "127.0.0.1:8001"))
    ///     .await?;
    /// let answer = handle.deregister().await?;
    /// assert_eq!(answer.id.as_str(), "127.0.0.1:8001");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn deregister(mut self) -> Result<DeregisterResponse, Error> {
        self.attached = false;
        let (done, finished) = oneshot::channel();
        self.commands
            .send(Command::Remove {
                key: self.key,
                done,
            })
            .map_err(|_| Error::Closed)?;
        let state = finished.await.map_err(|_| Error::Closed)?;
        let answer = self
            .client
            .deregister(InstanceRef::by_id(self.service(), self.id()))
            .await;
        if let (Ok(_), Some(state)) = (&answer, state) {
            state.send_replace(RegistrationState::Deregistered);
        }
        answer
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.attached {
            let _ = self.commands.send(Command::Forget { key: self.key });
        }
    }
}

/// Starts the heartbeat task of one client; it ends when every sender (the client and its
/// handles) is gone.
pub(crate) fn spawn(transport: Arc<Transport>) -> mpsc::UnboundedSender<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(transport, rx));
    tx
}

/// How far ahead of its due time a heartbeat may go to share a request with others: a fifth
/// of its interval.
fn early(interval: Duration) -> Duration {
    interval / 5
}

/// The first retry waits about this long; each further one twice as long, up to the interval.
const RETRY_BASE: Duration = Duration::from_millis(250);

async fn run(transport: Arc<Transport>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut entries: HashMap<u64, Entry> = HashMap::new();
    loop {
        let next = entries.values().map(|e| e.due).min();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Add(entry)) => {
                    entries.insert(entry.key, *entry);
                }
                Some(Command::Remove { key, done }) => {
                    let _ = done.send(entries.remove(&key).map(|e| e.state));
                }
                Some(Command::Forget { key }) => {
                    entries.remove(&key);
                }
            },
            () = sleep => round(&transport, &mut entries).await,
        }
    }
}

/// One wake-up: heartbeat what is due (in as few requests as possible), register again what
/// the control plane lost, and reschedule everything touched.
async fn round(transport: &Transport, entries: &mut HashMap<u64, Entry>) {
    let now = Instant::now();
    let due: Vec<u64> = entries
        .values()
        .filter(|e| {
            e.due
                <= now
                    + if e.attempts == 0 {
                        early(e.interval)
                    } else {
                        Duration::ZERO
                    }
        })
        .map(|e| e.key)
        .collect();
    let (to_register, to_beat): (Vec<u64>, Vec<u64>) =
        due.into_iter().partition(|k| entries[k].needs_register);
    let mut lost = to_register;
    for chunk in to_beat.chunks(MAX_BATCH_HEARTBEAT) {
        lost.extend(heartbeat(transport, entries, chunk).await);
    }
    for key in lost {
        if let Some(entry) = entries.get_mut(&key) {
            entry.needs_register = true;
            let request = entry.request.clone();
            match register(transport, &request).await {
                Ok(answer) => {
                    tracing::info!(service = %entry.service, id = %entry.id, "registered again");
                    entry.needs_register = false;
                    entry.ttl = Duration::from_secs(answer.instance.ttl_seconds.into());
                    succeeded(entry, answer.heartbeat_interval_seconds);
                }
                Err(err) => failed(entry, &err),
            }
        }
    }
}

/// Heartbeats `keys` in one request; returns the keys the control plane does not know.
async fn heartbeat(
    transport: &Transport,
    entries: &mut HashMap<u64, Entry>,
    keys: &[u64],
) -> Vec<u64> {
    let refs: Vec<InstanceRef> = keys
        .iter()
        .map(|k| InstanceRef::by_id(&entries[k].service, &entries[k].id))
        .collect();
    let body = if let [one] = refs.as_slice() {
        HeartbeatRequest {
            service: Some(one.service.clone()),
            id: one.id.clone(),
            ..HeartbeatRequest::default()
        }
    } else {
        HeartbeatRequest {
            instances: Some(refs),
            ..HeartbeatRequest::default()
        }
    };
    let mut lost = Vec::new();
    match send::<HeartbeatAnswer>(transport, "heartbeat", &body).await {
        Ok(HeartbeatAnswer::Single(answer)) => {
            if let Some(entry) = entries.get_mut(&keys[0]) {
                succeeded(entry, answer.heartbeat_interval_seconds);
            }
        }
        Ok(HeartbeatAnswer::Batch(answer)) => {
            for (i, key) in keys.iter().enumerate() {
                let Some(entry) = entries.get_mut(key) else {
                    continue;
                };
                // Every entry is rescheduled, even one the answer left out (a server bug), so
                // that nothing is retried in a tight loop.
                match answer.results.get(i).map(|o| o.status.as_str()) {
                    Some("ok") => succeeded(entry, answer.heartbeat_interval_seconds),
                    Some("instance_not_found") => lost.push(*key),
                    Some(other) => failed_with(entry, format!("heartbeat refused: {other}")),
                    None => failed_with(entry, "the batch answer left this instance out".into()),
                }
            }
        }
        Err(err) if err.is_not_found() => lost.extend_from_slice(keys),
        Err(err) => {
            for key in keys {
                if let Some(entry) = entries.get_mut(key) {
                    failed(entry, &err);
                }
            }
        }
    }
    lost
}

async fn register(
    transport: &Transport,
    request: &RegisterRequest,
) -> Result<RegisterResponse, Error> {
    send(transport, "register", request).await
}

/// A POST with fail-over across endpoints, as the client's own calls do.
async fn send<T: serde::de::DeserializeOwned>(
    transport: &Transport,
    path: &str,
    body: &(impl serde::Serialize + ?Sized),
) -> Result<T, Error> {
    transport
        .call(crate::transport::Method::POST, &[path], &[], Some(body))
        .await
}

fn succeeded(entry: &mut Entry, interval_seconds: u32) {
    let now = Instant::now();
    entry.interval = Duration::from_secs(interval_seconds.max(1).into());
    entry.attempts = 0;
    entry.last_ok = now;
    entry.due = now + jitter(entry.interval);
    entry.state.send_if_modified(|state| {
        let changed = !state.is_registered();
        *state = RegistrationState::Registered;
        changed
    });
}

fn failed(entry: &mut Entry, err: &Error) {
    failed_with(entry, err.to_string());
}

fn failed_with(entry: &mut Entry, error: String) {
    let now = Instant::now();
    entry.attempts += 1;
    // Capped at the interval: once a control plane is back, the next attempt comes within one
    // heartbeat interval, and a lost instance reappears that fast.
    entry.due = now + backoff(entry.attempts, RETRY_BASE, entry.interval);
    let attempts = entry.attempts;
    let state = if now.duration_since(entry.last_ok) >= entry.ttl {
        RegistrationState::Lost { attempts, error }
    } else {
        RegistrationState::Retrying { attempts, error }
    };
    tracing::warn!(service = %entry.service, id = %entry.id, state = ?state, "heartbeat failed");
    entry.state.send_replace(state);
}
