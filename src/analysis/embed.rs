//! Paraphrase loops found with turn embeddings (`analyze --embed MODEL`): a speaker who keeps re-telling the same
//! moment in fresh words — the same kiss, the same sunset, new verbs and adjectives, no new event — has plenty of new
//! content words, so the lexical `semantic_repetition` misses it; its turns still mean the same thing.
//!
//! Pure: the vectors come from an [`Embedder`] (llama.cpp in-process, `backend::llama::LlamaEmbedder`), passed in.
//! The method, measured on the two labelled sets named below (see `docs/detectors.md`):
//! * every non-system message is embedded without its speaker-name prefix (inferred ones included), so a name
//!   shared by all of a speaker's turns does not make them alike;
//! * **anisotropy**: decoder-model embeddings all point into one narrow cone (raw cosines of unrelated turns are
//!   0.8–0.95), so the vectors are **centred per conversation** — the mean of the conversation's message vectors is
//!   subtracted before the cosine — which leaves what distinguishes one turn from the others of the same talk;
//! * **contrast with the other speaker**: a turn's likeness to the same speaker's previous [`WINDOW`] turns (the
//!   highest centred cosine) minus [`OTHER_SPEAKER_WEIGHT`] × its highest centred cosine with the other speaker's
//!   turns in the same stretch. A talk that stays on one subject (one recipe cooked step by step, one chess game)
//!   makes a turn like both; a speaker stuck on one moment while the other tries to move on makes it like only its
//!   own turns;
//! * a generated turn is **stuck** when that contrasted similarity reaches [`MIN_SIMILARITY`]; [`MIN_RUN`] stuck
//!   turns in a row are a paraphrase loop, from the first of them (the first re-telling), moved back over the turns
//!   just before whose contrasted similarity is still at least [`EXTEND_SIMILARITY`].
//!
//! Measured with SmolLM2 135M as the embedder on two labelled sets, `tests/fixtures/meaning/` (10 loops, 10
//! healthy) and `tests/fixtures/meaning-heldout/` (12 loops, 12 healthy of which 6 hard negatives that stay on one
//! subject; written independently of this code). Raw cosines of every pair of turns are above 0.9, so no threshold
//! on them separates anything; centred without the contrast, the held-out set's hard negatives were flagged (5 of
//! 12) and 2 of its loops missed. With these constants: 10 of 10 and 11 of 12 loops found, 0 of 22 healthy
//! conversations flagged, 20 of the 21 onsets within ±2 turns. The constants were chosen on both sets together (a
//! grid over window, weight, threshold, run and extension; `scripts/bench-embed.sh`), and the margin is thin (a
//! threshold 0.025 higher finds 4 loops fewer), so expect less on other text, and other values with other
//! embedders: with Gemma 3 270M (a base model) the same constants find 11 of 22 loops (and flag no healthy one).
//!
//! The result is evidence for `semantic_repetition` ([`merge_into`]), and the per-turn similarities are kept as
//! [`EmbeddingAnalysis`] (in `--json` and `analysis.json`) for the report's heatmap.

use std::fmt::Debug;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::detectors::{body_with, Prefixes, SpeakerView};
use super::{Conversation, Detection, Evidence, PerSpeaker};
use crate::transcript::Speaker;

/// How many earlier generated turns of the same speaker a turn is compared with.
pub const WINDOW: usize = 3;
/// Contrasted similarity (see [`OTHER_SPEAKER_WEIGHT`]) from which a turn re-tells an earlier one.
pub const MIN_SIMILARITY: f32 = 0.3;
/// How much of a turn's likeness to the other speaker's turns in the same stretch is taken off its likeness to the
/// speaker's own previous turns: a talk that stays on one topic makes both alike, a speaker stuck on one moment
/// while the other moves on makes only the first.
pub const OTHER_SPEAKER_WEIGHT: f32 = 0.75;
/// Stuck turns in a row needed to report a paraphrase loop.
pub const MIN_RUN: usize = 3;
/// The onset of a loop moves back over the turns just before its run whose contrasted similarity is still at least
/// this: the first re-telling is often less alike than the later ones, because the turn it re-tells also holds
/// other things.
pub const EXTEND_SIMILARITY: f32 = 0.0;
/// How the vectors are corrected before comparing them (recorded in the output).
pub const CORRECTION: &str = "centred per conversation";

/// Turns texts into vectors. Implementations may hold a model; they are shared by the parallel folder pass.
pub trait Embedder: Send + Sync + Debug {
    /// The model's name (file or registry name), recorded with the results.
    fn name(&self) -> &str;
    /// One vector per text, in order, all of one length.
    ///
    /// # Errors
    /// When the model fails.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}

/// The embedding results of one conversation, for `--json` and the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingAnalysis {
    /// The embedding model.
    pub model: String,
    /// How the vectors were corrected before comparing ([`CORRECTION`]).
    pub correction: String,
    /// For every message (index = message index): its centred cosine similarity with each of the same speaker's
    /// previous [`WINDOW`] generated turns, the nearest first (a row of the report's turn × lag heatmap). Empty for
    /// system and opening messages and a speaker's first turn.
    pub recent: Vec<Vec<f32>>,
    /// The paraphrase loops found per speaker (also merged into `semantic_repetition`).
    pub detection: PerSpeaker<Detection>,
}

