//! The operator's commands as a real `waypost` process against a real control plane (started
//! in this test on 127.0.0.1:0): what each prints (JSON and tables), the exit statuses, tokens,
//! fail-over across addresses, `watch`, completions and `cluster status`.

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};
use waypost_control::{auth::Role, testkit::TestControlPlane, testkit::tokens};

const DEADLINE: Duration = Duration::from_secs(15);

/// What one run of `waypost` left.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Success, and stdout as JSON.
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {self:?}"))
    }

    /// Exit status 1 with the problem `code` on stderr.
    fn refused(&self, code: &str) {
        assert_eq!(self.code, 1, "{self:?}");
        assert!(
            self.stderr.starts_with(&format!("waypost: {code}: ")),
            "{self:?}"
        );
        assert!(self.stdout.is_empty(), "{self:?}");
    }
}

/// `waypost` with no `WAYPOST_*` variable from the test's environment.
fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waypost"));
    for var in [
        "WAYPOST_ADDR",
        "WAYPOST_TOKEN",
        "WAYPOST_CA_CERT",
        "WAYPOST_CLIENT_CERT",
        "WAYPOST_CLIENT_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.kill_on_drop(true);
    cmd
}

async fn run_with(mut cmd: Command, args: &[&str]) -> Run {
    let out = tokio::time::timeout(DEADLINE, cmd.args(args).output())
        .await
        .expect("waypost ends within the deadline")
        .expect("waypost runs");
    Run {
        code: out.status.code().expect("an exit status, not a signal"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

/// `waypost ARGS --addr <cp>`.
async fn waypost(cp: &TestControlPlane, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--addr", &cp.url]);
    run_with(command(), &all).await
}

/// A control plane that has elected itself (just after start it may not lead yet, and then a
/// membership change answers `no_leader`).
async fn control_plane() -> TestControlPlane {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    waypost_control::testkit::eventually(DEADLINE, "the control plane leads", || async {
        let status: Value = reqwest::get(cp.at("/cluster"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (status["state"] == "leader").then_some(())
    })
    .await;
    cp
}

fn addresses(discovered: &Value) -> Vec<String> {
    let mut found: Vec<String> = discovered["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_owned())
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn register_then_discover_as_json_and_as_a_table() {
    let cp = control_plane().await;
    let registered = waypost(
        &cp,
        &[
            "register",
            "web",
            "http://127.0.0.1:8001",
            "--tag",
            "v2",
            "--meta",
            "zone=a",
            "--ttl",
            "10m",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    // The API's own answer: the RegisterResponse body.
    assert_eq!(registered["status"], "registered");
    assert_eq!(registered["instance"]["id"], "127.0.0.1:8001");
    assert_eq!(registered["instance"]["ttl_seconds"], 600);
    assert_eq!(registered["instance"]["metadata"]["zone"], "a");

    let found = waypost(&cp, &["discover", "web", "-o", "json"])
        .await
        .json();
    assert_eq!(found["service"], "web");
    assert_eq!(found["count"], 1);
    assert_eq!(addresses(&found), ["http://127.0.0.1:8001"]);
    assert_eq!(found["instances"][0]["tags"][0], "v2");
    // Not a terminal: JSON unless told otherwise. It is the API's own body (but for the
    // uptime, which moves on).
    let without_uptime = |mut v: Value| {
        v["instances"][0]
            .as_object_mut()
            .unwrap()
            .remove("uptime_seconds");
        v
    };
    let raw: Value = reqwest::get(cp.at("/discover/web"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let piped = waypost(&cp, &["discover", "web"]).await.json();
    assert_eq!(without_uptime(piped), without_uptime(raw.clone()));
    assert_eq!(without_uptime(found), without_uptime(raw));

    let table = waypost(&cp, &["discover", "web", "-o", "table"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{table:?}");
    assert!(lines[0].starts_with("ID  "), "{table:?}");
    for column in ["ADDRESS", "STATUS", "HEALTH", "TAGS", "METADATA"] {
        assert!(lines[0].contains(column), "{table:?}");
    }
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        [
            "127.0.0.1:8001",
            "http://127.0.0.1:8001",
            "up",
            "passing",
            "1",
            "v2"
        ]
    );
    // The header's columns start where the row's cells do.
    assert_eq!(lines[0].find("ADDRESS"), lines[1].find("http://"));

    let services = waypost(&cp, &["services", "-o", "json"]).await.json();
    assert_eq!(services["services"]["web"]["active_instances"], 1);
    let table = waypost(&cp, &["services", "-o", "table"]).await;
    assert!(
        table.stdout.lines().nth(1).unwrap().starts_with("web "),
        "{table:?}"
    );
    let empty = waypost(&cp, &["discover", "nobody", "-o", "table"]).await;
    assert!(
        empty.stdout.starts_with("no instances of nobody"),
        "{empty:?}"
    );
}

#[tokio::test]
async fn tags_and_metadata_filter() {
    let cp = control_plane().await;
    for (addr, tag, zone) in [("10.0.0.1:80", "v1", "a"), ("10.0.0.2:80", "v2", "b")] {
        let meta = format!("zone={zone}");
        let r = waypost(
            &cp,
            &["register", "api", addr, "--tag", tag, "--meta", &meta],
        )
        .await;
        assert_eq!(r.code, 0, "{r:?}");
    }
    let by = |args: &'static [&'static str]| {
        let cp = &cp;
        async move {
            let mut all = vec!["discover", "api", "-o", "json"];
            all.extend(args);
            addresses(&waypost(cp, &all).await.json())
        }
    };
    assert_eq!(by(&[]).await, ["10.0.0.1:80", "10.0.0.2:80"]);
    assert_eq!(by(&["--tag", "v2"]).await, ["10.0.0.2:80"]);
    assert_eq!(by(&["--meta", "zone=a"]).await, ["10.0.0.1:80"]);
    assert_eq!(
        by(&["--tag", "v2", "--meta", "zone=b"]).await,
        ["10.0.0.2:80"]
    );
    assert!(by(&["--tag", "v1", "--meta", "zone=b"]).await.is_empty());
    assert!(by(&["--tag", "v3"]).await.is_empty());
}

#[tokio::test]
async fn drain_and_undrain_show_in_discover_all_and_deregister_removes() {
    let cp = control_plane().await;
    assert_eq!(
        waypost(&cp, &["register", "web", "10.0.0.1:80", "--id", "w1"])
            .await
            .code,
        0
    );
    let drained = waypost(&cp, &["drain", "web", "w1", "-o", "json"])
        .await
        .json();
    assert_eq!(drained["status"], "draining");
    assert_eq!(drained["instance"]["status"], "draining");

    let up = waypost(&cp, &["discover", "web"]).await.json();
    assert_eq!(up["count"], 0);
    let all = waypost(&cp, &["discover", "web", "--all", "-o", "json"])
        .await
        .json();
    assert_eq!(all["count"], 1);
    assert_eq!(all["instances"][0]["status"], "draining");
    let table = waypost(&cp, &["discover", "web", "--all", "-o", "table"]).await;
    assert!(table.stdout.contains(" draining "), "{table:?}");
    // Why it is out.
    let why = waypost(&cp, &["explain", "web", "-o", "json"]).await.json();
    assert_eq!(why["included"], 0);
    assert_eq!(why["instances"][0]["reasons"][0]["code"], "draining");

    // By address as well as by id.
    let undrained = waypost(&cp, &["undrain", "web", "--address", "10.0.0.1:80"])
        .await
        .json();
    assert_eq!(undrained["status"], "up");
    assert_eq!(waypost(&cp, &["discover", "web"]).await.json()["count"], 1);

    let gone = waypost(&cp, &["deregister", "web", "w1", "-o", "json"])
        .await
        .json();
    assert_eq!(gone["status"], "deregistered");
    assert_eq!(
        waypost(&cp, &["discover", "web", "--all"]).await.json()["count"],
        0
    );
    waypost(&cp, &["deregister", "web", "w1"])
        .await
        .refused("instance_not_found");
}

#[tokio::test]
async fn heartbeat_and_check_report_and_refusals_exit_1_with_the_problem_code() {
    let cp = control_plane().await;
    let unknown = waypost(&cp, &["heartbeat", "web", "never-registered"]).await;
    unknown.refused("instance_not_found");
    assert!(unknown.stderr.contains("answered 404"), "{unknown:?}");
    waypost(&cp, &["register", "Not_A_Name", "10.0.0.1:80"])
        .await
        .refused("invalid_service_name");

    assert_eq!(
        waypost(&cp, &["register", "web", "10.0.0.1:80"]).await.code,
        0
    );
    let renewed = waypost(&cp, &["heartbeat", "web", "10.0.0.1:80", "-o", "json"])
        .await
        .json();
    assert_eq!(renewed["status"], "ok");
    let checked = waypost(
        &cp,
        &[
            "check",
            "web",
            "10.0.0.1:80",
            "--health",
            "critical",
            "--check-output",
            "GET /: 503",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(checked["health"], "critical");
    assert_eq!(checked["instance"]["health_output"], "GET /: 503");
    assert_eq!(waypost(&cp, &["discover", "web"]).await.json()["count"], 0);
}

#[tokio::test]
async fn bad_usage_exits_2() {
    let cp = control_plane().await;
    for args in [
        &["discover"][..],
        &["no-such-command"],
        &["register", "web"],
        &["discover", "web", "--meta", "no-equals-sign"],
        &["drain", "web"],
        &["drain", "web", "w1", "--address", "10.0.0.1:80"],
        &["register", "web", "10.0.0.1:80", "--wait-timeout", "5s"],
        &["register", "web", "10.0.0.1:80", "--wait", "soon"],
        &["discover", "web", "-o", "yaml"],
        &["completions", "tcsh"],
        &["check", "web", "w1", "--health", "sideways"],
    ] {
        let r = waypost(&cp, args).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
    }
    // An address that is not one is bad usage too, before any request.
    let r = run_with(command(), &["services", "--addr", "ftp://x"]).await;
    assert_eq!(r.code, 2, "{r:?}");
}

#[tokio::test]
async fn watch_prints_a_line_for_a_registration_made_after_it_started() {
    let cp = control_plane().await;
    for format in ["json", "table"] {
        let mut child = command()
            .args(["watch", "web", "--addr", &cp.url, "-o", format])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("waypost watch starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = async || {
            tokio::time::timeout(DEADLINE, lines.next_line())
                .await
                .expect("a line within the deadline")
                .expect("readable stdout")
                .expect("a line, not the end")
        };
        // The current state first (a snapshot), then the change.
        let first = next().await;
        let address = if format == "json" {
            "10.0.0.7:80"
        } else {
            "10.0.0.8:80"
        };
        assert_eq!(waypost(&cp, &["register", "web", address]).await.code, 0);
        let line = next().await;
        if format == "json" {
            let snapshot: Value = serde_json::from_str(&first).unwrap();
            assert_eq!(snapshot["type"], "snapshot");
            let change: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(change["type"], "upsert");
            assert_eq!(change["reason"], "registered");
            assert_eq!(change["instance"]["address"], address);
            assert!(change["revision"].as_u64() > snapshot["revision"].as_u64());
        } else {
            assert!(first.contains("snapshot"), "{first}");
            assert!(line.contains("registered"), "{line}");
            assert!(line.contains(&format!("web/{address}")), "{line}");
        }
        child.kill().await.expect("kill waypost watch");
    }
}

#[tokio::test]
async fn tokens_decide_what_the_cli_may_do() {
    const OPERATOR: &str = "op-secret-1";
    const READER: &str = "read-secret-2";
    let cp = TestControlPlane::in_memory(|c| {
        c.tokens = tokens(&[(OPERATOR, Role::Operator, &[]), (READER, Role::Read, &[])]);
    })
    .await;
    waypost(&cp, &["services"]).await.refused("unauthorized");
    waypost(&cp, &["register", "web", "10.0.0.1:80", "--token", READER])
        .await
        .refused("forbidden");
    // The token from the environment, as the SDK reads it.
    let mut cmd = command();
    cmd.env("WAYPOST_TOKEN", OPERATOR);
    let r = run_with(
        cmd,
        &[
            "register",
            "web",
            "10.0.0.1:80",
            "--addr",
            &cp.url,
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(r.json()["status"], "registered");
    let found = waypost(&cp, &["discover", "web", "--token", READER])
        .await
        .json();
    assert_eq!(found["count"], 1);
    waypost(
        &cp,
        &["policy", "set", "web", "--never-empty", "--token", READER],
    )
    .await
    .refused("forbidden");
}

#[tokio::test]
async fn addresses_fail_over_and_an_unreachable_control_plane_is_exit_1() {
    let cp = control_plane().await;
    // Nothing listens on port 1.
    let dead = "127.0.0.1:1";
    let r = run_with(
        command(),
        &["services", "--addr", dead, "--addr", &cp.url, "-o", "json"],
    )
    .await;
    assert_eq!(r.json()["total_services"], 0);
    // Comma-separated in WAYPOST_ADDR, a bare host:port meaning http.
    let mut cmd = command();
    cmd.env(
        "WAYPOST_ADDR",
        format!("{dead},{}", cp.url.trim_start_matches("http://")),
    );
    assert_eq!(
        run_with(cmd, &["services", "-o", "json"]).await.json()["revision"],
        0
    );

    let r = run_with(command(), &["services", "--addr", dead]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("waypost: cannot reach the control plane"),
        "{r:?}"
    );
    assert!(r.stderr.contains("127.0.0.1:1"), "{r:?}");
}

#[tokio::test]
async fn completions_print_a_script() {
    let r = run_with(command(), &["completions", "bash"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("_waypost()"), "{}", &r.stdout[..200]);
    assert!(
        r.stdout.contains("complete -F _waypost"),
        "a bash completion"
    );
    for sub in ["discover", "register", "cluster", "completions", "dev"] {
        assert!(r.stdout.contains(sub), "{sub}");
    }
    for shell in ["zsh", "fish"] {
        let r = run_with(command(), &["completions", shell]).await;
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains("waypost"), "{shell}");
    }
}

#[tokio::test]
async fn cluster_status_nodes_and_policies_against_a_single_node() {
    let cp = control_plane().await;
    let status = waypost(&cp, &["cluster", "status", "-o", "json"])
        .await
        .json();
    assert_eq!(status["state"], "leader");
    assert_eq!(status["leader"], status["node_id"]);
    assert_eq!(status["members"].as_array().unwrap().len(), 1);
    let table = waypost(&cp, &["cluster", "status", "-o", "table"]).await;
    assert!(
        table.stdout.contains("state:") && table.stdout.contains("leader"),
        "{table:?}"
    );
    // The last voter cannot leave.
    let me = status["node_id"].to_string();
    waypost(&cp, &["cluster", "remove-member", &me])
        .await
        .refused("membership_conflict");

    let nodes = waypost(&cp, &["nodes", "-o", "json"]).await.json();
    assert_eq!(nodes["count"], 0);

    let set = waypost(
        &cp,
        &[
            "policy",
            "set",
            "web",
            "--min-healthy-percent",
            "30",
            "--never-empty",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(set["policy"]["min_healthy_percent"], 30);
    assert_eq!(set["policy"]["never_empty"], true);
    let got = waypost(&cp, &["policy", "get", "web", "-o", "table"]).await;
    assert!(
        got.stdout
            .starts_with("web: min_healthy_percent=30,never_empty"),
        "{got:?}"
    );
    let deleted = waypost(&cp, &["policy", "delete", "web", "-o", "json"])
        .await
        .json();
    assert!(deleted.get("policy").is_none(), "{deleted}");
    let r = waypost(
        &cp,
        &["policy", "set", "web", "--min-healthy-percent", "101"],
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
}

#[tokio::test]
async fn writes_wait_for_the_sidecars_and_say_when_one_is_behind() {
    let cp = control_plane().await;
    // No sidecar reports here: waiting for every live one is over at once.
    let r = waypost(
        &cp,
        &[
            "register",
            "web",
            "10.0.0.1:80",
            "--wait",
            "propagated",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(r["propagation"]["complete"], true);
    // A named sidecar that never reports: the drain is done, the status says it is not
    // propagated.
    let r = waypost(
        &cp,
        &[
            "drain",
            "web",
            "10.0.0.1:80",
            "--wait",
            "propagated",
            "--wait-timeout",
            "200ms",
            "--node",
            "ghost",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(r.code, 3, "{r:?}");
    let answer: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(answer["status"], "draining");
    assert_eq!(answer["propagation"]["complete"], false);
    assert!(r.stderr.contains("ghost"), "{r:?}");
}

/// `waypost services | head -0`: a reader that has gone ends the command quietly, with status
/// 0, not with a panic's 101.
#[tokio::test]
async fn a_closed_stdout_ends_the_command_quietly() {
    let cp = control_plane().await;
    let mut cmd = command();
    cmd.args(["services", "-o", "json", "--addr", &cp.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("waypost runs");
    // Close the pipe's read end before the command writes.
    drop(child.stdout.take());
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("waypost ends within the deadline")
        .expect("waypost runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
