//! Stop strings in streamed text, for every backend that streams: generated text arrives in pieces (a token, an
//! SSE event), a stop string can be split across pieces, and what reaches the terminal must never include a stop
//! string or its beginning. [`StopStream`] is that rule, once: it keeps a turn's text, finds the earliest stop
//! string as soon as it is complete, and holds back the tail that could still turn into one.
//!
//! Pure text in, text out. Decoding bytes into text (llama.cpp's tokens can end inside a character) stays with the
//! backend that has bytes; what ends a turn besides a stop string (EOS, the token limit, an engine's report) stays
//! with the caller, which then calls [`StopStream::finish`] or [`StopStream::push_last`].

/// Finds the earliest stop string in `text` at or after byte `from` (callers pass the position where new text
/// began, minus the longest stop string, so a stop string split across pieces is still found).
#[must_use]
pub fn find_stop(text: &str, stops: &[String], from: usize) -> Option<usize> {
    let mut from = from.min(text.len());
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    stops.iter().filter_map(|s| text[from..].find(s.as_str()).map(|i| i + from)).min()
}

/// One turn's streamed text, cut before the first stop string, with a hold-back for a stop string not yet
/// complete.
#[derive(Debug, Clone, Default)]
pub struct StopStream {
    stops: Vec<String>,
    /// Bytes held back at the end of the text: the longest stop string less one.
    hold: usize,
    /// Everything pushed.
    text: String,
    /// Bytes of `text` already handed out to stream.
    emitted: usize,
    /// Where the first stop string starts, once one is complete.
    stop_at: Option<usize>,
}

/// What one push allows the caller to stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// Text that can no longer be part of a stop string (possibly empty); stream it now.
    pub emit: &'a str,
    /// Whether a stop string is now complete: `emit` then runs up to it and the turn is over.
    pub stopped: bool,
}

impl StopStream {
    /// A stream that watches for `stops` (none: everything is streamed as it arrives).
    #[must_use]
    pub fn new(stops: &[String]) -> Self {
        let hold = stops.iter().map(String::len).max().unwrap_or(1).saturating_sub(1);
        StopStream { stops: stops.to_vec(), hold, ..StopStream::default() }
    }

