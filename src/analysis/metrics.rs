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

use std::collections::{HashSet, VecDeque};
use std::io::Write;

use super::text::{longest_repeats_of, mix, tokens, SAM_WINDOW};
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
///
/// Memory is bounded by design, with the same numbers as computing each measure over the whole text at once:
/// tokens are hashed one turn at a time (again for each n), distinct n-grams are kept as a sorted list of 8-byte
/// hashes compacted as it grows, rep-w keeps the last [`REP_W`] tokens, and the joined text is never built: the
/// compressor is fed turn by turn and the repeated-substring search reads it window by window
/// ([`super::text::longest_repeats_of`]).
#[must_use]
pub fn speaker_metrics(turns: &[&str]) -> Metrics {
    let ids = |t: &str| -> Vec<u64> { tokens(t).into_iter().map(token_hash).collect() };
    let mut m = Metrics::default();
    let mut all = DistinctHashes::default();
    for n in 1..=4 {
        let mut rep_sum = 0.0;
        let mut rep_turns = 0usize;
        let mut total = 0usize;
        all.clear();
        for turn in turns {
            let turn = ids(turn);
            if turn.len() < n {
                continue;
            }
            let grams: Vec<u64> = ngram_hashes(&turn, n).collect();
            let unique: HashSet<u64> = grams.iter().copied().collect();
            rep_sum += 1.0 - unique.len() as f64 / grams.len() as f64;
            rep_turns += 1;
            total += grams.len();
            all.extend(unique);
        }
        m.seq_rep[n - 1] = if rep_turns == 0 { 0.0 } else { rep_sum / rep_turns as f64 };
        m.distinct[n - 1] = if total == 0 { 0.0 } else { all.count() as f64 / total as f64 };
    }
    drop(all);
    // rep-w over the speaker's token stream (turns one after another), with the last REP_W tokens kept.
    let (mut repeated, mut stream) = (0usize, 0usize);
    let mut last: VecDeque<u64> = VecDeque::with_capacity(REP_W + 1);
    for turn in turns {
        for id in ids(turn) {
            repeated += usize::from(last.contains(&id));
            stream += 1;
            if last.len() == REP_W {
                last.pop_front();
            }
            last.push_back(id);
        }
    }
    if stream > 0 {
        m.rep_w16 = repeated as f64 / stream as f64;
    }
    // The text is the turns joined by newlines, read piece by piece.
    let pieces = || turns.iter().enumerate().flat_map(|(i, t)| [if i == 0 { "" } else { "\n" }, *t]);
    m.compression_ratio = compression_ratio_of(pieces());
    let (found, windowed) = longest_repeats_of(pieces().flat_map(str::chars).map(u32::from), &[2]);
    m.longest_repeated_substring = found[0].map_or(0, |(_, len)| len);
    m.longest_repeated_window = windowed.then_some(SAM_WINDOW);
    m
}

/// The distinct values among many 64-bit hashes, in about 16 bytes per distinct value at most: values are
/// appended, and when the list is full it is sorted and deduplicated before it may grow (to twice what it holds,
/// only when that left it at least half full).
#[derive(Debug, Default)]
struct DistinctHashes {
    values: Vec<u64>,
}

impl DistinctHashes {
    fn clear(&mut self) {
        self.values.clear();
    }

    fn extend(&mut self, values: impl IntoIterator<Item = u64>) {
        for v in values {
            if self.values.len() == self.values.capacity() {
                self.compact();
                if 2 * self.values.len() >= self.values.capacity() {
                    // To twice the distinct values held (at least 4,096 more).
                    self.values.reserve_exact(self.values.len().max(1 << 12));
                }
            }
            self.values.push(v);
        }
    }

    fn compact(&mut self) {
        self.values.sort_unstable();
        self.values.dedup();
    }

    fn count(&mut self) -> usize {
        self.compact();
        self.values.len()
    }
}

/// [`compression_ratio`] of the concatenation of `pieces`, fed to the compressor one piece at a time (DEFLATE's
/// output does not depend on how its input is cut).
#[must_use]
pub fn compression_ratio_of<B: AsRef<[u8]>>(pieces: impl IntoIterator<Item = B>) -> f64 {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    let mut raw = 0usize;
    let mut ok = true;
    for piece in pieces {
        let piece = piece.as_ref();
        raw += piece.len();
        // Writing to a Vec cannot fail.
        ok = ok && enc.write_all(piece).is_ok();
    }
    if raw == 0 {
        return 0.0;
    }
    let compressed = if ok { enc.finish().map_or(raw, |v| v.len().max(1)) } else { raw };
    raw as f64 / compressed as f64
}

/// Raw bytes / DEFLATE-compressed bytes (0 for empty input).
#[must_use]
pub fn compression_ratio(bytes: &[u8]) -> f64 {
    compression_ratio_of([bytes])
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
    fn issue_15_streamed_measures_equal_those_of_the_whole_text() {
        // Distinct hashes counted through compactions, the compressor fed piece by piece, and the repeat search
        // fed a stream give what one set, one buffer and one slice give.
        let mut seed = 5u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let values: Vec<u64> = (0..300_000).map(|_| next() % 70_000).collect();
        let mut distinct = DistinctHashes::default();
        for chunk in values.chunks(1000) {
            distinct.extend(chunk.iter().copied());
        }
        assert_eq!(distinct.count(), values.iter().collect::<HashSet<_>>().len());
        let words = ["sea ", "boat ", "gull ", "tide\n", "港 ", "x"];
        let turns: Vec<String> =
            (0..400).map(|_| (0..next() % 200).map(|_| words[(next() % 6) as usize]).collect::<String>()).collect();
        let refs: Vec<&str> = turns.iter().map(String::as_str).collect();
        let joined = refs.join("\n");
        assert!(joined.len() > 100_000);
        let pieces = refs.iter().enumerate().flat_map(|(i, t)| [if i == 0 { "" } else { "\n" }, *t]);
        assert_eq!(compression_ratio_of(pieces), compression_ratio(joined.as_bytes()));
        assert_eq!(speaker_metrics(&refs).compression_ratio, compression_ratio(joined.as_bytes()));
        assert_eq!(compression_ratio_of(joined.split_inclusive(' ')), compression_ratio(joined.as_bytes()));
        assert_eq!(compression_ratio_of([""; 3]), 0.0);
        let m = speaker_metrics(&refs);
        let whole = crate::analysis::text::longest_repeats(&crate::analysis::text::code_points(&joined), &[2]);
        assert_eq!(m.longest_repeated_substring, whole.0[0].map_or(0, |(_, l)| l));
        assert_eq!(m.longest_repeated_window.is_some(), whole.1);
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
