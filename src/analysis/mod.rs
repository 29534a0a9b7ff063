//! Analysis: how, and from which turn on, a conversation breaks down. Pure: takes a [`Conversation`] (read by
//! `formats`), returns a [`ConversationAnalysis`]; reads and writes no files.
//!
//! The types in this file are the contract between `analyze`, `report` and the saved `analysis.json` of a run
//! folder. Fields may be added; existing names are part of the JSON output and stay.

use std::collections::BTreeMap;

pub mod confidence;
pub mod detectors;
pub mod dir;
pub mod embed;
pub mod formats;
pub mod judge;
pub mod legacy;
pub mod metrics;
pub mod render;
pub mod speakers;
pub mod stats;
pub mod text;

pub use dir::{analyze_paths, load_saved, save, DirAnalysis, FileError, ANALYSIS_VERSION};

use serde::{Deserialize, Serialize};

use crate::transcript::{Speaker, StopReason};

/// The file formats `analyze` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// parrot's own JSONL transcript (`transcript.rs`).
    Parrot,
    /// The original Python tool's `.log` file.
    LegacyLog,
    /// A JSON array of `{role, content}` messages.
    ChatJson,
    /// JSONL with one `{role, content}` message per line.
    ChatJsonl,
    /// ShareGPT: `{"conversations": [{"from", "value"}]}`.
    Sharegpt,
}

/// One message, in whatever format it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub speaker: Speaker,
    /// The full text, prefix included.
    pub text: String,
    /// The speaker-name prefix the turn was forced to start with, when known.
    pub prefix: Option<String>,
    /// True for the opening messages of a config (not generated).
    pub opening: bool,
    /// Generated tokens, when the format records them.
    pub tokens: Option<u32>,
    /// The turn's token limit, when known.
    pub max_tokens: Option<u32>,
    /// Why the turn ended, when known.
    pub stop_reason: Option<StopReason>,
    /// Budget consumed after this message (tokens), when known.
    pub tokens_so_far: Option<u64>,
}

/// A conversation read from any supported format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The file it came from (for messages and reports; never used to open anything else).
    pub source: String,
    /// Its format.
    pub format: Format,
    /// The config that produced it, when the file records one (parrot header config, or the original's
    /// `Full Config:` line). Reports derive run-set labels from the differences between these.
    pub config: Option<serde_json::Value>,
    /// The engines and models that produced it, as far as the file records them.
    pub origin: Origin,
    /// The assistant's forced prefix (e.g. `Skye:`), when known.
    pub agent_prefix: Option<String>,
    /// The user's forced prefix, when known.
    pub user_prefix: Option<String>,
    /// Every message in order.
    pub messages: Vec<Message>,
    /// Generation speed over the whole conversation, when recorded.
    pub tokens_per_s: Option<f64>,
    /// False when the file ends before the conversation did (no summary, no `--- DONE ---`).
    pub complete: bool,
    /// What the reader had to guess, one line each (e.g. the opening messages of a `.log` without stream
    /// markers); `analyze` prints them as warnings and keeps them in the analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What produced a conversation, as its file records it: each speaker's engine and model. The report labels run
/// sets with these, so they are kept in the analysis (and the saved `analysis.json`) rather than read again from
/// the transcript. `None` where the format records nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The assistant's engine, as the parrot header names it (`llama`, `http:koboldcpp`, …).
    pub backend: Option<String>,
    /// The user's engine, as the parrot header names it.
    pub user_backend: Option<String>,
    /// The assistant's model: its name or, without one, its path (parrot header; `Assistant Model:` of a log).
    pub assistant_model: Option<String>,
    /// The user's model, recorded like the assistant's.
    pub user_model: Option<String>,
}

/// Per-speaker pair of results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PerSpeaker<T> {
    /// Result for the assistant's turns.
    pub assistant: T,
    /// Result for the user's turns.
    pub user: T,
}

/// One piece of evidence for a detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Message indices (into [`Conversation::messages`]) involved.
    pub turns: Vec<usize>,
    /// The repeated (or offending) text, shortened for display.
    pub text: String,
}

