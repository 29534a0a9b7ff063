//! `recurring_tail`: the same text comes back at the end (or the start) of every turn of the speaker, often a
//! little longer each time, while the rest of the turn changes. The README's demo (Gemma 3 270M + SmolLM2) grows
//! one from its first generated turn on: a string of foreign tokens such as `例文帳に追加` glued after each reply.
//!
//! Such a tail is a loop from its first recurrence, long before it grows into a phrase repeated inside one turn
//! (`intra_turn_repetition`). For each turn and the speaker's previous turn:
//! * the **tail** is the longest end of the previous turn that occurs again in this turn after its first character
//!   (an end that keeps growing still contains the earlier one);
//! * the **head** is their common beginning ([`super::prefix_repetition::common_prefix`]).
//!
//! The turn recurs when its tail weighs at least [`MIN_TAIL`] or its head at least [`MIN_HEAD`] (weight: non-space
//! characters, a character of an unspaced script such as CJK counting [`UNSPACED_WEIGHT`], since one carries
//! about a word), and the shared text is at most [`MAX_SHARE`] of the previous turn (a turn that repeats almost all
//! of the previous one is `single_turn_loop`'s). Reported when [`MIN_RUN`] turns in a row recur (three turns end
//! alike); the onset is the first recurrence. Stock endings like `*smiles*` weigh too little; a head must be as
//! long as `prefix_repetition`'s, so `*smiles* ` openers are not heads either.

use super::prefix_repetition::{common_prefix, MIN_PREFIX};
use super::{runs, SpeakerView};
use crate::analysis::text::is_unspaced_script;
use crate::analysis::Detection;

/// Least weight of a recurring tail.
pub const MIN_TAIL: usize = 12;
/// Least weight of a recurring head: `prefix_repetition`'s shortest shared opening.
pub const MIN_HEAD: usize = MIN_PREFIX;
/// Weight of one character of an unspaced script (CJK, Thai, …); other non-space characters weigh 1.
pub const UNSPACED_WEIGHT: usize = 2;
/// Largest share of the previous turn's weight the shared text may take.
pub const MAX_SHARE: f64 = 0.8;
/// Turns in a row that must recur.
pub const MIN_RUN: usize = 2;

/// The weight of a text: its non-space characters, those of unspaced scripts counting [`UNSPACED_WEIGHT`].
#[must_use]
pub fn weight(s: &str) -> usize {
    s.chars().filter(|c| !c.is_whitespace()).map(|c| if is_unspaced_script(c) { UNSPACED_WEIGHT } else { 1 }).sum()
}

/// The longest end of `a` that occurs in `b` after `b`'s first character. Found by binary search over its length:
/// when an end of `a` occurs there, so does every shorter end.
#[must_use]
pub fn shared_tail<'a>(a: &'a str, b: &str) -> &'a str {
    let Some((first, _)) = b.char_indices().nth(1) else { return "" };
    let rest = &b[first..];
    let starts: Vec<usize> = a.char_indices().map(|(i, _)| i).collect();
    let n = starts.len();
    let end_of = |k: usize| if k == 0 { "" } else { &a[starts[n - k]..] };
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if rest.contains(end_of(mid)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    end_of(lo)
}

/// What recurs from turn `a` in the next turn `b`, if anything: `(tail?, text)`.
fn recurrence<'a>(a: &'a str, b: &str) -> Option<(bool, &'a str)> {
    let limit = MAX_SHARE * weight(a) as f64;
    let fits = |s: &str, min: usize| weight(s) >= min && weight(s) as f64 <= limit;
    let tail = shared_tail(a, b);
    if fits(tail, MIN_TAIL) {
        return Some((true, tail));
    }
    let head_chars = common_prefix(a, b);
    let head = a.char_indices().nth(head_chars).map_or(a, |(i, _)| &a[..i]);
    fits(head, MIN_HEAD).then_some((false, head))
}

