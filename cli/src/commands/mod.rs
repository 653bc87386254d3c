//! The subcommands, one module per group; each prints its answer as a table or as the API's
//! JSON (`crate::output`).

mod cluster;
mod completions;
mod discover;
mod instance;
mod nodes;
mod policy;
mod services;
mod watch;

use std::process::ExitCode;

use clap::Subcommand;

use crate::{connect::Common, output};

/// What a command that reached the control plane ends with.
type Outcome = Result<ExitCode, waypost_client::Error>;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List every service with its instance counts (GET /services).
    Services(Common),
    /// The instances of a service that take work, or all of them with --all
    /// (GET /discover/{service}).
    Discover(discover::Discover),
    /// Why each instance is or is not in `discover`'s answer (GET /discover/{service}/explain).
    Explain(discover::Discover),
    /// Register an instance once (POST /register).
    ///
    /// Nothing heartbeats it afterwards: it expires after its TTL (--ttl) unless
    /// `waypost heartbeat` (or the service itself) renews it.
    Register(instance::Register),
    /// Remove an instance now (POST /deregister).
    Deregister(instance::Change),
    /// Take an instance out of discovery, keeping it registered (POST /drain).
    Drain(instance::Change),
    /// Put a draining instance back into discovery (POST /drain with "draining": false).
    Undrain(instance::Change),
    /// Renew an instance's TTL (POST /heartbeat).
    Heartbeat(instance::Heartbeat),
    /// Report a health check's result for an instance (POST /check).
    Check(instance::Check),
    /// Print one line per change to a service (or to every service), until Ctrl-C (GET /watch).
    Watch(watch::Watch),
    /// The sidecars the control plane knows, with their applied revision and lag (GET /nodes).
    Nodes(Common),
    /// A service's protection policy (/services/{service}/policy).
    #[command(subcommand)]
    Policy(policy::Policy),
    /// The control planes' cluster: its status, and adding or removing members (/cluster).
    #[command(subcommand)]
    Cluster(cluster::Cluster),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions(completions::Completions),
    /// Run a control plane and a sidecar together on this host, with embedded defaults.
    Dev(crate::dev::Dev),
}

/// Runs `command` and gives the exit status.
pub(crate) async fn run(command: Command) -> ExitCode {
    let outcome = match command {
        Command::Dev(dev) => return crate::dev::main(dev).await,
        Command::Completions(c) => return completions::run(&c),
        Command::Services(common) => services::run(&common).await,
        Command::Nodes(common) => nodes::run(&common).await,
        Command::Discover(d) => discover::discover(&d).await,
        Command::Explain(d) => discover::explain(&d).await,
        Command::Register(r) => instance::register(&r).await,
        Command::Deregister(d) => instance::deregister(&d).await,
        Command::Drain(d) => instance::drain(&d, true).await,
        Command::Undrain(d) => instance::drain(&d, false).await,
        Command::Heartbeat(h) => instance::heartbeat(&h).await,
        Command::Check(c) => instance::check(&c).await,
        Command::Watch(w) => watch::run(&w).await,
        Command::Policy(p) => policy::run(&p).await,
        Command::Cluster(c) => cluster::run(&c).await,
    };
    outcome.unwrap_or_else(|err| output::failure(&err))
}

/// Success.
fn done() -> Outcome {
    Ok(ExitCode::SUCCESS)
}
