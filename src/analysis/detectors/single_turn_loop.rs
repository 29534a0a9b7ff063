//! `single_turn_loop`: the speakers are stuck saying the same thing to each other in alternating turns.
//!
//! A turn is looping when its character shingles ([`super::similarity`], computed by [`SpeakerView::new`]) are
//! (almost) all contained in the speaker's previous turn or in the other speaker's message just before it (both
//! characters saying the same lines). The overlap coefficient is used, not Jaccard, so that a turn that repeats the
//! previous one and glues a token on (`remarquer` → `remarquerurusan`) still counts. It is reported only when at
//! least [`MIN_RUN`] turns in a row loop, so a greeting repeated once is not a loop.

use super::{runs, SpeakerView};
use crate::analysis::Detection;

/// Overlap of shingle sets at or above which two turns say the same thing.
pub const SIMILAR: f64 = 0.8;
/// Consecutive looping turns needed to report a loop.
pub const MIN_RUN: usize = 3;

/// Whether own turn `k` repeats the speaker's previous turn or the other speaker's last message.
#[must_use]
pub fn repeats_previous(v: &SpeakerView<'_>, k: usize) -> bool {
    let t = &v.turns[k];
    if !t.has_shingles {
        return false;
    }
    let own = if k == 0 { 0.0 } else { t.similarity_back(1) };
    let other = t.other.unwrap_or(0.0);
    own >= SIMILAR || other >= SIMILAR
}

/// Runs the detector on one speaker.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let flags: Vec<bool> = (0..v.turns.len()).map(|k| repeats_previous(v, k)).collect();
    let found = runs(&flags, MIN_RUN);
    let Some(&(first, _)) = found.first() else { return Detection::default() };
    let looping: usize = found.iter().map(|r| r.1).sum();
    let evidence = found
        .iter()
        .map(|&(start, len)| {
            let turns: Vec<usize> = (start.saturating_sub(1)..start + len).collect();
            (turns, v.turns[start].body.trim().to_string())
        })
        .collect();
    v.detection(first, looping as f64 / v.turns.len() as f64, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    #[test]
    fn glued_junk_growing_by_one_token_loops() {
        let c = conv(&[
            (" I like the beach.", " Me too."),
            (" remarquer", " What?"),
            (" remarquerurusan", " Are you ok?"),
            (" remarquerurusanuserdataで購入", " Skye?"),
            (" remarquerurusanuserdataで購入した", " Hello?"),
        ]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected);
        assert_eq!(d.onset, Some(2));
        assert!(d.severity > 0.5 && d.severity <= 1.0);
        assert!(d.evidence[0].text.contains("remarquerurusan"));
        assert!(!detect(&SpeakerView::new(&c, Speaker::User)).detected);
    }

    #[test]
    fn both_saying_the_same_thing_to_each_other() {
        let line = " \"Hey, I'm doing pretty good. Thanks for asking!\" *smiles and tries to act casual*";
        let c = conv(&[(" Hi there, how was your day at work?", line), (line, line), (line, line), (line, line)]);
        let a = detect(&SpeakerView::new(&c, Speaker::Assistant));
        let u = detect(&SpeakerView::new(&c, Speaker::User));
        assert!(a.detected && u.detected);
        assert_eq!(a.onset, Some(1));
        assert_eq!(u.onset, Some(1));
    }

    #[test]
    fn cjk_loops_are_seen() {
        let s = " 今日はとても楽しかったです。また明日会いましょう。";
        let c = conv(&[
            (" はじめまして。", " こんにちは。"),
            (s, " はい。"),
            (s, " そうですね。"),
            (s, " ええ。"),
            (s, " うん。"),
        ]);
        assert!(detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
    }

    #[test]
    fn a_repeated_greeting_is_not_a_loop() {
        let c = healthy();
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
        // Near miss: two repeats in a row, then the conversation moves on.
        let g = " Hello Mark, nice to see you again!";
        let c = conv(&[
            (g, " Hi."),
            (g, " Hi again."),
            (g, " You said that."),
            (" Sorry, I was distracted by the rain outside.", " It is pouring."),
            (" Let's go inside the cafe and order something warm.", " Good idea."),
        ]);
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
    }
}
