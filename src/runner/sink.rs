//! Where a running conversation's output goes: its transcript (every record written, flushed and fsynced before
//! the driver goes on), the terminal (streamed text, speaker-colored, unless quiet), the shared `--prompt-log`
//! file, and one summary line on stderr when it ends. Also the process-wide Ctrl-C flag.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anstyle::{AnsiColor, Style};
use anyhow::{anyhow, Context, Result};

use super::Outcome;
use crate::conversation::Sink;
use crate::transcript::{EndReason, Record, Speaker, Summary, TranscriptWriter, TurnRecord};

/// The `--prompt-log` file, opened once per job and shared by every conversation (and thread) that writes to it.
pub type PromptLog = Arc<Mutex<std::fs::File>>;

/// The process-wide Ctrl-C flag (installed on first use): the first Ctrl-C stops generation at the next token, a
/// second one exits at once (every transcript is valid at all times).
pub fn cancel_flag() -> &'static AtomicBool {
    static CANCEL: OnceLock<&'static AtomicBool> = OnceLock::new();
    CANCEL.get_or_init(|| {
        let flag: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nparrot: interrupted; finishing the transcripts (press Ctrl-C again to quit at once)");
        });
        flag
    })
}

/// Streams a conversation to stdout (unless quiet) and appends every message to its transcript.
pub struct ConsoleSink {
    writer: TranscriptWriter,
    prompt_log: Option<(PromptLog, u32)>,
    quiet: bool,
    color: bool,
    /// Tokens generated through this sink (for progress bars).
    pub tokens: u64,
    /// Messages written through this sink.
    pub messages: u32,
}

impl ConsoleSink {
    /// A sink writing to `writer`; with `prompt_log`, the prompts of conversation `conversation` go there too.
    #[must_use]
    pub fn new(
        writer: TranscriptWriter,
        prompt_log: Option<PromptLog>,
        conversation: u32,
        quiet: bool,
        color: bool,
    ) -> Self {
        ConsoleSink { writer, prompt_log: prompt_log.map(|f| (f, conversation)), quiet, color, tokens: 0, messages: 0 }
    }

    fn style(&self, speaker: Speaker) -> Style {
        if !self.color {
            return Style::new();
        }
        match speaker {
            Speaker::Assistant => Style::new().fg_color(Some(AnsiColor::Cyan.into())),
            Speaker::User => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            Speaker::System => Style::new().dimmed(),
        }
    }

    fn print(&self, speaker: Speaker, text: &str) {
        if self.quiet {
            return;
        }
        let style = self.style(speaker);
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{style}{}{style:#}", crate::output::terminal_safe(text));
        let _ = out.flush();
    }

    /// Writes the summary line.
    ///
    /// # Errors
    /// When the transcript cannot be written.
    pub fn finish(&mut self, summary: &Summary) -> Result<()> {
        self.writer.write(&Record::Summary(summary.clone()))
    }
}

impl Sink for ConsoleSink {
    fn prompt(&mut self, index: u32, speaker: Speaker, prompt: &str) -> Result<()> {
        if let Some((file, conversation)) = &self.prompt_log {
            let line =
                serde_json::json!({"conversation": conversation, "index": index, "speaker": speaker, "prompt": prompt});
            let mut file = file.lock().map_err(|_| anyhow!("the --prompt-log file's lock is poisoned"))?;
            file.write_all(format!("{line}\n").as_bytes()).context("could not write to the --prompt-log file")?;
        }
        Ok(())
    }
    fn turn_started(&mut self, speaker: Speaker, prefix: &str) {
        self.print(speaker, prefix);
    }
    fn piece(&mut self, speaker: Speaker, text: &str) {
        self.print(speaker, text);
    }
    fn turn(&mut self, record: &TurnRecord) -> Result<()> {
        if record.opening {
            self.print(record.speaker, &record.text);
        }
        self.print(record.speaker, "\n");
        self.tokens += u64::from(record.tokens);
        self.messages += 1;
        self.writer.write(&Record::Turn(record.clone()))
    }
}

/// Prints the one-line summary of a finished conversation on stderr and counts it into `outcome`.
pub fn report(path: &Path, summary: &Summary, outcome: &mut Outcome) {
    eprintln!(
        "{}: {} messages, {} tokens, ended by {}, assistant {:.1} tok/s, user {:.1} tok/s",
        path.display(),
        summary.messages,
        summary.total_tokens,
        serde_json::to_value(summary.stop_reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        summary.assistant.tokens_per_s(),
        summary.user.tokens_per_s()
    );
    match summary.stop_reason {
        EndReason::Interrupted => outcome.interrupted = true,
        EndReason::Error => {
            outcome.failures += 1;
            let error = crate::output::terminal_safe(summary.error.as_deref().unwrap_or_default()).into_owned();
            eprintln!("{}: error: {error}", path.display());
        }
        EndReason::Budget | EndReason::ContextFull => {}
    }
}
