//! The original tool's "loop score", bit-exact, and fast.
//!
//! Old results must stay comparable, so this reproduces the original analyzer's numbers to the last digit
//! (see `original-design.md`): the assistant's responses are the lines that start with the agent prefix, stripped
//! of it and of whitespace (Python's `str.strip`), an empty one becoming the text `[empty]` while counting 0
//! characters; they are joined with single spaces. Then for n = 64 down to 5: the text is split on single spaces
//! (`str.split(' ')`, which keeps empty words), every run of n consecutive words is counted in order of first
//! appearance, and while the most frequent run (the first seen among equals) occurs more than once, every
//! occurrence of its exact string is removed from the text (`str.replace`, non-overlapping, left to right), the
//! run and its count are recorded (counts of a run removed twice are summed) and the text is recounted.
//! `loop_score = Σ len(run) × count` with `len` in code points; `loop_density = loop_score / characters`.
//!
//! [`naive_loop_runs`] is that algorithm written the straightforward way (join every window into a string and
//! count the strings), kept as the reference the fast version is tested and benchmarked against. [`loop_runs`]
//! gives the same runs with three changes that do not alter the result:
//! * a window is hashed from per-word hashes with a rolling polynomial (O(1) per window instead of O(n) joins), and
//!   two windows are equal exactly when their spans of the text are equal bytes (words hold no space), which is
//!   checked on every hash hit, so a hash collision can never change a count;
//! * a run of n words that repeats contains a repeated run of every shorter length, so when nothing (more) repeats
//!   at n, the next length that does is found by binary search and the lengths between are skipped (they would
//!   find nothing, and the text does not change while nothing is found);
//! * the text is only re-split after a removal, not on every count.
//!
//! Its time is bounded too (issue #15): the original recounts the whole text after every removal, and a text with
//! very many repeated runs (a long transcript over a small vocabulary) would need millions of recounts. So counting
//! stops once [`WORK_LIMIT`] words have been counted over all recounts (the binary search's included); the runs
//! removed until then are kept — they are the full result's first removals, so the score is a lower bound — and
//! [`LoopRuns::complete`] says so (`analyze` warns). Measured: the loop score of `scripts/bench-memory.sh`'s 200 MB
//! transcript (a 26-word vocabulary, the worst case) stops there after 110 s on a 2-core machine; no real log comes
//! near it (it allows 500 recounts of a 1 M-word text).
//!
//! Its memory is bounded by design (issue #15): the joined text is held once (no copy), a word costs 12 bytes (a
//! `u32` start and its hash; the end is the next start), and windows are counted in passes of at most
//! `PASS_WINDOWS` by hash, so the counting table stays about 100 MB however long the text: equal windows share
//! a hash and so a pass, and the most frequent window over all passes is the same as over one table.

use std::collections::HashMap;

use super::{Conversation, LegacyScore};
use crate::transcript::Speaker;

/// The longest word run the original looks for.
pub const N_MAX: usize = 64;
/// The shortest word run the original looks for.
pub const N_MIN: usize = 5;
/// How many runs the original lists.
pub const TOP_NGRAMS: usize = 20;
/// Words counted over all recounts after which the loop score stops (see the module doc).
pub const WORK_LIMIT: u64 = 500_000_000;
/// What the original puts in the joined text for an empty response.
pub const EMPTY_RESPONSE: &str = "[empty]";

/// Python's `str.isspace` for one character: Unicode whitespace plus the four information separators.
#[must_use]
pub fn python_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
#[must_use]
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(python_isspace)
}

/// The lines of `text` as Python's text-mode file iteration sees them (universal newlines: `\n`, `\r\n`, `\r`).
pub fn python_lines(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut i = start;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    let line = &text[start..i];
                    start = i + 1;
                    return Some(line);
                }
                b'\r' => {
                    let line = &text[start..i];
                    start = if bytes.get(i + 1) == Some(&b'\n') { i + 2 } else { i + 1 };
                    return Some(line);
                }
                _ => i += 1,
            }
        }
        done = true;
        // A trailing newline does not start another line.
        (start < bytes.len()).then(|| &text[start..])
    })
}

