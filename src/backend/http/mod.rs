//! HTTP engines as peers of the in-process backend: llama-server, koboldcpp, and OpenAI-compatible servers
//! (aphrodite-engine, vLLM, llama-cpp-python). Each flavor is a field map and a stream parser
//! ([`llama_server`], [`koboldcpp`], [`openai`]); everything else lives here, once:
//!
//! * **Prompts are rendered locally** with the model's chat template (from `--*-template`, a GGUF given with
//!   `--*-model` — metadata only — or llama-server's `/props`), exactly as in-process, and sent to the engine's
//!   *text-completion* endpoint. Templates render an empty `bos_token`: every engine inserts BOS itself for a string
//!   prompt when the model wants one, and a second BOS from the template would change the model's input.
//! * **Token counts come from the engine** (its tokenize endpoint or its own response), so `total_tokens`,
//!   `turn_max_tokens` and the context check mean what they mean in-process.
//! * **Stop strings are also enforced here.** Engines disagree on what they report when a stop string ends a turn
//!   (koboldcpp says `length`, OpenAI-style servers say `stop` as for an end-of-sequence token, and some drop the
//!   string); parrot watches the text itself, holds back a possible partial stop string before streaming it, and
//!   closes the stream the moment one appears.
//! * **Faults.** A connection that fails, a 5xx, a stream that stalls past the timeout or ends early is retried with
//!   bounded exponential backoff. A retry *continues* the turn: the prompt is extended by the text already received
//!   and the token limit reduced, so streamed text is never repeated or lost. A 4xx or a malformed stream is not
//!   retried. When retries run out the error reaches the driver, which ends the conversation with `error` after the
//!   last complete turn.
//!
//! The [`Backend`] trait is synchronous; each [`HttpBackend`] owns a single-threaded tokio runtime and blocks on
//! it. `--parallel N` runs N conversations on N threads, each with its own pair of backends.
//!
//! The API key is read from an environment variable, sent as a bearer token, and never printed or recorded.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::Value;

use super::{find_stop, Backend, GenRequest, Generation, Interrupted};
use crate::chat_template::{self, ChatMessage, ChatTemplate};
use crate::config::SamplerConfig;
use crate::transcript::{ModelRecord, StopReason};

pub mod koboldcpp;
pub mod llama_server;
pub mod openai;

/// The HTTP protocol a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// llama.cpp's `llama-server`: `/completion` with its native fields, `/tokenize`, `/props`.
    #[value(name = "llama-server")]
    LlamaServer,
    /// koboldcpp's KoboldAI API: `/api/extra/generate/stream`, `/api/extra/tokencount`.
    Koboldcpp,
    /// An OpenAI-compatible `/v1/completions` server: aphrodite-engine, vLLM, llama-cpp-python.
    Openai,
}

impl Flavor {
    /// The flavor's name on the command line and in transcripts (`http:<name>`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::LlamaServer => "llama-server",
            Flavor::Koboldcpp => "koboldcpp",
            Flavor::Openai => "openai",
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret that never shows in `Debug` output.
#[derive(Clone, Default)]
pub struct ApiKey(Option<String>);

impl ApiKey {
    /// Wraps a key (`None`: no key).
    #[must_use]
    pub fn new(key: Option<String>) -> Self {
        ApiKey(key.filter(|k| !k.is_empty()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "ApiKey(<set>)" } else { "ApiKey(<none>)" })
    }
}

/// How to reach and use one HTTP engine for one role.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Its protocol.
    pub flavor: Flavor,
    /// Bearer token, if any.
    pub api_key: ApiKey,
    /// Context size to use; must not exceed what the engine reports. Required when the engine reports none.
    pub n_ctx: Option<u32>,
    /// A chat template name or file, overriding the GGUF's and the server's.
    pub chat_template: Option<String>,
    /// A GGUF file of the served model, read for its chat template and name only.
    pub gguf: Option<PathBuf>,
    /// The longest wait for the server's next bytes (and for the connection) before the attempt fails.
    pub timeout: Duration,
    /// How many times a failed turn is retried.
    pub retries: u32,
    /// The first retry's delay; each further one doubles it, up to 30 s.
    pub backoff: Duration,
}

