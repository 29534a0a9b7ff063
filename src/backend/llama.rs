//! The in-process backend: llama.cpp through `llama-cpp-2`, one model and one context per role.
//!
//! * One llama.cpp runtime (llama-cpp-2's `LlamaBackend`, imported here as `LlamaRuntime` so that parrot's
//!   [`LlamaBackend`] keeps the name every `Backend` implementation has) per process ([`backend`]); models are
//!   loaded once per path and live for the whole process (leaked to `'static`), which lets a role own its
//!   `LlamaContext<'static>` next to its model.
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
//! * **Streaming.** Token bytes are decoded here (a token can end inside a character); stop strings and the
//!   hold-back of a partial one are [`super::stream::StopStream`]'s, as for the HTTP backend.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend as LlamaRuntime;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;

use super::sampling::{Penalties, Scratch, TopP, TurnSampler, TurnSamplerBuilder};
use super::stream::StopStream;
use super::{Backend, GenRequest, Generation, Interrupted};
use crate::chat_template::{self, ChatMessage, ChatTemplate};
use crate::config::{SamplerConfig, SamplerStage};
use crate::transcript::{ModelRecord, StopReason};

/// Tokens decoded per `llama_decode` call while evaluating a prompt.
const N_BATCH: u32 = 512;

/// Prompt tokens one step takes while other conversations of the same model are generating (llama-server's
/// continuous batching caps them the same way): a window slide of the user model re-evaluates hundreds of tokens,
/// and the generating conversations would otherwise wait for all of them at once.
const PROMPT_TOKENS_BESIDE_GENERATION: usize = 128;

static BACKEND: OnceLock<LlamaRuntime> = OnceLock::new();
static MODELS: OnceLock<Mutex<HashMap<PathBuf, &'static LlamaModel>>> = OnceLock::new();

/// The process-wide llama.cpp backend. llama.cpp's own log goes to `tracing` only with `-vv`.
///
/// # Errors
/// When llama.cpp cannot be initialised.
pub fn backend(verbose: u8) -> Result<&'static LlamaRuntime> {
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(verbose >= 2));
    let b = LlamaRuntime::init().context("could not initialise llama.cpp")?;
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
    /// Sequences (conversations) the context holds at once; each gets the full `n_ctx`. 0 means 1.
    pub n_seq: u32,
}

/// True when llama.cpp was built with a GPU backend (then every layer is offloaded unless `--gpu-layers` says less).
const GPU_BUILD: bool = cfg!(any(feature = "cuda", feature = "vulkan", feature = "metal"));

/// Loads a model once per path (the embedder shares it).
pub(crate) fn load_model(path: &Path, gpu_layers: Option<u32>, verbose: u8) -> Result<&'static LlamaModel> {
    let backend = backend(verbose)?;
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let models = MODELS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut models = models.lock().map_err(|_| anyhow!("model cache poisoned"))?;
    if let Some(m) = models.get(&key) {
        return Ok(m);
    }
    let default_layers = if GPU_BUILD { 999 } else { 0 };
    let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers.unwrap_or(default_layers));
    let model = LlamaModel::load_from_file(backend, &key, &params).map_err(|e| {
        anyhow!("llama.cpp could not load model '{}' ({e}); run with -vv to see llama.cpp's reason", path.display())
    })?;
    let model: &'static LlamaModel = Box::leak(Box::new(model));
    models.insert(key, model);
    Ok(model)
}

/// One role's model, context, chat template and cache state.
pub struct LlamaBackend {
    model: &'static LlamaModel,
    ctx: LlamaContext<'static>,
    template: ChatTemplate,
    record: ModelRecord,
    /// Tokens in the KV cache, per sequence.
    cached: Vec<Vec<LlamaToken>>,
    batch: LlamaBatch<'static>,
    /// Context size of one sequence.
    n_ctx: u32,
    /// The candidate arrays sampling reuses every step (one per model: jobs sample one after another).
    scratch: Scratch,
    /// Whether parrot applies the repeat penalties and the top-p cut where they give the same tokens (see
    /// [`super::sampling`]); off only to compare against llama.cpp's own stages.
    parrot_stages: bool,
}

