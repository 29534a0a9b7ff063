//! Engines behind one small trait. The conversation driver renders nothing and decodes nothing itself: it asks a
//! [`Backend`] to render a message list with the model's chat template, to count a prompt's tokens, and to
//! generate a turn, streaming pieces to a callback.
//!
//! * `llama` — in-process llama.cpp through `llama-cpp-2` (feature `llama`, on by default).
//! * `http` — llama-server, koboldcpp and OpenAI-compatible servers over HTTP (`--backend http`).
//! * `judge` — the analysis judge's engines (in-process or HTTP), one constrained greedy answer per window.
//! * `scripted` — a deterministic fake for the driver's unit tests; never a stand-in for a real-backend test.
//!
//! What the streaming backends share — holding back a possible stop string while streaming — is [`stream`].

use std::sync::atomic::AtomicBool;

use anyhow::Result;

use crate::chat_template::ChatMessage;
use crate::config::SamplerConfig;
use crate::transcript::{Millis, ModelRecord, StopReason};

#[cfg(feature = "llama")]
pub mod embed;
pub mod http;
pub mod judge;
#[cfg(feature = "llama")]
pub mod llama;
#[cfg(feature = "llama")]
pub mod sampling;
pub mod scripted;
pub mod stream;

pub use stream::find_stop;

/// What to generate.
pub struct GenRequest<'a> {
    /// The full prompt text: rendered chat template plus the forced prefix.
    pub prompt: &'a str,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampler settings.
    pub sampler: &'a SamplerConfig,
    /// Seed for this turn's sampler.
    pub seed: u32,
    /// Set by Ctrl-C: generation stops with [`Interrupted`] at the next token.
    pub cancel: &'a AtomicBool,
}

/// One generated turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text, without the prefix, cut before a stop string.
    pub text: String,
    /// Tokens generated.
    pub tokens: u32,
    /// Length of the prompt in tokens.
    pub prompt_tokens: u32,
    /// Prompt tokens evaluated (the rest came from the KV cache).
    pub prompt_tokens_evaluated: u32,
    /// Why the turn ended.
    pub stop_reason: StopReason,
    /// Prompt evaluation time.
    pub prompt_ms: Millis,
    /// Generation time.
    pub generation_ms: Millis,
    /// The HTTP endpoint that produced the turn, as `scheme://host:port` (never credentials); `None` in-process.
    pub endpoint: Option<String>,
}

/// Returned (as the error) when generation was cancelled by Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// An engine that holds one model for one role.
pub trait Backend {
    /// Describes the model for the transcript header.
    fn describe(&self) -> ModelRecord;
    /// Backend name for the transcript header (`llama`, `http:openai`, …).
    fn name(&self) -> String;
    /// The context size in tokens.
    fn n_ctx(&self) -> u32;
    /// Renders messages with the model's chat template and a generation prompt.
    ///
    /// # Errors
    /// When the template fails.
    fn render(&self, messages: &[ChatMessage]) -> Result<String>;
    /// Counts the tokens of a prompt as [`Backend::generate`] would evaluate it.
    ///
    /// # Errors
    /// When the engine cannot tokenize.
    fn count_tokens(&self, prompt: &str) -> Result<u32>;
    /// Starts a new conversation: forget cached state.
    fn reset(&mut self);
    /// Generates one turn, calling `on_piece` with each decoded piece of text as it arrives.
    ///
    /// # Errors
    /// [`Interrupted`] on Ctrl-C, or the engine's failure.
    fn generate(&mut self, request: &GenRequest<'_>, on_piece: &mut dyn FnMut(&str)) -> Result<Generation>;
}
