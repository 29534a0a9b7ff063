//! The flags of `parrot report`.

use std::path::PathBuf;

use clap::Args;

/// Arguments of `parrot report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run folders to compare; each is one run set (a model pair × sampler × backend). A folder may hold any
    /// transcripts `parrot analyze` reads: parrot's `.jsonl`, the original tool's `.log`, chat JSON/JSONL,
    /// ShareGPT. Every sub-folder that holds transcripts is a run set of its own (so a `parrot sweep` folder
    /// gives one per cell); a single transcript file is a run set of one.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub run_dirs: Vec<PathBuf>,
    /// Folder to write the report into (`DIR/index.html`); created when missing.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the summary charts as PNG files in `DIR/png/` (for slides and terminals).
    #[arg(long)]
    pub png: bool,
    /// Open the report in the default browser when it is written (best effort).
    #[arg(long)]
    pub open: bool,
    /// Show the conversations in full inside `index.html` when there are at most this many; with more, each
    /// conversation gets a page of its own in `DIR/conversations/`, so the index stays quick to open.
    #[arg(long, value_name = "N", default_value_t = crate::report::INLINE_MAX)]
    pub inline_max: usize,
    /// Do not save `analysis.json` beside the run folders that had to be analyzed (as `parrot analyze` does, so
    /// that the next report reuses it).
    #[arg(long)]
    pub no_save: bool,
    /// The run set the others are tested against (Fisher's exact and log-rank, Holm-adjusted): one of the
    /// RUN_DIRs as given. Default: the first.
    #[arg(long, value_name = "RUN_DIR")]
    pub baseline: Option<PathBuf>,
}
