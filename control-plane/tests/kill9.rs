//! A real `waypost-control` process killed with SIGKILL keeps every acknowledged write.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use common::*;
use serde_json::{Value, json};

struct Process {
    child: Child,
    url: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on 127.0.0.1:0 and reads the bound address from its `listening` log line.
fn spawn(data_dir: &Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_waypost-control"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(data_dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start waypost-control");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("waypost-control exited before listening")
            .expect("read stderr");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["message"] == "listening" {
            break v["http"].as_str().expect("http field").to_owned();
        }
    };
    // Keep draining stderr so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Process {
        child,
        url: format!("http://{addr}"),
    }
}

async fn post_json(p: &Process, path: &str, body: Value) -> (u16, Value) {
    let res = client()
        .post(format!("{}{path}", p.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

async fn get_json(p: &Process, path: &str) -> Value {
    client()
        .get(format!("{}{path}", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path());
    // Concurrent registrations (group commits), a deregistration and a drain.
    let mut tasks = Vec::new();
    for i in 0..200u16 {
        let url = p.url.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"service": format!("svc-{}", i % 7), "address": format!("10.1.0.{}:{}", i % 250, 8000 + i),
                              "tags": ["t"], "metadata": {"i": i.to_string()}});
            let res = client().post(format!("{url}/register")).json(&body).send().await.unwrap();
            assert_eq!(res.status(), 201);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        post_json(
            &p,
            "/deregister",
            json!({"service": "svc-0", "address": "10.1.0.0:8000"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        post_json(
            &p,
            "/drain",
            json!({"service": "svc-1", "address": "10.1.0.1:8001"})
        )
        .await
        .0,
        200
    );
    let before = get_json(&p, "/services").await;
    let health = get_json(&p, "/health").await;
    assert_eq!(health["store"], "durable");

    let mut p = p;
    p.child.kill().expect("SIGKILL");
    p.child.wait().unwrap();
    drop(p);

    let p = spawn(dir.path());
    let after = get_json(&p, "/services").await;
    assert_eq!(after["services"], before["services"]);
    assert_eq!(after["total_services"], 7);
    let restarted = get_json(&p, "/health").await;
    assert_eq!(
        restarted["revision"], health["revision"],
        "revision restored"
    );
    assert_eq!(restarted["epoch"], health["epoch"], "same history");
    assert_eq!(restarted["instances"], 199);
    let svc1 = get_json(&p, "/discover/svc-1?healthy=false").await;
    let drained = svc1["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "10.1.0.1:8001")
        .expect("drained instance kept");
    assert_eq!(drained["status"], "draining");
    assert_eq!(drained["metadata"]["i"], "1");
    // Revisions continue from where they were.
    let (status, reg) = post_json(&p, "/register", seed("svc-9", 1)).await;
    assert_eq!(status, 201);
    assert_eq!(
        reg["revision"].as_u64(),
        Some(health["revision"].as_u64().unwrap() + 1)
    );
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path());
    assert_eq!(post_json(&p, "/register", seed("web", 1)).await.0, 201);
    // An open watch stream must not hold shutdown up.
    let _watch = client()
        .get(format!("{}/watch", p.url))
        .send()
        .await
        .unwrap();
    let pid = p.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + DEADLINE;
    let code = loop {
        if let Some(code) = p.child.try_wait().unwrap() {
            break code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit within {DEADLINE:?} of SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(code.success(), "exit status {code}");
    let p2 = spawn(dir.path());
    assert_eq!(get_json(&p2, "/services").await["total_services"], 1);
    drop(p);
}
