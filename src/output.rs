//! The one place that decides how parrot talks to the terminal: logging filters, colors, progress bars (hidden
//! when stderr is not a terminal) and quiet mode. Data goes to stdout; progress and logs go to stderr.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget};
use tracing_subscriber::EnvFilter;

/// Sets up `tracing`: `warn,parrot=info` by default is too chatty for a CLI, so the default is `warn`; `-v` adds
/// parrot's own info, `-vv` debug (and llama.cpp's log, see the llama backend). `RUST_LOG` overrides all.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        // hf-hub logs every failed retry as an error; parrot reports the outcome itself.
        0 => "warn,hf_hub=off",
        1 => "warn,hf_hub=warn,parrot=info",
        _ => "info,parrot=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Whether to color text written to stdout.
#[must_use]
pub fn stdout_color(no_color: bool) -> bool {
    !no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// A progress bar on stderr, or a hidden one when stderr is not a terminal or output is quiet.
#[must_use]
pub fn progress_bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (None where it cannot be read).
#[must_use]
pub fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
