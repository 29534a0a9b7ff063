//! Stage two of reading the command line: flags ([`crate::cli`]) and the config file become validated settings
//! ([`RunPlan`], [`SweepPlan`]) that the runner acts on. Like ripgrep's low/high args: everything that can be
//! checked without side effects is checked here, before a model loads or a file is written, and no clap type goes
//! past this module. The only I/O is reading the config file (and, for `--resume`, the folder's record).
//!
//! Each role's backend is resolved here once, into a [`BackendSpec`]; the runner opens what it names and never
//! looks at the flags again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::backend::http::fleet::{endpoint_label, read_endpoints, EndpointSpec};
use crate::backend::http::Flavor;
use crate::cli::{BackendArgs, BackendKind, GlobalArgs, RunArgs, SweepArgs};
use crate::config::{Config, ModelConfig, SamplerConfig};

pub mod grid;

/// The built-in scenario used when no `--config` is given: the original tool's date role-play.
pub const DEFAULT_CONFIG: &str = include_str!("../../examples/date.toml");

/// How parrot talks to the terminal, from the global flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct Console {
    /// Print no streamed text and no progress.
    pub quiet: bool,
    /// Color the streamed text (stdout is a terminal and colors are not switched off).
    pub color: bool,
    /// `-v` count.
    pub verbose: u8,
}

impl Console {
    /// The console the global flags ask for.
    #[must_use]
    pub fn new(global: &GlobalArgs) -> Self {
        Console { quiet: global.quiet, color: crate::output::stdout_color(global.no_color), verbose: global.verbose }
    }
}

/// The resolved backend of one role.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendSpec {
    /// In-process llama.cpp.
    Llama,
    /// One HTTP server, or a fleet of them serving the same model.
    Http {
        /// Its endpoints, at least one, each with its flavor filled in (URLs as given: they may hold credentials,
        /// so only their [`endpoint_label`]s are shown or recorded).
        endpoints: Vec<EndpointSpec>,
        /// The role's protocol (`--flavor`, or the first endpoint's), which names the backend (`http:<flavor>`).
        flavor: Flavor,
    },
}

impl BackendSpec {
    /// The endpoint labels (`scheme://host:port`) of an HTTP role, for messages and `run.json`; empty in-process.
    #[must_use]
    pub fn labels(&self) -> Vec<String> {
        match self {
            BackendSpec::Llama => Vec::new(),
            BackendSpec::Http { endpoints, .. } => {
                endpoints.iter().filter_map(|e| endpoint_label(&e.url).ok()).collect()
            }
        }
    }
}

impl BackendSpec {
    /// Whether the role runs on an HTTP server.
    #[must_use]
    pub fn is_http(&self) -> bool {
        matches!(self, BackendSpec::Http { .. })
    }
}

/// Which role a setting or a backend belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The assistant: the whole conversation in context.
    Assistant,
    /// The user: a memory window.
    User,
}

impl Role {
    /// `assistant` or `user`, as flags and config sections name it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Assistant => "assistant",
            Role::User => "user",
        }
    }
}

/// One role's model and backend.
#[derive(Debug, Clone)]
pub struct RoleSettings {
    /// Which role.
    pub role: Role,
    /// The GGUF file or registry name (resolved to a file by the runner). Required in-process; for an HTTP role
    /// optional, read for its chat template only.
    pub model: Option<PathBuf>,
    /// The backend that runs it.
    pub backend: BackendSpec,
}

/// Timeouts, retries and the API key's variable, for HTTP roles.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// The environment variable that holds the API key.
    pub api_key_env: String,
    /// A stalled stream fails after this long without bytes.
    pub timeout: Duration,
    /// Retries of a failed turn.
    pub retries: u32,
    /// The first retry's delay.
    pub backoff: Duration,
    /// The longest one turn may take (`--http-turn-deadline`); `None`: the stall timeout plus 1 s per token of the
    /// turn's limit ([`crate::backend::http::HttpOptions::turn_deadline_for`]).
    pub turn_deadline: Option<Duration>,
    /// The most requests in flight on one endpoint of a fleet (`--endpoint-cap`).
    pub endpoint_cap: Option<u32>,
}

