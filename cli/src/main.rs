//! `waypost`: the operator's command. It talks to a control plane through the client SDK
//! (`waypost services`, `discover`, `register`, `drain`, `watch`, `cluster status`...; see
//! `commands`), and `waypost dev` runs a whole single-host Waypost in one process (`dev`).
//!
//! Exit status: 0 on success, 1 when the control plane refused (its problem's `code` and
//! `detail` go to stderr) or could not be reached, 2 on bad usage, 3 when a write that waited
//! for the sidecars (`--wait propagated`) is done but not every one applied it in time.

mod commands;
mod connect;
mod dev;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// Waypost: service registration and discovery.
#[derive(Debug, Parser)]
#[command(name = "waypost", version)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

#[tokio::main]
async fn main() -> ExitCode {
    commands::run(Cli::parse().command).await
}
