//! Property tests (proptest) of every parser of untrusted input (issue #15): config TOML/JSON, transcript JSONL,
//! the original's `.log`, chat JSON/JSONL, ShareGPT, the GGUF header and chat templates. Each gets arbitrary bytes
//! and structure-aware mutations of a real fixture (bytes flipped, JSON/log tokens inserted, ranges deleted or
//! duplicated, the end cut off): never a panic, and an error is one line (naming the file and line where the
//! parser knows them). A transcript written and read back gives the same records. 10,000 cases each, every case a
//! few KiB, so all of them take about a minute together.

use parrot::analysis::{analyze, formats, Format};
use parrot::chat_template::{self, ChatMessage, ChatTemplate};
use parrot::config::{Config, Syntax};
use parrot::gguf;
use parrot::transcript::{
    read_transcript, EndReason, Header, ModelRecord, Record, Speaker, SpeakerTotals, StopReason, Summary, Timings,
    TurnRecord, FORMAT_NAME, FORMAT_VERSION,
};
use proptest::prelude::*;

use crate::common::root;

fn config() -> ProptestConfig {
    // No regression files written into the checkout: a failure prints its minimal input. The cases are the same on
    // every run (a fixed seed), so that CI passes or fails on the code alone; `PROPTEST_RNG_SEED=N` explores others.
    let base = ProptestConfig::with_cases(10_000);
    let rng_seed = if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
        base.rng_seed
    } else {
        proptest::test_runner::RngSeed::Fixed(15)
    };
    ProptestConfig { failure_persistence: None, rng_seed, ..base }
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(root().join(path)).unwrap()
}

/// One edit of a fixture; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, &'static [u8]),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Cut(usize),
}

/// Tokens that make parsers take other paths: JSON structure, numbers at the edges, the log's markers, torn and
/// invalid UTF-8, template delimiters.
const TOKENS: [&[u8]; 24] = [
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b"\\u00",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"null",
    b"\"type\":\"header\"",
    b"=== user @ 3 ===",
    b"--- DONE ---",
    b"--- 9 tokens, 2 turns ---",
    b"\xff",
    b"\xc3",
    b"\xf0\x9f",
    b"{{",
    b"{%",
    b"\x00",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Set(p, b)),
        (any::<usize>(), prop::sample::select(&TOKENS[..])).prop_map(|(p, t)| Edit::Insert(p, t)),
        (any::<usize>(), 0usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        (any::<usize>(), 0usize..64).prop_map(|(p, n)| Edit::Duplicate(p, n)),
        any::<usize>().prop_map(Edit::Cut),
    ]
}

fn apply(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = base.to_vec();
    for e in edits {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match *e {
            Edit::Set(p, v) if !b.is_empty() => {
                let i = p % b.len();
                b[i] = v;
            }
            Edit::Set(..) => {}
            Edit::Insert(p, t) => {
                let i = at(p, b.len());
                b.splice(i..i, t.iter().copied());
            }
            Edit::Delete(p, n) => {
                let i = at(p, b.len());
                b.drain(i..(i + n).min(b.len()));
            }
            Edit::Duplicate(p, n) => {
                let i = at(p, b.len());
                let piece: Vec<u8> = b[i..(i + n).min(b.len())].to_vec();
                b.splice(i..i, piece);
            }
            Edit::Cut(p) => b.truncate(at(p, b.len())),
        }
    }
    b
}

