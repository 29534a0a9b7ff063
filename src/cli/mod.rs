//! The command line, declared with clap derive: every subcommand's flags, and nothing that acts on them. Stage one
//! of two: flags are only checked here (types, ranges); [`crate::settings`] resolves them with the config file
//! into validated settings, and no clap type travels past it. `commands` imports from here, never the reverse.
//! Doc comments here are the `--help` text.

mod analyze;
mod models;
mod report;
mod run;
pub use analyze::AnalyzeArgs;
pub use models::{ModelsArgs, ModelsCommand};
pub use report::ReportArgs;
pub use run::{BackendArgs, BackendKind, RunArgs, SweepArgs};

use clap::{Args, Parser, Subcommand};

/// Make two LLMs talk to each other for hundreds of turns, then measure how and when the conversation breaks down.
#[derive(Debug, Parser)]
#[command(name = "parrot", version, long_version = crate::LONG_VERSION, propagate_version = true)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
    /// Options shared by every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Options shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Print more diagnostics to stderr: `-v` for parrot's own, `-vv` to include llama.cpp's log. `RUST_LOG`
    /// overrides the filter.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print no streamed text and no progress, only errors and final results.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Never color the output, even on a terminal (the `NO_COLOR` environment variable does the same).
    #[arg(long, global = true)]
    pub no_color: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate conversations between an assistant model and a user model, one JSONL transcript each.
    Run(Box<RunArgs>),
    /// Generate conversations for every cell of a grid of settings, one run folder per cell.
    Sweep(Box<SweepArgs>),
    /// Find loops and breaks in transcripts (parrot's own, the original tool's logs, chat JSON, ShareGPT).
    Analyze(AnalyzeArgs),
    /// Render one offline HTML page that compares run folders.
    Report(ReportArgs),
    /// List, fetch and locate models of the registry (`models.toml`).
    Models(ModelsArgs),
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell to write completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