impl HttpOptions {
    /// Options with the defaults of `parrot run`: 600 s timeout, 3 retries from 500 ms.
    #[must_use]
    pub fn new(url: impl Into<String>, flavor: Flavor) -> Self {
        HttpOptions {
            url: url.into(),
            flavor,
            api_key: ApiKey::default(),
            n_ctx: None,
            chat_template: None,
            gguf: None,
            timeout: Duration::from_secs(600),
            retries: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// What a server says about itself when asked at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerInfo {
    /// Context size per request, when the server reports one.
    pub n_ctx: Option<u32>,
    /// The model's chat template, when the server exposes it (llama-server's `/props`).
    pub chat_template: Option<String>,
    /// The end-of-sequence token text, for templates that use `eos_token`.
    pub eos_token: Option<String>,
    /// The model's name or id (OpenAI servers need it in every request).
    pub model: Option<String>,
}

/// How an engine said a generation ended, before parrot maps it to a [`StopReason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineStop {
    /// End-of-sequence token.
    Eos,
    /// The token limit.
    Limit,
    /// A stop string (llama-server's `word`).
    Word,
    /// koboldcpp's `length`: the limit *or* a stop string; only the text can tell.
    LengthOrStop,
    /// OpenAI's `stop`: an EOS token or a stop string (parrot does not send stop strings to these servers, so it
    /// means EOS unless parrot found one).
    EosOrStop,
    /// Anything else the server said.
    Other(String),
}

/// The end of a stream, with what the engine reported about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    /// How it ended.
    pub stop: EngineStop,
    /// Tokens generated, if reported.
    pub tokens: Option<u32>,
    /// Prompt length in tokens, if reported.
    pub prompt_tokens: Option<u32>,
    /// Prompt tokens actually evaluated (not from the cache), if reported.
    pub prompt_evaluated: Option<u32>,
    /// Prompt evaluation time, if reported.
    pub prompt_ms: Option<f64>,
    /// Generation time, if reported.
    pub generation_ms: Option<f64>,
}

impl Done {
    /// A bare end with nothing but the stop.
    #[must_use]
    pub fn new(stop: EngineStop) -> Self {
        Done { stop, tokens: None, prompt_tokens: None, prompt_evaluated: None, prompt_ms: None, generation_ms: None }
    }
}

/// One parsed stream event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chunk {
    /// New text.
    pub text: String,
    /// Set on the last event.
    pub done: Option<Done>,
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field (empty when absent).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The raw line the data started on, for error messages.
    pub line: String,
}

/// Splits a byte stream into Server-Sent Events. Pure: fed with whatever chunks the network delivers.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

impl SseParser {
    /// Feeds bytes and returns the events they complete.
    ///
    /// # Errors
    /// A line that is not UTF-8 or not an SSE field (`data`, `event`, `id`, `retry`, or a `:` comment); the message
    /// quotes the line. llama-server's `error: {...}` line is returned as an event named `error`.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=nl).collect();
            let mut line = &raw[..raw.len() - 1];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = std::str::from_utf8(line).map_err(|_| {
                anyhow!("malformed SSE line (not UTF-8): {}", clip(&String::from_utf8_lossy(line), 200))
            })?;
            self.line(line, &mut out)?;
        }
        Ok(out)
    }

    /// Ends the stream: returns a last event that was not followed by a blank line.
    #[must_use]
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.has_data {
            self.has_data = false;
            Some(std::mem::take(&mut self.current))
        } else {
            None
        }
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) -> Result<()> {
        if line.is_empty() {
            if let Some(e) = self.finish() {
                out.push(e);
            }
            self.current = SseEvent::default();
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                } else {
                    self.current.line = clip(line, 200);
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            // llama-server writes errors in a stream as `error: {json}`.
            "error" => {
                self.current.event = "error".into();
                self.current.data = value.to_string();
                self.current.line = clip(line, 200);
                self.has_data = true;
            }
            "event" => self.current.event = value.to_string(),
            "id" | "retry" => {}
            _ => bail!("malformed SSE line: {}", clip(line, 200)),
        }
        Ok(())
    }
}

