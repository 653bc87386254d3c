//! Which service a request is for, and that service's endpoints: the `Host` header (bare, or
//! `<service>.service.<domain>`), else with path routing a `/<service>/` prefix; then a
//! [`Route`] per service, rebuilt only when the snapshot's revision moves.

use std::{borrow::Cow, sync::Arc, time::Duration, time::Instant};

use http::{Request, header};
use hyper::body::Incoming;
use waypost_model::Instance;

use super::{
    super::{
        balance::{Balancer, Endpoint, Policy},
        error::ProxyError,
        pool::{Pool, Upstreams},
    },
    HttpProxy,
};
use crate::snapshot::Snapshots;

/// Instance metadata naming the balancing policy of its service.
pub const BALANCE_KEY: &str = "waypost.balance";
/// Instance metadata `h2c`: the instance speaks HTTP/2 without TLS (prior knowledge).
pub const PROTOCOL_KEY: &str = "waypost.protocol";

impl HttpProxy {
    /// The service a request is for, and the path to send upstream. The name borrows from the
    /// request when the Host is already lower-case, as it nearly always is.
    pub(super) fn route<'r>(
        &self,
        req: &'r Request<Incoming>,
    ) -> Option<(Cow<'r, str>, Option<String>)> {
        // The Host header when there is one, else the request's authority (HTTP/2 :authority).
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(host_of)
            .or_else(|| req.uri().host());
        if let Some(host) = host {
            // Without a final dot, and without `.service.<domain>` in any case.
            let host = host.strip_suffix('.').unwrap_or(host);
            let host = host
                .len()
                .checked_sub(self.host_suffix.len())
                .and_then(|cut| {
                    let suffix = host.get(cut..)?;
                    suffix
                        .eq_ignore_ascii_case(&self.host_suffix)
                        .then(|| &host[..cut])
                })
                .unwrap_or(host);
            let name: Cow<'r, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(host.to_ascii_lowercase())
            } else {
                Cow::Borrowed(host)
            };
            // With path routing on, a Host that names no known service falls through to the
            // path (`Host: localhost:8081` with `/payments/...`).
            let known = || {
                self.snapshots
                    .current()
                    .services
                    .contains_key(name.as_ref())
            };
            if !name.contains('.') && !name.is_empty() && (!self.config.route_by_path || known()) {
                return Some((name, None));
            }
        }
        if self.config.route_by_path {
            let path = req.uri().path();
            let rest = path.strip_prefix('/')?;
            let (service, tail) = rest.split_once('/').unwrap_or((rest, ""));
            if !service.is_empty() {
                let query = req
                    .uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                return Some((Cow::Borrowed(service), Some(format!("/{tail}{query}"))));
            }
        }
        None
    }
}

/// The host part of a `Host` value: without the port (an IPv6 literal keeps its brackets).
fn host_of(value: &str) -> &str {
    if value.starts_with('[') {
        return value.split_inclusive(']').next().unwrap_or(value);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => value,
    }
}

/// The balancing policy of a service: the first that an instance names in [`BALANCE_KEY`]
/// metadata, else `default`.
pub(crate) fn service_policy(instances: &[Arc<Instance>], default: Policy) -> Policy {
    instances
        .iter()
        .find_map(|i| i.metadata.get(BALANCE_KEY)?.parse::<Policy>().ok())
        .unwrap_or(default)
}

/// How long an instance that left a service (removed, expired, critical) is remembered for the
/// mass-removal rule.
const RECENT_WINDOW: Duration = Duration::from_secs(30);

/// One service's endpoints as of one snapshot revision: built once per change, not per request.
#[derive(Debug)]
pub(crate) struct Route {
    /// The service's name.
    pub(super) service: String,
    revision: u64,
    /// The endpoints to balance over.
    pub(crate) endpoints: Vec<Endpoint>,
    /// The connection pool of each endpoint (same order).
    pub(super) pools: Vec<Arc<Pool>>,
    /// The service's policy.
    pub(crate) policy: Policy,
    /// Instances that left within the window, with when they left.
    recent: Vec<(Endpoint, Instant)>,
    /// Too many instances left at once: the recent ones are balanced over too.
    pub(crate) mass_removal: bool,
}

