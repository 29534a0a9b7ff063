//! llama.cpp's `llama-server` (`tools/server/README.md`): `POST /completion` with `stream: true`.
//!
//! * Fields: our sampler names *are* llama-server's (`repeat_penalty`, `repeat_last_n`, `dry_*`, `xtc_*`,
//!   `mirostat*`, `typical_p`, …), `n_predict` for the token limit, `samplers` for the order (`typ_p` for typical).
//!   Every setting is honoured, so the mapping never warns.
//! * Stream: `data: {"content": "...", "stop": false}` per token; the last event has `"stop": true`, `stop_type`
//!   (`eos`, `limit`, `word`), `tokens_predicted`, `tokens_evaluated` and `timings` (`prompt_n`, `prompt_ms`,
//!   `predicted_ms`). Errors inside a stream arrive as `error: {"code", "message"}`.
//! * `/props` gives `default_generation_settings.n_ctx` (per slot), `chat_template` and `eos_token`; `/tokenize`
//!   with `add_special` counts tokens as `/completion` evaluates a string prompt (with BOS).

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use super::sse::{event_json, SseEvent};
use super::wire::{get_u32, server_message, Chunk, Done, EngineStop, Mapping, ServerInfo};
use crate::config::{SamplerConfig, SamplerStage};

/// Reads `/props`.
#[must_use]
pub fn info(props: &Value) -> ServerInfo {
    let str_at = |p: &str| props.pointer(p).and_then(Value::as_str).map(str::to_string);
    ServerInfo {
        n_ctx: get_u32(props, "/default_generation_settings/n_ctx").or_else(|| get_u32(props, "/n_ctx")),
        chat_template: str_at("/chat_template"),
        eos_token: str_at("/eos_token"),
        model: str_at("/model_alias").or_else(|| str_at("/model_path")),
    }
}

/// Reads a `/tokenize` answer.
///
/// # Errors
/// When it has no `tokens` array.
pub fn token_count(v: &Value) -> Result<u32> {
    let n = v.get("tokens").and_then(Value::as_array).ok_or_else(|| anyhow!("/tokenize answered without `tokens`"))?;
    Ok(u32::try_from(n.len())?)
}

fn stage_name(s: SamplerStage) -> &'static str {
    match s {
        SamplerStage::Penalties => "penalties",
        SamplerStage::Dry => "dry",
        SamplerStage::TopK => "top_k",
        SamplerStage::TypicalP => "typ_p",
        SamplerStage::TopP => "top_p",
        SamplerStage::MinP => "min_p",
        SamplerStage::Xtc => "xtc",
        SamplerStage::Temperature => "temperature",
    }
}

/// Builds the `/completion` body (without `prompt`).
///
/// # Errors
/// Never for a validated sampler; the signature matches the other flavors.
pub fn map(s: &SamplerConfig, max_tokens: u32, seed: u32, _n_ctx: u32) -> Result<Mapping> {
    let body = json!({
        "stream": true,
        "n_predict": max_tokens,
        "cache_prompt": true,
        "temperature": s.temperature,
        "top_k": s.top_k.max(0),
        "top_p": s.top_p,
        "min_p": s.min_p,
        "typical_p": s.typical_p,
        "repeat_penalty": s.repeat_penalty,
        "repeat_last_n": s.repeat_last_n,
        "frequency_penalty": s.frequency_penalty,
        "presence_penalty": s.presence_penalty,
        "dry_multiplier": s.dry_multiplier,
        "dry_base": s.dry_base,
        "dry_allowed_length": s.dry_allowed_length,
        "dry_penalty_last_n": s.dry_penalty_last_n,
        "dry_sequence_breakers": s.dry_sequence_breakers,
        "xtc_probability": s.xtc_probability,
        "xtc_threshold": s.xtc_threshold,
        "mirostat": s.mirostat,
        "mirostat_tau": s.mirostat_tau,
        "mirostat_eta": s.mirostat_eta,
        "seed": seed,
        "stop": s.stop,
        "samplers": s.samplers.iter().map(|st| stage_name(*st)).collect::<Vec<_>>(),
    });
    let Value::Object(body) = body else { unreachable!("json! of an object literal is an object") };
    Ok(Mapping { body, warnings: Vec::new() })
}

