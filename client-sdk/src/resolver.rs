//! [`Resolver`]: a local, watch-fed cache of services with instance selection.
//!
//! Each followed service has a [`Watch`](crate::Watch) task that replaces the service's cached
//! set after every change. Lookups read the cache only, so they cost no request and keep
//! answering with the last known instances while the control plane is away.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures_util::StreamExt;
use tokio::{sync::watch, task::JoinHandle};
use waypost_model::{Instance, ServicePolicy};

use crate::{Client, ServiceSet};

/// How [`Resolver::pick`] chooses among a service's `up` instances.
///
/// ```
/// let balance = waypost_client::Balance::default();
/// assert_eq!(balance, waypost_client::Balance::RoundRobin);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each instance in turn.
    #[default]
    RoundRobin,
    /// At random, in proportion to each instance's `weight`.
    WeightedRandom,
}

/// A cache of services kept current by the change stream, answering from memory.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), waypost_client::Error> {
/// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
/// use waypost_client::{Balance, Client, Resolver, model::RegisterRequest};
///
/// let client = Client::new(&cp.url)?;
/// client.register_once(&RegisterRequest::new("payments", "127.0.0.1:7001")).await?;
/// let resolver = Resolver::new(&client, ["payments"], Balance::RoundRobin);
/// resolver.ready().await;
/// let instance = resolver.pick("payments").expect("an up instance");
/// assert_eq!(instance.port, 7001);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    services: HashMap<String, Slot>,
    balance: Balance,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Slot {
    cached: watch::Receiver<Option<Arc<Cached>>>,
    /// Round-robin position.
    next: AtomicUsize,
}

/// One service's set with its `up` instances picked out once per change, not per lookup.
#[derive(Debug)]
struct Cached {
    set: ServiceSet,
    up: Vec<Arc<Instance>>,
    total_weight: u64,
    /// `up` is the last non-empty set, kept by the service's `never_empty` policy.
    protected: bool,
    /// The service's policy (kept from the last instance that carried it).
    policy: Option<ServicePolicy>,
}

impl Cached {
    /// The cache after `set`, given the one before: `never_empty` keeps the last set when
    /// expiry or failing checks left none that takes work, less what was deregistered or
    /// drained, as the sidecar does.
    fn next(set: ServiceSet, before: Option<&Cached>) -> Self {
        let mut up: Vec<Arc<Instance>> = set.up().cloned().collect();
        let policy = set
            .instances
            .first()
            .map_or_else(|| before.and_then(|b| b.policy), |i| i.policy);
        let mut protected = false;
        if up.is_empty()
            && policy.is_some_and(|p| p.never_empty)
            && let Some(before) = before
        {
            up = before
                .up
                .iter()
                .filter(|kept| {
                    let now = set.instances.iter().find(|i| i.id == kept.id);
                    let gone = set.deregistered.iter().any(|d| d == kept.id.as_str());
                    ServicePolicy::keeps(now.map(|i| &**i), gone)
                })
                .cloned()
                .collect();
            protected = !up.is_empty();
        }
        Self {
            total_weight: up.iter().map(|i| u64::from(i.weight)).sum(),
            set,
            up,
            protected,
            policy,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Resolver {
    /// Starts following `services` (one change stream each). Lookups answer `None` until a
    /// service's first set arrives; [`Resolver::ready`] waits for that.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// let resolver = waypost_client::Resolver::new(
    ///     &client,
    ///     ["payments", "ledger"],
    ///     waypost_client::Balance::WeightedRandom,
    /// );
    /// resolver.ready().await;
    /// assert!(resolver.pick("payments").is_none()); // known, but nothing registered
    /// # Ok(())
    /// # }
    /// ```
    pub fn new<S: Into<String>>(
        client: &Client,
        services: impl IntoIterator<Item = S>,
        balance: Balance,
    ) -> Self {
        let mut slots = HashMap::new();
        let mut tasks = Vec::new();
        for service in services {
            let service = service.into();
            if slots.contains_key(&service) {
                continue;
            }
            let (tx, cached) = watch::channel(None);
            let mut sets = client.watch(&service);
            tasks.push(tokio::spawn(async move {
                while let Some(set) = sets.next().await {
                    let before = tx.borrow().clone();
                    tx.send_replace(Some(Arc::new(Cached::next(set, before.as_deref()))));
                }
            }));
            slots.insert(
                service,
                Slot {
                    cached,
                    next: AtomicUsize::new(0),
                },
            );
        }
        Self {
            inner: Arc::new(Inner {
                services: slots,
                balance,
                tasks,
            }),
        }
    }

    /// Waits until every followed service has its first set. Bound it with a timeout if the
    /// control plane may be down at start.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// # let client = waypost_client::Client::new(&cp.url)?;
    /// let resolver = waypost_client::Resolver::new(&client, ["web"], Default::default());
    /// tokio::time::timeout(std::time::Duration::from_secs(5), resolver.ready())
    ///     .await
    ///     .expect("the control plane answered");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ready(&self) {
        for slot in self.inner.services.values() {
            let mut cached = slot.cached.clone();
            // An error means the task ended, which only an abort (drop) causes.
            let _ = cached.wait_for(Option::is_some).await;
        }
    }

    /// The service's last known set (every instance, draining ones too).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// # let client = waypost_client::Client::new(&cp.url)?;
    /// let resolver = waypost_client::Resolver::new(&client, ["web"], Default::default());
    /// resolver.ready().await;
    /// let set = resolver.set("web").unwrap();
    /// assert_eq!(set.service, "web");
    /// assert!(resolver.set("not-followed").is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn set(&self, service: &str) -> Option<ServiceSet> {
        let cached = self.cached(service)?;
        Some(cached.set.clone())
    }

    /// The service's `up` instances, from the cache.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// # let client = waypost_client::Client::new(&cp.url)?;
    /// let resolver = waypost_client::Resolver::new(&client, ["web"], Default::default());
    /// resolver.ready().await;
    /// assert_eq!(resolver.instances("web").map(|v| v.len()), Some(0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn instances(&self, service: &str) -> Option<Vec<Arc<Instance>>> {
        Some(self.cached(service)?.up.clone())
    }

