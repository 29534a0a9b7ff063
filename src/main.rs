//! The `parrot` binary: parse the command line, set up logging, run one subcommand, report errors in one line.

use std::process::ExitCode;

use clap::Parser;
use parrot::cli::{Cli, Command};
use parrot::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    parrot::output::init_logging(cli.global.verbose);
    let result = match cli.command {
        Command::Run(args) => commands::run::run(&cli.global, &args),
        Command::Sweep(args) => commands::sweep::run(&cli.global, &args),
        Command::Analyze(args) => commands::analyze::run(&cli.global, args),
        Command::Report(args) => commands::report::run(&cli.global, args),
        Command::Models(args) => commands::models::run(&cli.global, args),
        Command::Completions { shell } => commands::completions(shell),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}
