//! `parrot sweep`: flags → a validated grid of cells ([`crate::settings::sweep`]) → the runner, one run folder per
//! cell, ready for `parrot report DIR/*`.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{GlobalArgs, SweepArgs};
use crate::runner;
use crate::settings::{self, Console, Invocation};

/// Runs `parrot sweep`.
///
/// # Errors
/// A bad grid key or value (naming the key and the valid ones), or anything `run` refuses.
pub fn run(global: &GlobalArgs, args: &SweepArgs) -> Result<ExitCode> {
    let plan = settings::sweep(args, Invocation::current())?;
    Ok(runner::sweep(&Console::new(global), &plan)?.exit_code())
}