/// What one detector found for one speaker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Whether the phenomenon is present.
    pub detected: bool,
    /// How strong it is, in [0, 1] (0 when not detected).
    pub severity: f64,
    /// Index of the assistant turn (0 = first generated or opening assistant message) where it begins.
    pub onset: Option<usize>,
    /// Message index where it begins.
    pub onset_message: Option<usize>,
    /// Tokens consumed when it began, when the format records tokens.
    pub onset_tokens: Option<u64>,
    /// Turn indices and text that show it.
    pub evidence: Vec<Evidence>,
}

/// The original tool's score, computed exactly as its analyzer does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyScore {
    /// Total characters of the assistant responses (the denominator of `loop_density`).
    pub character_count: usize,
    /// Σ characters of each removed run × its count.
    pub loop_score: usize,
    /// `loop_score / character_count`.
    pub loop_density: f64,
    /// Mean character length of the assistant responses.
    pub avg_response_length: f64,
    /// Number of assistant responses.
    pub responses: usize,
    /// Response lengths in characters, in order.
    pub response_lengths: Vec<usize>,
    /// The most repeated word runs with their counts, most frequent first (at most 20).
    pub top_ngrams: Vec<(String, usize)>,
    /// False when the count stopped at its work bound (`legacy::WORK_LIMIT`): `loop_score` is then a lower bound.
    #[serde(default = "yes")]
    pub complete: bool,
}

fn yes() -> bool {
    true
}

impl Default for LegacyScore {
    /// The score of no responses.
    fn default() -> Self {
        legacy::score_from_runs(Vec::new(), Vec::new())
    }
}

/// Standard repetition metrics from the literature, for one speaker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// seq-rep-n for n = 1..4: share of repeated n-grams within each turn, averaged over turns.
    pub seq_rep: [f64; 4],
    /// distinct-n for n = 1..4: unique n-grams / all n-grams over the speaker's text.
    pub distinct: [f64; 4],
    /// rep-w with w = 16: share of tokens that occurred in the previous 16 tokens.
    pub rep_w16: f64,
    /// Raw bytes / compressed bytes of the speaker's text (higher = more repetitive).
    pub compression_ratio: f64,
    /// Length in characters of the longest substring occurring at least twice.
    pub longest_repeated_substring: usize,
    /// Set (to the window, in characters) when the speaker's text was longer than one window and
    /// `longest_repeated_substring` was searched within windows of that many characters: then it counts only
    /// repeats whose copies lie within half a window of each other (a lower bound). Absent when searched whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_repeated_window: Option<usize>,
}

/// Everything computed for one conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationAnalysis {
    /// The file it came from.
    pub source: String,
    /// Its format.
    pub format: Format,
    /// Number of messages.
    pub messages: usize,
    /// Number of assistant messages.
    pub assistant_turns: usize,
    /// Number of user messages.
    pub user_turns: usize,
    /// Total tokens, when recorded.
    pub total_tokens: Option<u64>,
    /// Generation speed, when recorded.
    pub tokens_per_s: Option<f64>,
    /// Whether the file holds the whole conversation.
    pub complete: bool,
    /// The engines and models that produced it, when the file records them.
    #[serde(default)]
    pub origin: Origin,
    /// The original tool's numbers.
    pub legacy: LegacyScore,
    /// One entry per phenomenon name (`single_turn_loop`, `multi_turn_loop`, `intra_turn_repetition`,
    /// `prefix_repetition`, `semantic_repetition`, `word_soup`, `nothing_to_say`, `apostrophe_break`,
    /// `leading_whitespace`, `rejection`).
    pub detectors: BTreeMap<String, PerSpeaker<Detection>>,
    /// Standard metrics per speaker.
    pub metrics: PerSpeaker<Metrics>,
    /// Earliest onset (assistant-turn index) over every detected phenomenon and speaker.
    pub first_onset: Option<usize>,
    /// Character length of every message, for timelines (index = message index).
    pub message_lengths: Vec<usize>,
    /// Speaker of every message, for timelines.
    pub message_speakers: Vec<Speaker>,
    /// What the reader had to guess about the file ([`Conversation::warnings`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// With `analyze --embed`: the turn-embedding similarities and the paraphrase loops they show (also merged
    /// into `semantic_repetition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<embed::EmbeddingAnalysis>,
    /// The LLM judge's verdicts (`analyze --judge`), absent otherwise; never saved here (`analysis.json` keeps
    /// them in its judge cache, see [`judge`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<judge::ConversationJudge>,
}

