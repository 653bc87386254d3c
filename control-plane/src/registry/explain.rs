//! `GET /discover/{service}/explain`: the verdict of [`Filter`] on every instance of a
//! service, with its reasons, and the instances that left lately ([`super::departures`]).
//! The verdict is [`Filter::matches`] itself, so explain and discovery cannot disagree.

use waypost_model::{
    ExplainResponse, ExplainedInstance, Health, Instance, Reason, ReasonCode, Status, Timestamp,
};

use super::{Filter, Registry, departures::Left};

impl Registry {
    /// Every instance of `service` with whether `filter` keeps it, and why not.
    pub fn explain(&self, service: &str, filter: &Filter) -> ExplainResponse {
        let now = Timestamp::now();
        let instant = std::time::Instant::now();
        let inner = self.lock();
        let mut instances: Vec<ExplainedInstance> = inner
            .state
            .services
            .get(service)
            .map(|s| {
                s.instances
                    .values()
                    .map(|e| {
                        let mut reasons = reasons(&e.instance, filter);
                        if e.held {
                            reasons.push(Reason {
                                code: ReasonCode::HeldBySelfPreservation,
                                excludes: false,
                                detail: "overdue for a heartbeat, but kept: self-preservation \
                                         holds expiry while too many instances expire at once"
                                    .to_owned(),
                                since: None,
                                by: None,
                            });
                        }
                        ExplainedInstance {
                            included: filter.matches(&e.instance),
                            registered: true,
                            reasons,
                            instance: (*e.instance).clone(),
                            expires_in_ms: Some(millis(
                                e.deadline.saturating_duration_since(instant),
                            )),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let included = instances.iter().filter(|i| i.included).count();
        instances.extend(inner.departures.of(service, now).map(|d| {
            let (code, detail) = match d.left {
                Left::Expired => (
                    ReasonCode::Expired,
                    format!(
                        "no heartbeat within its TTL of {} s",
                        d.instance.ttl_seconds
                    ),
                ),
                Left::Deregistered => (ReasonCode::Deregistered, "deregistered".to_owned()),
            };
            ExplainedInstance {
                included: false,
                registered: false,
                reasons: vec![Reason {
                    code,
                    excludes: true,
                    detail,
                    since: d.at,
                    by: d.by.clone(),
                }],
                instance: (*d.instance).clone(),
                expires_in_ms: None,
            }
        }));
        ExplainResponse {
            service: service.to_owned(),
            revision: inner.head,
            included,
            self_preservation_active: inner.preservation.active(),
            policy: inner.policies.get(service).copied(),
            removed_kept_seconds: super::departures::KEPT_FOR.as_secs(),
            instances,
        }
    }
}

/// What `filter` says of `i`, each point with whether it keeps `i` out.
fn reasons(i: &Instance, filter: &Filter) -> Vec<Reason> {
    let mut out = Vec::new();
    let mut push = |code, excludes, detail: String, since| {
        out.push(Reason {
            code,
            excludes,
            detail,
            since,
            by: None,
        });
    };
    let unhealthy_out = filter.healthy_only;
    if i.status == Status::Draining {
        push(
            ReasonCode::Draining,
            unhealthy_out,
            "status draining: no new work (returned with healthy=false)".to_owned(),
            i.status_since,
        );
    }
    let output = i.health_output.as_deref().unwrap_or("no output");
    match i.health {
        Health::Passing => {}
        Health::Critical => push(
            ReasonCode::Critical,
            unhealthy_out,
            format!("check critical: {output}"),
            i.health_since,
        ),
        Health::Flapping => push(
            ReasonCode::Flapping,
            unhealthy_out,
            format!("check flapping: {output}"),
            i.health_since,
        ),
    }
    for tag in &filter.tags {
        if !i.tags.iter().any(|t| t == tag) {
            push(
                ReasonCode::TagMismatch,
                true,
                format!("no tag {tag:?} (it has {:?})", i.tags),
                None,
            );
        }
    }
    for (key, want) in &filter.meta {
        match i.metadata.get(key) {
            Some(have) if have == want => {}
            Some(have) => push(
                ReasonCode::MetadataMismatch,
                true,
                format!("metadata {key:?} is {have:?}, the query asks for {want:?}"),
                None,
            ),
            None => push(
                ReasonCode::MetadataMismatch,
                true,
                format!("no metadata {key:?} (the query asks for {want:?})"),
                None,
            ),
        }
    }
    out
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
