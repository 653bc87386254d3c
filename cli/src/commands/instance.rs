//! The writes on one instance: `register` (JSON: the `RegisterResponse` body), `deregister`
//! (`DeregisterResponse`), `drain` and `undrain` (`DrainResponse`), `heartbeat`
//! (`HeartbeatResponse`) and `check` (`CheckResponse`). Register, deregister, drain and undrain
//! can wait for the sidecars (`--wait propagated`).

use std::{process::ExitCode, time::Duration};

use clap::{ArgGroup, Args, ValueEnum};
use waypost_client::{
    Propagate,
    model::{self, CheckReport, Health, Instance, InstanceRef, Propagation, RegisterRequest},
};

use crate::{
    connect::Common,
    output::{self, Format},
};

use super::{Outcome, discover::key_value, done};

/// Which instance: by id, or by the address it registered.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["id", "address"])))]
pub(crate) struct Which {
    /// The service.
    service: String,
    /// The instance's id.
    id: Option<String>,
    /// The instance's address instead of its id (`http://10.0.0.7:8001` or `10.0.0.7:8001`).
    #[arg(long)]
    address: Option<String>,
}

impl Which {
    fn instance(&self) -> InstanceRef {
        InstanceRef {
            service: self.service.clone(),
            id: self.id.clone(),
            address: self.address.clone(),
        }
    }
}

