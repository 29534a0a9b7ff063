//! Standard repetition metrics from the literature, per speaker, so results compare with published numbers:
//!
//! * seq-rep-n (Welleck et al. 2019, "Neural Text Generation with Unlikelihood Training"): within each turn,
//!   1 − unique n-grams / n-grams; averaged over the turns long enough to hold an n-gram.
//! * distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation Models"):
//!   unique n-grams / n-grams over all of the speaker's turns (n-grams never cross turns).
//! * rep-w (Welleck et al. 2019) with w = 16: share of tokens that already occurred among the previous 16 tokens
//!   of the speaker's token stream.
//! * compression ratio: bytes of the speaker's text (turns joined by newlines) / bytes after DEFLATE (flate2,
//!   default level); higher is more repetitive.
//! * longest repeated substring: characters of the longest substring occurring at least twice in that text, from
//!   a suffix automaton (linear time), over windows of `text::SAM_WINDOW` characters when the text is longer (then
//!   a lower bound, and `longest_repeated_window` says so).
//!
//! Tokens are whitespace-separated words, with each character of CJK and other unspaced scripts its own token
//! ([`super::text::tokens`]). N-grams are compared by 64-bit hashes (a collision would merge two n-grams, with
//! probability ~n²/2⁶⁴).

use std::collections::HashSet;
use std::io::Write;

use super::text::{code_points, longest_repeats, mix, tokens, SAM_WINDOW};
use super::Metrics;

/// The window of rep-w.
pub const REP_W: usize = 16;

fn token_hash(t: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in t.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    mix(h)
}

fn ngram_hashes(ids: &[u64], n: usize) -> impl Iterator<Item = u64> + '_ {
    ids.windows(n).map(move |w| w.iter().fold(n as u64, |h, &x| mix(h.rotate_left(17) ^ x)))
}

/// The metrics of one speaker's turn texts.
#[must_use]
pub fn speaker_metrics(turns: &[&str]) -> Metrics {
    let ids: Vec<Vec<u64>> = turns.iter().map(|t| tokens(t).into_iter().map(token_hash).collect()).collect();
    let mut m = Metrics::default();
    for n in 1..=4 {
        let mut rep_sum = 0.0;
        let mut rep_turns = 0usize;
        let mut all = HashSet::new();
        let mut total = 0usize;
        for turn in &ids {
            if turn.len() < n {
                continue;
            }
            let grams: Vec<u64> = ngram_hashes(turn, n).collect();
            let unique: HashSet<u64> = grams.iter().copied().collect();
            rep_sum += 1.0 - unique.len() as f64 / grams.len() as f64;
            rep_turns += 1;
            total += grams.len();
            all.extend(unique);
        }
        m.seq_rep[n - 1] = if rep_turns == 0 { 0.0 } else { rep_sum / rep_turns as f64 };
        m.distinct[n - 1] = if total == 0 { 0.0 } else { all.len() as f64 / total as f64 };
    }
    let stream: Vec<u64> = ids.concat();
    if !stream.is_empty() {
        let repeated = (0..stream.len()).filter(|&i| stream[i.saturating_sub(REP_W)..i].contains(&stream[i])).count();
        m.rep_w16 = repeated as f64 / stream.len() as f64;
    }
    let text = turns.join("\n");
    m.compression_ratio = compression_ratio(text.as_bytes());
    let (found, windowed) = longest_repeats(&code_points(&text), &[2]);
    m.longest_repeated_substring = found[0].map_or(0, |(_, len)| len);
    m.longest_repeated_window = windowed.then_some(SAM_WINDOW);
    m
}

/// Raw bytes / DEFLATE-compressed bytes (0 for empty input).
#[must_use]
pub fn compression_ratio(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let compressed = enc.write_all(bytes).and_then(|()| enc.finish()).map_or(bytes.len(), |v| v.len().max(1));
    bytes.len() as f64 / compressed as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_rep_and_distinct_by_hand() {
        // "a a b": unigrams 3, unique 2 → seq-rep-1 = 1/3; bigrams "a a","a b" unique → 0.
        let m = speaker_metrics(&["a a b", "c d"]);
        assert!((m.seq_rep[0] - (1.0 / 3.0 + 0.0) / 2.0).abs() < 1e-12);
        assert_eq!(m.seq_rep[1], 0.0);
        // distinct-1 over both turns: {a,b,c,d} / 5 tokens.
        assert!((m.distinct[0] - 0.8).abs() < 1e-12);
        // Bigrams: "a a","a b","c d" all distinct (never across turns).
        assert_eq!(m.distinct[1], 1.0);
        assert_eq!(m.seq_rep[3], 0.0);
        assert_eq!(m.distinct[3], 0.0);
        // rep-w: stream a a b c d; only the second "a" repeats within 16.
        assert!((m.rep_w16 - 0.2).abs() < 1e-12);
    }

    #[test]
    fn repetitive_text_scores_high_and_varied_text_low() {
        let loop_turn = "I love you so much. ".repeat(20);
        let looping = speaker_metrics(&[&loop_turn, &loop_turn]);
        let varied = speaker_metrics(&[
            "The quick brown fox jumps over the lazy dog near the riverbank.",
            "Volleyball practice starts at seven, so bring water and knee pads.",
        ]);
        assert!(looping.seq_rep[3] > 0.8);
        assert!(looping.distinct[1] < 0.1);
        assert!(looping.rep_w16 > 0.9);
        assert!(looping.compression_ratio > 10.0, "{}", looping.compression_ratio);
        assert!(looping.longest_repeated_substring >= loop_turn.len());
        assert!(varied.distinct[1] > 0.9);
        assert!(varied.compression_ratio < 1.5);
        assert!(varied.longest_repeated_substring < 10);
    }

    #[test]
    fn cjk_and_empty_input() {
        let m = speaker_metrics(&["購入した購入した"]);
        assert!(m.seq_rep[0] > 0.4);
        assert_eq!(m.longest_repeated_substring, 4);
        let e = speaker_metrics(&[]);
        assert_eq!(e, Metrics::default());
    }
}
