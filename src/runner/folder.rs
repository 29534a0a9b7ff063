//! The run folder: what is in it and who may write it.
//!
//! * `DIR/.parrot.lock` — an exclusive OS advisory lock ([`FolderLock`]) held for the life of the process that
//!   writes the folder; the kernel drops it when the process dies, however it dies. It holds the writer's process
//!   id so that a second writer's error can name it. `analyze` and `report` never take it.
//! * `DIR/run.json` (`sweep.json` at a sweep's root) — the command `--resume` reruns (the original one, never a
//!   `--resume`), the folder it ran in, the resolved config, and a `history` of every start and resume
//!   ([`write_record`]); replaced atomically.
//! * `DIR/conversation-NNN.jsonl` — one transcript per conversation, handed out by the [`Queue`] one at a time as
//!   the scheduler is ready for it, so no more than `--parallel` (+ a few) are open whatever `-n` is. A finished
//!   transcript is never opened for writing again; one that was interrupted, torn or ended in `error` continues
//!   from its last complete turn.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::sink::{cancel_flag, ConsoleSink, PromptLog};
use super::Job;
use crate::backend::Backend;
use crate::settings::{Console, Invocation, Settings};
use crate::transcript::{
    read_transcript, EndReason, Header, TranscriptWriter, TurnRecord, FORMAT_NAME, FORMAT_VERSION,
};

/// File name of conversation `i`.
#[must_use]
pub fn transcript_name(i: u32) -> String {
    format!("conversation-{i:03}.jsonl")
}

/// Name of the lock file inside a run or sweep folder.
pub const LOCK_NAME: &str = ".parrot.lock";

/// The exclusive right to write one folder, for as long as it is held (see the module docs).
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

impl FolderLock {
    /// Creates `dir` if needed and locks it (creating the lock file is what shows the folder writable).
    ///
    /// # Errors
    /// A folder that cannot be created or written, or that another process holds (the message names it).
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| {
            format!("output folder '{}' cannot be created: choose a writable --out folder", dir.display())
        })?;
        let path = dir.join(LOCK_NAME);
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| {
                format!("output folder '{}' is not writable: choose another --out folder", dir.display())
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder wrote its process id; read no more than one could take, whatever the file holds.
                let mut holder = String::new();
                let _ = (&mut file).take(64).read_to_string(&mut holder);
                let pid = holder.lines().next().and_then(|l| l.trim().parse::<u32>().ok());
                let who = pid.map_or_else(|| "another parrot process".to_string(), |p| format!("parrot process {p}"));
                bail!(
                    "'{}' is being written by {who}: wait for it to finish or stop it, or choose another --out folder",
                    dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("could not lock '{}'", path.display()));
            }
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(FolderLock { _file: file })
    }
}

/// Writes `run.json` or `sweep.json` at `path`: `fields`, the command to rerun and its folder, and the history of
/// every start and resume (an existing record's history is kept and this process appended). Atomic.
///
/// # Errors
/// When the file cannot be written.
pub fn write_record(path: &Path, fields: Map<String, Value>, invocation: &Invocation) -> Result<()> {
    // Bounded like `--resume`'s read of the same file; a record that is not JSON is replaced, as before.
    let old: Option<Value> = match crate::config::read_bounded(path, crate::settings::MAX_RECORD_BYTES) {
        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
        Err(e) if crate::config::is_not_found(&e) => None,
        Err(e) => {
            return Err(e.context(format!(
                "could not read the earlier record '{}' to keep its history: move it away or choose another --out \
                 folder",
                path.display()
            )))
        }
    };
    let mut history =
        old.as_ref().and_then(|o| o.get("history")).and_then(Value::as_array).cloned().unwrap_or_default();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    history.push(match &invocation.resumed_by {
        Some(argv) => json!({"at": at, "resume": true, "command": argv, "parrot_version": crate::LONG_VERSION}),
        None => json!({"at": at, "command": invocation.command, "parrot_version": crate::LONG_VERSION}),
    });
    let mut record = Map::new();
    record.insert("parrot_version".into(), json!(crate::LONG_VERSION));
    record.insert("command".into(), json!(invocation.command));
    record.insert("cwd".into(), json!(invocation.cwd));
    record.extend(fields);
    record.insert("history".into(), Value::Array(history));
    crate::durable::write_atomic(path, &serde_json::to_vec_pretty(&Value::Object(record))?)
}

