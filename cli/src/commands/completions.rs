//! `waypost completions bash|zsh|fish`: a completion script on stdout (clap_complete).

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub(crate) struct Completions {
    /// The shell.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    shell: String,
}

pub(super) fn run(c: &Completions) -> ExitCode {
    let shell = match c.shell.as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    let mut command = crate::Cli::command();
    clap_complete::generate(shell, &mut command, "waypost", &mut std::io::stdout());
    ExitCode::SUCCESS
}
