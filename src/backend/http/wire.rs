//! What the flavors share: the shapes they read a server's answers into ([`ServerInfo`], [`Chunk`], [`Done`],
//! [`EngineStop`]), the request body they build from our sampler settings ([`Mapping`]), and small readers of JSON
//! answers. Each flavor module fills these from its own field names; the client only ever sees these types, never
//! a flavor's fields.

use anyhow::Result;
use serde_json::Value;

use super::sse::clip;
use super::{koboldcpp, llama_server, openai, Flavor};
use crate::config::SamplerConfig;

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

/// How an engine said a generation ended, before parrot maps it to a
/// [`StopReason`](crate::transcript::StopReason).
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

/// Whether two sampler values differ (for settings that only matter when active).
pub(crate) fn differs(a: f64, b: f64) -> bool {
    (a - b).abs() > 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
