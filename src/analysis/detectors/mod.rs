//! One detector per loop or break the original names (see `broken-record-README.md`), each in its own file with
//! its own tests. Every detector looks at one speaker's generated turns and returns a [`Detection`]: whether the
//! phenomenon is there, how strong (in [0, 1]), the assistant turn where it begins, and evidence.
//!
//! The shared rule against false alarms: a phenomenon must persist (usually several turns in a row) before it is
//! reported, so that one repeated greeting, a recurring name or a stock phrase like `*smiles*` never is.
//! Text comparisons are character-level ([`super::text`]), so glued junk and CJK are seen too.

use std::collections::{BTreeMap, VecDeque};

use super::text::{overlap, shingles, SHINGLE};
use super::{Conversation, Detection, Evidence, Message, PerSpeaker};
use crate::transcript::Speaker;

pub mod apostrophe_break;
pub mod intra_turn_repetition;
pub mod leading_whitespace;
pub mod multi_turn_loop;
pub mod nothing_to_say;
pub mod prefix_repetition;
pub mod recurring_tail;
pub mod rejection;
pub mod semantic_repetition;
pub mod single_turn_loop;
pub mod word_soup;

/// A detector: one speaker's view of a conversation in, a detection out.
pub type DetectorFn = fn(&SpeakerView<'_>) -> Detection;

/// Every detector with its output name, in output order.
pub const DETECTORS: [(&str, DetectorFn); 11] = [
    ("single_turn_loop", single_turn_loop::detect),
    ("multi_turn_loop", multi_turn_loop::detect),
    ("intra_turn_repetition", intra_turn_repetition::detect),
    ("prefix_repetition", prefix_repetition::detect),
    ("semantic_repetition", semantic_repetition::detect),
    ("word_soup", word_soup::detect),
    ("nothing_to_say", nothing_to_say::detect),
    ("apostrophe_break", apostrophe_break::detect),
    ("leading_whitespace", leading_whitespace::detect),
    ("rejection", rejection::detect),
    ("recurring_tail", recurring_tail::detect),
];

/// The names of every detector, in output order.
#[must_use]
pub fn names() -> [&'static str; 11] {
    DETECTORS.map(|(name, _)| name)
}

/// Evidence text is cut to this many characters.
pub const EVIDENCE_CHARS: usize = 160;
/// At most this many evidence entries per detection.
pub const MAX_EVIDENCE: usize = 5;

/// How many of the speaker's own earlier turns each turn is compared with: the longest cycle `multi_turn_loop`
/// looks for. Comparing further back would give no detector anything it uses.
pub const LOOKBACK: usize = multi_turn_loop::MAX_PERIOD;

/// One generated turn of the speaker under study.
#[derive(Debug, Clone)]
pub struct Turn<'a> {
    /// Index into [`Conversation::messages`].
    pub message: usize,
    /// The assistant turn this belongs to (see [`assistant_turn_of`]).
    pub assistant_turn: usize,
    /// The text after the speaker-name prefix (leading whitespace kept).
    pub body: &'a str,
    /// The message itself (stop reason, token counts).
    pub msg: &'a Message,
    /// Whether the body has any character shingle (it is not all whitespace).
    pub has_shingles: bool,
    /// [`similarity`] with the speaker's own turns before it: entry `p - 1` compares with the turn `p` back, for
    /// `p` up to [`LOOKBACK`] and the turns there are (0.0 beyond).
    pub back: [f64; LOOKBACK],
    /// [`similarity`] with the other speaker's last message before it, when there is one.
    pub other: Option<f64>,
}

impl Turn<'_> {
    /// [`similarity`] of this turn with the speaker's own turn `p` back (`1 ≤ p ≤ LOOKBACK`).
    #[must_use]
    pub fn similarity_back(&self, p: usize) -> f64 {
        self.back[p - 1]
    }
}