    /// One `up` instance of the service, chosen by the resolver's [`Balance`]; `None` when
    /// the service has none (or is not followed, or its first set has not arrived).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::{Client, Resolver, model::RegisterRequest};
    ///
    /// let client = Client::new(&cp.url)?;
    /// for port in [7001, 7002] {
    ///     client.register_once(&RegisterRequest::new("web", format!("127.0.0.1:{port}"))).await?;
    /// }
    /// let resolver = Resolver::new(&client, ["web"], Default::default());
    /// resolver.ready().await;
    /// let a = resolver.pick("web").unwrap();
    /// let b = resolver.pick("web").unwrap();
    /// assert_ne!(a.port, b.port); // round robin
    /// # Ok(())
    /// # }
    /// ```
    pub fn pick(&self, service: &str) -> Option<Arc<Instance>> {
        let slot = self.inner.services.get(service)?;
        let cached = slot.cached.borrow().clone()?;
        if cached.up.is_empty() {
            return None;
        }
        let chosen = match self.inner.balance {
            Balance::RoundRobin => {
                let n = slot.next.fetch_add(1, Ordering::Relaxed);
                &cached.up[n % cached.up.len()]
            }
            Balance::WeightedRandom => {
                let mut point = rand::random_range(0..cached.total_weight.max(1));
                cached
                    .up
                    .iter()
                    .find(|i| {
                        let w = u64::from(i.weight);
                        if point < w {
                            true
                        } else {
                            point -= w;
                            false
                        }
                    })
                    .unwrap_or(&cached.up[0])
            }
        };
        Some(chosen.clone())
    }

    /// `true` while the service's `never_empty` policy keeps its last non-empty set: no
    /// instance takes work, and [`Self::pick`] and [`Self::instances`] answer from that set.
    pub fn protected(&self, service: &str) -> bool {
        self.cached(service).is_some_and(|c| c.protected)
    }

    fn cached(&self, service: &str) -> Option<Arc<Cached>> {
        self.inner.services.get(service)?.cached.borrow().clone()
    }
}
