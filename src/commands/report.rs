//! `parrot report`: the shell around `report`. [`report::files::read_run_sets`] reads the run folders (through
//! the analysis folder pass, reusing fresh saved analyses), [`crate::report::render`] renders the page,
//! [`report::files::write_report`] writes `DIR/index.html` (and `DIR/png/*.png` with `--png`); this file prints
//! what happened and starts the browser with `--open`.
//!
//! An unreadable file never stops the report: it is stated on the page and on stderr, and only the exit code (1)
//! says that something was left out. A run folder that does not exist or holds no readable conversation is a
//! mistake on the command line: one line naming it, exit 2, nothing written (an empty page would look like a
//! result).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::cli::{GlobalArgs, ReportArgs};
use crate::report::{self, files};

/// Runs `parrot report`.
///
/// # Errors
/// When a run set is missing or empty, or the output folder or the page cannot be written. Unreadable inputs are not errors: they are reported
/// and make the exit code 1.
pub fn run(global: &GlobalArgs, args: ReportArgs) -> Result<ExitCode> {
    if let Some(missing) = args.run_dirs.iter().find(|p| !p.exists()) {
        bail!("run set '{}': no such file or folder; pass run folders written by `parrot run`", missing.display());
    }
    let baseline = match &args.baseline {
        None => 0,
        Some(b) => match args.run_dirs.iter().position(|d| d == b) {
            Some(i) => i,
            None => bail!("--baseline '{}' is not one of the RUN_DIRs given; pass one of them as given", b.display()),
        },
    };
    let (sets, warnings) = files::read_run_sets(&args.run_dirs, !args.no_save);
    if let Some(empty) = sets.iter().find(|s| s.items.is_empty()) {
        let why = empty.problems.first().map_or(String::new(), |p| format!(" ({}: {})", p.path, p.error));
        bail!("run set '{}' holds no readable conversation{why}; pass run folders written by `parrot run`", empty.dir);
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let problems = report::problems(&sets);
    for p in &problems {
        eprintln!("warning: {}: {}", p.path, p.error);
    }
    let options = report::Options {
        generated: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        inline_max: args.inline_max,
        // Each RUN_DIR is one run set unless a folder holds several; then the first stays the baseline.
        baseline: if sets.len() == args.run_dirs.len() { baseline } else { 0 },
    };
    let rendered = report::render(&sets, &options)?;
    let index = files::write_report(&args.out, &rendered, args.png.then_some((sets.as_slice(), options.baseline)))?;
    if !global.quiet {
        let total: usize = sets.iter().map(|s| s.items.len()).sum();
        eprintln!(
            "report: {} run set{}, {total} conversation{}{}",
            sets.len(),
            if sets.len() == 1 { "" } else { "s" },
            if total == 1 { "" } else { "s" },
            if problems.is_empty() {
                String::new()
            } else {
                format!(", {} problem(s) listed on the page", problems.len())
            }
        );
    }
    println!("{}", index.display());
    if args.open {
        open_in_browser(&index);
    }
    Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Starts the platform's opener without waiting for it; a failure is only a warning.
fn open_in_browser(path: &Path) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let result = if cfg!(windows) {
        std::process::Command::new("cmd").arg("/C").arg("start").arg("").arg(path).spawn()
    } else {
        std::process::Command::new(opener).arg(path).spawn()
    };
    if let Err(e) = result {
        eprintln!("warning: could not open the report in a browser ({opener}: {e}); open {} yourself", path.display());
    }
}
