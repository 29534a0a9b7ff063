//! Running a set of conversations into one folder: the part that `run` does once and `sweep` once per grid cell.
//!
//! * Transcripts: `DIR/conversation-NNN.jsonl`, opened new, skipped when finished, or resumed (rewritten without
//!   their summary and any torn line, then continued from the last complete turn); `DIR/run.json` records the exact
//!   command and config.
//! * `--parallel 1`: conversations run one after another and stream their text to stdout.
//! * `--parallel P`: P conversations advance together as sequences 0..P of one llama.cpp context per model; every
//!   step decodes one batch per model holding each active conversation's next token (or prompt chunk). When a
//!   conversation ends, the next one starts in its slot. Progress bars (one per slot and a total with tokens/s and
//!   ETA) replace the streamed text.
//! * Ctrl-C: generation stops at the next token; every active transcript is closed with an `interrupted` summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use anstyle::{AnsiColor, Style};
use anyhow::{bail, Context, Result};

use crate::cli::GlobalArgs;
use crate::commands::run::Settings;
use crate::conversation::Sink;
use crate::transcript::{
    read_transcript_file, EndReason, Header, Record, Speaker, Summary, TranscriptWriter, TurnRecord, FORMAT_NAME,
    FORMAT_VERSION,
};

/// One set of conversations to generate.
pub struct RunSet<'a> {
    /// Resolved settings.
    pub settings: &'a Settings,
    /// Output folder (exists and is writable).
    pub out: &'a Path,
    /// How many conversations.
    pub conversations: u32,
    /// How many at once.
    pub parallel: u32,
    /// Overwrite instead of resuming.
    pub force: bool,
    /// Where to log rendered prompts.
    pub prompt_log: Option<&'a Path>,
}

/// How a run set ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Conversations that ended with an error.
    pub failures: u32,
    /// Whether Ctrl-C stopped it.
    pub interrupted: bool,
}

