//! Test-only shortcuts: each write is proposed and applied at once, as a cluster of one with
//! its own log would, so the unit tests drive the same `apply` the cluster does.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use waypost_model::{
    Health, Instance, InstanceId, InstanceRef, RegisterRequest, Revision, ServiceName, Timestamp,
};

use super::{Registered, Registry, RegistryConfig, RegistryError};
use crate::{
    command::{Command, Image, Reply},
    metrics::Metrics,
};

impl Registry {
    /// An empty registry that leads (decides expiry), at log index 0.
    pub(crate) fn in_memory_for_test(config: RegistryConfig) -> Self {
        Self::from_image_for_test(
            config,
            Image {
                epoch: 7,
                ..Image::default()
            },
            Instant::now(),
        )
    }

    /// A registry restored from `image` at `now`, leading.
    pub(crate) fn from_image_for_test(config: RegistryConfig, image: Image, now: Instant) -> Self {
        let r = Self::new(config, image, 0, Arc::new(Metrics::new()));
        r.lead(true, Duration::ZERO, now);
        r
    }

    /// Applies `command` as the next log entry at `now`.
    pub(crate) fn propose_at(&self, command: &Command, now: Instant) -> Reply {
        let index = self.lock().applied + 1;
        self.apply_at(index, command, now)
    }

    pub(crate) fn register(&self, req: &RegisterRequest) -> Result<Registered, RegistryError> {
        self.register_at(req, Instant::now())
    }

    pub(crate) fn register_at(
        &self,
        req: &RegisterRequest,
        now: Instant,
    ) -> Result<Registered, RegistryError> {
        let command = self.prepare_register(req)?;
        match self.propose_at(&command, now) {
            Reply::Registered { instance, created } => Ok(Registered { instance, created }),
            Reply::Rejected(r) => Err(r.into()),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub(crate) fn deregister(
        &self,
        r: &InstanceRef,
    ) -> Result<(ServiceName, InstanceId, Revision), RegistryError> {
        r.resolve()?;
        match self.propose_at(
            &Command::Deregister {
                target: r.clone(),
                at: Some(Timestamp::now()),
                by: None,
            },
            Instant::now(),
        ) {
            Reply::Removed {
                service,
                id,
                revision,
            } => Ok((service, id, revision)),
            Reply::Rejected(r) => Err(r.into()),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    fn amended(&self, command: &Command) -> Result<(Arc<Instance>, Revision), RegistryError> {
        match self.propose_at(command, Instant::now()) {
            Reply::Amended { instance } => {
                let revision = instance.revision;
                Ok((instance, revision))
            }
            Reply::Rejected(r) => Err(r.into()),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub(crate) fn drain(
        &self,
        r: &InstanceRef,
        draining: bool,
    ) -> Result<(Arc<Instance>, Revision), RegistryError> {
        self.amended(&Command::Drain {
            target: r.clone(),
            draining,
            at: Some(Timestamp::now()),
        })
    }

    pub(crate) fn report_check(
        &self,
        r: &InstanceRef,
        health: Health,
        output: Option<&str>,
    ) -> Result<(Arc<Instance>, Revision), RegistryError> {
        self.amended(&Command::Check {
            target: r.clone(),
            health,
            output: output.map(str::to_owned),
            at: Some(Timestamp::now()),
        })
    }

    /// Decides the expiries due at `now` and applies them at once.
    pub(crate) fn expire_at(&self, now: Instant) {
        for command in self.expire_due(now) {
            self.propose_at(&command, now);
        }
    }

    /// The `/discover` body the API writes, and its revision.
    pub(crate) fn discover_body(&self, service: &str, filter: &super::Filter) -> (Vec<u8>, u64) {
        let mut body = waypost_model::DiscoverBody::new(service);
        let (revision, vip) = self.discover_json(service, filter, |i, up, held| {
            body.push(i, up, held);
        });
        (body.finish(revision, vip), revision)
    }
}
