//! The JSONL transcript: the one file format that `run` writes and `analyze`, `report` and `--resume` read.
//!
//! One file per conversation, one JSON object per line, each with a `"type"`:
//!
//! 1. a [`Header`] (format version, parrot version, the fully resolved config, both models, backend, seed);
//! 2. one [`TurnRecord`] per message — the opening messages of the config first (`"opening": true`), then every
//!    generated turn, appended and flushed as soon as the turn is complete;
//! 3. a [`Summary`] with totals once the conversation has ended (for any reason).
//!
//! Because every line is flushed on its own, a crash or Ctrl-C leaves a valid file that ends after the last
//! complete turn; a file without a summary (or with `"stop_reason": "interrupted"`) is unfinished and can be resumed.
//! The reader is lenient about a torn last line (it reports it) so that an interrupted write never makes the rest
//! of the file unreadable.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Value of [`Header::format`]: lets readers recognise a parrot transcript among other JSONL files.
pub const FORMAT_NAME: &str = "parrot-transcript";
/// Version of the transcript format written by this build. Readers accept this version and older ones.
pub const FORMAT_VERSION: u32 = 1;

/// Milliseconds, as a float.
pub type Millis = f64;

/// The longest line read from a transcript, or from any line-based file `analyze` reads (64 MiB): a line holds one
/// turn, and a turn is bounded by its token limit, so a longer line means a damaged or foreign file. The reader
/// stops at the bound instead of reading a 1 GiB line whole.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Why a line could not be read.
#[derive(Debug)]
pub enum LineError {
    /// The line is longer than [`MAX_LINE_BYTES`]; nothing past the bound was read.
    TooLong,
    /// The line is not valid UTF-8.
    NotUtf8(std::str::Utf8Error),
    /// Reading failed.
    Io(std::io::Error),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong => {
                write!(f, "longer than {} MiB, the most parrot reads of one line", MAX_LINE_BYTES >> 20)
            }
            LineError::NotUtf8(e) => write!(f, "not valid UTF-8: {e}"),
            LineError::Io(e) => write!(f, "could not be read: {e}"),
        }
    }
}

/// The lines of a reader, each at most `max` bytes (without the `\n`, and a `\r` before it), as text. Unlike
/// [`BufRead::lines`], a line longer than `max` is an error as soon as `max` bytes are read, so memory stays
/// bounded whatever the input; the iterator ends after a line too long or a read error.
pub struct CappedLines<R> {
    reader: R,
    max: usize,
    done: bool,
}

impl<R: BufRead> CappedLines<R> {
    /// Lines of `reader`, each at most `max` bytes.
    pub fn new(reader: R, max: usize) -> Self {
        CappedLines { reader, max, done: false }
    }
}

/// Appends one line of `reader` to `buf` as it is in the file (with its `\n`, when it has one), reading at most
/// `max` + 1 bytes. Returns how many bytes were appended (0 at the end), or [`LineError::TooLong`] when the line
/// (without its line ending) is longer than `max` bytes; then nothing past the bound was read.
///
/// # Errors
/// [`LineError::TooLong`], or [`LineError::Io`] when reading fails.
pub fn read_capped_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::result::Result<usize, LineError> {
    let start = buf.len();
    // `max` bytes of text, then "\r\n" at most.
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(2);
    let n = reader.take(limit).read_until(b'\n', buf).map_err(LineError::Io)?;
    let line = &buf[start..];
    let text = line.strip_suffix(b"\n").map_or(line, |l| l.strip_suffix(b"\r").unwrap_or(l));
    if text.len() > max {
        return Err(LineError::TooLong);
    }
    Ok(n)
}

impl<R: BufRead> Iterator for CappedLines<R> {
    type Item = std::result::Result<String, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        match read_capped_line(&mut self.reader, &mut buf, self.max) {
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
            Ok(0) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                // The line was read whole, so the next one can still be read.
                Some(String::from_utf8(buf).map_err(|e| LineError::NotUtf8(e.utf8_error())))
            }
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// A system prompt (only ever an opening message).
    System,
    /// The assistant role: the model with the full conversation in context.
    Assistant,
    /// The user role: the model that sees its own system prompt and a window of recent messages.
    User,
}

impl Speaker {
    /// The lowercase name used in transcripts and chat templates.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::System => "system",
            Speaker::Assistant => "assistant",
            Speaker::User => "user",
        }
    }
}

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model emitted an end-of-generation token.
    Eos,
    /// One of the configured stop strings appeared; the text is cut before it.
    StopString,
    /// The turn reached `turn_max_tokens` (or the remainder of the token budget).
    MaxTokens,
    /// The prompt plus the turn limit no longer fits the model's context.
    ContextFull,
    /// The backend failed; the conversation ends here.
    Error,
}

