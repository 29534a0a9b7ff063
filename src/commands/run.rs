//! `parrot run`: flags → settings ([`crate::settings`]) → the runner ([`crate::runner`]) → an exit code. With
//! `--resume DIR`, the command recorded in the folder (a run or a whole sweep) is resolved instead.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{GlobalArgs, RunArgs};
use crate::runner;
use crate::settings::{self, Console, Invocation, Plan};

/// Runs `parrot run`.
///
/// # Errors
/// Bad settings, unreadable models or an unwritable or busy output folder, before anything is generated.
pub fn run(global: &GlobalArgs, args: &RunArgs) -> Result<ExitCode> {
    let console = Console::new(global);
    let outcome = match &args.resume {
        Some(dir) => match settings::resume(dir)? {
            Plan::Run(plan) => runner::run(&console, &plan)?,
            Plan::Sweep(plan) => runner::sweep(&console, &plan)?,
        },
        None => runner::run(&console, &settings::run(args, Invocation::current())?)?,
    };
    Ok(outcome.exit_code())
}