/// The route cache.
#[derive(Debug, Default)]
pub(super) struct Routes {
    by_service: std::sync::Mutex<std::collections::HashMap<String, Arc<Route>>>,
}

impl Routes {
    /// The route for `service` in the current snapshot. The panic rule of the balancer
    /// ([`Balancer::panic`]) applies to removals too: when fewer than its threshold's share of
    /// the instances seen within the last [`RECENT_WINDOW`] are still `up`, the ones that vanished from the registry (removed or
    /// expired; not those draining or reported critical, which are still registered) are used
    /// as well, instead of piling everything onto the few left.
    pub(super) fn get(
        &self,
        service: &str,
        balancer: &Balancer,
        upstreams: &Upstreams,
        snapshots: &Snapshots,
        default_policy: Policy,
    ) -> Result<Arc<Route>, ProxyError> {
        let snapshot = snapshots.current();
        let mut routes = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        let previous = routes.get(service).cloned();
        let fresh = |r: &&Arc<Route>| {
            r.revision == snapshot.revision
                && r.recent
                    .iter()
                    .all(|(_, left)| left.elapsed() < RECENT_WINDOW)
        };
        if let Some(route) = previous.as_ref().filter(fresh) {
            return Self::usable(service, route.clone());
        }
        let Some(view) = snapshot.services.get(service) else {
            routes.remove(service);
            return Err(ProxyError::UnknownService(service.to_owned()));
        };
        let current: Vec<Endpoint> = view
            .up
            .iter()
            .filter_map(|t| {
                Some(Endpoint {
                    id: t.instance.id.as_str().to_owned(),
                    addr: t.socket_addr()?,
                    weight: t.instance.weight,
                    h2c: t.instance.metadata.get(PROTOCOL_KEY).map(String::as_str) == Some("h2c"),
                    stats: Arc::default(),
                    policy: t.instance.policy,
                })
            })
            .collect();
        let policy = service_policy(&view.instances, default_policy);
        let now = Instant::now();
        // Still registered (draining, or reported critical): left on purpose or for a known
        // reason, so not part of a removal the proxy should second-guess.
        let present = |id: &str| view.instances.iter().any(|i| i.id.as_str() == id);
        let mut recent: Vec<(Endpoint, Instant)> = Vec::new();
        if let Some(previous) = &previous {
            let gone = previous
                .endpoints
                .iter()
                .filter(|e| !previous.recent.iter().any(|(r, _)| r.id == e.id))
                .map(|e| (e.clone(), now))
                .chain(previous.recent.iter().cloned());
            for (endpoint, left) in gone {
                let back = current.iter().any(|c| c.id == endpoint.id);
                if !back && !present(&endpoint.id) && now.duration_since(left) < RECENT_WINDOW {
                    recent.push((endpoint, left));
                }
            }
        }
        let seen = current.len() + recent.len();
        let mass_removal =
            !recent.is_empty() && balancer.panic(view.policy, current.len(), seen).active;
        let mut endpoints = current;
        if mass_removal {
            endpoints.extend(recent.iter().map(|(e, _)| e.clone()));
        }
        balancer.attach(service, &mut endpoints);
        let pools = endpoints
            .iter()
            .map(|e| upstreams.pool(e.addr, e.h2c))
            .collect();
        let route = Arc::new(Route {
            service: service.to_owned(),
            revision: snapshot.revision,
            endpoints,
            pools,
            policy,
            recent,
            mass_removal,
        });
        routes.insert(service.to_owned(), route.clone());
        Self::usable(service, route)
    }

    fn usable(service: &str, route: Arc<Route>) -> Result<Arc<Route>, ProxyError> {
        if route.endpoints.is_empty() {
            Err(ProxyError::NoHealthyInstance(service.to_owned()))
        } else {
            Ok(route)
        }
    }
}
