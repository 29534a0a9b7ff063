//! Readers for every transcript format `analyze` accepts, each turning a file into one [`Conversation`].
//!
//! Formats, and how they are recognised from the content (never from the name alone):
//! * **parrot JSONL** (`transcript.rs`): the first line is a header with `"format": "parrot-transcript"`.
//! * **original `.log`**: a `--- DONE ---` line, then `Full Config:`, the config JSON, the models, and
//!   `=== role @ tokens ===` messages (see `original-design.md`). A log without `--- DONE ---` holds no
//!   conversation section (the original writes it at the end) and is reported as truncated.
//! * **chat JSON**: a JSON array of `{role, content}` messages, or an object `{"messages": [...]}` (the Hugging
//!   Face convention); `content` may be a string or a list of `{type: "text", text}` parts.
//! * **chat JSONL**: one `{role, content}` message per line.
//! * **ShareGPT**: `{"conversations": [{"from", "value"}]}`. Datasets publish many of them in one file, as a JSON
//!   array of such objects or as JSONL with one per line: [`read_path_all`] returns one conversation per entry
//!   (named `file#index`), while [`read_path`] accepts only files that hold exactly one.
//!
//! A parrot transcript is read line by line, each line capped at [`transcript::MAX_LINE_BYTES`], so memory is in
//! proportion to the conversation. The other formats are read into memory one file at a time, capped at
//! [`MAX_FILE_BYTES`] with a clear message, and the lines of the line-based ones (`.log`, JSONL) are capped like a
//! transcript's: a 1 GiB line is refused after its first 64 MiB, never read whole. Only a JSON document (chat
//! JSON, a ShareGPT array) may be one long line: it is a document, not a line.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::{Conversation, Format, Message, Origin};
use crate::transcript::{self, EndReason, Speaker};

/// Files larger than this are refused rather than read into memory (1 GiB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

impl Format {
    /// Every format, in the order detection tries them.
    pub const ALL: [Format; 5] =
        [Format::Parrot, Format::LegacyLog, Format::ChatJson, Format::ChatJsonl, Format::Sharegpt];

    /// The name used by `--format` and in the output.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Format::Parrot => "parrot",
            Format::LegacyLog => "legacy_log",
            Format::ChatJson => "chat_json",
            Format::ChatJsonl => "chat_jsonl",
            Format::Sharegpt => "sharegpt",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.to_ascii_lowercase().replace('-', "_");
        Format::ALL.into_iter().find(|f| f.name() == norm || (norm == "log" && *f == Format::LegacyLog)).ok_or_else(
            || anyhow!("unknown format '{s}': expected one of parrot, legacy_log, chat_json, chat_jsonl, sharegpt"),
        )
    }
}

/// Reads one conversation from a file, detecting its format unless `forced`.
///
/// # Errors
/// When the file cannot be read, is not valid UTF-8, is empty, truncated or malformed, or holds several
/// conversations (use [`read_path_all`] for datasets).
pub fn read_path(path: &Path, forced: Option<Format>) -> Result<Conversation> {
    let mut all = read_path_all(path, forced)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => bail!("the file holds {n} conversations, not one"),
    }
}

/// Reads every conversation of a file (one for all formats but ShareGPT datasets).
///
/// # Errors
/// As [`read_path`], except that several conversations are fine.
pub fn read_path_all(path: &Path, forced: Option<Format>) -> Result<Vec<Conversation>> {
    let file = std::fs::File::open(path).context("could not open the file")?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_FILE_BYTES {
        bail!("the file is {len} bytes, more than the {MAX_FILE_BYTES} bytes parrot analyzes in one piece");
    }
    parse_reader_all(file, &path.display().to_string(), forced)
}

/// Reads one conversation from a reader; `name` becomes [`Conversation::source`].
///
/// # Errors
/// As [`read_path`].
pub fn parse_reader<R: Read>(reader: R, name: &str, forced: Option<Format>) -> Result<Conversation> {
    let mut all = parse_reader_all(reader, name, forced)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => bail!("the file holds {n} conversations, not one"),
    }
}

