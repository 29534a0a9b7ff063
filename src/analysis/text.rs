//! Character-level text tools shared by the detectors and metrics.
//!
//! Small models loop on glued junk without spaces (`remarquer` → `remarquerurusan`), and CJK text has no spaces
//! at all, so nothing here splits on spaces to compare texts: similarity uses sets of character k-grams
//! (shingles, Broder 1997), and repeated substrings come from a suffix automaton (Blumer et al. 1985), linear in
//! the text's length.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style hasher (one multiply per word) for keys that are integers or already mixed hashes.
#[derive(Default)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        // A multiply leaves the low bits depending on the low bits of the input only, and hashbrown picks buckets
        // from the low bits: without this final mix, keys differing only in their high half would all collide.
        mix(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// A `HashMap` with [`FxHasher`].
pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Mixes a 64-bit value (the finaliser of MurmurHash3).
#[must_use]
pub fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Length of each shingle in characters: about two words, so shingles cross word boundaries and the same words
/// in another order don't look like a copy, while a CJK phrase still yields several.
pub const SHINGLE: usize = 12;

/// The distinct character k-grams of `s` as sorted hashes, case-folded, whitespace runs collapsed to one space.
/// A text shorter than `k` characters gives one shingle of the whole text (so equal short texts still match).
#[must_use]
pub fn shingles(s: &str, k: usize) -> Vec<u64> {
    let mut chars: Vec<u32> = Vec::with_capacity(s.len());
    let mut last_space = true;
    for c in s.chars() {
        if c.is_whitespace() {
            if !last_space {
                chars.push(' ' as u32);
            }
            last_space = true;
        } else {
            chars.extend(c.to_lowercase().map(u32::from));
            last_space = false;
        }
    }
    if chars.last() == Some(&(' ' as u32)) {
        chars.pop();
    }
    if chars.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<u64> = if chars.len() < k {
        vec![chars.iter().fold(0u64, |h, &c| mix(h ^ u64::from(c)))]
    } else {
        // A polynomial rolling hash (one multiply per character, whatever k), scrambled by `mix`.
        const BASE: u64 = 0x9e37_79b9_7f4a_7c15;
        let top = (1..k).fold(1u64, |p, _| p.wrapping_mul(BASE));
        let mut h = chars[..k].iter().fold(0u64, |h, &c| h.wrapping_mul(BASE).wrapping_add(u64::from(c) + 1));
        let mut out = Vec::with_capacity(chars.len() - k + 1);
        out.push(mix(h ^ k as u64));
        for i in k..chars.len() {
            h = h
                .wrapping_sub(top.wrapping_mul(u64::from(chars[i - k]) + 1))
                .wrapping_mul(BASE)
                .wrapping_add(u64::from(chars[i]) + 1);
            out.push(mix(h ^ k as u64));
        }
        out
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Number of values two sorted, deduplicated lists share.
#[must_use]
pub fn intersection(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// How much of the smaller text the larger one contains (the overlap coefficient of their shingle sets), in
/// [0, 1]. A turn that repeats the previous one with a word glued on scores close to 1. Texts of fewer than
/// `min_shingles` shingles only match when their sets are equal, so short stock phrases don't count as loops.
#[must_use]
pub fn overlap(a: &[u64], b: &[u64], min_shingles: usize) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let small = a.len().min(b.len());
    if small < min_shingles {
        return if a == b { 1.0 } else { 0.0 };
    }
    intersection(a, b) as f64 / small as f64
}

/// A suffix automaton over a sequence of code points, with the number of occurrences of every state.
pub struct SuffixAutomaton {
    len: Vec<u32>,
    link: Vec<u32>,
    /// End position (exclusive, in code points) of the first occurrence of each state's strings.
    first_end: Vec<u32>,
    /// Transitions, keyed by `state << 32 | char`.
    next: FxMap<u64, u32>,
    /// Per state, the head of its list of outgoing characters in `edges` (to copy them when cloning).
    head: Vec<u32>,
    /// (character, next entry of the same state's list).
    edges: Vec<(u32, u32)>,
    count: Vec<u32>,
}

const NO_LINK: u32 = u32::MAX;

fn key(state: u32, c: u32) -> u64 {
    (u64::from(state) << 32) | u64::from(c)
}

impl SuffixAutomaton {
    fn add_state(&mut self, len: u32, link: u32, first_end: u32, count: u32) -> u32 {
        self.len.push(len);
        self.link.push(link);
        self.first_end.push(first_end);
        self.head.push(NO_LINK);
        self.count.push(count);
        (self.len.len() - 1) as u32
    }

    /// Adds a new transition (the key must not exist yet).
    fn add_edge(&mut self, from: u32, c: u32, to: u32) {
        self.next.insert(key(from, c), to);
        self.edges.push((c, self.head[from as usize]));
        self.head[from as usize] = (self.edges.len() - 1) as u32;
    }

    /// Builds the automaton of `text` in linear time (hashed transitions) and counts occurrences.
    #[must_use]
    pub fn new(text: &[u32]) -> Self {
        let cap = 2 * text.len() + 2;
        let mut sam = SuffixAutomaton {
            len: Vec::with_capacity(cap),
            link: Vec::with_capacity(cap),
            first_end: Vec::with_capacity(cap),
            next: FxMap::with_capacity_and_hasher(3 * text.len() + 1, Default::default()),
            head: Vec::with_capacity(cap),
            edges: Vec::with_capacity(3 * text.len() + 1),
            count: Vec::with_capacity(cap),
        };
        sam.add_state(0, NO_LINK, 0, 0);
        let mut last = 0u32;
        for (i, &c) in text.iter().enumerate() {
            let cur = sam.add_state(sam.len[last as usize] + 1, 0, i as u32 + 1, 1);
            let mut p = last;
            // Walk the suffix links adding `c` until a state already has it (one hash lookup per state).
            let mut found = None;
            while p != NO_LINK {
                match sam.next.entry(key(p, c)) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        found = Some(*e.get());
                        break;
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(cur);
                        sam.edges.push((c, sam.head[p as usize]));
                        sam.head[p as usize] = (sam.edges.len() - 1) as u32;
                    }
                }
                p = sam.link[p as usize];
            }
            if let Some(q) = found {
                if sam.len[p as usize] + 1 == sam.len[q as usize] {
                    sam.link[cur as usize] = q;
                } else {
                    let clone =
                        sam.add_state(sam.len[p as usize] + 1, sam.link[q as usize], sam.first_end[q as usize], 0);
                    let mut e = sam.head[q as usize];
                    while e != NO_LINK {
                        let (ch, nxt) = sam.edges[e as usize];
                        let to = sam.next[&key(q, ch)];
                        sam.add_edge(clone, ch, to);
                        e = nxt;
                    }
                    while p != NO_LINK {
                        match sam.next.get_mut(&key(p, c)) {
                            Some(to) if *to == q => *to = clone,
                            _ => break,
                        }
                        p = sam.link[p as usize];
                    }
                    sam.link[q as usize] = clone;
                    sam.link[cur as usize] = clone;
                }
            }
            last = cur;
        }
        // Occurrence counts: add each state's count to its suffix link, longest states first (counting sort).
        let max_len = text.len();
        let mut buckets = vec![0u32; max_len + 2];
        for &l in &sam.len {
            buckets[l as usize + 1] += 1;
        }
        for i in 1..buckets.len() {
            buckets[i] += buckets[i - 1];
        }
        let mut order = vec![0u32; sam.len.len()];
        for s in 0..sam.len.len() {
            let l = sam.len[s] as usize;
            order[buckets[l] as usize] = s as u32;
            buckets[l] += 1;
        }
        for &s in order.iter().rev() {
            let l = sam.link[s as usize];
            if l != NO_LINK {
                sam.count[l as usize] += sam.count[s as usize];
            }
        }
        sam
    }

    /// The longest substring occurring at least `min_count` times: (start, length) in code points.
    #[must_use]
    pub fn longest_repeated(&self, min_count: u32) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for s in 1..self.len.len() {
            if self.count[s] >= min_count {
                let l = self.len[s] as usize;
                if best.is_none_or(|(_, bl)| l > bl) {
                    let end = self.first_end[s] as usize;
                    best = Some((end - l, l));
                }
            }
        }
        best
    }
}

