//! The LLM judge: a model reads a conversation window by window and says, as JSON, what happens, which topics come
//! up, and whether the story advanced. Paraphrase loops (the same kiss re-told in fresh words) defeat the lexical
//! `semantic_repetition`; a reader that understands the text does not need new words to see that nothing happened.
//! The original tool's last feature was such a judge, summarising every 5 lines.
//!
//! This file is the pure core; it reads and writes nothing:
//! * [`windows`] cuts the generated messages into windows of [`WINDOW`]; [`prompt`] renders one (each message
//!   shortened to [`TURN_CHARS`], control characters removed: model text is untrusted) with the previous window's
//!   summary, so that "advanced" means "compared with what came before".
//! * [`grammar`] (GBNF, for llama.cpp's grammar sampler and llama-server / llama-cpp-python) and [`schema`] (JSON
//!   schema, for OpenAI-style `response_format` and vLLM's `guided_json`) constrain the answer to one JSON object
//!   with bounded strings, so even a 135M model always answers valid JSON, within [`MAX_OUTPUT_TOKENS`].
//!   [`parse_verdict`] reads it with serde and enforces the same bounds whatever the engine did.
//! * [`judge_conversation`] runs the windows on a [`JudgeEngine`] (the I/O shells in `backend::judge` implement
//!   it); engines are asked to decode greedily, so the same model gives the same verdicts.
//! * Results are cached in the folder's `analysis.json` ([`CacheEntry`]) under a [`CacheKey`]: the transcript's
//!   content hash ([`transcript_hash`]), the judge model's identity and [`PROMPT_VERSION`].
//! * [`apply`] makes the verdicts evidence for the assistant's `semantic_repetition`: [`STALL_RUN`] windows in a
//!   row that did not advance. The judge reads both speakers, but the story is the assistant character's, so the
//!   evidence is the assistant's (docs/detectors.md).

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::detectors::{assistant_turn_of, runs, EVIDENCE_CHARS, MAX_EVIDENCE};
use super::dir::{DirAnalysis, DirSummary, FileError};
use super::formats::shorten;
use super::{Conversation, ConversationAnalysis, Evidence};
use crate::transcript::Speaker;

/// Version of the prompt, the grammar and the window rules: part of the cache key, so that a change re-judges.
pub const PROMPT_VERSION: u32 = 1;
/// Generated messages per window (the original judged every 5 lines of its log).
pub const WINDOW: usize = 5;
/// Characters of one message shown to the judge (the rest is cut, marked with `…`).
pub const TURN_CHARS: usize = 600;
/// Most characters of a summary.
pub const SUMMARY_CHARS: usize = 80;
/// Most topics per window.
pub const TOPICS: usize = 4;
/// Most characters of one topic.
pub const TOPIC_CHARS: usize = 24;
/// Windows in a row that did not advance needed for `semantic_repetition` evidence (2 windows: about 5 assistant
/// turns, close to the lexical detector's 4 stuck turns).
pub const STALL_RUN: usize = 2;
/// The longest answer [`grammar`] allows, in bytes: every character of every string at its longest encoding (4
/// bytes), plus the keys and punctuation. Each token adds at least one byte, so a judge given this many tokens
/// always completes the object.
pub const MAX_OUTPUT_BYTES: usize = (SUMMARY_CHARS + TOPICS * TOPIC_CHARS) * 4 + 128;
/// The token limit given to the judge: [`MAX_OUTPUT_BYTES`]. A greedy judge ends long before (the grammar ends
/// with the object: typically 40-80 tokens).
#[allow(clippy::cast_possible_truncation)] // a small constant
pub const MAX_OUTPUT_TOKENS: u32 = MAX_OUTPUT_BYTES as u32;

/// The judge's answer for one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// One sentence on what happens in the window (at most [`SUMMARY_CHARS`]).
    pub summary: String,
    /// Short topics (at most [`TOPICS`], each at most [`TOPIC_CHARS`]).
    pub topics: Vec<String>,
    /// Whether something new happened compared with the previous window.
    pub advanced: bool,
}

/// One window and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowVerdict {
    /// Message index of the window's first message.
    pub first_message: usize,
    /// Message index of its last message.
    pub last_message: usize,
    /// Assistant turn (the onset count, docs/detectors.md) of its first message.
    pub first_turn: usize,
    /// Assistant turn of its last message.
    pub last_turn: usize,
    /// What the judge said.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// What identifies a judgement: the same transcript, judged by the same model with the same prompt, is not judged
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey {
    /// [`transcript_hash`] of the conversation.
    pub transcript: String,
    /// The judge model's identity ([`JudgeEngine::model_id`]).
    pub model: String,
    /// [`PROMPT_VERSION`] when it was judged.
    pub prompt_version: u32,
}

