//! [`HttpBackend`]: one role's HTTP engine behind the [`Backend`] trait. It connects and probes the server, sends
//! JSON requests with a timeout and bounded retries, and streams one turn, retrying a broken stream by
//! *continuation* (the prompt extended by the text already received, the token limit reduced).
//!
//! Its boundary: it owns the network (reqwest on a single-threaded tokio runtime), the fault policy and the turn's
//! bookkeeping. SSE framing is [`super::sse`]'s, stop strings are [`StopStream`]'s, and every field name, endpoint
//! answer and sampler setting is a flavor's ([`super::llama_server`], [`super::koboldcpp`], [`super::openai`]):
//! this file only picks the flavor's endpoint and function.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::Value;

use super::sse::{clip, SseEvent, SseParser};
use super::wire::{server_message, Chunk, Done, EngineStop, ServerInfo};
use super::{koboldcpp, llama_server, openai, Flavor, HttpOptions};
use crate::backend::stream::StopStream;
use crate::backend::{Backend, GenRequest, Generation, Interrupted};
use crate::chat_template::{self, ChatMessage, ChatTemplate};
use crate::transcript::{ModelRecord, StopReason};

/// Why one attempt at a turn failed.
enum Failure {
    /// Worth another attempt (connection, 5xx, stall, early end).
    Retry(anyhow::Error),
    /// Not worth one (4xx, malformed stream, cancel).
    Fatal(anyhow::Error),
}

/// The largest JSON answer read (a `/tokenize` of a 128k-token prompt is about 1 MiB, `/props` a few KiB).
pub const MAX_JSON_BODY: usize = 16 << 20;
/// The most of an error answer read: only its message is shown, clipped to 300 characters.
pub const MAX_ERROR_BODY: usize = 64 << 10;
/// The longest delay between two attempts, whatever `--http-backoff-ms` and the number of retries.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// The most text a turn may receive per token of its limit. The longest tokens of real vocabularies are a few
/// dozen bytes; this only stops a server that sends text without end in few events.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// How long, once a turn's limit is reached, parrot waits for the server's final event (which carries its counts
/// and timings) before it ends the turn itself; a server that honours the limit sends it with the last token.
pub const LIMIT_GRACE: Duration = Duration::from_secs(1);

/// The delay before retry number `attempt` (from 0): `base` doubled per earlier retry, at most [`MAX_RETRY_DELAY`].
#[must_use]
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.min(16)).min(MAX_RETRY_DELAY)
}

/// A JSON endpoint's answer, read with a cap: the status, the bytes (at most the cap), and whether there was more.
pub struct Body {
    /// The HTTP status.
    pub status: u16,
    /// The bytes read.
    pub bytes: Vec<u8>,
    /// True when the answer was longer than the cap (the rest was not read).
    pub over: bool,
}

/// Reads at most `cap` bytes of an answer (an announced `Content-Length` above it is not read at all).
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Body, reqwest::Error> {
    let status = resp.status().as_u16();
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Ok(Body { status, bytes: Vec::new(), over: true });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Body { status, bytes, over: true });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body { status, bytes, over: false })
}

/// Reads a JSON endpoint's answer. Pure. Errors name `url`, carry the server's message for an error status, and
/// quote the start of a body that is not JSON.
///
/// # Errors
/// A status that is not 2xx, an answer over [`MAX_JSON_BODY`], or one that is not JSON.
pub fn json_body(url: &str, body: &Body) -> Result<Value> {
    if !(200..300).contains(&body.status) {
        bail!("{url} answered HTTP {}: {}", body.status, server_message(&String::from_utf8_lossy(&body.bytes)));
    }
    if body.over {
        bail!("{url} answered with more than {} MiB of JSON: parrot reads no more than that", MAX_JSON_BODY >> 20);
    }
    serde_json::from_slice(&body.bytes).map_err(|e| {
        anyhow!("{url} answered with invalid JSON ({e}): {}", clip(&String::from_utf8_lossy(&body.bytes), 200))
    })
}

/// The state of a turn across attempts.
struct Turn {
    /// Everything received so far (a retry continues from it), with a possible stop string held back.
    stream: StopStream,
    /// Tokens counted in earlier, failed attempts (one per stream event that carried text).
    tokens_before: u32,
    /// Tokens counted in the current attempt.
    events: u32,
    first_piece: Option<Instant>,
}

impl Turn {
    fn new(stops: &[String]) -> Self {
        Turn { stream: StopStream::new(stops), tokens_before: 0, events: 0, first_piece: None }
    }
}