/// One speaker's generated turns, with the whole conversation for context.
///
/// Memory is bounded by design: a turn keeps the similarities the detectors compare (with its [`LOOKBACK`]
/// predecessors and the other speaker's last message), not its shingles. The shingles are built once per message,
/// in order, and only those of the last [`LOOKBACK`] own turns and of the other speaker's last message are held
/// (about 8 bytes per character of those turns), so a conversation of any length is compared in the memory of a
/// few turns, with the same numbers as comparing every pair from a full list.
#[derive(Debug)]
pub struct SpeakerView<'a> {
    /// The conversation.
    pub conv: &'a Conversation,
    /// Which speaker.
    pub speaker: Speaker,
    /// Its generated turns (opening messages excluded), in order.
    pub turns: Vec<Turn<'a>>,
}

/// A text prepared for [`similarity`]: its trimmed body, the characters of that, and its shingles.
#[derive(Debug, Clone)]
pub struct Shingled<'a> {
    /// The body, trimmed.
    pub text: &'a str,
    /// Characters of `text` (counted once: similarity compares many pairs).
    pub chars: usize,
    /// Character shingles of the body ([`shingles`] with [`SHINGLE`]).
    pub shingles: Vec<u64>,
}

impl<'a> Shingled<'a> {
    /// Prepares a message body.
    #[must_use]
    pub fn new(body: &'a str) -> Self {
        let text = body.trim();
        Shingled { text, chars: text.chars().count(), shingles: shingles(body, SHINGLE) }
    }
}

/// Index of the assistant turn a message belongs to: for an assistant message its position among assistant
/// messages; for any other message the assistant turn before it (0 before the first one).
#[must_use]
pub fn assistant_turn_of(conv: &Conversation, message: usize) -> usize {
    // `..end`, not `..=message`: an empty conversation (a transcript of only a header) gives 0, not a panic.
    let end = message.saturating_add(1).min(conv.messages.len());
    conv.messages[..end].iter().filter(|m| m.speaker == Speaker::Assistant).count().saturating_sub(1)
}

/// The speaker-name prefixes that message bodies are cut after: the conversation's own, or ones inferred for it
/// ([`crate::analysis::speakers::inferred_prefixes`]) without copying the conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefixes<'p> {
    /// The assistant's prefix.
    pub agent: Option<&'p str>,
    /// The user's prefix.
    pub user: Option<&'p str>,
}

impl<'p> Prefixes<'p> {
    /// The prefixes a conversation records.
    #[must_use]
    pub fn of(conv: &'p Conversation) -> Self {
        Prefixes { agent: conv.agent_prefix.as_deref(), user: conv.user_prefix.as_deref() }
    }

    /// The prefixes a conversation records, and `inferred` ones
    /// ([`crate::analysis::speakers::inferred_prefixes`]: assistant, user) where it records none.
    #[must_use]
    pub fn or_inferred(conv: &'p Conversation, inferred: &'p (Option<String>, Option<String>)) -> Self {
        Prefixes {
            agent: conv.agent_prefix.as_deref().or(inferred.0.as_deref()),
            user: conv.user_prefix.as_deref().or(inferred.1.as_deref()),
        }
    }
}

/// The text of a message after its speaker-name prefix.
#[must_use]
pub fn body<'a>(conv: &Conversation, m: &'a Message) -> &'a str {
    body_with(Prefixes::of(conv), m)
}

/// [`body`] with the prefixes given.
#[must_use]
pub fn body_with<'a>(prefixes: Prefixes<'_>, m: &'a Message) -> &'a str {
    let known = match m.speaker {
        Speaker::Assistant => prefixes.agent,
        Speaker::User => prefixes.user,
        Speaker::System => None,
    };
    m.prefix
        .as_deref()
        .and_then(|p| m.text.strip_prefix(p))
        .or_else(|| known.and_then(|p| m.text.strip_prefix(p)))
        .unwrap_or(&m.text)
}

impl<'a> SpeakerView<'a> {
    /// Builds the view of `speaker` in `conv`: one pass over the messages, holding the shingles of at most
    /// [`LOOKBACK`] own turns and one message of the other speaker (opening messages included) at a time.
    #[must_use]
    pub fn new(conv: &'a Conversation, speaker: Speaker) -> Self {
        Self::with_prefixes(conv, speaker, Prefixes::of(conv))
    }

