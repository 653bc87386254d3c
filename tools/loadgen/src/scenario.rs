//! The data set and the request of each scenario, in one place so that the load, the baseline's
//! capture and the memory probe all send the same shapes.
//!
//! Seeded instances and benchmark registrations ask for a one-hour TTL: expiry must not remove
//! (or write) anything while a measurement runs.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    Error,
    client::{Call, Plan, Target, drive},
};

/// Services in the seeded data set.
pub(crate) const SEED_SERVICES: u64 = 100;
/// Instances per seeded service.
pub(crate) const SEED_INSTANCES: u64 = 10;
/// TTL of everything this tool registers, in seconds.
const TTL_SECONDS: u32 = 3600;
/// Registrations a `register` run may make: addresses are unique below this count.
pub(crate) const MAX_UNIQUE: u64 = 1 << 23;

/// What the load repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// `POST /register` of a new instance each time (a durable insert in durable mode).
    Register,
    /// `POST /heartbeat` cycling over the seeded instances.
    Heartbeat,
    /// `POST /heartbeat` in the batch form, `--batch` seeded instances per request, cycling
    /// over them; an answer counts only if it renewed every entry.
    HeartbeatBatch,
    /// `GET /discover/{service}` cycling over the seeded services.
    Discover,
    /// `GET /services`.
    Services,
}

impl Scenario {
    /// The name printed in results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Heartbeat => "heartbeat",
            Self::HeartbeatBatch => "heartbeat-batch",
            Self::Discover => "discover",
            Self::Services => "services",
        }
    }

    /// Builds request number `n`. `run` makes `register` addresses differ between runs; `batch`
    /// is the number of instances in each `heartbeat-batch` request.
    pub(crate) fn requests(self, run: u64, batch: usize) -> Box<dyn Fn(u64) -> Call + Send + Sync> {
        match self {
            Self::Register => Box::new(move |n| register_new("reg", 100, n, run)),
            Self::Heartbeat => {
                let calls: Vec<Call> = (0..SEED_SERVICES * SEED_INSTANCES)
                    .map(|k| {
                        let (s, i) = (k % SEED_SERVICES, k / SEED_SERVICES);
                        let body = json!({"service": seed_service(s), "id": seed_address(s, i)});
                        Call::post("/heartbeat", &body)
                    })
                    .collect();
                cycle(calls)
            }
            Self::HeartbeatBatch => {
                let total = SEED_SERVICES * SEED_INSTANCES;
                let batch = batch as u64;
                // As many batches as it takes for every seeded instance to start one, each
                // running on (wrapping around the data set), so that consecutive requests renew
                // different instances, as clients holding different instances would.
                let calls: Vec<Call> = (0..total.div_ceil(batch))
                    .map(|b| {
                        let instances: Vec<_> = (0..batch)
                            .map(|j| {
                                let k = (b * batch + j) % total;
                                let (s, i) = (k % SEED_SERVICES, k / SEED_SERVICES);
                                json!({"service": seed_service(s), "id": seed_address(s, i)})
                            })
                            .collect();
                        Call::post("/heartbeat", &json!({ "instances": instances }))
                            .expecting(r#""failed":0,"#)
                    })
                    .collect();
                cycle(calls)
            }
            Self::Discover => cycle(
                (0..SEED_SERVICES)
                    .map(|s| Call::get(format!("/discover/{}", seed_service(s))))
                    .collect(),
            ),
            Self::Services => cycle(vec![Call::get("/services".to_owned())]),
        }
    }
}

fn cycle(calls: Vec<Call>) -> Box<dyn Fn(u64) -> Call + Send + Sync> {
    Box::new(move |n| calls[(n % calls.len() as u64) as usize].clone())
}

/// Name of seeded service `s`.
pub(crate) fn seed_service(s: u64) -> String {
    format!("svc-{s:03}")
}

/// Address (and so id) of instance `i` of seeded service `s`.
pub(crate) fn seed_address(s: u64, i: u64) -> String {
    format!("10.1.{s}.{}:8080", i + 1)
}

