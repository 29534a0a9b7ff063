//! `parrot run`: the I/O shell around the conversation driver. It resolves the config and flags into settings,
//! checks every input before touching a model (config, model files, output folder), loads the two models (or
//! connects to their HTTP servers, see [`super::engines`]), then runs `-n` conversations one after another (or
//! `--parallel N` at once against HTTP servers), each into its own transcript, streaming the text to stdout.
//!
//! Interruption: the first Ctrl-C stops generation at the next token and closes the transcript after its last
//! complete turn with an `interrupted` summary; rerunning the same command resumes it. A second Ctrl-C exits at
//! once (the file is still valid: every line is flushed when written).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use anstyle::{AnsiColor, Style};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::engines::{EngineArgs, RoleEngine, RoleSpec};
use crate::backend::Backend;
use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::conversation::{run_conversation, Roles, Sink};
use crate::transcript::{
    read_transcript_file, EndReason, Header, Record, Speaker, TranscriptWriter, TurnRecord, FORMAT_NAME, FORMAT_VERSION,
};

/// The built-in scenario used when no `--config` is given: the original tool's date role-play.
pub const DEFAULT_CONFIG: &str = include_str!("../../examples/date.toml");

/// Arguments of `parrot run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file: parrot's TOML or the original tool's config.json. Without it, the built-in date scenario
    /// (examples/date.toml) is used.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The assistant model: a GGUF file. Overrides `[assistant] model` in the config.
    #[arg(long, value_name = "PATH")]
    pub assistant_model: Option<String>,
    /// The user model: a GGUF file. Overrides `[user] model` in the config.
    #[arg(long, value_name = "PATH")]
    pub user_model: Option<String>,
    /// The folder for the transcripts (created if needed); conversation i goes to `conversation-<i>.jsonl`.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// How many conversations to generate; conversation i uses seed S + i.
    #[arg(short = 'n', long = "conversations", value_name = "N", default_value_t = 1)]
    pub conversations: u32,
    /// The seed S of the first conversation. Overrides `seed` in the config; default 42.
    #[arg(long, value_name = "S")]
    pub seed: Option<u32>,
    /// Override any config key, e.g. `--set sampler.repeat_penalty=1.1`. May be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Stop once this many tokens have been generated (plus `initial_tokens`). Overrides `total_tokens`.
    #[arg(long, value_name = "TOKENS")]
    pub total_tokens: Option<u64>,
    /// Most tokens per turn. Overrides `turn_max_tokens`.
    #[arg(long, value_name = "TOKENS")]
    pub turn_max_tokens: Option<u32>,
    /// The assistant's context size in tokens. Overrides `[assistant] n_ctx`.
    #[arg(long, value_name = "TOKENS")]
    pub assistant_ctx: Option<u32>,
    /// The user's context size in tokens. Overrides `[user] n_ctx`.
    #[arg(long, value_name = "TOKENS")]
    pub user_ctx: Option<u32>,
    /// The assistant's chat template: a built-in name (gemma, chatml, llama3) or a Jinja file.
    #[arg(long, value_name = "NAME|FILE")]
    pub assistant_template: Option<String>,
    /// The user's chat template: a built-in name (gemma, chatml, llama3) or a Jinja file.
    #[arg(long, value_name = "NAME|FILE")]
    pub user_template: Option<String>,
    /// CPU threads per model (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
    /// Model layers to offload to the GPU (GPU builds only; default: all of them there).
    #[arg(long, value_name = "N")]
    pub gpu_layers: Option<u32>,
    /// Append every rendered prompt to FILE as JSONL (`conversation`, `index`, `speaker`, `prompt`), to check
    /// chat templates and the user's memory window.
    #[arg(long, value_name = "FILE")]
    pub prompt_log: Option<PathBuf>,
    /// Start over: overwrite transcripts already in the output folder instead of resuming them.
    #[arg(long)]
    pub force: bool,
    /// The engines of the two roles (in-process or HTTP).
    #[command(flatten)]
    pub engines: EngineArgs,
}

/// Settings resolved from the config file and the flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration with every flag applied.
    pub config: Config,
    /// Assistant GGUF (for an HTTP role: optional, read for its chat template only).
    pub assistant_model: Option<PathBuf>,
    /// User GGUF (for an HTTP role: optional, read for its chat template only).
    pub user_model: Option<PathBuf>,
    /// The assistant's engine.
    pub assistant_engine: RoleEngine,
    /// The user's engine.
    pub user_engine: RoleEngine,
    /// Seed of the first conversation.
    pub seed: u32,
}

