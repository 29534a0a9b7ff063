//! [`HttpBackend`]: one role's HTTP engine behind the [`Backend`] trait. It connects and probes the server (every
//! server of a fleet, checking that they serve the same model), sends JSON requests with a timeout and bounded
//! retries, and streams one turn, retrying a broken stream by *continuation* (the prompt extended by the text
//! already received, the token limit reduced) — on another endpoint of the fleet when there is one in service.
//! Which endpoint each request goes to, and when one is out, is [`super::fleet`]'s pure decision; this file asks it
//! before every request and tells it the outcome after.
//!
//! Its boundary: it owns the network (reqwest on a single-threaded tokio runtime), the fault policy and the turn's
//! bookkeeping. SSE framing is [`super::sse`]'s, stop strings are [`StopStream`]'s, and every field name, endpoint
//! answer and sampler setting is a flavor's ([`super::llama_server`], [`super::koboldcpp`], [`super::openai`]):
//! this file only picks the flavor's endpoint and function.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::Value;

use super::fleet::{check_consistent, endpoint_label, Fleet, Lease, ServedModel};
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

/// The error of a request that failed `attempt + 1` times.
fn gave_up(e: anyhow::Error, attempt: u32) -> anyhow::Error {
    if attempt == 0 {
        e
    } else {
        e.context(format!("failed {} times; giving up", attempt.saturating_add(1)))
    }
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

/// One endpoint of a role, as probed at start.
struct Endpoint {
    /// Base URL, without a trailing `/` (may hold credentials: never shown).
    url: String,
    /// `scheme://host:port`, the only form shown or recorded.
    label: String,
    /// Its protocol.
    flavor: Flavor,
    /// What it reported at start.
    info: ServerInfo,
}

/// What every replica of one role's backend shares: its endpoints as probed at start, and the fleet's state.
struct Shared {
    endpoints: Vec<Endpoint>,
    fleet: Mutex<Fleet>,
    template: ChatTemplate,
}

/// One role's HTTP engine: one server or a fleet.
pub struct HttpBackend {
    /// The options (each endpoint's URL as given: credentials are used for requests only, never shown).
    opts: HttpOptions,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    shared: Arc<Shared>,
    record: ModelRecord,
    n_ctx: u32,
    /// Tokens the engine's tokenizer adds to an empty text (BOS), subtracted when counting generated text.
    empty_tokens: u32,
    /// Per endpoint: which of [`openai::tokenize_requests`] it answered (tried in order once).
    tokenize_route: Vec<std::cell::Cell<Option<usize>>>,
    /// The last prompt counted (its hash and count): the driver counts a prompt, then generates from it.
    last_count: std::cell::Cell<Option<(u64, u32)>>,
    /// Fields added to every completion request ([`HttpBackend::with_extra_body`]).
    extra_body: serde_json::Map<String, Value>,
    /// Set once [`HttpBackend::connect`] succeeded: from then on a refused connection is retried (a restarting
    /// server), before it an absent server is reported at once.
    connected: bool,
}

/// The route every flavor answers cheaply with its model and context: the start-up probe, and the health probe of
/// an endpoint taken out.
fn info_path(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::LlamaServer => "/props",
        Flavor::Koboldcpp => "/api/extra/true_max_context_length",
        Flavor::Openai => "/v1/models",
    }
}

