//! `waypost dev`: a whole single-host Waypost in one process, like `consul agent -dev`: an
//! in-memory control plane and a sidecar following it (DNS, admin, HTTP proxy, optional TCP
//! routes), each on the address its own configuration defaults to unless a flag says
//! otherwise. Every listener accepts port 0, and the start banner prints the addresses
//! actually bound.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use waypost_runtime::{CancellationToken, logging, signal};
use waypost_sidecar::{config::defaults as sidecar, proxy::tcp::TcpRoute};

// The defaults are the two components' own named defaults, so that each default address is
// written once, where that component declares it.
#[derive(Debug, clap::Args)]
pub(crate) struct Dev {
    /// Control-plane HTTP listener (port 0: any free port, as for every listener below).
    #[arg(long, default_value_t = waypost_control::config::defaults::LISTEN)]
    listen: SocketAddr,
    /// Control-plane xDS listener, for proxyless gRPC clients (`xds:///SERVICE`).
    #[arg(long, default_value_t = waypost_control::config::defaults::DEV_XDS_LISTEN)]
    xds_listen: SocketAddr,
    /// Sidecar DNS listener (UDP and TCP).
    #[arg(long, default_value_t = sidecar::DNS_LISTEN)]
    dns_listen: SocketAddr,
    /// Sidecar admin listener (/health, /ready, /metrics, /snapshot).
    #[arg(long, default_value_t = sidecar::ADMIN_LISTEN)]
    admin_listen: SocketAddr,
    /// Sidecar HTTP proxy listener.
    #[arg(long, default_value_t = sidecar::HTTP_LISTEN)]
    http_listen: SocketAddr,
    /// Sidecar TCP routes LISTEN=SERVICE, comma-separated [default: none].
    #[arg(long, value_delimiter = ',')]
    tcp: Vec<TcpRoute>,
    /// Keep the registry in this directory (default: in memory, gone at exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The DNS domain.
    #[arg(long, default_value = sidecar::DOMAIN)]
    domain: String,
}

fn control_defaults() -> waypost_control::Config {
    waypost_control::Config::from_layers(Default::default(), Default::default())
        .unwrap_or_else(|e| unreachable!("the control plane's defaults are valid: {e}"))
}

/// Runs until SIGINT or SIGTERM.
pub(crate) async fn main(dev: Dev) -> ExitCode {
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
    let mut control = control_defaults();
    control.listen = dev.listen;
    control.xds_listen = Some(dev.xds_listen);
    control.data_dir = dev.data_dir;
    let shutdown = CancellationToken::new();
    let control_plane = waypost_control::start(control, shutdown.child_token()).await?;
    let url = format!("http://{}", control_plane.addr);

    // Through the sidecar's own layering, so that the domain is parsed and checked as the
    // sidecar binary would.
    let settings = waypost_sidecar::config::Settings {
        control: Some(vec![url.clone()]),
        dns_listen: Some(dev.dns_listen),
        admin_listen: Some(dev.admin_listen),
        http_listen: Some(dev.http_listen),
        tcp: Some(dev.tcp),
        domain: Some(dev.domain),
        // One host: this sidecar runs every instance's health check.
        check_all: Some(true),
        ..Default::default()
    };
    let mut sidecar = waypost_sidecar::Config::from_layers(settings, Default::default())?;
    // Like the registry, the sidecar's snapshot lives only as long as the process.
    sidecar.data_dir = None;
    let domain = sidecar.domain.to_ascii();
    let routes = sidecar.tcp.clone();
    let sidecar_token = shutdown.child_token();
    let running = waypost_sidecar::start(sidecar, sidecar_token.clone()).await?;

    // Every address actually bound (not the flags: port 0 becomes a real port), one
    // `name: address` line each, for people and for the test that reads them.
    println!("waypost dev: serving");
    println!("  control plane: {url}");
    println!("  dashboard:     {url}/ui/");
    if let Some(xds) = control_plane.xds_addr {
        println!("  xDS (gRPC):    {xds}");
    }
    println!(
        "  DNS:           {} (udp and tcp, domain {domain})",
        running.dns_addr
    );
    println!("  sidecar admin: http://{}", running.admin_addr);
    println!("  HTTP proxy:    http://{}", running.http_addr);
    for (addr, route) in running.tcp_addrs.iter().zip(&routes) {
        println!("  TCP route:     {addr} (to {})", route.service);
    }
    println!("try:");
    println!(
        "  curl -X POST {url}/register -H 'content-type: application/json' -d '{{\"service\": \"web\", \"address\": \"127.0.0.1:8080\", \"ttl_seconds\": 600}}'"
    );
    println!("  curl {url}/discover/web");
    println!(
        "  dig @{} -p {} web.service.{} +short",
        running.dns_addr.ip(),
        running.dns_addr.port(),
        domain.trim_end_matches('.')
    );
    println!(
        "  curl -H 'host: web' http://{}/    # through the proxy to web's instance",
        running.http_addr
    );

    signal::shutdown().await;
    // The sidecar first (it follows the control plane), then the control plane.
    sidecar_token.cancel();
    let _ = running.join.await;
    shutdown.cancel();
    let _ = control_plane.join.await;
    Ok(())
}