/// Settings of one set of conversations: the config with every flag applied, and each role's backend.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration with every flag applied.
    pub config: Config,
    /// The assistant's model and backend.
    pub assistant: RoleSettings,
    /// The user's model and backend.
    pub user: RoleSettings,
    /// HTTP settings (used by HTTP roles only).
    pub http: HttpSettings,
    /// Seed of the first conversation.
    pub seed: u32,
}

impl Settings {
    /// The settings of one role.
    #[must_use]
    pub fn role(&self, role: Role) -> &RoleSettings {
        match role {
            Role::Assistant => &self.assistant,
            Role::User => &self.user,
        }
    }

    /// The config section of one role.
    #[must_use]
    pub fn model_config(&self, role: Role) -> &ModelConfig {
        match role {
            Role::Assistant => &self.config.assistant,
            Role::User => &self.config.user,
        }
    }

    /// The sampler of one role.
    #[must_use]
    pub fn sampler(&self, role: Role) -> &SamplerConfig {
        match role {
            Role::Assistant => &self.config.sampler,
            Role::User => self.config.user_sampler(),
        }
    }

    /// The context size an in-process role gets when its config names none: the assistant holds the whole
    /// conversation (the budget plus a quarter, plus room for the opening prompt), the user only its window.
    #[must_use]
    pub fn default_ctx(&self, role: Role) -> u32 {
        match role {
            Role::Assistant => u32::try_from(self.config.total_tokens.saturating_mul(5) / 4 + 1024).unwrap_or(u32::MAX),
            Role::User => 2048,
        }
    }
}

/// How a set of conversations runs, whatever its settings.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How many conversations (at least 1).
    pub conversations: u32,
    /// How many at once (at least 1).
    pub parallel: u32,
    /// Overwrite transcripts instead of resuming them.
    pub force: bool,
    /// Where to append rendered prompts.
    pub prompt_log: Option<PathBuf>,
    /// Fsync every turn (off only for measuring its cost).
    pub fsync: bool,
}

/// The command line that started a folder's run, as `run.json` / `sweep.json` record it, and the one now running.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The command `--resume` reruns: the original one, never a `--resume` itself.
    pub command: Vec<String>,
    /// The folder it was started in (relative paths in it are relative to this).
    pub cwd: Option<PathBuf>,
    /// When this process resumes a run: its own command line, appended to the record's history.
    pub resumed_by: Option<Vec<String>>,
}

impl Invocation {
    /// This process's command line, as a fresh start, with the credentials of any URL in it replaced by `***`.
    #[must_use]
    pub fn current() -> Self {
        Invocation { command: redacted_args(), cwd: std::env::current_dir().ok(), resumed_by: None }
    }
}

/// This process's arguments as they may be recorded: URL credentials replaced by `***`
/// ([`crate::backend::http::redact_credentials`]).
fn redacted_args() -> Vec<String> {
    std::env::args().map(|a| crate::backend::http::redact_credentials(&a)).collect()
}

/// A validated `parrot run`.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The settings of its conversations.
    pub settings: Settings,
    /// The output folder.
    pub out: PathBuf,
    /// Count, parallelism, force, prompt log.
    pub options: RunOptions,
    /// The command line to record.
    pub invocation: Invocation,
}

/// One cell of a sweep.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Its folder name inside the sweep's root (unique, at most 255 bytes).
    pub name: String,
    /// Its `KEY=VALUE` overrides, in full.
    pub overrides: Vec<String>,
    /// Its settings.
    pub settings: Settings,
}

/// A validated `parrot sweep`.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// The sweep's root folder.
    pub root: PathBuf,
    /// The grid's axes.
    pub axes: Vec<grid::Axis>,
    /// Every cell, in order (first axis slowest).
    pub cells: Vec<Cell>,
    /// Count, parallelism, force, prompt log (per cell).
    pub options: RunOptions,
    /// The command line to record.
    pub invocation: Invocation,
}

/// What a command line (or a folder's record) asks for.
#[derive(Debug, Clone)]
pub enum Plan {
    /// One run folder.
    Run(Box<RunPlan>),
    /// A sweep.
    Sweep(Box<SweepPlan>),
}