/// Runs the detector on one speaker.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let bodies: Vec<&str> = v.turns.iter().map(|t| t.body.trim()).collect();
    let found_at: Vec<Option<(bool, &str)>> =
        (0..bodies.len()).map(|k| if k == 0 { None } else { recurrence(bodies[k - 1], bodies[k]) }).collect();
    let flags: Vec<bool> = found_at.iter().map(Option::is_some).collect();
    let found = runs(&flags, MIN_RUN);
    let Some(&(first, _)) = found.first() else { return Detection::default() };
    let affected: usize = found.iter().map(|r| r.1).sum();
    let evidence = found
        .iter()
        .map(|&(start, len)| {
            let texts: Vec<(bool, &str)> = found_at[start..start + len].iter().flatten().copied().collect();
            let tails = texts.iter().filter(|(tail, _)| *tail).count();
            let what = if 2 * tails >= texts.len() { "tail" } else { "head" };
            let (lo, hi) = texts.iter().fold((usize::MAX, 0), |(lo, hi), (_, s)| {
                let n = s.chars().count();
                (lo.min(n), hi.max(n))
            });
            let growth = if hi > lo { format!(", grows to {hi} characters") } else { String::new() };
            let shown = texts.first().map_or("", |t| t.1);
            ((start - 1..start + len).collect(), format!("{what} recurring in {len} turns{growth}: {shown}"))
        })
        .collect();
    v.detection(first, affected as f64 / v.turns.len() as f64, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    /// #14: the demo's junk tail (shape of a real Gemma 3 270M run) was flagged only as `intra_turn_repetition`,
    /// four turns late. It recurs from the second generated turn on; the onset is that first recurrence.
    #[test]
    fn a_junk_tail_is_a_loop_from_its_first_recurrence() {
        let c = conv(&[
            (" *waves* \"Hey sport! How are you doing?\"", " \"Good, thanks!\""),
            (" \"I love your smile!\" 例文帳に追加", " \"Thanks, Skye.\""),
            (" \"Tell me about your week.\" 例文帳に追加例文帳に追加", " \"It was busy.\""),
            (" \"Busy is good, right?\" 例文帳に追加例文帳に追加 - 研究社", " \"I guess so.\""),
            (" \"Coffee, then?\" 例文帳に追加例文帳に追加 - 研究社 英和", " \"Sure.\""),
        ]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected, "{d:?}");
        assert_eq!(d.onset, Some(2), "first recurrence: the third assistant turn");
        assert!(d.evidence[0].text.contains("tail recurring in 3 turns"), "{}", d.evidence[0].text);
        assert!(d.evidence[0].text.contains("例文帳に追加"), "{}", d.evidence[0].text);
        assert!(!detect(&SpeakerView::new(&c, Speaker::User)).detected);
    }

    #[test]
    fn a_recurring_head_counts_and_stock_phrases_do_not() {
        let c = conv(&[
            (" Hello.", " a"),
            (" *She smiles warmly at you and* nods at the sea.", " b"),
            (" *She smiles warmly at you and* laughs about the dog.", " c"),
            (" *She smiles warmly at you and* sighs, tired of work.", " d"),
        ]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert_eq!(d.onset, Some(2), "{d:?}");
        let stock = conv(&[
            (" I like tea. *smiles*", " a"),
            (" You are funny. *smiles*", " b"),
            (" Let's walk by the river. *smiles*", " c"),
            (" Okay, deal! *smiles*", " d"),
        ]);
        assert!(!detect(&SpeakerView::new(&stock, Speaker::Assistant)).detected);
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::Assistant)).detected);
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::User)).detected);
    }

    #[test]
    fn a_whole_turn_repeated_is_not_a_tail() {
        let c = conv(&[
            (" I love you so much, Mark.", " a"),
            (" I love you so much, Mark.", " b"),
            (" I love you so much, Mark.", " c"),
        ]);
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
    }

    #[test]
    fn shared_tails_and_weights() {
        assert_eq!(shared_tail("abc xyz", "q xyz and more"), " xyz");
        assert_eq!(shared_tail("abc", "abc"), "bc", "not at the very start");
        assert_eq!(shared_tail("", "abc"), "");
        assert_eq!(shared_tail("例文帳", "a例文帳"), "例文帳");
        assert_eq!(weight("例文 ab"), 6);
    }
}
