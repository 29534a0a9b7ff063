//! `parrot run` (being built).

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use crate::cli::GlobalArgs;

/// Arguments of `parrot run`.
#[derive(Debug, Args)]
pub struct RunArgs {}

/// Runs `parrot run`.
///
/// # Errors
/// Always, until built.
pub fn run(_global: &GlobalArgs, _args: RunArgs) -> Result<ExitCode> {
    bail!("parrot run is not built yet")
}
