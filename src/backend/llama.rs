//! The in-process backend: llama.cpp through `llama-cpp-2`, one model and one context per role.
//!
//! * One `LlamaBackend` per process ([`backend`]); models are loaded once per path and live for the whole process
//!   (leaked to `'static`), which lets a role own its `LlamaContext<'static>` next to its model.
//! * Every file is checked by [`crate::gguf::inspect`] before llama.cpp sees it, so a missing, foreign or truncated
//!   file is a clear error instead of an opaque null (or a debug assertion).
//! * **KV-cache reuse.** A role remembers the tokens in its cache. A new prompt is tokenized, the longest common
//!   prefix with the cache is kept, the diverging tail is removed with `llama_memory_seq_rm` and only the new suffix
//!   is decoded. The assistant's history only grows, so it evaluates little more than the last user turn; the
//!   user's window slides, so it keeps its system prompt and re-evaluates the window. All of it is sequence 0 of
//!   the context, so one context can later hold several conversations as separate sequences.
//! * **Sampling.** A llama.cpp sampler chain is built per turn from [`SamplerConfig`] in the configured order
//!   (default: llama-server's), seeded per turn, and fed the prompt tokens first so that the repeat penalties and
//!   DRY see the conversation, as llama-server does. `sample()` already accepts the sampled token.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;

use super::{find_stop, Backend, GenRequest, Generation, Interrupted};
use crate::chat_template::{self, ChatMessage, ChatTemplate};
use crate::config::{SamplerConfig, SamplerStage};
use crate::transcript::{ModelRecord, StopReason};

/// Tokens decoded per `llama_decode` call while evaluating a prompt.
const N_BATCH: u32 = 512;

static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
static MODELS: OnceLock<Mutex<HashMap<PathBuf, &'static LlamaModel>>> = OnceLock::new();

/// The process-wide llama.cpp backend. llama.cpp's own log goes to `tracing` only with `-vv`.
///
/// # Errors
/// When llama.cpp cannot be initialised.
pub fn backend(verbose: u8) -> Result<&'static LlamaBackend> {
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(verbose >= 2));
    let b = LlamaBackend::init().context("could not initialise llama.cpp")?;
    Ok(BACKEND.get_or_init(|| b))
}

/// How to load a model for one role.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Context size; `None` picks `default_ctx` capped at the trained context.
    pub n_ctx: Option<u32>,
    /// Context size to use when `n_ctx` is `None`.
    pub default_ctx: u32,
    /// CPU threads (default: all cores).
    pub threads: Option<u32>,
    /// GPU layers (default: all on GPU builds, none otherwise).
    pub gpu_layers: Option<u32>,
    /// A chat template name or path overriding the GGUF's.
    pub chat_template: Option<String>,
    /// `-v` count, for llama.cpp's log.
    pub verbose: u8,
}

fn load_model(path: &Path, gpu_layers: Option<u32>, verbose: u8) -> Result<&'static LlamaModel> {
    let backend = backend(verbose)?;
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let models = MODELS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut models = models.lock().map_err(|_| anyhow!("model cache poisoned"))?;
    if let Some(m) = models.get(&key) {
        return Ok(m);
    }
    let default_layers = if cfg!(any(feature = "cuda", feature = "vulkan", feature = "metal")) { 999 } else { 0 };
    let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers.unwrap_or(default_layers));
    let model = LlamaModel::load_from_file(backend, &key, &params).map_err(|e| {
        anyhow!("llama.cpp could not load model '{}' ({e}); run with -vv to see llama.cpp's reason", path.display())
    })?;
    let model: &'static LlamaModel = Box::leak(Box::new(model));
    models.insert(key, model);
    Ok(model)
}

/// One role's model, context, chat template and cache state.
pub struct LlamaRole {
    model: &'static LlamaModel,
    ctx: LlamaContext<'static>,
    template: ChatTemplate,
    record: ModelRecord,
    cached: Vec<LlamaToken>,
    batch: LlamaBatch<'static>,
    n_ctx: u32,
}

