//! `waypost-sidecar`: parse the config, install logging, serve DNS until SIGINT/SIGTERM.

use std::process::ExitCode;

use waypost_runtime::{CancellationToken, config::EXIT_BAD_CONFIG, logging, signal};
use waypost_sidecar::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load(std::env::args_os()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("waypost-sidecar: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
    };
    logging::init(config.log_format);
    let shutdown = CancellationToken::new();
    let running = match waypost_sidecar::start(config, shutdown.clone()).await {
        Ok(running) => running,
        Err(err) => {
            tracing::error!(%err, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    signal::shutdown().await;
    shutdown.cancel();
    if let Err(err) = running.join.await {
        tracing::error!(%err, "shutdown failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