/// Code points of a string.
#[must_use]
pub fn code_points(s: &str) -> Vec<u32> {
    s.chars().map(u32::from).collect()
}

/// Most code points one suffix automaton is built over. An automaton takes about 120 bytes per code point (two
/// states of five `u32`s, three hashed transitions and their lists), so this caps one at about 60 MB, whatever
/// the input (the 1 GiB file cap alone would allow about 100 GB).
pub const SAM_WINDOW: usize = 1 << 19;

/// The longest repeats of `text` for each of `min_counts` (as [`SuffixAutomaton::longest_repeated`]: start and
/// length in code points), with memory bounded by [`SAM_WINDOW`].
///
/// A text of up to [`SAM_WINDOW`] code points is searched whole. A longer one is searched in windows of that
/// length, each starting half a window after the previous one, and the longest repeat of any window is kept: a
/// repeat is then found when its occurrences lie within half a window of each other (loops repeat nearby), and
/// the count is of occurrences inside one window. The second value is true when windows were used, so that the
/// output can say the figure is a lower bound.
#[must_use]
pub fn longest_repeats(text: &[u32], min_counts: &[u32]) -> (Vec<Option<(usize, usize)>>, bool) {
    longest_repeats_in(text, min_counts, SAM_WINDOW)
}

/// [`longest_repeats`] with windows of `window` code points.
fn longest_repeats_in(text: &[u32], min_counts: &[u32], window: usize) -> (Vec<Option<(usize, usize)>>, bool) {
    longest_repeats_streaming(text.iter().copied(), min_counts, window)
}