/// `--wait propagated`: answer once the sidecars route by the write.
#[derive(Debug, Args)]
#[command(next_help_heading = "Waiting for the sidecars")]
pub(crate) struct Wait {
    /// Answer once every live sidecar (or those named by --node) applied the write; exit
    /// status 3 when some had not within --wait-timeout (the write is done all the same).
    #[arg(long, value_enum, value_name = "WHAT")]
    wait: Option<WaitFor>,
    /// The longest the control plane waits for the sidecars.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", value_name = "DURATION", requires = "wait")]
    wait_timeout: Duration,
    /// Wait for this sidecar (repeat for several) instead of every live one.
    #[arg(long = "node", value_name = "NODE", requires = "wait")]
    nodes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WaitFor {
    /// Until the sidecars route by the write.
    Propagated,
}

impl Wait {
    fn propagate(&self) -> Option<Propagate> {
        self.wait.map(|WaitFor::Propagated| Propagate {
            timeout: self.wait_timeout,
            nodes: self.nodes.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct Register {
    /// The service.
    service: String,
    /// Where it answers: `host:port` or a URL (`http://10.0.0.7:8001`).
    address: String,
    /// The instance's id [default: host:port of the address].
    #[arg(long)]
    id: Option<String>,
    /// A tag (repeat for several).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// A metadata entry (repeat for several).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
    meta: Vec<(String, String)>,
    /// Its share of traffic relative to the other instances [server default: 1].
    #[arg(long)]
    weight: Option<u32>,
    /// How long it stays registered without a heartbeat: seconds, or a duration (`10m`)
    /// [server default: 30 s].
    #[arg(long, value_parser = seconds, value_name = "DURATION")]
    ttl: Option<u32>,
    /// Register it draining (out of discovery until `waypost undrain`).
    #[arg(long)]
    draining: bool,
    /// An HTTP health check the sidecars run: a URL answering 2xx when healthy.
    #[arg(long, value_name = "URL", conflicts_with = "check_tcp")]
    check_http: Option<String>,
    /// A TCP health check: `host:port` that accepts connections when healthy.
    #[arg(long, value_name = "HOST:PORT")]
    check_tcp: Option<String>,
    /// How often the check runs [server default: 10 s].
    #[arg(long, value_parser = seconds, value_name = "DURATION")]
    check_interval: Option<u32>,
    /// How long one check may take [server default: 2 s].
    #[arg(long, value_parser = seconds, value_name = "DURATION")]
    check_timeout: Option<u32>,
    /// The sidecar node the instance runs on (whose sidecar runs its check).
    #[arg(long, value_name = "NODE")]
    instance_node: Option<String>,
    #[command(flatten)]
    wait: Wait,
    #[command(flatten)]
    common: Common,
}

/// Whole seconds: `30`, or a duration such as `10m`.
fn seconds(s: &str) -> Result<u32, String> {
    let secs = match s.parse::<u64>() {
        Ok(n) => n,
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| e.to_string())?
            .as_secs(),
    };
    u32::try_from(secs).map_err(|_| format!("{s} is too long"))
}

impl Register {
    fn request(&self) -> RegisterRequest {
        let check = match (&self.check_http, &self.check_tcp) {
            (Some(url), _) => Some(model::Check::http(url)),
            (None, Some(addr)) => Some(model::Check::tcp(addr)),
            (None, None) => None,
        }
        .map(|mut check| {
            if let Some(s) = self.check_interval {
                check.interval_seconds = s;
            }
            if let Some(s) = self.check_timeout {
                check.timeout_seconds = s;
            }
            check
        });
        RegisterRequest {
            id: self.id.clone(),
            tags: self.tags.clone(),
            metadata: self.meta.iter().cloned().collect(),
            weight: self.weight,
            ttl_seconds: self.ttl,
            check,
            status: self.draining.then_some(model::Status::Draining),
            node: self.instance_node.clone(),
            ..RegisterRequest::new(&self.service, &self.address)
        }
    }
}

pub(super) async fn register(r: &Register) -> Outcome {
    let client = r.common.client()?;
    let request = r.request();
    let answer = match r.wait.propagate() {
        Some(wait) => client.register_propagated(&request, &wait).await?,
        None => client.register_once(&request).await?,
    };
    if r.common.format() == Format::Json {
        output::json(&answer);
    } else {
        let mut rows = instance_fields(&answer.instance);
        rows.push(("revision", answer.revision.to_string()));
        rows.push((
            "heartbeat",
            format!(
                "every {} s to stay registered",
                answer.heartbeat_interval_seconds
            ),
        ));
        crate::output::outln!("{}", answer.message);
        output::fields(&rows);
    }
    propagated(answer.propagation.as_ref(), r.common.format())
}

// The arguments of a change to one instance that may wait for the sidecars: deregister, drain
// and undrain. (Not a doc comment: clap would show it as each command's help.)
#[derive(Debug, Args)]
pub(crate) struct Change {
    #[command(flatten)]
    which: Which,
    #[command(flatten)]
    wait: Wait,
    #[command(flatten)]
    common: Common,
}

pub(super) async fn deregister(d: &Change) -> Outcome {
    let client = d.common.client()?;
    let instance = d.which.instance();
    let answer = match d.wait.propagate() {
        Some(wait) => client.deregister_propagated(instance, &wait).await?,
        None => client.deregister(instance).await?,
    };
    if d.common.format() == Format::Json {
        output::json(&answer);
    } else {
        crate::output::outln!("{} (revision {})", answer.message, answer.revision);
    }
    propagated(answer.propagation.as_ref(), d.common.format())
}

pub(super) async fn drain(d: &Change, draining: bool) -> Outcome {
    let client = d.common.client()?;
    let instance = d.which.instance();
    let answer = match d.wait.propagate() {
        Some(wait) => client.drain_propagated(instance, draining, &wait).await?,
        None => client.drain(instance, draining).await?,
    };
    if d.common.format() == Format::Json {
        output::json(&answer);
    } else {
        let mut rows = instance_fields(&answer.instance);
        rows.push(("revision", answer.revision.to_string()));
        output::fields(&rows);
    }
    propagated(answer.propagation.as_ref(), d.common.format())
}

#[derive(Debug, Args)]
pub(crate) struct Heartbeat {
    #[command(flatten)]
    which: Which,
    #[command(flatten)]
    common: Common,
}

pub(super) async fn heartbeat(h: &Heartbeat) -> Outcome {
    let answer = h.common.client()?.heartbeat(h.which.instance()).await?;
    if h.common.format() == Format::Json {
        output::json(&answer);
    } else {
        crate::output::outln!(
            "renewed {}/{} until {} (TTL {} s; heartbeat every {} s)",
            answer.service.as_str(),
            answer.id.as_str(),
            answer.expires_at,
            answer.ttl_seconds,
            answer.heartbeat_interval_seconds
        );
    }
    done()
}

#[derive(Debug, Args)]
pub(crate) struct Check {
    #[command(flatten)]
    which: Which,
    /// The check's result.
    #[arg(long, value_enum)]
    health: Reported,
    /// What the check saw (`GET /healthz: 503`).
    #[arg(long, value_name = "TEXT")]
    check_output: Option<String>,
    #[command(flatten)]
    common: Common,
}

/// The results a check reports (flapping is the control plane's conclusion, not a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Reported {
    Passing,
    Critical,
}

pub(super) async fn check(c: &Check) -> Outcome {
    let report = CheckReport {
        instance: c.which.instance(),
        health: match c.health {
            Reported::Passing => Health::Passing,
            Reported::Critical => Health::Critical,
        },
        output: c.check_output.clone(),
    };
    let answer = c.common.client()?.report_check(&report).await?;
    if c.common.format() == Format::Json {
        output::json(&answer);
    } else {
        let mut rows = instance_fields(&answer.instance);
        rows.push(("revision", answer.revision.to_string()));
        output::fields(&rows);
    }
    done()
}

/// An instance as `name: value` rows.
fn instance_fields(i: &Instance) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("service", i.service.as_str().to_owned()),
        ("id", i.id.as_str().to_owned()),
        ("address", i.address.clone()),
        ("status", output::wire(&i.status)),
        ("health", output::wire(&i.health)),
        ("weight", i.weight.to_string()),
        ("ttl", format!("{} s", i.ttl_seconds)),
    ];
    if !i.tags.is_empty() {
        rows.push(("tags", output::list(&i.tags)));
    }
    if !i.metadata.is_empty() {
        rows.push((
            "metadata",
            output::list(i.metadata.iter().map(|(k, v)| format!("{k}={v}"))),
        ));
    }
    if let Some(out) = &i.health_output {
        rows.push(("check output", out.to_string()));
    }
    rows
}

/// Says how a wait for the sidecars ended (on stdout in a table, on stderr when the JSON is
/// on stdout) and gives the exit status: 3 when some sidecar was behind.
fn propagated(p: Option<&Propagation>, format: Format) -> Outcome {
    let Some(p) = p else { return done() };
    if p.complete {
        if format == Format::Table {
            crate::output::outln!(
                "propagated: revision {} applied by {} sidecar{} in {} ms",
                p.revision,
                p.applied.len(),
                if p.applied.len() == 1 { "" } else { "s" },
                p.waited_ms
            );
        }
        return done();
    }
    let behind = p
        .behind
        .iter()
        .map(|b| match b.revision {
            Some(r) => format!("{} (at {r})", b.node),
            None => format!("{} (never reported)", b.node),
        })
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "waypost: done, but not propagated within {} ms: revision {} not applied by {}{}",
        p.waited_ms,
        p.revision,
        output::or_dash(behind),
        if p.lost.is_empty() {
            String::new()
        } else {
            format!("; lost: {}", p.lost.join(", "))
        }
    );
    Ok(ExitCode::from(output::NOT_PROPAGATED))
}