impl Outcome {
    /// 130 after Ctrl-C, 1 after failures, else 0.
    #[must_use]
    pub fn exit_code(self) -> ExitCode {
        if self.interrupted {
            ExitCode::from(130)
        } else if self.failures > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// File name of conversation `i`.
#[must_use]
pub fn transcript_name(i: u32) -> String {
    format!("conversation-{i:03}.jsonl")
}

/// The process-wide Ctrl-C flag (installed on first use).
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
    prompt_log: Option<(std::fs::File, u32)>,
    quiet: bool,
    color: bool,
    /// Tokens generated through this sink (for progress bars).
    pub tokens: u64,
    /// Messages written through this sink.
    pub messages: u32,
}

impl ConsoleSink {
    /// A sink writing to `writer`; with `prompt_log`, the prompts of conversation `conversation` are appended to
    /// that file.
    ///
    /// # Errors
    /// When the prompt log cannot be opened.
    pub(crate) fn new(
        writer: TranscriptWriter,
        prompt_log: Option<&Path>,
        conversation: u32,
        quiet: bool,
        color: bool,
    ) -> Result<Self> {
        let prompt_log = match prompt_log {
            Some(p) => Some((
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("could not open --prompt-log file '{}'", p.display()))?,
                conversation,
            )),
            None => None,
        };
        Ok(ConsoleSink { writer, prompt_log, quiet, color, tokens: 0, messages: 0 })
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
        let _ = write!(out, "{style}{text}{style:#}");
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
        if let Some((file, conversation)) = &mut self.prompt_log {
            let line =
                serde_json::json!({"conversation": conversation, "index": index, "speaker": speaker, "prompt": prompt});
            // One write per line: conversations running on several threads append to the same file.
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

/// The header of conversation `index` of a run with `config` on these two engines.
pub(crate) fn header(
    config: &serde_json::Value,
    assistant: &dyn crate::backend::Backend,
    user: &dyn crate::backend::Backend,
    seed: u32,
    index: u32,
) -> Header {
    Header {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        parrot_version: env!("CARGO_PKG_VERSION").into(),
        started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        config: config.clone(),
        assistant_model: assistant.describe(),
        user_model: user.describe(),
        backend: assistant.name(),
        user_backend: user.name(),
        seed,
        conversation_index: index,
    }
}

/// Records the exact command and resolved config next to the transcripts.
pub(crate) fn write_run_file(dir: &Path, config: &serde_json::Value) -> Result<()> {
    let run = serde_json::json!({
        "parrot_version": crate::LONG_VERSION,
        "command": std::env::args().collect::<Vec<_>>(),
        "cwd": std::env::current_dir().ok(),
        "config": config,
    });
    let path = dir.join("run.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&run)?)
        .with_context(|| format!("could not write '{}'", path.display()))
}

/// Opens the transcript of one conversation: a new file, or an unfinished one to resume (rewritten without its
/// summary and any torn line). `None` when it is already finished.
pub(crate) fn open_transcript(
    path: &Path,
    header: &Header,
    force: bool,
) -> Result<Option<(TranscriptWriter, Vec<TurnRecord>)>> {
    // A file without one complete line was killed while its header was written: nothing in it to keep.
    let has_header = std::fs::read(path).is_ok_and(|b| b.contains(&b'\n'));
    if force || !has_header {
        return Ok(Some((TranscriptWriter::create(path, header)?, Vec::new())));
    }
    let old = read_transcript_file(path)
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
    if old.is_finished() {
        return Ok(None);
    }
    let writer = TranscriptWriter::rewrite(path, &old.header, &old.turns)?;
    Ok(Some((writer, old.turns)))
}

/// A conversation ready to run: its transcript is open and its earlier turns (if resumed) are known.
#[cfg_attr(not(feature = "llama"), allow(dead_code))]
struct Opened {
    index: u32,
    seed: u32,
    path: PathBuf,
    sink: ConsoleSink,
    done: Vec<TurnRecord>,
}

pub(crate) fn report(path: &Path, summary: &Summary, outcome: &mut Outcome) {
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
            eprintln!("{}: error: {}", path.display(), summary.error.as_deref().unwrap_or_default());
        }
        EndReason::Budget | EndReason::ContextFull => {}
    }
}

#[cfg(not(feature = "llama"))]
/// Without the `llama` feature there is no in-process engine.
#[derive(Default)]
pub struct Engines {
    _none: (),
}

#[cfg(not(feature = "llama"))]
/// Runs a set of conversations.
///
/// # Errors
/// Always, unless a role runs on an HTTP server: this build has no in-process backend.
pub fn run_set(global: &GlobalArgs, set: &RunSet<'_>, _: &mut Engines) -> Result<Outcome> {
    if set.settings.roles.any_http() {
        return crate::commands::engines::run_set_http(global, set);
    }
    bail!("this parrot was built without the `llama` feature: rebuild with default features to run models")
}

#[cfg(feature = "llama")]
pub use enabled::{run_set, Engines};

#[cfg(feature = "llama")]
mod enabled {
    use super::*;
    use crate::backend::llama::{LlamaRole, LoadOptions, SeqJob};
    use crate::backend::{Backend, GenRequest};
    use crate::config::{Config, ModelConfig};
    use crate::conversation::{run_conversation, Dialogue, Next, Roles, TurnPlan};
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

    /// The two loaded models, kept across the cells of a sweep; reloaded only when their options change.
    #[derive(Default)]
    pub struct Engines {
        loaded: Option<(String, LlamaRole, LlamaRole)>,
    }

    fn options(m: &ModelConfig, default_ctx: u32, n_seq: u32, verbose: u8) -> LoadOptions {
        LoadOptions {
            n_ctx: m.n_ctx,
            default_ctx,
            threads: m.threads,
            gpu_layers: m.gpu_layers,
            chat_template: m.chat_template.clone(),
            verbose,
            n_seq,
        }
    }

    impl Engines {
        fn get(&mut self, s: &Settings, parallel: u32, verbose: u8) -> Result<(&mut LlamaRole, &mut LlamaRole)> {
            let c = &s.config;
            let budget_ctx = u32::try_from(c.total_tokens.saturating_mul(5) / 4 + 1024).unwrap_or(u32::MAX);
            let a = options(&c.assistant, budget_ctx, parallel, verbose);
            let u = options(&c.user, 2048, parallel, verbose);
            let key = format!("{:?}|{a:?}|{:?}|{u:?}", s.assistant_model, s.user_model);
            if self.loaded.as_ref().is_none_or(|(k, _, _)| *k != key) {
                self.loaded = None;
                check_parallel_fits(s, &a, &u, parallel)?;
                let assistant = LlamaRole::load(&s.assistant_model, &a)?;
                let user = LlamaRole::load(&s.user_model, &u)?;
                self.loaded = Some((key, assistant, user));
            }
            let (_, a, u) = self.loaded.as_mut().context("models not loaded")?;
            Ok((a, u))
        }
    }

