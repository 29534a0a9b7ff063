//! Which engine runs each role of `parrot run`, and how several conversations run at once against HTTP engines.
//! Kept apart from `run.rs` so that the run command stays one screen of flow: `run.rs` resolves settings and writes
//! transcripts; this module turns flags into a [`RoleEngine`] per role and a role into a `Box<dyn Backend>`.
//!
//! `--parallel N` keeps N conversations in flight against HTTP engines: N threads, each with its own pair of
//! backends (its own connections), taking the next conversation index as they finish one. Every conversation still
//! gets its own transcript and its own seed (S + i), so a parallel run writes exactly the files a sequential one
//! would. In-process roles run one conversation at a time in this build.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;

use crate::backend::http::{check_sampler, ApiKey, Flavor, HttpBackend, HttpOptions};
use crate::backend::Backend;
use crate::config::{Config, ModelConfig, SamplerConfig};

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
    /// How many conversations to keep in flight at once against HTTP engines (both roles must be `http`).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub parallel: u32,
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

/// Turns the flags and the config's `api_url` / `user_api_url` into each role's engine. Pure.
///
/// # Errors
/// A missing flavor or URL, or `--parallel` with an in-process role; the message names the flag.
pub fn resolve(args: &EngineArgs, config: &Config) -> Result<(RoleEngine, RoleEngine)> {
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
    if args.parallel > 1 && !(assistant.is_http() && user.is_http()) {
        bail!(
            "--parallel {} applies to HTTP engines: run both roles with --backend http (in-process roles run one \
             conversation at a time)",
            args.parallel
        );
    }
    Ok((assistant, user))
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
    };
    Ok(Box::new(LlamaRole::load(path, &options)?))
}

#[cfg(not(feature = "llama"))]
fn open_llama(_: &RoleSpec<'_>) -> Result<Box<dyn Backend>> {
    bail!("this parrot was built without the `llama` feature: rebuild with default features, or use --backend http")
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

    #[test]
    fn http_roles_take_urls_from_flags_then_config() {
        let mut config = Config { api_url: Some("http://127.0.0.1:8081".into()), ..Config::default() };
        config.user_api_url = Some("http://127.0.0.1:8082".into());
        let (a, u) = resolve(&parse(&["--backend", "http", "--flavor", "koboldcpp"]), &config).unwrap();
        assert_eq!(a, RoleEngine::Http { url: "http://127.0.0.1:8081".into(), flavor: Flavor::Koboldcpp });
        assert_eq!(u, RoleEngine::Http { url: "http://127.0.0.1:8082".into(), flavor: Flavor::Koboldcpp });
        let (_, u) =
            resolve(&parse(&["--backend", "http", "--flavor", "openai", "--url", "http://h:1"]), &config).unwrap();
        assert_eq!(
            u,
            RoleEngine::Http { url: "http://h:1".into(), flavor: Flavor::Openai },
            "the flag beats the config"
        );
        let args =
            parse(&["--backend", "http", "--flavor", "openai", "--url", "http://h:1", "--user-backend", "llama"]);
        let (a, u) = resolve(&args, &Config::default()).unwrap();
        assert_eq!(a, RoleEngine::Http { url: "http://h:1".into(), flavor: Flavor::Openai });
        assert_eq!(u, RoleEngine::Llama);
    }

    #[test]
    fn missing_flavor_url_and_parallel_in_process_are_errors_naming_the_flag() {
        let e = resolve(&parse(&["--backend", "http", "--url", "http://h:1"]), &Config::default()).unwrap_err();
        assert!(e.to_string().contains("--flavor"), "{e}");
        let e = resolve(&parse(&["--backend", "http", "--flavor", "openai"]), &Config::default()).unwrap_err();
        assert!(e.to_string().contains("--url"), "{e}");
        let e = resolve(&parse(&["--parallel", "4"]), &Config::default()).unwrap_err();
        assert!(e.to_string().contains("--parallel 4"), "{e}");
        assert!(T::try_parse_from(["t", "--parallel", "0"]).is_err());
        assert!(T::try_parse_from(["t", "--http-timeout", "-1"]).is_err());
    }
}
