//! The proxies: HTTP ([`http`]) and TCP ([`tcp`], on explicit routes and on services' virtual
//! IPs, whose listeners [`crate::listeners`] keeps). They read the same snapshot as DNS, choose
//! an instance with [`balance`], and keep their own facts about instances (in flight,
//! failures, ejections) to themselves; [`error`] turns the HTTP proxy's failures into answers.

pub mod balance;
pub mod error;
pub mod http;
pub mod pool;
pub mod tcp;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

use self::balance::{Outlier, Policy};

/// Errors carried by proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of the proxy's requests and answers: streamed, never buffered whole.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The proxies' settings (part of the sidecar's [`Config`](crate::Config)).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Also route `/<service>/...` when the Host names no service.
    pub route_by_path: bool,
    /// The default balancing policy (instances may name one in `waypost.balance` metadata).
    pub balance: Policy,
    /// Connecting to an instance.
    pub connect_timeout: Duration,
    /// From sending a request until the response headers arrive.
    pub request_timeout: Duration,
    /// A response body with no data for this long is cut; idle pooled connections close, and
    /// so do client connections without a new request.
    pub idle_timeout: Duration,
    /// A client connection that has not sent its first request's headers this long after it
    /// was accepted is closed (nothing sent, an HTTP/2 preface only, or part of a request).
    pub client_header_timeout: Duration,
    /// Most client connections open at once; more wait in the listen backlog.
    pub max_client_connections: usize,
    /// When failing instances are ejected, and for how long.
    pub outlier: Outlier,
    /// Below this share of usable instances, balance over all of them.
    pub panic_threshold: f64,
    /// Retries may add at most this share of requests.
    pub retry_budget: f64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            route_by_path: false,
            balance: Policy::LeastRequest,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            // As the control plane's --header-read-timeout.
            client_header_timeout: Duration::from_secs(10),
            // As the control plane's --max-connections.
            max_client_connections: 10_000,
            outlier: Outlier {
                failures: 5,
                base: Duration::from_secs(10),
                max: Duration::from_secs(300),
            },
            panic_threshold: 0.5,
            retry_budget: 0.2,
        }
    }
}