/// [`longest_repeats`] of a text read as it streams (code points), holding one window of it at a time, so the
/// caller never builds the whole text: the same windows are searched as for the text in one piece.
#[must_use]
pub fn longest_repeats_of(text: impl Iterator<Item = u32>, min_counts: &[u32]) -> (Vec<Option<(usize, usize)>>, bool) {
    longest_repeats_streaming(text, min_counts, SAM_WINDOW)
}

/// [`longest_repeats_of`] with windows of `window` code points: each window starts half a window after the
/// previous one, and the last one ends with the text.
fn longest_repeats_streaming(
    text: impl Iterator<Item = u32>,
    min_counts: &[u32],
    window: usize,
) -> (Vec<Option<(usize, usize)>>, bool) {
    let window = window.max(2);
    let mut best: Vec<Option<(usize, usize)>> = vec![None; min_counts.len()];
    let step = window / 2;
    let mut text = text.peekable();
    // The window, `buf`, holds the text from `start` on.
    let mut buf: Vec<u32> = Vec::new();
    let mut start = 0;
    loop {
        while buf.len() < window {
            match text.next() {
                Some(c) => buf.push(c),
                None => break,
            }
        }
        let sam = SuffixAutomaton::new(&buf);
        for (b, &min) in best.iter_mut().zip(min_counts) {
            if let Some((s, l)) = sam.longest_repeated(min) {
                if b.is_none_or(|(_, bl)| l > bl) {
                    *b = Some((start + s, l));
                }
            }
        }
        drop(sam);
        if text.peek().is_none() {
            break;
        }
        buf.drain(..step);
        start += step;
    }
    (best, start + buf.len() > window)
}

/// The longest substring of `s` occurring at least `min_count` times (occurrences may overlap), as text; searched
/// as [`longest_repeats`] does (in windows beyond [`SAM_WINDOW`] code points).
#[must_use]
pub fn longest_repeated_substring(s: &str, min_count: u32) -> Option<String> {
    let cps = code_points(s);
    longest_repeats(&cps, &[min_count]).0[0]
        .map(|(start, len)| cps[start..start + len].iter().filter_map(|&c| char::from_u32(c)).collect())
}

/// True for characters of scripts written without spaces (CJK ideographs, kana, Hangul syllables, Thai).
#[must_use]
pub fn is_unspaced_script(c: char) -> bool {
    matches!(u32::from(c),
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0xAC00..=0xD7AF | 0x0E00..=0x0E7F
        | 0x20000..=0x2FFFF)
}

