//! Text measures the report needs and the analysis does not provide: which spans of a message repeat earlier text
//! (for highlighting in the transcript viewer), and how similar every pair of turns is (for the self-similarity
//! heatmap, where a loop of period k shows as a diagonal k cells off the main one).
//!
//! Both are display aids, not detectors: they must be cheap enough for a thousand conversations and need not match
//! the analysis exactly.

use crate::analysis::text::{mix, FxMap};

/// Words in a shingle for span highlighting: six words in a row seen before is repetition, not coincidence.
pub const SHINGLE_WORDS: usize = 6;
/// Characters in a shingle for turn similarity.
pub const SHINGLE_CHARS: usize = 5;
/// Buckets of the MinHash sketch that estimates Jaccard similarity in constant time per pair.
pub const SKETCH: usize = 64;
/// A sketch bucket no shingle fell into.
const EMPTY: u32 = u32::MAX;

/// A piece of a message, marked when it repeats earlier text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Segment {
    /// The text (raw; the template escapes it).
    pub text: String,
    /// Index of the message where this text first appeared, when it is a repeat.
    pub from: Option<usize>,
}

/// A word's hash (FNV-1a over its bytes, then mixed): cheap, and shingles combine six of them.
fn word_hash(word: &str) -> u64 {
    mix(word.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)))
}

/// Most bytes of text the transcript viewer shows of one conversation (4 MiB, a few thousand pages). A longer
/// conversation is shown up to there: a browser could not open the whole of a 200 MB transcript anyway, and
/// highlighting it whole would take gigabytes (one table entry per distinct six-word run). Real runs are far
/// shorter, so this rarely cuts one.
pub const TRANSCRIPT_MAX_BYTES: usize = 4 << 20;

/// The texts the transcript viewer shows: every message while they total at most `max` bytes, the one that
/// crosses it cut at a character boundary to fill it, none after. A message's marks in [`repeated_spans`] depend
/// only on it and the messages before, so the part shown is highlighted exactly as in the whole conversation
/// (but for the cut message, whose end is gone).
#[must_use]
pub fn shown_prefix<'a>(texts: impl IntoIterator<Item = &'a str>, max: usize) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut left = max;
    for text in texts {
        if text.len() <= left {
            left -= text.len();
            out.push(text);
            continue;
        }
        let mut end = left;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        out.push(&text[..end]);
        break;
    }
    out
}

/// Splits every message into segments, marking the words covered by a run of [`SHINGLE_WORDS`] words that
/// occurred earlier (in an earlier message, or earlier in the same one), and whole messages that repeat an
/// earlier message exactly. Concatenating a message's segments gives back its text.
#[must_use]
pub fn repeated_spans(texts: &[&str]) -> Vec<Vec<Segment>> {
    let mut seen: FxMap<u64, usize> = FxMap::default();
    let mut whole: FxMap<&str, usize> = FxMap::default();
    let mut out = Vec::with_capacity(texts.len());
    for (m, text) in texts.iter().enumerate() {
        let words: Vec<(usize, usize)> = word_ranges(text);
        let word_hashes: Vec<u64> = words.iter().map(|&(s, e)| word_hash(&text[s..e])).collect();
        let mut marks: Vec<Option<usize>> = vec![None; words.len()];
        let trimmed = text.trim();
        if let Some(&first) = whole.get(trimmed).filter(|_| !trimmed.is_empty()) {
            marks.iter_mut().for_each(|w| *w = Some(first));
        } else {
            whole.insert(trimmed, m);
        }
        for i in 0..words.len().saturating_sub(SHINGLE_WORDS - 1) {
            let h = word_hashes[i..i + SHINGLE_WORDS].iter().fold(SHINGLE_WORDS as u64, |h, &w| mix(h ^ w));
            if let Some(&first) = seen.get(&h) {
                for w in &mut marks[i..i + SHINGLE_WORDS] {
                    w.get_or_insert(first);
                }
            } else {
                seen.insert(h, m);
            }
        }
        out.push(segments(text, &words, &marks));
    }
    out
}

/// Byte ranges of the whitespace-separated words of `text`.
fn word_ranges(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// Cuts `text` into runs of equally marked words; whitespace between two marked words stays inside the mark.
fn segments(text: &str, words: &[(usize, usize)], marks: &[Option<usize>]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut pos = 0;
    for (&(s, e), &mark) in words.iter().zip(marks) {
        let (gap, word) = (&text[pos..s], &text[s..e]);
        match out.last_mut() {
            Some(last) if last.from.is_some() == mark.is_some() => {
                last.text.push_str(gap);
                last.text.push_str(word);
            }
            _ => {
                if mark.is_some() {
                    push_plain(&mut out, gap);
                    out.push(Segment { text: word.to_string(), from: mark });
                } else {
                    out.push(Segment { text: format!("{gap}{word}"), from: None });
                }
            }
        }
        pos = e;
    }
    push_plain(&mut out, &text[pos..]);
    out
}

fn push_plain(out: &mut Vec<Segment>, text: &str) {
    if text.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(last) if last.from.is_none() => last.text.push_str(text),
        _ => out.push(Segment { text: text.to_string(), from: None }),
    }
}