/// Parses an event's data as JSON.
///
/// # Errors
/// When the data is not JSON; the message quotes the line.
pub fn event_json(event: &SseEvent) -> Result<Value> {
    serde_json::from_str(&event.data).map_err(|e| anyhow!("malformed SSE data ({e}): {}", event.line))
}

/// The message of an error body: `error.message`, `error` (a string), `detail`, `message`, or the raw text.
#[must_use]
pub fn server_message(body: &str) -> String {
    let text = body.trim();
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let candidates = [
            v.pointer("/error/message"),
            v.get("error").filter(|e| e.is_string()),
            v.pointer("/detail/msg"),
            v.get("detail").filter(|e| e.is_string()),
            v.get("message"),
            v.get("msg"),
        ];
        if let Some(s) = candidates.into_iter().flatten().find_map(Value::as_str) {
            return clip(s, 300);
        }
    }
    if text.is_empty() {
        "(empty response)".into()
    } else {
        clip(text, 300)
    }
}

/// A `u32` field of a JSON object, accepting integers and integral floats.
#[must_use]
pub fn get_u32(v: &Value, pointer: &str) -> Option<u32> {
    let x = v.pointer(pointer)?;
    x.as_u64().or_else(|| x.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)).and_then(|n| u32::try_from(n).ok())
}

/// A request body built from our sampler settings, with what the engine will not honour.
#[derive(Debug, Default)]
pub struct Mapping {
    /// The request body.
    pub body: serde_json::Map<String, Value>,
    /// Settings that will not behave as in-process (printed once per role).
    pub warnings: Vec<String>,
}

/// Checks the sampler against a flavor once, before any request: errors for settings it cannot express at all,
/// warnings for those it will treat differently.
///
/// # Errors
/// A message naming the setting and the engine.
pub fn check_sampler(flavor: Flavor, sampler: &SamplerConfig) -> Result<Vec<String>> {
    let n_ctx = 4096;
    let m = match flavor {
        Flavor::LlamaServer => llama_server::map(sampler, 1, 1, n_ctx)?,
        Flavor::Koboldcpp => koboldcpp::map(sampler, 1, 1, n_ctx)?,
        Flavor::Openai => openai::map(sampler, 1, 1, "model")?,
    };
    Ok(m.warnings)
}

/// Why one attempt at a turn failed.
enum Failure {
    /// Worth another attempt (connection, 5xx, stall, early end).
    Retry(anyhow::Error),
    /// Not worth one (4xx, malformed stream, cancel).
    Fatal(anyhow::Error),
}

/// The state of a turn across attempts.
#[derive(Default)]
struct Turn {
    text: String,
    emitted: usize,
    /// Tokens counted in earlier, failed attempts (one per stream event that carried text).
    tokens_before: u32,
    /// Tokens counted in the current attempt.
    events: u32,
    stop_at: Option<usize>,
    first_piece: Option<Instant>,
}

/// One role's HTTP engine.
pub struct HttpBackend {
    opts: HttpOptions,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    info: ServerInfo,
    template: ChatTemplate,
    record: ModelRecord,
    n_ctx: u32,
    /// Tokens the engine's tokenizer adds to an empty text (BOS), subtracted when counting generated text.
    empty_tokens: u32,
    /// Which of [`openai::tokenize_requests`] the server answered (tried in order once).
    tokenize_route: std::cell::Cell<Option<usize>>,
    /// The last prompt counted (its hash and count): the driver counts a prompt, then generates from it.
    last_count: std::cell::Cell<Option<(u64, u32)>>,
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    let root = root.to_string();
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        let lower = root.to_lowercase();
        if lower.contains("refused") {
            "connection refused".into()
        } else {
            format!("cannot connect ({root})")
        }
    } else {
        root
    }
}