/// One cached judgement, as `analysis.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// What it was judged with.
    #[serde(flatten)]
    pub key: CacheKey,
    /// Every window's verdict, in order.
    pub windows: Vec<WindowVerdict>,
}

/// The judge's results for one conversation, as `--json` and the report show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationJudge {
    /// The judge model's identity.
    pub model: String,
    /// [`PROMPT_VERSION`] of the verdicts.
    pub prompt_version: u32,
    /// True when the verdicts came from `analysis.json` (no inference this run).
    pub cached: bool,
    /// Windows that did not advance, inside runs of at least [`STALL_RUN`] (the `semantic_repetition` evidence).
    pub stalled_windows: usize,
    /// Every window's verdict, in order.
    pub windows: Vec<WindowVerdict>,
}

/// How many windows a run of the judge served from the cache and how many it had the model judge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeCounts {
    /// Windows whose verdict came from the cache.
    pub cached: usize,
    /// Windows the model judged now.
    pub inferred: usize,
}

/// An engine that answers the judge's prompt with text constrained by [`grammar`] or [`schema`], greedily.
pub trait JudgeEngine {
    /// The model's identity for the cache: a GGUF's file name and size, or the server's flavor and model.
    fn model_id(&self) -> String;
    /// Answers one window's prompt (a system and a user message) with the constrained JSON text.
    ///
    /// # Errors
    /// When the engine fails.
    fn complete(&mut self, system: &str, user: &str) -> Result<String>;
}

/// The SHA-256 (hex) of a conversation's messages: speaker, opening flag and text of each, length-delimited. Two
/// files with the same conversation share it; any edit of a message changes it.
#[must_use]
pub fn transcript_hash(conv: &Conversation) -> String {
    let mut h = Sha256::new();
    for m in &conv.messages {
        h.update(m.speaker.as_str().as_bytes());
        h.update([u8::from(m.opening)]);
        h.update((m.text.len() as u64).to_le_bytes());
        h.update(m.text.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The windows of a conversation: its generated (non-opening) messages, [`WINDOW`] at a time, as message indices.
/// The last window may be shorter.
#[must_use]
pub fn windows(conv: &Conversation) -> Vec<Vec<usize>> {
    let generated: Vec<usize> = conv
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.opening && m.speaker != Speaker::System)
        .map(|(i, _)| i)
        .collect();
    generated.chunks(WINDOW).map(<[usize]>::to_vec).collect()
}

/// Model text as the judge sees it: control characters (but newlines) become spaces, at most [`TURN_CHARS`].
fn quoted(text: &str) -> String {
    let clean: String = text.trim().chars().map(|c| if c.is_control() && c != '\n' { ' ' } else { c }).collect();
    shorten(&clean, TURN_CHARS)
}

/// The system message of every window.
pub const SYSTEM: &str = "You read a part of a role-play conversation between two characters and describe it as \
JSON. You never continue the conversation.";

/// The prompt for one window: the system message ([`SYSTEM`]) and the user message, which quotes the window's
/// messages (named by speaker) after the previous window's summary.
#[must_use]
pub fn prompt(conv: &Conversation, window: &[usize], previous: Option<&Verdict>) -> (String, String) {
    let before = previous.map_or_else(|| "(this is the start of the conversation)".to_string(), |v| quoted(&v.summary));
    let mut user = format!("What happened before: {before}\n\nThe next part of the conversation:\n");
    for &i in window {
        let m = &conv.messages[i];
        let who = match m.speaker {
            Speaker::Assistant => "A",
            _ => "B",
        };
        user.push_str(&format!("[{who}] {}\n", quoted(&m.text)));
    }
    user.push_str(&format!(
        "\nAnswer with JSON: \"summary\": one short sentence on what happens in this part; \"topics\": up to {TOPICS} \
         topics of a few words; \"advanced\": true if something new happens compared with what happened before (a \
         new event, place, decision or piece of information), false if it only re-tells the same moment in other \
         words."
    ));
    (SYSTEM.to_string(), user)
}

/// The GBNF grammar of a [`Verdict`]: one JSON object, keys in order, strings of bounded length without control
/// characters.
#[must_use]
pub fn grammar() -> String {
    let more = TOPICS - 1;
    format!(
        r#"root ::= "{{" ws "\"summary\"" ws ":" ws summary "," ws "\"topics\"" ws ":" ws topics "," ws "\"advanced\"" ws ":" ws ("true" | "false") ws "}}"
summary ::= "\"" char{{1,{SUMMARY_CHARS}}} "\""
topics ::= "[" ws (topic (ws "," ws topic){{0,{more}}})? ws "]"
topic ::= "\"" char{{1,{TOPIC_CHARS}}} "\""
char ::= [^"\\\x00-\x1F\x7F] | "\\" ["\\/nt]
ws ::= " "?
"#
    )
}

/// The JSON schema of a [`Verdict`], with the same bounds as [`grammar`].
#[must_use]
pub fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "summary": {"type": "string", "minLength": 1, "maxLength": SUMMARY_CHARS},
            "topics": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": TOPIC_CHARS},
                "maxItems": TOPICS
            },
            "advanced": {"type": "boolean"}
        },
        "required": ["summary", "topics", "advanced"],
        "additionalProperties": false
    })
}

