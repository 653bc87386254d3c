//! [`Client`]: one or more control-plane endpoints behind typed calls, with fail-over.

use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use url::Url;
use waypost_model::{
    BatchHeartbeatResponse, CheckReport, CheckResponse, DeregisterResponse, DiscoverResponse,
    DrainRequest, DrainResponse, ExplainResponse, HeartbeatAnswer, HeartbeatRequest,
    HeartbeatResponse, InstanceRef, RegisterRequest, RegisterResponse, ServicesResponse,
};

use crate::{
    ClientBuilder, Error,
    registration::{self, Command, Registration},
    transport::{Method, Transport},
    watch::{Watch, WatchStream},
};

/// A handle on the control plane: typed calls for every endpoint, fail-over across several
/// control-plane URLs, and the background work behind [`Registration`] handles and [`Watch`]
/// streams. Cheap to clone; clones share connections and the heartbeat task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), waypost_client::Error> {
/// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
/// use waypost_client::{Client, Filter, model::RegisterRequest};
///
/// let client = Client::new(&cp.url)?;
/// let handle = client
///     .register(RegisterRequest::new("user-service", "http://127.0.0.1:8001"))
///     .await?;
/// let found = client.discover("user-service", &Filter::default()).await?;
/// assert_eq!(found.count, 1);
/// handle.deregister().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Arc<Transport>,
    /// The one heartbeat task of this client, started by the first registration.
    heartbeats: OnceLock<mpsc::UnboundedSender<Command>>,
}

/// Filters for [`Client::discover`]: by default, `up` instances of any tag and metadata.
///
/// ```
/// use waypost_client::Filter;
///
/// let filter = Filter::default().tag("v2").meta("zone", "a").include_draining();
/// assert_eq!(filter.query(), vec![
///     ("tag".to_owned(), "v2".to_owned()),
///     ("meta.zone".to_owned(), "a".to_owned()),
///     ("healthy".to_owned(), "false".to_owned()),
/// ]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    tags: Vec<String>,
    metadata: Vec<(String, String)>,
    include_draining: bool,
}

impl Filter {
    /// Keeps instances with this tag (several tags: all must match).
    ///
    /// ```
    /// let filter = waypost_client::Filter::default().tag("v2").tag("eu");
    /// assert_eq!(filter.query().len(), 2);
    /// ```
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Keeps instances whose metadata has `key = value`.
    ///
    /// ```
    /// let filter = waypost_client::Filter::default().meta("zone", "a");
    /// assert_eq!(filter.query(), vec![("meta.zone".to_owned(), "a".to_owned())]);
    /// ```
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Includes draining instances (`?healthy=false`).
    ///
    /// ```
    /// let filter = waypost_client::Filter::default().include_draining();
    /// assert_eq!(filter.query(), vec![("healthy".to_owned(), "false".to_owned())]);
    /// ```
    pub fn include_draining(mut self) -> Self {
        self.include_draining = true;
        self
    }

    /// The query pairs this filter sends.
    ///
    /// ```
    /// assert!(waypost_client::Filter::default().query().is_empty());
    /// ```
    pub fn query(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self
            .tags
            .iter()
            .map(|t| ("tag".to_owned(), t.clone()))
            .collect();
        pairs.extend(
            self.metadata
                .iter()
                .map(|(k, v)| (format!("meta.{k}"), v.clone())),
        );
        if self.include_draining {
            pairs.push(("healthy".to_owned(), "false".to_owned()));
        }
        pairs
    }
}