/// One turn being generated on one sequence of a [`LlamaBackend`]'s context. Created by [`LlamaBackend::begin`],
/// advanced by [`LlamaBackend::step`] together with the other sequences' jobs, turned into a [`Generation`] by
/// [`SeqJob::finish`].
pub struct SeqJob {
    seq: usize,
    tokens: Vec<LlamaToken>,
    next_prompt: usize,
    sampler: Option<TurnSampler>,
    max_tokens: u32,
    /// The turn's text, with a possible stop string held back from streaming.
    stream: StopStream,
    utf8: Utf8Stream,
    n_gen: u32,
    pending: Option<LlamaToken>,
    logits_at: Option<i32>,
    started: Instant,
    gen_started: Option<Instant>,
    prompt_ms: f64,
    evaluated: u32,
    done: Option<StopReason>,
}

impl SeqJob {
    /// The sequence this job runs on.
    #[must_use]
    pub fn seq(&self) -> usize {
        self.seq
    }

    /// Whether the turn is complete.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done.is_some()
    }

    /// The finished turn.
    #[must_use]
    pub fn finish(self) -> Generation {
        Generation {
            text: self.stream.into_text(),
            tokens: self.n_gen,
            prompt_tokens: u32::try_from(self.tokens.len()).unwrap_or(u32::MAX),
            prompt_tokens_evaluated: self.evaluated,
            stop_reason: self.done.unwrap_or(StopReason::Error),
            prompt_ms: self.prompt_ms,
            generation_ms: self.gen_started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0),
            endpoint: None,
        }
    }
}

fn piece_string(model: &LlamaModel, token: LlamaToken) -> String {
    String::from_utf8_lossy(&model.vocab().token_to_piece(token, true, None)).into_owned()
}

