//! Which engine runs each role of `parrot run` (and of every sweep cell), and how a set of conversations runs when a
//! role is an HTTP server. `run.rs` resolves the flags into [`RoleEngines`]; `session::run_set` hands a set with an
//! HTTP role to [`run_set_http`], which writes the same transcripts, `run.json` and summary lines as the in-process
//! path, through the same helpers.
//!
//! `--parallel N` with HTTP roles keeps N conversations in flight against the servers: N threads, each with its own
//! pair of backends (its own connections), each taking the next conversation index when it finishes one. Every
//! conversation keeps its own transcript and seed (S + i), so a parallel run writes exactly the files a sequential
//! one would; the text is not streamed (it would interleave), the summary lines still are. A run with one role
//! in-process and one on HTTP runs one conversation at a time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;

use super::session::{
    cancel_flag, open_transcript, report, transcript_name, write_run_file, ConsoleSink, Outcome, RunSet,
};
use crate::backend::http::{check_sampler, ApiKey, Flavor, HttpBackend, HttpOptions};
use crate::backend::Backend;
use crate::cli::GlobalArgs;
use crate::config::{Config, ModelConfig, SamplerConfig};
use crate::conversation::{run_conversation, Roles};

/// The kind of engine of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// llama.cpp in this process, loading the GGUF given with --assistant-model / --user-model.
    Llama,
    /// A server reached over HTTP at --url / --user-url, speaking --flavor / --user-flavor.
    Http,
}

/// Flags that choose the engines.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// The assistant's engine: `llama` runs the GGUF in this process, `http` talks to a server at --url. The user
    /// role uses the same engine unless --user-backend says otherwise.
    #[arg(long, value_enum, value_name = "KIND", default_value = "llama")]
    pub backend: BackendKind,
    /// The protocol of the assistant's server: `llama-server`, `koboldcpp`, or `openai` (aphrodite-engine, vLLM,
    /// llama-cpp-python). Required with `--backend http`.
    #[arg(long, value_enum, value_name = "FLAVOR")]
    pub flavor: Option<Flavor>,
    /// The assistant's server, e.g. `http://127.0.0.1:8080`. Default: `api_url` from the config.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The user's engine (default: the same as --backend).
    #[arg(long, value_enum, value_name = "KIND")]
    pub user_backend: Option<BackendKind>,
    /// The protocol of the user's server (default: the same as --flavor).
    #[arg(long, value_enum, value_name = "FLAVOR")]
    pub user_flavor: Option<Flavor>,
    /// The user's server. Default: the assistant's --url when given, else `user_api_url` from the config, else
    /// `api_url`.
    #[arg(long, value_name = "URL")]
    pub user_url: Option<String>,
    /// The environment variable that holds the servers' API key, sent as a bearer token. The key itself is never
    /// printed or written to a transcript.
    #[arg(long, value_name = "NAME", default_value = "PARROT_API_KEY")]
    pub api_key_env: String,
    /// Seconds to wait for an HTTP server's next bytes before the attempt counts as failed (a stalled stream).
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0, value_parser = positive_seconds)]
    pub http_timeout: f64,
    /// How many times a failed HTTP turn is retried, with exponential backoff, before the conversation ends with
    /// `error`.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub http_retries: u32,
    /// The first retry's delay in milliseconds; each further retry doubles it (at most 30 s).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub http_backoff_ms: u64,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 1e9 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// The resolved engine of one role.
#[derive(Debug, Clone, PartialEq)]
pub enum RoleEngine {
    /// In-process llama.cpp.
    Llama,
    /// An HTTP server.
    Http {
        /// Its base URL.
        url: String,
        /// Its protocol.
        flavor: Flavor,
    },
}

impl RoleEngine {
    /// Whether the role runs on an HTTP server.
    #[must_use]
    pub fn is_http(&self) -> bool {
        matches!(self, RoleEngine::Http { .. })
    }
}

/// The engines of both roles, and the HTTP settings.
#[derive(Debug, Clone)]
pub struct RoleEngines {
    /// The assistant's engine.
    pub assistant: RoleEngine,
    /// The user's engine.
    pub user: RoleEngine,
    /// Timeouts, retries and the API key's variable, for HTTP roles.
    pub http: EngineArgs,
}

