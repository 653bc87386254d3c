//! `waypost policy get|set|delete SERVICE`: a service's protection policy
//! (/services/{service}/policy). JSON: the `PolicyResponse` body.

use clap::{Args, Subcommand};
use waypost_client::model::{PolicyResponse, ServicePolicy};

use crate::{
    connect::Common,
    output::{self, Format},
};

use super::{Outcome, done};

#[derive(Debug, Subcommand)]
pub(crate) enum Policy {
    /// The policy in force (GET).
    Get(Service),
    /// Set the policy, replacing the one in force (PUT; an operator token).
    Set(Set),
    /// Remove the policy (DELETE; an operator token).
    Delete(Service),
}

#[derive(Debug, Args)]
pub(crate) struct Service {
    /// The service.
    service: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub(crate) struct Set {
    /// The service.
    service: String,
    /// The proxies' panic threshold for it: below this share (in percent) of usable instances
    /// they balance over all of them; 0 turns panic mode off [default: the sidecar's own].
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(0..=100))]
    min_healthy_percent: Option<u32>,
    /// Keep the last non-empty set in DNS, the proxies and the SDK's resolver when expiry or
    /// failing checks would leave none.
    #[arg(long)]
    never_empty: bool,
    #[command(flatten)]
    common: Common,
}

pub(super) async fn run(p: &Policy) -> Outcome {
    let (answer, common) = match p {
        Policy::Get(s) => (s.common.client()?.get_policy(&s.service).await?, &s.common),
        Policy::Delete(s) => (
            s.common.client()?.delete_policy(&s.service).await?,
            &s.common,
        ),
        Policy::Set(s) => {
            let policy = ServicePolicy {
                min_healthy_percent: s.min_healthy_percent,
                never_empty: s.never_empty,
            };
            (
                s.common.client()?.set_policy(&s.service, &policy).await?,
                &s.common,
            )
        }
    };
    print(&answer, common.format());
    done()
}

fn print(answer: &PolicyResponse, format: Format) {
    match format {
        Format::Json => output::json(answer),
        Format::Table => crate::output::outln!(
            "{}: {} (revision {})",
            answer.service,
            answer
                .policy
                .as_ref()
                .map_or_else(|| "no policy".to_owned(), summary),
            answer.revision
        ),
    }
}

/// A policy in one cell: `min_healthy_percent=30,never_empty`.
pub(super) fn summary(p: &ServicePolicy) -> String {
    let mut parts = Vec::new();
    if let Some(percent) = p.min_healthy_percent {
        parts.push(format!("min_healthy_percent={percent}"));
    }
    if p.never_empty {
        parts.push("never_empty".to_owned());
    }
    output::or_dash(parts.join(","))
}