/// A conversation ready to run: its transcript is open and its earlier turns (if resumed) are known.
pub struct OpenConversation {
    /// Its index in the set.
    pub index: u32,
    /// Its seed.
    pub seed: u32,
    /// Its transcript.
    pub path: PathBuf,
    /// Where its text and records go.
    pub sink: ConsoleSink,
    /// Turns already in the transcript (empty for a new one).
    pub done: Vec<TurnRecord>,
}

/// The conversations of a job, handed out one at a time and opened only then. Shared by reference between the
/// HTTP workers' threads.
pub struct Queue<'a> {
    job: &'a Job<'a>,
    settings: &'a Settings,
    config_json: Value,
    next: AtomicU32,
    retried: AtomicU32,
    prompt_log: Option<PromptLog>,
}

impl<'a> Queue<'a> {
    /// The queue of `job`, run with `settings` (its models resolved to files).
    ///
    /// # Errors
    /// When the `--prompt-log` file cannot be opened.
    pub fn new(job: &'a Job<'a>, settings: &'a Settings, config_json: Value) -> Result<Self> {
        let prompt_log = match &job.options.prompt_log {
            Some(p) => Some(Arc::new(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("could not open --prompt-log file '{}'", p.display()))?,
            ))),
            None => None,
        };
        Ok(Queue { job, settings, config_json, next: AtomicU32::new(0), retried: AtomicU32::new(0), prompt_log })
    }

    /// The settings every conversation runs with.
    #[must_use]
    pub fn settings(&self) -> &'a Settings {
        self.settings
    }

    /// The job's folder.
    #[must_use]
    pub fn out(&self) -> &'a Path {
        self.job.out
    }

    /// How many conversations the job has (finished ones included).
    #[must_use]
    pub fn len(&self) -> u32 {
        self.job.options.conversations
    }

    /// Whether the job has no conversations (never: `-n` is at least 1).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next conversation to run, its transcript opened (created, or continued), for these backends; finished
    /// ones are skipped. `None` once every conversation was handed out, or after Ctrl-C. `stream`: print its text.
    ///
    /// # Errors
    /// A transcript that cannot be read, created or continued, or that was written with other settings.
    pub fn next(
        &self,
        assistant: &dyn Backend,
        user: &dyn Backend,
        console: &Console,
        stream: bool,
    ) -> Option<Result<OpenConversation>> {
        loop {
            if cancel_flag().load(Ordering::SeqCst) {
                return None;
            }
            let index = self.next.fetch_add(1, Ordering::SeqCst);
            if index >= self.len() {
                return None;
            }
            match self.open(index, assistant, user, console, stream) {
                Ok(Some(opened)) => return Some(Ok(opened)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn open(
        &self,
        index: u32,
        assistant: &dyn Backend,
        user: &dyn Backend,
        console: &Console,
        stream: bool,
    ) -> Result<Option<OpenConversation>> {
        let seed = self.settings.seed.wrapping_add(index);
        let path = self.job.out.join(transcript_name(index));
        let header = header(&self.config_json, assistant, user, seed, index);
        let Some((writer, done)) = self.open_transcript(&path, &header)? else {
            eprintln!("{}: already finished, skipped", path.display());
            return Ok(None);
        };
        let writer = writer.with_sync(self.job.options.fsync);
        let sink = ConsoleSink::new(writer, self.prompt_log.clone(), index, !stream || console.quiet, console.color);
        Ok(Some(OpenConversation { index, seed, path, sink, done }))
    }

    /// Opens one transcript: a new file, or an unfinished one to continue. `None` when it is finished.
    fn open_transcript(&self, path: &Path, header: &Header) -> Result<Option<(TranscriptWriter, Vec<TurnRecord>)>> {
        // Read once: to tell a new file from one to continue, to check it, and to keep its bytes. A file without one
        // complete line was killed while its header was written: nothing in it to keep.
        let bytes = if self.job.options.force { Vec::new() } else { read_to_continue(path)? };
        if !bytes.contains(&b'\n') {
            return Ok(Some((TranscriptWriter::create(path, header)?, Vec::new())));
        }
        let old = read_transcript(&bytes[..], &path.display().to_string())
            .with_context(|| format!("cannot resume '{}': pass --force to start it over", path.display()))?;
        if old.header.config != header.config
            || old.header.seed != header.seed
            || old.header.assistant_model.path != header.assistant_model.path
            || old.header.user_model.path != header.user_model.path
        {
            bail!(
                "'{}' was written with another config, seed or model: use a new --out folder, or --force to overwrite it",
                path.display()
            );
        }
        match &old.summary {
            Some(s) if s.stop_reason == EndReason::Error => {
                self.retried.fetch_add(1, Ordering::SeqCst);
                eprintln!(
                    "{}: ended in error ({}); retrying from its last complete turn",
                    path.display(),
                    s.error.as_deref().unwrap_or("no message")
                );
            }
            Some(s) if s.stop_reason != EndReason::Interrupted => return Ok(None),
            _ => {}
        }
        let writer = TranscriptWriter::resume(path, &bytes, &old)?;
        Ok(Some((writer, old.turns)))
    }

    /// Says on stderr how many conversations that had ended in `error` were retried (even when quiet: it is a
    /// result, like the summary lines).
    pub fn report_retried(&self) {
        let n = self.retried.load(Ordering::SeqCst);
        if n > 0 {
            let s = if n == 1 { "" } else { "s" };
            eprintln!("{}: retried {n} conversation{s} that had ended in error", self.job.out.display());
        }
    }
}

/// The bytes of the transcript at `path` to continue it: empty when there is none, at most
/// [`MAX_TRANSCRIPT_BYTES`] (it is held whole, to be checked and rewritten without its torn tail).
///
/// # Errors
/// A file that cannot be read or is larger than the bound: the message names it and the way out.
fn read_to_continue(path: &Path) -> Result<Vec<u8>> {
    match crate::config::read_bounded(path, MAX_TRANSCRIPT_BYTES) {
        Ok(bytes) => Ok(bytes),
        Err(e) if crate::config::is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(e.context(format!(
            "cannot resume '{}': pass --force to start it over, or use a new --out folder",
            path.display()
        ))),
    }
}

/// The largest transcript continued by a run: the largest file `analyze` reads
/// ([`crate::analysis::formats::MAX_FILE_BYTES`], 1 GiB); a longer one could not be analyzed anyway.
pub const MAX_TRANSCRIPT_BYTES: u64 = crate::analysis::formats::MAX_FILE_BYTES;

/// The queues of several jobs served by one set of slots (the cells of a sweep that share their models): each
/// conversation comes from the first queue that still has one, so a freed slot takes the next cell's first
/// conversation as soon as the current cell has none left to hand out.
pub struct Queues<'q, 'a> {
    queues: &'q [Queue<'a>],
    first: &'q Queue<'a>,
    current: AtomicUsize,
}

impl<'q, 'a> Queues<'q, 'a> {
    /// Serves `queues` in order.
    ///
    /// # Errors
    /// When there is no queue.
    pub fn new(queues: &'q [Queue<'a>]) -> Result<Self> {
        let first = queues.first().context("no conversations to run")?;
        Ok(Queues { queues, first, current: AtomicUsize::new(0) })
    }

    /// The queues, in order.
    #[must_use]
    pub fn all(&self) -> &'q [Queue<'a>] {
        self.queues
    }

    /// The settings backends are opened with (every queue's models and backends are the same).
    #[must_use]
    pub fn settings(&self) -> &'a Settings {
        self.first.settings()
    }

    /// Conversations in all queues (finished ones included).
    #[must_use]
    pub fn len(&self) -> u64 {
        self.queues.iter().map(|q| u64::from(q.len())).sum()
    }

    /// Whether there is no conversation at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token budget of every conversation together, for a progress bar.
    #[must_use]
    pub fn total_tokens(&self) -> u64 {
        self.queues
            .iter()
            .map(|q| q.settings().config.total_tokens.saturating_mul(u64::from(q.len())))
            .fold(0, u64::saturating_add)
    }

    /// The next conversation of the first queue that has one, with its queue; see [`Queue::next`].
    pub fn next(
        &self,
        assistant: &dyn Backend,
        user: &dyn Backend,
        console: &Console,
        stream: bool,
    ) -> Option<Result<(&'q Queue<'a>, OpenConversation)>> {
        loop {
            let i = self.current.load(Ordering::SeqCst);
            let queue = self.queues.get(i)?;
            if let Some(next) = queue.next(assistant, user, console, stream) {
                return Some(next.map(|opened| (queue, opened)));
            }
            if cancel_flag().load(Ordering::SeqCst) {
                return None;
            }
            // This queue has handed out its last conversation: move on (another thread may have already).
            let _ = self.current.compare_exchange(i, i + 1, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

/// The header of conversation `index` with `config` on these two backends.
#[must_use]
pub fn header(config: &Value, assistant: &dyn Backend, user: &dyn Backend, seed: u32, index: u32) -> Header {
    Header {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        parrot_version: env!("CARGO_PKG_VERSION").into(),
        started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        config: config.clone(),
        assistant_model: assistant.describe(),
        user_model: user.describe(),
        backend: assistant.name(),
        user_backend: user.name(),
        seed,
        conversation_index: index,
        // Only an in-process engine runs parrot's CPU code; a server's is its own.
        cpu: [assistant.name(), user.name()].iter().any(|b| !b.starts_with("http")).then(|| crate::CPU.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_folder_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = FolderLock::acquire(dir.path()).unwrap();
        let e = FolderLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        assert!(e.contains(&format!("process {}", std::process::id())), "{e}");
        drop(first);
        FolderLock::acquire(dir.path()).expect("free again once the holder lets go");
    }

    /// #15: the lock file of a held folder is read only as far as a process id goes (before, it was read whole into
    /// memory and into the message); what is not a process id is not quoted.
    #[test]
    fn issue_15_a_huge_lock_file_is_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let _held = FolderLock::acquire(dir.path()).unwrap();
        // 64 MiB of zero bytes in place of the process id; sparse: nothing is written.
        let lock = std::fs::OpenOptions::new().write(true).open(dir.path().join(LOCK_NAME)).unwrap();
        lock.set_len(0).unwrap();
        lock.set_len(64 << 20).unwrap();
        let e = FolderLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.len() < 500 && e.contains("another parrot process"), "{}", e.get(..500).unwrap_or(&e));
    }

    #[test]
    fn records_keep_the_original_command_and_append_every_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let start = Invocation { command: vec!["parrot".into(), "run".into()], cwd: None, resumed_by: None };
        write_record(&path, Map::new(), &start).unwrap();
        let resume = Invocation { resumed_by: Some(vec!["parrot".into(), "run".into(), "--resume".into()]), ..start };
        write_record(&path, Map::new(), &resume).unwrap();
        write_record(&path, Map::new(), &resume).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["command"], json!(["parrot", "run"]));
        let history = v["history"].as_array().unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(history[2]["resume"], json!(true));
    }

    /// #15: the earlier `run.json` is read with `--resume`'s bound, never whole: one over it is an error naming it
    /// and the bound, and is left as it is (before, any size was read into memory).
    #[test]
    fn issue_15_an_oversized_earlier_record_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        // Sparse: nothing is written.
        std::fs::File::create(&path).unwrap().set_len(crate::settings::MAX_RECORD_BYTES + 1).unwrap();
        let start = Invocation { command: vec!["parrot".into(), "run".into()], cwd: None, resumed_by: None };
        let e = format!("{:#}", write_record(&path, Map::new(), &start).unwrap_err());
        assert!(e.contains(&path.display().to_string()) && e.contains("64 MiB"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), crate::settings::MAX_RECORD_BYTES + 1, "left as it is");
    }

    /// #15: a transcript to continue is read with the bound `analyze` has for a file: a larger one is an error
    /// naming it, the bound and `--force` (before, any size was read whole, and one without a newline was started
    /// over). A missing one is a new conversation.
    #[test]
    fn issue_15_a_transcript_to_continue_is_read_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(transcript_name(0));
        assert!(read_to_continue(&path).unwrap().is_empty(), "no file: nothing to continue");
        std::fs::File::create(&path).unwrap().set_len(MAX_TRANSCRIPT_BYTES + 1).unwrap();
        let e = match read_to_continue(&path) {
            Err(e) => format!("{e:#}"),
            Ok(bytes) => panic!("read {} bytes of a file over the bound", bytes.len()),
        };
        assert!(e.contains(&path.display().to_string()) && e.contains("1024 MiB") && e.contains("--force"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    /// #15: `--total-tokens` takes any u64; the progress bar's total over the cells of a sweep saturates instead of
    /// overflowing.
    #[test]
    fn issue_15_the_token_total_of_a_sweep_saturates() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let argv = ["parrot", "sweep", "--out", out, "--assistant-model", "a.gguf", "--user-model", "u.gguf"];
        let more = ["--total-tokens", "18446744073709551615", "--grid", "sampler.repeat_penalty=1.0,1.1"];
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv.iter().chain(&more)).unwrap();
        let crate::cli::Command::Sweep(args) = cli.command else { panic!("a sweep") };
        let plan = crate::settings::sweep(&args, Invocation::current()).unwrap();
        let jobs: Vec<Job<'_>> = plan
            .cells
            .iter()
            .map(|c| Job {
                settings: &c.settings,
                out: dir.path(),
                options: &plan.options,
                invocation: &plan.invocation,
                cell: Some(&c.name),
            })
            .collect();
        let queues: Vec<Queue<'_>> = jobs.iter().map(|j| Queue::new(j, j.settings, Value::Null).unwrap()).collect();
        assert_eq!(queues.len(), 2);
        assert_eq!(Queues::new(&queues).unwrap().total_tokens(), u64::MAX);
    }
}