    /// [`Self::new`] with bodies cut after `prefixes` instead of the conversation's own.
    #[must_use]
    pub fn with_prefixes(conv: &'a Conversation, speaker: Speaker, prefixes: Prefixes<'_>) -> Self {
        let other_speaker = match speaker {
            Speaker::Assistant => Speaker::User,
            _ => Speaker::Assistant,
        };
        let mut turns = Vec::new();
        let mut recent: VecDeque<Shingled<'a>> = VecDeque::with_capacity(LOOKBACK + 1);
        let mut last_other: Option<Shingled<'a>> = None;
        let mut assistant_seen = 0usize;
        for (i, m) in conv.messages.iter().enumerate() {
            if m.speaker == Speaker::Assistant {
                assistant_seen += 1;
            }
            if m.speaker == speaker && !m.opening {
                let b = body_with(prefixes, m);
                let this = Shingled::new(b);
                let mut back = [0.0; LOOKBACK];
                for (p, earlier) in recent.iter().rev().enumerate() {
                    back[p] = similarity(earlier, &this);
                }
                turns.push(Turn {
                    message: i,
                    assistant_turn: assistant_seen.saturating_sub(1),
                    body: b,
                    msg: m,
                    has_shingles: !this.shingles.is_empty(),
                    back,
                    other: last_other.as_ref().map(|o| similarity(o, &this)),
                });
                if recent.len() == LOOKBACK {
                    recent.pop_front();
                }
                recent.push_back(this);
            } else if m.speaker == other_speaker {
                last_other = Some(Shingled::new(body_with(prefixes, m)));
            }
        }
        SpeakerView { conv, speaker, turns }
    }

    /// A detection starting at own turn `first`, with severity clamped to [0, 1] and evidence from `turns`
    /// (indices into [`Self::turns`]) with their texts.
    #[must_use]
    pub fn detection(&self, first: usize, severity: f64, evidence: Vec<(Vec<usize>, String)>) -> Detection {
        let t = &self.turns[first];
        let before = t.msg.tokens_so_far.map(|after| after.saturating_sub(u64::from(t.msg.tokens.unwrap_or(0))));
        Detection {
            detected: true,
            severity: if severity.is_nan() { 0.0 } else { severity.clamp(0.0, 1.0) },
            onset: Some(t.assistant_turn),
            onset_message: Some(t.message),
            onset_tokens: before,
            evidence: evidence
                .into_iter()
                .take(MAX_EVIDENCE)
                .map(|(turns, text)| Evidence {
                    turns: turns.iter().map(|&k| self.turns[k].message).collect(),
                    text: super::formats::shorten(&text, EVIDENCE_CHARS),
                })
                .collect(),
        }
    }
}

/// How much of the shorter turn the longer one repeats, in [0, 1] (see [`overlap`]). A turn shorter than one
/// shingle counts as repeated when it occurs inside the other (case-insensitive), so `remarquer` →
/// `remarquerurusan` is seen from its first step; empty turns repeat nothing.
#[must_use]
pub fn similarity(a: &Shingled<'_>, b: &Shingled<'_>) -> f64 {
    let (ta, tb) = (a.text, b.text);
    if ta.is_empty() || tb.is_empty() {
        return 0.0;
    }
    let (short, long, short_chars) = if a.chars <= b.chars { (ta, tb, a.chars) } else { (tb, ta, b.chars) };
    if short_chars < SHINGLE {
        return if long.to_lowercase().contains(&short.to_lowercase()) { 1.0 } else { 0.0 };
    }
    overlap(&a.shingles, &b.shingles, 1)
}

