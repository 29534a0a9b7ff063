//! OpenAI-compatible text completions, `POST /v1/completions` with `stream: true`: aphrodite-engine, vLLM and
//! llama-cpp-python's server.
//!
//! * Fields: `max_tokens`, `repetition_penalty` (vLLM/aphrodite; also sent as llama-cpp-python's
//!   `repeat_penalty`), `top_k` (`0` = off), `min_p`, `seed`, `frequency_penalty`, `presence_penalty`; aphrodite's
//!   extras (`typical_p`, `dry_*` with `dry_range`, `xtc_*`, `mirostat_mode`/`_tau`/`_eta`) only when active. These
//!   servers ignore fields they do not know, so parrot warns about every active setting that not all of them honour,
//!   and about `repeat_last_n`, which none of them has (vLLM penalises the whole context).
//! * **Stop strings are not sent.** An OpenAI-style stream reports a stop string and an end-of-sequence token alike
//!   as `finish_reason: "stop"`, and llama-cpp-python also drops the string, so the two would be indistinguishable.
//!   parrot applies the stop strings itself and closes the stream at the first one; `"stop"` then means EOS.
//! * Stream: `data: {"choices": [{"text": "...", "finish_reason": null}]}` … then `data: [DONE]`.
//! * `/v1/models` gives the model id (sent as `model`) and, on vLLM/aphrodite, `max_model_len`. Tokens are counted
//!   with `/tokenize` (vLLM), `/v1/tokenize` (aphrodite) or `/extras/tokenize/count` (llama-cpp-python).

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::sse::{event_json, SseEvent};
use super::wire::{differs, get_u32, server_message, Chunk, Done, EngineStop, Mapping, ServerInfo};
use crate::config::{SamplerConfig, DEFAULT_ORDER};

/// Reads `/v1/models`: the first model's `id` and `max_model_len`.
#[must_use]
pub fn info(models: &Value) -> ServerInfo {
    let first = models.pointer("/data/0");
    ServerInfo {
        n_ctx: first.and_then(|m| get_u32(m, "/max_model_len")),
        chat_template: None,
        eos_token: None,
        model: first.and_then(|m| m.get("id")).and_then(Value::as_str).map(str::to_string),
    }
}

/// The tokenize endpoints to try, in order, with their bodies.
#[must_use]
pub fn tokenize_requests(text: &str, model: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("/tokenize", json!({"model": model, "prompt": text})),
        ("/v1/tokenize", json!({"model": model, "prompt": text})),
        ("/extras/tokenize/count", json!({"input": text})),
    ]
}

/// Reads a tokenize answer: `count` (vLLM, llama-cpp-python), `value` (aphrodite) or the `tokens` list.
///
/// # Errors
/// When none is there.
pub fn token_count(v: &Value) -> Result<u32> {
    get_u32(v, "/count")
        .or_else(|| get_u32(v, "/value"))
        .or_else(|| v.get("tokens").and_then(Value::as_array).and_then(|t| u32::try_from(t.len()).ok()))
        .ok_or_else(|| anyhow!("the tokenize endpoint answered without `count`, `value` or `tokens`"))
}

/// Builds the `/v1/completions` body (without `prompt`).
///
/// # Errors
/// Never for a validated sampler; the signature matches the other flavors.
pub fn map(s: &SamplerConfig, max_tokens: u32, seed: u32, model: &str) -> Result<Mapping> {
    let mut warnings = Vec::new();
    let body = json!({
        "model": model,
        "stream": true,
        "max_tokens": max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        // 0 is "off" for llama-cpp-python (which rejects -1), aphrodite and vLLM >= 0.8.
        "top_k": s.top_k.max(0),
        "min_p": s.min_p,
        "repetition_penalty": s.repeat_penalty,
        "repeat_penalty": s.repeat_penalty,
        "frequency_penalty": s.frequency_penalty,
        "presence_penalty": s.presence_penalty,
        "seed": seed,
    });
    let Value::Object(mut body) = body else { unreachable!("json! of an object literal is an object") };
    if differs(s.repeat_penalty, 1.0) && s.repeat_last_n != -1 {
        warnings.push(format!(
            "sampler.repeat_last_n = {} is not honoured by OpenAI-compatible servers: vLLM and aphrodite apply \
             repetition_penalty to the whole context",
            s.repeat_last_n
        ));
    }
    let mut extra = |active: bool, what: &str, fields: Value| {
        if active {
            if let Value::Object(f) = fields {
                body.extend(f);
            }
            warnings.push(format!("{what} is honoured by aphrodite-engine only; vLLM ignores it"));
        }
    };
    extra(s.typical_p < 1.0, "sampler.typical_p", json!({"typical_p": s.typical_p}));
    extra(
        s.dry_multiplier > 0.0,
        "DRY (sampler.dry_multiplier)",
        json!({
            "dry_multiplier": s.dry_multiplier,
            "dry_base": s.dry_base,
            "dry_allowed_length": s.dry_allowed_length,
            "dry_range": s.dry_penalty_last_n.max(0),
            "dry_sequence_breakers": s.dry_sequence_breakers,
        }),
    );
    extra(
        s.xtc_probability > 0.0,
        "XTC (sampler.xtc_probability)",
        json!({"xtc_threshold": s.xtc_threshold, "xtc_probability": s.xtc_probability}),
    );
    extra(
        s.mirostat != 0,
        "mirostat (sampler.mirostat)",
        json!({"mirostat_mode": s.mirostat, "mirostat_tau": s.mirostat_tau, "mirostat_eta": s.mirostat_eta}),
    );
    if s.samplers != DEFAULT_ORDER {
        warnings.push("sampler.samplers (the order) is not honoured by OpenAI-compatible servers".to_string());
    }
    Ok(Mapping { body, warnings })
}