/// Registration number `n` of a new instance in one of `services` services named
/// `{prefix}-NNN`, at [`unique_address`].
pub(crate) fn register_new(prefix: &str, services: u64, n: u64, run: u64) -> Call {
    let body = json!({
        "service": format!("{prefix}-{:03}", n % services),
        "address": unique_address(n, run),
        "ttl_seconds": TTL_SECONDS,
    });
    Call::post("/register", &body)
}

/// Address number `n` (unique for `n` below [`MAX_UNIQUE`]) in the 10.128.0.0/9 range, away from
/// the seeded 10.1.0.0/16; the port comes from `run`.
fn unique_address(n: u64, run: u64) -> String {
    let n = n % MAX_UNIQUE;
    format!(
        "10.{}.{}.{}:{}",
        128 + (n >> 16),
        (n >> 8) & 0xff,
        n & 0xff,
        1024 + run % 60_000
    )
}

/// A number that differs between runs, for [`register_new`].
pub(crate) fn run_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Registers the seeded data set (idempotent: a second run updates). Fails unless every
/// registration succeeds within `limit`.
pub(crate) async fn seed(target: &Target, limit: Duration) -> Result<(), Error> {
    let calls: Vec<Call> = (0..SEED_SERVICES * SEED_INSTANCES)
        .map(|k| {
            let (s, i) = (k % SEED_SERVICES, k / SEED_SERVICES);
            let body = json!({
                "service": seed_service(s),
                "address": seed_address(s, i),
                "ttl_seconds": TTL_SECONDS,
            });
            Call::post("/register", &body)
        })
        .collect();
    let total = calls.len() as u64;
    let plan = Plan {
        make: cycle(calls),
        deadline: Instant::now() + limit,
        max_requests: total,
        request_timeout: Duration::from_secs(10),
        record_latency: false,
    };
    let (tally, took) = drive(target, 16, plan).await?;
    if tally.requests != total || tally.errors > 0 {
        return Err(format!(
            "seeding failed: {} of {total} sent, {} errors; first: {}",
            tally.requests,
            tally.errors,
            tally.first_error.unwrap_or_default()
        )
        .into());
    }
    eprintln!(
        "seeded {SEED_SERVICES} services x {SEED_INSTANCES} instances in {:.1} s",
        took.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_addresses_encode_their_number() {
        // Decoding the address gives `n` back, so addresses are unique below MAX_UNIQUE.
        for n in (0..MAX_UNIQUE).step_by(97).chain([MAX_UNIQUE - 1]) {
            let address = unique_address(n, 7);
            let (ip, port) = address.rsplit_once(':').expect("host:port");
            let o: Vec<u64> = ip.split('.').map(|x| x.parse().expect("octet")).collect();
            assert_eq!(((o[1] - 128) << 16) | (o[2] << 8) | o[3], n, "{address}");
            assert_eq!(port, "1031");
        }
    }

    #[test]
    fn heartbeats_name_seeded_instances() {
        let make = Scenario::Heartbeat.requests(0, 1);
        let body = String::from_utf8(make(101).body.to_vec()).expect("utf-8");
        assert_eq!(body, r#"{"id":"10.1.1.2:8080","service":"svc-001"}"#);
    }

    #[test]
    fn batches_name_distinct_seeded_instances() {
        let make = Scenario::HeartbeatBatch.requests(0, 100);
        let body: serde_json::Value = serde_json::from_slice(&make(3).body).expect("a JSON body");
        let list = body["instances"].as_array().expect("the batch form");
        assert_eq!(list.len(), 100);
        let distinct: std::collections::HashSet<_> = list.iter().collect();
        assert_eq!(distinct.len(), 100);
        assert_eq!(
            list[0],
            json!({"service": "svc-000", "id": "10.1.0.4:8080"})
        );
        assert_eq!(make(3).expect.as_deref(), Some(&br#""failed":0,"#[..]));
    }
}