impl RoleEngines {
    /// Whether either role runs on an HTTP server.
    #[must_use]
    pub fn any_http(&self) -> bool {
        self.assistant.is_http() || self.user.is_http()
    }
}

/// Turns the flags and the config's `api_url` / `user_api_url` into each role's engine. Pure.
///
/// # Errors
/// A missing flavor or URL, or `--parallel` above 1 with one role in-process and one on HTTP; the message names the
/// flag.
pub fn resolve(args: &EngineArgs, config: &Config, parallel: u32) -> Result<RoleEngines> {
    let assistant = match args.backend {
        BackendKind::Llama => RoleEngine::Llama,
        BackendKind::Http => RoleEngine::Http {
            url: args.url.clone().or_else(|| config.api_url.clone()).ok_or_else(|| {
                anyhow!("--backend http needs the server's address: pass --url URL or set `api_url` in the config")
            })?,
            flavor: args
                .flavor
                .ok_or_else(|| anyhow!("--backend http needs --flavor llama-server, koboldcpp or openai"))?,
        },
    };
    let user = match args.user_backend.unwrap_or(args.backend) {
        BackendKind::Llama => RoleEngine::Llama,
        BackendKind::Http => RoleEngine::Http {
            url: args
                .user_url
                .clone()
                .or_else(|| args.url.clone())
                .or_else(|| config.user_api_url.clone())
                .or_else(|| config.api_url.clone())
                .ok_or_else(|| {
                    anyhow!("an HTTP user role needs its server: pass --user-url URL or set `user_api_url`")
                })?,
            flavor: args.user_flavor.or(args.flavor).ok_or_else(|| {
                anyhow!("an HTTP user role needs --user-flavor (or --flavor) llama-server, koboldcpp or openai")
            })?,
        },
    };
    if parallel > 1 && assistant.is_http() != user.is_http() {
        bail!(
            "--parallel {parallel} needs both roles on the same kind of engine: one in-process and one HTTP role run \
             one conversation at a time"
        );
    }
    Ok(RoleEngines { assistant, user, http: args.clone() })
}

/// Everything needed to open one role's backend.
pub struct RoleSpec<'a> {
    /// `assistant` or `user`, for messages.
    pub role: &'a str,
    /// The engine.
    pub engine: &'a RoleEngine,
    /// The role's model settings (n_ctx, template, threads…).
    pub model: &'a ModelConfig,
    /// The GGUF file: loaded in-process, or read for its metadata when the role is HTTP.
    pub gguf: Option<&'a Path>,
    /// The role's sampler, checked against the engine.
    pub sampler: &'a SamplerConfig,
    /// Context size when an in-process role's config gives none.
    pub default_ctx: u32,
    /// `-v` count.
    pub verbose: u8,
}

/// Opens one role's backend. For an HTTP role this connects, so an unreachable server fails here, before any
/// transcript is written; settings the engine cannot honour are reported as warnings on stderr (once per role when
/// `warn` is set).
///
/// # Errors
/// A missing GGUF for an in-process role, a model that does not load, a server that cannot be reached, or a sampler
/// setting the engine cannot express.
pub fn open(spec: &RoleSpec<'_>, args: &EngineArgs, warn: bool) -> Result<Box<dyn Backend>> {
    match spec.engine {
        RoleEngine::Http { url, flavor } => {
            let warnings = check_sampler(*flavor, spec.sampler)
                .map_err(|e| anyhow!("{} role on {flavor} at {url}: {e:#}", spec.role))?;
            if warn {
                for w in warnings {
                    eprintln!("parrot: warning: {} role on {flavor}: {w}", spec.role);
                }
            }
            let opts = HttpOptions {
                api_key: ApiKey::new(std::env::var(&args.api_key_env).ok()),
                n_ctx: spec.model.n_ctx,
                chat_template: spec.model.chat_template.clone(),
                gguf: spec.gguf.map(PathBuf::from),
                timeout: Duration::from_secs_f64(args.http_timeout),
                retries: args.http_retries,
                backoff: Duration::from_millis(args.http_backoff_ms),
                ..HttpOptions::new(url.clone(), *flavor)
            };
            Ok(Box::new(HttpBackend::connect(opts)?))
        }
        RoleEngine::Llama => open_llama(spec),
    }
}