/// Reads every conversation from a reader.
///
/// # Errors
/// As [`read_path_all`].
pub fn parse_reader_all<R: Read>(reader: R, name: &str, forced: Option<Format>) -> Result<Vec<Conversation>> {
    let mut reader = std::io::BufReader::new(reader.take(MAX_FILE_BYTES + 1));
    let too_long = |line: usize| {
        anyhow!(
            "line {line} is longer than {} MiB, the most parrot reads of one line",
            transcript::MAX_LINE_BYTES >> 20
        )
    };
    // The first line, capped: a parrot header means the rest is read line by line as it streams.
    let mut bytes = Vec::new();
    let first = transcript::read_capped_line(&mut reader, &mut bytes, transcript::MAX_LINE_BYTES);
    match first {
        Err(transcript::LineError::TooLong) if !starts_like_json(&bytes) => return Err(too_long(1)),
        Err(transcript::LineError::Io(e)) => return Err(e).context("could not read the file"),
        _ => {}
    }
    if first.is_ok() && matches!(forced, None | Some(Format::Parrot)) && is_parrot_header(&bytes) {
        if bytes.starts_with(b"\xef\xbb\xbf") {
            bytes.drain(..3);
        }
        let t = transcript::read_transcript(std::io::Cursor::new(bytes).chain(reader), name)
            .map_err(|e| anyhow!("{}", strip_name(&e.to_string(), name)))?;
        return Ok(vec![conversation_of_transcript(t, name)]);
    }
    if first.is_ok() && is_line_based(&bytes) {
        // Lines (a `.log`, JSONL): every one capped as it is read.
        let mut line = 1;
        loop {
            line += 1;
            match transcript::read_capped_line(&mut reader, &mut bytes, transcript::MAX_LINE_BYTES) {
                Ok(0) => break,
                Ok(_) => {}
                Err(transcript::LineError::TooLong) => return Err(too_long(line)),
                Err(e) => return Err(anyhow!("{e}")).context("could not read the file"),
            }
        }
    } else {
        // A JSON document, which may be one long line.
        reader.read_to_end(&mut bytes).context("could not read the file")?;
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        bail!("the file is larger than the {MAX_FILE_BYTES} bytes parrot analyzes in one piece");
    }
    let text = decode(&bytes)?;
    parse_str_all(text, name, forced)
}

/// Whether a first line is a parrot transcript header (a byte-order mark allowed).
fn is_parrot_header(line: &[u8]) -> bool {
    let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    std::str::from_utf8(line).ok().and_then(|l| serde_json::from_str::<Value>(l).ok()).is_some_and(|v| {
        v.get("type").and_then(Value::as_str) == Some("header")
            && v.get("format").and_then(Value::as_str) == Some(transcript::FORMAT_NAME)
    })
}

/// Whether text begins (after a byte-order mark and white space) like a JSON document.
fn starts_like_json(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    matches!(bytes.iter().find(|b| !b.is_ascii_whitespace()), Some(b'[' | b'{'))
}

/// Whether a file whose first line is `first` is read line by line: anything but a JSON document, which begins
/// with `[` or `{` and whose first line is not a whole JSON value (JSONL lines are).
fn is_line_based(first: &[u8]) -> bool {
    !starts_like_json(first) || serde_json::from_slice::<serde::de::IgnoredAny>(first.trim_ascii()).is_ok()
}

/// The transcript reader's message without its leading `NAME: ` (the caller names the file).
fn strip_name<'a>(message: &'a str, name: &str) -> &'a str {
    message.strip_prefix(name).and_then(|m| m.strip_prefix(": ")).unwrap_or(message)
}

/// The first line of `text` longer than [`transcript::MAX_LINE_BYTES`], as an error naming it.
fn check_lines(text: &str) -> Result<()> {
    match text.split('\n').position(|l| l.len() > transcript::MAX_LINE_BYTES) {
        Some(i) => bail!(
            "line {} is longer than {} MiB, the most parrot reads of one line",
            i + 1,
            transcript::MAX_LINE_BYTES >> 20
        ),
        None => Ok(()),
    }
}

/// Checks UTF-8 and drops a byte-order mark, naming the line of the first bad byte.
///
/// A multi-byte character cut off at the very end (a write torn by a crash) drops the last line, as `run` treats a
/// torn last line, instead of failing the whole file.
fn decode(bytes: &[u8]) -> Result<&str> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    std::str::from_utf8(bytes)
        .or_else(|e| {
            if e.error_len().is_none() {
                let at = e.valid_up_to();
                let keep = bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                // The prefix up to `valid_up_to` is valid UTF-8 and a newline is a character boundary.
                if let Ok(text) = std::str::from_utf8(&bytes[..keep]) {
                    return Ok(text);
                }
            }
            Err(e)
        })
        .map_err(|e| {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            anyhow!("not valid UTF-8: line {line}, byte {at} (is it a text transcript?)")
        })
}

/// Parses text in a known or detected format.
///
/// # Errors
/// As [`read_path_all`].
pub fn parse_str_all(text: &str, name: &str, forced: Option<Format>) -> Result<Vec<Conversation>> {
    if text.trim().is_empty() {
        bail!("the file is empty");
    }
    let format = match forced {
        Some(f) => f,
        None => detect(text).ok_or_else(|| {
            anyhow!(
                "unrecognised format: not a parrot transcript, an original .log, chat JSON/JSONL or ShareGPT \
                 (use --format to force one)"
            )
        })?,
    };
    if matches!(format, Format::LegacyLog | Format::ChatJsonl)
        || format == Format::Sharegpt && !starts_like_json(text.as_bytes())
    {
        check_lines(text)?;
    }
    match format {
        Format::Parrot => parse_parrot(text, name).map(|c| vec![c]),
        Format::LegacyLog => parse_legacy_log(text, name).map(|c| vec![c]),
        Format::ChatJson => parse_chat_json(text, name).map(|c| vec![c]),
        Format::ChatJsonl => parse_chat_jsonl(text, name).map(|c| vec![c]),
        Format::Sharegpt => parse_sharegpt(text, name),
    }
}