impl LlamaBackend {
    /// Checks and loads the GGUF at `path` and creates its context.
    ///
    /// # Errors
    /// A message naming the file when it is missing, not GGUF, truncated, or cannot be loaded; or when the
    /// context cannot be created or the chat template does not compile.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let info = crate::gguf::inspect(path)?;
        let model = load_model(path, opts.gpu_layers, opts.verbose)?;
        let trained = model.n_ctx_train();
        // llama.cpp pads each sequence's context to a multiple of 256; do it here so that the size recorded and
        // checked is the real one.
        let n_ctx = opts
            .n_ctx
            .unwrap_or_else(|| opts.default_ctx.min(trained.max(512)))
            .checked_next_multiple_of(256)
            .ok_or_else(|| anyhow!("n_ctx is too large"))?;
        let n_seq = opts.n_seq.max(1);
        let threads = opts.threads.map_or_else(
            || std::thread::available_parallelism().map_or(2, |n| i32::try_from(n.get()).unwrap_or(2)),
            |t| i32::try_from(t).unwrap_or(i32::MAX),
        );
        let total = n_ctx.checked_mul(n_seq).ok_or_else(|| anyhow!("n_ctx × --parallel is too large"))?;
        let n_ctx_nz = NonZeroU32::new(total).ok_or_else(|| anyhow!("n_ctx must be at least 1"))?;
        // Several sequences on a GPU share one unified KV cache. With a cache per sequence, llama.cpp cuts a batch
        // into one micro-batch per run of consecutive sequence ids, and on a GPU each micro-batch pays the kernel
        // launches again: measured on an H100, `--parallel 8` was then no faster than one conversation at a time.
        // On a CPU, separate caches keep each token's attention to its own conversation, which is what costs there.
        let on_gpu = GPU_BUILD && opts.gpu_layers != Some(0);
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(n_ctx_nz))
            .with_n_seq_max(n_seq)
            .with_kv_unified(on_gpu && n_seq > 1)
            .with_n_batch(N_BATCH)
            .with_n_ubatch(N_BATCH)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model
            .new_context(backend(opts.verbose)?, params)
            .map_err(|e| anyhow!("could not create a {n_seq} × {n_ctx}-token context for '{}': {e}", path.display()))?;
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
            n_ctx,
            chat_template_source: template.source.clone(),
        };
        Ok(LlamaBackend {
            model,
            n_ctx,
            ctx,
            template,
            record,
            cached: vec![Vec::new(); n_seq as usize],
            batch: LlamaBatch::new(N_BATCH as usize, 1),
            scratch: Scratch::default(),
            parrot_stages: std::env::var_os("PARROT_LLAMA_SAMPLERS").is_none(),
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

    #[allow(clippy::cast_possible_truncation)] // llama.cpp's samplers take f32; config values are small.
    fn build_sampler(&self, cfg: &SamplerConfig, seed: u32) -> TurnSampler {
        let n_vocab = self.model.n_vocab();
        let whole = |n: i32| super::sampling::window(n, self.n_ctx);
        let mut chain = TurnSamplerBuilder::default();
        let mirostat = cfg.mirostat == 2;
        for stage in &cfg.samplers {
            match stage {
                SamplerStage::Penalties => {
                    let active =
                        cfg.repeat_penalty != 1.0 || cfg.frequency_penalty != 0.0 || cfg.presence_penalty != 0.0;
                    let repeat_only = cfg.frequency_penalty == 0.0 && cfg.presence_penalty == 0.0;
                    if active && cfg.repeat_last_n != 0 && repeat_only && chain.is_empty() && self.parrot_stages {
                        // The first stage, on an array still in token-id order: parrot's (see `super::sampling`).
                        let last_n = usize::try_from(whole(cfg.repeat_last_n)).unwrap_or(usize::MAX);
                        chain.penalties(Penalties::new(last_n, cfg.repeat_penalty as f32));
                    } else if active && cfg.repeat_last_n != 0 {
                        chain.llama(LlamaSampler::penalties(
                            n_vocab,
                            whole(cfg.repeat_last_n),
                            cfg.repeat_penalty as f32,
                            cfg.frequency_penalty as f32,
                            cfg.presence_penalty as f32,
                        ));
                    }
                }
                SamplerStage::Dry if cfg.dry_multiplier > 0.0 => chain.llama(LlamaSampler::dry(
                    self.model,
                    cfg.dry_multiplier as f32,
                    cfg.dry_base as f32,
                    cfg.dry_allowed_length,
                    whole(cfg.dry_penalty_last_n),
                    &cfg.dry_sequence_breakers,
                )),
                // Mirostat replaces the truncation samplers and temperature, as in llama.cpp's common sampler.
                _ if mirostat => {}
                SamplerStage::TopK if cfg.top_k > 0 => chain.llama(LlamaSampler::top_k(cfg.top_k)),
                SamplerStage::TypicalP if cfg.typical_p < 1.0 => {
                    chain.llama(LlamaSampler::typical(cfg.typical_p as f32, 1))
                }
                SamplerStage::TopP if cfg.top_p < 1.0 && self.parrot_stages => {
                    chain.top_p(TopP::new(cfg.top_p as f32, 1))
                }
                SamplerStage::TopP if cfg.top_p < 1.0 => chain.llama(LlamaSampler::top_p(cfg.top_p as f32, 1)),
                SamplerStage::MinP if cfg.min_p > 0.0 => chain.llama(LlamaSampler::min_p(cfg.min_p as f32, 1)),
                SamplerStage::Xtc if cfg.xtc_probability > 0.0 => {
                    chain.llama(LlamaSampler::xtc(cfg.xtc_probability as f32, cfg.xtc_threshold as f32, 1, seed));
                }
                SamplerStage::Temperature if cfg.temperature > 0.0 => {
                    chain.llama(LlamaSampler::temp(cfg.temperature as f32))
                }
                _ => {}
            }
        }
        if mirostat {
            chain.llama(LlamaSampler::temp(cfg.temperature as f32));
            chain.llama(LlamaSampler::mirostat_v2(seed, cfg.mirostat_tau as f32, cfg.mirostat_eta as f32));
        } else if cfg.temperature <= 0.0 {
            chain.llama(LlamaSampler::greedy());
        } else {
            chain.llama(LlamaSampler::dist(seed));
        }
        chain.build()
    }

    /// Keeps the part of sequence `seq`'s cache shared with `tokens` and returns where evaluation must start.
    fn reuse_prefix(&mut self, seq: usize, tokens: &[LlamaToken]) -> usize {
        let seq_id = u32::try_from(seq).unwrap_or(0);
        let cached = &self.cached[seq];
        let mut common = cached.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        // The last prompt token must be evaluated again to get fresh logits.
        common = common.min(tokens.len().saturating_sub(1));
        if common > 0 {
            let removed = self.ctx.clear_kv_cache_seq(Some(seq_id), u32::try_from(common).ok(), None).unwrap_or(false);
            // A sliding-window cache may have dropped early positions: then the prefix cannot be reused.
            if !removed || self.ctx.kv_cache_seq_pos_min(i32::try_from(seq).unwrap_or(0)) > 0 {
                common = 0;
            }
        }
        if common == 0 {
            let _ = self.ctx.clear_kv_cache_seq(Some(seq_id), None, None);
        }
        self.cached[seq].truncate(common);
        common
    }

    /// One constrained, greedy generation for the analysis judge (`analysis::judge`), apart from the
    /// conversation's sampler and [`Self::step`]: the prompt on sequence 0 (its cached prefix reused, so the judge's
    /// fixed instructions are evaluated once), then llama.cpp's grammar sampler followed by the greedy choice, until
    /// an end-of-generation token (the only one a complete grammar allows) or `max_tokens`. No penalties, no stop
    /// strings, no streaming: the same prompt gives the same text.
    ///
    /// # Errors
    /// When llama.cpp rejects the grammar, the prompt plus `max_tokens` does not fit the context, or decoding fails.
    pub fn generate_with_grammar(&mut self, prompt: &str, grammar: &str, max_tokens: u32) -> Result<String> {
        let tokens = self.tokenize(prompt);
        if tokens.is_empty() {
            return Err(anyhow!("the judge's prompt is empty"));
        }
        if tokens.len() as u64 + u64::from(max_tokens) > u64::from(self.n_ctx) {
            return Err(anyhow!(
                "the judge's prompt ({} tokens) and answer (up to {max_tokens}) do not fit its context of {} tokens",
                tokens.len(),
                self.n_ctx
            ));
        }
        let mut constrained = LlamaSampler::grammar(self.model, grammar, "root")
            .map_err(|e| anyhow!("llama.cpp rejected the judge's grammar: {e}"))?;
        let decode_failed = |e: DecodeError| anyhow!("llama.cpp failed to decode the judge's prompt: {e}");
        let mut next = self.reuse_prefix(0, &tokens);
        let mut logits_at = 0i32;
        while next < tokens.len() {
            self.batch.clear();
            let end = (next + N_BATCH as usize).min(tokens.len());
            for (pos, &token) in tokens.iter().enumerate().take(end).skip(next) {
                self.batch.add(token, i32::try_from(pos)?, &[0], pos + 1 == tokens.len())?;
            }
            self.ctx.decode(&mut self.batch).map_err(decode_failed)?;
            self.cached[0].extend_from_slice(&tokens[next..end]);
            logits_at = i32::try_from(end - next - 1)?;
            next = end;
        }
        let vocab = self.model.vocab();
        let mut bytes = Vec::new();
        for _ in 0..max_tokens {
            let token = self.greedy_within(&mut constrained, logits_at);
            constrained.accept(token);
            if vocab.is_eog(token) {
                break;
            }
            bytes.extend_from_slice(&vocab.token_to_piece(token, false, None));
            self.batch.clear();
            self.batch.add(token, i32::try_from(self.cached[0].len())?, &[0], true)?;
            self.ctx.decode(&mut self.batch).map_err(decode_failed)?;
            self.cached[0].push(token);
            logits_at = 0;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The most likely token of output `idx` that `grammar` allows (not accepted). Checking the grammar on every
    /// token of the vocabulary costs far more than the model's step, so, as llama-server does, the most likely token
    /// is checked alone first, and the whole vocabulary only when the grammar rejects it: the same token either way.
    fn greedy_within(&self, grammar: &mut LlamaSampler, idx: i32) -> LlamaToken {
        let logits = self.ctx.get_logits_ith(idx);
        let best = |data: &[LlamaTokenData]| {
            data.iter()
                .filter(|d| d.logit().is_finite())
                .fold(None::<&LlamaTokenData>, |m, d| match m {
                    Some(m) if m.logit() >= d.logit() => Some(m),
                    _ => Some(d),
                })
                .map(LlamaTokenData::id)
        };
        let all: Vec<LlamaTokenData> =
            logits.iter().zip(0_i32..).map(|(&l, i)| LlamaTokenData::new(LlamaToken(i), l, 0.0)).collect();
        if let Some(top) = best(&all) {
            let mut one = LlamaTokenDataArray::new(vec![all[usize::try_from(top.0).unwrap_or(0)]], false);
            grammar.apply(&mut one);
            if one.data.first().is_some_and(|d| d.logit().is_finite()) {
                return top;
            }
        }
        let mut array = LlamaTokenDataArray::new(all, false);
        grammar.apply(&mut array);
        // A grammar always allows some token (an end-of-generation token once complete).
        best(&array.data).unwrap_or_else(|| self.model.vocab().eos())
    }

    /// Number of sequences the context holds.
    #[must_use]
    pub fn n_seq(&self) -> usize {
        self.cached.len()
    }

    /// Starts a turn on sequence `seq`: tokenizes the prompt, reuses the cached prefix, builds the sampler.
    /// A prompt that does not fit gives a job that is already done with `context_full`.
    ///
    /// # Errors
    /// When `seq` is out of range.
    pub fn begin(&mut self, seq: usize, req: &GenRequest<'_>) -> Result<SeqJob> {
        if seq >= self.cached.len() {
            return Err(anyhow!("sequence {seq} is out of range (the context holds {})", self.cached.len()));
        }
        let started = Instant::now();
        let tokens = self.tokenize(req.prompt);
        let mut job = SeqJob {
            seq,
            tokens,
            next_prompt: 0,
            sampler: None,
            max_tokens: req.max_tokens,
            stream: StopStream::new(&req.sampler.stop),
            utf8: Utf8Stream::default(),
            n_gen: 0,
            pending: None,
            logits_at: None,
            started,
            gen_started: None,
            prompt_ms: 0.0,
            evaluated: 0,
            done: None,
        };
        let fits = (job.tokens.len() as u64) + u64::from(req.max_tokens) <= u64::from(self.n_ctx);
        if !fits || job.tokens.is_empty() || req.max_tokens == 0 {
            job.done = Some(if req.max_tokens == 0 { StopReason::MaxTokens } else { StopReason::ContextFull });
            return Ok(job);
        }
        job.next_prompt = self.reuse_prefix(seq, &job.tokens);
        job.evaluated = u32::try_from(job.tokens.len() - job.next_prompt)?;
        let mut sampler = self.build_sampler(req.sampler, req.seed);
        sampler.accept_prompt(&job.tokens);
        job.sampler = Some(sampler);
        Ok(job)
    }

    /// Advances every unfinished job by one `llama_decode`: generating jobs add their last sampled token, jobs
    /// still evaluating their prompt add the next chunk of it (up to the batch size in all). Then every job whose
    /// logits are ready samples its next token. `on_piece(seq, text)` receives streamed text.
    ///
    /// # Errors
    /// When llama.cpp fails to decode for a reason other than a full cache (which ends the affected jobs with
    /// `context_full`).
    pub fn step(&mut self, jobs: &mut [&mut SeqJob], on_piece: &mut dyn FnMut(usize, &str)) -> Result<()> {
        self.batch.clear();
        let capacity = N_BATCH as usize;
        let mut used = 0usize;
        let mut added = vec![0usize; jobs.len()];
        // Generating jobs first (one token each), so that a long prompt never stalls them.
        for (j, job) in jobs.iter_mut().enumerate() {
            job.logits_at = None;
            if job.done.is_some() || used == capacity {
                continue;
            }
            if let Some(token) = job.pending {
                let pos = i32::try_from(self.cached[job.seq].len())?;
                self.batch.add(token, pos, &[i32::try_from(job.seq)?], true)?;
                job.logits_at = Some(i32::try_from(used)?);
                added[j] = 1;
                used += 1;
            }
        }
        // Prompt tokens fill the rest, but while other conversations generate, only a few per step: a step costs
        // about as much as the tokens it holds, and every generating conversation waits for the whole step.
        let prompt_end = if used > 0 { (used + PROMPT_TOKENS_BESIDE_GENERATION).min(capacity) } else { capacity };
        for (j, job) in jobs.iter_mut().enumerate() {
            if job.done.is_some() || job.pending.is_some() {
                continue;
            }
            let take = (job.tokens.len() - job.next_prompt).min(prompt_end.saturating_sub(used));
            for k in 0..take {
                let pos = job.next_prompt + k;
                let last = pos + 1 == job.tokens.len();
                self.batch.add(job.tokens[pos], i32::try_from(pos)?, &[i32::try_from(job.seq)?], last)?;
                if last {
                    job.logits_at = Some(i32::try_from(used + k)?);
                }
            }
            added[j] = take;
            used += take;
        }
        if used == 0 {
            return Ok(());
        }
        match self.ctx.decode(&mut self.batch) {
            Ok(()) => {}
            Err(DecodeError::NoKvCacheSlot) => {
                for job in jobs.iter_mut().filter(|j| j.done.is_none()) {
                    job.done = Some(StopReason::ContextFull);
                    self.cached[job.seq].clear();
                    let _ = self.ctx.clear_kv_cache_seq(u32::try_from(job.seq).ok(), None, None);
                }
                return Ok(());
            }
            Err(e) => return Err(anyhow!("llama.cpp failed to decode: {e}")),
        }
        // What is now in each sequence's cache.
        for (j, job) in jobs.iter_mut().enumerate() {
            if added[j] == 0 {
                continue;
            }
            if let Some(token) = job.pending.take() {
                self.cached[job.seq].push(token);
            } else {
                let end = job.next_prompt + added[j];
                self.cached[job.seq].extend_from_slice(&job.tokens[job.next_prompt..end]);
                job.next_prompt = end;
            }
        }
        self.sample_ready(jobs, on_piece);
        Ok(())
    }

    /// Samples the next token of every job whose logits the last decode produced, and applies the stop rules.
    fn sample_ready(&mut self, jobs: &mut [&mut SeqJob], on_piece: &mut dyn FnMut(usize, &str)) {
        let vocab = self.model.vocab();
        for job in jobs.iter_mut() {
            let Some(idx) = job.logits_at.take() else { continue };
            let Some(sampler) = job.sampler.as_mut() else { continue };
            if job.gen_started.is_none() {
                job.prompt_ms = job.started.elapsed().as_secs_f64() * 1000.0;
                job.gen_started = Some(Instant::now());
            }
            let token = sampler.sample(&self.ctx, idx, &mut self.scratch);
            // A turn that ends with this token streams everything not yet streamed (up to a stop string).
            let (emit, stop) = if vocab.is_eog(token) {
                (job.stream.finish(), Some(StopReason::Eos))
            } else {
                job.n_gen += 1;
                let mut piece = String::new();
                job.utf8.push(&vocab.token_to_piece(token, false, None), &mut piece);
                let last = job.n_gen >= job.max_tokens;
                let step = if last { job.stream.push_last(&piece) } else { job.stream.push(&piece) };
                let stop = if step.stopped {
                    Some(StopReason::StopString)
                } else if last {
                    Some(StopReason::MaxTokens)
                } else {
                    job.pending = Some(token);
                    None
                };
                (step.emit, stop)
            };
            if !emit.is_empty() {
                on_piece(job.seq, emit);
            }
            job.done = stop;
        }
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

impl Backend for LlamaBackend {
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
        for c in &mut self.cached {
            c.clear();
        }
    }

    fn generate(&mut self, req: &GenRequest<'_>, on_piece: &mut dyn FnMut(&str)) -> Result<Generation> {
        let mut job = self.begin(0, req)?;
        while !job.is_done() {
            if req.cancel.load(Ordering::Relaxed) {
                return Err(Interrupted.into());
            }
            self.step(&mut [&mut job], &mut |_, piece| on_piece(piece))?;
        }
        Ok(job.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::{LlamaBackend, LoadOptions, Utf8Stream};
    use crate::backend::{Backend, GenRequest};
    use crate::config::SamplerConfig;

    /// The turns `model` generates for `prompts` with `cfg`, each from the same seed, with every sampler stage
    /// llama.cpp's (`parrot` empty) or with the stages `parrot` names done by parrot.
    fn turns(model: &mut LlamaBackend, cfg: &SamplerConfig, parrot: &[&str], prompts: &[&str]) -> Vec<(String, u32)> {
        model.parrot_stages = !parrot.is_empty();
        assert_eq!(model.build_sampler(cfg, 1).parrot_stages(), parrot, "the path under test is the one taken");
        let cancel = std::sync::atomic::AtomicBool::new(false);
        prompts
            .iter()
            .map(|prompt| {
                model.reset();
                let req = GenRequest { prompt, max_tokens: 120, sampler: cfg, seed: 1234, cancel: &cancel };
                let g = model.generate(&req, &mut |_| {}).unwrap();
                (g.text, g.tokens)
            })
            .collect()
    }

    /// #12: parrot's penalties and top-p cut (see `super::super::sampling`) sample the same tokens as llama.cpp's
    /// chain, step after step of the real model.
    #[test]
    fn parrot_stages_sample_the_same_tokens_as_llama_cpp() {
        // The real Gemma 3 model (262,144 tokens), as scripts/fetch-test-models.sh installs it.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".models/gemma-3-270m-q4_k_m.gguf");
        let opts = LoadOptions {
            n_ctx: Some(1024),
            default_ctx: 1024,
            threads: Some(1), // tests run two at a time on two cores: see tests/it/common.rs TEST_THREADS
            gpu_layers: None,
            chat_template: None,
            verbose: 0,
            n_seq: 1,
        };
        let mut model = LlamaBackend::load(&path, &opts).unwrap();
        let prompts = ["Skye: Hello! I am so happy to see you again. Tell me about", "Once upon a time, the"];
        // The built-in scenario's sampler (the original tool's): parrot's penalties and top-p, then llama.cpp's
        // min-p, temperature and draw.
        let date = SamplerConfig {
            temperature: 0.87,
            top_k: 0,
            top_p: 0.8,
            min_p: 0.1,
            repeat_penalty: 1.1,
            repeat_last_n: 2048,
            stop: Vec::new(),
            ..SamplerConfig::default()
        };
        // A strong penalty over a short window that slides many times within one turn; top-k sorts the array
        // first, so the top-p step is llama.cpp's.
        let strong = SamplerConfig { repeat_penalty: 1.6, repeat_last_n: 16, top_k: 40, min_p: 0.0, ..date.clone() };
        // No penalty, a wide nucleus and a hot draw: hundreds to thousands of tokens kept every step.
        let wide = SamplerConfig { repeat_penalty: 1.0, top_p: 0.98, min_p: 0.0, temperature: 1.5, ..date.clone() };
        for (cfg, parrot) in
            [(&date, &["penalties", "top_p"][..]), (&strong, &["penalties", "top_p"]), (&wide, &["top_p"])]
        {
            let reference = turns(&mut model, cfg, &[], &prompts);
            let ours = turns(&mut model, cfg, parrot, &prompts);
            assert!(reference.iter().all(|(_, n)| *n > 80), "turns long enough to compare: {reference:?}");
            assert_eq!(ours, reference, "with {cfg:?}");
        }
    }

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
