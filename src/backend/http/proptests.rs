//! Property tests of what the HTTP backend reads from a server (issue 15): the SSE parser, every flavor's event
//! and answer readers, and the JSON body reader, fed arbitrary bytes and mutations of real streams. A server is
//! untrusted, so none of them may panic, whatever arrives; and how the network splits a stream must not change
//! what the parser makes of it.
//!
//! The seeds: `tests/fixtures/http/` holds what llama-cpp-python's OpenAI-compatible server answered (a stream
//! with its `: ping` keep-alive comment, `/v1/models`, a token count, an error); llama-server's and koboldcpp's
//! streams are written here as their documentation and source describe them (as `tests/it/http.rs` replays them).
//! Each test runs 10,000 cases of at most a few KiB, so all of them take seconds.

use proptest::prelude::*;
use serde_json::Value;

use super::client::{json_body, Body};
use super::sse::{SseEvent, SseParser};
use super::{koboldcpp, llama_server, openai, server_message};

const OPENAI_STREAM: &[u8] = include_bytes!("../../../tests/fixtures/http/openai-llama-cpp-python.sse");

const LLAMA_SERVER_STREAM: &[u8] =
    b"data: {\"content\":\" Hi\",\"stop\":false,\"id_slot\":0,\"tokens_predicted\":1}\n\n\
data: {\"content\":\" there\",\"stop\":false,\"id_slot\":0,\"tokens_predicted\":2}\n\n\
data: {\"content\":\"\",\"id_slot\":0,\"stop\":true,\"model\":\"fake\",\"tokens_predicted\":3,\"tokens_evaluated\":12,\
\"stop_type\":\"word\",\"stopping_word\":\"\\n\",\"timings\":{\"prompt_n\":5,\"prompt_ms\":1.5,\"predicted_n\":3,\
\"predicted_ms\":9.0}}\n\n\
error: {\"code\":500,\"message\":\"slot unavailable\",\"type\":\"server_error\"}\n\n";

const KOBOLDCPP_STREAM: &[u8] = b"event: message\r\ndata: {\"token\": \" one\", \"finish_reason\": null}\r\n\r\n\
event: message\r\ndata: {\"token\": \" two\", \"finish_reason\": null}\r\n\r\n\
event: message\r\ndata: {\"token\": \"\", \"finish_reason\": \"length\"}\r\n\r\n";

const JSON_ANSWERS: [&[u8]; 7] = [
    include_bytes!("../../../tests/fixtures/http/openai-models.json"),
    include_bytes!("../../../tests/fixtures/http/openai-tokenize-count.json"),
    include_bytes!("../../../tests/fixtures/http/openai-error.json"),
    br#"{"default_generation_settings":{"n_ctx":4096,"params":{"n_predict":-1}},"total_slots":1,"model_path":"/m.gguf","chat_template":"{{x}}","eos_token":"</s>"}"#,
    br#"{"tokens":[1,2,3,4]}"#,
    br#"{"value":4096}"#,
    br#"{"result":"koboldcpp/fake-model"}"#,
];

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at (position mod length).
    Set(usize, u8),
    /// Remove up to n bytes from a position.
    Delete(usize, usize),
    /// Insert bytes at a position.
    Insert(usize, Vec<u8>),
    /// Repeat a range once more, right after itself.
    Duplicate(usize, usize),
    /// Cut the rest off.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b":".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"null".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"1e400".to_vec()),
        Just("\u{e9}".as_bytes().to_vec()),
        Just(vec![0xe2, 0x82]),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), special).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1..256usize).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(seed: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Set(i, v) if !b.is_empty() => {
                let i = i % b.len();
                b[i] = *v;
            }
            Mutation::Set(..) => {}
            Mutation::Delete(i, n) => {
                let i = at(*i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Insert(i, bytes) => {
                let i = at(*i, b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Duplicate(i, n) => {
                let i = at(*i, b.len());
                let end = (i + n).min(b.len());
                let copy = b[i..end].to_vec();
                b.splice(end..end, copy);
            }
            Mutation::Truncate(i) => {
                let i = at(*i, b.len());
                b.truncate(i);
            }
        }
    }
    b
}

/// A stream's bytes: arbitrary, or a real stream with a few edits.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let seed = prop_oneof![Just(OPENAI_STREAM), Just(LLAMA_SERVER_STREAM), Just(KOBOLDCPP_STREAM)];
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..2048),
        3 => (seed, prop::collection::vec(mutation(), 0..6)).prop_map(|(s, m)| mutate(s, &m)),
    ]
}