/// The text to embed of every message (index = message index): the body after the speaker-name prefix, `None` for
/// system messages. Prefixes are inferred as [`super::analyze`] does.
#[must_use]
pub fn texts(conv: &Conversation) -> Vec<Option<String>> {
    let inferred = super::speakers::inferred_prefixes(conv);
    let prefixes = Prefixes::or_inferred(conv, &inferred);
    conv.messages
        .iter()
        .map(|m| (m.speaker != Speaker::System).then(|| body_with(prefixes, m).trim().to_string()))
        .collect()
}

/// Embeds a conversation's messages: one vector per message, `None` for system messages.
///
/// # Errors
/// When the embedder fails.
pub fn embed_conversation(conv: &Conversation, embedder: &dyn Embedder) -> Result<Vec<Option<Vec<f32>>>> {
    let texts = texts(conv);
    let wanted: Vec<&str> = texts.iter().flatten().map(String::as_str).collect();
    let mut vectors = embedder.embed(&wanted)?.into_iter();
    Ok(texts.iter().map(|t| t.as_ref().and_then(|_| vectors.next())).collect())
}

/// The vectors centred on their mean and scaled to unit length (a zero vector stays zero).
#[must_use]
pub fn centred(vectors: &[Option<Vec<f32>>]) -> Vec<Option<Vec<f32>>> {
    let present: Vec<&Vec<f32>> = vectors.iter().flatten().collect();
    let dim = present.first().map_or(0, |v| v.len());
    let mut mean = vec![0.0f64; dim];
    for v in present.iter().filter(|v| v.len() == dim) {
        for (m, x) in mean.iter_mut().zip(v.iter()) {
            *m += f64::from(*x);
        }
    }
    let n = present.len().max(1) as f64;
    vectors
        .iter()
        .map(|v| {
            let v = v.as_ref().filter(|v| v.len() == dim)?;
            #[allow(clippy::cast_possible_truncation)] // a mean of f32 values fits an f32.
            let c: Vec<f32> = v.iter().zip(&mean).map(|(x, m)| x - (m / n) as f32).collect();
            let norm = c.iter().map(|x| x * x).sum::<f32>().sqrt();
            Some(if norm > 0.0 { c.iter().map(|x| x / norm).collect() } else { c })
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Finds paraphrase loops in a conversation from its message vectors (index = message index, as
/// [`embed_conversation`] returns them).
#[must_use]
pub fn analyze_vectors(conv: &Conversation, vectors: &[Option<Vec<f32>>], model: &str) -> EmbeddingAnalysis {
    let unit = centred(vectors);
    let mut recent: Vec<Vec<f32>> = vec![Vec::new(); conv.messages.len()];
    let mut detect = |speaker: Speaker| -> Detection {
        let view = SpeakerView::new(conv, speaker);
        let turns: Vec<(usize, Option<&Vec<f32>>)> =
            view.turns.iter().map(|t| (t.message, unit.get(t.message).and_then(Option::as_ref))).collect();
        let mut best: Vec<(f32, usize)> = vec![(f32::NEG_INFINITY, 0); turns.len()];
        for (k, &(message, v)) in turns.iter().enumerate() {
            let Some(v) = v else { continue };
            let row: Vec<(f32, usize)> =
                (1..=WINDOW.min(k)).filter_map(|lag| turns[k - lag].1.map(|w| (dot(v, w), k - lag))).collect();
            recent[message] = row.iter().map(|r| r.0).collect();
            let Some(&(own, at)) = row.iter().max_by(|a, b| a.0.total_cmp(&b.0)) else { continue };
            // The other speaker's turns since the earliest turn compared: how alike the talk is anyway.
            let since = turns[k - WINDOW.min(k)].0;
            let other = (since + 1..message)
                .filter(|&j| conv.messages[j].speaker != speaker && conv.messages[j].speaker != Speaker::System)
                .filter_map(|j| unit.get(j).and_then(Option::as_ref).map(|w| dot(v, w)))
                .reduce(f32::max)
                .unwrap_or(0.0);
            best[k] = (own - OTHER_SPEAKER_WEIGHT * other, at);
        }
        let flags: Vec<bool> = best.iter().map(|b| b.0 >= MIN_SIMILARITY).collect();
        let found = super::detectors::runs(&flags, MIN_RUN);
        let Some(&(mut first, _)) = found.first() else { return Detection::default() };
        while first > 0 && best[first - 1].0 >= EXTEND_SIMILARITY {
            first -= 1;
        }
        let stuck: usize = found.iter().map(|r| r.1).sum();
        let mut d = view.detection(first, stuck as f64 / turns.len() as f64, Vec::new());
        d.evidence = found
            .iter()
            .map(|&(start, len)| {
                let run = &best[start..start + len];
                let low = run.iter().map(|b| b.0).fold(f32::INFINITY, f32::min);
                let mut turns: Vec<usize> = vec![turns[run[0].1].0];
                turns.extend((start..start + len).map(|k| view.turns[k].message));
                let text = format!(
                    "{len} turns re-telling earlier ones (embedding {model}: centred cosine with the speaker's \
                     previous {WINDOW} turns, less {OTHER_SPEAKER_WEIGHT} × that with the other speaker's, ≥ \
                     {low:.2}): {}",
                    view.turns[start].body.trim()
                );
                Evidence { turns, text: super::formats::shorten(&text, super::detectors::EVIDENCE_CHARS) }
            })
            .take(super::detectors::MAX_EVIDENCE)
            .collect();
        d
    };
    let detection = PerSpeaker { assistant: detect(Speaker::Assistant), user: detect(Speaker::User) };
    EmbeddingAnalysis { model: model.to_string(), correction: CORRECTION.to_string(), recent, detection }
}

/// Adds the embedding evidence to `semantic_repetition`: detected when either the lexical test or the embeddings
/// say so, from the earlier onset, with the larger severity and both evidence lists.
pub fn merge_into(lexical: &mut PerSpeaker<Detection>, found: &PerSpeaker<Detection>) {
    for (l, e) in [(&mut lexical.assistant, &found.assistant), (&mut lexical.user, &found.user)] {
        if !e.detected {
            continue;
        }
        if !l.detected || e.onset < l.onset {
            l.onset = e.onset;
            l.onset_message = e.onset_message;
            l.onset_tokens = e.onset_tokens;
        }
        l.detected = true;
        l.severity = l.severity.max(e.severity);
        l.evidence.extend(e.evidence.iter().cloned());
        l.evidence.truncate(super::detectors::MAX_EVIDENCE);
    }
}

#[cfg(test)]
mod tests {
    use super::super::detectors::testing::conv;
    use super::*;

    /// A stand-in embedder: every vector shares one direction (the anisotropy of real ones), turns about a kiss
    /// share a second, every other text gets a direction of its own.
    #[derive(Debug)]
    struct Topics;
    impl Embedder for Topics {
        fn name(&self) -> &str {
            "topics"
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.0f32; 32];
                    v[0] = 1.0;
                    let own = 3 + t.bytes().map(usize::from).sum::<usize>() % 29;
                    if t.contains("Kiss") {
                        v[1] = 2.0;
                        v[own] = 0.5;
                    } else {
                        v[own] = 2.0;
                    }
                    v
                })
                .collect())
        }
    }

    #[test]
    fn re_telling_turns_are_a_loop_from_the_first_re_telling() {
        let c = conv(&[
            (" Arrive at the cafe.", " b1"),
            (" Coffee is ordered.", " c1"),
            (" Dance by the river.", " d1"),
            (" Kiss under the moon.", " e1"),
            (" Kiss again, softly.", " f1"),
            (" Kiss, lips warm.", " g1"),
            (" Kiss while stars shine.", " h1"),
        ]);
        let vectors = embed_conversation(&c, &Topics).unwrap();
        assert_eq!(vectors.len(), c.messages.len());
        let a = analyze_vectors(&c, &vectors, "topics");
        let d = &a.detection.assistant;
        assert!(d.detected, "{a:?}");
        assert_eq!(d.onset, Some(4), "the first re-telling of the kiss");
        assert_eq!(d.evidence[0].turns[0], 6, "the evidence starts at the turn re-told");
        assert!(!a.detection.user.detected, "{:?}", a.detection.user);
        assert!(a.recent[0].is_empty() && a.recent[2].len() == 1 && a.recent[12].len() == WINDOW);
        let mut lexical = PerSpeaker::<Detection>::default();
        merge_into(&mut lexical, &a.detection);
        assert_eq!(lexical.assistant.onset, Some(4));
        assert!(lexical.assistant.evidence[0].text.contains("embedding topics"));
    }

    #[test]
    fn texts_drop_names_and_system_messages() {
        let c = conv(&[(" hi", " yo")]);
        assert_eq!(texts(&c), vec![Some("hi".to_string()), Some("yo".to_string())]);
        let centred = centred(&[Some(vec![1.0, 0.0]), None, Some(vec![0.0, 1.0])]);
        let a = centred[0].as_ref().unwrap();
        assert!((dot(a, a) - 1.0).abs() < 1e-6 && centred[1].is_none());
    }
}
