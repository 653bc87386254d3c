//! `waypost-control`: parse the config, install logging, serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use waypost_control::{
    Config,
    config::{Action, Command},
};
use waypost_runtime::{CancellationToken, config::EXIT_BAD_CONFIG, logging, signal};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load(std::env::args_os()) {
        Ok(Action::Serve(config)) => *config,
        Ok(Action::Command(command)) => return run(command),
        Err(err) => {
            eprintln!("waypost-control: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
    };
    logging::init(config.log_format);
    let files = waypost_runtime::fds::raise_open_files();
    // Each connection (a `/watch` stream is one) takes a descriptor, and the store, the
    // listeners and the cluster's connections a few more.
    if let Some(now) = files.now
        && now < config.max_connections as u64 + 64
    {
        tracing::warn!(
            open_files = now,
            max_connections = config.max_connections,
            "the open-file limit is below --max-connections; raise the hard limit (LimitNOFILE=, ulimit -Hn)"
        );
    }
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

/// The subcommands that do not serve.
fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve => unreachable!("serving is not a separate command"),
        Command::Openapi { out } => {
            let doc = waypost_control::api::openapi_pretty();
            match out {
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
            }
        }
        Command::HashToken => {
            // From standard input, so the token stays out of shell history and `ps`. Trimmed
            // as the server trims the `Authorization` header, so the digest can match.
            let mut line = String::new();
            match std::io::stdin().read_line(&mut line) {
                Ok(_) if !line.trim().is_empty() => {
                    println!("{}", waypost_control::auth::hash_token(line.trim()));
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
            }
        }
    }
}