/// Turns flags and the config file into [`Settings`]. Reads only the config file.
///
/// # Errors
/// A message naming the file or flag at fault and the fix.
pub fn resolve(args: &RunArgs) -> Result<Settings> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::from_str(DEFAULT_CONFIG, crate::config::Syntax::Toml, "examples/date.toml")?,
    };
    config = config.with_overrides(&args.set)?;
    if let Some(v) = args.total_tokens {
        config.total_tokens = v;
    }
    if let Some(v) = args.turn_max_tokens {
        config.turn_max_tokens = v;
    }
    for (m, ctx, template) in [
        (&mut config.assistant, args.assistant_ctx, &args.assistant_template),
        (&mut config.user, args.user_ctx, &args.user_template),
    ] {
        m.n_ctx = ctx.or(m.n_ctx);
        m.chat_template = template.clone().or(m.chat_template.take());
        m.threads = args.threads.or(m.threads);
        m.gpu_layers = args.gpu_layers.or(m.gpu_layers);
    }
    if let Some(m) = &args.assistant_model {
        config.assistant.model = Some(m.clone());
    }
    if let Some(m) = &args.user_model {
        config.user.model = Some(m.clone());
    }
    config.validate().map_err(|e| anyhow!("invalid settings: {e}"))?;
    let (assistant_engine, user_engine) = super::engines::resolve(&args.engines, &config)?;
    let assistant_model = config.assistant.model.clone().map(PathBuf::from);
    if assistant_model.is_none() && !assistant_engine.is_http() {
        bail!("no assistant model: pass --assistant-model PATH or set `model` under [assistant]");
    }
    let user_model = config.user.model.clone().map(PathBuf::from);
    if user_model.is_none() && !user_engine.is_http() {
        bail!("no user model: pass --user-model PATH or set `model` under [user]");
    }
    let seed = args.seed.or(config.seed).unwrap_or(42);
    config.seed = Some(seed);
    Ok(Settings { config, assistant_model, user_model, assistant_engine, user_engine, seed })
}

/// Makes sure `dir` exists and is writable, before any model is loaded.
fn check_out_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!("output folder '{}' cannot be created: choose a writable --out folder", dir.display())
    })?;
    let probe = dir.join(".parrot-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("output folder '{}' is not writable: choose another --out folder", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// File name of conversation `i`.
#[must_use]
pub fn transcript_name(i: u32) -> String {
    format!("conversation-{i:03}.jsonl")
}

fn cancel_flag() -> &'static AtomicBool {
    static CANCEL: OnceLock<&'static AtomicBool> = OnceLock::new();
    CANCEL.get_or_init(|| {
        let flag: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nparrot: interrupted; finishing the transcript (press Ctrl-C again to quit at once)");
        });
        flag
    })
}

/// Streams the conversation to stdout and appends every message to the transcript.
struct ConsoleSink {
    writer: TranscriptWriter,
    prompt_log: Option<(std::fs::File, u32)>,
    quiet: bool,
    color: bool,
}

impl ConsoleSink {
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
}