/// The assistant responses the original analyzer sees, stripped, in order (empty ones stay empty here).
///
/// With a known agent prefix this is the original's rule exactly: every line of every message that starts with
/// the prefix (the opening assistant message included; a multi-line turn contributes its first line only).
/// Without one (plain chat formats), every assistant message counts as one response, its own prefix removed.
#[must_use]
pub fn responses(conv: &Conversation) -> Vec<&str> {
    match conv.agent_prefix.as_deref().filter(|p| !p.is_empty()) {
        Some(prefix) => conv
            .messages
            .iter()
            .flat_map(|m| python_lines(&m.text))
            .filter_map(|line| line.strip_prefix(prefix))
            .map(python_strip)
            .collect(),
        None => conv
            .messages
            .iter()
            .filter(|m| m.speaker == Speaker::Assistant)
            .map(|m| {
                let text = m.prefix.as_deref().and_then(|p| m.text.strip_prefix(p)).unwrap_or(&m.text);
                python_strip(text)
            })
            .collect(),
    }
}

/// The original's numbers for a conversation.
#[must_use]
pub fn score(conv: &Conversation) -> LegacyScore {
    score_responses(&responses(conv))
}

/// The original's numbers for already stripped responses.
#[must_use]
pub fn score_responses<S: AsRef<str>>(responses: &[S]) -> LegacyScore {
    let response_lengths: Vec<usize> = responses.iter().map(|r| r.as_ref().chars().count()).collect();
    let LoopRuns { runs, complete } = loop_runs_owned(joined_text(responses));
    LegacyScore { complete, ..score_from_runs(response_lengths, runs) }
}

/// The joined text the original scores: responses joined by single spaces, `[empty]` for empty ones.
#[must_use]
pub fn joined_text<S: AsRef<str>>(responses: &[S]) -> String {
    let parts: Vec<&str> =
        responses.iter().map(|r| if r.as_ref().is_empty() { EMPTY_RESPONSE } else { r.as_ref() }).collect();
    parts.join(" ")
}

/// Assembles a [`LegacyScore`] from response lengths and the removed runs (in first-removed order).
#[must_use]
pub fn score_from_runs(response_lengths: Vec<usize>, runs: Vec<(String, usize)>) -> LegacyScore {
    let character_count: usize = response_lengths.iter().sum();
    let loop_score: usize = runs.iter().map(|(run, count)| run.chars().count() * count).sum();
    let responses = response_lengths.len();
    // Python divides ints into a float; the original would raise on 0, we report 0.
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut top = runs;
    // Counter.most_common: by count, descending, stable (first recorded first among equals).
    top.sort_by_key(|r| std::cmp::Reverse(r.1));
    top.truncate(TOP_NGRAMS);
    LegacyScore {
        character_count,
        loop_score,
        loop_density: ratio(loop_score, character_count),
        avg_response_length: ratio(character_count, responses),
        responses,
        response_lengths,
        top_ngrams: top,
        complete: true,
    }
}

/// Records a removed run: counts of a run removed again are added to its first entry.
fn record(runs: &mut Vec<(String, usize)>, index: &mut HashMap<String, usize>, run: String, count: usize) {
    match index.get(&run) {
        Some(&i) => runs[i].1 += count,
        None => {
            index.insert(run.clone(), runs.len());
            runs.push((run, count));
        }
    }
}

