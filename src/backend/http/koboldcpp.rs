//! koboldcpp's KoboldAI API: `POST /api/extra/generate/stream`.
//!
//! * Fields: `max_length` (token limit), `max_context_length` (koboldcpp truncates the prompt to it, so it is set to
//!   our n_ctx), `rep_pen`, `rep_pen_range`, `typical`, `sampler_seed`, `stop_sequence`, `sampler_order` (integers:
//!   0 top-k, 1 top-a, 2 top-p, 3 tail-free, 4 typical, 5 temperature, 6 repetition penalty), plus the llama.cpp
//!   names for min-p, DRY, XTC and mirostat. koboldcpp has no frequency penalty: a non-zero one is an error.
//! * Stream: `event: message` + `data: {"token": "...", "finish_reason": null}`, several tokens may share an
//!   event; the last event has `finish_reason` `"stop"` (end-of-sequence) or `"length"` — which koboldcpp also
//!   reports when a **custom stop sequence** ended the turn. parrot sends `trim_stop: false`, so the stop sequence
//!   arrives in the text, where the shared code finds it and records `stop_string`; only a `length` without one is
//!   `max_tokens`.
//! * No token counts in the stream: generated tokens are counted with `/api/extra/tokencount`, which also counts
//!   prompts; `/api/extra/true_max_context_length` gives the context size.

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::sse::{event_json, SseEvent};
use super::wire::{differs, get_u32, Chunk, Done, EngineStop, Mapping, ServerInfo};
use crate::config::{SamplerConfig, SamplerStage, DEFAULT_ORDER};

/// Reads `/api/extra/true_max_context_length` and `/api/v1/model`.
#[must_use]
pub fn info(ctx: &Value, model: Option<&Value>) -> ServerInfo {
    ServerInfo {
        n_ctx: get_u32(ctx, "/value"),
        chat_template: None,
        eos_token: None,
        model: model.and_then(|m| m.get("result")).and_then(Value::as_str).map(str::to_string),
    }
}

/// Reads an `/api/extra/tokencount` answer (`value`).
///
/// # Errors
/// When it has no `value`.
pub fn token_count(v: &Value) -> Result<u32> {
    get_u32(v, "/value").ok_or_else(|| anyhow!("/api/extra/tokencount answered without `value`"))
}

/// koboldcpp's default sampler order.
const KOBOLD_DEFAULT: [u8; 7] = [6, 0, 1, 3, 4, 2, 5];

fn stage_id(s: SamplerStage) -> Option<u8> {
    match s {
        SamplerStage::Penalties => Some(6),
        SamplerStage::TopK => Some(0),
        SamplerStage::TopP => Some(2),
        SamplerStage::TypicalP => Some(4),
        SamplerStage::Temperature => Some(5),
        SamplerStage::Dry | SamplerStage::MinP | SamplerStage::Xtc => None,
    }
}

/// Builds the stream body (without `prompt`).
///
/// # Errors
/// For a frequency penalty, which koboldcpp does not have.
pub fn map(s: &SamplerConfig, max_tokens: u32, seed: u32, n_ctx: u32) -> Result<Mapping> {
    if differs(s.frequency_penalty, 0.0) {
        bail!(
            "sampler.frequency_penalty = {} cannot be honoured by koboldcpp, which has no frequency penalty: set it \
             to 0 (or use presence_penalty / repeat_penalty)",
            s.frequency_penalty
        );
    }
    let mut warnings = Vec::new();
    let whole = |n: i32| if n < 0 { i64::from(n_ctx) } else { i64::from(n) };
    let mut order: Vec<u8> = s.samplers.iter().filter_map(|st| stage_id(*st)).collect();
    for id in KOBOLD_DEFAULT {
        if !order.contains(&id) {
            order.push(id);
        }
    }
    if s.samplers != DEFAULT_ORDER {
        warnings.push(
            "koboldcpp orders only top-k, top-p, typical, temperature and the repetition penalty: min-p, DRY and XTC \
             run at its fixed positions, and samplers left out of `samplers` still run with their settings"
                .to_string(),
        );
    }
    let body = json!({
        "max_length": max_tokens,
        "max_context_length": n_ctx,
        "temperature": s.temperature,
        "top_k": s.top_k.max(0),
        "top_p": s.top_p,
        "min_p": s.min_p,
        "typical": s.typical_p,
        "rep_pen": s.repeat_penalty,
        "rep_pen_range": whole(s.repeat_last_n),
        "presence_penalty": s.presence_penalty,
        "dry_multiplier": s.dry_multiplier,
        "dry_base": s.dry_base,
        "dry_allowed_length": s.dry_allowed_length,
        "dry_penalty_last_n": whole(s.dry_penalty_last_n),
        "dry_sequence_breakers": s.dry_sequence_breakers,
        "xtc_threshold": s.xtc_threshold,
        "xtc_probability": s.xtc_probability,
        "mirostat": s.mirostat,
        "mirostat_tau": s.mirostat_tau,
        "mirostat_eta": s.mirostat_eta,
        // koboldcpp reads the seed as a C int.
        "sampler_seed": seed & 0x7fff_ffff,
        "stop_sequence": s.stop,
        "trim_stop": false,
        "sampler_order": order,
    });
    let Value::Object(body) = body else { unreachable!("json! of an object literal is an object") };
    Ok(Mapping { body, warnings })
}

