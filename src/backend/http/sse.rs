//! Server-Sent Events, the framing every flavor streams in: bytes from the network become [`SseEvent`]s, and an
//! event's data becomes JSON. Pure and flavor-blind: what the JSON means is each flavor's business
//! ([`super::llama_server`], [`super::koboldcpp`], [`super::openai`]); reading from the network is the client's.
//!
//! The server is untrusted, so the parser is bounded: a line longer than [`MAX_LINE`] bytes or an event whose data
//! lines add up to more than [`MAX_EVENT_DATA`] is an error, not a growing buffer. Each byte is scanned for a
//! newline once (the search resumes where the last one stopped), and complete lines leave the buffer in one move
//! per push, so a line that arrives in many small chunks costs time in proportion to its length.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// The longest SSE line accepted, in bytes (without its line ending). Real events are one JSON object of a few
/// hundred bytes; llama-server's largest (the final one, with its settings) is a few KiB.
pub const MAX_LINE: usize = 1 << 20;

/// The most data one event may carry, in bytes, summed over its `data:` lines.
pub const MAX_EVENT_DATA: usize = 1 << 20;

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field (empty when absent).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The raw line the data started on, for error messages.
    pub line: String,
}

/// Splits a byte stream into Server-Sent Events. Pure: fed with whatever chunks the network delivers.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    current: SseEvent,
    has_data: bool,
}

/// Shortens text quoted in an error message to `n` characters.
pub(super) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

impl SseParser {
    /// Feeds bytes and returns the events they complete.
    ///
    /// # Errors
    /// A line that is not UTF-8 or not an SSE field (`data`, `event`, `id`, `retry`, or a `:` comment), a line
    /// longer than [`MAX_LINE`], or an event with more than [`MAX_EVENT_DATA`] of data; the message quotes the
    /// line's start. llama-server's `error: {...}` line is returned as an event named `error`.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>> {
        self.buf.extend_from_slice(bytes);
        // Taken out while its lines are read, so that a line can borrow it while the parser's state changes.
        let buf = std::mem::take(&mut self.buf);
        let mut from = std::mem::take(&mut self.scanned);
        // An error below drops `buf`: the parser is then empty, and `scanned` already 0 for a later call.
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = buf[from..].iter().position(|&b| b == b'\n') {
            let nl = from + pos;
            let mut line = &buf[start..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.len() > MAX_LINE {
                bail!("{}", too_long(line));
            }
            let text = std::str::from_utf8(line).map_err(|_| {
                anyhow!("malformed SSE line (not UTF-8): {}", clip(&String::from_utf8_lossy(line), 200))
            })?;
            self.line(text, &mut out)?;
            start = nl + 1;
            from = start;
        }
        self.buf = buf;
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        // A partial line may still lose a trailing `\r`: one byte more than a line is allowed.
        if self.buf.len() > MAX_LINE + 1 {
            bail!("{}", too_long(&self.buf));
        }
        Ok(out)
    }

    /// Ends the stream: returns a last event that was not followed by a blank line.
    #[must_use]
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.has_data {
            self.has_data = false;
            Some(std::mem::take(&mut self.current))
        } else {
            None
        }
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) -> Result<()> {
        if line.is_empty() {
            if let Some(e) = self.finish() {
                out.push(e);
            }
            self.current = SseEvent::default();
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.current.data.len() + value.len() + 1 > MAX_EVENT_DATA {
                    bail!(
                        "an SSE event carries more than {} MiB of data: {}",
                        MAX_EVENT_DATA >> 20,
                        clip(&self.current.line, 200)
                    );
                }
                if self.has_data {
                    self.current.data.push('\n');
                } else {
                    self.current.line = clip(line, 200);
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            // llama-server writes errors in a stream as `error: {json}`.
            "error" => {
                self.current.event = "error".into();
                self.current.data = value.to_string();
                self.current.line = clip(line, 200);
                self.has_data = true;
            }
            "event" => self.current.event = value.to_string(),
            "id" | "retry" => {}
            _ => bail!("malformed SSE line: {}", clip(line, 200)),
        }
        Ok(())
    }
}

/// The error for a line over [`MAX_LINE`], quoting its start.
fn too_long(line: &[u8]) -> String {
    let head = &line[..line.len().min(200)];
    format!(
        "malformed SSE stream: a line longer than {} MiB (a server must end each line with a newline): {}",
        MAX_LINE >> 20,
        clip(&String::from_utf8_lossy(head), 200)
    )
}