/// A one-permutation MinHash sketch of a message's character shingles: each shingle's hash picks one of
/// [`SKETCH`] buckets, and a bucket keeps the smallest value that fell into it ([`EMPTY`] when none did). One hash
/// per shingle, and two sketches compare in a fixed number of steps.
fn sketch(text: &str) -> [u32; SKETCH] {
    let chars: Vec<u32> = text.chars().flat_map(char::to_lowercase).map(u32::from).collect();
    let mut out = [EMPTY; SKETCH];
    let mut add = |window: &[u32]| {
        let h = mix(window
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &c| (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)));
        let bucket = (h >> 58) as usize % SKETCH;
        let value = (h as u32).min(EMPTY - 1);
        out[bucket] = out[bucket].min(value);
    };
    if chars.len() < SHINGLE_CHARS {
        if !chars.is_empty() {
            add(&chars);
        }
    } else {
        chars.windows(SHINGLE_CHARS).for_each(&mut add);
    }
    out
}

/// Estimated Jaccard similarity of the shingle sets behind two sketches: of the buckets either set filled, the
/// share where both hold the same minimum (1 for two empty texts).
fn jaccard(a: &[u32; SKETCH], b: &[u32; SKETCH]) -> f32 {
    let (mut filled, mut same) = (0u32, 0u32);
    for (x, y) in a.iter().zip(b) {
        let either = u32::from(*x != EMPTY || *y != EMPTY);
        filled += either;
        same += either & u32::from(x == y);
    }
    if filled == 0 {
        1.0
    } else {
        same as f32 / filled as f32
    }
}

/// Most messages compared pairwise for a heatmap (about 33 million pairs, a second or so): a longer conversation
/// is compared over this many messages spread evenly across it, plus every message with the two before it.
pub const HEATMAP_EXACT_MESSAGES: usize = 8192;

/// The similarity heatmap of a conversation computed directly at display resolution: at most `max` × `max`
/// cells, each the highest character-shingle Jaccard similarity (1 on the diagonal) of the message pairs of the
/// block it covers, so a single repeated pair is never averaged away. Memory is one small sketch per message plus
/// the cells, never the n × n matrix (20,000 messages would need 1.6 GB).
///
/// Up to [`HEATMAP_EXACT_MESSAGES`] messages every pair is compared. Beyond, the pairs are those of that many
/// messages spread evenly over the conversation, and each message with its two predecessors (where a loop shows
/// first), so the time stays bounded; a cell then shows the highest similarity among the pairs compared.
/// Returns the cells and how many messages one cell spans.
#[must_use]
pub fn similarity_heatmap(texts: &[&str], max: usize) -> (Vec<Vec<f32>>, usize) {
    heatmap_comparing(texts, max, HEATMAP_EXACT_MESSAGES)
}

