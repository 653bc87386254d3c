//! `waypost-sidecar`: parse the config, build the runtime, install logging, serve until
//! SIGINT/SIGTERM.

use std::process::ExitCode;

use waypost_runtime::{CancellationToken, config::EXIT_BAD_CONFIG, logging, signal};
use waypost_sidecar::Config;

fn main() -> ExitCode {
    let config = match Config::load(std::env::args_os()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("waypost-sidecar: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
    };
    // With one worker, the current-thread scheduler: the multi-threaded one's work stealing and
    // cross-thread wake-ups cost a sidecar confined to one CPU without buying anything
    // (linkerd2-proxy makes the same choice). The work is the same either way.
    let runtime = if config.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.workers)
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(serve(config)),
        Err(err) => {
            eprintln!("waypost-sidecar: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    logging::init(config.log_format);
    // Every proxied connection is two descriptors (see waypost_runtime::fds).
    waypost_runtime::fds::raise_open_files();
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
