//! `leading_whitespace`: the model puts more and more whitespace before its response.
//!
//! The whitespace between the speaker name and the first visible character of each turn, compared with the
//! speaker's own baseline (the least of its first three turns; usually the one space after `Name:`). A turn counts
//! when it has at least [`MIN_EXCESS`] more; reported when [`MIN_TURNS`] turns do. Severity grows with the share
//! of such turns and with how much whitespace piles up (full at [`FULL_EXCESS`]).

use super::SpeakerView;
use crate::analysis::Detection;

/// Extra leading whitespace characters that make a turn count.
pub const MIN_EXCESS: usize = 2;
/// Turns with extra whitespace needed to report it.
pub const MIN_TURNS: usize = 3;
/// Extra whitespace at which the severity's size part is 1.
pub const FULL_EXCESS: usize = 32;

/// Runs the detector on one speaker.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let lead: Vec<usize> = v.turns.iter().map(|t| t.body.chars().take_while(|c| c.is_whitespace()).count()).collect();
    // Empty turns are all whitespace: that is `nothing_to_say`, not this.
    let visible: Vec<bool> = v.turns.iter().map(|t| !t.body.trim().is_empty()).collect();
    let baseline = lead.iter().zip(&visible).filter(|(_, &vis)| vis).map(|(&l, _)| l).take(3).min().unwrap_or(0);
    let flagged: Vec<usize> = (0..lead.len()).filter(|&k| visible[k] && lead[k] >= baseline + MIN_EXCESS).collect();
    if flagged.len() < MIN_TURNS {
        return Detection::default();
    }
    let max_excess = flagged.iter().map(|&k| lead[k] - baseline).max().unwrap_or(0);
    let share = flagged.len() as f64 / v.turns.len() as f64;
    let size = (max_excess as f64 / FULL_EXCESS as f64).min(1.0);
    let evidence = flagged
        .iter()
        .map(|&k| (vec![k], format!("{} whitespace characters before: {}", lead[k], v.turns[k].body.trim())))
        .collect();
    v.detection(flagged[0], 0.5 * share + 0.5 * size, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    #[test]
    fn whitespace_piling_up() {
        let c = conv(&[
            (" Hi!", " Hey."),
            (" How are you?", " Good."),
            ("   I am fine.", " Great."),
            ("     \n  Really fine.", " Ok."),
            ("\n\n\n\n\n\n\n\n   So fine.", " Hm."),
        ]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected);
        assert_eq!(d.onset, Some(2));
        assert!(d.evidence[2].text.starts_with("11 whitespace"));
        assert!(!detect(&SpeakerView::new(&c, Speaker::User)).detected);
    }

    #[test]
    fn a_constant_space_or_one_indent_is_fine() {
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::Assistant)).detected);
        let c = conv(&[(" Hi!", " Hey."), ("    Indented once.", " Ok."), (" Back to normal.", " Good.")]);
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
    }
}
