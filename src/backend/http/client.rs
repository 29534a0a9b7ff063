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
    /// Fields added to every completion request ([`HttpBackend::with_extra_body`]).
    extra_body: serde_json::Map<String, Value>,
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
            extra_body: serde_json::Map::new(),
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

    /// One attempt: streams a continuation of `turn` and returns how it ended.
    async fn attempt(
        &self,
        req: &GenRequest<'_>,
        turn: &mut Turn,
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
                    let step = turn.stream.push(&chunk.text);
                    if !step.emit.is_empty() {
                        on_piece(step.emit);
                    }
                    if step.stopped {
                        return Ok(None);
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
        let mut turn = Turn::new(&req.sampler.stop);
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