/// Guesses the format from the content.
#[must_use]
pub fn detect(text: &str) -> Option<Format> {
    let trimmed = text.trim_start();
    let first_line = trimmed.lines().next().unwrap_or("");
    if trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(trimmed).ok()?;
        let first = v.as_array()?.first()?;
        return if first.get("conversations").is_some() {
            Some(Format::Sharegpt)
        } else if first.get("role").is_some() {
            Some(Format::ChatJson)
        } else {
            None
        };
    }
    if trimmed.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<Value>(first_line) {
            if v.get("type").and_then(Value::as_str) == Some("header") {
                return Some(Format::Parrot);
            }
            if v.get("role").is_some() {
                return Some(Format::ChatJsonl);
            }
            if v.get("conversations").is_some() {
                return Some(Format::Sharegpt);
            }
            if v.get("messages").is_some() {
                return Some(Format::ChatJson);
            }
            return None;
        }
        // A pretty-printed object.
        let v: Value = serde_json::from_str(trimmed).ok()?;
        return if v.get("conversations").is_some() {
            Some(Format::Sharegpt)
        } else if v.get("messages").is_some() {
            Some(Format::ChatJson)
        } else {
            None
        };
    }
    let looks_like_log = text.lines().any(|l| l == "--- DONE ---")
        || first_line.starts_with("--- ") && first_line.ends_with(" ---")
        || text.lines().any(|l| l.starts_with("=== ") && l.ends_with(" ==="));
    looks_like_log.then_some(Format::LegacyLog)
}

fn empty_conversation(name: &str, format: Format) -> Conversation {
    Conversation {
        source: name.to_string(),
        format,
        config: None,
        origin: Origin::default(),
        agent_prefix: None,
        user_prefix: None,
        messages: Vec::new(),
        tokens_per_s: None,
        complete: true,
        warnings: Vec::new(),
    }
}

fn text_message(speaker: Speaker, text: String, prefix: Option<&str>) -> Message {
    let prefix = prefix.filter(|p| !p.is_empty() && text.starts_with(*p)).map(str::to_string);
    Message {
        speaker,
        text,
        prefix,
        opening: false,
        tokens: None,
        max_tokens: None,
        stop_reason: None,
        tokens_so_far: None,
    }
}