    /// Refuses a `--parallel` whose KV caches would not fit in the memory available, naming the largest that does.
    fn check_parallel_fits(s: &Settings, a: &LoadOptions, u: &LoadOptions, parallel: u32) -> Result<()> {
        let per_conversation = |path: &Path, o: &LoadOptions| -> Result<u64> {
            let info = crate::gguf::inspect(path)?;
            let ctx = u64::from(o.n_ctx.unwrap_or(o.default_ctx).min(info.context_length().unwrap_or(u32::MAX)));
            Ok(ctx * info.kv_bytes_per_token().unwrap_or(0))
        };
        let need = per_conversation(&s.assistant_model, a)? + per_conversation(&s.user_model, u)?;
        let Some(available) = crate::output::memory_available() else { return Ok(()) };
        let budget = available / 10 * 8;
        if need > 0 && need.saturating_mul(u64::from(parallel)) > budget {
            let fits = budget / need;
            let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
            bail!(
                "--parallel {parallel} needs {:.1} GiB of KV cache ({:.2} GiB per conversation) but only {:.1} GiB of \
                 memory is available: the largest --parallel that fits is {fits} (or lower n_ctx)",
                gib(need * u64::from(parallel)),
                gib(need),
                gib(available)
            );
        }
        Ok(())
    }

    /// The conversations of `set`, opened lazily one at a time (a run of thousands never holds thousands of
    /// files open).
    fn open_all(
        global: &GlobalArgs,
        set: &RunSet<'_>,
        assistant: &LlamaRole,
        user: &LlamaRole,
        config_json: &serde_json::Value,
        quiet: bool,
    ) -> impl Iterator<Item = Result<Opened>> {
        let mut items = Vec::new();
        for i in 0..set.conversations {
            let seed = set.settings.seed.wrapping_add(i);
            let path = set.out.join(transcript_name(i));
            items.push((i, seed, path.clone(), header(config_json, assistant, user, seed, i)));
        }
        let color = crate::output::stdout_color(global.no_color);
        let force = set.force;
        let prompt_log = set.prompt_log.map(Path::to_path_buf);
        items.into_iter().filter_map(move |(index, seed, path, header)| {
            let opened = (|| -> Result<Option<Opened>> {
                let Some((writer, done)) = open_transcript(&path, &header, force)? else {
                    eprintln!("{}: already finished, skipped", path.display());
                    return Ok(None);
                };
                let sink = ConsoleSink::new(writer, prompt_log.as_deref(), index, quiet, color)?;
                Ok(Some(Opened { index, seed, path, sink, done }))
            })();
            opened.transpose()
        })
    }

    /// Runs a set of conversations (sequentially, or `parallel` at once).
    ///
    /// # Errors
    /// When models cannot be loaded or transcripts cannot be written.
    pub fn run_set(global: &GlobalArgs, set: &RunSet<'_>, engines: &mut Engines) -> Result<Outcome> {
        if set.settings.roles.any_http() {
            return crate::commands::engines::run_set_http(global, set);
        }
        let parallel = set.parallel.min(set.conversations.max(1));
        let (assistant, user) = engines.get(set.settings, parallel, global.verbose)?;
        let config = &set.settings.config;
        let config_json = serde_json::to_value(config)?;
        write_run_file(set.out, &config_json)?;
        let cancel = cancel_flag();
        if parallel <= 1 {
            let mut outcome = Outcome::default();
            let quiet = global.quiet;
            let pending = open_all(global, set, assistant, user, &config_json, quiet);
            for opened in pending {
                if cancel.load(Ordering::SeqCst) {
                    outcome.interrupted = true;
                    break;
                }
                let mut c = opened?;
                assistant.reset();
                user.reset();
                let mut roles = Roles { assistant: &mut *assistant, user: &mut *user };
                let summary = run_conversation(config, &mut roles, c.seed, &c.done, &mut c.sink, cancel)?;
                c.sink.finish(&summary)?;
                report(&c.path, &summary, &mut outcome);
                if outcome.interrupted {
                    break;
                }
            }
            return Ok(outcome);
        }
        let pending: Vec<Result<Opened>> = open_all(global, set, assistant, user, &config_json, true).collect();
        run_parallel(global, config, parallel as usize, pending.into_iter(), assistant, user, cancel)
    }

    /// A conversation in one slot of the parallel scheduler.
    struct Slot<'c> {
        opened: Opened,
        dialogue: Dialogue<'c>,
        job: Option<(TurnPlan, SeqJob)>,
        bar: ProgressBar,
    }