/// Word tokens for the standard metrics: whitespace-separated words, with every character of an unspaced script
/// (CJK, kana, Hangul, Thai) a token of its own, so that Chinese or Japanese text is measured too.
#[must_use]
pub fn tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for word in s.split_whitespace() {
        let mut start = 0;
        for (i, c) in word.char_indices() {
            if is_unspaced_script(c) {
                if start < i {
                    out.push(&word[start..i]);
                }
                out.push(&word[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        if start < word.len() {
            out.push(&word[start..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_lrs(s: &[u32], min_count: usize) -> usize {
        let mut best = 0;
        for l in 1..=s.len() {
            let mut found = false;
            for i in 0..=s.len() - l {
                let count = (0..=s.len() - l).filter(|&j| s[j..j + l] == s[i..i + l]).count();
                if count >= min_count {
                    found = true;
                    break;
                }
            }
            if found {
                best = l;
            }
        }
        best
    }

    #[test]
    fn suffix_automaton_matches_brute_force() {
        let mut seed = 7u64;
        for _ in 0..300 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let len = (seed >> 40) as usize % 40;
            let s: Vec<u32> = (0..len)
                .map(|i| {
                    let x = mix(seed ^ i as u64);
                    (x % 3) as u32
                })
                .collect();
            let sam = SuffixAutomaton::new(&s);
            for min in [2, 3] {
                let got = sam.longest_repeated(min).map_or(0, |(_, l)| l);
                assert_eq!(got, naive_lrs(&s, min as usize), "{s:?} min {min}");
                if let Some((start, l)) = sam.longest_repeated(min) {
                    let w = &s[start..start + l];
                    let occ = (0..=s.len() - l).filter(|&j| &s[j..j + l] == w).count();
                    assert!(occ >= min as usize);
                }
            }
        }
    }

    #[test]
    fn issue_15_a_long_text_is_searched_in_bounded_windows() {
        // A repeat inside the first window, and a longer one whose copies sit a quarter window apart near the end
        // of a text of 2.5 windows: both are found, and the result says windows were used. (A window of 8,192
        // code points keeps the test quick; the real one is SAM_WINDOW.)
        const W: usize = 8192;
        let mut seed = 11u64;
        let mut text: Vec<u32> = (0..W * 5 / 2)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (seed >> 33) as u32 % 1_000_000 + 100
            })
            .collect();
        let short: Vec<u32> = (1..=30).collect();
        text[10..40].copy_from_slice(&short);
        text[1000..1030].copy_from_slice(&short);
        let long: Vec<u32> = (1..=50).map(|c| c + 50).collect();
        let at = text.len() - W / 4 - 100;
        text[at..at + 50].copy_from_slice(&long);
        text[at + W / 4..at + W / 4 + 50].copy_from_slice(&long);
        let (found, windowed) = longest_repeats_in(&text, &[2], W);
        assert!(windowed);
        assert_eq!(found[0], Some((at, 50)));
        let (small, windowed) = longest_repeats_in(&text[..2000], &[2, 3], W);
        assert!(!windowed);
        assert_eq!(small, vec![Some((10, 30)), None]);
    }

    /// The windowed search as it was written over a slice (the whole text in memory).
    fn windows_over_slice(text: &[u32], min_counts: &[u32], window: usize) -> (Vec<Option<(usize, usize)>>, bool) {
        let mut best: Vec<Option<(usize, usize)>> = vec![None; min_counts.len()];
        let step = window / 2;
        let mut start = 0;
        loop {
            let end = (start + window).min(text.len());
            let sam = SuffixAutomaton::new(&text[start..end]);
            for (b, &min) in best.iter_mut().zip(min_counts) {
                if let Some((s, l)) = sam.longest_repeated(min) {
                    if b.is_none_or(|(_, bl)| l > bl) {
                        *b = Some((start + s, l));
                    }
                }
            }
            if end == text.len() {
                break;
            }
            start += step;
        }
        (best, text.len() > window)
    }

    #[test]
    fn issue_15_a_streamed_text_is_searched_in_the_same_windows_as_a_slice() {
        let mut seed = 3u64;
        let text: Vec<u32> = (0..700)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (seed >> 33) as u32 % 4
            })
            .collect();
        for window in [2, 3, 16, 64, 100] {
            for len in [0, 1, window - 1, window, window + 1, window + window / 2, 3 * window, 700] {
                let t = &text[..len.min(700)];
                assert_eq!(
                    longest_repeats_streaming(t.iter().copied(), &[2, 3], window),
                    windows_over_slice(t, &[2, 3], window.max(2)),
                    "window {window}, length {len}"
                );
            }
        }
    }

    #[test]
    fn longest_repeated_substring_on_glued_and_cjk_text() {
        assert_eq!(longest_repeated_substring("remarquer remarquerurusan", 2).as_deref(), Some("remarquer"));
        assert_eq!(longest_repeated_substring("で購入した。で購入した。", 2).as_deref(), Some("で購入した。"));
        assert_eq!(longest_repeated_substring("abc", 2), None);
    }

    #[test]
    fn overlap_sees_glued_growth_but_not_shared_stock_phrases() {
        let a = shingles("remarquerurusan", SHINGLE);
        let b = shingles("remarquerurusanuserdataで購入", SHINGLE);
        assert!(overlap(&a, &b, 4) > 0.99);
        let c = shingles("*smiles* I love volleyball, it keeps me fit.", SHINGLE);
        let d = shingles("*smiles* The coffee here is wonderful, isn't it?", SHINGLE);
        assert!(overlap(&c, &d, 4) < 0.3, "{}", overlap(&c, &d, 4));
        let hi = shingles("Hi!", SHINGLE);
        assert_eq!(overlap(&hi, &shingles("hi!", SHINGLE), 4), 1.0);
        assert_eq!(overlap(&hi, &shingles("Hi there", SHINGLE), 4), 0.0);
    }

    #[test]
    fn tokens_split_cjk_characters() {
        assert_eq!(tokens("hello 世界 ok"), vec!["hello", "世", "界", "ok"]);
        assert_eq!(tokens("remarquerurusanuserdataで購入"), vec!["remarquerurusanuserdata", "で", "購", "入"]);
    }
}
