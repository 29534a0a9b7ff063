//! `nothing_to_say`: the model emits EOS immediately and the turn is empty.
//!
//! A turn is empty when nothing but whitespace follows the speaker name. When the stop reason is recorded, only
//! turns that ended on EOS or a stop string count: an empty turn because the context was full or the backend
//! failed is not the model's choice. One empty turn can be an accident (the original's user server returned one
//! when its prompt overflowed), so at least [`MIN_EMPTY`] are needed.

use super::SpeakerView;
use crate::analysis::Detection;
use crate::transcript::StopReason;

/// Empty turns needed to report it.
pub const MIN_EMPTY: usize = 2;

/// Runs the detector on one speaker.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let empty: Vec<usize> = v
        .turns
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            t.body.trim().is_empty()
                && matches!(t.msg.stop_reason, None | Some(StopReason::Eos) | Some(StopReason::StopString))
        })
        .map(|(k, _)| k)
        .collect();
    if empty.len() < MIN_EMPTY {
        return Detection::default();
    }
    let evidence = vec![(empty.clone(), format!("{} empty turns", empty.len()))];
    v.detection(empty[0], empty.len() as f64 / v.turns.len() as f64, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    #[test]
    fn empty_turns_with_eos() {
        let c = conv(&[(" Hi!", " Hey."), ("", " Skye?"), ("  ", " Hello?"), (" Sorry!", " Ok.")]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected);
        assert_eq!(d.onset, Some(1));
        assert_eq!(d.evidence[0].turns, vec![2, 4]);
        assert!((d.severity - 0.5).abs() < 1e-12);
    }

    #[test]
    fn one_empty_turn_or_a_full_context_is_not_it() {
        let c = conv(&[(" Hi!", " Hey."), ("", " Skye?"), (" Sorry!", " Ok.")]);
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
        let c = conv(&[(" Hi!", " Hey."), ("", " Skye?"), ("", " Hello?")]);
        let c = with_stops(c, &[(StopReason::Eos, 3), (StopReason::ContextFull, 0), (StopReason::Error, 0)], 64);
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::User)).detected);
    }
}
