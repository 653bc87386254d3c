//! A caller that finds the echo service through Waypost and calls it, and keeps working as
//! instances come and go: it picks from a [`Resolver`] (a local cache fed by the change
//! stream), and a request that fails to connect is tried once more on another instance.
//!
//! ```text
//! cargo run --release -p waypost-examples --bin caller -- --control http://127.0.0.1:9000 --count 20
//! ```
//!
//! Stops after `--count` requests or on Ctrl-C, prints a summary, and exits non-zero if any
//! request failed.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use clap::Parser;
use waypost_client::{Balance, Client, Resolver, shutdown_signal};

/// Calls the echo service, round robin over its instances.
#[derive(Debug, Parser)]
struct Args {
    /// Control-plane URL; repeat for fail-over.
    #[arg(long, env = "WAYPOST_CONTROL", default_value = "http://127.0.0.1:9000")]
    control: Vec<String>,
    /// Service to call.
    #[arg(long, default_value = "echo")]
    service: String,
    /// How many requests (1 to 100000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// Pause between requests, as `500ms` or `2s`.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Attempts per request (other instances after the first), 1 to 10.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    attempts: u32,
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = Args::parse();
    let stop = shutdown_signal();
    let mut builder = Client::builder().user_agent("waypost-caller-example");
    for url in &args.control {
        builder = builder.endpoint(url);
    }
    let client = builder.build()?;
    let resolver = Resolver::new(&client, [args.service.as_str()], Balance::RoundRobin);
    if tokio::time::timeout(Duration::from_secs(10), resolver.ready())
        .await
        .is_err()
    {
        eprintln!("caller: no answer from the control plane within 10 s");
        return Ok(ExitCode::FAILURE);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;

    let mut by_instance: BTreeMap<String, u32> = BTreeMap::new();
    let (mut ok, mut failed, mut retried) = (0u32, 0u32, 0u32);
    tokio::pin!(stop);
    for n in 1..=args.count {
        match call(&http, &resolver, &args, n).await {
            Ok((instance, attempts)) => {
                ok += 1;
                retried += attempts - 1;
                println!("caller: #{n} answered by {instance}");
                *by_instance.entry(instance).or_default() += 1;
            }
            Err(err) => {
                failed += 1;
                println!("caller: #{n} failed: {err}");
            }
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(args.interval) => {}
        }
    }
    let spread: Vec<String> = by_instance
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "caller: {} requests, {ok} ok, {failed} failed, {retried} retried; answered by: {}",
        ok + failed,
        spread.join(", ")
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One request, on up to `attempts` instances; returns who answered and how many tries it took.
async fn call(
    http: &reqwest::Client,
    resolver: &Resolver,
    args: &Args,
    n: u32,
) -> Result<(String, u32), String> {
    let mut last = String::from("no instance is registered");
    for attempt in 1..=args.attempts {
        let Some(instance) = resolver.pick(&args.service) else {
            break;
        };
        let host = if instance.host.contains(':') {
            format!("[{}]", instance.host)
        } else {
            instance.host.clone()
        };
        let url = format!("http://{host}:{}/hello/{n}", instance.port);
        match http.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
                let who = body["instance"].as_str().unwrap_or("?").to_owned();
                return Ok((who, attempt));
            }
            Ok(response) => last = format!("{url} answered {}", response.status()),
            Err(err) => last = format!("{url}: {err}"),
        }
    }
    Err(last)
}
