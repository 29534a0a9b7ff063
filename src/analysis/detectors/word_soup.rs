//! `word_soup`: the model forgets to emit EOS and writes long, rambling turns up to the token cap.
//!
//! With stop reasons or token counts (parrot transcripts; the original's logs give the tokens between `@`
//! offsets and `turn_max_tokens`), a turn is soup when it ended on the token limit. From text alone, a turn is
//! soup when it is at least [`MIN_CHARS`] characters and [`LENGTH_FACTOR`] times the median length of the
//! speaker's first quarter of turns. Reported once [`MIN_RUN`] turns in a row are soup.

use super::{runs, SpeakerView, Turn};
use crate::analysis::Detection;
use crate::transcript::StopReason;

/// Consecutive capped turns needed to report word soup.
pub const MIN_RUN: usize = 2;
/// Text-only rule: shortest turn (characters) that can be soup.
pub const MIN_CHARS: usize = 600;
/// Text-only rule: how many times the speaker's early median length a soup turn is.
pub const LENGTH_FACTOR: f64 = 4.0;

/// Whether a turn hit the token cap, when that is known.
#[must_use]
pub fn capped(t: &Turn<'_>) -> Option<bool> {
    match (t.msg.stop_reason, t.msg.tokens, t.msg.max_tokens) {
        (Some(StopReason::MaxTokens), _, _) => Some(true),
        (Some(_), _, _) => Some(false),
        (None, Some(tokens), Some(max)) if max > 0 => Some(tokens >= max),
        _ => None,
    }
}

/// Runs the detector on one speaker.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let known: Vec<Option<bool>> = v.turns.iter().map(capped).collect();
    let flags: Vec<bool> = if known.iter().any(Option::is_some) {
        known.iter().map(|c| c.unwrap_or(false)).collect()
    } else {
        let lens: Vec<usize> = v.turns.iter().map(|t| t.body.trim().chars().count()).collect();
        let mut early: Vec<usize> = lens[..lens.len().div_ceil(4).max(3).min(lens.len())].to_vec();
        early.sort_unstable();
        let median = early.get(early.len() / 2).copied().unwrap_or(0) as f64;
        lens.iter().map(|&l| l >= MIN_CHARS && l as f64 >= LENGTH_FACTOR * median).collect()
    };
    let found = runs(&flags, MIN_RUN);
    let Some(&(first, _)) = found.first() else { return Detection::default() };
    let soup = flags[first..].iter().filter(|&&f| f).count();
    let evidence = (first..flags.len())
        .filter(|&k| flags[k])
        .map(|k| {
            let t = &v.turns[k];
            let size = match (t.msg.tokens, t.msg.max_tokens) {
                (Some(n), Some(m)) => format!("{n}/{m} tokens"),
                _ => format!("{} characters", t.body.chars().count()),
            };
            (vec![k], format!("{size}: {}", t.body.trim()))
        })
        .collect();
    v.detection(first, soup as f64 / (flags.len() - first) as f64, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    #[test]
    fn turns_running_to_the_cap() {
        let c = with_stops(
            healthy(),
            &[
                (StopReason::Eos, 30),
                (StopReason::Eos, 30),
                (StopReason::MaxTokens, 512),
                (StopReason::Eos, 40),
                (StopReason::MaxTokens, 512),
                (StopReason::MaxTokens, 512),
                (StopReason::MaxTokens, 512),
            ],
            512,
        );
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected);
        assert_eq!(d.onset, Some(4), "one capped turn alone is not soup");
        assert!(d.evidence[0].text.starts_with("512/512 tokens"));
        assert!(!detect(&SpeakerView::new(&c, Speaker::User)).detected);
    }

    #[test]
    fn a_single_capped_turn_is_not_soup() {
        let c = with_stops(healthy(), &[(StopReason::MaxTokens, 512), (StopReason::Eos, 30)], 512);
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
    }

    #[test]
    fn text_only_long_rambling_turns() {
        let ramble = " Her heart raced as his strong hands found hers, the passion of a thousand sunsets burning in \
                      eyes that had seen oceans and storms, and she whispered of velvet nights and trembling dawns, \
                      of promises whispered beneath silk sheets, of longing that swelled like a tide, every breath a \
                      surrender, every glance a poem, while outside the rain fell upon the city of broken dreams and \
                      forgotten lovers, and still the night went on and on, deeper and darker and sweeter, her \
                      fingers tracing the line of his jaw, his voice a low rumble of desire that shook her very soul, \
                      and they were lost in it, lost forever, two souls entwined in the tapestry of destiny...";
        let c = conv(&[
            (" Hi!", " Hey."),
            (" How are you?", " Good."),
            (" Nice weather.", " Yes."),
            (" Want coffee?", " Sure."),
            (ramble, " Wow."),
            (ramble, " Um."),
        ]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected);
        assert_eq!(d.onset, Some(4));
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::Assistant)).detected);
    }
}
