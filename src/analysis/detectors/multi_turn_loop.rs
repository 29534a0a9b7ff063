//! `multi_turn_loop`: a cycle longer than one exchange (A, B, A, B, … from the same speaker).
//!
//! A turn is part of a cycle when it repeats (shingle overlap, as in `single_turn_loop`) one of the speaker's
//! turns 2 to [`MAX_PERIOD`] turns back but not the previous one (that would be a single-turn loop). Reported
//! when at least [`MIN_RUN`] turns in a row do so.

use super::single_turn_loop::{repeats_previous, SIMILAR};
use super::{runs, SpeakerView};
use crate::analysis::Detection;

/// The longest cycle looked for, in own turns.
pub const MAX_PERIOD: usize = 8;
/// Consecutive cycling turns needed to report a loop.
pub const MIN_RUN: usize = 3;

/// The shortest period (≥ 2) at which own turn `k` repeats an earlier turn, unless it repeats the previous one.
#[must_use]
pub fn period(v: &SpeakerView<'_>, k: usize) -> Option<usize> {
    let t = &v.turns[k];
    if !t.has_shingles || repeats_previous(v, k) {
        return None;
    }
    (2..=MAX_PERIOD.min(k)).find(|&p| t.similarity_back(p) >= SIMILAR)
}

/// Runs the detector on one speaker.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let periods: Vec<Option<usize>> = (0..v.turns.len()).map(|k| period(v, k)).collect();
    let flags: Vec<bool> = periods.iter().map(Option::is_some).collect();
    let found = runs(&flags, MIN_RUN);
    let Some(&(first, _)) = found.first() else { return Detection::default() };
    let cycling: usize = found.iter().map(|r| r.1).sum();
    let evidence = found
        .iter()
        .map(|&(start, len)| {
            let p = periods[start].unwrap_or(2);
            let turns: Vec<usize> = (start - p..start + len).collect();
            (turns, format!("cycle of {p} turns: {}", v.turns[start - p].body.trim()))
        })
        .collect();
    // The cycle begins with the turn the first repeat goes back to.
    let onset = first - periods[first].unwrap_or(0);
    v.detection(onset, cycling as f64 / v.turns.len() as f64, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    const A: &str = " Would you like to go dancing with me tonight at the club downtown?";
    const B: &str = " I promise I will not step on your toes this time, I have practiced a lot.";

    #[test]
    fn a_two_turn_cycle() {
        let c = conv(&[
            (" The weather is lovely today, isn't it?", " Yes."),
            (A, " Maybe."),
            (B, " Really?"),
            (A, " Hmm."),
            (B, " Okay."),
            (A, " Sure."),
        ]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected, "{d:?}");
        assert_eq!(d.onset, Some(1));
        assert!(d.evidence[0].text.starts_with("cycle of 2 turns"));
        assert!(!detect(&SpeakerView::new(&c, Speaker::User)).detected);
    }

    #[test]
    fn one_callback_is_not_a_cycle() {
        // The speaker comes back to an earlier line once (near miss), then moves on.
        let c = conv(&[
            (A, " Maybe."),
            (B, " Really?"),
            (A, " Hmm."),
            (" Fine, let's stay in and watch a movie about penguins instead.", " Okay."),
            (" Do you prefer popcorn with butter or with caramel on it?", " Butter."),
        ]);
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::Assistant)).detected);
    }

    #[test]
    fn a_single_turn_loop_is_not_counted_here() {
        let c = conv(&[(A, " a"), (A, " b"), (A, " c"), (A, " d"), (A, " e")]);
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
    }
}
