//! An echo service that registers itself with Waypost, stays registered while it runs, and
//! deregisters on Ctrl-C (or SIGTERM) before it stops serving.
//!
//! ```text
//! cargo run --release -p waypost-examples --bin echo -- --control http://127.0.0.1:9000
//! ```
//!
//! Every request is answered with JSON naming the instance, so a caller can see who answered.

use std::{net::SocketAddr, time::Duration};

use axum::{Json, Router, extract::State, http::Method, http::Uri};
use clap::Parser;
use serde_json::{Value, json};
use waypost_client::{Client, model::RegisterRequest, shutdown_signal};

/// Echo service registered in Waypost.
#[derive(Debug, Parser)]
struct Args {
    /// Control-plane URL; repeat for fail-over.
    #[arg(long, env = "WAYPOST_CONTROL", default_value = "http://127.0.0.1:9000")]
    control: Vec<String>,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Service name to register under.
    #[arg(long, default_value = "echo")]
    service: String,
    /// Seconds without a heartbeat before the control plane expires this instance.
    #[arg(long)]
    ttl: Option<u32>,
    /// Tags to register with (repeatable).
    #[arg(long)]
    tag: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;

    let mut builder = Client::builder().user_agent("waypost-echo-example");
    for url in &args.control {
        builder = builder.endpoint(url);
    }
    let client = builder.build()?;
    let request = RegisterRequest {
        ttl_seconds: args.ttl,
        tags: args.tag.clone(),
        ..RegisterRequest::new(&args.service, format!("http://{addr}"))
    };
    // Listen for Ctrl-C / SIGTERM from here on, so a signal during start-up is not lost.
    let stop_signal = shutdown_signal();
    let registration = client.register(request).await?;
    let id = registration.id().to_owned();
    println!(
        "echo: listening on http://{addr}, registered as {}/{id}",
        args.service
    );

    // Report the registration's state changes (retrying, lost, registered again).
    let mut states = registration.watch_state();
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let state = states.borrow_and_update().clone();
            println!("echo: registration is now {state:?}");
        }
    });

    let app = Router::new().fallback(echo).with_state(id.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    stop_signal.await;
    // Deregister first, so callers stop choosing this instance, then finish what is in flight.
    match registration.deregister().await {
        Ok(_) => println!("echo: deregistered {}/{id}", args.service),
        Err(err) => eprintln!("echo: could not deregister ({err}); it will expire instead"),
    }
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => eprintln!("echo: server error: {err}"),
        Ok(Err(err)) => eprintln!("echo: server task failed: {err}"),
        Err(_) => eprintln!("echo: in-flight requests did not finish within 5 s"),
    }
    println!("echo: stopped");
    Ok(())
}

async fn echo(State(id): State<String>, method: Method, uri: Uri, body: String) -> Json<Value> {
    Json(json!({
        "instance": id,
        "method": method.as_str(),
        "path": uri.path(),
        "body": body,
    }))
}
