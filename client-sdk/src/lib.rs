//! The Waypost client SDK: register a service and keep it registered, discover and watch
//! services, and resolve them from a local cache.
//!
//! - [`Client`]: typed calls for every control-plane endpoint, over one or more endpoints with
//!   fail-over; errors keep the server's problem [`code`](Error::code).
//! - [`Registration`]: a registered instance kept alive in the background (heartbeats at the
//!   interval the server suggests, with jitter; retries with backoff; re-registers when the
//!   control plane lost it), with its [`RegistrationState`] on a watch channel.
//! - [`Watch`]: a service's instance sets as a `Stream`, resuming across reconnections.
//! - [`Propagate`]: writes that answer once every sidecar routes by them, and the sidecars'
//!   table (`Client::nodes`, `Client::propagation`).
//! - Operators' calls: [`Client::explain`], the protection policies
//!   ([`Client::set_policy`], [`Client::get_policy`], [`Client::delete_policy`]) and the
//!   cluster ([`Client::cluster_status`], [`Client::add_member`], [`Client::remove_member`]).
//! - [`Resolver`]: a watch-fed cache with round-robin or weighted selection, which keeps
//!   answering while the control plane is away.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), waypost_client::Error> {
//! # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
//! # let control_plane_url = cp.url.clone();
//! use waypost_client::{Balance, Client, Resolver, model::RegisterRequest};
//!
//! let client = Client::new(&control_plane_url)?;
//!
//! // A service registers itself and stays registered until the handle goes.
//! let me = client.register(RegisterRequest::new("echo", "http://127.0.0.1:8080")).await?;
//!
//! // A caller resolves it from a local cache.
//! let resolver = Resolver::new(&client, ["echo"], Balance::RoundRobin);
//! resolver.ready().await;
//! let target = resolver.pick("echo").unwrap();
//! assert_eq!(target.address, "http://127.0.0.1:8080");
//!
//! me.deregister().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The wire types are [`waypost_model`]'s, re-exported as [`model`].

mod admin;
mod builder;
mod client;
mod error;
mod nodes;
mod registration;
mod resolver;
mod shutdown;
mod transport;
mod watch;

pub use builder::{ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use client::{Client, Filter};
pub use error::Error;
pub use nodes::Propagate;
pub use registration::{Registration, RegistrationState};
pub use resolver::{Balance, Resolver};
pub use shutdown::{deregister_on_shutdown, shutdown_signal};
pub use watch::{
    BEHIND_LIMIT, IDLE_LIMIT, RECONNECT_CAP, ServiceSet, StreamEvent, Watch, WatchStream,
};

/// The wire types shared with the control plane (requests, answers, problems).
pub use waypost_model as model;
