//! HTTP engines as peers of the in-process backend: llama-server, koboldcpp, and OpenAI-compatible servers
//! (aphrodite-engine, vLLM, llama-cpp-python). This module holds what a user chooses — the [`Flavor`] and the
//! [`HttpOptions`] — and re-exports the rest under its old paths. The work is split by what changes together:
//!
//! * [`client`] — the [`HttpBackend`]: connecting, JSON calls, retries with backoff, streaming a turn;
//! * [`sse`] — Server-Sent Events framing, pure;
//! * [`fleet`] — one role over several endpoints: choice, health, consistency, endpoint labels; pure;
//! * [`wire`] — the shapes every flavor reads answers into and builds requests from, and [`check_sampler`];
//! * [`llama_server`], [`koboldcpp`], [`openai`] — each flavor's field map and stream parser.
//!
//! What holds for every flavor:
//!
//! * **Prompts are rendered locally** with the model's chat template (from `--*-template`, a GGUF given with
//!   `--*-model` — metadata only — or llama-server's `/props`), exactly as in-process, and sent to the engine's
//!   *text-completion* endpoint. Templates render an empty `bos_token`: every engine inserts BOS itself for a string
//!   prompt when the model wants one, and a second BOS from the template would change the model's input.
//! * **Token counts come from the engine** (its tokenize endpoint or its own response), so `total_tokens`,
//!   `turn_max_tokens` and the context check mean what they mean in-process.
//! * **Stop strings are also enforced here.** Engines disagree on what they report when a stop string ends a turn
//!   (koboldcpp says `length`, OpenAI-style servers say `stop` as for an end-of-sequence token, and some drop the
//!   string); parrot watches the text itself, holds back a possible partial stop string before streaming it (with
//!   [`crate::backend::stream::StopStream`], as in-process), and closes the stream the moment one appears.
//! * **Faults.** A connection that fails, a 5xx, a stream that stalls past the timeout or ends early is retried with
//!   exponential backoff (each delay at most 30 s); in a fleet it moves at once to another endpoint in service and
//!   waits only when there is none. Token counts are retried the same way, so a tokenize endpoint that fails ends
//!   only that conversation; the start-up probes are retried on their own endpoint. A retry *continues* the turn:
//!   the prompt is extended by the text already received and the token limit reduced, so streamed text is never
//!   repeated or lost. A 4xx or a malformed stream is not
//!   retried. When retries run out the error reaches the driver, which ends the conversation with `error` after the
//!   last complete turn.
//!
//! * **Bounds.** The server is untrusted: a turn's reading stops at its token limit (one token per stream event
//!   that carries text, and at most 1 KiB of text per token) even when the server ignores the limit; only events
//!   reset the stall timer (`:` keep-alive comments and partial lines do not); each turn has a wall-clock deadline
//!   ([`HttpOptions::turn_deadline_for`]); an SSE line or event is at most 1 MiB ([`sse`]) and a JSON answer at most
//!   16 MiB (an error body: 64 KiB).
//! * **Fleets.** A role may have several endpoints serving the same model ([`fleet`]). Every request (a turn, a
//!   token count) takes an endpoint from the role's shared [`fleet::Fleet`] and gives it back with its outcome; a
//!   retry goes to another endpoint when one is in service (at once, without the backoff), continuing from the
//!   text received; an endpoint taken out is probed with a cheap `GET` of its info route and put back when it
//!   answers. The retry budget is per turn, whatever the endpoints: a conversation ends in `error` only when no
//!   endpoint served the turn within it.
//!
//! The [`Backend`](crate::backend::Backend) trait is synchronous; each [`HttpBackend`] owns a single-threaded tokio
//! runtime and blocks on it. `--parallel N` runs N conversations on N threads, each with its own pair of backends
//! ([`HttpBackend::replica`]: own connections, shared fleet state and start-up probes).
//!
//! The API key is read from an environment variable, sent as a bearer token, and never printed or recorded. So are
//! credentials in a URL (`http://user:pass@host`): sent as HTTP Basic authentication (when no API key is set),
//! kept in memory only; every URL shown or stored has them removed ([`strip_credentials`]), and the recorded
//! command line has them replaced by `***` ([`redact_credentials`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub mod client;
pub mod fleet;
pub mod koboldcpp;
pub mod llama_server;
pub mod openai;
#[cfg(test)]
mod proptests;
pub mod sse;
pub mod wire;