/// What parsing `bytes` in the pieces cut at `cuts` gives: the events (each passed to every flavor's reader) up
/// to the first error, and the error's message.
fn parse_in_pieces(bytes: &[u8], cuts: &[usize]) -> (Vec<SseEvent>, Option<String>) {
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.push(bytes.len());
    let mut from = 0;
    for to in points {
        match parser.push(&bytes[from..to]) {
            Ok(ev) => events.extend(ev),
            Err(e) => return (events, Some(e.to_string())),
        }
        from = to;
    }
    match parser.push(b"\n") {
        Ok(ev) => events.extend(ev),
        Err(e) => return (events, Some(e.to_string())),
    }
    events.extend(parser.finish());
    (events, None)
}

fn read_every_way(event: &SseEvent) {
    let _ = llama_server::parse_event(event);
    let _ = koboldcpp::parse_event(event);
    let _ = openai::parse_event(event);
    let _ = server_message(&event.data);
}

fn read_answer(v: &Value) {
    let _ = llama_server::info(v);
    let _ = llama_server::token_count(v);
    let _ = koboldcpp::info(v, Some(v));
    let _ = koboldcpp::token_count(v);
    let _ = openai::info(v);
    let _ = openai::token_count(v);
}

/// Any JSON value, a few levels deep, with the field names the readers look for.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("content".to_string()),
        Just("stop".to_string()),
        Just("stop_type".to_string()),
        Just("choices".to_string()),
        Just("text".to_string()),
        Just("finish_reason".to_string()),
        Just("token".to_string()),
        Just("tokens".to_string()),
        Just("count".to_string()),
        Just("value".to_string()),
        Just("error".to_string()),
        Just("message".to_string()),
        Just("data".to_string()),
        Just("timings".to_string()),
        Just("default_generation_settings".to_string()),
        Just("n_ctx".to_string()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn sse_never_panics_and_the_split_does_not_matter(bytes in stream_bytes(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let (whole, whole_err) = parse_in_pieces(&bytes, &[]);
        let (split, split_err) = parse_in_pieces(&bytes, &cuts);
        // An error loses the events of the push it happened in, so only error-free parses are compared.
        prop_assert_eq!(whole_err.is_some(), split_err.is_some());
        if whole_err.is_none() {
            prop_assert_eq!(&whole, &split);
        }
        for event in &whole {
            prop_assert!(event.data.len() <= super::sse::MAX_EVENT_DATA);
            prop_assert!(event.line.chars().count() <= 201);
            read_every_way(event);
        }
    }

    #[test]
    fn json_answers_never_panic(
        bytes in prop_oneof![
            1 => prop::collection::vec(any::<u8>(), 0..1024),
            3 => (prop::sample::select(&JSON_ANSWERS[..]), prop::collection::vec(mutation(), 0..6))
                .prop_map(|(s, m)| mutate(s, &m)),
        ],
        status in prop_oneof![Just(200u16), Just(404u16), Just(503u16), 100u16..600],
        over in prop::bool::weighted(0.1),
    ) {
        let body = Body { status, bytes: bytes.clone(), over };
        match json_body("http://h/x", &body) {
            Ok(v) => {
                prop_assert!((200..300).contains(&status) && !over);
                read_answer(&v);
            }
            Err(e) => prop_assert!(e.to_string().starts_with("http://h/x answered")),
        }
        let message = server_message(&String::from_utf8_lossy(&bytes));
        prop_assert!(message.chars().count() <= 301);
    }

    #[test]
    fn answer_and_event_readers_never_panic_on_any_json(v in json_value()) {
        read_answer(&v);
        let event = SseEvent { event: String::new(), data: v.to_string(), line: String::new() };
        read_every_way(&event);
        let error = SseEvent { event: "error".into(), ..event };
        read_every_way(&error);
    }
}
