//! The echo and caller examples as real processes against a real control plane: echo
//! instances register themselves, the caller reaches them, and it keeps working while one
//! instance deregisters on SIGTERM and another starts.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use waypost_client::{Client, Filter};
use waypost_control::testkit::{TestControlPlane, eventually};

const DEADLINE: Duration = Duration::from_secs(15);

/// A child process whose stdout lines are collected as they come.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(bin: &str, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the example");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line contains `needle`; returns that line.
    async fn line_with(&self, needle: &str) -> String {
        eventually(DEADLINE, needle, || async {
            self.output().into_iter().find(|l| l.contains(needle))
        })
        .await
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exit_code(&mut self) -> i32 {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("exits within the deadline")
            .unwrap()
            .code()
            .expect("exited, not killed")
    }
}

/// Starts an echo instance and returns it with its instance id.
async fn echo(control: &str) -> (Proc, String) {
    let proc = Proc::spawn(env!("CARGO_BIN_EXE_echo"), &["--control", control]);
    let line = proc.line_with("registered as echo/").await;
    let id = line.rsplit('/').next().unwrap().to_owned();
    (proc, id)
}

async fn ids(client: &Client) -> Vec<String> {
    let found = client.discover("echo", &Filter::default()).await.unwrap();
    found
        .instances
        .iter()
        .map(|i| i.instance.id.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn the_caller_keeps_working_as_echo_instances_come_and_go() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let (mut a, id_a) = echo(&cp.url).await;
    let (_b, id_b) = echo(&cp.url).await;
    assert_eq!(ids(&client).await.len(), 2);

    // Bounded: at most 400 requests, 25 ms apart (10 s); stopped earlier with SIGINT below.
    let mut caller = Proc::spawn(
        env!("CARGO_BIN_EXE_caller"),
        &["--control", &cp.url, "--count", "400", "--interval", "25ms"],
    );
    caller.line_with(&format!("answered by {id_a}")).await;
    caller.line_with(&format!("answered by {id_b}")).await;

    // One instance leaves on SIGTERM: it deregisters (gone at once, not after its TTL).
    a.signal("-TERM");
    assert_eq!(a.exit_code().await, 0);
    // The line is read by the collecting task, which may run after `wait` returns: wait for it.
    a.line_with("deregistered").await;
    assert_eq!(ids(&client).await, vec![id_b.clone()]);

    // Another one arrives and the caller finds it without a restart.
    let (_c, id_c) = echo(&cp.url).await;
    caller.line_with(&format!("answered by {id_c}")).await;

    caller.signal("-INT");
    let code = caller.exit_code().await;
    let summary = caller.line_with("requests,").await;
    assert_eq!(code, 0, "{summary}");
    assert!(summary.contains(" 0 failed"), "{summary}");
}