/// Parses one stream event.
///
/// # Errors
/// On JSON that is not koboldcpp's.
pub fn parse_event(event: &SseEvent) -> Result<Option<Chunk>> {
    if !(event.event.is_empty() || event.event == "message") {
        return Ok(None);
    }
    let v = event_json(event)?;
    let text = match v.get("token") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => bail!("`token` is not a string in: {}", event.line),
    };
    let done = match v.get("finish_reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if r == "null" || r.is_empty() => None,
        Some(Value::String(r)) => Some(Done::new(match r.as_str() {
            "stop" => EngineStop::Eos,
            "length" => EngineStop::LengthOrStop,
            other => EngineStop::Other(other.to_string()),
        })),
        Some(_) => bail!("`finish_reason` is not a string in: {}", event.line),
    };
    Ok(Some(Chunk { text, done }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::http::sse::SseParser;

    #[test]
    fn maps_to_kobold_names_and_rejects_a_frequency_penalty() {
        let s = SamplerConfig { repeat_penalty: 1.1, repeat_last_n: -1, stop: vec!["\n".into()], ..Default::default() };
        let m = map(&s, 40, 0xffff_ffff, 8192).unwrap();
        assert!(m.warnings.is_empty());
        assert_eq!(m.body["max_length"], 40);
        assert_eq!(m.body["max_context_length"], 8192);
        assert_eq!(m.body["rep_pen_range"], 8192);
        assert_eq!(m.body["stop_sequence"], json!(["\n"]));
        assert_eq!(m.body["trim_stop"], false);
        assert_eq!(m.body["sampler_seed"], 0x7fff_ffff);
        assert_eq!(m.body["sampler_order"], json!([6, 0, 4, 2, 5, 1, 3]));
        let bad = SamplerConfig { frequency_penalty: 0.5, ..Default::default() };
        let e = map(&bad, 1, 1, 1).unwrap_err();
        assert!(e.to_string().contains("frequency_penalty"), "{e}");
    }

    #[test]
    fn a_custom_order_warns() {
        let mut s = SamplerConfig::default();
        s.samplers.reverse();
        assert_eq!(map(&s, 1, 1, 1).unwrap().warnings.len(), 1);
    }

    #[test]
    fn parses_tokens_and_both_finish_reasons() {
        let ev = SseParser::default()
            .push(
                concat!(
                    "event: message\ndata: {\"token\": \"Hi\", \"finish_reason\": null}\n\n",
                    "event: message\ndata: {\"token\": \"\", \"finish_reason\": \"length\"}\n\n",
                    "event: message\ndata: {\"token\": \"\", \"finish_reason\": \"stop\"}\n\n",
                )
                .as_bytes(),
            )
            .unwrap();
        assert_eq!(parse_event(&ev[0]).unwrap().unwrap(), Chunk { text: "Hi".into(), done: None });
        assert_eq!(parse_event(&ev[1]).unwrap().unwrap().done.unwrap().stop, EngineStop::LengthOrStop);
        assert_eq!(parse_event(&ev[2]).unwrap().unwrap().done.unwrap().stop, EngineStop::Eos);
    }
}