fn config_str(config: &Value, key: &str) -> Option<String> {
    config.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Parses a parrot JSONL transcript. A torn last line (an interrupted write) is tolerated and marks the
/// conversation incomplete.
///
/// # Errors
/// When the header or a line before the last is not a valid record.
pub fn parse_parrot(text: &str, name: &str) -> Result<Conversation> {
    let t = transcript::read_transcript(text.as_bytes(), name)?;
    Ok(conversation_of_transcript(t, name))
}

/// The conversation of a transcript read back. Takes the transcript by value and moves each turn's text into its
/// message, so the text is held once, never twice.
fn conversation_of_transcript(t: transcript::Transcript, name: &str) -> Conversation {
    let mut conv = empty_conversation(name, Format::Parrot);
    let transcript::Transcript { header, turns, summary, torn_tail } = t;
    let config = header.config;
    let generated_prefix = |s: Speaker| {
        turns.iter().find(|m| m.speaker == s && !m.opening && !m.prefix.is_empty()).map(|m| m.prefix.clone())
    };
    conv.agent_prefix = config_str(&config, "agent_prefix").or_else(|| generated_prefix(Speaker::Assistant));
    conv.user_prefix = config_str(&config, "user_prefix").or_else(|| generated_prefix(Speaker::User));
    conv.config = Some(config);
    let model = |m: transcript::ModelRecord| Some(m.name.unwrap_or(m.path));
    conv.origin = Origin {
        backend: Some(header.backend),
        user_backend: Some(header.user_backend),
        assistant_model: model(header.assistant_model),
        user_model: model(header.user_model),
    };
    conv.messages = turns
        .into_iter()
        .map(|r| Message {
            speaker: r.speaker,
            text: r.text,
            prefix: (!r.prefix.is_empty()).then_some(r.prefix),
            opening: r.opening,
            tokens: (!r.opening).then_some(r.tokens),
            max_tokens: r.max_tokens,
            stop_reason: r.stop_reason,
            tokens_so_far: Some(r.tokens_so_far),
        })
        .collect();
    if let Some(s) = &summary {
        let ms = s.assistant.generation_ms + s.user.generation_ms;
        let tokens = s.assistant.tokens.saturating_add(s.user.tokens);
        conv.tokens_per_s = (ms > 0.0).then(|| tokens as f64 * 1000.0 / ms);
    }
    conv.complete = torn_tail.is_none() && summary.as_ref().is_some_and(|s| s.stop_reason != EndReason::Interrupted);
    conv
}

/// Parses the original tool's `.log`.
///
/// # Errors
/// When there is no `--- DONE ---` line (the run was cut off before the conversation was written), the config
/// line is not JSON, or no `=== role @ N ===` message follows.
pub fn parse_legacy_log(text: &str, name: &str) -> Result<Conversation> {
    let mut conv = empty_conversation(name, Format::LegacyLog);
    let lines: Vec<&str> = super::legacy::python_lines(text).collect();
    let done = lines.iter().position(|l| *l == "--- DONE ---").ok_or_else(|| {
        anyhow!(
            "no '--- DONE ---' line: the original tool was stopped before it wrote the conversation, so there is \
             nothing to analyze"
        )
    })?;
    let mut i = done + 1;
    // Header block: `Full Config:`, the JSON line, `Assistant Model: …`, `User Model: …`, until the first message.
    while i < lines.len() && is_message_header(lines[i]).is_none() {
        let line = lines[i];
        if line == "Full Config:" {
            let json = lines.get(i + 1).copied().unwrap_or("");
            let config: Value = serde_json::from_str(json)
                .with_context(|| format!("line {}: the config after 'Full Config:' is not valid JSON", i + 2))?;
            conv.agent_prefix = config_str(&config, "agent_prefix");
            conv.user_prefix = config_str(&config, "user_prefix");
            conv.config = Some(config);
            i += 2;
            continue;
        }
        if let Some(m) = line.strip_prefix("Assistant Model: ") {
            conv.origin.assistant_model = Some(m.to_string());
        } else if let Some(m) = line.strip_prefix("User Model: ") {
            conv.origin.user_model = Some(m.to_string());
        }
        i += 1;
    }
    // The config's `conversation` was extended in place by the run, so it holds every message; the opening ones
    // are those before the generated ones, and the streamed section has one `--- N ---` marker per generated
    // assistant + user pair.
    let pairs = lines[..done].iter().filter(|l| parse_marker(l)).count();
    let turn_max = conv
        .config
        .as_ref()
        .and_then(|c| c.get("turn_max_tokens"))
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok());
    let mut footer: Option<u64> = None;
    let mut current: Option<(Speaker, u64, Vec<&str>)> = None;
    let mut raw: Vec<(Speaker, u64, String)> = Vec::new();
    for (offset, line) in lines[i..].iter().enumerate() {
        if let Some(header) = is_message_header(line) {
            let (speaker, at) = header.with_context(|| format!("line {}: bad message header", i + offset + 1))?;
            if let Some((s, a, body)) = current.take() {
                raw.push((s, a, finish_body(body)));
            }
            current = Some((speaker, at, Vec::new()));
        } else if let Some(total) = parse_footer(line) {
            footer = Some(total);
            break;
        } else if let Some((_, _, body)) = current.as_mut() {
            body.push(line);
        }
    }
    if let Some((s, a, body)) = current.take() {
        raw.push((s, a, finish_body(body)));
    }
    if raw.is_empty() {
        bail!("no '=== role @ tokens ===' message after '--- DONE ---': the log is truncated or not from the original tool");
    }
    let count = raw.len();
    let openings = if pairs == 0 {
        // Without markers nothing tells generated from opening messages; read it as the original's example
        // config has them rather than as openings only (which would leave every detector silent).
        let kinds: Vec<Speaker> = raw.iter().map(|r| r.0).collect();
        let n = marker_less_openings(&kinds);
        if n < count {
            conv.warnings.push(format!(
                "no '--- N ---' stream markers before '--- DONE ---': took the first {n} message(s) (system, first \
                 assistant, first user, as the original's config has them) as the opening and the {} after them \
                 as generated",
                count - n
            ));
        }
        n
    } else {
        count.saturating_sub(2 * pairs)
    };
    for (k, (speaker, at, body)) in raw.iter().enumerate() {
        let prefix = match speaker {
            Speaker::Assistant => conv.agent_prefix.as_deref(),
            Speaker::User => conv.user_prefix.as_deref(),
            Speaker::System => None,
        };
        let mut m = text_message(*speaker, body.clone(), prefix);
        m.opening = k < openings;
        if !m.opening {
            m.max_tokens = turn_max;
        }
        // `@ N` is the budget consumed before the message; after it is the next header's N (or the footer's).
        let after = raw.get(k + 1).map(|r| r.1).or(footer);
        if !m.opening {
            m.tokens_so_far = after;
            m.tokens = after.map(|a| u32::try_from(a.saturating_sub(*at)).unwrap_or(u32::MAX));
        }
        if k + 1 == count && after.is_none() {
            m.tokens_so_far = None;
        }
        conv.messages.push(m);
    }
    conv.complete = footer.is_some();
    Ok(conv)
}

/// How many leading messages of a log without stream markers are the config's opening ones: the system messages,
/// then the first assistant message and the first user message when they come in that order (the original's
/// example config, `broken-record-config.json`, opens with exactly system, assistant, user).
fn marker_less_openings(speakers: &[Speaker]) -> usize {
    let mut n = speakers.iter().take_while(|s| **s == Speaker::System).count();
    if speakers.get(n) == Some(&Speaker::Assistant) {
        n += 1;
    }
    if speakers.get(n) == Some(&Speaker::User) {
        n += 1;
    }
    n
}