/// Resolves `parrot run`'s flags. `--resume` is handled by [`resume`].
///
/// # Errors
/// A message naming the file or flag at fault and the fix.
pub fn run(args: &RunArgs, invocation: Invocation) -> Result<RunPlan> {
    let out = args.out.clone().ok_or_else(|| anyhow!("--out DIR is required: the folder for the transcripts"))?;
    let settings = settings(args, &[])?;
    Ok(RunPlan { settings, out, options: options(args), invocation })
}

/// Resolves `parrot sweep`'s flags: every cell's settings are checked before anything runs.
///
/// # Errors
/// A bad grid, or a cell whose settings are refused (naming the cell).
pub fn sweep(args: &SweepArgs, invocation: Invocation) -> Result<SweepPlan> {
    let root = args.run.out.clone().ok_or_else(|| anyhow!("--out DIR is required: the sweep's root folder"))?;
    let axes = grid::parse_grid(&args.grid)?;
    let overrides = grid::expand_grid(&axes);
    let names = grid::cell_names(&overrides)?;
    let mut cells = Vec::with_capacity(overrides.len());
    for (name, overrides) in names.into_iter().zip(overrides) {
        let settings =
            settings(&args.run, &overrides).with_context(|| format!("sweep cell {}", overrides.join(", ")))?;
        cells.push(Cell { name, overrides, settings });
    }
    Ok(SweepPlan { root, axes, cells, options: options(&args.run), invocation })
}

/// The largest `run.json` / `sweep.json` `--resume` reads: the record holds the command, the resolved config (a
/// config file is at most [`crate::config::MAX_CONFIG_BYTES`]) and a line per resume. A bound keeps a damaged or
/// crafted record from filling memory, and keeps every command-line argument in it far below `i32` characters.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

/// Resolves `parrot run --resume DIR`: the command recorded in `DIR/sweep.json` or `DIR/run.json`, from the folder
/// it was started in (the process moves there, so that its relative paths mean what they meant), never with
/// `--force`.
///
/// # Errors
/// No record in `dir`, a record that is not JSON or names no command, or a recorded command that no longer parses.
pub fn resume(dir: &Path) -> Result<Plan> {
    let file = ["sweep.json", "run.json"].iter().map(|f| dir.join(f)).find(|p| p.is_file()).ok_or_else(|| {
        anyhow!("--resume '{}': no run.json or sweep.json there; pass the folder of a run", dir.display())
    })?;
    let text = crate::config::read_bounded_text(&file, MAX_RECORD_BYTES)
        .with_context(|| format!("--resume: could not read '{}'", file.display()))?;
    let record: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("'{}' is not valid JSON", file.display()))?;
    let argv: Vec<String> = serde_json::from_value(record["command"].clone())
        .with_context(|| format!("'{}' records no command", file.display()))?;
    if argv.iter().any(|a| a.contains(&format!("://{}", crate::backend::http::REDACTED))) {
        bail!(
            "--resume '{}': the recorded command had credentials in a URL, which parrot never stores: rerun the \
             original command with them instead (it continues the same folder; finished conversations are skipped)",
            dir.display()
        );
    }
    let cwd = record["cwd"].as_str().map(PathBuf::from);
    if let Some(cwd) = &cwd {
        std::env::set_current_dir(cwd)
            .with_context(|| format!("--resume: cannot enter the run's folder '{}'", cwd.display()))?;
    }
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&argv).map_err(|e| {
        anyhow!("--resume: the recorded command in '{}' no longer parses: {}", file.display(), e.kind())
    })?;
    let invocation = Invocation { command: argv, cwd, resumed_by: Some(redacted_args()) };
    let mut plan = match cli.command {
        crate::cli::Command::Run(args) if args.resume.is_none() => Plan::Run(Box::new(run(&args, invocation)?)),
        crate::cli::Command::Sweep(args) => Plan::Sweep(Box::new(sweep(&args, invocation)?)),
        crate::cli::Command::Run(_) => bail!(
            "--resume: '{}' records only a `--resume` (older parrot versions wrote that over the original command): \
             rerun the original `parrot run` or `parrot sweep` command instead",
            file.display()
        ),
        _ => bail!("--resume: '{}' does not record a run or a sweep", file.display()),
    };
    match &mut plan {
        Plan::Run(p) => p.options.force = false,
        Plan::Sweep(p) => p.options.force = false,
    }
    Ok(plan)
}