/// Why a whole conversation ended (recorded in the [`Summary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `total_tokens` was reached: the normal end.
    Budget,
    /// A prompt no longer fits a model's context (see [`StopReason::ContextFull`]).
    ContextFull,
    /// The backend failed (the message is in [`Summary::error`]).
    Error,
    /// The user pressed Ctrl-C; the file can be resumed.
    Interrupted,
}

/// Facts about one model, recorded so that results can be traced back to the exact file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Path of the GGUF file (or the URL of an HTTP engine).
    pub path: String,
    /// Size of the file in bytes (absent for HTTP engines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// `general.name` from the GGUF metadata, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `general.architecture` from the GGUF metadata (e.g. `llama`, `gemma3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Context size the model ran with, in tokens.
    pub n_ctx: u32,
    /// Where the chat template came from: `gguf`, or the `templates/` file that was used.
    pub chat_template_source: String,
}

/// The first line of every transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Transcript format version ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u32,
    /// Version of parrot that wrote the file.
    pub parrot_version: String,
    /// When the conversation started (RFC 3339, UTC, to the millisecond; older files: to the second).
    pub started: String,
    /// The fully resolved configuration, flags applied (see `config.rs` for the keys).
    pub config: serde_json::Value,
    /// The assistant model.
    pub assistant_model: ModelRecord,
    /// The user model.
    pub user_model: ModelRecord,
    /// Backend that generated the assistant turns (`llama` for in-process, `http:<flavor>` otherwise).
    pub backend: String,
    /// Backend that generated the user turns.
    pub user_backend: String,
    /// Seed of this conversation's samplers.
    pub seed: u32,
    /// Position of this conversation in its run (0 for the first of `-n N`).
    pub conversation_index: u32,
    /// The CPU code parrot's in-process engine ran ([`crate::CPU`]), e.g. `x86_64 native [avx2 avx512f …]` or
    /// `x86_64 default [llama.cpp fallback: …]`; absent in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
}

/// Timings of one generated turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Time spent evaluating the prompt tokens of this turn.
    pub prompt_ms: Millis,
    /// Time spent generating the turn's tokens.
    pub generation_ms: Millis,
    /// Generated tokens per second of generation time.
    pub tokens_per_s: f64,
}

/// One message of the conversation: an opening message from the config or a generated turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// Position in the conversation, counting the opening messages, from 0.
    pub index: u32,
    /// Who wrote it.
    pub speaker: Speaker,
    /// The full text as stored in the conversation, prefix included.
    pub text: String,
    /// The forced prefix the turn started with (`agent_prefix` or `user_prefix`); empty for opening messages.
    #[serde(default)]
    pub prefix: String,
    /// True for messages that came from the config's `conversation`, not from a model.
    #[serde(default)]
    pub opening: bool,
    /// Number of tokens generated for this turn (0 for opening messages).
    #[serde(default)]
    pub tokens: u32,
    /// Length of the whole prompt for this turn, in tokens.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Prompt tokens actually evaluated for this turn; the rest came from the KV cache.
    #[serde(default)]
    pub prompt_tokens_evaluated: u32,
    /// User turns only: how many of the oldest messages of the memory window were dropped to fit `n_ctx`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_messages: u32,
    /// Why the turn ended (absent for opening messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// The turn's token limit (the smaller of `turn_max_tokens` and what was left of the budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Budget consumed after this turn: `initial_tokens` plus all tokens generated so far.
    #[serde(default)]
    pub tokens_so_far: u64,
    /// Timings (absent for opening messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
    /// HTTP turns only: the endpoint that produced the turn, as `scheme://host:port` built from the parsed URL
    /// (never credentials, path or query). Absent in-process and in transcripts written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Totals for one speaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeakerTotals {
    /// Generated turns.
    pub turns: u32,
    /// Generated tokens.
    pub tokens: u64,
    /// Sum of the prompt lengths of all turns.
    pub prompt_tokens: u64,
    /// Prompt tokens actually evaluated (the rest came from the KV cache).
    pub prompt_tokens_evaluated: u64,
    /// Total prompt evaluation time.
    pub prompt_ms: Millis,
    /// Total generation time.
    pub generation_ms: Millis,
}

