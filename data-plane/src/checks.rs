//! Active health checks: the sidecar runs the `check` of the instances it is responsible for
//! (those whose `node` is this sidecar's node name, or all of them with `check_all`) at the
//! declared interval and timeout, and reports to the control plane when the result differs from
//! what the control plane shows. Comparing with the registry's view, not with the last local
//! result, makes reporting self-healing: after a restart of either side the next check sets
//! the record straight. An instance critical for longer than `deregister_critical_after` is
//! deregistered.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use waypost_client::Client;
use waypost_model::{
    Check, CheckReport, Health, Instance, InstanceRef, limits::MAX_CHECK_OUTPUT_LEN,
};

use crate::snapshot::Snapshots;

/// Which instances this sidecar checks, and what to do with long-critical ones.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// This host's node name: instances registered with it are checked here.
    pub node: Option<String>,
    /// Check every instance with a check (a single-host setup).
    pub check_all: bool,
    /// Deregister an instance critical for this long (zero: never).
    pub deregister_critical_after: Duration,
}

impl CheckConfig {
    fn mine(&self, instance: &Instance) -> bool {
        instance.check.is_some()
            && (self.check_all
                || (self.node.is_some() && instance.node.as_deref() == self.node.as_deref()))
    }
}

struct Shared {
    snapshots: Snapshots,
    client: Client,
    http: HttpClient<HttpConnector, Empty<Bytes>>,
    config: CheckConfig,
}

/// Keeps one check task per instance this sidecar is responsible for, following the snapshot.
pub(crate) async fn run(
    snapshots: Snapshots,
    client: Client,
    config: CheckConfig,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        http: HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new()),
        snapshots: snapshots.clone(),
        client,
        config,
    });
    // The check loops, owned here: dropping the set at the end stops them all.
    let mut checking = JoinSet::new();
    let mut running: HashMap<(String, String), (Check, AbortHandle)> = HashMap::new();
    let mut changes = snapshots.clone();
    loop {
        let snapshot = snapshots.current();
        let mut wanted = HashMap::new();
        for view in snapshot.services.values() {
            for instance in &view.instances {
                if shared.config.mine(instance)
                    && let Some(check) = &instance.check
                {
                    let key = (
                        instance.service.as_str().to_owned(),
                        instance.id.as_str().to_owned(),
                    );
                    wanted.insert(key, (**check).clone());
                }
            }
        }
        running.retain(|key, (check, task)| {
            let keep = wanted.get(key) == Some(check) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, check) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                let task = checking.spawn(check_loop(
                    shared.clone(),
                    slot.key().clone(),
                    check.clone(),
                ));
                slot.insert((check, task));
            }
        }
        // Forget the loops that ended (their instance left), so the set holds only live ones.
        while checking.try_join_next().is_some() {}
        drop(snapshot);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = changes.changed() => {}
        }
    }
}

async fn check_loop(shared: Arc<Shared>, (service, id): (String, String), check: Check) {
    let interval = Duration::from_secs(check.interval_seconds.into());
    let timeout = Duration::from_secs(check.timeout_seconds.into());
    let mut critical_since: Option<Instant> = None;
    loop {
        let (health, output) = probe(&shared.http, &check, timeout).await;
        let recorded = shared
            .snapshots
            .current()
            .services
            .get(&service)
            .and_then(|v| v.instances.iter().find(|i| i.id.as_str() == id).cloned());
        let Some(recorded) = recorded else {
            return; // deregistered meanwhile
        };
        if recorded.health != health {
            let report = CheckReport {
                instance: InstanceRef::by_id(&service, &id),
                health,
                output: output.clone(),
            };
            match shared.client.report_check(&report).await {
                Ok(_) => {
                    tracing::info!(%service, %id, ?health, output = output.as_deref().unwrap_or(""), "health changed")
                }
                Err(err) => tracing::warn!(%service, %id, %err, "cannot report a check result"),
            }
        }
        if health == Health::Critical {
            let since = *critical_since.get_or_insert_with(Instant::now);
            let limit = shared.config.deregister_critical_after;
            if !limit.is_zero() && since.elapsed() >= limit {
                match shared
                    .client
                    .deregister(InstanceRef::by_id(&service, &id))
                    .await
                {
                    Ok(_) => {
                        tracing::warn!(%service, %id, critical_for = ?since.elapsed(), "deregistered after being critical too long");
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(%service, %id, %err, "cannot deregister a critical instance")
                    }
                }
            }
        } else {
            critical_since = None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs one check: HTTP GET expecting 2xx, or a TCP connect.
async fn probe(
    http: &HttpClient<HttpConnector, Empty<Bytes>>,
    check: &Check,
    timeout: Duration,
) -> (Health, Option<String>) {
    let outcome: Result<(), String> = match (&check.http, &check.tcp) {
        (Some(url), _) => {
            if url.starts_with("https://") {
                Err("https checks are not supported yet (no TLS in the sidecar)".to_owned())
            } else {
                match url.parse::<http::Uri>() {
                    Err(err) => Err(format!("bad URL {url:?}: {err}")),
                    Ok(uri) => match tokio::time::timeout(timeout, http.get(uri)).await {
                        Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
                        Ok(Err(err)) => Err(format!("GET {url}: {err}")),
                        Ok(Ok(response)) if response.status().is_success() => Ok(()),
                        Ok(Ok(response)) => Err(format!("GET {url}: {}", response.status())),
                    },
                }
            }
        }
        (None, Some(addr)) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await
            {
                Err(_) => Err(format!("connect {addr}: no answer within {timeout:?}")),
                Ok(Err(err)) => Err(format!("connect {addr}: {err}")),
                Ok(Ok(_)) => Ok(()),
            }
        }
        (None, None) => Ok(()),
    };
    match outcome {
        Ok(()) => (Health::Passing, None),
        Err(text) => (
            Health::Critical,
            Some(text.chars().take(MAX_CHECK_OUTPUT_LEN).collect()),
        ),
    }
}