fn options(args: &RunArgs) -> RunOptions {
    RunOptions {
        conversations: args.conversations,
        parallel: args.parallel.max(1),
        force: args.force,
        prompt_log: args.prompt_log.clone(),
        fsync: !args.no_fsync,
    }
}

/// The config file, `--set` (then the cell's `overrides`) and the other flags, into validated [`Settings`].
fn settings(args: &RunArgs, overrides: &[String]) -> Result<Settings> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::from_str(DEFAULT_CONFIG, crate::config::Syntax::Toml, "examples/date.toml")?,
    };
    config = config.with_overrides(&[&args.set[..], overrides].concat())?;
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
    let files = EndpointFiles {
        assistant: args.backends.endpoints.as_deref().map(|p| read_endpoints(p, "--endpoints")).transpose()?,
        user: args.backends.user_endpoints.as_deref().map(|p| read_endpoints(p, "--user-endpoints")).transpose()?,
    };
    let (assistant, user) = backends(&args.backends, &config, args.parallel, &files)?;
    // The backends hold the URLs; the config is recorded (run.json, transcript headers), so without credentials.
    for url in [&mut config.api_url, &mut config.user_api_url].into_iter().flatten() {
        *url = crate::backend::http::redact_credentials(url);
    }
    let role = |role: Role, backend: BackendSpec, model: &Option<String>| -> Result<RoleSettings> {
        if model.is_none() && !backend.is_http() {
            bail!("no {0} model: pass --{0}-model PATH or set `model` under [{0}]", role.as_str());
        }
        Ok(RoleSettings { role, model: model.as_ref().map(PathBuf::from), backend })
    };
    let assistant = role(Role::Assistant, assistant, &config.assistant.model)?;
    let user = role(Role::User, user, &config.user.model)?;
    let seed = args.seed.or(config.seed).unwrap_or(42);
    config.seed = Some(seed);
    let b = &args.backends;
    let http = HttpSettings {
        api_key_env: b.api_key_env.clone(),
        timeout: Duration::from_secs_f64(b.http_timeout),
        retries: b.http_retries,
        backoff: Duration::from_millis(b.http_backoff_ms),
        turn_deadline: b.http_turn_deadline.map(Duration::from_secs_f64),
        endpoint_cap: b.endpoint_cap,
    };
    Ok(Settings { config, assistant, user, http, seed })
}

/// The endpoints files of the two roles (`--endpoints`, `--user-endpoints`), already read and parsed.
#[derive(Debug, Clone, Default)]
pub struct EndpointFiles {
    /// The assistant's.
    pub assistant: Option<Vec<EndpointSpec>>,
    /// The user's.
    pub user: Option<Vec<EndpointSpec>>,
}

