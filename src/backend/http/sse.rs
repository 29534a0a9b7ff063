//! Server-Sent Events, the framing every flavor streams in: bytes from the network become [`SseEvent`]s, and an
//! event's data becomes JSON. Pure and flavor-blind: what the JSON means is each flavor's business
//! ([`super::llama_server`], [`super::koboldcpp`], [`super::openai`]); reading from the network is the client's.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

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
    /// A line that is not UTF-8 or not an SSE field (`data`, `event`, `id`, `retry`, or a `:` comment); the message
    /// quotes the line. llama-server's `error: {...}` line is returned as an event named `error`.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=nl).collect();
            let mut line = &raw[..raw.len() - 1];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = std::str::from_utf8(line).map_err(|_| {
                anyhow!("malformed SSE line (not UTF-8): {}", clip(&String::from_utf8_lossy(line), 200))
            })?;
            self.line(line, &mut out)?;
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
}