    #[allow(clippy::too_many_lines)]
    fn run_parallel(
        global: &GlobalArgs,
        config: &Config,
        parallel: usize,
        pending: impl ExactSizeIterator<Item = Result<Opened>>,
        assistant: &mut LlamaRole,
        user: &mut LlamaRole,
        cancel: &AtomicBool,
    ) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        assistant.reset();
        user.reset();
        let bars = if global.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
        } else {
            MultiProgress::new()
        };
        let total_budget = config.total_tokens.saturating_mul(pending.len() as u64);
        let total = bars.add(ProgressBar::new(total_budget));
        total.set_style(
            ProgressStyle::with_template("total {bar:30} {pos}/{len} tokens  {per_sec}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let slot_style = ProgressStyle::with_template("{prefix} {bar:20} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let mut queue = pending;
        let mut slots: Vec<Option<Slot<'_>>> = (0..parallel).map(|_| None).collect();
        loop {
            let interrupted = cancel.load(Ordering::SeqCst);
            // Fill free slots, plan the next turn of every idle conversation, close finished ones.
            for (seq, slot) in slots.iter_mut().enumerate() {
                loop {
                    if slot.is_none() && !interrupted {
                        let Some(next) = queue.next() else { break };
                        let mut opened = next?;
                        let dialogue = Dialogue::start(config, opened.seed, &opened.done, &mut opened.sink)?;
                        let bar = bars.insert_before(&total, ProgressBar::new(config.total_tokens));
                        bar.set_style(slot_style.clone());
                        bar.set_prefix(transcript_name(opened.index));
                        *slot = Some(Slot { opened, dialogue, job: None, bar });
                    }
                    let Some(s) = slot.as_mut() else { break };
                    if interrupted {
                        // The turn in flight is dropped: the transcript ends after its last complete turn.
                        s.job = None;
                    }
                    if s.job.is_some() {
                        break;
                    }
                    let next = if interrupted {
                        Next::End(s.dialogue.summary(EndReason::Interrupted, None))
                    } else {
                        s.dialogue.next(&*assistant, &*user)?
                    };
                    match next {
                        Next::Generate(plan) => {
                            s.opened.sink.prompt(plan.index, plan.speaker, &plan.prompt)?;
                            let request = GenRequest {
                                prompt: &plan.prompt,
                                max_tokens: plan.max_tokens,
                                sampler: s.dialogue.sampler(plan.speaker),
                                seed: plan.seed,
                                cancel,
                            };
                            let engine = if plan.speaker == Speaker::Assistant { &mut *assistant } else { &mut *user };
                            let job = engine.begin(seq, &request)?;
                            s.bar.set_message(format!("turn {}", plan.index));
                            s.job = Some((plan, job));
                            break;
                        }
                        Next::End(summary) => {
                            let mut s = slot.take().context("slot vanished")?;
                            s.opened.sink.finish(&summary)?;
                            bars.remove(&s.bar);
                            bars.suspend(|| report(&s.opened.path, &summary, &mut outcome));
                        }
                    }
                }
            }
            if slots.iter().all(Option::is_none) {
                break;
            }
            // One decode per model over every conversation waiting on it.
            for (speaker, engine) in [(Speaker::Assistant, &mut *assistant), (Speaker::User, &mut *user)] {
                let mut jobs: Vec<&mut SeqJob> = slots
                    .iter_mut()
                    .filter_map(|s| s.as_mut().and_then(|s| s.job.as_mut()))
                    .filter(|(plan, job)| plan.speaker == speaker && !job.is_done())
                    .map(|(_, job)| job)
                    .collect();
                if !jobs.is_empty() {
                    engine.step(&mut jobs, &mut |_, _| {})?;
                }
            }
            // Record finished turns.
            for slot in &mut slots {
                let Some(s) = slot.as_mut() else { continue };
                if !s.job.as_ref().is_some_and(|(_, j)| j.is_done()) {
                    continue;
                }
                let (plan, job) = s.job.take().context("job vanished")?;
                let generation = job.finish();
                let tokens = u64::from(generation.tokens);
                if let Some(summary) = s.dialogue.finish(plan, Ok(generation), &mut s.opened.sink)? {
                    let s = slot.take().context("slot vanished")?;
                    let mut sink = s.opened.sink;
                    sink.finish(&summary)?;
                    bars.remove(&s.bar);
                    bars.suspend(|| report(&s.opened.path, &summary, &mut outcome));
                } else {
                    s.bar.set_position(s.opened.sink.tokens);
                }
                total.inc(tokens);
            }
        }
        total.finish_and_clear();
        Ok(outcome)
    }
}