/// Reads the judge's answer. Whatever the engine enforced, the result keeps the bounds of [`grammar`]: longer
/// strings are shortened, extra topics dropped, control characters removed.
///
/// # Errors
/// When the text is longer than [`MAX_OUTPUT_BYTES`] × 2 or not a [`Verdict`] (one line, with the start of the text).
pub fn parse_verdict(text: &str) -> Result<Verdict> {
    if text.len() > MAX_OUTPUT_BYTES * 2 {
        return Err(anyhow!("the judge answered {} bytes, more than the {} allowed", text.len(), MAX_OUTPUT_BYTES * 2));
    }
    let v: Verdict = serde_json::from_str(text.trim())
        .with_context(|| format!("the judge's answer is not the JSON asked for: '{}'", shorten(text.trim(), 120)))?;
    let clean = |s: &str, max: usize| -> String {
        let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        shorten(s.trim(), max)
    };
    Ok(Verdict {
        summary: clean(&v.summary, SUMMARY_CHARS),
        topics: v.topics.iter().map(|t| clean(t, TOPIC_CHARS)).filter(|t| !t.is_empty()).take(TOPICS).collect(),
        advanced: v.advanced,
    })
}

/// Judges every window of a conversation in order, each prompt carrying the previous verdict's summary.
///
/// # Errors
/// When the engine fails or answers something that is not a verdict (naming the window).
pub fn judge_conversation(conv: &Conversation, engine: &mut dyn JudgeEngine) -> Result<Vec<WindowVerdict>> {
    let mut out: Vec<WindowVerdict> = Vec::new();
    for window in windows(conv) {
        let (Some(&first), Some(&last)) = (window.first(), window.last()) else { continue };
        let (system, user) = prompt(conv, &window, out.last().map(|w| &w.verdict));
        let what = || format!("judging messages {first}-{last}");
        let text = engine.complete(&system, &user).with_context(what)?;
        let verdict = parse_verdict(&text).with_context(what)?;
        out.push(WindowVerdict {
            first_message: first,
            last_message: last,
            first_turn: assistant_turn_of(conv, first),
            last_turn: assistant_turn_of(conv, last),
            verdict,
        });
    }
    Ok(out)
}

/// The verdicts for `conv` judged by `engine`: from `cache` when it holds them under the engine's
/// [`JudgeEngine::model_id`] (counted as cached; the engine is not called, so a lazy one never loads its model),
/// otherwise judged now (counted as inferred, and added to `cache`).
///
/// # Errors
/// When judging fails.
pub fn judged(
    conv: &Conversation,
    engine: &mut dyn JudgeEngine,
    cache: &mut Vec<CacheEntry>,
    counts: &mut JudgeCounts,
) -> Result<ConversationJudge> {
    let key = CacheKey { transcript: transcript_hash(conv), model: engine.model_id(), prompt_version: PROMPT_VERSION };
    if let Some(hit) = cache.iter().find(|e| e.key == key) {
        counts.cached += hit.windows.len();
        return Ok(summarise(&hit.key, hit.windows.clone(), true));
    }
    let windows = judge_conversation(conv, engine)?;
    counts.inferred += windows.len();
    cache.push(CacheEntry { key: key.clone(), windows: windows.clone() });
    Ok(summarise(&key, windows, false))
}