impl Sink for ConsoleSink {
    fn prompt(&mut self, index: u32, speaker: Speaker, prompt: &str) -> Result<()> {
        if let Some((file, conversation)) = &mut self.prompt_log {
            let line =
                serde_json::json!({"conversation": conversation, "index": index, "speaker": speaker, "prompt": prompt});
            // One write per line: parallel conversations append to the same file.
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
        self.writer.write(&Record::Turn(record.clone()))
    }
}

/// Runs `parrot run`.
///
/// # Errors
/// Bad settings, unreadable models, unreachable servers or an unwritable output folder, before anything is
/// generated.
pub fn run(global: &GlobalArgs, args: RunArgs) -> Result<ExitCode> {
    let settings = resolve(&args)?;
    for path in settings.assistant_model.iter().chain(&settings.user_model) {
        crate::gguf::inspect(path)?;
    }
    check_out_dir(&args.out)?;
    generate(global, &args, &settings)
}

/// Opens both roles' backends (`warn`: print what an HTTP engine will not honour).
fn open_roles(global: &GlobalArgs, args: &RunArgs, settings: &Settings, warn: bool) -> Result<[Box<dyn Backend>; 2]> {
    let config = &settings.config;
    let budget_ctx = u32::try_from(config.total_tokens.saturating_mul(5) / 4 + 1024).unwrap_or(u32::MAX);
    let a = RoleSpec {
        role: "assistant",
        engine: &settings.assistant_engine,
        model: &config.assistant,
        gguf: settings.assistant_model.as_deref(),
        sampler: &config.sampler,
        default_ctx: budget_ctx,
        verbose: global.verbose,
    };
    let u = RoleSpec {
        role: "user",
        engine: &settings.user_engine,
        model: &config.user,
        gguf: settings.user_model.as_deref(),
        sampler: config.user_sampler(),
        default_ctx: 2048,
        verbose: global.verbose,
    };
    Ok([super::engines::open(&a, &args.engines, warn)?, super::engines::open(&u, &args.engines, warn)?])
}

fn generate(global: &GlobalArgs, args: &RunArgs, settings: &Settings) -> Result<ExitCode> {
    let cancel = cancel_flag();
    let [mut assistant, mut user] = open_roles(global, args, settings, true)?;
    let config_json = serde_json::to_value(&settings.config)?;
    write_run_file(&args.out, &config_json)?;
    let run = OneRun { global, args, settings, config_json: &config_json, cancel };
    if args.engines.parallel > 1 && args.conversations > 1 {
        // The first pair checked that the servers answer; each worker opens its own.
        drop((assistant, user));
        return run.parallel();
    }
    let mut failures = 0u32;
    for i in 0..args.conversations {
        if cancel.load(Ordering::SeqCst) {
            return Ok(ExitCode::from(130));
        }
        match run.conversation(i, assistant.as_mut(), user.as_mut(), !global.quiet)? {
            Some(EndReason::Interrupted) => return Ok(ExitCode::from(130)),
            Some(EndReason::Error) => failures += 1,
            _ => {}
        }
    }
    Ok(if failures > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// What every conversation of one `parrot run` shares.
struct OneRun<'a> {
    global: &'a GlobalArgs,
    args: &'a RunArgs,
    settings: &'a Settings,
    config_json: &'a serde_json::Value,
    cancel: &'static AtomicBool,
}

impl OneRun<'_> {
    /// Runs (or resumes, or skips) conversation `i` into its transcript; `None` when it was already finished.
    fn conversation(
        &self,
        i: u32,
        assistant: &mut dyn Backend,
        user: &mut dyn Backend,
        stream: bool,
    ) -> Result<Option<EndReason>> {
        let (global, args, config) = (self.global, self.args, &self.settings.config);
        let seed = self.settings.seed.wrapping_add(i);
        let path = args.out.join(transcript_name(i));
        let header = Header {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            parrot_version: env!("CARGO_PKG_VERSION").into(),
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            config: self.config_json.clone(),
            assistant_model: assistant.describe(),
            user_model: user.describe(),
            backend: assistant.name(),
            user_backend: user.name(),
            seed,
            conversation_index: i,
        };
        let Some((writer, done)) = open_transcript(&path, &header, args.force)? else {
            if !global.quiet {
                eprintln!("{}: already finished, skipped", path.display());
            }
            return Ok(None);
        };
        assistant.reset();
        user.reset();
        let prompt_log = match &args.prompt_log {
            Some(p) => Some((
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("could not open --prompt-log file '{}'", p.display()))?,
                i,
            )),
            None => None,
        };
        let mut sink =
            ConsoleSink { writer, prompt_log, quiet: !stream, color: crate::output::stdout_color(global.no_color) };
        let mut roles = Roles { assistant, user };
        let summary = run_conversation(config, &mut roles, seed, &done, &mut sink, self.cancel)?;
        sink.writer.write(&Record::Summary(summary.clone()))?;
        eprintln!(
            "{}: {} messages, {} tokens, ended by {}, assistant {:.1} tok/s, user {:.1} tok/s",
            path.display(),
            summary.messages,
            summary.total_tokens,
            serde_json::to_value(summary.stop_reason)?.as_str().unwrap_or_default(),
            summary.assistant.tokens_per_s(),
            summary.user.tokens_per_s()
        );
        if summary.stop_reason == EndReason::Error {
            eprintln!("{}: error: {}", path.display(), summary.error.as_deref().unwrap_or_default());
        }
        Ok(Some(summary.stop_reason))
    }

    /// `--parallel N`: N threads, each with its own pair of backends, take the next conversation until all are
    /// done. Text is not streamed to stdout (it would interleave); each
    /// conversation's summary line still goes to stderr.
    fn parallel(&self) -> Result<ExitCode> {
        let next = std::sync::atomic::AtomicU32::new(0);
        let failures = std::sync::atomic::AtomicU32::new(0);
        let interrupted = AtomicBool::new(false);
        let workers = self.args.engines.parallel.min(self.args.conversations);
        let worker = || -> Result<()> {
            let [mut a, mut u] = open_roles(self.global, self.args, self.settings, false)?;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= self.args.conversations || self.cancel.load(Ordering::SeqCst) {
                    return Ok(());
                }
                match self.conversation(i, a.as_mut(), u.as_mut(), false)? {
                    Some(EndReason::Interrupted) => interrupted.store(true, Ordering::SeqCst),
                    Some(EndReason::Error) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        };
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers).map(|_| scope.spawn(worker)).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a worker thread panicked")))).collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        if interrupted.load(Ordering::SeqCst) || self.cancel.load(Ordering::SeqCst) {
            return Ok(ExitCode::from(130));
        }
        Ok(if failures.load(Ordering::SeqCst) > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
    }
}

/// Records the exact command and resolved config next to the transcripts.
fn write_run_file(dir: &Path, config: &serde_json::Value) -> Result<()> {
    let run = serde_json::json!({
        "parrot_version": crate::LONG_VERSION,
        "command": std::env::args().collect::<Vec<_>>(),
        "config": config,
    });
    let path = dir.join("run.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&run)?)
        .with_context(|| format!("could not write '{}'", path.display()))
}

/// Opens the transcript for conversation `header.conversation_index`: a new file, or an unfinished one to resume
/// (rewritten without its summary and any torn line). `None` when it is already finished.
fn open_transcript(path: &Path, header: &Header, force: bool) -> Result<Option<(TranscriptWriter, Vec<TurnRecord>)>> {
    if force || !path.exists() {
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