    /// Adds a piece of text and returns what may be streamed now. Once a stop string was found, further pieces are
    /// ignored.
    pub fn push(&mut self, piece: &str) -> Step<'_> {
        self.push_inner(piece, false)
    }

    /// Adds the turn's last piece (the caller knows nothing follows): nothing is held back, so `emit` is all the
    /// text not yet streamed, cut before a stop string if one is complete.
    pub fn push_last(&mut self, piece: &str) -> Step<'_> {
        self.push_inner(piece, true)
    }

    fn push_inner(&mut self, piece: &str, last: bool) -> Step<'_> {
        if self.stop_at.is_some() {
            return Step { emit: "", stopped: true };
        }
        let before = self.text.len();
        self.text.push_str(piece);
        self.stop_at = find_stop(&self.text, &self.stops, before.saturating_sub(self.hold));
        let end = match self.stop_at {
            Some(at) => at,
            None if last => self.text.len(),
            None => self.text.len().saturating_sub(self.hold),
        };
        let stopped = self.stop_at.is_some();
        Step { emit: self.advance(end), stopped }
    }

    /// Ends the stream: returns the text held back (up to the stop string, if one was found).
    pub fn finish(&mut self) -> &str {
        self.advance(self.text().len())
    }

    /// Marks the text up to `end` (rounded down to a character) as streamed and returns the part not streamed yet.
    fn advance(&mut self, end: usize) -> &str {
        let mut end = end.max(self.emitted);
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        // `emitted` is a character boundary, so rounding down never goes below it.
        let from = std::mem::replace(&mut self.emitted, end);
        &self.text[from..end]
    }

    /// The turn's text so far, cut before the stop string.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text[..self.stop_at.unwrap_or(self.text.len())]
    }

    /// Everything pushed, a stop string and what followed it in the same piece included.
    #[must_use]
    pub fn received(&self) -> &str {
        &self.text
    }

    /// Whether a stop string was found.
    #[must_use]
    pub fn stopped(&self) -> bool {
        self.stop_at.is_some()
    }

    /// The turn's text, cut before the stop string.
    #[must_use]
    pub fn into_text(mut self) -> String {
        if let Some(at) = self.stop_at {
            self.text.truncate(at);
        }
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_string()).collect()
    }

    /// Pushes every piece, collecting what is streamed, then finishes.
    fn run(stops: &[String], pieces: &[&str]) -> (Vec<String>, StopStream) {
        let mut s = StopStream::new(stops);
        let mut out = Vec::new();
        for p in pieces {
            let step = s.push(p);
            if !step.emit.is_empty() {
                out.push(step.emit.to_string());
            }
            if step.stopped {
                break;
            }
        }
        let rest = s.finish().to_string();
        if !rest.is_empty() {
            out.push(rest);
        }
        (out, s)
    }

    #[test]
    fn find_stop_finds_the_earliest_and_handles_char_boundaries() {
        let stops = stops(&["\n", "END"]);
        assert_eq!(find_stop("abc END\nx", &stops, 0), Some(4));
        assert_eq!(find_stop("héllo\n", &stops, 2), Some(6));
        assert_eq!(find_stop("no stop", &stops, 0), None);
    }

    #[test]
    fn without_stop_strings_everything_streams_at_once() {
        let (out, s) = run(&[], &["Hello", ", ", "world"]);
        assert_eq!(out, ["Hello", ", ", "world"]);
        assert!(!s.stopped());
        assert_eq!(s.text(), "Hello, world");
    }

    #[test]
    fn a_stop_split_across_pieces_is_found_and_never_streamed() {
        let (out, s) = run(&stops(&["<|end|>"]), &["Hi there<|", "en", "d|> and more"]);
        assert_eq!(out.concat(), "Hi there");
        assert!(out.iter().all(|p| !p.contains('<')), "{out:?}");
        assert!(s.stopped());
        assert_eq!(s.text(), "Hi there");
        assert_eq!(s.received(), "Hi there<|end|> and more");
        assert_eq!(s.into_text(), "Hi there");
    }

    #[test]
    fn the_tail_is_held_back_until_it_cannot_start_a_stop() {
        let mut s = StopStream::new(&stops(&["STOP"]));
        assert_eq!(s.push("abcdef"), Step { emit: "abc", stopped: false });
        assert_eq!(s.push("g"), Step { emit: "d", stopped: false });
        assert_eq!(s.finish(), "efg");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn a_partial_stop_that_does_not_complete_is_streamed_at_the_end() {
        let (out, s) = run(&stops(&["\n\n"]), &["one\n", "two"]);
        assert_eq!(out.concat(), "one\ntwo");
        assert!(!s.stopped());
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        let (out, s) = run(&stops(&["END", "\n", "User:"]), &["a User", ": b\nc END"]);
        assert_eq!(out.concat(), "a ");
        assert_eq!(s.text(), "a ");
        let (out, _) = run(&stops(&["END", "\n"]), &["x", "y\nEND"]);
        assert_eq!(out.concat(), "xy");
    }

    #[test]
    fn a_stop_at_the_very_start_streams_nothing() {
        let (out, s) = run(&stops(&["User:"]), &["User:", " hi"]);
        assert!(out.is_empty(), "{out:?}");
        assert!(s.stopped());
        assert_eq!(s.text(), "");
        let mut s = StopStream::new(&stops(&["\n"]));
        assert_eq!(s.push("\nrest"), Step { emit: "", stopped: true });
        assert_eq!(s.push("more"), Step { emit: "", stopped: true });
        assert_eq!(s.received(), "\nrest");
    }

    #[test]
    fn multi_byte_characters_are_never_cut() {
        // The hold-back (3 bytes) ends inside "😀": what is streamed stops before the character.
        let mut s = StopStream::new(&stops(&["STOP"]));
        assert_eq!(s.push("aé😀"), Step { emit: "aé", stopped: false });
        assert_eq!(s.push("b"), Step { emit: "", stopped: false });
        assert_eq!(s.push("cd"), Step { emit: "😀", stopped: false });
        assert_eq!(s.finish(), "bcd");
        // A one-byte hold-back inside "é".
        let mut s = StopStream::new(&stops(&["ST"]));
        assert_eq!(s.push("aé"), Step { emit: "a", stopped: false });
        assert_eq!(s.push("x"), Step { emit: "é", stopped: false });
        // A multi-byte stop string split inside a character's bytes is impossible with `&str` pieces, but one split
        // between characters is found.
        let (out, s) = run(&stops(&["—fin"]), &["été —", "fin!"]);
        assert_eq!(out.concat(), "été ");
        assert_eq!(s.text(), "été ");
    }

    #[test]
    fn push_last_holds_nothing_back_but_still_cuts_a_stop() {
        let mut s = StopStream::new(&stops(&["STOP"]));
        assert_eq!(s.push("abcdef"), Step { emit: "abc", stopped: false });
        assert_eq!(s.push_last("gh"), Step { emit: "defgh", stopped: false });
        let mut s = StopStream::new(&stops(&["STOP"]));
        assert_eq!(s.push("abST"), Step { emit: "a", stopped: false });
        assert_eq!(s.push_last("OPx"), Step { emit: "b", stopped: true });
        assert_eq!(s.finish(), "");
        assert_eq!(s.text(), "ab");
    }
}