/// Message bodies end before the blank line that precedes the footer.
fn finish_body(mut body: Vec<&str>) -> String {
    while body.last().is_some_and(|l| l.is_empty()) {
        body.pop();
    }
    body.join("\n")
}

/// `Some(Ok(..))` for a valid `=== role @ N ===` line, `Some(Err)` for a malformed one, `None` for other lines.
fn is_message_header(line: &str) -> Option<Result<(Speaker, u64)>> {
    let inner = line.strip_prefix("=== ")?.strip_suffix(" ===")?;
    let (role, at) = inner.split_once(" @ ")?;
    Some((|| {
        let speaker = parse_role(role).ok_or_else(|| anyhow!("unknown role '{role}'"))?;
        let at = at.trim().parse::<u64>().with_context(|| format!("'{at}' is not a token count"))?;
        Ok((speaker, at))
    })())
}

/// A `--- N ---` marker of the streamed section.
fn parse_marker(line: &str) -> bool {
    line.strip_prefix("--- ").and_then(|l| l.strip_suffix(" ---")).is_some_and(|n| n.parse::<u64>().is_ok())
}

/// The final `--- N tokens, M turns ---` line.
fn parse_footer(line: &str) -> Option<u64> {
    let inner = line.strip_prefix("--- ")?.strip_suffix(" ---")?;
    let (tokens, rest) = inner.split_once(" tokens, ")?;
    rest.ends_with(" turns").then_some(())?;
    tokens.parse().ok()
}

/// Role names of chat formats and ShareGPT.
fn parse_role(role: &str) -> Option<Speaker> {
    match role.to_ascii_lowercase().as_str() {
        "system" => Some(Speaker::System),
        "assistant" | "gpt" | "model" | "bot" | "chatgpt" | "character" | "char" => Some(Speaker::Assistant),
        "user" | "human" | "you" => Some(Speaker::User),
        _ => None,
    }
}

/// The text of a chat `content`: a string, null, or a list of parts (`{type: "text", text}` or strings).
fn content_text(v: Option<&Value>) -> Result<String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.as_str().or_else(|| p.get("text").and_then(Value::as_str)))
            .collect::<Vec<_>>()
            .join("")),
        Some(other) => bail!("content is {}, not text", kind(other)),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn chat_message(v: &Value, role_key: &str, content_key: &str) -> Result<Message> {
    let role = v
        .get(role_key)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("a message has no \"{role_key}\" string: {}", shorten(&v.to_string(), 80)))?;
    let speaker = parse_role(role)
        .ok_or_else(|| anyhow!("unknown {role_key} '{role}' (expected system, user/human or assistant/gpt)"))?;
    let text = content_text(v.get(content_key)).with_context(|| format!("a '{role}' message"))?;
    Ok(text_message(speaker, text, None))
}

fn chat_conversation(
    name: &str,
    format: Format,
    messages: &[Value],
    role: &str,
    content: &str,
) -> Result<Conversation> {
    let mut conv = empty_conversation(name, format);
    for (i, v) in messages.iter().enumerate() {
        conv.messages.push(chat_message(v, role, content).with_context(|| format!("message {}", i + 1))?);
    }
    if conv.messages.is_empty() {
        bail!("the conversation has no messages");
    }
    Ok(conv)
}

/// Parses a JSON array of `{role, content}` messages (or `{"messages": [...]}`).
///
/// # Errors
/// When the text is not such a document.
pub fn parse_chat_json(text: &str, name: &str) -> Result<Conversation> {
    let v: Value = serde_json::from_str(text).context("not valid JSON")?;
    let messages = match &v {
        Value::Array(a) => a,
        Value::Object(o) => o
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("a JSON object without a \"messages\" array"))?,
        other => bail!("expected a JSON array of messages, found {}", kind(other)),
    };
    chat_conversation(name, Format::ChatJson, messages, "role", "content")
}

/// Parses JSONL with one `{role, content}` message per line (blank lines skipped).
///
/// # Errors
/// When a line is not such a message.
pub fn parse_chat_jsonl(text: &str, name: &str) -> Result<Conversation> {
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).with_context(|| format!("line {}: not valid JSON", i + 1))?;
        values.push(v);
    }
    chat_conversation(name, Format::ChatJsonl, &values, "role", "content")
}

