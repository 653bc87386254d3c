//! `waypost discover` (GET /discover/{service}; JSON: the `DiscoverResponse` body) and
//! `waypost explain` (GET /discover/{service}/explain; JSON: the `ExplainResponse` body).

use std::time::Duration;

use clap::Args;
use waypost_client::{Filter, model::Instance};

use crate::{
    connect::Common,
    output::{self, Format, Table},
};

use super::{Outcome, done};

#[derive(Debug, Args)]
pub(crate) struct Discover {
    /// The service.
    service: String,
    /// Only instances with this tag (repeat: all must match).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Only instances whose metadata has KEY=VALUE (repeat: all must match).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
    meta: Vec<(String, String)>,
    /// Every instance, draining and failing ones too (`?healthy=false`).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    common: Common,
}

/// `KEY=VALUE`.
pub(super) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl Discover {
    fn filter(&self) -> Filter {
        let mut filter = Filter::default();
        for tag in &self.tags {
            filter = filter.tag(tag);
        }
        for (k, v) in &self.meta {
            filter = filter.meta(k, v);
        }
        if self.all {
            filter = filter.include_draining();
        }
        filter
    }
}

pub(super) async fn discover(d: &Discover) -> Outcome {
    let answer = d.common.client()?.discover(&d.service, &d.filter()).await?;
    match d.common.format() {
        Format::Json => output::json(&answer),
        Format::Table => {
            let mut table = Table::new(&[
                "id", "address", "status", "health", "weight", "tags", "metadata", "uptime",
            ]);
            for found in &answer.instances {
                let i = &found.instance;
                let mut health = output::wire(&i.health);
                if found.held {
                    health.push_str(" (held)");
                }
                table.row(vec![
                    i.id.as_str().to_owned(),
                    i.address.clone(),
                    output::wire(&i.status),
                    health,
                    i.weight.to_string(),
                    output::list(&i.tags),
                    metadata(i),
                    uptime(found.uptime_seconds),
                ]);
            }
            if table.is_empty() {
                crate::output::outln!(
                    "no instances of {} (revision {})",
                    answer.service,
                    answer.revision
                );
            } else {
                table.print();
            }
        }
    }
    done()
}

pub(super) async fn explain(d: &Discover) -> Outcome {
    let answer = d.common.client()?.explain(&d.service, &d.filter()).await?;
    match d.common.format() {
        Format::Json => output::json(&answer),
        Format::Table => {
            let mut head = vec![
                ("service", answer.service.clone()),
                (
                    "included",
                    format!("{} of {}", answer.included, answer.instances.len()),
                ),
                ("revision", answer.revision.to_string()),
                (
                    "self-preservation",
                    if answer.self_preservation_active {
                        "active"
                    } else {
                        "off"
                    }
                    .to_owned(),
                ),
            ];
            if let Some(policy) = &answer.policy {
                head.push(("policy", super::policy::summary(policy)));
            }
            output::fields(&head);
            if answer.instances.is_empty() {
                return done();
            }
            crate::output::outln!("");
            let mut table = Table::new(&["id", "address", "included", "registered", "reasons"]);
            for e in &answer.instances {
                let reasons = e
                    .reasons
                    .iter()
                    .map(|r| {
                        let code = output::wire(&r.code);
                        let code = if r.excludes {
                            code
                        } else {
                            format!("({code})")
                        };
                        format!("{code}: {}", r.detail)
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                table.row(vec![
                    e.instance.id.as_str().to_owned(),
                    e.instance.address.clone(),
                    yes_no(e.included),
                    yes_no(e.registered),
                    output::or_dash(reasons),
                ]);
            }
            table.print();
        }
    }
    done()
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn metadata(i: &Instance) -> String {
    output::list(i.metadata.iter().map(|(k, v)| format!("{k}={v}")))
}

/// Seconds as `1h 2m 3s`, to the second.
fn uptime(seconds: f64) -> String {
    let whole = Duration::from_secs(seconds.max(0.0) as u64);
    humantime::format_duration(whole).to_string()
}