impl SpeakerTotals {
    /// Adds one generated turn.
    pub fn add(&mut self, turn: &TurnRecord) {
        self.turns += 1;
        self.tokens += u64::from(turn.tokens);
        self.prompt_tokens += u64::from(turn.prompt_tokens);
        self.prompt_tokens_evaluated += u64::from(turn.prompt_tokens_evaluated);
        if let Some(t) = turn.timings {
            self.prompt_ms += t.prompt_ms;
            self.generation_ms += t.generation_ms;
        }
    }

    /// Generated tokens per second of generation time (0 when nothing was generated).
    #[must_use]
    pub fn tokens_per_s(&self) -> f64 {
        if self.generation_ms > 0.0 {
            self.tokens as f64 * 1000.0 / self.generation_ms
        } else {
            0.0
        }
    }
}

/// The last line of a finished (or interrupted) conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Why the conversation ended.
    pub stop_reason: EndReason,
    /// The error message when `stop_reason` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Number of messages, opening messages included.
    pub messages: u32,
    /// `initial_tokens` plus every generated token: what the budget counts.
    pub total_tokens: u64,
    /// Wall time of the whole conversation, model loading excluded.
    pub wall_ms: Millis,
    /// Totals of the assistant's turns.
    pub assistant: SpeakerTotals,
    /// Totals of the user's turns.
    pub user: SpeakerTotals,
}

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    /// The first line.
    Header(Box<Header>),
    /// A message.
    Turn(TurnRecord),
    /// The last line.
    Summary(Summary),
}

/// A transcript read back from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The header line.
    pub header: Header,
    /// Every complete message line, in order.
    pub turns: Vec<TurnRecord>,
    /// The summary line, if the conversation ended.
    pub summary: Option<Summary>,
    /// A last line that could not be parsed (a write torn by a crash), with the parse error.
    pub torn_tail: Option<String>,
}

impl Transcript {
    /// True when the conversation ended normally and need not be resumed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        matches!(&self.summary, Some(s) if s.stop_reason != EndReason::Interrupted)
    }
}

/// Reads a transcript from any reader. `name` is used in error messages.
///
/// # Errors
/// When the first line is not a parrot header, or a line before the last one is not a valid record.
pub fn read_transcript<R: Read>(reader: R, name: &str) -> Result<Transcript> {
    let mut lines = CappedLines::new(BufReader::new(reader), MAX_LINE_BYTES).enumerate().peekable();
    let (_, first) = lines.next().with_context(|| format!("{name}: the file is empty"))?;
    let first = first.map_err(|e| anyhow::anyhow!("{name}: line 1 is {e}"))?;
    let header = match serde_json::from_str::<Record>(&first) {
        Ok(Record::Header(h)) if h.format == FORMAT_NAME => *h,
        Ok(_) => bail!("{name}: line 1 is not a parrot transcript header"),
        Err(e) => bail!("{name}: line 1 is not a parrot transcript header: {e}"),
    };
    if header.format_version > FORMAT_VERSION {
        bail!(
            "{name}: line 1: transcript format version {} is newer than this parrot understands ({FORMAT_VERSION}); upgrade parrot",
            header.format_version
        );
    }
    let mut out = Transcript { header, turns: Vec::new(), summary: None, torn_tail: None };
    while let Some((i, line)) = lines.next() {
        let is_last = lines.peek().is_none();
        let line = match line {
            Ok(l) => l,
            Err(e @ LineError::NotUtf8(_)) if is_last => {
                out.torn_tail = Some(e.to_string());
                break;
            }
            Err(e) => bail!("{name}: line {} is {e}", i + 1),
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(Record::Turn(t)) => {
                if out.summary.is_some() {
                    bail!("{name}: line {}: a turn after the summary", i + 1);
                }
                out.turns.push(t);
            }
            Ok(Record::Summary(s)) => out.summary = Some(s),
            Ok(Record::Header(_)) => bail!("{name}: line {}: a second header", i + 1),
            Err(e) if is_last => out.torn_tail = Some(e.to_string()),
            Err(e) => bail!("{name}: line {}: {e}", i + 1),
        }
    }
    Ok(out)
}

/// Reads a transcript file.
///
/// # Errors
/// When the file cannot be opened or is not a valid transcript.
pub fn read_transcript_file(path: &Path) -> Result<Transcript> {
    let file = File::open(path).with_context(|| format!("could not open transcript '{}'", path.display()))?;
    read_transcript(file, &path.display().to_string())
}

/// Appends records to a transcript file, flushing after every record so that the file is valid at all times, and
/// (unless switched off) fsyncing it so that every complete turn is on disk before the next one begins.
pub struct TranscriptWriter {
    path: PathBuf,
    out: BufWriter<File>,
    sync: bool,
}