/// [`similarity_heatmap`] comparing every pair of at most `exact` messages.
fn heatmap_comparing(texts: &[&str], max: usize, exact: usize) -> (Vec<Vec<f32>>, usize) {
    let n = texts.len();
    let bin = n.div_ceil(max.max(1)).max(1);
    let cells = n.div_ceil(bin);
    let mut out = vec![vec![0.0f32; cells]; cells];
    if n == 0 {
        return (out, bin);
    }
    let sketches: Vec<[u32; SKETCH]> = texts.iter().map(|t| sketch(t)).collect();
    let mut put = |i: usize, j: usize, v: f32| {
        let (a, b) = (i / bin, j / bin);
        out[a][b] = out[a][b].max(v);
        out[b][a] = out[b][a].max(v);
    };
    let stride = n.div_ceil(exact.max(1)).max(1);
    let sample: Vec<usize> = (0..n).step_by(stride).collect();
    for (k, &i) in sample.iter().enumerate() {
        for &j in &sample[..k] {
            put(i, j, jaccard(&sketches[i], &sketches[j]));
        }
    }
    for i in 0..n {
        put(i, i, 1.0);
        if stride > 1 {
            for j in i.saturating_sub(2)..i {
                put(i, j, jaccard(&sketches[i], &sketches[j]));
            }
        }
    }
    (out, bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(segs: &[Segment]) -> String {
        segs.iter().map(|s| s.text.as_str()).collect()
    }

    #[test]
    fn marks_repeats_of_earlier_messages_and_keeps_the_text() {
        let a = "Hey Mark, you are a pretty good sport. Thanks!";
        let b = "Well. Hey Mark, you are a pretty good sport. And more.";
        let spans = repeated_spans(&[a, b]);
        assert_eq!(joined(&spans[0]), a);
        assert_eq!(joined(&spans[1]), b);
        assert!(spans[0].iter().all(|s| s.from.is_none()));
        let marked: Vec<&Segment> = spans[1].iter().filter(|s| s.from.is_some()).collect();
        assert_eq!(marked.len(), 1);
        assert_eq!(marked[0].text, "Hey Mark, you are a pretty good sport.");
        assert_eq!(marked[0].from, Some(0));
    }

    #[test]
    fn marks_repetition_inside_one_message_and_exact_repeats() {
        let looped = "one two three four five six one two three four five six";
        let spans = repeated_spans(&["Hi.", looped, "Hi."]);
        assert_eq!(joined(&spans[1]), looped);
        assert!(spans[1].iter().any(|s| s.from == Some(1) && s.text.starts_with("one two three")));
        assert_eq!(spans[2], vec![Segment { text: "Hi.".into(), from: Some(0) }]);
    }

    #[test]
    fn issue_15_the_viewer_shows_a_bounded_prefix_marked_as_in_the_whole() {
        let texts = ["one two three four five six", "é one two three four five six", "seven"];
        assert_eq!(shown_prefix(texts, 1000), texts.to_vec());
        // The second message crosses the limit: cut on a character boundary (never inside "é"), the third left out.
        assert_eq!(shown_prefix(texts, 28), vec![texts[0], ""]);
        assert_eq!(shown_prefix(texts, 29), vec![texts[0], "é"]);
        let shown = shown_prefix(texts, 50);
        assert_eq!(shown.len(), 2);
        assert_eq!(repeated_spans(&shown)[..1], repeated_spans(&texts)[..1]);
        assert_eq!(joined(&repeated_spans(&shown)[1]), shown[1]);
    }

    #[test]
    fn whitespace_only_and_empty_messages_survive() {
        let spans = repeated_spans(&["", "  ", "  "]);
        assert_eq!(joined(&spans[1]), "  ");
        assert!(spans[0].is_empty());
    }

    #[test]
    fn similarity_sees_loops_and_differences() {
        let (m, bin) = similarity_heatmap(
            &["the cat sat on the mat", "a dog ran in the park today", "the cat sat on the mat"],
            40,
        );
        assert_eq!((m.len(), bin), (3, 1));
        assert!((m[0][2] - 1.0).abs() < 1e-6);
        assert!(m[0][1] < 0.2, "{}", m[0][1]);
        assert!((m[1][1] - 1.0).abs() < 1e-6);
        assert_eq!(m[0][1], m[1][0]);
    }

    #[test]
    fn long_texts_use_the_sketch() {
        let long: String = (0..500).map(|i| format!("word{i} ")).collect();
        let (m, _) = similarity_heatmap(&[&long, &long, "unrelated text entirely"], 40);
        assert!((m[0][1] - 1.0).abs() < 1e-6);
        assert!(m[0][2] < 0.05);
    }

    #[test]
    fn the_heatmap_is_computed_at_display_resolution_and_keeps_maxima() {
        let texts: Vec<String> = (0..10).map(|i| format!("message number {i} about topic {}", i * 7919)).collect();
        let mut refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        refs[9] = refs[0];
        let (d, bin) = similarity_heatmap(&refs, 4);
        assert_eq!((d.len(), d[0].len(), bin), (4, 4, 3));
        assert!((d[3][0] - 1.0).abs() < 1e-6 && (d[0][3] - 1.0).abs() < 1e-6, "{d:?}");
        assert!(d[2][1] < 0.9);
        let (same, one) = similarity_heatmap(&refs, 64);
        assert_eq!((same.len(), one), (10, 1));
        assert!(similarity_heatmap(&[], 40).0.is_empty());
    }

    #[test]
    fn issue_15_a_long_conversation_gets_a_bounded_heatmap_that_still_sees_its_loop() {
        // 4,000 distinct messages compared pairwise over 250 of them (16 × fewer, as 128,000 messages would be
        // with the real limit); message 2,000, the first of cell 20, repeats the one before it, the last of cell 19.
        let texts: Vec<String> =
            (0..4_000).map(|i| format!("line {i} with words {} and {}", i * 31, i ^ 0x5a5a)).collect();
        let mut refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        refs[2_000] = refs[1_999];
        let (d, bin) = heatmap_comparing(&refs, 40, 250);
        assert_eq!((d.len(), bin), (40, 100));
        assert!((d[20][19] - 1.0).abs() < 1e-6 && (d[19][20] - 1.0).abs() < 1e-6);
        assert!(d[21][19] < 0.9 && d[39][0] < 0.9, "{} {}", d[21][19], d[39][0]);
    }
}
