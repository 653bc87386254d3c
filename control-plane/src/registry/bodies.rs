//! Answers that change only with the revision, serialised once per revision.
//!
//! `GET /services` lists every service with its counts, VIP and policy. At 10,000 services,
//! building and serialising that map on every request made it the slowest read by far
//! (issue 18; `BENCHMARKS.md` has the figures before and after). Every field in it changes
//! only through a change that moves the revision (a registration, deregistration, expiry,
//! drain or check report; a policy reaches a listed service only by updating its instances),
//! and nothing in it depends on the time, so its bytes are a function of the revision: the
//! body is kept with the revision it was built at and served again while it is at least as
//! new as the read needs. The first request after a change rebuilds it; requests that arrive
//! during a rebuild wait for it instead of building their own.
//!
//! The memory bound: one body (773 KB at 10,000 services with a VIP each), plus, for a moment
//! after a rebuild, the previous one while answers still being written hold it.
//!
//! `GET /discover/{service}` is not cached here. Each instance in it carries `uptime_seconds`,
//! which changes with the time and not with the revision, so its bytes cannot be kept; each
//! instance is already kept serialised ([`waypost_model::InstanceJson`], rebuilt when the
//! instance changes), so an answer is a copy of those bytes plus one number per instance,
//! which is the work a per-service cache would still do to patch the uptimes in. The
//! measurement that says so is in `BENCHMARKS.md` (issue 18).

use axum::body::Bytes;
use waypost_model::{Revision, ServicesResponse};

use super::{Registry, reads::summaries};

/// A serialised body and the state it was built from.
#[derive(Debug)]
pub(super) struct Cached {
    /// The revision it was built at.
    revision: Revision,
    /// [`super::Inner::loads`] when it was built.
    loads: u64,
    body: Bytes,
}

impl Registry {
    /// `GET /services`'s body (a [`ServicesResponse`] as serde writes it) and the revision it
    /// was read at, which is at least the head when called: the same bytes as building it
    /// now, served from the copy built at the last change when there is one.
    pub async fn services_json(&self) -> (Bytes, Revision) {
        // The read must reflect everything applied before it began (the caller has already
        // done its blocking wait and its linearizable read): any body at this revision or
        // later will do, since each is a state the registry held since.
        let need = self.head();
        if let Some(hit) = self.cached_services(need) {
            return hit;
        }
        let _building = self.services_builder.lock().await;
        // Built by the request this one waited for?
        if let Some(hit) = self.cached_services(need) {
            return hit;
        }
        let (services, revision, loads) = {
            let inner = self.lock();
            (summaries(&inner), inner.head, inner.loads)
        };
        // Serialised outside the lock, so writers wait only for the summaries.
        let body = ServicesResponse {
            total_services: services.len(),
            services,
            revision,
        };
        let body = Bytes::from(
            serde_json::to_vec(&body)
                .unwrap_or_else(|e| unreachable!("a ServicesResponse always serialises: {e}")),
        );
        let mut inner = self.lock();
        let newer = inner
            .services_body
            .as_ref()
            .is_none_or(|c| c.revision < revision);
        if inner.loads == loads && newer {
            inner.services_body = Some(Cached {
                revision,
                loads,
                body: body.clone(),
            });
        }
        (body, revision)
    }

    /// The kept `/services` body, if it is at revision `need` or later.
    fn cached_services(&self, need: Revision) -> Option<(Bytes, Revision)> {
        let inner = self.lock();
        inner
            .services_body
            .as_ref()
            .filter(|c| c.revision >= need && c.loads == inner.loads)
            .map(|c| (c.body.clone(), c.revision))
    }
}
