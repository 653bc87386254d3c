//! Process plumbing shared by `waypost-control` and `waypost-sidecar`, so neither binary writes
//! it twice: the shutdown signal, the tracing subscriber, TOML config files, bounded drains,
//! accepting connections, connection and request deadlines, draining HTTP connections, and the
//! open-file limit.
//! It knows nothing of service discovery.

pub mod config;
pub mod conn;
pub mod deadline;
pub mod fds;
pub mod logging;
pub mod net;
pub mod shutdown;
pub mod signal;

pub use tokio_util::{sync::CancellationToken, task::TaskTracker};