fn piece_string(model: &LlamaModel, token: LlamaToken) -> String {
    String::from_utf8_lossy(&model.vocab().token_to_piece(token, true, None)).into_owned()
}

impl LlamaRole {
    /// Checks and loads the GGUF at `path` and creates its context.
    ///
    /// # Errors
    /// A message naming the file when it is missing, not GGUF, truncated, or cannot be loaded; or when the
    /// context cannot be created or the chat template does not compile.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let info = crate::gguf::inspect(path)?;
        let model = load_model(path, opts.gpu_layers, opts.verbose)?;
        let trained = model.n_ctx_train();
        let n_ctx = opts.n_ctx.unwrap_or_else(|| opts.default_ctx.min(trained.max(512)));
        let threads = opts.threads.map_or_else(
            || std::thread::available_parallelism().map_or(2, |n| i32::try_from(n.get()).unwrap_or(2)),
            |t| i32::try_from(t).unwrap_or(i32::MAX),
        );
        let n_ctx_nz = NonZeroU32::new(n_ctx).ok_or_else(|| anyhow!("n_ctx must be at least 1"))?;
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(n_ctx_nz))
            .with_n_batch(N_BATCH)
            .with_n_ubatch(N_BATCH)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model
            .new_context(backend(opts.verbose)?, params)
            .map_err(|e| anyhow!("could not create a {n_ctx}-token context for '{}': {e}", path.display()))?;
        let (text, source) =
            chat_template::select(opts.chat_template.as_deref(), info.chat_template(), info.architecture())?;
        let vocab = model.vocab();
        let bos = piece_string(model, vocab.bos());
        let eos = piece_string(model, vocab.eos());
        let template = ChatTemplate::new(&text, source, &bos, &eos)?;
        let record = ModelRecord {
            path: path.display().to_string(),
            file_size: Some(info.file_size),
            name: info.name().map(str::to_string),
            architecture: info.architecture().map(str::to_string),
            n_ctx: ctx.n_ctx(),
            chat_template_source: template.source.clone(),
        };
        Ok(LlamaRole {
            model,
            n_ctx: ctx.n_ctx(),
            ctx,
            template,
            record,
            cached: Vec::new(),
            batch: LlamaBatch::new(N_BATCH as usize, 1),
        })
    }

    /// Tokenizes a rendered prompt. Templates emit their own special tokens, so none are added — except a BOS
    /// the model wants and the template did not write.
    fn tokenize(&self, prompt: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(prompt.as_bytes(), false, true);
        if vocab.should_add_bos() && tokens.first() != Some(&vocab.bos()) {
            tokens.insert(0, vocab.bos());
        }
        tokens
    }

    fn build_sampler(&self, cfg: &SamplerConfig, seed: u32) -> LlamaSampler {
        let n_vocab = self.model.n_vocab();
        let whole = |n: i32| if n < 0 { i32::try_from(self.n_ctx).unwrap_or(i32::MAX) } else { n };
        let mut chain = Vec::new();
        let mirostat = cfg.mirostat == 2;
        for stage in &cfg.samplers {
            match stage {
                SamplerStage::Penalties => {
                    let active =
                        cfg.repeat_penalty != 1.0 || cfg.frequency_penalty != 0.0 || cfg.presence_penalty != 0.0;
                    if active && cfg.repeat_last_n != 0 {
                        chain.push(LlamaSampler::penalties(
                            n_vocab,
                            whole(cfg.repeat_last_n),
                            cfg.repeat_penalty,
                            cfg.frequency_penalty,
                            cfg.presence_penalty,
                        ));
                    }
                }
                SamplerStage::Dry if cfg.dry_multiplier > 0.0 => chain.push(LlamaSampler::dry(
                    self.model,
                    cfg.dry_multiplier,
                    cfg.dry_base,
                    cfg.dry_allowed_length,
                    whole(cfg.dry_penalty_last_n),
                    &cfg.dry_sequence_breakers,
                )),
                // Mirostat replaces the truncation samplers and temperature, as in llama.cpp's common sampler.
                _ if mirostat => {}
                SamplerStage::TopK if cfg.top_k > 0 => chain.push(LlamaSampler::top_k(cfg.top_k)),
                SamplerStage::TypicalP if cfg.typical_p < 1.0 => chain.push(LlamaSampler::typical(cfg.typical_p, 1)),
                SamplerStage::TopP if cfg.top_p < 1.0 => chain.push(LlamaSampler::top_p(cfg.top_p, 1)),
                SamplerStage::MinP if cfg.min_p > 0.0 => chain.push(LlamaSampler::min_p(cfg.min_p, 1)),
                SamplerStage::Xtc if cfg.xtc_probability > 0.0 => {
                    chain.push(LlamaSampler::xtc(cfg.xtc_probability, cfg.xtc_threshold, 1, seed));
                }
                SamplerStage::Temperature if cfg.temperature > 0.0 => chain.push(LlamaSampler::temp(cfg.temperature)),
                _ => {}
            }
        }
        if mirostat {
            chain.push(LlamaSampler::temp(cfg.temperature));
            chain.push(LlamaSampler::mirostat_v2(seed, cfg.mirostat_tau, cfg.mirostat_eta));
        } else if cfg.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            chain.push(LlamaSampler::dist(seed));
        }
        LlamaSampler::chain_simple(chain)
    }

    /// Decodes `tokens` at positions `start..`, requesting logits for the last one only.
    fn decode_prompt(&mut self, tokens: &[LlamaToken], start: usize) -> Result<(), DecodeError> {
        let last = tokens.len().saturating_sub(1);
        for (chunk_no, chunk) in tokens[start..].chunks(N_BATCH as usize).enumerate() {
            self.batch.clear();
            for (i, &t) in chunk.iter().enumerate() {
                let pos = start + chunk_no * N_BATCH as usize + i;
                self.batch
                    .add(t, i32::try_from(pos).unwrap_or(i32::MAX), &[0], pos == last)
                    .map_err(|_| DecodeError::NoKvCacheSlot)?;
            }
            self.ctx.decode(&mut self.batch)?;
        }
        Ok(())
    }

    /// Keeps the cached prefix shared with `tokens` and returns where evaluation must start.
    fn reuse_prefix(&mut self, tokens: &[LlamaToken]) -> usize {
        let mut common = self.cached.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        // The last prompt token must be evaluated again to get fresh logits.
        common = common.min(tokens.len().saturating_sub(1));
        if common > 0 {
            let removed = self.ctx.clear_kv_cache_seq(Some(0), u32::try_from(common).ok(), None).unwrap_or(false);
            // A sliding-window cache may have dropped early positions: then the prefix cannot be reused.
            if !removed || self.ctx.kv_cache_seq_pos_min(0) > 0 {
                common = 0;
            }
        }
        if common == 0 {
            self.ctx.clear_kv_cache();
        }
        self.cached.truncate(common);
        common
    }
}

