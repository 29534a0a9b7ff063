//! The subcommands, each a thin shell: parse (the flags come from [`crate::cli`]) → call the part of the tree that
//! does the work (`settings` + `runner`, `analysis`, `report`, `models`) → print and pick the exit code.

use std::process::ExitCode;

use anyhow::Result;
use clap::CommandFactory;

pub mod analyze;
pub mod models;
pub mod report;
pub mod run;
pub mod sweep;

/// Writes a completion script for `shell` to stdout.
///
/// # Errors
/// Never in practice; the signature matches the other commands.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut cmd, "parrot", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