#[cfg(feature = "llama")]
fn open_llama(spec: &RoleSpec<'_>) -> Result<Box<dyn Backend>> {
    use crate::backend::llama::{LlamaRole, LoadOptions};
    let path = spec
        .gguf
        .ok_or_else(|| anyhow!("no {0} model: pass --{0}-model PATH or set `model` under [{0}]", spec.role))?;
    let m = spec.model;
    let options = LoadOptions {
        n_ctx: m.n_ctx,
        default_ctx: spec.default_ctx,
        threads: m.threads,
        gpu_layers: m.gpu_layers,
        chat_template: m.chat_template.clone(),
        verbose: spec.verbose,
        n_seq: 1,
    };
    Ok(Box::new(LlamaRole::load(path, &options)?))
}

#[cfg(not(feature = "llama"))]
fn open_llama(_: &RoleSpec<'_>) -> Result<Box<dyn Backend>> {
    bail!("this parrot was built without the `llama` feature: rebuild with default features, or use --backend http")
}

/// Opens both roles' backends for `set` (`warn`: print what an HTTP engine will not honour).
fn open_pair(global: &GlobalArgs, set: &RunSet<'_>, warn: bool) -> Result<[Box<dyn Backend>; 2]> {
    let s = set.settings;
    let c = &s.config;
    let gguf = |p: &Path| (!p.as_os_str().is_empty()).then(|| p.to_path_buf());
    let (a_gguf, u_gguf) = (gguf(&s.assistant_model), gguf(&s.user_model));
    let budget_ctx = u32::try_from(c.total_tokens.saturating_mul(5) / 4 + 1024).unwrap_or(u32::MAX);
    let a = RoleSpec {
        role: "assistant",
        engine: &s.roles.assistant,
        model: &c.assistant,
        gguf: a_gguf.as_deref(),
        sampler: &c.sampler,
        default_ctx: budget_ctx,
        verbose: global.verbose,
    };
    let u = RoleSpec {
        role: "user",
        engine: &s.roles.user,
        model: &c.user,
        gguf: u_gguf.as_deref(),
        sampler: c.user_sampler(),
        default_ctx: 2048,
        verbose: global.verbose,
    };
    Ok([open(&a, &s.roles.http, warn)?, open(&u, &s.roles.http, warn)?])
}

/// Runs (or resumes, or skips) conversation `i` of `set` with these backends; `stream` prints its text.
fn conversation(
    global: &GlobalArgs,
    set: &RunSet<'_>,
    config_json: &serde_json::Value,
    i: u32,
    pair: &mut [Box<dyn Backend>; 2],
    stream: bool,
    outcome: &Mutex<Outcome>,
) -> Result<()> {
    let [assistant, user] = pair;
    let seed = set.settings.seed.wrapping_add(i);
    let path = set.out.join(transcript_name(i));
    let header = crate::commands::session::header(config_json, &**assistant, &**user, seed, i);
    let Some((writer, done)) = open_transcript(&path, &header, set.force)? else {
        eprintln!("{}: already finished, skipped", path.display());
        return Ok(());
    };
    let mut sink = ConsoleSink::new(writer, set.prompt_log, i, !stream, crate::output::stdout_color(global.no_color))?;
    assistant.reset();
    user.reset();
    let mut roles = Roles { assistant: assistant.as_mut(), user: user.as_mut() };
    let summary = run_conversation(&set.settings.config, &mut roles, seed, &done, &mut sink, cancel_flag())?;
    sink.finish(&summary)?;
    let mut o = outcome.lock().map_err(|_| anyhow!("run state poisoned"))?;
    report(&path, &summary, &mut o);
    Ok(())
}