/// Parses one stream event.
///
/// # Errors
/// On JSON that is not llama-server's, or on an `error` event (with the server's message).
pub fn parse_event(event: &SseEvent) -> Result<Option<Chunk>> {
    if event.event == "error" {
        return Err(anyhow!("llama-server reported an error: {}", server_message(&event.data)));
    }
    let v = event_json(event)?;
    if v.get("error").is_some() {
        return Err(anyhow!("llama-server reported an error: {}", server_message(&event.data)));
    }
    let text = match v.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(anyhow!("`content` is not a string in: {}", event.line)),
    };
    let stopped =
        v.get("stop").and_then(Value::as_bool).ok_or_else(|| anyhow!("no boolean `stop` in: {}", event.line))?;
    let done = stopped.then(|| {
        let stop = match v.get("stop_type").and_then(Value::as_str).unwrap_or("") {
            "eos" => EngineStop::Eos,
            "limit" => EngineStop::Limit,
            "word" => EngineStop::Word,
            // Older servers: `stopped_eos`, `stopped_word`, `stopped_limit` booleans.
            _ if v.get("stopped_word").and_then(Value::as_bool) == Some(true) => EngineStop::Word,
            _ if v.get("stopped_limit").and_then(Value::as_bool) == Some(true) => EngineStop::Limit,
            _ if v.get("stopped_eos").and_then(Value::as_bool) == Some(true) => EngineStop::Eos,
            other => EngineStop::Other(other.to_string()),
        };
        let ms = |p: &str| v.pointer(p).and_then(Value::as_f64);
        Done {
            stop,
            tokens: get_u32(&v, "/tokens_predicted").or_else(|| get_u32(&v, "/timings/predicted_n")),
            prompt_tokens: get_u32(&v, "/tokens_evaluated"),
            prompt_evaluated: get_u32(&v, "/timings/prompt_n"),
            prompt_ms: ms("/timings/prompt_ms"),
            generation_ms: ms("/timings/predicted_ms"),
        }
    });
    Ok(Some(Chunk { text, done }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::http::sse::SseParser;

    fn events(s: &str) -> Vec<SseEvent> {
        SseParser::default().push(s.as_bytes()).unwrap()
    }

    #[test]
    fn maps_every_sampler_field_to_its_llama_server_name() {
        let s =
            SamplerConfig { repeat_penalty: 1.1, repeat_last_n: 2048, stop: vec!["\n".into()], ..Default::default() };
        let m = map(&s, 40, 7, 4096).unwrap();
        assert!(m.warnings.is_empty());
        assert_eq!(m.body["n_predict"], 40);
        assert_eq!(m.body["seed"], 7);
        assert_eq!(m.body["repeat_last_n"], 2048);
        assert!((m.body["repeat_penalty"].as_f64().unwrap() - 1.1).abs() < 1e-6);
        assert_eq!(m.body["stop"], json!(["\n"]));
        assert_eq!(
            m.body["samplers"],
            json!(["penalties", "dry", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"])
        );
    }

    #[test]
    fn parses_tokens_and_the_final_event() {
        let ev = events(concat!(
            "data: {\"content\":\"Hi\",\"stop\":false,\"id_slot\":0}\n\n",
            "data: {\"content\":\"\",\"stop\":true,\"stop_type\":\"word\",\"stopping_word\":\"\\n\",",
            "\"tokens_predicted\":3,\"tokens_evaluated\":12,\"timings\":{\"prompt_n\":5,\"prompt_ms\":1.5,",
            "\"predicted_n\":3,\"predicted_ms\":9.0}}\n\n"
        ));
        let a = parse_event(&ev[0]).unwrap().unwrap();
        assert_eq!(a.text, "Hi");
        assert!(a.done.is_none());
        let b = parse_event(&ev[1]).unwrap().unwrap().done.unwrap();
        assert_eq!(b.stop, EngineStop::Word);
        assert_eq!((b.tokens, b.prompt_tokens, b.prompt_evaluated), (Some(3), Some(12), Some(5)));
        assert_eq!((b.prompt_ms, b.generation_ms), (Some(1.5), Some(9.0)));
    }

    #[test]
    fn an_error_event_carries_the_message() {
        let ev = events("error: {\"code\":400,\"message\":\"the request exceeds the available context size\"}\n\n");
        let e = parse_event(&ev[0]).unwrap_err();
        assert!(e.to_string().contains("exceeds the available context"), "{e}");
    }

    #[test]
    fn props_give_context_template_and_eos() {
        let i = info(
            &json!({"default_generation_settings": {"n_ctx": 2048}, "chat_template": "{{x}}", "eos_token": "</s>"}),
        );
        assert_eq!(i.n_ctx, Some(2048));
        assert_eq!(i.chat_template.as_deref(), Some("{{x}}"));
        assert_eq!(i.eos_token.as_deref(), Some("</s>"));
    }
}
