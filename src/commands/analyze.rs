//! `parrot analyze` (being built: see its issue).

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use crate::cli::GlobalArgs;

/// Arguments of `parrot analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {}

/// Runs `parrot analyze`.
///
/// # Errors
/// Always, until the command is built.
pub fn run(_global: &GlobalArgs, _args: AnalyzeArgs) -> Result<ExitCode> {
    bail!("parrot analyze is not built yet")
}
