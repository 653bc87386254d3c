//! `GET /sd/prometheus`: the registry in Prometheus's HTTP service discovery format.
//!
//! First the answer itself against an in-process control plane (targets, labels, filters, bad
//! queries); then the real thing: `waypost-control` and `waypost-sidecar` as processes, and a
//! real `prometheus` discovering both through `http_sd_configs`, scraping their `/metrics`, and
//! dropping a target once its instance is deregistered. Without `prometheus` on `PATH` (or
//! without a built `waypost-sidecar`) that test is skipped with a note, unless `CI` is set: then
//! it fails.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::{Value, json};

/// `(service, id)` of each target group, in order.
fn groups(answer: &Value) -> Vec<(String, String)> {
    answer
        .as_array()
        .unwrap_or_else(|| panic!("a list: {answer}"))
        .iter()
        .map(|g| {
            let label = |name: &str| g["labels"][name].as_str().unwrap().to_owned();
            (label("__meta_waypost_service"), label("__meta_waypost_id"))
        })
        .collect()
}

async fn sd(cp: &TestControlPlane, query: &str) -> Value {
    let a = get(cp, &format!("/sd/prometheus{query}")).await;
    assert_eq!(a.status, 200, "{query}: {}", a.body);
    assert_eq!(a.content_type(), "application/json");
    a.body
}

fn pair(service: &str, id: &str) -> (String, String) {
    (service.to_owned(), id.to_owned())
}

#[tokio::test]
async fn every_instance_is_a_target_group_with_its_labels() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(
        &cp,
        json!({"service": "web", "id": "a", "address": "https://127.0.0.1:8001/api",
               "tags": ["metrics", "v2"], "node": "node-a",
               "metadata": {"zone": "a", "app.version": "dot", "app-version": "dash",
                            "app_version": "exact", "team.name": "core"}}),
    )
    .await;
    register(
        &cp,
        json!({"service": "web", "id": "b", "address": "[::1]:8002"}),
    )
    .await;
    register(
        &cp,
        json!({"service": "api", "address": "http://localhost:8003", "tags": ["metrics"]}),
    )
    .await;

    let all = sd(&cp, "").await;
    // Ordered by service, then id.
    assert_eq!(
        groups(&all),
        [
            pair("api", "localhost:8003"),
            pair("web", "a"),
            pair("web", "b")
        ]
    );
    let targets: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["targets"])
        .collect();
    assert_eq!(
        targets,
        [
            &json!(["localhost:8003"]),
            &json!(["127.0.0.1:8001"]),
            &json!(["[::1]:8002"])
        ]
    );
    assert_eq!(
        all[1]["labels"],
        json!({
            "__meta_waypost_service": "web",
            "__meta_waypost_id": "a",
            "__meta_waypost_address": "https://127.0.0.1:8001/api",
            "__meta_waypost_node": "node-a",
            "__meta_waypost_tags": ",metrics,v2,",
            "__meta_waypost_health": "passing",
            "__meta_waypost_draining": "false",
            "__meta_waypost_metadata_zone": "a",
            // Three keys give this name: the one that needed no change wins.
            "__meta_waypost_metadata_app_version": "exact",
            "__meta_waypost_metadata_team_name": "core",
        }),
        "neither __scheme__ nor __metrics_path__ comes from the address"
    );
    // No node, no tags: empty values (which Prometheus treats as absent).
    assert_eq!(all[2]["labels"]["__meta_waypost_node"], "");
    assert_eq!(all[2]["labels"]["__meta_waypost_tags"], "");
    // The answer carries the revision it was read at, as every read does.
    let a = get(&cp, "/sd/prometheus").await;
    assert!(a.index() >= 3);
}

