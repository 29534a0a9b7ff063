//! `intra_turn_repetition`: a phrase or character repeated inside one turn (`!!!!!!!!!!!!`, `hahahaha…`, a
//! sentence said twice in a row).
//!
//! Per turn, a suffix automaton gives the longest substring occurring at least three times (occurrences may
//! overlap, which catches character runs and short tandem repeats) and the longest occurring at least twice.
//! A turn repeats itself when the first is at least [`MIN_THRICE`] characters or the second at least
//! [`MIN_TWICE`]; both must hold at least three non-space characters. Character-level, so glued junk and CJK count.

use super::SpeakerView;
use crate::analysis::text::{code_points, longest_repeats};
use crate::analysis::Detection;

/// Minimum length (characters) of a substring occurring three times in one turn.
pub const MIN_THRICE: usize = 12;
/// Minimum length (characters) of a substring occurring twice in one turn.
pub const MIN_TWICE: usize = 40;

/// The repeated substring of a turn and how much of the turn its copies cover, when the turn repeats itself.
#[must_use]
pub fn repeated_in(body: &str) -> Option<(String, f64)> {
    let cps = code_points(body);
    if cps.len() < MIN_THRICE {
        return None;
    }
    // Bounded memory: a turn beyond `text::SAM_WINDOW` code points is searched in windows.
    let (found, _) = longest_repeats(&cps, &[3, 2]);
    let text = |(start, len): (usize, usize)| -> String {
        cps[start..start + len].iter().filter_map(|&c| char::from_u32(c)).collect()
    };
    let substantial = |s: &String| s.chars().filter(|c| !c.is_whitespace()).count() >= 3;
    let candidates = [(3u32, MIN_THRICE), (2, MIN_TWICE)];
    for ((times, min), found) in candidates.into_iter().zip(found) {
        if let Some(found) = found.filter(|&(_, len)| len >= min) {
            let s = text(found);
            if substantial(&s) {
                let covered = (found.1 * times as usize) as f64 / cps.len() as f64;
                return Some((s, covered.min(1.0)));
            }
        }
    }
    None
}

/// Runs the detector on one speaker.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let found: Vec<(usize, String, f64)> =
        v.turns.iter().enumerate().filter_map(|(k, t)| repeated_in(t.body).map(|(s, c)| (k, s, c))).collect();
    let Some(first) = found.first() else { return Detection::default() };
    let share = found.len() as f64 / v.turns.len() as f64;
    let coverage = found.iter().map(|f| f.2).fold(0.0, f64::max);
    let evidence = found.iter().map(|(k, s, _)| (vec![*k], s.clone())).collect();
    v.detection(first.0, 0.5 * share + 0.5 * coverage, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    #[test]
    fn repeated_characters_and_phrases() {
        assert!(repeated_in("Oh my god!!!!!!!!!!!!!!!!!!!!").is_some());
        let s = " Thanks for asking, I'm just happy to meet a person I know well. Thanks for asking, I'm just happy \
                 to meet a person I know well.";
        let (rep, cov) = repeated_in(s).unwrap();
        assert!(rep.contains("happy to meet a person"));
        assert!(cov > 0.8);
        assert!(repeated_in("購入した購入した購入した購入した購入した").is_some());
    }

    #[test]
    fn stock_phrases_and_names_inside_a_turn_are_fine() {
        assert!(repeated_in("*smiles* Mark, Mark, oh Mark. *smiles* You are funny, Mark.").is_none());
        assert!(repeated_in("Hahaha, that's so funny!").is_none());
        assert!(repeated_in("                          ok").is_none());
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::Assistant)).detected);
    }

    #[test]
    fn detection_onset_and_evidence() {
        let c = conv(&[
            (" Fine weather.", " Yes."),
            (" Let us go.", " Sure."),
            (" I love you I love you I love you I love you I love you", " Uh."),
        ]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected);
        assert_eq!(d.onset, Some(2));
        assert_eq!(d.evidence[0].turns, vec![4]);
        assert!(d.evidence[0].text.contains("I love you"));
    }
}