/// The longest wait for a health probe's answer (a down endpoint should not hold a turn up for long).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Connects to the role's servers, asks each for its context size, model and template, checks that they all
    /// serve the same model with the same context size, and prepares the chat template.
    ///
    /// # Errors
    /// One line naming the endpoint when a server cannot be reached, answers with an error, or serves another
    /// model or context size than the first; or when the context size or the chat template cannot be determined.
    pub fn connect(opts: HttpOptions) -> Result<Self> {
        let mut endpoints = Vec::with_capacity(opts.endpoints.len());
        for spec in &opts.endpoints {
            let given = spec.url.trim_end_matches('/').to_string();
            let label =
                endpoint_label(&given).map_err(|e| anyhow!("--url '{}': {e}", super::strip_credentials(&given)))?;
            // Credentials in the URL are sent as Basic authentication unless an API key is set; never shown.
            let url = if opts.api_key.0.is_some() { super::strip_credentials(&given) } else { given };
            let flavor = spec.flavor.unwrap_or(opts.flavor);
            endpoints.push(Endpoint { url, label, flavor, info: ServerInfo::default() });
        }
        if endpoints.is_empty() {
            bail!("the {} role has no HTTP endpoint: pass --url URL", opts.role);
        }
        let (rt, client) = runtime_and_client(&opts)?;
        let weights: Vec<u32> = opts.endpoints.iter().map(|e| e.weight).collect();
        let fleet = Mutex::new(Fleet::new(&weights, opts.cap));
        let template = ChatTemplate::new(chat_template::builtin("chatml").unwrap_or_default(), "chatml", "", "")?;
        let mut backend = HttpBackend {
            rt,
            client,
            shared: Arc::new(Shared { endpoints, fleet, template }),
            record: ModelRecord {
                path: String::new(),
                file_size: None,
                name: None,
                architecture: None,
                n_ctx: 0,
                chat_template_source: String::new(),
            },
            n_ctx: 0,
            empty_tokens: 0,
            tokenize_route: (0..opts.endpoints.len()).map(|_| std::cell::Cell::new(None)).collect(),
            last_count: std::cell::Cell::new(None),
            extra_body: serde_json::Map::new(),
            connected: false,
            opts,
        };
        let probes = (0..backend.shared.endpoints.len()).map(|i| backend.probe(i));
        let infos = backend.rt.block_on(futures_util::future::join_all(probes));
        let infos: Vec<ServerInfo> = infos.into_iter().collect::<Result<_>>()?;
        let served: Vec<ServedModel> = backend
            .shared
            .endpoints
            .iter()
            .zip(&infos)
            .map(|(e, i)| ServedModel { endpoint: e.label.clone(), model: i.model.clone(), n_ctx: i.n_ctx })
            .collect();
        check_consistent(backend.opts.role, &served)?;
        let first = &backend.shared.endpoints[0];
        let flag_hint = "pass --assistant-ctx / --user-ctx (or `n_ctx` under [assistant]/[user])";
        let reported = served.iter().find_map(|s| s.n_ctx.map(|n| (n, s.endpoint.clone())));
        let n_ctx = match (backend.opts.n_ctx, reported) {
            (Some(want), Some((has, at))) if want > has => bail!(
                "{} at {at} serves a context of {has} tokens, less than the {want} asked for",
                backend.opts.flavor
            ),
            (Some(want), _) => want,
            (None, Some((has, _))) => has,
            (None, None) => bail!(
                "{} at {} does not report its context size: {flag_hint} with the size the server was started with",
                first.flavor,
                first.label
            ),
        };
        let gguf = match &backend.opts.gguf {
            Some(p) => Some(crate::gguf::inspect(p)?),
            None => None,
        };
        let server_template = infos.iter().find_map(|i| i.chat_template.as_deref().filter(|t| !t.trim().is_empty()));
        let (text, source) = if backend.opts.chat_template.is_some() || gguf.is_some() {
            chat_template::select(
                backend.opts.chat_template.as_deref(),
                gguf.as_ref().and_then(|g| g.chat_template()),
                gguf.as_ref().and_then(|g| g.architecture()),
            )?
        } else if let Some(t) = server_template {
            (t.to_string(), "server".to_string())
        } else {
            bail!(
                "no chat template for {} at {}: pass the served model's GGUF with --assistant-model/--user-model \
                 (only its metadata is read) or a template with --assistant-template/--user-template",
                first.flavor,
                first.label
            );
        };
        let eos = infos.iter().find_map(|i| i.eos_token.clone()).unwrap_or_default();
        let template = ChatTemplate::new(&text, source, "", &eos)?;
        let labels: Vec<&str> = backend.shared.endpoints.iter().map(|e| e.label.as_str()).collect();
        backend.record = ModelRecord {
            path: labels.join(" "),
            file_size: None,
            name: gguf.as_ref().and_then(|g| g.name().map(str::to_string)).or_else(|| infos[0].model.clone()),
            architecture: gguf.as_ref().and_then(|g| g.architecture().map(str::to_string)),
            n_ctx,
            chat_template_source: template.source.clone(),
        };
        backend.n_ctx = n_ctx;
        let Some(shared) = Arc::get_mut(&mut backend.shared) else { bail!("the HTTP backend is shared too early") };
        shared.template = template;
        for (e, info) in shared.endpoints.iter_mut().zip(infos) {
            e.info = info;
        }
        backend.empty_tokens = backend.rt.block_on(backend.tokenize(""))?;
        backend.connected = true;
        Ok(backend)
    }

    /// Another backend for the same role on another thread: its own runtime and connections, the same endpoints,
    /// start-up answers and fleet state (so every thread sees an endpoint taken out or put back). Opens no socket.
    ///
    /// # Errors
    /// When the runtime or the HTTP client cannot be created.
    pub fn replica(&self) -> Result<Self> {
        let (rt, client) = runtime_and_client(&self.opts)?;
        Ok(HttpBackend {
            opts: self.opts.clone(),
            rt,
            client,
            shared: Arc::clone(&self.shared),
            record: self.record.clone(),
            n_ctx: self.n_ctx,
            empty_tokens: self.empty_tokens,
            tokenize_route: self.tokenize_route.iter().map(|c| std::cell::Cell::new(c.get())).collect(),
            last_count: std::cell::Cell::new(None),
            extra_body: self.extra_body.clone(),
            connected: self.connected,
        })
    }

    /// Adds `fields` to every completion request: the analysis judge's grammar or JSON schema
    /// (`backend::judge`). A retried turn continues from the text received, which a grammar restarts: the judge
    /// then reports an answer that is not its JSON, naming the window.
    #[must_use]
    pub fn with_extra_body(mut self, fields: serde_json::Map<String, Value>) -> Self {
        self.extra_body = fields;
        self
    }

    fn request_to(&self, ep: &Endpoint, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.request(method, format!("{}{path}", ep.url));
        if let Some(key) = &self.opts.api_key.0 {
            r = r.bearer_auth(key);
        }
        r
    }

    fn fleet(&self) -> std::sync::MutexGuard<'_, Fleet> {
        self.shared.fleet.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, lease: Lease, ok: bool) {
        let (was_up, is_up) = {
            let mut f = self.fleet();
            let was_up = f.is_up(lease.index);
            f.release(lease, ok, Instant::now());
            (was_up, f.is_up(lease.index))
        };
        let label = &self.shared.endpoints[lease.index].label;
        match (was_up, is_up) {
            (true, false) => tracing::warn!("{label} taken out after repeated failures; probing it with backoff"),
            (false, true) => tracing::warn!("{label} answers again: back in service"),
            _ => {}
        }
    }

    /// Takes an endpoint for one request: the fleet's choice (another than `avoid` when one is in service). A
    /// down endpoint whose probe is due is probed first with a cheap `GET` (and put back if it answers), so a turn
    /// is never spent on a probe. Waits while every endpoint is at its cap.
    async fn lease(&self, avoid: Option<usize>, cancel: Option<&AtomicBool>) -> Result<Lease> {
        loop {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Interrupted.into());
            }
            let got = {
                let mut f = self.fleet();
                f.acquire_avoiding(Instant::now(), avoid).or_else(|| f.acquire_when_all_down(avoid))
            };
            match got {
                Some(l) if l.probe => {
                    let ok = self.health_probe(l.index).await;
                    self.release(l, ok);
                }
                Some(l) => return Ok(l),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Whether endpoint `i` answers its info route with a success, within [`PROBE_TIMEOUT`].
    async fn health_probe(&self, i: usize) -> bool {
        let ep = &self.shared.endpoints[i];
        let timeout = self.opts.timeout.min(PROBE_TIMEOUT);
        let req = self.request_to(ep, reqwest::Method::GET, info_path(ep.flavor)).timeout(timeout);
        matches!(req.send().await, Ok(r) if r.status().is_success())
    }

    /// Sends a `GET` to endpoint `at` and reads a JSON answer (at most [`MAX_JSON_BODY`]), with the timeout: the
    /// start-up probes, which must reach that endpoint. Errors name the URL and carry the server's message. A
    /// connection that breaks, a 5xx or a 429 is retried with the capped backoff of a turn; before the backend is
    /// connected a refused connection is not, so that an absent server is reported at once.
    async fn get_json(&self, at: usize, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.shared.endpoints[at].label);
        let mut attempt = 0u32;
        loop {
            let e = match self.call_json_once(at, &reqwest::Method::GET, path, None, &url).await {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => e,
            };
            if attempt >= self.opts.retries {
                return Err(gave_up(e, attempt));
            }
            let delay = retry_delay(self.opts.backoff, attempt);
            tracing::warn!("{e:#}; retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn call_json_once(
        &self,
        at: usize,
        method: &reqwest::Method,
        path: &str,
        body: Option<&Value>,
        url: &str,
    ) -> Result<Value, Failure> {
        let ep = &self.shared.endpoints[at];
        let mut req = self.request_to(ep, method.clone(), path).timeout(self.opts.timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let what = describe_reqwest(&e);
                let err = anyhow!("{} at {url}: {what}", ep.flavor);
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

    /// One `POST` with a JSON answer on endpoint `at`, not retried: the caller leases and retries (on another
    /// endpoint of a fleet when one is in service).
    async fn post_json_once(&self, at: usize, path: &str, body: &Value) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.shared.endpoints[at].label);
        self.call_json_once(at, &reqwest::Method::POST, path, Some(body), &url).await
    }

    /// The start-up probe of endpoint `at`: what it serves.
    async fn probe(&self, at: usize) -> Result<ServerInfo> {
        let flavor = self.shared.endpoints[at].flavor;
        let path = info_path(flavor);
        match flavor {
            Flavor::LlamaServer => Ok(llama_server::info(&self.get_json(at, path).await?)),
            Flavor::Koboldcpp => {
                let ctx = self.get_json(at, path).await?;
                let model = self.get_json(at, "/api/v1/model").await.ok();
                Ok(koboldcpp::info(&ctx, model.as_ref()))
            }
            Flavor::Openai => Ok(openai::info(&self.get_json(at, path).await?)),
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

    /// Counts the tokens of `text` as the engine would evaluate it (BOS included), on an endpoint the fleet
    /// gives. A failure worth retrying moves at once to another endpoint in service, and waits the capped backoff
    /// only when there is none, as a turn does; within the retry budget, then the conversation ends in `error`.
    async fn tokenize(&self, text: &str) -> Result<u32> {
        let mut failed = None;
        let mut attempt = 0u32;
        loop {
            let lease = self.lease(failed, None).await?;
            let counted = self.tokenize_at(lease.index, text).await;
            // Only a failure worth retrying (no answer, a 5xx) counts against the endpoint's health.
            self.release(lease, !matches!(counted, Err(Failure::Retry(_))));
            let e = match counted {
                Ok(n) => return Ok(n),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => e,
            };
            if attempt >= self.opts.retries {
                return Err(gave_up(e, attempt));
            }
            failed = Some(lease.index);
            attempt += 1;
            if self.fleet().other_up(lease.index) {
                tracing::warn!("{e:#}; counting on another endpoint");
                continue;
            }
            let delay = retry_delay(self.opts.backoff, attempt - 1);
            tracing::warn!("{e:#}; retrying in {delay:?}");
            tokio::time::sleep(delay).await;
        }
    }

    /// Counts the tokens of `text` on endpoint `at`, once.
    async fn tokenize_at(&self, at: usize, text: &str) -> Result<u32, Failure> {
        let ep = &self.shared.endpoints[at];
        let v = match ep.flavor {
            Flavor::LlamaServer => {
                let body = serde_json::json!({"content": text, "add_special": true, "parse_special": true});
                let v = self.post_json_once(at, "/tokenize", &body).await?;
                llama_server::token_count(&v)
            }
            Flavor::Koboldcpp => {
                let v = self.post_json_once(at, "/api/extra/tokencount", &serde_json::json!({"prompt": text})).await?;
                koboldcpp::token_count(&v)
            }
            Flavor::Openai => {
                let model = ep.info.model.clone().unwrap_or_default();
                let routes = openai::tokenize_requests(text, &model);
                let route = &self.tokenize_route[at];
                if let Some((path, body)) = route.get().and_then(|i| routes.get(i)) {
                    let v = self.post_json_once(at, path, body).await?;
                    return openai::token_count(&v).map_err(Failure::Fatal);
                }
                // The first route that answers is kept; one that does not exist (a 4xx) leads to the next, and
                // a failure worth retrying is the endpoint's, not the route's.
                let mut last = None;
                for (i, (path, body)) in routes.iter().enumerate() {
                    match self.post_json_once(at, path, body).await {
                        Ok(v) => {
                            route.set(Some(i));
                            return openai::token_count(&v).map_err(Failure::Fatal);
                        }
                        Err(Failure::Fatal(e)) => last = Some(e),
                        Err(retry) => return Err(retry),
                    }
                }
                Err(last.unwrap_or_else(|| anyhow!("no tokenize endpoint")).context(format!(
                    "{} offers none of /tokenize (vLLM), /v1/tokenize (aphrodite), /extras/tokenize/count \
                     (llama-cpp-python): parrot needs one to count tokens",
                    ep.label
                )))
            }
        };
        v.map_err(Failure::Fatal)
    }

    fn body(&self, ep: &Endpoint, req: &GenRequest<'_>, prompt: &str, max_tokens: u32) -> Result<Value> {
        let model = ep.info.model.clone().unwrap_or_default();
        let m = match ep.flavor {
            Flavor::LlamaServer => llama_server::map(req.sampler, max_tokens, req.seed, self.n_ctx)?,
            Flavor::Koboldcpp => koboldcpp::map(req.sampler, max_tokens, req.seed, self.n_ctx)?,
            Flavor::Openai => openai::map(req.sampler, max_tokens, req.seed, &model)?,
        };
        let mut body = m.body;
        body.extend(self.extra_body.clone());
        body.insert("prompt".into(), Value::String(prompt.to_string()));
        Ok(Value::Object(body))
    }

    fn parse(flavor: Flavor, event: &SseEvent) -> Result<Option<Chunk>> {
        match flavor {
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

    /// One attempt on endpoint `at`: streams a continuation of `turn` and returns how it ended. Bounded whatever the server does:
    /// by the turn's token limit (one token per event with text, [`MAX_TOKEN_BYTES`] of text per token), by the
    /// stall timeout (reset by events only), and by `deadline`.
    async fn attempt(
        &self,
        at: usize,
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
        let ep = &self.shared.endpoints[at];
        let body = self.body(ep, req, &prompt, left).map_err(Failure::Fatal)?;
        let path = match ep.flavor {
            Flavor::LlamaServer => "/completion",
            Flavor::Koboldcpp => "/api/extra/generate/stream",
            Flavor::Openai => "/v1/completions",
        };
        let url = format!("{}{path}", ep.label);
        let send =
            self.request_to(ep, reqwest::Method::POST, path).header("Accept", "text/event-stream").json(&body).send();
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
                let mut chunk = match Self::parse(ep.flavor, event) {
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
        let mut failed: Option<usize> = None;
        let mut tried: Vec<usize> = Vec::new();
        let (done, at) = loop {
            let lease = self.lease(failed, Some(req.cancel)).await?;
            match self.attempt(lease.index, req, &mut turn, deadline, on_piece).await {
                Ok(done) => {
                    self.release(lease, true);
                    break (done, lease.index);
                }
                Err(Failure::Fatal(e)) => {
                    // The server answered (a 4xx, a malformed stream) or Ctrl-C: not a health failure.
                    self.release(lease, true);
                    return Err(e);
                }
                Err(Failure::Retry(e)) => {
                    self.release(lease, false);
                    turn.tokens_before += turn.events;
                    if !tried.contains(&lease.index) {
                        tried.push(lease.index);
                    }
                    if attempt >= self.opts.retries {
                        let tries = attempt.saturating_add(1);
                        let on = if self.shared.endpoints.len() > 1 {
                            let labels: Vec<&str> =
                                tried.iter().map(|&i| self.shared.endpoints[i].label.as_str()).collect();
                            format!(" on {}", labels.join(", "))
                        } else {
                            String::new()
                        };
                        let flavor = self.opts.flavor;
                        return Err(e.context(format!("{flavor} failed {tries} time(s){on}; giving up")));
                    }
                    failed = Some(lease.index);
                    attempt += 1;
                    if self.fleet().other_up(lease.index) {
                        tracing::warn!("{e:#}; continuing the turn on another endpoint");
                        continue;
                    }
                    let delay = retry_delay(self.opts.backoff, attempt - 1);
                    tracing::warn!("{e:#}; retrying in {delay:?}");
                    let until = Instant::now() + delay;
                    if until >= deadline {
                        let label = &self.shared.endpoints[lease.index].label;
                        return Err(e.context(self.past_deadline(label, req).to_string()));
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
            endpoint: Some(self.shared.endpoints[at].label.clone()),
        })
    }
}

/// A single-threaded runtime and an HTTP client for one thread's backend.
fn runtime_and_client(opts: &HttpOptions) -> Result<(tokio::runtime::Runtime, reqwest::Client)> {
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
    Ok((rt, client))
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
        self.shared.template.render(messages, true)
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