/// Parses one stream event.
///
/// # Errors
/// On JSON that is not a completion chunk, or an error object (with the server's message).
pub fn parse_event(event: &SseEvent) -> Result<Option<Chunk>> {
    if event.data.trim() == "[DONE]" {
        return Ok(Some(Chunk { text: String::new(), done: Some(Done::new(EngineStop::EosOrStop)) }));
    }
    let v = event_json(event)?;
    if v.get("error").is_some() {
        bail!("the server reported an error: {}", server_message(&event.data));
    }
    let choices =
        v.get("choices").and_then(Value::as_array).ok_or_else(|| anyhow!("no `choices` in: {}", event.line))?;
    // vLLM's last chunk may carry only `usage`, with no choices.
    let Some(choice) = choices.first() else { return Ok(None) };
    let text = match choice.get("text") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => bail!("`text` is not a string in: {}", event.line),
    };
    let done = match choice.get("finish_reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => Some(Done {
            tokens: get_u32(&v, "/usage/completion_tokens"),
            prompt_tokens: get_u32(&v, "/usage/prompt_tokens"),
            ..Done::new(match r.as_str() {
                "stop" => EngineStop::EosOrStop,
                "length" => EngineStop::Limit,
                other => EngineStop::Other(other.to_string()),
            })
        }),
        Some(_) => bail!("`finish_reason` is not a string in: {}", event.line),
    };
    Ok(Some(Chunk { text, done }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::http::sse::SseParser;

    #[test]
    fn maps_to_vllm_names_never_sends_stop_and_warns_about_what_it_cannot_honour() {
        let s = SamplerConfig {
            repeat_penalty: 1.1,
            repeat_last_n: 2048,
            top_k: 0,
            stop: vec!["\n".into()],
            dry_multiplier: 0.8,
            ..Default::default()
        };
        let m = map(&s, 40, 9, "gemma").unwrap();
        assert_eq!(m.body["model"], "gemma");
        assert_eq!(m.body["max_tokens"], 40);
        assert_eq!(m.body["top_k"], 0);
        assert!((m.body["repetition_penalty"].as_f64().unwrap() - 1.1).abs() < 1e-6);
        assert!(m.body.get("stop").is_none());
        assert!(m.body.contains_key("dry_multiplier"));
        assert!(!m.body.contains_key("xtc_probability"));
        assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("repeat_last_n = 2048"));
        assert!(map(&SamplerConfig::default(), 1, 1, "m").unwrap().warnings.is_empty());
    }

    #[test]
    fn parses_chunks_finish_and_done() {
        let ev = SseParser::default()
            .push(
                concat!(
                    "data: {\"id\":\"c\",\"object\":\"text_completion\",\"choices\":[{\"text\":\" Hi\",\"index\":0,",
                    "\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                    "data: {\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"length\"}]}\n\n",
                    "data: {\"choices\":[],\"usage\":{\"completion_tokens\":2}}\n\n",
                    "data: [DONE]\n\n",
                )
                .as_bytes(),
            )
            .unwrap();
        assert_eq!(parse_event(&ev[0]).unwrap().unwrap().text, " Hi");
        assert_eq!(parse_event(&ev[1]).unwrap().unwrap().done.unwrap().stop, EngineStop::Limit);
        assert!(parse_event(&ev[2]).unwrap().is_none());
        assert_eq!(parse_event(&ev[3]).unwrap().unwrap().done.unwrap().stop, EngineStop::EosOrStop);
    }

    #[test]
    fn models_and_token_counts() {
        let i = info(&json!({"object":"list","data":[{"id":"m","max_model_len":4096}]}));
        assert_eq!((i.model.as_deref(), i.n_ctx), (Some("m"), Some(4096)));
        assert_eq!(token_count(&json!({"count": 5, "tokens": [1]})).unwrap(), 5);
        assert_eq!(token_count(&json!({"value": 6})).unwrap(), 6);
        assert_eq!(token_count(&json!({"tokens": [1, 2]})).unwrap(), 2);
        assert!(token_count(&json!({})).is_err());
    }
}
