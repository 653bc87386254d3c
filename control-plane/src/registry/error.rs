//! What the registry refuses, before anything reaches HTTP.

use waypost_model::{FieldError, ServiceName};

/// A registry operation that did not happen. Nothing was changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request named an invalid field.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// No such instance (never registered, deregistered or expired).
    #[error("no instance {id} of service {service} (expired, deregistered or never registered)")]
    NotFound {
        /// The service asked for.
        service: ServiceName,
        /// The id (or derived `host:port`) asked for.
        id: String,
    },
    /// The registry holds its configured maximum of instances.
    #[error("the registry holds its limit of {0} instances")]
    Full(usize),
    /// The service holds its configured maximum of instances.
    #[error("service {service} holds its limit of {max} instances")]
    ServiceFull {
        /// The service.
        service: ServiceName,
        /// The limit.
        max: usize,
    },
    /// The durable store failed a commit; writes are refused until restart.
    #[error("the durable store failed; writes are refused until the control plane restarts")]
    StoreUnavailable,
}