/// What judging one folder gave: each judged conversation's results (by index into its conversations), the
/// conversations that could not be judged, and the counts.
#[derive(Debug, Default)]
pub struct DirJudgement {
    /// (conversation index, its results), in order.
    pub judged: Vec<(usize, ConversationJudge)>,
    /// Conversations that could not be judged, one line each.
    pub errors: Vec<FileError>,
    /// Windows served from the cache and judged now.
    pub counts: JudgeCounts,
}

/// Judges every conversation of a folder's analysis (`texts` in the same order, as the folder pass keeps them),
/// from and into `dir.judge_cache`, which then holds only the entries of these conversations (every model's).
/// Changes nothing else of `dir`: [`apply_dir`] does, once the cache is saved.
pub fn judge_dir(dir: &mut DirAnalysis, texts: &[Option<Conversation>], engine: &mut dyn JudgeEngine) -> DirJudgement {
    let mut out = DirJudgement::default();
    let mut hashes = std::collections::HashSet::new();
    for (i, analysis) in dir.conversations.iter().enumerate() {
        let Some(conv) = texts.get(i).and_then(Option::as_ref) else {
            out.errors.push(FileError {
                path: analysis.source.clone(),
                error: "could not be read again for the judge".into(),
            });
            continue;
        };
        hashes.insert(transcript_hash(conv));
        match judged(conv, engine, &mut dir.judge_cache, &mut out.counts) {
            Ok(j) => out.judged.push((i, j)),
            Err(e) => out.errors.push(FileError { path: analysis.source.clone(), error: format!("{e:#}") }),
        }
    }
    dir.judge_cache.retain(|e| hashes.contains(&e.key.transcript));
    out
}

/// Applies a folder's judgement ([`apply`] on each conversation), adds its errors and summarises the folder again.
pub fn apply_dir(dir: &mut DirAnalysis, texts: &[Option<Conversation>], judgement: DirJudgement) {
    for (i, judge) in judgement.judged {
        if let (Some(a), Some(Some(conv))) = (dir.conversations.get_mut(i), texts.get(i)) {
            apply(a, conv, judge);
        }
    }
    dir.errors.extend(judgement.errors);
    dir.summary = DirSummary::of(&dir.conversations, dir.errors.len());
}

fn stall_runs(windows: &[WindowVerdict]) -> Vec<(usize, usize)> {
    let stalled: Vec<bool> = windows.iter().map(|w| !w.verdict.advanced).collect();
    runs(&stalled, STALL_RUN)
}

fn summarise(key: &CacheKey, windows: Vec<WindowVerdict>, cached: bool) -> ConversationJudge {
    let stalled_windows = stall_runs(&windows).iter().map(|(_, n)| n).sum();
    ConversationJudge { model: key.model.clone(), prompt_version: key.prompt_version, cached, stalled_windows, windows }
}

/// The latest cached judgement of `conv` with the current [`PROMPT_VERSION`], whatever the model (what the report
/// shows without running a judge).
#[must_use]
pub fn latest_cached(conv: &Conversation, cache: &[CacheEntry]) -> Option<ConversationJudge> {
    let hash = transcript_hash(conv);
    let hit = cache.iter().rev().find(|e| e.key.transcript == hash && e.key.prompt_version == PROMPT_VERSION)?;
    Some(summarise(&hit.key, hit.windows.clone(), true))
}

/// Shows each conversation's [`latest_cached`] verdicts (`judge`), without making them evidence: what the report
/// does, which runs no judge.
pub fn attach_cached(dir: &mut DirAnalysis, texts: &[Option<Conversation>]) {
    if dir.judge_cache.is_empty() {
        return;
    }
    for (a, conv) in dir.conversations.iter_mut().zip(texts) {
        if let Some(conv) = conv {
            a.judge = latest_cached(conv, &dir.judge_cache);
        }
    }
}

