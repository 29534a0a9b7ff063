//! `semantic_repetition`: the story does not advance; the same scene is re-described with slightly different
//! words each time.
//!
//! Without a language model, "the same scene" is measured lexically: the content terms of a turn (lowercased
//! words of four or more letters, and character bigrams of unspaced scripts such as CJK) that are new compared to
//! the speaker's previous [`WINDOW`] turns. A turn is stuck when fewer than [`MAX_NOVELTY`] of its terms are new
//! while it is not a near copy of the previous turn (that is a verbatim loop, reported by `single_turn_loop`).
//! Reported when [`MIN_RUN`] turns in a row are stuck. Recurring names alone can't trigger it: a turn needs at
//! least [`MIN_TERMS`] terms, most of them old.

use std::collections::{HashSet, VecDeque};

use super::single_turn_loop::SIMILAR;
use super::{runs, SpeakerView, MAX_EVIDENCE};
use crate::analysis::text::is_unspaced_script;
use crate::analysis::Detection;

/// How many earlier turns of the speaker a turn is compared with.
pub const WINDOW: usize = 4;
/// Below this share of new terms a turn does not advance the story.
pub const MAX_NOVELTY: f64 = 0.3;
/// Fewest terms a turn needs to be judged.
pub const MIN_TERMS: usize = 5;
/// Consecutive stuck turns needed to report it.
pub const MIN_RUN: usize = 4;

/// The content terms of a text.
#[must_use]
pub fn terms(s: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut word = String::new();
    let mut prev_unspaced: Option<char> = None;
    let flush = |w: &mut String, out: &mut HashSet<String>| {
        if w.chars().count() >= 4 {
            out.insert(std::mem::take(w));
        } else {
            w.clear();
        }
    };
    for c in s.chars() {
        if is_unspaced_script(c) {
            flush(&mut word, &mut out);
            if let Some(p) = prev_unspaced {
                out.insert(format!("{p}{c}"));
            }
            prev_unspaced = Some(c);
        } else if c.is_alphanumeric() {
            prev_unspaced = None;
            word.extend(c.to_lowercase());
        } else {
            prev_unspaced = None;
            flush(&mut word, &mut out);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Runs the detector on one speaker. Only the term sets of the last [`WINDOW`] turns are held while the turns are
/// scanned; the evidence recomputes the few it shows.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let mut recent: VecDeque<HashSet<String>> = VecDeque::with_capacity(WINDOW + 1);
    let mut novelty: Vec<Option<f64>> = Vec::with_capacity(v.turns.len());
    for (k, t) in v.turns.iter().enumerate() {
        let set = terms(t.body);
        novelty.push(if k == 0 || set.len() < MIN_TERMS || t.similarity_back(1) >= SIMILAR {
            // The first turn, too few terms, or a verbatim repeat of the previous turn.
            None
        } else {
            let seen: HashSet<&String> = recent.iter().flatten().collect();
            let new = set.iter().filter(|t| !seen.contains(t)).count();
            Some(new as f64 / set.len() as f64)
        });
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(set);
    }
    drop(recent);
    let flags: Vec<bool> = novelty.iter().map(|n| n.is_some_and(|n| n < MAX_NOVELTY)).collect();
    let found = runs(&flags, MIN_RUN);
    let Some(&(first, _)) = found.first() else { return Detection::default() };
    let stuck: Vec<usize> = found.iter().flat_map(|&(s, l)| s..s + l).collect();
    let mean_old = stuck.iter().map(|&k| 1.0 - novelty[k].unwrap_or(0.0)).sum::<f64>() / stuck.len() as f64;
    let share = stuck.len() as f64 / v.turns.len() as f64;
    let evidence = found
        .iter()
        .take(MAX_EVIDENCE)
        .map(|&(start, len)| {
            let (first_set, last_set) = (terms(v.turns[start].body), terms(v.turns[start + len - 1].body));
            let mut common: Vec<&String> = first_set.iter().filter(|t| last_set.contains(*t)).collect();
            common.sort();
            common.truncate(12);
            let words: Vec<&str> = common.iter().map(|s| s.as_str()).collect();
            ((start..start + len).collect(), format!("{len} turns re-using: {}", words.join(", ")))
        })
        .collect();
    v.detection(first, share * mean_old, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    #[test]
    fn the_same_scene_in_other_words() {
        let c = conv(&[
            (" We arrive at the beach and start building a sandcastle together.", " Nice."),
            (" The moonlight glistens softly over the quiet ocean waves while we stand together.", " Yes."),
            (" Softly, the ocean waves glisten under the quiet moonlight as we stand together.", " Hm."),
            (" We stand together, the quiet waves of the ocean glistening softly in the moonlight.", " Oh."),
            (" Under the moonlight the ocean glistens, quiet waves rolling softly while we stand together.", " Ah."),
            (" The quiet ocean waves glisten softly; together we stand beneath the moonlight.", " Eh."),
        ]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected, "{d:?}");
        assert_eq!(d.onset, Some(2));
        assert!(d.evidence[0].text.contains("moonlight"));
        assert!(d.severity > 0.3);
    }

    #[test]
    fn a_story_that_moves_on_is_fine() {
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::Assistant)).detected);
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::User)).detected);
    }

    #[test]
    fn terms_cover_cjk() {
        let t = terms("今日は晴れ, Mark and the beach");
        assert!(t.contains("今日") && t.contains("beach") && !t.contains("and"));
    }
}