impl TranscriptWriter {
    /// Creates (truncates) `path` and writes the header, fsynced (file and folder) before it returns.
    ///
    /// # Errors
    /// When the file cannot be created or written.
    pub fn create(path: &Path, header: &Header) -> Result<Self> {
        let file = File::create(path).with_context(|| {
            format!("could not create transcript '{}': check that the output folder is writable", path.display())
        })?;
        let mut w = TranscriptWriter { path: path.to_path_buf(), out: BufWriter::new(file), sync: true };
        w.write(&Record::Header(Box::new(header.clone())))?;
        crate::durable::sync_dir(path.parent().unwrap_or(Path::new(".")));
        Ok(w)
    }

    /// Reopens the transcript at `path`, whose content `bytes` was read as `old`, to continue it: the file keeps its
    /// header and complete turn
    /// lines byte for byte, and loses its summary (an `interrupted` or `error` one) and any torn last line. When
    /// there is nothing to drop the file is only opened for appending; otherwise the kept bytes are written beside
    /// it, fsynced and renamed over it, so a crash at any point leaves either the old or the new file.
    ///
    /// # Errors
    /// When the file cannot be written or renamed.
    pub fn resume(path: &Path, bytes: &[u8], old: &Transcript) -> Result<Self> {
        let keep = complete_prefix(bytes, 1 + old.turns.len());
        let file = if keep == bytes.len() && bytes.ends_with(b"\n") {
            std::fs::OpenOptions::new().append(true).open(path)
        } else {
            let tmp = crate::durable::partial_path(path);
            let mut kept = bytes[..keep].to_vec();
            if !kept.ends_with(b"\n") {
                kept.push(b'\n');
            }
            let mut f = File::create(&tmp).with_context(|| format!("could not create '{}'", tmp.display()))?;
            f.write_all(&kept)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("could not write '{}'", tmp.display()))?;
            crate::durable::commit_rename(&tmp, path)?;
            Ok(f)
        }
        .with_context(|| format!("could not open transcript '{}' to continue it", path.display()))?;
        Ok(TranscriptWriter { path: path.to_path_buf(), out: BufWriter::new(file), sync: true })
    }

    /// Whether every record is fsynced (the default). Off only to measure what durability costs.
    #[must_use]
    pub fn with_sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Writes one record as one line and flushes it to the operating system.
    ///
    /// # Errors
    /// When the write fails (disk full, file removed, …).
    pub fn write(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record).context("could not serialize a transcript record")?;
        line.push(b'\n');
        self.out
            .write_all(&line)
            .and_then(|()| self.out.flush())
            .and_then(|()| if self.sync { self.out.get_ref().sync_data() } else { Ok(()) })
            .with_context(|| format!("could not write to transcript '{}'", self.path.display()))
    }

    /// The file being written.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The length of the first `lines` non-blank lines of `bytes`, newlines included (blank lines are skipped by the
