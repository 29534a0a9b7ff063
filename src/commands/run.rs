//! `parrot run`: the I/O shell around the conversation driver. It resolves the config and flags into settings,
//! checks every input before touching a model (config, model files, output folder), loads the two models (or
//! connects to their HTTP servers: `--backend http`, see [`super::engines`]), then runs `-n` conversations one after
//! another, each into its own transcript, streaming the text to stdout.
//!
//! Interruption: the first Ctrl-C stops generation at the next token and closes the transcript after its last
//! complete turn with an `interrupted` summary; rerunning the same command resumes it. A second Ctrl-C exits at
//! once (the file is still valid: every line is flushed when written).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::engines::{EngineArgs, RoleEngines};
use crate::cli::GlobalArgs;
use crate::commands::session::{run_set, Engines, RunSet};
use crate::config::Config;

/// The built-in scenario used when no `--config` is given: the original tool's date role-play.
pub const DEFAULT_CONFIG: &str = include_str!("../../examples/date.toml");

/// Arguments of `parrot run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The config file: parrot's TOML or the original tool's config.json. Without it, the built-in date scenario
    /// (examples/date.toml) is used.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The assistant model: a GGUF file, or a name from the model registry (`parrot models list`), fetched on first
    /// use. Overrides `[assistant] model` in the config.
    #[arg(long, value_name = "PATH|NAME")]
    pub assistant_model: Option<String>,
    /// The user model: a GGUF file, or a name from the model registry (`parrot models list`), fetched on first use.
    /// Overrides `[user] model` in the config.
    #[arg(long, value_name = "PATH|NAME")]
    pub user_model: Option<String>,
    /// The folder for the transcripts (created if needed); conversation i goes to `conversation-<i>.jsonl`.
    #[arg(short, long, value_name = "DIR", required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run (or sweep) recorded in DIR/run.json or DIR/sweep.json with its exact command: finished
    /// conversations are skipped, unfinished ones continue from their last complete turn. Other run flags are
    /// taken from the recorded command.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
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
    /// Conversations generated at once. In-process, they are separate sequences of one llama.cpp context per
    /// model, decoded in one batch per step; progress bars replace the streamed text.
    #[arg(short = 'P', long, value_name = "P", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
    /// Start over: overwrite transcripts already in the output folder instead of resuming them.
    #[arg(long)]
    pub force: bool,
    /// The engines of the two roles: in-process (default) or HTTP servers.
    #[command(flatten)]
    pub engines: EngineArgs,
}

impl RunArgs {
    /// The `--out` folder.
    ///
    /// # Errors
    /// When it was not given (only `--resume` may leave it out).
    pub fn out_dir(&self) -> Result<&Path> {
        self.out.as_deref().ok_or_else(|| anyhow!("--out DIR is required: the folder for the transcripts"))
    }
}

/// Settings resolved from the config file and the flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration with every flag applied.
    pub config: Config,
    /// Assistant GGUF. For an HTTP role it is optional (read for its chat template only) and empty when not given.
    pub assistant_model: PathBuf,
    /// User GGUF. For an HTTP role it is optional (read for its chat template only) and empty when not given.
    pub user_model: PathBuf,
    /// Which engine runs each role.
    pub roles: RoleEngines,
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
    let roles = super::engines::resolve(&args.engines, &config, args.parallel)?;
    let assistant_model = match config.assistant.model.clone() {
        Some(m) => m,
        None if roles.assistant.is_http() => String::new(),
        None => bail!("no assistant model: pass --assistant-model PATH or set `model` under [assistant]"),
    };
    let user_model = match config.user.model.clone() {
        Some(m) => m,
        None if roles.user.is_http() => String::new(),
        None => bail!("no user model: pass --user-model PATH or set `model` under [user]"),
    };
    let seed = args.seed.or(config.seed).unwrap_or(42);
    config.seed = Some(seed);
    Ok(Settings { config, assistant_model: assistant_model.into(), user_model: user_model.into(), roles, seed })
}

/// Makes sure `dir` exists and is writable, before any model is loaded.
pub(crate) fn check_out_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!("output folder '{}' cannot be created: choose a writable --out folder", dir.display())
    })?;
    let probe = dir.join(".parrot-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("output folder '{}' is not writable: choose another --out folder", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Runs `parrot run`.
///
/// # Errors
/// Bad settings, unreadable models or an unwritable output folder, before anything is generated.
pub fn run(global: &GlobalArgs, args: RunArgs) -> Result<ExitCode> {
    if let Some(dir) = &args.resume {
        return resume(global, dir);
    }
    let out = args.out_dir()?.to_path_buf();
    let mut settings = resolve(&args)?;
    check_out_dir(&out)?;
    fetch_models(global, &mut settings)?;
    generate(global, &args, &settings)
}

/// Reruns the command recorded in `dir` (a run folder, a sweep folder or a sweep cell), from the folder it was
/// started in.
fn resume(global: &GlobalArgs, dir: &Path) -> Result<ExitCode> {
    let (file, text) = ["sweep.json", "run.json"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok().map(|t| (dir.join(f), t)))
        .ok_or_else(|| {
            anyhow!("--resume '{}': no run.json or sweep.json there; pass the folder of a run", dir.display())
        })?;
    let record: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("'{}' is not valid JSON", file.display()))?;
    let argv: Vec<String> = serde_json::from_value(record["command"].clone())
        .with_context(|| format!("'{}' records no command", file.display()))?;
    if let Some(cwd) = record["cwd"].as_str() {
        std::env::set_current_dir(cwd).with_context(|| format!("--resume: cannot enter the run's folder '{cwd}'"))?;
    }
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&argv)
        .map_err(|e| anyhow!("--resume: the recorded command no longer parses: {}", e.kind()))?;
    match cli.command {
        crate::cli::Command::Run(args) if args.resume.is_none() => run(global, *args),
        crate::cli::Command::Sweep(args) => crate::commands::sweep::run(global, *args),
        _ => bail!("--resume: '{}' does not record a run or a sweep", file.display()),
    }
}

/// Turns registry names into files (fetching them on first use) and checks both GGUF headers, before anything is
/// loaded.
///
/// # Errors
/// An unknown name (with the known ones), a failed download, a missing, foreign or truncated file.
pub(crate) fn fetch_models(global: &GlobalArgs, settings: &mut Settings) -> Result<()> {
    let opts = crate::models::ResolveOptions { quiet: global.quiet, ..Default::default() };
    for path in [&mut settings.assistant_model, &mut settings.user_model] {
        if path.as_os_str().is_empty() {
            continue; // an HTTP role without a GGUF
        }
        *path = crate::models::resolve_model(&path.to_string_lossy(), &opts)?;
        crate::gguf::inspect(path)?;
    }
    Ok(())
}

/// Runs `-n` conversations with `settings` into `args.out` (the part of `run` that a sweep repeats per cell).
fn generate(global: &GlobalArgs, args: &RunArgs, settings: &Settings) -> Result<ExitCode> {
    let job = RunSet {
        settings,
        out: args.out_dir()?,
        conversations: args.conversations,
        parallel: args.parallel,
        force: args.force,
        prompt_log: args.prompt_log.as_deref(),
    };
    let mut engines = Engines::default();
    let outcome = run_set(global, &job, &mut engines)?;
    Ok(outcome.exit_code())
}
