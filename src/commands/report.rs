//! `parrot report` (being built: see its issue).

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use crate::cli::GlobalArgs;

/// Arguments of `parrot report`.
#[derive(Debug, Args)]
pub struct ReportArgs {}

/// Runs `parrot report`.
///
/// # Errors
/// Always, until the command is built.
pub fn run(_global: &GlobalArgs, _args: ReportArgs) -> Result<ExitCode> {
    bail!("parrot report is not built yet")
}