/// The original algorithm written plainly: every window joined into a string and counted, the text re-split for
/// every count. Quadratic-ish and slow; the reference for [`loop_runs`].
#[must_use]
pub fn naive_loop_runs(text: &str) -> Vec<(String, usize)> {
    let mut text = text.to_string();
    let mut runs = Vec::new();
    let mut index = HashMap::new();
    for n in (N_MIN..=N_MAX).rev() {
        loop {
            let words: Vec<&str> = text.split(' ').collect();
            if words.len() < n {
                break;
            }
            // Counter: insertion-ordered counts.
            let mut counts: HashMap<String, usize> = HashMap::new();
            let mut order: Vec<String> = Vec::new();
            for window in words.windows(n) {
                let gram = window.join(" ");
                let c = counts.entry(gram.clone()).or_insert(0);
                if *c == 0 {
                    order.push(gram);
                }
                *c += 1;
            }
            let mut best: Option<(&String, usize)> = None;
            for gram in &order {
                let c = counts[gram];
                if best.is_none_or(|(_, b)| c > b) {
                    best = Some((gram, c));
                }
            }
            let Some((gram, count)) = best.filter(|&(_, c)| c > 1) else { break };
            let gram = gram.clone();
            text = text.replace(&gram, "");
            record(&mut runs, &mut index, gram, count);
        }
    }
    runs
}

/// Hash of one word's bytes (FNV-1a, then a final mix).
fn word_hash(w: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in w {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

const BASE: u64 = 0x9e37_79b9_7f4a_7c15;

/// A position (byte offset, word index or count) as stored in the tables below: `u32` for every text under
/// 4 GiB, which halves them (a text read from one file is under 1 GiB), `u64` beyond.
trait Pos: Copy + Eq {
    /// The largest value, kept free to mark an empty table entry.
    const NONE: Self;
    /// `i`, which the caller knows to fit (see [`loop_runs_owned`], which picks the type from the text's length).
    fn of(i: usize) -> Self;
    fn get(self) -> usize;
}

impl Pos for u32 {
    const NONE: Self = u32::MAX;
    #[allow(clippy::cast_possible_truncation)] // only used for texts shorter than u32::MAX bytes.
    fn of(i: usize) -> Self {
        i as u32
    }
    fn get(self) -> usize {
        self as usize
    }
}

impl Pos for u64 {
    const NONE: Self = u64::MAX;
    fn of(i: usize) -> Self {
        i as u64
    }
    #[allow(clippy::cast_possible_truncation)] // a u64 position indexes a text in memory, so it fits usize.
    fn get(self) -> usize {
        self as usize
    }
}

/// The text split on single spaces: where each word starts, and prefix hashes for windows. Word `i` spans
/// `starts[i]..starts[i + 1] - 1` (the byte before the next word is the space; `starts` ends with the text's
/// length plus one), so a word costs one position and one hash.
struct Words<P> {
    starts: Vec<P>,
    prefix: Vec<u64>,
    pow: [u64; N_MAX + 1],
}

impl<P: Pos> Words<P> {
    fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        let spaces = bytes.iter().filter(|&&b| b == b' ').count();
        let mut starts = Vec::with_capacity(spaces + 2);
        starts.push(P::of(0));
        for (i, &b) in bytes.iter().enumerate() {
            if b == b' ' {
                starts.push(P::of(i + 1));
            }
        }
        starts.push(P::of(bytes.len() + 1));
        let mut prefix = Vec::with_capacity(starts.len());
        prefix.push(0u64);
        let mut h = 0u64;
        for w in starts.windows(2) {
            h = h.wrapping_mul(BASE).wrapping_add(word_hash(&bytes[w[0].get()..w[1].get() - 1]));
            prefix.push(h);
        }
        let mut pow = [0u64; N_MAX + 1];
        let mut p = 1u64;
        for x in &mut pow {
            *x = p;
            p = p.wrapping_mul(BASE);
        }
        Words { starts, prefix, pow }
    }

    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// Hash of the window of `n` words starting at word `i`.
    fn hash(&self, i: usize, n: usize) -> u64 {
        self.prefix[i + n].wrapping_sub(self.prefix[i].wrapping_mul(self.pow[n]))
    }

    /// The window's span in the text: equal spans ⇔ equal word sequences (words hold no space).
    fn span<'t>(&self, text: &'t str, i: usize, n: usize) -> &'t [u8] {
        &text.as_bytes()[self.starts[i].get()..self.starts[i + n].get() - 1]
    }
}