/// Runs of consecutive `true` values of at least `min_len`: (start, length) pairs.
#[must_use]
pub fn runs(flags: &[bool], min_len: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < flags.len() {
        if flags[i] {
            let start = i;
            while i < flags.len() && flags[i] {
                i += 1;
            }
            if i - start >= min_len {
                out.push((start, i - start));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Runs every detector on both speakers.
#[must_use]
pub fn run_all(conv: &Conversation) -> BTreeMap<String, PerSpeaker<Detection>> {
    run_all_with(conv, Prefixes::of(conv))
}

/// [`run_all`] with bodies cut after `prefixes`.
#[must_use]
pub fn run_all_with(conv: &Conversation, prefixes: Prefixes<'_>) -> BTreeMap<String, PerSpeaker<Detection>> {
    // One speaker's view at a time: the second is built after the first is dropped.
    let detect_all = |speaker: Speaker| -> Vec<Detection> {
        let view = SpeakerView::with_prefixes(conv, speaker, prefixes);
        DETECTORS.iter().map(|(_, detect)| detect(&view)).collect()
    };
    let assistant = detect_all(Speaker::Assistant);
    let user = detect_all(Speaker::User);
    DETECTORS
        .iter()
        .zip(assistant.into_iter().zip(user))
        .map(|((name, _), (assistant, user))| ((*name).to_string(), PerSpeaker { assistant, user }))
        .collect()
}

/// Helpers for the detectors' tests: conversations built from turn texts.
#[cfg(test)]
pub(crate) mod testing {
    use crate::analysis::{Conversation, Format, Message, Origin};
    use crate::transcript::{Speaker, StopReason};

    /// A message with text and no metadata.
    pub fn msg(speaker: Speaker, text: &str) -> Message {
        Message {
            speaker,
            text: text.to_string(),
            prefix: None,
            opening: false,
            tokens: None,
            max_tokens: None,
            stop_reason: None,
            tokens_so_far: None,
        }
    }

    /// A conversation of alternating assistant/user turns (assistant first), prefixes `Skye:` and `Mark:`.
    pub fn conv(pairs: &[(&str, &str)]) -> Conversation {
        let mut messages = Vec::new();
        for (a, u) in pairs {
            let mut m = msg(Speaker::Assistant, &format!("Skye:{a}"));
            m.prefix = Some("Skye:".into());
            messages.push(m);
            let mut m = msg(Speaker::User, &format!("Mark:{u}"));
            m.prefix = Some("Mark:".into());
            messages.push(m);
        }
        Conversation {
            source: "test".into(),
            format: Format::Parrot,
            config: None,
            origin: Origin::default(),
            agent_prefix: Some("Skye:".into()),
            user_prefix: Some("Mark:".into()),
            messages,
            tokens_per_s: None,
            complete: true,
            warnings: Vec::new(),
        }
    }

    /// Sets stop reasons and token counts on the assistant's turns.
    pub fn with_stops(mut c: Conversation, stops: &[(StopReason, u32)], max: u32) -> Conversation {
        let mut k = 0;
        let mut so_far = 0u64;
        for m in &mut c.messages {
            let (stop, tokens) = if m.speaker == Speaker::Assistant && k < stops.len() {
                k += 1;
                stops[k - 1]
            } else {
                (StopReason::Eos, 20)
            };
            so_far += u64::from(tokens);
            m.stop_reason = Some(stop);
            m.tokens = Some(tokens);
            m.max_tokens = Some(max);
            m.tokens_so_far = Some(so_far);
        }
        c
    }

    /// A healthy role-play: varied turns, recurring names, the stock phrase `*smiles*`, one repeated greeting.
    pub fn healthy() -> Conversation {
        conv(&[
            (" *smiles* Hey Mark! How are you doing?", " \"Hey Skye! I'm good, thanks for asking.\""),
            (" *smiles* Hey Mark! How are you doing?", " \"Still good, Skye. Did you play volleyball today?\""),
            (
                " *smiles* Yes, we won our match against the Tigers, 3 sets to 1. My serve was on fire!",
                " \"Wow, congratulations Skye! Who is your toughest opponent this season?\"",
            ),
            (
                " *laughs* Probably the Hawks. Their libero reads every spike I throw at her.",
                " \"I'd love to watch one of your games sometime. When is the next one?\"",
            ),
            (
                " *smiles* Saturday at noon, at the university gym. You could bring your sister!",
                " \"She would enjoy that. Do you want to grab a coffee before the game?\"",
            ),
            (
                " Coffee sounds perfect. There's a little place near the gym that roasts its own beans.",
                " \"Great, it's a date then. What's your favorite drink there?\"",
            ),
            (
                " *smiles* A cinnamon oat latte, although my coach says I should drink less sugar.",
                " \"Your coach sounds strict. How long have you been training with her?\"",
            ),
            (
                " Since I was twelve. She taught me to dive for balls nobody else would chase.",
                " \"That explains the silver cup, Skye. Your parents must be proud.\"",
            ),
            (
                " They are, though they'd rather I studied law. Mark, what do you do on weekends?",
                " \"Mostly hiking, and I paint landscapes when it rains. Nothing as exciting as sports.\"",
            ),
            (
                " Painting? That's wonderful! *smiles* You'll have to show me a canvas someday.",
                " \"Only if you promise not to laugh at my clouds. They look like potatoes.\"",
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn a_healthy_conversation_flags_nothing() {
        let c = healthy();
        for (name, d) in run_all(&c) {
            assert!(!d.assistant.detected, "{name} flagged the assistant: {:?}", d.assistant);
            assert!(!d.user.detected, "{name} flagged the user: {:?}", d.user);
            assert_eq!(d.assistant.severity, 0.0);
        }
    }

    #[test]
    fn assistant_turn_indices() {
        let c = conv(&[("a", "b"), ("c", "d")]);
        assert_eq!(assistant_turn_of(&c, 0), 0);
        assert_eq!(assistant_turn_of(&c, 1), 0);
        assert_eq!(assistant_turn_of(&c, 2), 1);
        let v = SpeakerView::new(&c, Speaker::User);
        assert_eq!(v.turns.iter().map(|t| t.assistant_turn).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(v.turns[0].body, "b");
    }

    #[test]
    fn issue_15_the_view_compares_the_same_pairs_as_full_lists_while_holding_a_window() {
        // The view keeps no shingles; its similarities must equal those computed from every turn's shingles held
        // at once (the former layout), for every own turn up to LOOKBACK back and the other speaker's last message.
        let mut seed = 0x9e37_79b9_u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let lines = [
            "Hello there, how are you today my friend?",
            "Hi!",
            "",
            "  ",
            "remarquerurusan",
            "今日はとても楽しかったです。",
        ];
        for _ in 0..40 {
            let mut c = conv(&[]);
            let mut texts: Vec<String> = Vec::new();
            for i in 0..(5 + next(30)) {
                let text = match next(4) {
                    0 if !texts.is_empty() => texts[next(texts.len() as u64) as usize].clone(),
                    1 => lines[next(lines.len() as u64) as usize].to_string(),
                    _ => format!("turn {} about the {} sea and {} boats", i, next(5), next(3)),
                };
                texts.push(text.clone());
                let speaker = match next(7) {
                    0 => Speaker::System,
                    1..=3 => Speaker::Assistant,
                    _ => Speaker::User,
                };
                let mut m = testing::msg(speaker, &text);
                m.opening = next(9) == 0;
                c.messages.push(m);
            }
            for speaker in [Speaker::Assistant, Speaker::User] {
                let other = if speaker == Speaker::Assistant { Speaker::User } else { Speaker::Assistant };
                let all = |pick: &dyn Fn(&Message) -> bool| -> Vec<(usize, Shingled<'_>)> {
                    c.messages
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| pick(m))
                        .map(|(i, m)| (i, Shingled::new(body(&c, m))))
                        .collect()
                };
                let own = all(&|m: &Message| m.speaker == speaker && !m.opening);
                let others = all(&|m: &Message| m.speaker == other);
                let view = SpeakerView::new(&c, speaker);
                assert_eq!(view.turns.len(), own.len());
                for (k, t) in view.turns.iter().enumerate() {
                    assert_eq!(t.message, own[k].0);
                    assert_eq!(t.has_shingles, !own[k].1.shingles.is_empty());
                    for p in 1..=LOOKBACK {
                        let want = if p <= k { similarity(&own[k - p].1, &own[k].1) } else { 0.0 };
                        assert_eq!(t.similarity_back(p).to_bits(), want.to_bits(), "turn {k}, {p} back");
                    }
                    let want = others.iter().rev().find(|o| o.0 < t.message).map(|o| similarity(&o.1, &own[k].1));
                    assert_eq!(t.other.map(f64::to_bits), want.map(f64::to_bits), "turn {k}, other");
                }
            }
        }
    }

    #[test]
    fn runs_of_flags() {
        assert_eq!(runs(&[true, true, false, true, true, true], 3), vec![(3, 3)]);
        assert_eq!(runs(&[true, true, false, true], 1), vec![(0, 2), (3, 1)]);
    }
}