/// Runs a set of conversations when a role is an HTTP server: one after another, or `--parallel N` at once on N
/// threads (see the module docs). Servers are contacted before anything is written, so an unreachable one is a
/// one-line error naming its URL.
///
/// # Errors
/// A server that cannot be reached at start, a model file that does not load, an unwritable transcript.
pub fn run_set_http(global: &GlobalArgs, set: &RunSet<'_>) -> Result<Outcome> {
    let mut first = open_pair(global, set, true)?;
    let config_json = serde_json::to_value(&set.settings.config)?;
    write_run_file(set.out, &config_json)?;
    let cancel = cancel_flag();
    let outcome = Mutex::new(Outcome::default());
    let stop = |o: &Mutex<Outcome>| cancel.load(Ordering::SeqCst) || o.lock().map_or(true, |o| o.interrupted);
    let parallel = set.parallel.min(set.conversations);
    if parallel <= 1 {
        for i in 0..set.conversations {
            if stop(&outcome) {
                break;
            }
            conversation(global, set, &config_json, i, &mut first, !global.quiet, &outcome)?;
        }
    } else {
        // The pair opened above checked that the servers answer; each thread connects its own.
        drop(first);
        let next = AtomicU32::new(0);
        let worker = || -> Result<()> {
            let mut pair = open_pair(global, set, false)?;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= set.conversations || stop(&outcome) {
                    return Ok(());
                }
                conversation(global, set, &config_json, i, &mut pair, false, &outcome)?;
            }
        };
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..parallel).map(|_| scope.spawn(worker)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a conversation thread panicked"))))
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
    }
    let mut o = outcome.into_inner().map_err(|_| anyhow!("run state poisoned"))?;
    o.interrupted |= cancel.load(Ordering::SeqCst);
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        e: EngineArgs,
    }

    fn parse(args: &[&str]) -> EngineArgs {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap().e
    }

    fn http(url: &str, flavor: Flavor) -> RoleEngine {
        RoleEngine::Http { url: url.into(), flavor }
    }

    #[test]
    fn http_roles_take_urls_from_flags_then_config() {
        let mut config = Config { api_url: Some("http://127.0.0.1:8081".into()), ..Config::default() };
        config.user_api_url = Some("http://127.0.0.1:8082".into());
        let r = resolve(&parse(&["--backend", "http", "--flavor", "koboldcpp"]), &config, 1).unwrap();
        assert_eq!(r.assistant, http("http://127.0.0.1:8081", Flavor::Koboldcpp));
        assert_eq!(r.user, http("http://127.0.0.1:8082", Flavor::Koboldcpp));
        let r =
            resolve(&parse(&["--backend", "http", "--flavor", "openai", "--url", "http://h:1"]), &config, 4).unwrap();
        assert_eq!(r.user, http("http://h:1", Flavor::Openai), "the flag beats the config");
        let mixed = ["--backend", "http", "--flavor", "openai", "--url", "http://h:1", "--user-backend", "llama"];
        let r = resolve(&parse(&mixed), &Config::default(), 1).unwrap();
        assert_eq!(r.assistant, http("http://h:1", Flavor::Openai));
        assert_eq!(r.user, RoleEngine::Llama);
        assert!(r.any_http());
        assert!(!resolve(&parse(&[]), &Config::default(), 4).unwrap().any_http(), "in-process --parallel is fine");
    }

    #[test]
    fn missing_flavor_url_and_parallel_with_mixed_roles_are_errors_naming_the_flag() {
        let e = resolve(&parse(&["--backend", "http", "--url", "http://h:1"]), &Config::default(), 1).unwrap_err();
        assert!(e.to_string().contains("--flavor"), "{e}");
        let e = resolve(&parse(&["--backend", "http", "--flavor", "openai"]), &Config::default(), 1).unwrap_err();
        assert!(e.to_string().contains("--url"), "{e}");
        let mixed = ["--backend", "http", "--flavor", "openai", "--url", "http://h:1", "--user-backend", "llama"];
        let e = resolve(&parse(&mixed), &Config::default(), 4).unwrap_err();
        assert!(e.to_string().contains("--parallel 4"), "{e}");
        assert!(T::try_parse_from(["t", "--http-timeout", "-1"]).is_err());
    }
}