impl HttpBackend {
    /// Connects to the server, asks it for its context size, model and template, and prepares the chat template.
    ///
    /// # Errors
    /// One line naming the URL when the server cannot be reached or answers with an error; or when the context size
    /// or the chat template cannot be determined.
    pub fn connect(opts: HttpOptions) -> Result<Self> {
        let url = opts.url.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--url '{url}' must start with http:// or https://");
        }
        let opts = HttpOptions { url, ..opts };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("could not start the HTTP runtime")?;
        // Servers close idle keep-alive connections (uvicorn after 5 s); dropping ours sooner avoids reusing one
        // that the server is closing at that moment.
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(2))
            .connect_timeout(opts.timeout.min(Duration::from_secs(30)))
            .build()
            .context("could not create the HTTP client")?;
        let mut backend = HttpBackend {
            rt,
            client,
            info: ServerInfo::default(),
            template: ChatTemplate::new(chat_template::builtin("chatml").unwrap_or_default(), "chatml", "", "")?,
            record: ModelRecord {
                path: opts.url.clone(),
                file_size: None,
                name: None,
                architecture: None,
                n_ctx: 0,
                chat_template_source: String::new(),
            },
            n_ctx: 0,
            empty_tokens: 0,
            tokenize_route: std::cell::Cell::new(None),
            last_count: std::cell::Cell::new(None),
            opts,
        };
        let info = backend.rt.block_on(backend.probe())?;
        let flag_hint = "pass --assistant-ctx / --user-ctx (or `n_ctx` under [assistant]/[user])";
        let n_ctx = match (backend.opts.n_ctx, info.n_ctx) {
            (Some(want), Some(has)) if want > has => bail!(
                "{} at {} serves a context of {has} tokens, less than the {want} asked for",
                backend.opts.flavor,
                backend.opts.url
            ),
            (Some(want), _) => want,
            (None, Some(has)) => has,
            (None, None) => bail!(
                "{} at {} does not report its context size: {flag_hint} with the size the server was started with",
                backend.opts.flavor,
                backend.opts.url
            ),
        };
        let gguf = match &backend.opts.gguf {
            Some(p) => Some(crate::gguf::inspect(p)?),
            None => None,
        };
        let (text, source) = if backend.opts.chat_template.is_some() || gguf.is_some() {
            chat_template::select(
                backend.opts.chat_template.as_deref(),
                gguf.as_ref().and_then(|g| g.chat_template()),
                gguf.as_ref().and_then(|g| g.architecture()),
            )?
        } else if let Some(t) = info.chat_template.as_deref().filter(|t| !t.trim().is_empty()) {
            (t.to_string(), "server".to_string())
        } else {
            bail!(
                "no chat template for {} at {}: pass the served model's GGUF with --assistant-model/--user-model \
                 (only its metadata is read) or a template with --assistant-template/--user-template",
                backend.opts.flavor,
                backend.opts.url
            );
        };
        let eos = info.eos_token.clone().unwrap_or_default();
        backend.template = ChatTemplate::new(&text, source, "", &eos)?;
        backend.record = ModelRecord {
            path: backend.opts.url.clone(),
            file_size: None,
            name: gguf.as_ref().and_then(|g| g.name().map(str::to_string)).or_else(|| info.model.clone()),
            architecture: gguf.as_ref().and_then(|g| g.architecture().map(str::to_string)),
            n_ctx,
            chat_template_source: backend.template.source.clone(),
        };
        backend.n_ctx = n_ctx;
        backend.info = info;
        backend.empty_tokens = backend.rt.block_on(backend.tokenize(""))?;
        Ok(backend)
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.opts.url)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.request(method, self.endpoint(path));
        if let Some(key) = &self.opts.api_key.0 {
            r = r.bearer_auth(key);
        }
        r
    }

    /// Sends a request and reads a JSON answer, with the timeout. Errors name the URL and carry the server's message.
    /// A connection that breaks is retried like a turn (these requests change nothing on the server), except a
    /// refused connection, so that an absent server is reported at once.
    async fn call_json(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = self.endpoint(path);
        let mut attempt = 0u32;
        let resp = loop {
            let mut req = self.request(method.clone(), path).timeout(self.opts.timeout);
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(r) => break r,
                Err(e) => {
                    let what = describe_reqwest(&e);
                    if attempt >= self.opts.retries || what == "connection refused" {
                        bail!("{} at {url}: {what}", self.opts.flavor);
                    }
                    tracing::warn!("{url}: {what}; retrying");
                    tokio::time::sleep(self.opts.backoff.saturating_mul(1 << attempt.min(16))).await;
                    attempt += 1;
                }
            }
        };
        let status = resp.status();
        let text = resp.text().await.map_err(|e| anyhow!("{url}: {}", describe_reqwest(&e)))?;
        if !status.is_success() {
            bail!("{url} answered HTTP {}: {}", status.as_u16(), server_message(&text));
        }
        serde_json::from_str(&text).map_err(|e| anyhow!("{url} answered with invalid JSON ({e}): {}", clip(&text, 200)))
    }

    async fn get_json(&self, path: &str) -> Result<Value> {
        self.call_json(reqwest::Method::GET, path, None).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        self.call_json(reqwest::Method::POST, path, Some(body)).await
    }

    async fn probe(&self) -> Result<ServerInfo> {
        match self.opts.flavor {
            Flavor::LlamaServer => Ok(llama_server::info(&self.get_json("/props").await?)),
            Flavor::Koboldcpp => {
                let ctx = self.get_json("/api/extra/true_max_context_length").await?;
                let model = self.get_json("/api/v1/model").await.ok();
                Ok(koboldcpp::info(&ctx, model.as_ref()))
            }
            Flavor::Openai => Ok(openai::info(&self.get_json("/v1/models").await?)),
        }
    }

    /// Counts the tokens of a prompt, asking the engine only when it is not the prompt counted last.
    async fn count_prompt(&self, prompt: &str) -> Result<u32> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        prompt.hash(&mut h);
        let key = h.finish();
        if let Some((k, n)) = self.last_count.get() {
            if k == key {
                return Ok(n);
            }
        }
        let n = self.tokenize(prompt).await?;
        self.last_count.set(Some((key, n)));
        Ok(n)
    }

    /// Counts the tokens of `text` as the engine would evaluate it (BOS included).
    async fn tokenize(&self, text: &str) -> Result<u32> {
        match self.opts.flavor {
            Flavor::LlamaServer => {
                let v = self
                    .post_json(
                        "/tokenize",
                        &serde_json::json!({"content": text, "add_special": true, "parse_special": true}),
                    )
                    .await?;
                llama_server::token_count(&v)
            }
            Flavor::Koboldcpp => {
                let v = self.post_json("/api/extra/tokencount", &serde_json::json!({"prompt": text})).await?;
                koboldcpp::token_count(&v)
            }
            Flavor::Openai => {
                let model = self.info.model.clone().unwrap_or_default();
                let routes = openai::tokenize_requests(text, &model);
                if let Some((path, body)) = self.tokenize_route.get().and_then(|i| routes.get(i)) {
                    return openai::token_count(&self.post_json(path, body).await?);
                }
                let mut last = None;
                for (i, (path, body)) in routes.iter().enumerate() {
                    match self.post_json(path, body).await {
                        Ok(v) => {
                            self.tokenize_route.set(Some(i));
                            return openai::token_count(&v);
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| anyhow!("no tokenize endpoint")).context(format!(
                    "{} offers none of /tokenize (vLLM), /v1/tokenize (aphrodite), /extras/tokenize/count \
                     (llama-cpp-python): parrot needs one to count tokens",
                    self.opts.url
                )))
            }
        }
    }

    fn body(&self, req: &GenRequest<'_>, prompt: &str, max_tokens: u32) -> Result<Value> {
        let model = self.info.model.clone().unwrap_or_default();
        let m = match self.opts.flavor {
            Flavor::LlamaServer => llama_server::map(req.sampler, max_tokens, req.seed, self.n_ctx)?,
            Flavor::Koboldcpp => koboldcpp::map(req.sampler, max_tokens, req.seed, self.n_ctx)?,
            Flavor::Openai => openai::map(req.sampler, max_tokens, req.seed, &model)?,
        };
        let mut body = m.body;
        body.insert("prompt".into(), Value::String(prompt.to_string()));
        Ok(Value::Object(body))
    }

    fn parse(&self, event: &SseEvent) -> Result<Option<Chunk>> {
        match self.opts.flavor {
            Flavor::LlamaServer => llama_server::parse_event(event),
            Flavor::Koboldcpp => koboldcpp::parse_event(event),
            Flavor::Openai => openai::parse_event(event),
        }
    }

    /// One attempt: streams a continuation of `turn` and returns how it ended.
    async fn attempt(
        &self,
        req: &GenRequest<'_>,
        turn: &mut Turn,
        on_piece: &mut dyn FnMut(&str),
    ) -> Result<Option<Done>, Failure> {
        let stops = &req.sampler.stop;
        let hold = stops.iter().map(String::len).max().unwrap_or(1).saturating_sub(1);
        let prompt = format!("{}{}", req.prompt, turn.text);
        let left = req.max_tokens.saturating_sub(turn.tokens_before);
        if left == 0 {
            return Ok(Some(Done::new(EngineStop::Limit)));
        }
        let body = self.body(req, &prompt, left).map_err(Failure::Fatal)?;
        let path = match self.opts.flavor {
            Flavor::LlamaServer => "/completion",
            Flavor::Koboldcpp => "/api/extra/generate/stream",
            Flavor::Openai => "/v1/completions",
        };
        let url = self.endpoint(path);
        let send = self.request(reqwest::Method::POST, path).header("Accept", "text/event-stream").json(&body).send();
        let resp = match tokio::time::timeout(self.opts.timeout, send).await {
            Err(_) => return Err(Failure::Retry(anyhow!("{url}: no response within {:?}", self.opts.timeout))),
            Ok(Err(e)) => return Err(Failure::Retry(anyhow!("{url}: {}", describe_reqwest(&e)))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if !status.is_success() {
            let text = tokio::time::timeout(self.opts.timeout, resp.text()).await.ok().and_then(Result::ok);
            let e = anyhow!("{url} answered HTTP {}: {}", status.as_u16(), server_message(&text.unwrap_or_default()));
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                Failure::Retry(e)
            } else {
                Failure::Fatal(e)
            });
        }
        let mut stream = resp.bytes_stream();
        let mut parser = SseParser::default();
        turn.events = 0;
        let tick = Duration::from_millis(100);
        let mut idle = Duration::ZERO;
        loop {
            if req.cancel.load(Ordering::Relaxed) {
                return Err(Failure::Fatal(Interrupted.into()));
            }
            let next = match tokio::time::timeout(tick.min(self.opts.timeout), stream.next()).await {
                Err(_) => {
                    idle += tick;
                    if idle >= self.opts.timeout {
                        return Err(Failure::Retry(anyhow!(
                            "{url}: the stream stalled (no data for {:.1} s)",
                            self.opts.timeout.as_secs_f64()
                        )));
                    }
                    continue;
                }
                Ok(n) => n,
            };
            idle = Duration::ZERO;
            let (events, ended) = match next {
                Some(Ok(bytes)) => (parser.push(&bytes).map_err(|e| Failure::Fatal(e.context(url.clone())))?, false),
                Some(Err(e)) => {
                    return Err(Failure::Retry(anyhow!("{url}: the stream broke off: {}", describe_reqwest(&e))));
                }
                None => {
                    let mut last = parser.push(b"\n").map_err(|e| Failure::Fatal(e.context(url.clone())))?;
                    last.extend(parser.finish());
                    (last, true)
                }
            };
            for event in &events {
                let chunk = match self.parse(event) {
                    Ok(Some(c)) => c,
                    Ok(None) => continue,
                    Err(e) => return Err(Failure::Fatal(e.context(format!("{url} sent a bad stream")))),
                };
                if !chunk.text.is_empty() {
                    turn.events += 1;
                    turn.first_piece.get_or_insert_with(Instant::now);
                    let before = turn.text.len();
                    turn.text.push_str(&chunk.text);
                    if let Some(at) = find_stop(&turn.text, stops, before.saturating_sub(hold)) {
                        turn.stop_at = Some(at);
                        return Ok(None);
                    }
                    let mut safe = turn.text.len().saturating_sub(hold).max(turn.emitted);
                    while !turn.text.is_char_boundary(safe) {
                        safe -= 1;
                    }
                    if safe > turn.emitted {
                        on_piece(&turn.text[turn.emitted..safe]);
                        turn.emitted = safe;
                    }
                }
                if let Some(done) = chunk.done {
                    return Ok(Some(done));
                }
            }
            if ended {
                return Err(Failure::Retry(anyhow!("{url}: the stream ended before the turn was finished")));
            }
        }
    }

    async fn generate_async(&self, req: &GenRequest<'_>, on_piece: &mut dyn FnMut(&str)) -> Result<Generation> {
        let started = Instant::now();
        let prompt_tokens = self.count_prompt(req.prompt).await?;
        let mut turn = Turn::default();
        let mut attempt = 0u32;
        let done = loop {
            match self.attempt(req, &mut turn, on_piece).await {
                Ok(done) => break done,
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => {
                    turn.tokens_before += turn.events;
                    if attempt >= self.opts.retries {
                        let tries = attempt + 1;
                        return Err(e.context(format!("{} failed {tries} time(s); giving up", self.opts.flavor)));
                    }
                    let delay = self.opts.backoff.saturating_mul(1 << attempt.min(16)).min(Duration::from_secs(30));
                    tracing::warn!("{e:#}; retrying in {delay:?}");
                    attempt += 1;
                    let until = Instant::now() + delay;
                    while Instant::now() < until {
                        if req.cancel.load(Ordering::Relaxed) {
                            return Err(Interrupted.into());
                        }
                        tokio::time::sleep(
                            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
                        )
                        .await;
                    }
                }
            }
        };
        let stop_at = turn.stop_at;
        let generated_with_stop = turn.text.clone();
        if let Some(at) = stop_at {
            turn.text.truncate(at);
        }
        if turn.emitted < turn.text.len() {
            on_piece(&turn.text[turn.emitted..]);
        }
        let reported = done.as_ref().and_then(|d| d.tokens).filter(|_| attempt == 0 && stop_at.is_none());
        let tokens = match reported {
            Some(t) => t,
            None if generated_with_stop.is_empty() => 0,
            None => self.tokenize(&generated_with_stop).await?.saturating_sub(self.empty_tokens),
        };
        let tokens = tokens.min(req.max_tokens);
        let stop_reason = match (&stop_at, done.as_ref().map(|d| &d.stop)) {
            (Some(_), _) | (None, Some(EngineStop::Word)) => StopReason::StopString,
            (None, Some(EngineStop::Eos | EngineStop::EosOrStop)) => StopReason::Eos,
            (None, Some(EngineStop::Limit | EngineStop::LengthOrStop)) => StopReason::MaxTokens,
            (None, Some(EngineStop::Other(s))) => {
                tracing::warn!("{} reported an unknown stop reason '{s}'; recorded as eos", self.opts.flavor);
                StopReason::Eos
            }
            (None, None) => StopReason::StopString,
        };
        let total_ms = started.elapsed().as_secs_f64() * 1000.0;
        let first_ms = turn.first_piece.map_or(total_ms, |t| (t - started).as_secs_f64() * 1000.0);
        let prompt_ms = done.as_ref().and_then(|d| d.prompt_ms).unwrap_or(first_ms);
        let generation_ms = done.as_ref().and_then(|d| d.generation_ms).unwrap_or((total_ms - first_ms).max(0.0));
        let prompt_evaluated = done.as_ref().and_then(|d| d.prompt_evaluated).unwrap_or(prompt_tokens);
        Ok(Generation {
            text: turn.text,
            tokens,
            prompt_tokens,
            prompt_tokens_evaluated: prompt_evaluated.min(prompt_tokens),
            stop_reason,
            prompt_ms,
            generation_ms,
        })
    }
}