/// reader, so they are counted through but not as lines).
fn complete_prefix(bytes: &[u8], lines: usize) -> usize {
    let mut seen = 0;
    let mut at = 0;
    while seen < lines && at < bytes.len() {
        let end = bytes[at..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| at + i + 1);
        if !bytes[at..end].iter().all(u8::is_ascii_whitespace) {
            seen += 1;
        }
        at = end;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        let model = ModelRecord {
            path: "m.gguf".into(),
            file_size: Some(1),
            name: None,
            architecture: Some("llama".into()),
            n_ctx: 2048,
            chat_template_source: "gguf".into(),
        };
        Header {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            parrot_version: "0.1.0".into(),
            started: "2026-01-01T00:00:00Z".into(),
            config: serde_json::json!({}),
            assistant_model: model.clone(),
            user_model: model,
            backend: "llama".into(),
            user_backend: "llama".into(),
            seed: 1,
            conversation_index: 0,
            cpu: None,
        }
    }

    fn turn(index: u32) -> TurnRecord {
        TurnRecord {
            index,
            speaker: Speaker::Assistant,
            text: "Skye: hi".into(),
            prefix: "Skye:".into(),
            opening: false,
            tokens: 2,
            prompt_tokens: 10,
            prompt_tokens_evaluated: 3,
            dropped_messages: 0,
            stop_reason: Some(StopReason::Eos),
            max_tokens: Some(512),
            tokens_so_far: 2,
            timings: Some(Timings::default()),
            endpoint: None,
        }
    }

    #[test]
    fn turn_endpoint_round_trips_and_old_turns_without_it_still_read() {
        let old = r#"{"index":0,"speaker":"assistant","text":"hi"}"#;
        let t: TurnRecord = serde_json::from_str(old).unwrap();
        assert_eq!(t.endpoint, None);
        let with = TurnRecord { endpoint: Some("http://127.0.0.1:8081".into()), ..turn(3) };
        let line = serde_json::to_string(&with).unwrap();
        assert!(line.contains(r#""endpoint":"http://127.0.0.1:8081""#), "{line}");
        assert_eq!(serde_json::from_str::<TurnRecord>(&line).unwrap(), with);
        assert!(!serde_json::to_string(&turn(0)).unwrap().contains("endpoint"));
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = TranscriptWriter::create(&path, &header()).unwrap();
        w.write(&Record::Turn(turn(0))).unwrap();
        w.write(&Record::Turn(turn(1))).unwrap();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"type\":\"turn\",\"ind");
        let t = read_transcript(&bytes[..], "t").unwrap();
        assert_eq!(t.turns.len(), 2);
        assert_eq!(t.header, header());
        assert!(t.torn_tail.is_some());
        assert!(!t.is_finished());
    }

    #[test]
    fn resume_keeps_complete_lines_byte_for_byte_and_drops_summary_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = TranscriptWriter::create(&path, &header()).unwrap();
        w.write(&Record::Turn(turn(0))).unwrap();
        drop(w);
        let kept = std::fs::read(&path).unwrap();
        // An `error` summary, then a torn line: both go, the first two lines stay exactly as they were.
        let bytes = std::fs::read(&path).unwrap();
        let mut w = TranscriptWriter::resume(&path, &bytes, &read_transcript(&bytes[..], "t").unwrap()).unwrap();
        let totals = SpeakerTotals::default();
        let summary = Summary {
            stop_reason: EndReason::Error,
            error: Some("server hiccup".into()),
            messages: 1,
            total_tokens: 2,
            wall_ms: 1.0,
            assistant: totals,
            user: totals,
        };
        w.write(&Record::Summary(summary)).unwrap();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"type\":\"tu");
        std::fs::write(&path, &bytes).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let old = read_transcript(&bytes[..], "t").unwrap();
        assert_eq!(old.summary.as_ref().map(|s| s.stop_reason), Some(EndReason::Error), "{:?}", old.summary);
        let mut w = TranscriptWriter::resume(&path, &bytes, &old).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), kept);
        w.write(&Record::Turn(turn(1))).unwrap();
        drop(w);
        let t = read_transcript_file(&path).unwrap();
        assert_eq!(t.turns.len(), 2);
        assert!(t.summary.is_none());
        assert!(std::fs::read(&path).unwrap().starts_with(&kept));
        assert!(!crate::durable::partial_path(&path).exists());
    }

    #[test]
    fn issue_15_a_line_longer_than_the_bound_is_an_error_naming_it_and_is_not_read_whole() {
        // A reader that would give 1 GiB without a newline: the error comes after MAX_LINE_BYTES + 1 bytes.
        struct Endless(u64);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(usize::try_from(self.0).unwrap_or(usize::MAX));
                buf[..n].fill(b'a');
                self.0 -= n as u64;
                Ok(n)
            }
        }
        let mut head = serde_json::to_vec(&Record::Header(Box::new(header()))).unwrap();
        head.push(b'\n');
        let endless = Endless(1 << 30);
        let mut counted = CountingReader { inner: std::io::Cursor::new(head).chain(endless), read: 0 };
        let err = read_transcript(&mut counted, "t.jsonl").unwrap_err().to_string();
        assert_eq!(err, "t.jsonl: line 2 is longer than 64 MiB, the most parrot reads of one line");
        assert!(counted.read < (MAX_LINE_BYTES as u64) + (1 << 20), "read {} bytes", counted.read);
        // Lines at the bound are fine, CRLF included.
        let lines: Vec<String> = CappedLines::new(&b"ab\r\ncd\n\nxyz"[..], 3).map(|l| l.unwrap()).collect();
        assert_eq!(lines, ["ab", "cd", "", "xyz"]);
        assert!(matches!(CappedLines::new(&b"abcd"[..], 3).next(), Some(Err(LineError::TooLong))));
    }

    struct CountingReader<R> {
        inner: R,
        read: u64,
    }
    impl<R: Read> Read for CountingReader<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn rejects_a_foreign_first_line() {
        let err = read_transcript(&b"{\"role\":\"user\"}\n"[..], "x.jsonl").unwrap_err();
        assert!(err.to_string().contains("x.jsonl: line 1"), "{err}");
    }
}
