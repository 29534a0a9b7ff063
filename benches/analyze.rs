//! Benchmark of `parrot analyze` (not a test): builds a corpus of 1,000 synthetic conversations of ~16k tokens
//! (parrot transcripts; a quarter healthy, the rest looping in different ways), analyzes the folder the way the
//! command does (parallel across files), and prints files/s, MB/s and peak RSS. Then it times the straightforward
//! port of the original's loop score against the fast one on the same conversations and prints the ratio,
//! asserting equal scores. Run with `cargo bench --no-default-features --bench analyze`.

use std::path::Path;
use std::time::{Duration, Instant};

use parrot::analysis::{analyze_paths, formats, legacy};
use parrot::transcript::{Header, ModelRecord, Record, Speaker, StopReason, TranscriptWriter, TurnRecord};

/// Conversations in the corpus; `PARROT_BENCH_CONVERSATIONS` overrides it for a quick look.
fn conversations() -> usize {
    std::env::var("PARROT_BENCH_CONVERSATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}
const TOKENS: u64 = 16_000;
/// The slow port runs on conversations until this much time is spent (or all are done).
const SLOW_BUDGET: Duration = Duration::from_secs(60);

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn vocabulary(rng: &mut Rng) -> Vec<String> {
    let syllables = ["ka", "lo", "mi", "ne", "sha", "tor", "vi", "el", "an", "ru", "po", "sta", "de", "qui", "ba"];
    (0..3000)
        .map(|_| {
            let n = 1 + rng.below(3);
            (0..n).map(|_| syllables[rng.below(syllables.len())]).collect::<String>()
        })
        .collect()
}

/// A healthy turn: Zipf-ish words, some punctuation, a stock action now and then.
fn healthy_turn(rng: &mut Rng, vocab: &[String], words: usize) -> String {
    let mut s = String::new();
    if rng.below(4) == 0 {
        s.push_str(" *smiles*");
    }
    for i in 0..words {
        let r = rng.below(vocab.len());
        let idx = r * r.min(rng.below(vocab.len()) + 1) / vocab.len();
        s.push(' ');
        s.push_str(&vocab[idx.min(vocab.len() - 1)]);
        if i % 11 == 10 {
            s.push('.');
        }
    }
    s
}

fn header() -> Header {
    let model = ModelRecord {
        path: "bench.gguf".into(),
        file_size: None,
        name: None,
        architecture: None,
        n_ctx: 16384,
        chat_template_source: "gguf".into(),
    };
    Header {
        format: parrot::transcript::FORMAT_NAME.into(),
        format_version: parrot::transcript::FORMAT_VERSION,
        parrot_version: env!("CARGO_PKG_VERSION").into(),
        started: "2026-01-01T00:00:00Z".into(),
        config: serde_json::json!({"agent_prefix": "Skye:", "user_prefix": "Mark:", "turn_max_tokens": 512}),
        assistant_model: model.clone(),
        user_model: model,
        backend: "llama".into(),
        user_backend: "llama".into(),
        seed: 0,
        conversation_index: 0,
    }
}

/// Writes conversation `i`: kind 0 healthy, 1 single-turn loop growing by a glued token, 2 two-turn cycle,
/// 3 word soup that repeats phrases.
fn write_conversation(path: &Path, i: usize, vocab: &[String]) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1));
    let kind = i % 4;
    let onset = 10 + rng.below(40);
    let mut w = TranscriptWriter::create(path, &header()).unwrap();
    let mut so_far = 0u64;
    let mut index = 0u32;
    let mut assistant_turns: Vec<String> = Vec::new();
    while so_far < TOKENS {
        let k = assistant_turns.len();
        let (a, stop) = if kind == 0 || k < onset {
            {
                let n = 40 + rng.below(60);
                (healthy_turn(&mut rng, vocab, n), StopReason::Eos)
            }
        } else {
            match kind {
                1 => {
                    let mut t = assistant_turns[k - 1].clone();
                    t.push_str(&vocab[rng.below(vocab.len())]);
                    (t, StopReason::Eos)
                }
                2 => (assistant_turns[k - 2].clone(), StopReason::Eos),
                _ => {
                    let phrase = healthy_turn(&mut rng, vocab, 12);
                    let mut t = healthy_turn(&mut rng, vocab, 200);
                    for _ in 0..4 {
                        t.push_str(&phrase);
                    }
                    (t, StopReason::MaxTokens)
                }
            }
        };
        assistant_turns.push(a.clone());
        let n = 20 + rng.below(40);
        let u = healthy_turn(&mut rng, vocab, n);
        for (speaker, prefix, text, stop) in
            [(Speaker::Assistant, "Skye:", a, stop), (Speaker::User, "Mark:", u, StopReason::Eos)]
        {
            let tokens = u32::try_from(text.split(' ').count()).unwrap_or(u32::MAX).min(512);
            so_far += u64::from(tokens);
            w.write(&Record::Turn(TurnRecord {
                index,
                speaker,
                text: format!("{prefix}{text}"),
                prefix: prefix.into(),
                opening: false,
                tokens,
                prompt_tokens: 0,
                prompt_tokens_evaluated: 0,
                dropped_messages: 0,
                stop_reason: Some(stop),
                max_tokens: Some(512),
                tokens_so_far: so_far,
                timings: None,
            }))
            .unwrap();
            index += 1;
        }
    }
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut rng = Rng(42);
    let vocab = vocabulary(&mut rng);
    let t = Instant::now();
    let total = conversations();
    for i in 0..total {
        write_conversation(&dir.path().join(format!("{i:04}.jsonl")), i, &vocab);
    }
    let bytes: u64 = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    println!(
        "corpus: {total} conversations of ~{TOKENS} tokens, {:.1} MB, written in {:.1} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let rss_before = peak_rss_mib();

    let t = Instant::now();
    let out = analyze_paths(&[dir.path().to_path_buf()], None);
    let secs = t.elapsed().as_secs_f64();
    let analyzed: usize = out.iter().map(|d| d.conversations.len()).sum();
    let errors: usize = out.iter().map(|d| d.errors.len()).sum();
    assert_eq!(analyzed, total, "errors: {errors}");
    let broken = out.iter().flat_map(|d| &d.conversations).filter(|c| c.first_onset.is_some()).count();
    println!(
        "analyze: {analyzed} files in {secs:.2} s on {} threads: {:.1} files/s, {:.1} MB/s; {broken} with a loop or break",
        rayon::current_num_threads(),
        analyzed as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
    println!(
        "peak RSS (VmHWM): {:.1} MiB after writing the corpus, {:.1} MiB after analyzing it",
        rss_before.unwrap_or(f64::NAN),
        peak_rss_mib().unwrap_or(f64::NAN)
    );

    // The legacy score: straightforward port against the fast one, on the same conversations, single-threaded.
    let mut fast_total = Duration::ZERO;
    let mut slow_total = Duration::ZERO;
    let mut compared = 0;
    let started = Instant::now();
    let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in &files {
        if started.elapsed() > SLOW_BUDGET {
            break;
        }
        let Ok(conv) = formats::read_path(path, None) else { continue };
        let text = legacy::joined_text(&legacy::responses(&conv));
        let t = Instant::now();
        let fast = legacy::loop_runs(&text);
        fast_total += t.elapsed();
        let t = Instant::now();
        let slow = legacy::naive_loop_runs(&text);
        slow_total += t.elapsed();
        assert_eq!(fast, slow, "scores differ on {}", path.display());
        compared += 1;
    }
    let note = if compared < files.len() {
        format!(
            " (a subset: the first {compared} of {} files, as the slow port would take too long on all)",
            files.len()
        )
    } else {
        String::new()
    };
    println!(
        "legacy loop score on {compared} conversations{note}: straightforward port {:.2} s, fast {:.3} s, ratio {:.0}x, equal scores",
        slow_total.as_secs_f64(),
        fast_total.as_secs_f64(),
        slow_total.as_secs_f64() / fast_total.as_secs_f64().max(1e-9)
    );
}
