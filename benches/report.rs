//! Benchmark of `parrot report` (not a test): 20 run sets × 50 conversations of ~16k tokens each (the synthetic
//! corpus of the `analyze` benchmark, the sets differing in `repeat_penalty`), reported twice with the real
//! binary: cold (every transcript analyzed first) and warm (the `analysis.json` the cold run saved is reused).
//! Prints wall times, the size of `index.html` and of the whole report folder.
//! Run with `cargo bench --no-default-features --bench report`; `PARROT_BENCH_SETS` and
//! `PARROT_BENCH_PER_SET` change the shape; `PARROT_BENCH_DIR` keeps the corpus and the report in that folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod corpus;
use corpus::{vocabulary, write_conversation, Rng};

const TOKENS: u64 = 16_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        folder_bytes(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs `parrot report` over `sets` into `out` and returns the wall time in seconds.
fn report(sets: &[PathBuf], out: &Path) -> f64 {
    let t = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_parrot"))
        .arg("--quiet")
        .arg("report")
        .args(sets)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("parrot runs");
    assert!(status.success(), "parrot report failed: {status}");
    t.elapsed().as_secs_f64()
}

fn main() {
    let n_sets = env_or("PARROT_BENCH_SETS", 20);
    let per_set = env_or("PARROT_BENCH_PER_SET", 50);
    let tmp = tempfile::tempdir().expect("temporary folder");
    let kept = std::env::var_os("PARROT_BENCH_DIR").map(PathBuf::from);
    let root = kept.as_deref().unwrap_or(tmp.path());
    let mut rng = Rng(42);
    let vocab = vocabulary(&mut rng);
    let t = Instant::now();
    let mut sets = Vec::new();
    for s in 0..n_sets {
        let dir = root.join(format!("rp-{s:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for c in 0..per_set {
            let i = s * per_set + c;
            write_conversation(&dir.join(format!("{c:03}.jsonl")), i, &vocab, TOKENS, 1.0 + s as f64 * 0.01);
        }
        sets.push(dir);
    }
    let corpus_mb = folder_bytes(root) as f64 / 1e6;
    println!(
        "corpus: {n_sets} run sets x {per_set} conversations of ~{TOKENS} tokens, {corpus_mb:.1} MB, written in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let out = root.join("report");
    let cold = report(&sets, &out);
    let index = std::fs::metadata(out.join("index.html")).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let all = folder_bytes(&out) as f64 / 1e6;
    println!("report, cold (analyzes every transcript, saves analysis.json): {cold:.2} s");
    let warm = report(&sets, &out);
    println!("report, warm (reuses the saved analysis): {warm:.2} s");
    println!("index.html {index:.2} MB; report folder {all:.1} MB in all");
}