/// One role's HTTP engine.
pub struct HttpBackend {
    /// The options, with `url` stripped of credentials: the form every message and record shows.
    opts: HttpOptions,
    /// The base URL requests are sent to: the one given, credentials included when no API key is set (reqwest
    /// takes them out of the URL and sends them as Basic authentication). Never shown.
    base: String,
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
    /// Fields added to every completion request ([`HttpBackend::with_extra_body`]).
    extra_body: serde_json::Map<String, Value>,
    /// Set once [`HttpBackend::connect`] succeeded: from then on a refused connection is retried (a restarting
    /// server), before it an absent server is reported at once.
    connected: bool,
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
            bail!("--url '{}' must start with http:// or https://", super::strip_credentials(&url));
        }
        let base = if opts.api_key.0.is_some() { super::strip_credentials(&url) } else { url.clone() };
        let opts = HttpOptions { url: super::strip_credentials(&url), ..opts };
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
            extra_body: serde_json::Map::new(),
            connected: false,
            base,
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
        backend.connected = true;
        Ok(backend)
    }

    /// Adds `fields` to every completion request: the analysis judge's grammar or JSON schema
    /// (`backend::judge`). A retried turn continues from the text received, which a grammar restarts: the judge
    /// then reports an answer that is not its JSON, naming the window.
    #[must_use]
    pub fn with_extra_body(mut self, fields: serde_json::Map<String, Value>) -> Self {
        self.extra_body = fields;
        self
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.opts.url)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.opts.api_key.0 {
            r = r.bearer_auth(key);
        }
        r
    }

    /// Sends a request and reads a JSON answer (at most [`MAX_JSON_BODY`]), with the timeout. Errors name the URL
    /// and carry the server's message. A connection that breaks, a 5xx or a 429 is retried like a turn, with the
    /// same capped backoff (these requests change nothing on the server); before the backend is connected a refused
    /// connection is not, so that an absent server is reported at once.
    async fn call_json(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = self.endpoint(path);
        let mut attempt = 0u32;
        loop {
            let e = match self.call_json_once(&method, path, body, &url).await {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => e,
            };
            if attempt >= self.opts.retries {
                return Err(if attempt == 0 {
                    e
                } else {
                    e.context(format!("failed {} times; giving up", attempt.saturating_add(1)))
                });
            }
            let delay = retry_delay(self.opts.backoff, attempt);
            tracing::warn!("{e:#}; retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn call_json_once(
        &self,
        method: &reqwest::Method,
        path: &str,
        body: Option<&Value>,
        url: &str,
    ) -> Result<Value, Failure> {
        let mut req = self.request(method.clone(), path).timeout(self.opts.timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let what = describe_reqwest(&e);
                let err = anyhow!("{} at {url}: {what}", self.opts.flavor);
                return Err(if what == "connection refused" && !self.connected {
                    Failure::Fatal(err)
                } else {
                    Failure::Retry(err)
                });
            }
        };
        let status = resp.status();
        let cap = if status.is_success() { MAX_JSON_BODY } else { MAX_ERROR_BODY };
        let answer =
            read_capped(resp, cap).await.map_err(|e| Failure::Retry(anyhow!("{url}: {}", describe_reqwest(&e))))?;
        json_body(url, &answer).map_err(|e| {
            if status.is_server_error() || status.as_u16() == 429 {
                Failure::Retry(e)
            } else {
                Failure::Fatal(e)
            }
        })
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
        body.extend(self.extra_body.clone());
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

    /// The error of a turn past its deadline.
    fn past_deadline(&self, url: &str, req: &GenRequest<'_>) -> anyhow::Error {
        anyhow!(
            "{url}: the turn took longer than its deadline of {:.0} s (--http-turn-deadline; by default \
             --http-timeout plus 1 s per token of the turn's limit)",
            self.opts.turn_deadline_for(req.max_tokens).as_secs_f64()
        )
    }

    /// One attempt: streams a continuation of `turn` and returns how it ended. Bounded whatever the server does:
    /// by the turn's token limit (one token per event with text, [`MAX_TOKEN_BYTES`] of text per token), by the
    /// stall timeout (reset by events only), and by `deadline`.
    async fn attempt(
        &self,
        req: &GenRequest<'_>,
        turn: &mut Turn,
        deadline: Instant,
        on_piece: &mut dyn FnMut(&str),
    ) -> Result<Option<Done>, Failure> {
        let prompt = format!("{}{}", req.prompt, turn.stream.received());
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
        let wait = self.opts.timeout.min(deadline.saturating_duration_since(Instant::now()));
        let resp = match tokio::time::timeout(wait, send).await {
            Err(_) if Instant::now() >= deadline => return Err(Failure::Fatal(self.past_deadline(&url, req))),
            Err(_) => return Err(Failure::Retry(anyhow!("{url}: no response within {:?}", self.opts.timeout))),
            Ok(Err(e)) => return Err(Failure::Retry(anyhow!("{url}: {}", describe_reqwest(&e)))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if !status.is_success() {
            let answer = tokio::time::timeout(wait, read_capped(resp, MAX_ERROR_BODY)).await.ok().and_then(Result::ok);
            let text = answer.map(|a| String::from_utf8_lossy(&a.bytes).into_owned()).unwrap_or_default();
            let e = anyhow!("{url} answered HTTP {}: {}", status.as_u16(), server_message(&text));
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                Failure::Retry(e)
            } else {
                Failure::Fatal(e)
            });
        }
        let max_text = usize::try_from(req.max_tokens).unwrap_or(usize::MAX).saturating_mul(MAX_TOKEN_BYTES);
        let mut stream = resp.bytes_stream();
        let mut parser = SseParser::default();
        turn.events = 0;
        let tick = Duration::from_millis(100);
        // The last event (not comment, not partial line), and when the turn's limit was reached.
        let mut last_event = Instant::now();
        let mut limit_reached: Option<Instant> = None;
        let limit = || -> Result<Option<Done>, Failure> { Ok(Some(Done::new(EngineStop::Limit))) };
        loop {
            if req.cancel.load(Ordering::Relaxed) {
                return Err(Failure::Fatal(Interrupted.into()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Fatal(self.past_deadline(&url, req)));
            }
            if limit_reached.is_some_and(|t| now.saturating_duration_since(t) >= LIMIT_GRACE.min(self.opts.timeout)) {
                return limit();
            }
            if now.saturating_duration_since(last_event) >= self.opts.timeout {
                return Err(Failure::Retry(anyhow!(
                    "{url}: the stream stalled (no event for {:.1} s)",
                    self.opts.timeout.as_secs_f64()
                )));
            }
            let Ok(next) = tokio::time::timeout(tick.min(self.opts.timeout), stream.next()).await else { continue };
            let (events, ended) = match next {
                Some(Ok(bytes)) => (parser.push(&bytes).map_err(|e| Failure::Fatal(e.context(url.clone())))?, false),
                Some(Err(_)) if limit_reached.is_some() => return limit(),
                Some(Err(e)) => {
                    return Err(Failure::Retry(anyhow!("{url}: the stream broke off: {}", describe_reqwest(&e))));
                }
                None => {
                    let mut last = parser.push(b"\n").map_err(|e| Failure::Fatal(e.context(url.clone())))?;
                    last.extend(parser.finish());
                    (last, true)
                }
            };
            if !events.is_empty() {
                last_event = Instant::now();
            }
            for event in &events {
                let mut chunk = match self.parse(event) {
                    Ok(Some(c)) => c,
                    Ok(None) => continue,
                    Err(e) => return Err(Failure::Fatal(e.context(format!("{url} sent a bad stream")))),
                };
                if !chunk.text.is_empty() {
                    if limit_reached.is_some() {
                        // The server ignores the limit: what it sends past it is not part of the turn.
                        return limit();
                    }
                    let room = max_text.saturating_sub(turn.stream.received().len());
                    if chunk.text.len() > room {
                        let mut cut = room;
                        while !chunk.text.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        chunk.text.truncate(cut);
                    }
                    turn.events += 1;
                    turn.first_piece.get_or_insert_with(Instant::now);
                    let step = turn.stream.push(&chunk.text);
                    if !step.emit.is_empty() {
                        on_piece(step.emit);
                    }
                    if step.stopped {
                        return Ok(None);
                    }
                    if turn.tokens_before + turn.events >= req.max_tokens || turn.stream.received().len() >= max_text {
                        limit_reached = Some(Instant::now());
                    }
                }
                if let Some(done) = chunk.done {
                    return Ok(Some(done));
                }
            }
            if ended {
                if limit_reached.is_some() {
                    return limit();
                }
                return Err(Failure::Retry(anyhow!("{url}: the stream ended before the turn was finished")));
            }
        }
    }

    async fn generate_async(&self, req: &GenRequest<'_>, on_piece: &mut dyn FnMut(&str)) -> Result<Generation> {
        let started = Instant::now();
        // A deadline too far to represent is as good as none: a year stands in for it.
        let deadline = started
            .checked_add(self.opts.turn_deadline_for(req.max_tokens))
            .unwrap_or_else(|| started + Duration::from_secs(365 * 86_400));
        let prompt_tokens = self.count_prompt(req.prompt).await?;
        let mut turn = Turn::new(&req.sampler.stop);
        let mut attempt = 0u32;
        let done = loop {
            match self.attempt(req, &mut turn, deadline, on_piece).await {
                Ok(done) => break done,
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => {
                    turn.tokens_before += turn.events;
                    if attempt >= self.opts.retries {
                        let tries = attempt.saturating_add(1);
                        return Err(e.context(format!("{} failed {tries} time(s); giving up", self.opts.flavor)));
                    }
                    let delay = retry_delay(self.opts.backoff, attempt);
                    tracing::warn!("{e:#}; retrying in {delay:?}");
                    attempt += 1;
                    let until = Instant::now() + delay;
                    if until >= deadline {
                        return Err(e.context(self.past_deadline(&self.opts.url, req).to_string()));
                    }
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
        let stopped = turn.stream.stopped();
        let rest = turn.stream.finish();
        if !rest.is_empty() {
            on_piece(rest);
        }
        // Tokens are counted on everything generated, the stop string included.
        let generated_with_stop = turn.stream.received();
        let reported = done.as_ref().and_then(|d| d.tokens).filter(|_| attempt == 0 && !stopped);
        let tokens = match reported {
            Some(t) => t,
            None if generated_with_stop.is_empty() => 0,
            None => self.tokenize(generated_with_stop).await?.saturating_sub(self.empty_tokens),
        };
        let tokens = tokens.min(req.max_tokens);
        let stop_reason = match (stopped, done.as_ref().map(|d| &d.stop)) {
            (true, _) | (false, Some(EngineStop::Word)) => StopReason::StopString,
            (false, Some(EngineStop::Eos | EngineStop::EosOrStop)) => StopReason::Eos,
            (false, Some(EngineStop::Limit | EngineStop::LengthOrStop)) => StopReason::MaxTokens,
            (false, Some(EngineStop::Other(s))) => {
                tracing::warn!("{} reported an unknown stop reason '{s}'; recorded as eos", self.opts.flavor);
                StopReason::Eos
            }
            (false, None) => StopReason::StopString,
        };
        let total_ms = started.elapsed().as_secs_f64() * 1000.0;
        let first_ms = turn.first_piece.map_or(total_ms, |t| (t - started).as_secs_f64() * 1000.0);
        let prompt_ms = done.as_ref().and_then(|d| d.prompt_ms).unwrap_or(first_ms);
        let generation_ms = done.as_ref().and_then(|d| d.generation_ms).unwrap_or((total_ms - first_ms).max(0.0));
        let prompt_evaluated = done.as_ref().and_then(|d| d.prompt_evaluated).unwrap_or(prompt_tokens);
        Ok(Generation {
            text: turn.stream.into_text(),
            tokens,
            prompt_tokens,
            prompt_tokens_evaluated: prompt_evaluated.min(prompt_tokens),
            stop_reason,
            prompt_ms,
            generation_ms,
            endpoint: super::fleet::endpoint_label(&self.opts.url).ok(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_15_every_backoff_is_capped() {
        let base = Duration::from_millis(500);
        assert_eq!(retry_delay(base, 0), base);
        assert_eq!(retry_delay(base, 2), Duration::from_secs(2));
        assert_eq!(retry_delay(base, 6), MAX_RETRY_DELAY, "32 s is capped at 30 s");
        assert_eq!(retry_delay(Duration::from_secs(3600), 0), MAX_RETRY_DELAY, "--http-backoff-ms is capped too");
        assert_eq!(retry_delay(Duration::MAX, u32::MAX), MAX_RETRY_DELAY);
    }

    #[test]
    fn issue_15_a_json_answer_over_the_cap_or_not_json_is_an_error_naming_the_url() {
        let body = |status: u16, bytes: &[u8], over: bool| Body { status, bytes: bytes.to_vec(), over };
        assert_eq!(json_body("http://h/tokenize", &body(200, br#"{"tokens":[1]}"#, false)).unwrap()["tokens"][0], 1);
        let e = json_body("http://h/props", &body(200, b"{", true)).unwrap_err().to_string();
        assert!(e.contains("http://h/props answered with more than 16 MiB"), "{e}");
        let e = json_body("http://h/props", &body(200, b"<html>oops", false)).unwrap_err().to_string();
        assert!(e.contains("invalid JSON") && e.contains("<html>oops"), "{e}");
        // An error answer is read with its own, smaller cap: a cut-off message is still shown.
        let e = json_body("http://h/tokenize", &body(503, br#"{"error":{"message":"busy"#, true)).unwrap_err();
        assert!(e.to_string().contains("HTTP 503: {\"error\":{\"message\":\"busy"), "{e}");
        let e = json_body("http://h/x", &body(500, &[0xff, 0xfe], false)).unwrap_err();
        assert!(e.to_string().contains("HTTP 500"), "{e}");
    }

    #[test]
    fn issue_15_the_default_turn_deadline_is_the_stall_timeout_plus_a_second_per_token() {
        let o = HttpOptions::new("http://h", super::super::Flavor::LlamaServer);
        assert_eq!(o.turn_deadline_for(512), Duration::from_secs(600 + 512));
        let set = HttpOptions { turn_deadline: Some(Duration::from_secs(5)), ..o };
        assert_eq!(set.turn_deadline_for(512), Duration::from_secs(5));
    }
}