/// Bytes for a parser: a mutation of `base` (most cases) or arbitrary bytes.
fn input(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(edit(), 1..6).prop_map(move |e| apply(&base, &e)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn one_line(e: &anyhow::Error) -> String {
    let m = format!("{e:#}");
    assert!(!m.is_empty() && !m.contains('\n'), "not one line: {m:?}");
    m
}

/// Every format reader: parse, and analyze what parses.
fn check_formats(bytes: &[u8], name: &str) {
    for forced in [None, Some(Format::Parrot), Some(Format::LegacyLog), Some(Format::ChatJsonl), Some(Format::Sharegpt)]
    {
        match formats::parse_reader_all(bytes, name, forced) {
            Ok(convs) => {
                for c in &convs {
                    let _ = analyze(c);
                }
            }
            Err(e) => {
                one_line(&e);
            }
        }
    }
}

/// The original's log, cut to its conversation section with a short config and three messages (so that a case
/// stays cheap).
fn small_log() -> Vec<u8> {
    let log = String::from_utf8(fixture("tests/fixtures/legacy/gemma-smol-parrot_2.log")).unwrap();
    let done = log.find("--- DONE ---").unwrap();
    let mut out = vec!["--- DONE ---", "Full Config:", r#"{"agent_prefix": "Skye:", "user_prefix": "Mark:"}"#];
    let mut messages = 0;
    for line in log[done..].lines().skip(3) {
        if line.starts_with("=== ") {
            messages += 1;
            if messages > 3 {
                break;
            }
        }
        out.push(line);
    }
    let mut text = out.join("\n");
    text.push_str("\n\n--- 100 tokens, 3 turns ---\n");
    text.into_bytes()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_toml_never_panics_and_names_the_file(bytes in input(fixture("tests/fixtures/user-first.toml"))) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = Config::from_str(&text, Syntax::Toml, "c.toml") {
            prop_assert!(one_line(&e).starts_with("c.toml:"));
        }
    }

    #[test]
    fn config_json_never_panics_and_names_the_file(
        bytes in input(fixture("tests/fixtures/broken-record-config.json"))
    ) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = Config::from_str(&text, Syntax::Json, "c.json") {
            prop_assert!(one_line(&e).starts_with("c.json:"));
        }
    }

    #[test]
    fn transcript_jsonl_never_panics_and_names_the_file_and_line(
        bytes in input(fixture("tests/fixtures/report/pen11/conv-0.jsonl"))
    ) {
        if let Err(e) = read_transcript(&bytes[..], "t.jsonl") {
            let m = one_line(&e);
            prop_assert!(m.starts_with("t.jsonl: line ") || m == "t.jsonl: the file is empty", "{m}");
        }
        check_formats(&bytes, "t.jsonl");
    }

    #[test]
    fn a_transcript_written_then_read_gives_the_same_records(
        turns in prop::collection::vec(turn(), 0..6),
        summary in prop::option::of(summary()),
        header_text in ".{0,40}",
    ) {
        let mut header = header();
        header.config = serde_json::json!({ "opening": header_text });
        let mut bytes = Vec::new();
        let mut records = vec![Record::Header(Box::new(header.clone()))];
        records.extend(turns.iter().cloned().map(Record::Turn));
        records.extend(summary.clone().map(Record::Summary));
        for r in &records {
            // As `TranscriptWriter::write` writes a record: one JSON line.
            bytes.extend(serde_json::to_vec(r).unwrap());
            bytes.push(b'\n');
        }
        let t = read_transcript(&bytes[..], "t.jsonl").unwrap();
        prop_assert_eq!(t.header, header);
        prop_assert_eq!(t.turns, turns);
        prop_assert_eq!(t.summary, summary);
        prop_assert_eq!(t.torn_tail, None);
    }

    #[test]
    fn legacy_log_never_panics(bytes in input(small_log())) {
        check_formats(&bytes, "x.log");
    }

    #[test]
    fn chat_json_and_jsonl_never_panic(bytes in input(
        br#"[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"text","text":"hello"}]}]"#.to_vec()
    ), lines in any::<bool>()) {
        let bytes = if lines { bytes.iter().map(|&b| if b == b',' { b'\n' } else { b }).collect() } else { bytes };
        check_formats(&bytes, "c.json");
        if let Ok(text) = std::str::from_utf8(&bytes) {
            for r in [formats::parse_chat_json(text, "c.json"), formats::parse_chat_jsonl(text, "c.jsonl")] {
                if let Err(e) = r {
                    one_line(&e);
                }
            }
        }
    }

    #[test]
    fn sharegpt_never_panics(bytes in input(
        br#"[{"conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"hello"}]},
{"conversations":[{"from":"human","value":"bye"},{"from":"gpt","value":"see you"}]}]"#.to_vec()
    )) {
        check_formats(&bytes, "s.json");
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Err(e) = formats::parse_sharegpt(text, "s.json") {
                one_line(&e);
            }
        }
    }

    #[test]
    fn gguf_header_never_panics(bytes in input(tiny_gguf()), claimed in prop::option::of(any::<u64>())) {
        let len = claimed.unwrap_or(bytes.len() as u64);
        if let Err(e) = gguf::parse(&bytes[..], len) {
            one_line(&e);
        }
    }

    #[test]
    fn chat_templates_never_panic(
        bytes in input(chat_template::builtin("chatml").unwrap().as_bytes().to_vec()),
        text in ".{0,20}",
    ) {
        let template = String::from_utf8_lossy(&bytes);
        if let Ok(t) = ChatTemplate::new(&template, "mutated", "<bos>", "<eos>") {
            let messages = [ChatMessage::new(Speaker::User, text.clone()), ChatMessage::new(Speaker::Assistant, text)];
            if let Err(e) = t.render(&messages, true) {
                one_line(&e);
            }
        }
    }
}