#[tokio::test]
async fn filters_select_as_discover_does() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    for (port, (service, id, tags, zone)) in (8001..).zip([
        ("web", "a", json!(["metrics", "v2"]), "a"),
        ("web", "b", json!(["metrics"]), "b"),
        ("web", "drained", json!(["metrics"]), "a"),
        ("web", "sick", json!(["metrics"]), "a"),
        ("api", "c", json!([]), "a"),
    ]) {
        register(
            &cp,
            json!({"service": service, "id": id, "address": format!("10.0.0.7:{port}"),
                   "tags": tags, "metadata": {"zone": zone}}),
        )
        .await;
    }
    let drained = post(&cp, "/drain", json!({"service": "web", "id": "drained"})).await;
    assert_eq!(drained.status, 200, "{}", drained.body);
    let sick = json!({"service": "web", "id": "sick", "health": "critical", "output": "503"});
    assert_eq!(post(&cp, "/check", sick).await.status, 200);

    // Healthy ones by default: the same instances /discover returns.
    let healthy = groups(&sd(&cp, "").await);
    assert_eq!(
        healthy,
        [pair("api", "c"), pair("web", "a"), pair("web", "b")]
    );
    let discovered = ids(&cp, "web", "").await;
    let sd_web: Vec<String> = groups(&sd(&cp, "?service=web").await)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(sd_web, discovered);

    for (query, want) in [
        ("?tag=metrics", vec![pair("web", "a"), pair("web", "b")]),
        ("?tag=metrics&tag=v2", vec![pair("web", "a")]),
        ("?service=api&tag=metrics", vec![]),
        ("?meta=zone:a", vec![pair("api", "c"), pair("web", "a")]),
        ("?meta.zone=b", vec![pair("web", "b")]),
        ("?service=nothing-here", vec![]),
    ] {
        assert_eq!(groups(&sd(&cp, query).await), want, "{query}");
    }

    // healthy=false adds the others, their state in the labels.
    let all = sd(&cp, "?healthy=false&service=web").await;
    assert_eq!(
        groups(&all),
        [
            pair("web", "a"),
            pair("web", "b"),
            pair("web", "drained"),
            pair("web", "sick")
        ]
    );
    let labels = |i: usize, name: &str| all[i]["labels"][format!("__meta_waypost_{name}")].clone();
    assert_eq!(
        (labels(2, "draining"), labels(2, "health")),
        (json!("true"), json!("passing"))
    );
    assert_eq!(
        (labels(3, "draining"), labels(3, "health")),
        (json!("false"), json!("critical"))
    );
}

#[tokio::test]
async fn bad_queries_are_problems_with_stable_codes() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    for query in [
        "?healthy=maybe",
        "?tag=not%20a%20tag",
        "?service=web&service=api",
        "?meta=nocolon",
        "?index=1",
        "?stale",
        "?bogus=1",
    ] {
        get(&cp, &format!("/sd/prometheus{query}"))
            .await
            .assert_problem(400, "invalid_query");
    }
    let long = "t".repeat(waypost_model::limits::MAX_FILTER_LEN + 1);
    get(&cp, &format!("/sd/prometheus?tag={long}"))
        .await
        .assert_problem(400, "invalid_query");
    let bad = get(&cp, "/sd/prometheus?service=Not_A_Name").await;
    bad.assert_problem(400, "invalid_service_name");
    assert!(
        bad.body["detail"].as_str().unwrap().contains("Not_A_Name"),
        "{}",
        bad.body
    );
}

// === A real Prometheus ===

/// How long Prometheus gets to discover, scrape or drop a target. Its discovery manager sends
/// updates to the scrapers at most every 5 s, whatever `refresh_interval` says.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(60);

/// A child process killed (and reaped) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `name` on `PATH`, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `waypost-sidecar` from this test's target directory, where `cargo build --workspace` (and
/// `cargo test --workspace`) put it. The control plane's tests may not depend on the sidecar's
/// package, so cargo does not build it for them.
fn sidecar_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<this test>
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir.join(format!("waypost-sidecar{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}

/// Skips the test with a note, or fails it when `CI` is set (CI installs everything).
fn missing(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is missing, and CI requires this test"
    );
    println!("SKIPPED: {what} is missing");
}

/// Starts a binary that logs JSON to stderr and returns it with the fields of its `listening`
/// line.
fn spawn_logged(command: &mut Command) -> (Process, Value) {
    let mut child = command
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let listening = loop {
        let line = lines
            .next()
            .expect("the process exited before listening")
            .expect("read stderr");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["message"] == "listening" {
            break v;
        }
    };
    // Keep draining stderr so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Process(child), listening)
}

/// The scrape configuration of the README's example, with short intervals.
fn prometheus_config(control: &str) -> String {
    format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: waypost
    http_sd_configs:
      - url: http://{control}/sd/prometheus
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_waypost_tags]
        regex: .*,metrics,.*
        action: keep
      - source_labels: [__meta_waypost_service]
        target_label: service
"
    )
}

/// Starts `prometheus` on a free port of 127.0.0.1 and waits until it is ready. Prometheus
/// cannot listen on port 0, so a port is picked by binding and releasing it; should another
/// process take it in between, Prometheus exits and another port is tried.
async fn start_prometheus(bin: &Path, dir: &Path) -> (Process, String) {
    for attempt in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.join(format!("prometheus-{attempt}.log")))
            .expect("create the log file");
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut process = Process(child);
        let url = format!("http://127.0.0.1:{port}");
        let ready = eventually(PROMETHEUS_DEADLINE, "prometheus ready or exited", || {
            let exited = process.0.try_wait().expect("poll prometheus").is_some();
            let url = url.clone();
            async move {
                if exited {
                    return Some(false);
                }
                let res = client().get(format!("{url}/-/ready")).send().await.ok()?;
                res.status().is_success().then_some(true)
            }
        })
        .await;
        if ready {
            return (process, url);
        }
    }
    let log = std::fs::read_to_string(dir.join("prometheus-4.log")).unwrap_or_default();
    panic!("prometheus did not start on any of five ports:\n{log}");
}

