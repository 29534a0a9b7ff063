//! `parrot models` (being built: see its issue).

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use crate::cli::GlobalArgs;

/// Arguments of `parrot models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {}

/// Runs `parrot models`.
///
/// # Errors
/// Always, until the command is built.
pub fn run(_global: &GlobalArgs, _args: ModelsArgs) -> Result<ExitCode> {
    bail!("parrot models is not built yet")
}
