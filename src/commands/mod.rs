//! The I/O shells around the pure core: one module per subcommand. Only these (and `output`) touch files,
//! sockets and the terminal.

use std::process::ExitCode;

use anyhow::Result;
use clap::CommandFactory;

pub mod analyze;
pub mod engines;
pub mod models;
pub mod report;
pub mod run;
pub mod session;
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
