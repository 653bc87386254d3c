//! `waypost-control`: parse the config, install logging, serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use waypost_control::{Config, config::Command};
use waypost_runtime::{CancellationToken, config::EXIT_BAD_CONFIG, logging, signal};

#[tokio::main]
async fn main() -> ExitCode {
    let (config, command) = match Config::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("waypost-control: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
    };
    if let Some(Command::Openapi { out }) = command {
        let doc = waypost_control::api::openapi_pretty();
        return match out {
            Some(path) => match std::fs::write(&path, doc) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("waypost-control: cannot write {}: {err}", path.display());
                    ExitCode::FAILURE
                }
            },
            None => {
                print!("{doc}");
                ExitCode::SUCCESS
            }
        };
    }
    if let Some(Command::HashToken) = command {
        // From standard input, so the token stays out of shell history and `ps`.
        let mut line = String::new();
        return match std::io::stdin().read_line(&mut line) {
            Ok(_) if !line.trim_end_matches(['\r', '\n']).is_empty() => {
                println!(
                    "{}",
                    waypost_control::auth::hash_token(line.trim_end_matches(['\r', '\n']))
                );
                ExitCode::SUCCESS
            }
            Ok(_) => {
                eprintln!("waypost-control: give the token on standard input");
                ExitCode::FAILURE
            }
            Err(err) => {
                eprintln!("waypost-control: cannot read standard input: {err}");
                ExitCode::FAILURE
            }
        };
    }
    logging::init(config.log_format);
    let shutdown = CancellationToken::new();
    let running = match waypost_control::start(config, shutdown.clone()).await {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(%err, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        () = signal::shutdown() => shutdown.cancel(),
        _ = shutdown.cancelled() => {}
    }
    if let Err(err) = running.join.await {
        tracing::error!(%err, "shutdown failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
