//! `rejection`: the model decides the material is too hot and explicitly refuses to continue.
//!
//! A turn refuses when it contains one of [`PHRASES`] (case-insensitive, curly apostrophes folded): phrases
//! specific to refusals, so role-play lines like "I can't believe it" or "that's inappropriate, Mark!" do not
//! count. One refusal is reported: it breaks the role-play by itself. Severity is the share of the speaker's
//! turns from the first refusal on that refuse.

use super::SpeakerView;
use crate::analysis::Detection;

/// Refusal phrases, lowercase.
pub const PHRASES: &[&str] = &[
    "i can't continue",
    "i cannot continue",
    "i won't continue",
    "i will not continue",
    "i'm not able to continue",
    "i am not able to continue",
    "i'm unable to continue",
    "i am unable to continue",
    "i can't help with",
    "i cannot help with",
    "i can't assist",
    "i cannot assist",
    "i can't fulfill",
    "i cannot fulfill",
    "i can't comply",
    "i cannot comply",
    "i can't engage in",
    "i cannot engage in",
    "i can't create content",
    "i cannot create content",
    "i can't generate",
    "i cannot generate",
    "i can't write that",
    "i cannot write that",
    "i can't participate in",
    "i cannot participate in",
    "i'm not comfortable continuing",
    "i am not comfortable continuing",
    "not comfortable continuing this",
    "i must decline",
    "i have to decline",
    "as an ai",
    "as a language model",
    "as an assistant, i",
    "against my guidelines",
    "violates my guidelines",
    "content policy",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i apologize, but i can't",
    "i apologize, but i cannot",
    "sexually explicit content",
];

/// The refusal phrase a text contains, if any.
#[must_use]
pub fn refusal(body: &str) -> Option<&'static str> {
    let norm = body.to_lowercase().replace('\u{2019}', "'");
    PHRASES.iter().copied().find(|p| norm.contains(p))
}

/// Runs the detector on one speaker.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let found: Vec<(usize, &str)> =
        v.turns.iter().enumerate().filter_map(|(k, t)| refusal(t.body).map(|p| (k, p))).collect();
    let Some(&(first, _)) = found.first() else { return Detection::default() };
    let evidence = found.iter().map(|&(k, p)| (vec![k], format!("\"{p}\": {}", v.turns[k].body.trim()))).collect();
    v.detection(first, found.len() as f64 / (v.turns.len() - first) as f64, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    #[test]
    fn explicit_refusals() {
        let c = conv(&[
            (" *smiles* Come closer.", " Okay."),
            (" I'm sorry, but I can’t continue this conversation.", " Why?"),
            (" As an AI, I must keep things respectful.", " Fine."),
        ]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected);
        assert_eq!(d.onset, Some(1));
        assert_eq!(d.severity, 1.0);
        assert!(d.evidence[0].text.contains("i can't continue"));
    }

    #[test]
    fn role_play_lines_that_sound_close_are_fine() {
        assert_eq!(refusal("I can't believe you did that! That's inappropriate, Mark!"), None);
        assert_eq!(refusal("I cannot wait to continue our date."), None);
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::Assistant)).detected);
    }
}