/// Parses an event's data as JSON.
///
/// # Errors
/// When the data is not JSON; the message quotes the line.
pub fn event_json(event: &SseEvent) -> Result<Value> {
    serde_json::from_str(&event.data).map_err(|e| anyhow!("malformed SSE data ({e}): {}", event.line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::http::server_message;

    #[test]
    fn sse_parser_joins_split_chunks_and_crlf() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: message\r\nda").unwrap().is_empty());
        let ev = p.push(b"ta: {\"a\":1}\r\n\r\n: ping\n\ndata: x\ndata: y\n\n").unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].event, "message");
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].data, "x\ny");
        assert!(p.finish().is_none());
    }

    #[test]
    fn sse_parser_names_a_malformed_line() {
        let mut p = SseParser::default();
        let e = p.push(b"data: ok\n\ngarbage line here\n").unwrap_err();
        assert!(e.to_string().contains("garbage line here"), "{e}");
        let mut p = SseParser::default();
        let ev = p.push(b"data: {not json}\n\n").unwrap();
        let e = event_json(&ev[0]).unwrap_err();
        assert!(e.to_string().contains("data: {not json}"), "{e}");
    }

    #[test]
    fn sse_parser_keeps_llama_server_error_lines() {
        let mut p = SseParser::default();
        let ev = p.push(b"error: {\"code\":500,\"message\":\"boom\"}\n\n").unwrap();
        assert_eq!(ev[0].event, "error");
        assert_eq!(server_message(&ev[0].data), "boom");
    }

    #[test]
    fn issue_15_a_line_without_newline_is_capped_at_1_mib() {
        let mut p = SseParser::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut failed = None;
        // 2 MiB of one line, as the network delivers it: the error comes once the line passes 1 MiB.
        for i in 0..32 {
            if let Err(e) = p.push(&chunk) {
                failed = Some((i, e.to_string()));
                break;
            }
        }
        let (at, e) = failed.expect("a 2 MiB line must be refused");
        assert_eq!(at, 16, "refused as soon as it passes 1 MiB");
        assert!(e.contains("longer than 1 MiB") && e.contains("xxx"), "{e}");
        // A line of exactly 1 MiB is fine, whole or in pieces.
        let mut p = SseParser::default();
        let line = format!("data: {}\r\n\n", "y".repeat(MAX_LINE - 6));
        for piece in line.as_bytes().chunks(4096) {
            p.push(piece).unwrap();
        }
        assert!(p.finish().is_none(), "the blank line ended the event");
        let mut p = SseParser::default();
        assert_eq!(p.push(line.as_bytes()).unwrap()[0].data.len(), MAX_LINE - 6);
    }

    #[test]
    fn issue_15_an_event_of_many_data_lines_is_capped_at_1_mib() {
        let mut p = SseParser::default();
        let line = format!("data: {}\n", "z".repeat(1000));
        let mut failed = None;
        for i in 0..2000 {
            if let Err(e) = p.push(line.as_bytes()) {
                failed = Some((i, e.to_string()));
                break;
            }
        }
        let (at, e) = failed.expect("data lines without a blank line must not grow one event for ever");
        assert!((1040..1050).contains(&at), "refused near 1 MiB, at line {at}");
        assert!(e.contains("more than 1 MiB of data"), "{e}");
    }

    #[test]
    fn issue_15_comments_and_partial_lines_make_no_event() {
        let mut p = SseParser::default();
        for _ in 0..1000 {
            assert!(p.push(b": keep-alive\n\n").unwrap().is_empty());
        }
        assert!(p.push(b"data: {\"a\"").unwrap().is_empty());
        let ev = p.push(b":1}\n\n").unwrap();
        assert_eq!(ev[0].data, "{\"a\":1}");
    }

    #[test]
    fn a_push_after_an_error_does_not_panic() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: a").unwrap().is_empty(), "a partial line is kept");
        assert!(p.push(b"\nbogus\n").is_err());
        // The parser is empty now: a later push must start afresh, not slice at the old offset.
        assert!(p.push(b"d").unwrap().is_empty());
        assert_eq!(p.push(b"ata: b\n\n").unwrap().len(), 1);
    }
}