/// One distinct window: where it was first seen (word index) and how often.
#[derive(Clone, Copy)]
struct Slot<P> {
    first: P,
    count: P,
}

/// Most windows one pass of [`count_windows`] files: a longer text is counted in several passes, each taking the
/// windows whose hash falls in its share, so the table never holds more than about this many distinct windows
/// (about 100 MB: 8 bytes a slot and a 4-byte table entry at most half full, per window).
const PASS_WINDOWS: usize = 1 << 22;

/// An open-addressing table of distinct windows for one pass: `table` holds indices into `slots` (`NONE` when
/// empty, at most half full), and a window's hash is recomputed from its first position rather than stored.
struct WindowTable<P> {
    table: Vec<P>,
    slots: Vec<Slot<P>>,
}

impl<P: Pos> WindowTable<P> {
    fn with_capacity(windows: usize) -> Self {
        let size = (2 * windows).next_power_of_two().max(16);
        WindowTable { table: vec![P::NONE; size], slots: Vec::with_capacity(windows) }
    }

    fn bucket(&self, h: u64) -> usize {
        // Fibonacci hashing: the top bits of the product depend on every bit of the hash.
        let bits = self.table.len().trailing_zeros();
        #[allow(clippy::cast_possible_truncation)] // the shifted value is below the table's length.
        let b = (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize;
        b
    }

    /// Counts the window of `n` words at `i` (hash `h`); returns its slot.
    fn add(&mut self, text: &str, words: &Words<P>, n: usize, i: usize, h: u64) -> usize {
        let span = words.span(text, i, n);
        let mask = self.table.len() - 1;
        let mut b = self.bucket(h);
        loop {
            let entry = self.table[b];
            if entry == P::NONE {
                break;
            }
            let s = entry.get();
            let first = self.slots[s].first.get();
            if words.hash(first, n) == h && words.span(text, first, n) == span {
                self.slots[s].count = P::of(self.slots[s].count.get() + 1);
                return s;
            }
            b = (b + 1) & mask;
        }
        let s = self.slots.len();
        self.table[b] = P::of(s);
        self.slots.push(Slot { first: P::of(i), count: P::of(1) });
        if 2 * self.slots.len() > self.table.len() {
            self.grow(words, n);
        }
        s
    }

    /// Doubles the table and files every slot again.
    fn grow(&mut self, words: &Words<P>, n: usize) {
        self.table = vec![P::NONE; 2 * self.table.len()];
        let mask = self.table.len() - 1;
        for (s, slot) in self.slots.iter().enumerate() {
            let mut b = self.bucket(words.hash(slot.first.get(), n));
            while self.table[b] != P::NONE {
                b = (b + 1) & mask;
            }
            self.table[b] = P::of(s);
        }
    }
}

/// Counts the windows of `n` words; with `stop_at_repeat` returns as soon as one repeats. Returns the most frequent
/// window (first seen among equals) as (first position, count).
///
/// Windows are counted in passes of about `pass_windows` ([`PASS_WINDOWS`]), each taking those whose hash is its own modulo the
/// number of passes: equal windows have equal hashes, so every distinct window is counted whole in exactly one
/// pass, and the best over the passes (highest count, then first seen) is the best over the text.
fn count_windows<P: Pos>(
    text: &str,
    words: &Words<P>,
    n: usize,
    stop_at_repeat: bool,
    pass_windows: usize,
) -> Option<(usize, usize)> {
    if words.len() < n {
        return None;
    }
    let windows = words.len() - n + 1;
    let passes = windows.div_ceil(pass_windows.max(1)).max(1);
    let mut best: Option<(usize, usize)> = None;
    for pass in 0..passes as u64 {
        let mut table = WindowTable::<P>::with_capacity(windows.div_ceil(passes));
        for i in 0..windows {
            let h = words.hash(i, n);
            if h % passes as u64 != pass {
                continue;
            }
            let s = table.add(text, words, n, i, h);
            let Slot { first, count } = table.slots[s];
            if stop_at_repeat && count.get() > 1 {
                return Some((first.get(), count.get()));
            }
        }
        for slot in &table.slots {
            let (first, count) = (slot.first.get(), slot.count.get());
            if best.is_none_or(|(bf, bc)| count > bc || (count == bc && first < bf)) {
                best = Some((first, count));
            }
        }
    }
    best.filter(|&(_, count)| count > 1)
}

/// The longest repeated window length in `N_MIN..=upper`, or 0 when not even `N_MIN` words repeat (or
/// `upper < N_MIN`).
fn longest_repeat<P: Pos>(text: &str, words: &Words<P>, upper: usize, pass_windows: usize) -> usize {
    let (mut lo, mut hi) = (N_MIN - 1, upper.min(words.len()));
    if hi < N_MIN {
        return 0;
    }
    // Invariant: a repeat of length lo exists (or lo = N_MIN - 1), none of length > hi.
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count_windows(text, words, mid, true, pass_windows).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo < N_MIN {
        0
    } else {
        lo
    }
}

/// The runs the original removes from a text, and whether it got to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopRuns {
    /// The removed runs with their summed counts, in first-removed order.
    pub runs: Vec<(String, usize)>,
    /// False when counting stopped at [`WORK_LIMIT`]: `runs` are then the first removals of the full result.
    pub complete: bool,
}