pub use client::HttpBackend;
pub use sse::{event_json, SseEvent, SseParser};
pub use wire::{check_sampler, get_u32, server_message, Chunk, Done, EngineStop, Mapping, ServerInfo};

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

/// Replaces the user-info part (`user:pass@`) of every URL in `text` by `with`. Pure, never fails: text that is
/// not a URL is returned as it is.
fn replace_userinfo(text: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', '?', '#', ' ', '\t', '\n']).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str(with);
                rest = &tail[at + 1..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// `text` with the credentials of every URL in it removed: `http://user:pass@host:1/p` → `http://host:1/p`. The
/// form of a URL that is shown, logged and written to transcripts.
#[must_use]
pub fn strip_credentials(text: &str) -> String {
    replace_userinfo(text, "")
}

/// Marks where credentials were taken out of a recorded command line.
pub const REDACTED: &str = "***@";

/// `text` with the credentials of every URL in it replaced by `***`: `http://user:pass@host` → `http://***@host`.
/// The form `run.json` records, so that a reader (and `--resume`) sees that some were given.
#[must_use]
pub fn redact_credentials(text: &str) -> String {
    replace_userinfo(text, REDACTED)
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

/// How to reach and use one role's HTTP engine: one server, or a fleet of them serving the same model.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The servers, at least one, e.g. `http://127.0.0.1:8080` (URLs as given: may hold credentials, so only
    /// their labels are shown).
    pub endpoints: Vec<fleet::EndpointSpec>,
    /// The role's protocol, for endpoints that name none.
    pub flavor: Flavor,
    /// The most requests in flight on one endpoint (`None`: no limit).
    pub cap: Option<u32>,
    /// The role it serves (`assistant`, `user`), for messages.
    pub role: &'static str,
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
    /// The longest one turn may take, retries included; `None`: [`HttpOptions::turn_deadline_for`]'s default.
    pub turn_deadline: Option<Duration>,
}

impl HttpOptions {
    /// Options for one server with the defaults of `parrot run`: 600 s timeout, 3 retries from 500 ms.
    #[must_use]
    pub fn new(url: impl Into<String>, flavor: Flavor) -> Self {
        HttpOptions {
            endpoints: vec![fleet::EndpointSpec { url: url.into(), flavor: Some(flavor), weight: 1 }],
            flavor,
            cap: None,
            role: "assistant",
            api_key: ApiKey::default(),
            n_ctx: None,
            chat_template: None,
            gguf: None,
            timeout: Duration::from_secs(600),
            retries: 3,
            backoff: Duration::from_millis(500),
            turn_deadline: None,
        }
    }

    /// The wall-clock deadline of a turn of at most `max_tokens` tokens: the one set, or by default the stall
    /// timeout (the longest silence allowed, which covers evaluating the prompt) plus one second per token of the
    /// turn's limit — a server slower than one token a second is treated as hung. With the defaults (600 s,
    /// `turn_max_tokens` 512) that is 1112 s.
    #[must_use]
    pub fn turn_deadline_for(&self, max_tokens: u32) -> Duration {
        self.turn_deadline.unwrap_or_else(|| self.timeout.saturating_add(Duration::from_secs(u64::from(max_tokens))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn credentials_are_stripped_from_every_url_and_nothing_else() {
        assert_eq!(strip_credentials("http://alice:s3cr%40t@h:8080/v1?x=a@b"), "http://h:8080/v1?x=a@b");
        assert_eq!(redact_credentials("--url=https://tok@h"), "--url=https://***@h");
        assert_eq!(
            redact_credentials("api_url=http://a:b@x:1 user_api_url=http://c@y"),
            "api_url=http://***@x:1 user_api_url=http://***@y"
        );
        for plain in ["http://127.0.0.1:8080", "no url here", "a@b.c", "http://", "://@", "mailto:a@b"] {
            assert_eq!(strip_credentials(plain), plain.replace("://@", "://"));
        }
    }
}
