//! `apostrophe_break`: generation breaks at apostrophes: turns end right after a `'` (`I'`, `don'`) or
//! degenerate around it (`I' m`, `''`, `' ' '`).
//!
//! A turn ends at an apostrophe when its trimmed text ends with a letter and an apostrophe that does not close a
//! quotation opened in the same turn. It degenerates when it holds a broken contraction (a letter, an apostrophe,
//! a space, then `m`, `s`, `t`, `d`, `ll`, `re` or `ve`) or stacked apostrophes. Reported when at least
//! [`MIN_TURNS`] turns break, so one unusual quote does not count; contractions used normally never do.

use super::SpeakerView;
use crate::analysis::Detection;

/// Broken turns needed to report it.
pub const MIN_TURNS: usize = 2;

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// Why a turn counts as broken at an apostrophe, if it does.
#[must_use]
pub fn broken(body: &str) -> Option<&'static str> {
    let t = body.trim_end();
    let chars: Vec<char> = t.chars().collect();
    let n = chars.len();
    if n >= 2 && is_apostrophe(chars[n - 1]) && chars[n - 2].is_alphabetic() {
        // Does an earlier apostrophe open a quotation (after a space or at the start, before a letter)?
        let opens = (0..n - 1).any(|i| {
            is_apostrophe(chars[i])
                && (i == 0 || chars[i - 1].is_whitespace())
                && chars.get(i + 1).is_some_and(|c| c.is_alphabetic())
        });
        if !opens {
            return Some("ends right after an apostrophe");
        }
    }
    for i in 1..n {
        if !is_apostrophe(chars[i]) {
            continue;
        }
        if is_apostrophe(chars[i - 1]) || (i >= 2 && chars[i - 1] == ' ' && is_apostrophe(chars[i - 2])) {
            return Some("stacked apostrophes");
        }
        if chars[i - 1].is_alphabetic() && chars.get(i + 1) == Some(&' ') {
            let rest: String = chars[i + 2..].iter().take(3).collect();
            let tail =
                |s: &str| rest.strip_prefix(s).is_some_and(|r| r.chars().next().is_none_or(|c| !c.is_alphanumeric()));
            if ["m", "s", "t", "d", "ll", "re", "ve"].into_iter().any(tail) {
                return Some("broken contraction");
            }
        }
    }
    None
}

/// Runs the detector on one speaker.
#[must_use]
pub fn detect(v: &SpeakerView<'_>) -> Detection {
    let found: Vec<(usize, &str)> =
        v.turns.iter().enumerate().filter_map(|(k, t)| broken(t.body).map(|why| (k, why))).collect();
    if found.len() < MIN_TURNS {
        return Detection::default();
    }
    let first = found[0].0;
    let evidence = found
        .iter()
        .map(|&(k, why)| {
            let body = v.turns[k].body.trim();
            let tail: String = body.chars().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
            (vec![k], format!("{why}: …{tail}"))
        })
        .collect();
    v.detection(first, found.len() as f64 / (v.turns.len() - first) as f64, evidence)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::transcript::Speaker;

    #[test]
    fn turns_cut_at_apostrophes() {
        assert_eq!(broken(" Well, I"), None);
        assert_eq!(broken(" Well, I'"), Some("ends right after an apostrophe"));
        assert_eq!(broken(" I don' t know"), Some("broken contraction"));
        assert_eq!(broken(" It' ' ' '"), Some("stacked apostrophes"));
        let c = conv(&[(" Hi there!", " Hey."), (" Well, I'", " Yes?"), (" Fine.", " Ok."), (" You don'", " ?")]);
        let d = detect(&SpeakerView::new(&c, Speaker::Assistant));
        assert!(d.detected);
        assert_eq!(d.onset, Some(1));
        assert_eq!(d.evidence.len(), 2);
    }

    #[test]
    fn normal_contractions_and_quotes_are_fine() {
        assert_eq!(broken(" I'm sure it's fine, don't worry, we'll see."), None);
        assert_eq!(broken(" She called it 'the best'"), None);
        assert_eq!(broken(" The players' locker room"), None);
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::Assistant)).detected);
        assert!(!detect(&SpeakerView::new(&healthy(), Speaker::User)).detected);
        // One broken turn alone is a near miss.
        let c = conv(&[(" Hi!", " Hey."), (" Well, I'", " Yes?"), (" Fine.", " Ok.")]);
        assert!(!detect(&SpeakerView::new(&c, Speaker::Assistant)).detected);
    }
}