/// The runs the original removes from `text`, with their summed counts, in first-removed order. Same result as
/// [`naive_loop_runs`], in near-linear time per removal (unless stopped at [`WORK_LIMIT`]).
#[must_use]
pub fn loop_runs(text: &str) -> LoopRuns {
    loop_runs_owned(text.to_string())
}

/// [`loop_runs`] on a text it may change in place (no copy of it is made).
///
/// Memory: the text, 12 bytes per word (a `u32` start and a hash; 16 beyond 4 GiB of text), and one pass of
/// windows (see [`PASS_WINDOWS`]); during a removal, the text before and after it (the word tables are dropped
/// first).
#[must_use]
pub fn loop_runs_owned(text: String) -> LoopRuns {
    // `starts` holds the text's length plus one.
    if text.len() < u32::MAX as usize {
        loop_runs_in::<u32>(text, PASS_WINDOWS, WORK_LIMIT)
    } else {
        loop_runs_in::<u64>(text, PASS_WINDOWS, WORK_LIMIT)
    }
}

/// [`loop_runs_owned`] with positions of type `P`, counting windows in passes of about `pass_windows`, stopping
/// once `work_limit` words have been counted.
fn loop_runs_in<P: Pos>(mut text: String, pass_windows: usize, work_limit: u64) -> LoopRuns {
    let mut runs = Vec::new();
    let mut index = HashMap::new();
    let mut words = Words::<P>::new(&text);
    // Words counted so far: every count (the binary search's included) reads the whole text once.
    let mut work = 0u64;
    let mut counted = |words: &Words<P>, times: u64| {
        work = work.saturating_add((words.len() as u64).saturating_mul(times));
        work <= work_limit
    };
    // A binary search over the lengths counts at most this many times.
    let searches = u64::from(N_MAX.ilog2() + 1);
    if !counted(&words, searches) {
        return LoopRuns { runs, complete: false };
    }
    // Skip straight to the longest length that repeats at all.
    let mut n = longest_repeat(&text, &words, N_MAX, pass_windows);
    while n >= N_MIN {
        if !counted(&words, 1) {
            return LoopRuns { runs, complete: false };
        }
        match count_windows(&text, &words, n, false, pass_windows) {
            Some((first, count)) => {
                let gram = String::from_utf8_lossy(words.span(&text, first, n)).into_owned();
                drop(words);
                text = text.replace(&gram, "");
                record(&mut runs, &mut index, gram, count);
                words = Words::new(&text);
                // Recount at the same n, as the original does.
            }
            // Nothing more repeats at n: every length between the next repeating one and n finds nothing either.
            None => {
                if !counted(&words, searches) {
                    return LoopRuns { runs, complete: false };
                }
                n = longest_repeat(&text, &words, n - 1, pass_windows);
            }
        }
    }
    LoopRuns { runs, complete: true }
}