/// Incremental UTF-8 decoding: a token can end in the middle of a character.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        None => {
                            self.pending.drain(..valid);
                            return;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }
}

impl Backend for LlamaRole {
    fn describe(&self) -> ModelRecord {
        self.record.clone()
    }

    fn name(&self) -> String {
        "llama".into()
    }

    fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        self.template.render(messages, true)
    }

    fn count_tokens(&self, prompt: &str) -> Result<u32> {
        Ok(u32::try_from(self.tokenize(prompt).len())?)
    }

    fn reset(&mut self) {
        self.ctx.clear_kv_cache();
        self.cached.clear();
    }

    fn generate(&mut self, req: &GenRequest<'_>, on_piece: &mut dyn FnMut(&str)) -> Result<Generation> {
        let started = Instant::now();
        let tokens = self.tokenize(req.prompt);
        let prompt_tokens = u32::try_from(tokens.len())?;
        let full = |prompt_tokens_evaluated| Generation {
            text: String::new(),
            tokens: 0,
            prompt_tokens,
            prompt_tokens_evaluated,
            stop_reason: StopReason::ContextFull,
            prompt_ms: 0.0,
            generation_ms: 0.0,
        };
        if u64::from(prompt_tokens) + u64::from(req.max_tokens) > u64::from(self.n_ctx) || tokens.is_empty() {
            return Ok(full(0));
        }
        let start = self.reuse_prefix(&tokens);
        match self.decode_prompt(&tokens, start) {
            Ok(()) => {}
            Err(DecodeError::NoKvCacheSlot) => {
                self.reset();
                return Ok(full(0));
            }
            Err(e) => {
                self.reset();
                return Err(anyhow!("llama.cpp failed to evaluate the prompt: {e}"));
            }
        }
        self.cached = tokens.clone();
        let evaluated = u32::try_from(tokens.len() - start)?;
        let prompt_ms = started.elapsed().as_secs_f64() * 1000.0;

        let gen_started = Instant::now();
        let mut sampler = self.build_sampler(req.sampler, req.seed);
        sampler.accept_many(&tokens);
        let vocab = self.model.vocab();
        let stops = &req.sampler.stop;
        let hold = stops.iter().map(String::len).max().unwrap_or(1).saturating_sub(1);
        let mut text = String::new();
        let mut emitted = 0usize;
        let mut utf8 = Utf8Stream::default();
        let mut n_gen = 0u32;
        let mut logits_idx = self.batch.n_tokens() - 1;
        let stop_reason = loop {
            if req.cancel.load(Ordering::Relaxed) {
                return Err(Interrupted.into());
            }
            if n_gen == req.max_tokens {
                break StopReason::MaxTokens;
            }
            let token = sampler.sample(&self.ctx, logits_idx);
            if vocab.is_eog(token) {
                break StopReason::Eos;
            }
            n_gen += 1;
            let before = text.len();
            utf8.push(&vocab.token_to_piece(token, false, None), &mut text);
            if let Some(at) = find_stop(&text, stops, before.saturating_sub(hold)) {
                text.truncate(at);
                break StopReason::StopString;
            }
            let mut safe = text.len().saturating_sub(hold).max(emitted);
            while !text.is_char_boundary(safe) {
                safe -= 1;
            }
            if safe > emitted {
                on_piece(&text[emitted..safe]);
                emitted = safe;
            }
            if n_gen == req.max_tokens {
                break StopReason::MaxTokens;
            }
            self.batch.clear();
            let pos = i32::try_from(self.cached.len())?;
            self.batch.add(token, pos, &[0], true)?;
            match self.ctx.decode(&mut self.batch) {
                Ok(()) => {}
                Err(DecodeError::NoKvCacheSlot) => break StopReason::ContextFull,
                Err(e) => return Err(anyhow!("llama.cpp failed to decode: {e}")),
            }
            self.cached.push(token);
            logits_idx = 0;
        };
        if emitted < text.len() {
            on_piece(&text[emitted..]);
        }
        Ok(Generation {
            text,
            tokens: n_gen,
            prompt_tokens,
            prompt_tokens_evaluated: evaluated,
            stop_reason,
            prompt_ms,
            generation_ms: gen_started.elapsed().as_secs_f64() * 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8Stream;

    #[test]
    fn utf8_stream_joins_split_characters() {
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        let bytes = "é😀".as_bytes();
        for b in bytes {
            s.push(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, "é😀");
        s.push(&[0xff, b'a'], &mut out);
        assert_eq!(out, "é😀\u{FFFD}a");
    }
}
