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

/// Text from a model or a server made safe to print: every control character except newline and tab — escape
/// sequences, carriage returns, backspaces, C1 controls — and the bidirectional overrides (which reorder what a
/// terminal shows) become visible escapes such as `\x1b` or `\u{202e}`. Files keep the exact text; only what goes
/// to the terminal passes through here.
#[must_use]
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if u32::from(c) < 0x80 {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (None where it cannot be read).
#[must_use]
pub fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn control_characters_from_a_model_are_escaped_for_the_terminal() {
        let hostile = "ok\x1b]0;pwned\x07 \x1b[2J\rover\u{9b}31m \u{202e}txt.exe\n\tnext";
        let safe = terminal_safe(hostile);
        assert_eq!(safe, "ok\\x1b]0;pwned\\x07 \\x1b[2J\\x0dover\\u{9b}31m \\u{202e}txt.exe\n\tnext");
        assert!(!safe.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        assert!(matches!(terminal_safe("plain text\n"), std::borrow::Cow::Borrowed(_)));
    }
}