/// Histogram of loop densities as the original plots it: buckets of 0.05 from 0 to 0.8, plus one for 0.8 and
/// above (the original's plot cuts those off; we keep them visible). Returns (label, count) pairs.
#[must_use]
pub fn density_histogram(densities: &[f64]) -> Vec<(String, usize)> {
    let mut counts = vec![0usize; 17];
    for &d in densities {
        let b = if d.is_nan() || d < 0.0 { 0 } else { ((d / 0.05 + 1e-9).floor() as usize).min(16) };
        counts[b] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let label = if i == 16 {
                "0.80+".to_string()
            } else {
                format!("{:.2}-{:.2}", i as f64 * 0.05, (i + 1) as f64 * 0.05)
            };
            (label, c)
        })
        .collect()
}

/// Histogram of response lengths as the original plots it: 0–1, then buckets of 100 characters up to 2000,
/// then 2000+. Returns (label, count) pairs.
#[must_use]
pub fn length_histogram(lengths: &[usize]) -> Vec<(String, usize)> {
    let mut counts = vec![0usize; 22];
    for &l in lengths {
        let b = if l < 1 {
            0
        } else if l >= 2000 {
            21
        } else {
            1 + l / 100
        };
        counts[b] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let label = match i {
                0 => "0-1".to_string(),
                1 => "1-100".to_string(),
                21 => "2000+".to_string(),
                _ => format!("{}-{}", (i - 1) * 100, i * 100),
            };
            (label, c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> Vec<(String, usize)> {
        let LoopRuns { runs: fast, complete } = loop_runs(text);
        assert!(complete);
        assert_eq!(fast, naive_loop_runs(text), "fast and naive differ on {text:?}");
        // Counted in many small passes (as a text of millions of words is) and with 64-bit positions: the same.
        for pass_windows in [1, 3, 7] {
            let runs = loop_runs_in::<u32>(text.to_string(), pass_windows, WORK_LIMIT).runs;
            assert_eq!(runs, fast, "passes of {pass_windows}: {text:?}");
        }
        assert_eq!(loop_runs_in::<u64>(text.to_string(), 5, WORK_LIMIT).runs, fast, "u64 positions: {text:?}");
        fast
    }

    #[test]
    fn nothing_repeats_in_short_or_varied_text() {
        assert!(both("a b c d").is_empty());
        assert!(both("one two three four five six seven eight nine ten").is_empty());
        let s = score_responses(&["hello there", ""]);
        assert_eq!(s.loop_score, 0);
        assert_eq!(s.character_count, 11);
        assert_eq!(s.response_lengths, vec![11, 0]);
        assert_eq!(s.responses, 2);
        assert_eq!(s.avg_response_length, 5.5);
    }

    #[test]
    fn a_repeated_run_is_removed_once_with_its_count() {
        // "a b c d e" twice, separated: the 5-gram count is 2, removing leaves "  x ".
        let runs = both("a b c d e x a b c d e");
        assert_eq!(runs, vec![("a b c d e".to_string(), 2)]);
        let s = score_responses(&["a b c d e x a b c d e"]);
        assert_eq!(s.loop_score, 18);
        assert_eq!(s.character_count, 21);
        assert_eq!(s.loop_density, 18.0 / 21.0);
    }

    #[test]
    fn overlapping_runs_count_overlaps_but_replace_does_not() {
        // Six equal words: the 5-gram occurs twice (overlapping), str.replace removes one occurrence, leaving " a".
        let runs = both("a a a a a a");
        assert_eq!(runs, vec![("a a a a a".to_string(), 2)]);
        // Eleven "a": n=10 is the first length with a repeat (2 overlapping windows); one replacement leaves " a".
        let runs = both("a a a a a a a a a a a");
        assert_eq!(runs, vec![("a a a a a a a a a a".to_string(), 2)]);
    }

    #[test]
    fn ties_go_to_the_first_seen_run() {
        // Two different 5-grams, each twice; "p q r s t" is seen first, so it goes first.
        let text = "p q r s t A B C D E p q r s t A B C D E";
        let runs = both(text);
        // n=10: the 10-gram "p … E" occurs twice and is removed first.
        assert_eq!(runs, vec![("p q r s t A B C D E".to_string(), 2)]);
        let text = "p q r s t 1 A B C D E 2 A B C D E 3 p q r s t";
        let runs = both(text);
        assert_eq!(runs, vec![("p q r s t".to_string(), 2), ("A B C D E".to_string(), 2)]);
    }

    #[test]
    fn removal_is_plain_substring_replacement_even_inside_words() {
        // The run also matches inside "xa b c d e" (not word-aligned); str.replace removes that occurrence too.
        let runs = both("a b c d e k xa b c d e");
        assert_eq!(runs, vec![]);
        let text = "a b c d e k a b c d e m xa b c d ey";
        let runs = both(text);
        assert_eq!(runs, vec![("a b c d e".to_string(), 2)]);
    }

    #[test]
    fn counts_of_a_run_removed_twice_are_summed() {
        let mut runs = Vec::new();
        let mut index = HashMap::new();
        record(&mut runs, &mut index, "x y".into(), 2);
        record(&mut runs, &mut index, "z".into(), 3);
        record(&mut runs, &mut index, "x y".into(), 4);
        assert_eq!(runs, vec![("x y".to_string(), 6), ("z".to_string(), 3)]);
        // Hand-checked with Python: the 6-gram goes first (2 windows), then a 6-gram glued by the removal.
        let text = "q w e r t y q w e r t y u q w e r t u q w e r t";
        assert_eq!(both(text), vec![("q w e r t y".to_string(), 2), ("u q w e r t".to_string(), 2)]);
    }

    #[test]
    fn code_points_not_bytes() {
        let s = score_responses(&["場合 場合 場合 場合 場合 場合"]);
        assert_eq!(s.character_count, 17);
        assert_eq!(s.top_ngrams, vec![("場合 場合 場合 場合 場合".to_string(), 2)]);
        assert_eq!(s.loop_score, 14 * 2);
    }

    #[test]
    fn empty_responses_become_the_empty_marker() {
        assert_eq!(joined_text(&["a", "", "b"]), "a [empty] b");
        let s = score_responses(&["", "", "", "", "", ""]);
        assert_eq!(s.character_count, 0);
        assert_eq!(s.loop_density, 0.0);
        assert_eq!(s.top_ngrams, vec![("[empty] [empty] [empty] [empty] [empty]".to_string(), 2)]);
    }

    #[test]
    fn python_strip_and_lines() {
        assert_eq!(python_strip("\u{1f} x \u{3000}\n"), "x");
        let lines: Vec<&str> = python_lines("a\r\nb\rc\n\nd\n").collect();
        assert_eq!(lines, vec!["a", "b", "c", "", "d"]);
    }

    /// A deterministic pseudo-random generator (xorshift64).
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    #[test]
    fn fast_equals_naive_on_pseudo_random_loops() {
        // A deterministic generator of looping texts with small vocabularies (many ties and overlaps).
        let mut next = xorshift(0x1234_5678);
        let vocab = ["a", "b", "", "ab", "ba", "c", "場", "a b"];
        for _ in 0..200 {
            let len = (next() % 120) as usize;
            let mut words: Vec<&str> = Vec::new();
            while words.len() < len {
                if next().is_multiple_of(3) && words.len() > 8 {
                    let start = (next() as usize) % (words.len() - 4);
                    let l = 4 + (next() as usize) % (words.len() - start - 3);
                    let copy: Vec<&str> = words[start..start + l].to_vec();
                    words.extend(copy);
                } else {
                    words.push(vocab[(next() % vocab.len() as u64) as usize]);
                }
            }
            both(&words.join(" "));
        }
    }

    /// #15: a text with very many repeated runs (a long transcript over a small vocabulary) needs one recount of the
    /// whole text per removed run; the count stops at its work bound instead of running for hours, keeping the runs
    /// removed until then: the first removals of the full result, so the score is a lower bound, said so.
    #[test]
    fn issue_15_counting_stops_at_its_work_bound_with_the_first_removals() {
        let mut next = xorshift(0x9e37_79b9);
        let vocab = ["sea", "boat", "wind", "gull"];
        let text: Vec<&str> = (0..3000).map(|_| vocab[(next() % 4) as usize]).collect();
        let text = text.join(" ");
        let full = loop_runs(&text);
        assert!(full.complete && full.runs.len() > 50, "{} runs", full.runs.len());
        let words = 3000u64;
        for limit in [words * 8, words * 12, words * 20] {
            let cut = loop_runs_in::<u32>(text.clone(), PASS_WINDOWS, limit);
            assert!(!cut.complete, "limit {limit}");
            assert!(cut.runs.len() < full.runs.len(), "limit {limit}");
            // The removals so far are the full result's first ones (a run's count can only grow later on).
            for (k, (run, count)) in cut.runs.iter().enumerate() {
                assert_eq!(run, &full.runs[k].0, "limit {limit}");
                assert!(*count <= full.runs[k].1, "limit {limit}");
            }
        }
        assert!(score_responses(&[text.as_str()]).complete);
    }

    #[test]
    fn histograms_bucket_like_the_original() {
        let h = density_histogram(&[0.0, 0.049, 0.05, 0.29, 0.79, 0.8, 1.5]);
        assert_eq!(h.len(), 17);
        assert_eq!(h[0], ("0.00-0.05".to_string(), 2));
        assert_eq!(h[1].1, 1);
        assert_eq!(h[5].1, 1);
        assert_eq!(h[15].1, 1);
        assert_eq!(h[16], ("0.80+".to_string(), 2));
        let h = length_histogram(&[0, 1, 99, 100, 1999, 2000, 5000]);
        assert_eq!(h[0], ("0-1".to_string(), 1));
        assert_eq!(h[1], ("1-100".to_string(), 2));
        assert_eq!(h[2], ("100-200".to_string(), 1));
        assert_eq!(h[20], ("1900-2000".to_string(), 1));
        assert_eq!(h[21], ("2000+".to_string(), 2));
    }
}

/// The two real logs of the original tool against what its own analyzer computed for them.
#[cfg(test)]
mod real_logs {
    use std::path::PathBuf;

    use super::*;
    use crate::analysis::formats::read_path;

    #[test]
    fn scores_equal_the_original_analyzer_to_the_last_digit() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy");
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("original-analyzer-results.json")).unwrap())
                .unwrap();
        let expected = expected.as_object().unwrap();
        assert_eq!(expected.len(), 2);
        for (file, e) in expected {
            let conv = read_path(&dir.join(file), None).unwrap();
            let s = score(&conv);
            assert_eq!(s.character_count as u64, e["character_count"].as_u64().unwrap(), "{file}");
            assert_eq!(s.loop_score as u64, e["loop_score"].as_u64().unwrap(), "{file}");
            assert_eq!(s.loop_density.to_bits(), e["loop_density"].as_f64().unwrap().to_bits(), "{file}");
            assert_eq!(s.avg_response_length, e["avg_response_length"].as_f64().unwrap(), "{file}");
            assert_eq!(s.responses as u64, e["responses"].as_u64().unwrap(), "{file}");
            let top: Vec<(String, usize)> = e["top_ngrams"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_u64().unwrap() as usize))
                .collect();
            assert_eq!(s.top_ngrams, top, "{file}");
            // The plain port agrees too.
            let text = joined_text(&responses(&conv));
            assert_eq!(naive_loop_runs(&text), loop_runs(&text).runs, "{file}");
        }
    }
}
