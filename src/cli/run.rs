//! The flags of `parrot run` and `parrot sweep`, and of the engines they run on. Only checked here (types,
//! ranges); [`crate::settings`] turns them into validated settings, and no clap type goes past that line.

use std::path::PathBuf;

use clap::Args;

use crate::backend::http::Flavor;

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
    #[arg(short = 'n', long = "conversations", value_name = "N", default_value_t = 1, value_parser = at_least_one)]
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
    /// Start over: overwrite transcripts already in the output folder instead of resuming them. Never carried
    /// into `--resume`.
    #[arg(long)]
    pub force: bool,
    /// Do not fsync each turn to disk (for measuring what durability costs; a crash may then lose recent turns).
    #[arg(long, hide = true)]
    pub no_fsync: bool,
    /// The backends of the two roles: in-process (default) or HTTP servers.
    #[command(flatten)]
    pub backends: BackendArgs,
}

/// The kind of backend of a role, as the flags name it ([`crate::settings::BackendSpec`] is the resolved one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// llama.cpp in this process, loading the GGUF given with --assistant-model / --user-model.
    Llama,
    /// A server reached over HTTP at --url / --user-url, speaking --flavor / --user-flavor.
    Http,
}

/// Flags that choose the engines.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
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
    /// The longest one HTTP turn may take, retries included, before the conversation ends with `error`. Default:
    /// --http-timeout plus 1 s per token of the turn's limit (a server slower than 1 token/s counts as hung).
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    pub http_turn_deadline: Option<f64>,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 1e9 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// `-n`: at least one conversation (`-n 0` would load both models to generate nothing).
fn at_least_one(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("-n 0 generates nothing: pass -n 1 or more".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("'{s}' is not a number of conversations: {e}")),
    }
}

/// Arguments of `parrot sweep`: every `run` flag (`--out` is the sweep's root folder), plus the grid.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// One axis of the grid: a config key and its values, comma-separated, e.g.
    /// `--grid 'sampler.repeat_penalty=1.0,1.1,1.2'`. Repeat for more axes; the sweep runs their cross product.
    #[arg(long = "grid", value_name = "KEY=V1,V2,...", required = true)]
    pub grid: Vec<String>,
    /// The run flags; each cell goes to `OUT/<its settings>/`.
    #[command(flatten)]
    pub run: RunArgs,
}