/// Parses ShareGPT: one `{"conversations": [...]}` object, a JSON array of them, or JSONL with one per line.
///
/// # Errors
/// When the text is none of those, or an entry holds an unknown speaker.
pub fn parse_sharegpt(text: &str, name: &str) -> Result<Vec<Conversation>> {
    let entries: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a,
        Ok(v @ Value::Object(_)) => vec![v],
        Ok(other) => bail!("expected a ShareGPT object or array, found {}", kind(&other)),
        Err(whole) => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v = serde_json::from_str(line)
                    .with_context(|| format!("line {}: not valid JSON (nor is the whole file: {whole})", i + 1))?;
                out.push(v);
            }
            out
        }
    };
    if entries.is_empty() {
        bail!("no conversation in the file");
    }
    let many = entries.len() > 1;
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let source = if many { format!("{name}#{i}") } else { name.to_string() };
            let turns = e
                .get("conversations")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("entry {i} has no \"conversations\" array"))?;
            chat_conversation(&source, Format::Sharegpt, turns, "from", "value").with_context(|| format!("entry {i}"))
        })
        .collect()
}

/// Shortens text to at most `max` characters for messages and evidence, marking the cut with `…`.
#[must_use]
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{Header, ModelRecord, Record, SpeakerTotals, StopReason, Summary, TurnRecord};

    const LOG: &str = "\n--- 0 ---\n\nSkye: hi\nMark: \"yo\n--- DONE ---\nFull Config:\n\
{\"conversation\": [{\"role\": \"system\", \"content\": \"S\"}], \"agent_prefix\": \"Skye:\", \"user_prefix\": \"Mark: \\\"\"}\n\
Assistant Model: a.gguf\nUser Model: u.gguf\n\n=== system @ 0 ===\nS\n=== assistant @ 0 ===\nSkye: hi\nsecond line\n\
=== user @ 5 ===\nMark: \"yo\n\n--- 9 tokens, 3 turns ---\n";

    #[test]
    fn legacy_log_messages_tokens_and_prefixes() {
        assert_eq!(detect(LOG), Some(Format::LegacyLog));
        let c = parse_reader(LOG.as_bytes(), "x.log", None).unwrap();
        assert_eq!(c.format, Format::LegacyLog);
        assert!(c.complete);
        assert_eq!(c.agent_prefix.as_deref(), Some("Skye:"));
        assert_eq!(c.user_prefix.as_deref(), Some("Mark: \""));
        assert_eq!(c.origin.assistant_model.as_deref(), Some("a.gguf"));
        assert_eq!(c.origin.user_model.as_deref(), Some("u.gguf"));
        assert_eq!(c.origin.backend, None, "the original's log names no engine");
        assert_eq!(c.messages.len(), 3);
        assert!(c.messages[0].opening, "one `--- 0 ---` marker: the last two messages were generated");
        assert!(!c.messages[1].opening);
        assert_eq!(c.messages[1].text, "Skye: hi\nsecond line");
        assert_eq!(c.messages[1].prefix.as_deref(), Some("Skye:"));
        assert_eq!(c.messages[1].tokens, Some(5));
        assert_eq!(c.messages[2].tokens, Some(4));
        assert_eq!(c.messages[2].tokens_so_far, Some(9));
        assert_eq!(c.messages[2].text, "Mark: \"yo");
    }

    #[test]
    fn legacy_log_without_done_or_footer() {
        let cut = LOG.split("--- DONE ---").next().unwrap();
        let err = parse_reader(cut.as_bytes(), "x.log", None).unwrap_err();
        assert!(format!("{err:#}").contains("--- DONE ---"), "{err:#}");
        let no_footer = LOG.replace("--- 9 tokens, 3 turns ---\n", "");
        let c = parse_reader(no_footer.as_bytes(), "x.log", None).unwrap();
        assert!(!c.complete);
        assert_eq!(c.messages.len(), 3);
    }

    /// #14: a log without `--- N ---` markers was read as opening messages only, and every detector was silent.
    #[test]
    fn legacy_log_without_stream_markers_infers_the_openings() {
        let body = "=== system @ 0 ===\nS\n=== assistant @ 0 ===\nSkye: hi\n=== user @ 0 ===\nMark: \"yo\n\
=== assistant @ 0 ===\nSkye: again\n=== user @ 7 ===\nMark: \"so\n\n--- 12 tokens, 2 turns ---\n";
        let config = LOG.split("=== system").next().unwrap().split("--- DONE ---").nth(1).unwrap();
        let log = format!("Skye: again\nMark: \"so\n--- DONE ---{config}{body}");
        let c = parse_reader(log.as_bytes(), "x.log", None).unwrap();
        assert_eq!(c.messages.len(), 5);
        let openings: Vec<bool> = c.messages.iter().map(|m| m.opening).collect();
        assert_eq!(openings, [true, true, true, false, false]);
        assert_eq!(c.messages[3].tokens, Some(7));
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("no '--- N ---' stream markers") && c.warnings[0].contains("first 3"));
        let a = crate::analysis::analyze(&c);
        assert_eq!(a.warnings, c.warnings, "the warning reaches the analysis (and --json)");
        // With markers nothing is guessed.
        assert!(parse_reader(LOG.as_bytes(), "x.log", None).unwrap().warnings.is_empty());
        assert_eq!(marker_less_openings(&[Speaker::Assistant, Speaker::User, Speaker::Assistant]), 2);
        assert_eq!(marker_less_openings(&[Speaker::User, Speaker::Assistant]), 1);
    }

    #[test]
    fn chat_json_and_messages_object() {
        let text = r#"[{"role":"system","content":"be nice"},{"role":"user","content":"hi"},
            {"role":"assistant","content":[{"type":"text","text":"hel"},{"type":"text","text":"lo"}]}]"#;
        assert_eq!(detect(text), Some(Format::ChatJson));
        let c = parse_reader(text.as_bytes(), "c.json", None).unwrap();
        assert_eq!(c.messages.len(), 3);
        assert_eq!(c.messages[2].speaker, Speaker::Assistant);
        assert_eq!(c.messages[2].text, "hello");
        let obj = r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#;
        assert_eq!(parse_reader(obj.as_bytes(), "o.json", None).unwrap().messages.len(), 2);
        let bad = r#"[{"role":"wizard","content":"a"}]"#;
        let err = parse_reader(bad.as_bytes(), "b.json", Some(Format::ChatJson)).unwrap_err();
        assert!(format!("{err:#}").contains("unknown role 'wizard'"), "{err:#}");
    }

    #[test]
    fn chat_jsonl_one_message_per_line() {
        let text = "{\"role\":\"user\",\"content\":\"hi\"}\n\n{\"role\":\"assistant\",\"content\":\"yo\"}\n";
        assert_eq!(detect(text), Some(Format::ChatJsonl));
        let c = parse_reader(text.as_bytes(), "c.jsonl", None).unwrap();
        assert_eq!(c.format, Format::ChatJsonl);
        assert_eq!(c.messages[1].text, "yo");
        let err =
            parse_reader(&b"{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":"[..], "c.jsonl", None).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    #[test]
    fn sharegpt_object_array_and_jsonl() {
        let one = r#"{"conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"hello"}]}"#;
        assert_eq!(detect(one), Some(Format::Sharegpt));
        let c = parse_reader(one.as_bytes(), "s.json", None).unwrap();
        assert_eq!(c.messages[0].speaker, Speaker::User);
        assert_eq!(c.messages[1].speaker, Speaker::Assistant);
        let array = format!("[{one},{one}]");
        let all = parse_reader_all(array.as_bytes(), "s.json", None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].source, "s.json#1");
        assert!(parse_reader(array.as_bytes(), "s.json", None).is_err());
        let jsonl = format!("{one}\n{one}\n{one}\n");
        assert_eq!(detect(&jsonl), Some(Format::Sharegpt));
        assert_eq!(parse_reader_all(jsonl.as_bytes(), "s.jsonl", None).unwrap().len(), 3);
    }

    fn header() -> Header {
        let model = ModelRecord {
            path: "m.gguf".into(),
            file_size: None,
            name: Some("Tiny".into()),
            architecture: None,
            n_ctx: 2048,
            chat_template_source: "gguf".into(),
        };
        Header {
            format: transcript::FORMAT_NAME.into(),
            format_version: transcript::FORMAT_VERSION,
            parrot_version: "0.1.0".into(),
            started: "2026-01-01T00:00:00Z".into(),
            config: serde_json::json!({"agent_prefix": "Skye:", "user_prefix": "Mark:"}),
            assistant_model: model.clone(),
            user_model: model,
            backend: "llama".into(),
            user_backend: "llama".into(),
            seed: 1,
            conversation_index: 0,
            cpu: None,
        }
    }

    fn turn(index: u32, speaker: Speaker, text: &str, prefix: &str, stop: StopReason) -> TurnRecord {
        TurnRecord {
            index,
            speaker,
            text: text.into(),
            prefix: prefix.into(),
            opening: false,
            tokens: 7,
            prompt_tokens: 10,
            prompt_tokens_evaluated: 10,
            dropped_messages: 0,
            stop_reason: Some(stop),
            max_tokens: Some(64),
            tokens_so_far: 7 * u64::from(index + 1),
            timings: None,
            endpoint: None,
        }
    }

    #[test]
    fn parrot_transcript_round_trip() {
        let mut out = Vec::new();
        let push = |out: &mut Vec<u8>, r: Record| {
            out.extend(serde_json::to_vec(&r).unwrap());
            out.push(b'\n');
        };
        push(&mut out, Record::Header(Box::new(header())));
        push(&mut out, Record::Turn(turn(0, Speaker::Assistant, "Skye: hi", "Skye:", StopReason::Eos)));
        push(&mut out, Record::Turn(turn(1, Speaker::User, "Mark: yo", "Mark:", StopReason::MaxTokens)));
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(detect(&text), Some(Format::Parrot));
        let c = parse_reader(&out[..], "t.jsonl", None).unwrap();
        assert!(!c.complete, "no summary yet");
        assert_eq!(c.agent_prefix.as_deref(), Some("Skye:"));
        assert_eq!(c.origin.user_model.as_deref(), Some("Tiny"));
        assert_eq!(c.origin.backend.as_deref(), Some("llama"));
        assert_eq!(c.origin.user_backend.as_deref(), Some("llama"));
        assert_eq!(c.messages[1].stop_reason, Some(StopReason::MaxTokens));
        assert_eq!(c.messages[1].tokens, Some(7));
        push(
            &mut out,
            Record::Summary(Summary {
                stop_reason: EndReason::Budget,
                error: None,
                messages: 2,
                total_tokens: 14,
                wall_ms: 10.0,
                assistant: SpeakerTotals { turns: 1, tokens: 7, generation_ms: 500.0, ..Default::default() },
                user: SpeakerTotals { turns: 1, tokens: 7, generation_ms: 500.0, ..Default::default() },
            }),
        );
        let c = parse_reader(&out[..], "t.jsonl", None).unwrap();
        assert!(c.complete);
        assert_eq!(c.tokens_per_s, Some(14.0));
    }

    #[test]
    fn bad_inputs_give_clear_errors() {
        let e = |b: &[u8]| format!("{:#}", parse_reader(b, "f", None).unwrap_err());
        assert!(e(b"").contains("empty"));
        assert!(e(b"  \n").contains("empty"));
        assert!(e(b"hello\xff\xfe world").contains("not valid UTF-8: line 1"));
        assert!(e(b"just some prose\n").contains("unrecognised format"));
        assert!(e(b"[1, 2").contains("unrecognised format"));
        assert!(e(b"{\"a\": 1}").contains("unrecognised format"));
        let forced = format!("{:#}", parse_reader(&b"[1,2]"[..], "f", Some(Format::Parrot)).unwrap_err());
        assert!(forced.contains("line 1"), "{forced}");
        let huge_line = "x".repeat(5_000_000);
        assert!(e(huge_line.as_bytes()).contains("unrecognised format"));
    }

    #[test]
    fn a_torn_multibyte_character_at_the_end_drops_only_the_last_line() {
        let text =
            "[\n  {\"role\": \"user\", \"content\": \"hi\"},\n  {\"role\": \"assistant\", \"content\": \"yo\"}\n]\n";
        let mut bytes = text.as_bytes().to_vec();
        // A crash in the middle of writing "é" (0xC3 0xA9) on a new last line.
        bytes.extend_from_slice(b"caf\xc3");
        let c = parse_reader(&bytes[..], "f", None).unwrap();
        assert_eq!(c.messages.len(), 2);
        // A bad byte that is not at the end still fails, naming the line.
        let e = format!("{:#}", parse_reader(&b"[]\n\xc3x\n"[..], "f", None).unwrap_err());
        assert!(e.contains("not valid UTF-8: line 2"), "{e}");
    }

    #[test]
    fn format_names_parse() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
        }
        assert_eq!("log".parse::<Format>().unwrap(), Format::LegacyLog);
        assert!("xml".parse::<Format>().is_err());
    }

    /// Bytes `b` for ever (well, `n` of them), counting how many were read.
    struct Endless {
        left: u64,
        read: std::rc::Rc<std::cell::Cell<u64>>,
    }
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
            buf[..n].fill(b'a');
            self.left -= n as u64;
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }

    #[test]
    fn issue_15_a_1_gib_line_is_refused_without_being_read_whole() {
        let bound = transcript::MAX_LINE_BYTES as u64 + (1 << 20);
        for (head, line) in
            [(&b""[..], 1), (&b"{\"role\":\"user\",\"content\":\"hi\"}\n"[..], 2), (&b"--- DONE ---\n"[..], 2)]
        {
            let read = std::rc::Rc::new(std::cell::Cell::new(0));
            let endless = Endless { left: 1 << 30, read: read.clone() };
            let err = parse_reader_all(head.chain(endless), "x", None).unwrap_err().to_string();
            assert_eq!(err, format!("line {line} is longer than 64 MiB, the most parrot reads of one line"));
            assert!(read.get() < bound, "read {} bytes", read.get());
        }
        // A parrot transcript streams: its header, then a turn line that never ends.
        let mut head = serde_json::to_vec(&Record::Header(Box::new(header()))).unwrap();
        head.push(b'\n');
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let err = parse_reader_all((&head[..]).chain(Endless { left: 1 << 30, read: read.clone() }), "t.jsonl", None)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "line 2 is longer than 64 MiB, the most parrot reads of one line");
        assert!(read.get() < bound, "read {} bytes", read.get());
    }

    /// #15: a transcript's summary is input; token counts at the top of u64 must not overflow when added.
    #[test]
    fn a_summary_with_huge_token_counts_reads_without_overflow() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/report/pen11/conv-0.jsonl");
        let text =
            std::fs::read_to_string(path).unwrap().replace("\"tokens\": 66,", "\"tokens\": 18446744073709551615,");
        let text = text.replace("\"tokens\": 48,", "\"tokens\": 18446744073709551615,");
        assert_eq!(text.matches("18446744073709551615").count(), 2);
        let conv = parse_reader(text.as_bytes(), "conv-0.jsonl", None).unwrap();
        assert!(conv.tokens_per_s.is_some_and(f64::is_finite));
    }
}
