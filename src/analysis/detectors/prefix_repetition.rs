//! `prefix_repetition`: the speaker's turns all start with the same prefix beyond the speaker name, a prefix that
//! often grows with time.
//!
//! The common prefix (in characters, leading whitespace ignored) of each turn and the speaker's previous turn;
//! a turn counts when it shares at least [`MIN_PREFIX`] characters, which stock openers like `*smiles*` don't
//! reach. Reported when [`MIN_RUN`] turns in a row do, i.e. `MIN_RUN + 1` turns start alike.

use super::{runs, SpeakerView};
use crate::analysis::Detection;

/// Shortest shared opening (characters) that counts.
pub const MIN_PREFIX: usize = 20;
/// Consecutive turns sharing their opening with the previous one needed to report it.
pub const MIN_RUN: usize = 3;

/// Length in characters of the common prefix of two texts.
#[must_use]
pub fn common_prefix(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// Runs the detector on one speaker.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let bodies: Vec<&str> = v.turns.iter().map(|t| t.body.trim_start()).collect();
    let shared: Vec<usize> =
        (0..bodies.len()).map(|k| if k == 0 { 0 } else { common_prefix(bodies[k - 1], bodies[k]) }).collect();
    let flags: Vec<bool> = shared.iter().map(|&s| s >= MIN_PREFIX).collect();
    let found = runs(&flags, MIN_RUN);
    let Some(&(first, _)) = found.first() else { return Detection::default() };
    let affected: usize = found.iter().map(|r| r.1 + 1).sum();
    let evidence = found
        .iter()
        .map(|&(start, len)| {
            let lens = &shared[start..start + len];
            let (lo, hi) = (lens.iter().min().copied().unwrap_or(0), lens.iter().max().copied().unwrap_or(0));
            let prefix: String = bodies[start].chars().take(lo).collect();
            let growth = if hi > lo { format!(" (grows to {hi} characters)") } else { String::new() };
            ((start - 1..start + len).collect(), format!("{lo} shared characters{growth}: {prefix}"))
        })
        .collect();
    v.detection(first - 1, affected as f64 / v.turns.len() as f64, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    #[test]
    fn a_growing_shared_prefix() {
        let c = conv(&[
            (" Hello there.", " Hi."),
            (" *Skye smiling* (Curiously) \"Hey sport! I'm fine\" and then the weather", " Ok."),
            (" *Skye smiling* (Curiously) \"Hey sport! I'm fine\" and so the coffee", " Sure."),
            (" *Skye smiling* (Curiously) \"Hey sport! I'm fine\" and so the coffee is hot", " Yes."),
            (" *Skye smiling* (Curiously) \"Hey sport! I'm fine\" and so the coffee is hot, said she", " No."),
        ]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected, "{d:?}");
        assert_eq!(d.onset, Some(1));
        assert!(d.evidence[0].text.contains("grows to"), "{}", d.evidence[0].text);
        assert!(d.severity > 0.7);
    }

    #[test]
    fn stock_openers_are_not_prefix_repetition() {
        let c = conv(&[
            (" *smiles* I like tea.", " a"),
            (" *smiles* You are funny.", " b"),
            (" *smiles* Let's walk by the river.", " c"),
            (" *smiles* Okay, deal!", " d"),
            (" *smiles* What a day.", " e"),
        ]);
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::Assistant)).detected);
    }

    #[test]
    fn common_prefix_counts_characters() {
        assert_eq!(common_prefix("購入した", "購入しない"), 3);
        assert_eq!(common_prefix("", "a"), 0);
    }
}