impl Client {
    /// A client over `transport` (what [`ClientBuilder::build`] makes).
    pub(crate) fn over(transport: Transport) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport: Arc::new(transport),
                heartbeats: OnceLock::new(),
            }),
        }
    }

    /// A client of one control plane with default timeouts, and a token and TLS files from
    /// the environment when set there (see [`ClientBuilder::env`]).
    ///
    /// ```
    /// let client = waypost_client::Client::new("http://127.0.0.1:9000").unwrap();
    /// assert_eq!(client.endpoints()[0].as_str(), "http://127.0.0.1:9000/");
    /// assert!(waypost_client::Client::new("not a url").is_err());
    /// ```
    pub fn new(endpoint: &str) -> Result<Self, Error> {
        Self::builder().endpoint(endpoint).env().build()
    }

    /// Starts a [`ClientBuilder`] (several endpoints, timeouts, user agent).
    ///
    /// ```
    /// let client = waypost_client::Client::builder()
    ///     .endpoint("http://127.0.0.1:9000")
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The control-plane base URLs, in fail-over order.
    ///
    /// ```
    /// let client = waypost_client::Client::new("http://127.0.0.1:9000").unwrap();
    /// assert_eq!(client.endpoints().len(), 1);
    /// ```
    pub fn endpoints(&self) -> &[Url] {
        self.inner.transport.endpoints()
    }

    /// Registers an instance and keeps it registered: the returned [`Registration`] heartbeats
    /// in the background (at the interval the control plane suggests, with jitter), retries
    /// with backoff across endpoints, and registers again when the control plane has lost it.
    /// Several registrations of one client share one heartbeat task and use the batch form.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, RegistrationState, model::RegisterRequest};
    ///
    /// let client = Client::new(&cp.url)?;
    /// let mut request = RegisterRequest::new("payments", "10.0.0.7:8080");
    /// request.tags = vec!["v2".into()];
    /// let handle = client.register(request).await?;
    /// assert_eq!(handle.id(), "10.0.0.7:8080");
    /// assert_eq!(handle.state(), RegistrationState::Registered);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn register(&self, request: RegisterRequest) -> Result<Registration, Error> {
        let answer = self.register_once(&request).await?;
        let commands = self
            .inner
            .heartbeats
            .get_or_init(|| registration::spawn(self.inner.transport.clone()))
            .clone();
        Ok(Registration::start(
            self.clone(),
            commands,
            request,
            &answer,
        ))
    }

    /// One `POST /register`, without a handle: nothing heartbeats it afterwards.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, model::RegisterRequest};
    ///
    /// let client = Client::new(&cp.url)?;
    /// let answer = client
    ///     .register_once(&RegisterRequest::new("web", "http://127.0.0.1:8001"))
    ///     .await?;
    /// assert_eq!(answer.status, "registered");
    /// assert_eq!(answer.instance.port, 8001);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn register_once(
        &self,
        request: &RegisterRequest,
    ) -> Result<RegisterResponse, Error> {
        self.inner
            .transport
            .call(Method::POST, &["register"], &[], Some(request))
            .await
    }

    /// Renews one instance's TTL. An unknown or expired instance is an error whose
    /// [`Error::is_not_found`] is true.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, model::{InstanceRef, RegisterRequest}};
    ///
    /// let client = Client::new(&cp.url)?;
    /// client.register_once(&RegisterRequest::new("web", "http://127.0.0.1:8001")).await?;
    /// let renewed = client
    ///     .heartbeat(InstanceRef::by_address("web", "http://127.0.0.1:8001"))
    ///     .await?;
    /// assert_eq!(renewed.id.as_str(), "127.0.0.1:8001");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn heartbeat(&self, instance: InstanceRef) -> Result<HeartbeatResponse, Error> {
        let body = HeartbeatRequest {
            service: Some(instance.service),
            id: instance.id,
            address: instance.address,
            instances: None,
        };
        match self.heartbeat_request(&body).await? {
            HeartbeatAnswer::Single(answer) => Ok(answer),
            HeartbeatAnswer::Batch(_) => Err(self.unexpected("a batch answer to one heartbeat")),
        }
    }

    /// Renews many instances in one request (at most 1,000); the answer reports each.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, model::{InstanceRef, RegisterRequest}};
    ///
    /// let client = Client::new(&cp.url)?;
    /// client.register_once(&RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// let answer = client
    ///     .heartbeat_batch(vec![
    ///         InstanceRef::by_id("web", "127.0.0.1:8001"),
    ///         InstanceRef::by_id("web", "gone"),
    ///     ])
    ///     .await?;
    /// assert_eq!((answer.renewed, answer.failed), (1, 1));
    /// assert_eq!(answer.results[1].status, "instance_not_found");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn heartbeat_batch(
        &self,
        instances: Vec<InstanceRef>,
    ) -> Result<BatchHeartbeatResponse, Error> {
        let body = HeartbeatRequest {
            instances: Some(instances),
            ..HeartbeatRequest::default()
        };
        match self.heartbeat_request(&body).await? {
            HeartbeatAnswer::Batch(answer) => Ok(answer),
            HeartbeatAnswer::Single(_) => Err(self.unexpected("a single answer to a batch")),
        }
    }

    async fn heartbeat_request(&self, body: &HeartbeatRequest) -> Result<HeartbeatAnswer, Error> {
        self.inner
            .transport
            .call(Method::POST, &["heartbeat"], &[], Some(body))
            .await
    }

    fn unexpected(&self, what: &str) -> Error {
        Error::Unexpected {
            endpoint: self.endpoints()[0].to_string(),
            status: 200,
            body: what.to_owned(),
        }
    }

    /// Removes an instance now (instead of waiting for its TTL).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, model::{InstanceRef, RegisterRequest}};
    ///
    /// let client = Client::new(&cp.url)?;
    /// client.register_once(&RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// let gone = client.deregister(InstanceRef::by_id("web", "127.0.0.1:8001")).await?;
    /// assert_eq!(gone.status, "deregistered");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn deregister(&self, instance: InstanceRef) -> Result<DeregisterResponse, Error> {
        self.inner
            .transport
            .call(Method::POST, &["deregister"], &[], Some(&instance))
            .await
    }

    /// Puts an instance into `draining` (`true`) or back to `up` (`false`). A draining instance
    /// stays registered but leaves default discovery results.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, Filter, model::{InstanceRef, RegisterRequest, Status}};
    ///
    /// let client = Client::new(&cp.url)?;
    /// client.register_once(&RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// let answer = client.drain(InstanceRef::by_id("web", "127.0.0.1:8001"), true).await?;
    /// assert_eq!(answer.status, Status::Draining);
    /// assert_eq!(client.discover("web", &Filter::default()).await?.count, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn drain(
        &self,
        instance: InstanceRef,
        draining: bool,
    ) -> Result<DrainResponse, Error> {
        let body = DrainRequest { instance, draining };
        self.inner
            .transport
            .call(Method::POST, &["drain"], &[], Some(&body))
            .await
    }

    /// Reports a health check's result (what the sidecar does for the instances it checks).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, Filter, model::{CheckReport, Health, InstanceRef, RegisterRequest}};
    ///
    /// let client = Client::new(&cp.url)?;
    /// client.register_once(&RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// let report = CheckReport {
    ///     instance: InstanceRef::by_id("web", "127.0.0.1:8001"),
    ///     health: Health::Critical,
    ///     output: Some("GET /healthz: 503".into()),
    /// };
    /// assert_eq!(client.report_check(&report).await?.health, Health::Critical);
    /// assert_eq!(client.discover("web", &Filter::default()).await?.count, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn report_check(&self, report: &CheckReport) -> Result<CheckResponse, Error> {
        self.inner
            .transport
            .call(Method::POST, &["check"], &[], Some(report))
            .await
    }

    /// The instances of a service that pass `filter` (an unknown service has none).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, Filter, model::RegisterRequest};
    ///
    /// let client = Client::new(&cp.url)?;
    /// let mut request = RegisterRequest::new("web", "127.0.0.1:8001");
    /// request.tags = vec!["canary".into()];
    /// client.register_once(&request).await?;
    /// let canaries = client.discover("web", &Filter::default().tag("canary")).await?;
    /// assert_eq!(canaries.instances[0].instance.address, "127.0.0.1:8001");
    /// assert_eq!(client.discover("nobody", &Filter::default()).await?.count, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn discover(
        &self,
        service: &str,
        filter: &Filter,
    ) -> Result<DiscoverResponse, Error> {
        self.inner
            .transport
            .call::<_, ()>(Method::GET, &["discover", service], &filter.query(), None)
            .await
    }

    /// Why `/discover` with `filter` returns each instance of a service or not: every
    /// instance the control plane knows, those that left in the last minutes included, each
    /// with its reasons (`GET /discover/{service}/explain`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, Filter, model::{InstanceRef, ReasonCode, RegisterRequest}};
    ///
    /// let client = Client::new(&cp.url)?;
    /// client.register_once(&RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// client.drain(InstanceRef::by_id("web", "127.0.0.1:8001"), true).await?;
    /// let why = client.explain("web", &Filter::default()).await?;
    /// assert_eq!(why.included, 0);
    /// assert_eq!(why.instances[0].reasons[0].code, ReasonCode::Draining);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn explain(&self, service: &str, filter: &Filter) -> Result<ExplainResponse, Error> {
        self.inner
            .transport
            .call::<_, ()>(
                Method::GET,
                &["discover", service, "explain"],
                &filter.query(),
                None,
            )
            .await
    }

    /// The transport, for the calls defined in other modules.
    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// Every service with its instance counts.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, model::RegisterRequest};
    ///
    /// let client = Client::new(&cp.url)?;
    /// client.register_once(&RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// let all = client.services().await?;
    /// assert_eq!(all.services["web"].active_instances, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn services(&self) -> Result<ServicesResponse, Error> {
        self.inner
            .transport
            .call::<_, ()>(Method::GET, &["services"], &[], None)
            .await
    }

    /// Follows one service: a stream of its instance sets, one per change, fed by the
    /// control plane's change stream. It reconnects (with backoff, across endpoints) and
    /// resumes after the last revision it saw on its own; see [`Watch`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use futures_util::StreamExt;
    /// use waypost_client::{Client, model::RegisterRequest};
    ///
    /// let client = Client::new(&cp.url)?;
    /// let mut watch = client.watch("web");
    /// let first = watch.next().await.unwrap(); // the current set
    /// assert!(first.instances.is_empty());
    /// client.register_once(&RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// let next = watch.next().await.unwrap();
    /// assert_eq!(next.instances.len(), 1);
    /// assert!(next.revision > first.revision);
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(&self, service: &str) -> Watch {
        let events = WatchStream::start(self.inner.transport.clone(), Some(service.to_owned()));
        Watch::new(events, service.to_owned())
    }

    /// The raw change stream, of one service or (with `None`) of every service: each
    /// [`WatchEvent`](crate::model::WatchEvent) in order, with connections and disconnections
    /// in between, resuming after the last event on its own. For consumers that keep their own
    /// state (the sidecar does); most want [`Client::watch`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use futures_util::StreamExt;
    /// use waypost_client::{StreamEvent, model::{RegisterRequest, WatchEvent}};
    ///
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// let mut events = client.watch_events(None);
    /// client.register_once(&RegisterRequest::new("web", "127.0.0.1:8001")).await?;
    /// let mut revisions = Vec::new();
    /// while revisions.len() < 2 {
    ///     if let Some(StreamEvent::Event { event, .. }) = events.next().await {
    ///         revisions.push(event.revision()); // the snapshot, then the registration
    ///     }
    /// }
    /// assert!(revisions[0] < revisions[1]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch_events(&self, service: Option<&str>) -> WatchStream {
        WatchStream::start(self.inner.transport.clone(), service.map(str::to_owned))
    }
}