/// Records the judge's results on a conversation's analysis and makes them evidence for the assistant's
/// `semantic_repetition`: each run of at least [`STALL_RUN`] windows that did not advance. The detection then
/// begins at the earlier of the lexical onset and the first stalled window's first message; its severity is at
/// least the share of stalled windows; the judge's evidence comes first. `first_onset` follows.
pub fn apply(analysis: &mut ConversationAnalysis, conv: &Conversation, judge: ConversationJudge) {
    let runs = stall_runs(&judge.windows);
    if let Some(&(start, _)) = runs.first() {
        let det = &mut analysis.detectors.entry("semantic_repetition".to_string()).or_default().assistant;
        let w = &judge.windows[start];
        if !det.detected || det.onset.is_none_or(|o| w.first_turn < o) {
            det.onset = Some(w.first_turn);
            det.onset_message = Some(w.first_message);
            det.onset_tokens = conv
                .messages
                .get(w.first_message)
                .and_then(|m| m.tokens_so_far.map(|after| after.saturating_sub(u64::from(m.tokens.unwrap_or(0)))));
        }
        det.detected = true;
        #[allow(clippy::cast_precision_loss)] // window counts are small
        let share = judge.stalled_windows as f64 / judge.windows.len().max(1) as f64;
        det.severity = det.severity.max(share).clamp(0.0, 1.0);
        let mut evidence: Vec<Evidence> = runs
            .iter()
            .map(|&(s, n)| {
                let (a, b) = (&judge.windows[s], &judge.windows[s + n - 1]);
                Evidence {
                    turns: judge.windows[s..s + n].iter().map(|w| w.first_message).collect(),
                    text: shorten(
                        &format!(
                            "judge: no advance for {n} windows (turns {}-{}): {}",
                            a.first_turn, b.last_turn, a.verdict.summary
                        ),
                        EVIDENCE_CHARS,
                    ),
                }
            })
            .collect();
        evidence.append(&mut det.evidence);
        evidence.truncate(MAX_EVIDENCE);
        det.evidence = evidence;
    }
    analysis.judge = Some(judge);
    analysis.first_onset = analysis
        .detectors
        .values()
        .flat_map(|d| [&d.assistant, &d.user])
        .filter(|d| d.detected)
        .filter_map(|d| d.onset)
        .min();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::detectors::testing::conv;

    /// An engine that answers from a script and counts its calls.
    struct Scripted {
        answers: Vec<&'static str>,
        calls: usize,
        prompts: Vec<String>,
        id: &'static str,
    }

    impl JudgeEngine for Scripted {
        fn model_id(&self) -> String {
            self.id.into()
        }
        fn complete(&mut self, _system: &str, user: &str) -> Result<String> {
            self.prompts.push(user.to_string());
            let a = self.answers.get(self.calls).copied().unwrap_or(r#"{"summary":"x","topics":[],"advanced":true}"#);
            self.calls += 1;
            Ok(a.to_string())
        }
    }

    fn twelve() -> Conversation {
        let pairs: Vec<(String, String)> = (0..6).map(|i| (format!("kiss {i}"), format!("again {i}"))).collect();
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        conv(&refs)
    }

    #[test]
    fn windows_are_five_generated_messages_and_the_last_may_be_short() {
        let c = twelve();
        let w = windows(&c);
        let generated = c.messages.iter().filter(|m| !m.opening && m.speaker != Speaker::System).count();
        assert_eq!(w.iter().map(Vec::len).sum::<usize>(), generated);
        assert!(w[..w.len() - 1].iter().all(|w| w.len() == WINDOW));
        assert!(w.last().unwrap().len() <= WINDOW);
    }

    #[test]
    fn verdicts_are_bounded_and_foreign_answers_are_clear_errors() {
        let long = "é".repeat(500);
        let text = format!(r#"{{"summary":"{long}","topics":["a","b","c","d","e","f"],"advanced":false}}"#);
        let v = parse_verdict(&text).unwrap();
        assert_eq!(v.summary.chars().count(), SUMMARY_CHARS);
        assert_eq!(v.topics.len(), TOPICS);
        assert!(!v.advanced);
        let e = parse_verdict("Sure! Here is the JSON").unwrap_err();
        assert!(format!("{e:#}").contains("not the JSON asked for"), "{e:#}");
        assert!(parse_verdict(r#"{"summary":"a","topics":[],"advanced":true,"extra":1}"#).is_err());
        assert!(parse_verdict(&"x".repeat(MAX_OUTPUT_BYTES * 3)).unwrap_err().to_string().contains("bytes"));
    }

    #[test]
    fn the_prompt_quotes_untrusted_text_bounded_and_carries_the_previous_summary() {
        let huge = format!("a\u{1b}[31m{}", "word ".repeat(1000));
        let c = conv(&[(huge.as_str(), "ok")]);
        let w = &windows(&c)[0];
        let prev = Verdict { summary: "They met at the harbour.".into(), topics: vec![], advanced: true };
        let (_, user) = prompt(&c, w, Some(&prev));
        assert!(user.contains("They met at the harbour."));
        assert!(!user.contains('\u{1b}'));
        assert!(user.len() < TURN_CHARS * 2 + 1000, "{}", user.len());
    }

    #[test]
    fn the_hash_changes_with_any_message_and_only_then() {
        let a = twelve();
        let mut b = twelve();
        b.source = "elsewhere.jsonl".into();
        assert_eq!(transcript_hash(&a), transcript_hash(&b));
        b.messages[3].text.push('!');
        assert_ne!(transcript_hash(&a), transcript_hash(&b));
        assert_eq!(transcript_hash(&a).len(), 64);
    }

    #[test]
    fn the_second_judgement_comes_from_the_cache_without_the_engine() {
        let c = twelve();
        let mut cache = Vec::new();
        let mut counts = JudgeCounts::default();
        let mut engine = Scripted { answers: vec![], calls: 0, prompts: vec![], id: "m" };
        let first = judged(&c, &mut engine, &mut cache, &mut counts).unwrap();
        assert!(!first.cached);
        let n = windows(&c).len();
        assert_eq!((counts, engine.calls), (JudgeCounts { cached: 0, inferred: n }, n));
        let second = judged(&c, &mut engine, &mut cache, &mut counts).unwrap();
        assert!(second.cached);
        assert_eq!(second.windows, first.windows);
        assert_eq!((counts.cached, engine.calls), (n, n), "no call for a cached transcript");
        // Another model is another key.
        engine.id = "other";
        let other = judged(&c, &mut engine, &mut cache, &mut counts).unwrap();
        assert!(!other.cached);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn windows_that_do_not_advance_twice_in_a_row_are_semantic_repetition_from_the_first() {
        let c = twelve();
        let stuck = r#"{"summary":"They kiss again.","topics":["kiss"],"advanced":false}"#;
        let moved = r#"{"summary":"They meet.","topics":["meeting"],"advanced":true}"#;
        let mut engine = Scripted { answers: vec![moved, stuck, stuck], calls: 0, prompts: vec![], id: "m" };
        let verdicts = judge_conversation(&c, &mut engine).unwrap();
        assert_eq!(verdicts.len(), 3);
        assert!(engine.prompts[1].contains("They meet."), "the previous summary is carried");
        let mut a = crate::analysis::analyze(&c);
        assert!(!a.detectors["semantic_repetition"].assistant.detected);
        let judge =
            summarise(&CacheKey { transcript: String::new(), model: "m".into(), prompt_version: 1 }, verdicts, false);
        assert_eq!(judge.stalled_windows, 2);
        let second = judge.windows[1].clone();
        apply(&mut a, &c, judge);
        let d = &a.detectors["semantic_repetition"].assistant;
        assert!(d.detected);
        assert_eq!(d.onset, Some(second.first_turn));
        assert_eq!(d.onset_message, Some(second.first_message));
        assert!(d.evidence[0].text.starts_with("judge: no advance for 2 windows"), "{:?}", d.evidence);
        assert!((d.severity - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(a.first_onset, Some(second.first_turn));
        assert!(a.judge.is_some());
    }

    #[test]
    fn one_stalled_window_is_no_evidence() {
        let c = twelve();
        let stuck = r#"{"summary":"s","topics":[],"advanced":false}"#;
        let moved = r#"{"summary":"m","topics":[],"advanced":true}"#;
        let mut engine = Scripted { answers: vec![stuck, moved, stuck], calls: 0, prompts: vec![], id: "m" };
        let verdicts = judge_conversation(&c, &mut engine).unwrap();
        let mut a = crate::analysis::analyze(&c);
        let before = a.detectors.clone();
        apply(
            &mut a,
            &c,
            summarise(&CacheKey { transcript: String::new(), model: "m".into(), prompt_version: 1 }, verdicts, false),
        );
        assert_eq!(a.detectors, before);
    }

    #[test]
    fn the_grammar_bounds_every_string_and_the_schema_agrees() {
        let g = grammar();
        assert!(g.contains(&format!("char{{1,{SUMMARY_CHARS}}}")), "{g}");
        assert!(g.contains(&format!("{{0,{}}}", TOPICS - 1)), "{g}");
        let s = schema();
        assert_eq!(s["properties"]["topics"]["maxItems"], TOPICS);
        assert_eq!(s["properties"]["summary"]["maxLength"], SUMMARY_CHARS);
    }
}
