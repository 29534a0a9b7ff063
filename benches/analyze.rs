//! Benchmark of `parrot analyze` (not a test): builds a corpus of 1,000 synthetic conversations of ~16k tokens
//! (parrot transcripts; a quarter healthy, the rest looping in different ways), analyzes the folder the way the
//! command does (parallel across files), and prints files/s, MB/s and peak RSS. Then it times the straightforward
//! port of the original's loop score against the fast one on the same conversations and prints the ratio,
//! asserting equal scores. Run with `cargo bench --no-default-features --bench analyze`.

use std::time::{Duration, Instant};

use parrot::analysis::{analyze_paths, formats, legacy};

mod corpus;
use corpus::{vocabulary, write_conversation, Rng};

/// Conversations in the corpus; `PARROT_BENCH_CONVERSATIONS` overrides it for a quick look.
fn conversations() -> usize {
    std::env::var("PARROT_BENCH_CONVERSATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}
const TOKENS: u64 = 16_000;
/// The slow port runs on conversations until this much time is spent (or all are done).
const SLOW_BUDGET: Duration = Duration::from_secs(60);

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
        write_conversation(&dir.path().join(format!("{i:04}.jsonl")), i, &vocab, TOKENS, 1.1);
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
        let fast = legacy::loop_runs(&text).runs;
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