impl Backend for HttpBackend {
    fn describe(&self) -> ModelRecord {
        self.record.clone()
    }

    fn name(&self) -> String {
        format!("http:{}", self.opts.flavor)
    }

    fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        self.template.render(messages, true)
    }

    fn count_tokens(&self, prompt: &str) -> Result<u32> {
        self.rt.block_on(self.count_prompt(prompt))
    }

    fn reset(&mut self) {}

    fn generate(&mut self, req: &GenRequest<'_>, on_piece: &mut dyn FnMut(&str)) -> Result<Generation> {
        self.rt.block_on(self.generate_async(req, on_piece))
    }
}

/// Whether two sampler values differ (for settings that only matter when active).
pub(crate) fn differs(a: f64, b: f64) -> bool {
    (a - b).abs() > 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_joins_split_chunks_and_crlf() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: message\r\nda").unwrap().is_empty());
        let ev = p.push(b"ta: {\"a\":1}\r\n\r\n: ping\n\ndata: x\ndata: y\n\n").unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].event, "message");
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].data, "x\ny");
        assert!(p.finish().is_none());
    }

    #[test]
    fn sse_parser_names_a_malformed_line() {
        let mut p = SseParser::default();
        let e = p.push(b"data: ok\n\ngarbage line here\n").unwrap_err();
        assert!(e.to_string().contains("garbage line here"), "{e}");
        let mut p = SseParser::default();
        let ev = p.push(b"data: {not json}\n\n").unwrap();
        let e = event_json(&ev[0]).unwrap_err();
        assert!(e.to_string().contains("data: {not json}"), "{e}");
    }

    #[test]
    fn sse_parser_keeps_llama_server_error_lines() {
        let mut p = SseParser::default();
        let ev = p.push(b"error: {\"code\":500,\"message\":\"boom\"}\n\n").unwrap();
        assert_eq!(ev[0].event, "error");
        assert_eq!(server_message(&ev[0].data), "boom");
    }

    #[test]
    fn server_message_reads_every_common_error_shape() {
        assert_eq!(server_message(r#"{"error":{"code":400,"message":"bad n_predict"}}"#), "bad n_predict");
        assert_eq!(
            server_message(r#"{"detail":{"msg":"Authentication key is missing"}}"#),
            "Authentication key is missing"
        );
        assert_eq!(server_message(r#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(server_message("plain text"), "plain text");
        assert_eq!(server_message(""), "(empty response)");
    }

    #[test]
    fn api_key_never_shows_in_debug() {
        let o = HttpOptions {
            api_key: ApiKey::new(Some("sk-secret".into())),
            ..HttpOptions::new("http://x", Flavor::Openai)
        };
        let s = format!("{o:?}");
        assert!(!s.contains("sk-secret"), "{s}");
        assert!(s.contains("<set>"));
    }
}