/// Prometheus's active targets, by the `service` label the relabelling rule sets.
async fn active_targets(prometheus: &str) -> Option<Vec<(String, Value)>> {
    let body: Value = client()
        .get(format!("{prometheus}/api/v1/targets?state=active"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let mut targets: Vec<(String, Value)> = body["data"]["activeTargets"]
        .as_array()?
        .iter()
        .map(|t| {
            (
                t["labels"]["service"].as_str().unwrap_or("").to_owned(),
                t.clone(),
            )
        })
        .collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    Some(targets)
}

#[tokio::test]
async fn a_real_prometheus_discovers_scrapes_and_drops_targets() {
    let Some(prometheus_bin) = on_path("prometheus") else {
        return missing("prometheus (apt-get install prometheus)");
    };
    let Some(sidecar_bin) = sidecar_binary() else {
        return missing("waypost-sidecar in the target directory (cargo build -p waypost-sidecar)");
    };
    let dir = tempfile::tempdir().expect("a temporary directory");

    let (_control, listening) =
        spawn_logged(Command::new(env!("CARGO_BIN_EXE_waypost-control")).args([
            "--listen",
            "127.0.0.1:0",
            "--in-memory",
        ]));
    let control = listening["http"].as_str().expect("http field").to_owned();
    let (_sidecar, listening) = spawn_logged(
        Command::new(&sidecar_bin)
            .args(["--control", &format!("http://{control}")])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--dns-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("sidecar")),
    );
    let admin = listening["admin"].as_str().expect("admin field").to_owned();

    // Both serve /metrics: the control plane on its API listener, the sidecar on its admin
    // listener. A third instance, not tagged `metrics`, is dropped by the relabelling rule.
    let cp = reqwest::Client::new();
    for body in [
        json!({"service": "control", "address": format!("http://{control}"),
               "tags": ["metrics"], "metadata": {"team.name": "core"}, "ttl_seconds": 600}),
        json!({"service": "sidecar", "address": admin, "tags": ["metrics", "edge"],
               "ttl_seconds": 600}),
        json!({"service": "web", "address": "127.0.0.1:9", "ttl_seconds": 600}),
    ] {
        let res = cp
            .post(format!("http://{control}/register"))
            .json(&body)
            .send()
            .await
            .expect("register");
        assert_eq!(
            res.status(),
            201,
            "{}",
            res.text().await.unwrap_or_default()
        );
    }

    std::fs::write(
        dir.path().join("prometheus.yml"),
        prometheus_config(&control),
    )
    .expect("write prometheus.yml");
    let (_prometheus, prometheus) = start_prometheus(&prometheus_bin, dir.path()).await;

    let targets = eventually(
        PROMETHEUS_DEADLINE,
        "prometheus scraping both tagged instances",
        || async {
            let t = active_targets(&prometheus).await?;
            let services: Vec<&str> = t.iter().map(|(s, _)| s.as_str()).collect();
            let up = t.iter().all(|(_, t)| t["health"] == "up");
            (services == ["control", "sidecar"] && up).then_some(t)
        },
    )
    .await;
    let (control_target, sidecar_target) = (&targets[0].1, &targets[1].1);
    assert_eq!(
        control_target["scrapeUrl"],
        format!("http://{control}/metrics")
    );
    assert_eq!(
        sidecar_target["scrapeUrl"],
        format!("http://{admin}/metrics")
    );
    let discovered = &control_target["discoveredLabels"];
    assert_eq!(discovered["__meta_waypost_service"], "control");
    assert_eq!(discovered["__meta_waypost_id"], control.as_str());
    assert_eq!(discovered["__meta_waypost_tags"], ",metrics,");
    assert_eq!(discovered["__meta_waypost_health"], "passing");
    assert_eq!(discovered["__meta_waypost_draining"], "false");
    assert_eq!(discovered["__meta_waypost_metadata_team_name"], "core");
    assert_eq!(discovered["__address__"], control.as_str());
    assert_eq!(
        sidecar_target["discoveredLabels"]["__meta_waypost_tags"], ",edge,metrics,",
        "tags are stored sorted"
    );

    // Deregistered, the sidecar's target leaves on a later refresh.
    let res = cp
        .post(format!("http://{control}/deregister"))
        .json(&json!({"service": "sidecar", "address": admin}))
        .send()
        .await
        .expect("deregister");
    assert_eq!(res.status(), 200);
    eventually(
        PROMETHEUS_DEADLINE,
        "prometheus dropping the deregistered target",
        || async {
            let t = active_targets(&prometheus).await?;
            let services: Vec<&str> = t.iter().map(|(s, _)| s.as_str()).collect();
            (services == ["control"]).then_some(())
        },
    )
    .await;
}