/// Turns the flags, the endpoints files and the config's `api_url` / `user_api_url` into each role's backend. Pure.
///
/// # Errors
/// A missing flavor or URL, a URL that is not `http(s)://HOST:PORT` (credentials in a URL are kept for the requests
/// and redacted wherever the URL is shown or recorded), one listed twice, or `--parallel` above 1 with one role in-process and one on
/// HTTP; the message names the flag.
pub fn backends(
    args: &BackendArgs,
    config: &Config,
    parallel: u32,
    files: &EndpointFiles,
) -> Result<(BackendSpec, BackendSpec)> {
    let from_flags = |urls: &[String], flag: &str| -> Result<Option<Vec<EndpointSpec>>> {
        if urls.is_empty() {
            return Ok(None);
        }
        urls.iter()
            .map(|u| {
                endpoint_label(u)
                    .map_err(|e| anyhow!("{flag} '{}': {e}", crate::backend::http::strip_credentials(u)))?;
                Ok(EndpointSpec { url: u.clone(), flavor: None, weight: 1 })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    };
    let from_config = |url: &Option<String>, key: &str| -> Result<Option<Vec<EndpointSpec>>> {
        let Some(u) = url else { return Ok(None) };
        endpoint_label(u)
            .map_err(|e| anyhow!("config `{key}` '{}': {e}", crate::backend::http::strip_credentials(u)))?;
        Ok(Some(vec![EndpointSpec { url: u.clone(), flavor: None, weight: 1 }]))
    };
    let assistant_list = match from_flags(&args.url, "--url")? {
        Some(l) => Some(l),
        None => files.assistant.clone(),
    };
    let assistant = match args.backend {
        BackendKind::Llama => BackendSpec::Llama,
        BackendKind::Http => {
            let list = match assistant_list.clone() {
                Some(l) => l,
                None => from_config(&config.api_url, "api_url")?.ok_or_else(|| {
                    anyhow!(
                        "--backend http needs the server's address: pass --url URL (repeatable), --endpoints FILE, \
                         or set `api_url` in the config"
                    )
                })?,
            };
            http_spec(list, args.flavor, "--flavor", "the assistant")?
        }
    };
    let user = match args.user_backend.unwrap_or(args.backend) {
        BackendKind::Llama => BackendSpec::Llama,
        BackendKind::Http => {
            let list = match from_flags(&args.user_url, "--user-url")? {
                Some(l) => l,
                None => match files.user.clone().or(assistant_list) {
                    Some(l) => l,
                    None => from_config(&config.user_api_url, "user_api_url")?
                        .map_or_else(|| from_config(&config.api_url, "api_url"), |l| Ok(Some(l)))?
                        .ok_or_else(|| {
                            anyhow!(
                                "an HTTP user role needs its server: pass --user-url URL (repeatable), \
                                 --user-endpoints FILE, or set `user_api_url`"
                            )
                        })?,
                },
            };
            http_spec(list, args.user_flavor.or(args.flavor), "--user-flavor (or --flavor)", "the user")?
        }
    };
    if parallel > 1 && assistant.is_http() != user.is_http() {
        bail!(
            "--parallel {parallel} needs both roles on the same kind of backend: one in-process and one HTTP role run \
             one conversation at a time"
        );
    }
    Ok((assistant, user))
}

/// One HTTP role from its endpoint list: every endpoint gets a flavor (its own, else the role's), none twice.
fn http_spec(mut list: Vec<EndpointSpec>, flavor: Option<Flavor>, flag: &str, role: &str) -> Result<BackendSpec> {
    let mut seen = std::collections::HashSet::new();
    for e in &mut list {
        let label = endpoint_label(&e.url)?;
        if !seen.insert(label.clone()) {
            bail!("{role}'s endpoint {label} is listed twice; list each server once (give it a weight for a larger share)");
        }
        e.flavor = Some(e.flavor.or(flavor).ok_or_else(|| {
            anyhow!("an HTTP role needs {flag} llama-server, koboldcpp or openai (or a flavor on each endpoints line)")
        })?);
    }
    let first = list.first().and_then(|e| e.flavor).ok_or_else(|| anyhow!("{role} has no HTTP endpoint"))?;
    Ok(BackendSpec::Http { flavor: flavor.unwrap_or(first), endpoints: list })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        b: BackendArgs,
    }

    fn parse(args: &[&str]) -> BackendArgs {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap().b
    }

    fn http(url: &str, flavor: Flavor) -> BackendSpec {
        BackendSpec::Http { endpoints: vec![EndpointSpec { url: url.into(), flavor: Some(flavor), weight: 1 }], flavor }
    }

    fn specs(urls: &[&str], flavor: Flavor) -> Vec<EndpointSpec> {
        urls.iter().map(|u| EndpointSpec { url: (*u).into(), flavor: Some(flavor), weight: 1 }).collect()
    }

    #[test]
    fn repeated_urls_make_a_fleet_for_both_roles_unless_the_user_has_its_own() {
        let flags = ["--backend", "http", "--flavor", "openai", "--url", "http://a:1", "--url", "http://b:2"];
        let (a, u) = backends(&parse(&flags), &Config::default(), 6, &EndpointFiles::default()).unwrap();
        let fleet = BackendSpec::Http {
            endpoints: specs(&["http://a:1", "http://b:2"], Flavor::Openai),
            flavor: Flavor::Openai,
        };
        assert_eq!(a, fleet);
        assert_eq!(u, fleet, "the user role defaults to the assistant's servers");
        assert_eq!(a.labels(), ["http://a:1", "http://b:2"]);
        let more = [&flags[..], &["--user-url", "http://c:3"]].concat();
        let (_, u) = backends(&parse(&more), &Config::default(), 6, &EndpointFiles::default()).unwrap();
        assert_eq!(u, http("http://c:3", Flavor::Openai));
    }

    #[test]
    fn endpoints_files_give_each_line_its_flavor_and_weight() {
        let file =
            crate::backend::http::fleet::parse_endpoints("http://a:1 llama-server 2\nhttp://b:2\n", "f").unwrap();
        let files = EndpointFiles { assistant: Some(file), user: None };
        let flags = ["--backend", "http", "--flavor", "openai"];
        let (a, u) = backends(&parse(&flags), &Config::default(), 1, &files).unwrap();
        let BackendSpec::Http { endpoints, flavor } = &a else { panic!("http") };
        assert_eq!(*flavor, Flavor::Openai);
        assert_eq!((endpoints[0].flavor, endpoints[0].weight), (Some(Flavor::LlamaServer), 2));
        assert_eq!((endpoints[1].flavor, endpoints[1].weight), (Some(Flavor::Openai), 1));
        assert_eq!(u, a, "the user role defaults to the assistant's file");
        // Without --flavor, a line that names none has no protocol.
        let e = backends(&parse(&["--backend", "http"]), &Config::default(), 1, &files).unwrap_err();
        assert!(e.to_string().contains("--flavor"), "{e}");
        assert!(T::try_parse_from(["t", "--url", "http://a:1", "--endpoints", "f"]).is_err(), "one or the other");
        assert!(T::try_parse_from(["t", "--endpoint-cap", "0"]).is_err());
    }

    #[test]
    fn fleet_urls_that_are_bad_or_twice_are_refused_naming_the_flag_without_credentials() {
        let go = |extra: &[&str]| {
            let flags = [&["--backend", "http", "--flavor", "openai"][..], extra].concat();
            backends(&parse(&flags), &Config::default(), 1, &EndpointFiles::default()).unwrap_err().to_string()
        };
        let e = go(&["--url", "http://a:1", "--url", "a:1:2"]);
        assert!(e.starts_with("--url 'a:1:2'") && e.contains("http://HOST:PORT"), "{e}");
        let e = go(&["--url", "http://a:1", "--url", "http://a:1/"]);
        assert!(e.contains("http://a:1 is listed twice"), "{e}");
        let e = go(&["--url", "http://me:sk-secret@a:1", "--url", "http://me:sk-secret@a:1:2"]);
        assert!(e.starts_with("--url 'http://a:1:2'") && !e.contains("sk-secret"), "{e}");
        let config = Config { api_url: Some("https://me:pw@h:1:2".into()), ..Config::default() };
        let e = backends(&parse(&["--backend", "http", "--flavor", "openai"]), &config, 1, &EndpointFiles::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_url") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn http_roles_take_urls_from_flags_then_config() {
        let mut config = Config { api_url: Some("http://127.0.0.1:8081".into()), ..Config::default() };
        config.user_api_url = Some("http://127.0.0.1:8082".into());
        let (a, u) =
            backends(&parse(&["--backend", "http", "--flavor", "koboldcpp"]), &config, 1, &EndpointFiles::default())
                .unwrap();
        assert_eq!(a, http("http://127.0.0.1:8081", Flavor::Koboldcpp));
        assert_eq!(u, http("http://127.0.0.1:8082", Flavor::Koboldcpp));
        let (_, u) = backends(
            &parse(&["--backend", "http", "--flavor", "openai", "--url", "http://h:1"]),
            &config,
            4,
            &EndpointFiles::default(),
        )
        .unwrap();
        assert_eq!(u, http("http://h:1", Flavor::Openai), "the flag beats the config");
        let mixed = ["--backend", "http", "--flavor", "openai", "--url", "http://h:1", "--user-backend", "llama"];
        let (a, u) = backends(&parse(&mixed), &Config::default(), 1, &EndpointFiles::default()).unwrap();
        assert_eq!(a, http("http://h:1", Flavor::Openai));
        assert_eq!(u, BackendSpec::Llama);
        let (a, u) = backends(&parse(&[]), &Config::default(), 4, &EndpointFiles::default()).unwrap();
        assert!(!a.is_http() && !u.is_http(), "in-process --parallel is fine");
    }

    #[test]
    fn missing_flavor_url_and_parallel_with_mixed_roles_are_errors_naming_the_flag() {
        let e = backends(
            &parse(&["--backend", "http", "--url", "http://h:1"]),
            &Config::default(),
            1,
            &EndpointFiles::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--flavor"), "{e}");
        let e = backends(
            &parse(&["--backend", "http", "--flavor", "openai"]),
            &Config::default(),
            1,
            &EndpointFiles::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--url"), "{e}");
        let mixed = ["--backend", "http", "--flavor", "openai", "--url", "http://h:1", "--user-backend", "llama"];
        let e = backends(&parse(&mixed), &Config::default(), 4, &EndpointFiles::default()).unwrap_err();
        assert!(e.to_string().contains("--parallel 4"), "{e}");
        assert!(T::try_parse_from(["t", "--http-timeout", "-1"]).is_err());
    }

    fn cli(args: &[&str]) -> crate::cli::Cli {
        crate::cli::Cli::try_parse_from(std::iter::once("parrot").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn zero_conversations_are_refused_by_the_flag_parser() {
        let e = crate::cli::Cli::try_parse_from(["parrot", "run", "--out", "x", "-n", "0", "--assistant-model", "a"])
            .unwrap_err();
        assert!(e.to_string().contains("-n 1 or more"), "{e}");
    }

    #[test]
    fn a_record_of_only_a_resume_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let record = serde_json::json!({"command": ["parrot", "run", "--resume", "x"]});
        std::fs::write(dir.path().join("run.json"), record.to_string()).unwrap();
        let e = resume(dir.path()).unwrap_err().to_string();
        assert!(e.contains("rerun the original"), "{e}");
    }

    /// #15: the record `--resume` reads is input; one past [`MAX_RECORD_BYTES`] is refused, naming the file.
    #[test]
    fn issue_15_resume_refuses_an_oversized_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = serde_json::json!({"command": ["parrot", "run"]}).to_string();
        record.push_str(&" ".repeat(usize::try_from(MAX_RECORD_BYTES).unwrap()));
        std::fs::write(dir.path().join("run.json"), record).unwrap();
        let e = format!("{:#}", resume(dir.path()).unwrap_err());
        assert!(e.contains("run.json") && e.contains("larger than 64 MiB") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn resume_reruns_the_recorded_command_without_force_any_number_of_times() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let argv = [
            "parrot",
            "run",
            "--force",
            "--out",
            out.to_str().unwrap(),
            "--assistant-model",
            "a.gguf",
            "--user-model",
            "u.gguf",
        ];
        let crate::cli::Command::Run(args) = cli(&argv[1..]).command else { panic!() };
        let invocation =
            Invocation { command: argv.iter().map(|s| (*s).to_string()).collect(), cwd: None, resumed_by: None };
        let plan = run(&args, invocation).unwrap();
        assert!(plan.options.force);
        let record = serde_json::json!({"command": argv, "history": [{"command": ["parrot", "run", "--resume", "x"]}]});
        std::fs::write(out.join("run.json"), record.to_string()).unwrap();
        for _ in 0..2 {
            let Plan::Run(p) = resume(&out).unwrap() else { panic!("a run") };
            assert!(!p.options.force, "--resume never carries --force");
            assert_eq!(p.invocation.command, argv, "the recorded command is kept, not the resume");
            assert!(p.invocation.resumed_by.is_some());
        }
    }
}
