//! `waypost`: the operator's command. Today it has one subcommand, `waypost dev`, which brings
//! up a whole single-host Waypost in one process, like `consul agent -dev`: an in-memory
//! control plane on 127.0.0.1:9000 and a sidecar following it, answering DNS on 127.0.0.1:8600
//! (admin on 127.0.0.1:9100). Register with curl, then `dig @127.0.0.1 -p 8600`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use waypost_runtime::{CancellationToken, logging, signal};

/// Waypost: service registration and discovery.
#[derive(Debug, Parser)]
#[command(name = "waypost", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a control plane and a sidecar together on this host, with embedded defaults.
    Dev(Dev),
}

#[derive(Debug, clap::Args)]
struct Dev {
    /// Control-plane HTTP listener.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Sidecar DNS listener (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:8600")]
    dns_listen: SocketAddr,
    /// Sidecar admin listener.
    #[arg(long, default_value = "127.0.0.1:9100")]
    admin_listen: SocketAddr,
    /// Keep the registry in this directory (default: in memory, gone at exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The DNS domain.
    #[arg(long, default_value = "waypost.")]
    domain: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Command::Dev(dev) = Cli::parse().command;
    logging::init(logging::LogFormat::Text);
    match run(dev).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("waypost dev: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(dev: Dev) -> Result<(), Box<dyn std::error::Error>> {
    let mut control = waypost_control::Config::from_layers(Default::default(), Default::default())?;
    control.listen = dev.listen;
    control.data_dir = dev.data_dir;
    let shutdown = CancellationToken::new();
    let control_plane = waypost_control::start(control, shutdown.child_token()).await?;
    let url = format!("http://{}", control_plane.addr);

    let mut sidecar = waypost_sidecar::Config::from_layers(Default::default(), Default::default())?;
    sidecar.control = vec![url.clone()];
    sidecar.dns_listen = dev.dns_listen;
    sidecar.admin_listen = dev.admin_listen;
    sidecar.data_dir = None;
    // One host: this sidecar runs every instance's health check.
    sidecar.checks.check_all = true;
    let mut domain = hickory_proto::rr::Name::from_ascii(dev.domain.to_ascii_lowercase())?;
    domain.set_fqdn(true);
    sidecar.domain = domain;
    let sidecar_token = shutdown.child_token();
    let running = waypost_sidecar::start(sidecar, sidecar_token.clone()).await?;

    // One stable line that people (and the test) read.
    println!(
        "waypost dev: control plane {url}, DNS {dns} (udp+tcp), sidecar admin http://{admin}",
        dns = running.dns_addr,
        admin = running.admin_addr
    );
    println!(
        "try: curl -X POST {url}/register -H 'content-type: application/json' -d '{{\"service\": \"web\", \"address\": \"127.0.0.1:8080\"}}'"
    );
    println!(
        "     dig @{} -p {} web.service.{} +short",
        running.dns_addr.ip(),
        running.dns_addr.port(),
        dev.domain.trim_end_matches('.')
    );

    signal::shutdown().await;
    // The sidecar first (it follows the control plane), then the control plane.
    sidecar_token.cancel();
    let _ = running.join.await;
    shutdown.cancel();
    let _ = control_plane.join.await;
    Ok(())
}