/// Analyzes one conversation: the original's score, every detector on both speakers, and the standard metrics.
/// Pure and deterministic.
#[must_use]
pub fn analyze(conv: &Conversation) -> ConversationAnalysis {
    analyze_with(conv, None)
}

/// [`analyze`] with the paraphrase loops that turn embeddings show ([`embed::analyze_vectors`]) added as evidence
/// for `semantic_repetition`. Pure: the embedding results are computed by the caller.
#[must_use]
pub fn analyze_with(conv: &Conversation, embedding: Option<embed::EmbeddingAnalysis>) -> ConversationAnalysis {
    // Speaker names inferred where the format records none are used exactly as configured ones (without copying
    // the conversation); the original's score (`legacy`) keeps reading the conversation as its analyzer did.
    let inferred = speakers::inferred_prefixes(conv);
    let prefixes = detectors::Prefixes::or_inferred(conv, &inferred);
    let mut detectors = detectors::run_all_with(conv, prefixes);
    if let (Some(e), Some(d)) = (&embedding, detectors.get_mut("semantic_repetition")) {
        embed::merge_into(d, &e.detection);
    }
    let first_onset =
        detectors.values().flat_map(|d| [&d.assistant, &d.user]).filter(|d| d.detected).filter_map(|d| d.onset).min();
    let speaker_texts = |s: Speaker| -> Vec<&str> {
        conv.messages
            .iter()
            .filter(|m| m.speaker == s && !m.opening)
            .map(|m| detectors::body_with(prefixes, m))
            .collect()
    };
    let count = |s: Speaker| conv.messages.iter().filter(|m| m.speaker == s).count();
    let total_tokens = conv.messages.iter().rev().find_map(|m| m.tokens_so_far).or_else(|| {
        let sum: u64 = conv.messages.iter().filter_map(|m| m.tokens).map(u64::from).sum();
        conv.messages.iter().any(|m| m.tokens.is_some()).then_some(sum)
    });
    let legacy = legacy::score(conv);
    let legacy_warning = legacy_warning(&legacy);
    ConversationAnalysis {
        source: conv.source.clone(),
        format: conv.format,
        messages: conv.messages.len(),
        assistant_turns: count(Speaker::Assistant),
        user_turns: count(Speaker::User),
        total_tokens,
        tokens_per_s: conv.tokens_per_s,
        complete: conv.complete,
        origin: conv.origin.clone(),
        legacy,
        detectors,
        metrics: PerSpeaker {
            assistant: metrics::speaker_metrics(&speaker_texts(Speaker::Assistant)),
            user: metrics::speaker_metrics(&speaker_texts(Speaker::User)),
        },
        first_onset,
        message_lengths: conv.messages.iter().map(|m| m.text.chars().count()).collect(),
        message_speakers: conv.messages.iter().map(|m| m.speaker).collect(),
        warnings: conv.warnings.iter().cloned().chain(legacy_warning).collect(),
        embedding,
        judge: None,
    }
}

/// The warning for a loop score that stopped at its work bound.
fn legacy_warning(score: &LegacyScore) -> Option<String> {
    (!score.complete).then(|| {
        format!(
            "loop score: stopped at its bound of {} words counted (the original recounts the whole text after \
             every removed run, and this text has too many), so loop_score and loop_density are lower bounds",
            legacy::WORK_LIMIT
        )
    })
}