fn header() -> Header {
    let model = ModelRecord {
        path: "m.gguf".into(),
        file_size: Some(1),
        name: None,
        architecture: Some("llama".into()),
        n_ctx: 2048,
        chat_template_source: "gguf".into(),
    };
    Header {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        parrot_version: "0.1.0".into(),
        started: "2026-01-01T00:00:00Z".into(),
        config: serde_json::json!({}),
        assistant_model: model.clone(),
        user_model: model,
        backend: "llama".into(),
        user_backend: "llama".into(),
        seed: 1,
        conversation_index: 0,
        cpu: None,
    }
}

/// Turns with any text (control characters, newlines, any script) and any counts.
fn turn() -> impl Strategy<Value = TurnRecord> {
    (any::<u32>(), any::<bool>(), any::<String>(), ".{0,8}", any::<bool>(), any::<u32>(), any::<u64>(), any::<bool>())
        .prop_map(|(index, user, text, prefix, opening, tokens, so_far, timed)| TurnRecord {
            index,
            speaker: if user { Speaker::User } else { Speaker::Assistant },
            text,
            prefix,
            opening,
            tokens,
            prompt_tokens: tokens / 2,
            prompt_tokens_evaluated: tokens / 3,
            dropped_messages: 0,
            stop_reason: if opening { None } else { Some(StopReason::Eos) },
            max_tokens: (!opening).then_some(512),
            tokens_so_far: so_far,
            timings: timed.then(|| Timings { prompt_ms: f64::from(tokens % 1000) / 8.0, ..Timings::default() }),
            endpoint: None,
        })
}

fn summary() -> impl Strategy<Value = Summary> {
    (any::<u32>(), any::<u64>(), prop::option::of(".{0,20}")).prop_map(|(messages, total_tokens, error)| Summary {
        stop_reason: if error.is_some() { EndReason::Error } else { EndReason::Budget },
        error,
        messages,
        total_tokens,
        wall_ms: 12.5,
        assistant: SpeakerTotals::default(),
        user: SpeakerTotals::default(),
    })
}

/// A small valid GGUF v3 header: a string, an integer, an array of strings and one F32 tensor.
fn tiny_gguf() -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&3u64.to_le_bytes());
    string(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    string(&mut b, "llama");
    string(&mut b, "llama.context_length");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&2048u32.to_le_bytes());
    string(&mut b, "tokenizer.ggml.tokens");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    string(&mut b, "<s>");
    string(&mut b, "</s>");
    string(&mut b, "t");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&8u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend_from_slice(&[0u8; 32]);
    b
}

#[test]
fn the_tiny_gguf_and_the_small_log_are_valid() {
    let info = gguf::parse(&tiny_gguf()[..], tiny_gguf().len() as u64).unwrap();
    assert_eq!(info.architecture(), Some("llama"));
    let log = formats::parse_reader(&small_log()[..], "x.log", None).unwrap();
    assert_eq!(log.messages.len(), 3);
}
