//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use parrot::transcript::{read_transcript_file, Speaker, StopReason, Transcript, TurnRecord};

/// The `parrot` binary under test: the one built for these tests, or `$PARROT_TEST_BIN` (to run the tests against
/// another build, e.g. to show that a new test fails on the code before a fix).
pub fn parrot_bin() -> PathBuf {
    std::env::var_os("PARROT_TEST_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_parrot")), PathBuf::from)
}

/// A command running the `parrot` binary under test.
pub fn parrot() -> Command {
    Command::new(parrot_bin())
}

/// Runs `parrot` with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    parrot().args(args).output().expect("could not start the parrot binary")
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Points every cache and config folder parrot (and hf-hub, and pip's cache lookups aside) would touch at `dir`,
/// and clears the environment variables that would make a test depend on the developer's machine.
pub fn isolate<'a>(cmd: &'a mut Command, dir: &std::path::Path) -> &'a mut Command {
    // pip's download cache stays where it is, so that repeated test runs do not fetch the same wheels again.
    let pip_cache = std::env::var_os("PIP_CACHE_DIR").map_or_else(
        || std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache").join("pip"),
        std::path::PathBuf::from,
    );
    for var in [
        "HF_HUB_OFFLINE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "PARROT_MODELS_TOML",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("HF_HOME", dir.join("hf"))
        .env("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
        .env("PARROT_CACHE_DIR", dir.join("parrot"))
        .env("PIP_CACHE_DIR", pip_cache)
}

/// `--threads` for every in-process run of a test. The test harness runs two tests at once on CI's two cores, and
/// llama.cpp's worker threads spin at each barrier instead of sleeping: two runs of two threads each on two cores
/// spend most of their time spinning while the thread they wait for is descheduled. One thread per run keeps the
/// cores busy with work.
pub const TEST_THREADS: &str = "1";

/// A stand-in for the Hugging Face hub on a loopback port: it answers `HEAD` and `GET` on
/// `/{owner}/{name}/resolve/{revision}/{file}` for one file, the way the hub does for an LFS file (an `ETag` that is
/// the content's SHA-256, `X-Repo-Commit`, `Content-Length`, and `206` with `Content-Range` for a `Range` request,
/// which hf-hub uses both for its metadata request, `bytes=0-0`, and for the body), and can break off a number of
/// body `GET`s halfway.
pub struct FakeHub {
    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub endpoint: String,
    state: std::sync::Arc<HubState>,
}

struct HubState {
    route: String,
    content: Vec<u8>,
    etag: String,
    broken_gets: std::sync::atomic::AtomicUsize,
    gets: std::sync::atomic::AtomicUsize,
}

/// The commit every `FakeHub` reports.
pub const FAKE_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

impl FakeHub {
    /// Serves `content` as `file` of `repo`, with `etag` (normally the content's SHA-256).
    pub fn start(repo: &str, file: &str, content: Vec<u8>, etag: &str) -> Self {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = std::sync::Arc::new(HubState {
            route: format!("/{repo}/resolve/"),
            content,
            etag: etag.to_string(),
            broken_gets: 0.into(),
            gets: 0.into(),
        });
        let file = format!("/{file}");
        let served = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let state = served.clone();
                let file = file.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    let mut range: Option<(usize, usize)> = None;
                    loop {
                        let mut header = String::new();
                        match reader.read_line(&mut header) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if header == "\r\n" => break,
                            Ok(_) => {
                                let lower = header.to_ascii_lowercase();
                                if let Some(spec) = lower.strip_prefix("range: bytes=") {
                                    let (a, b) = spec.trim().split_once('-').unwrap_or(("0", ""));
                                    let last = state.content.len().saturating_sub(1);
                                    let start = a.parse().unwrap_or(0);
                                    let end = b.parse().unwrap_or(last).min(last);
                                    range = Some((start, end));
                                }
                            }
                        }
                    }
                    let mut parts = request_line.split_whitespace();
                    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let matches = path.starts_with(&state.route) && path.ends_with(&file);
                    if !matches {
                        let _ = stream
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    }
                    let len = state.content.len();
                    let (status, body, extra) = match range {
                        Some((start, end)) if start <= end && end < len => (
                            "206 Partial Content",
                            &state.content[start..=end],
                            format!("Content-Range: bytes {start}-{end}/{len}\r\n"),
                        ),
                        _ => ("200 OK", &state.content[..], String::new()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: \"{}\"\r\nX-Repo-Commit: {FAKE_COMMIT}\r\n\
                         {extra}Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                        body.len(),
                        state.etag
                    );
                    let _ = stream.write_all(head.as_bytes());
                    // hf-hub's metadata request asks for the first byte only; it is not a transfer of the body.
                    let metadata_only = range == Some((0, 0)) && len > 1;
                    if method == "GET" && metadata_only {
                        let _ = stream.write_all(body);
                    } else if method == "GET" {
                        state.gets.fetch_add(1, Ordering::SeqCst);
                        let broken = state
                            .broken_gets
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if broken {
                            let _ = stream.write_all(&body[..body.len() / 2]);
                            let _ = stream.flush();
                            let _ = stream.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        let _ = stream.write_all(body);
                    }
                    let _ = stream.flush();
                });
            }
        });
        Self { endpoint, state }
    }

    /// Makes the next `n` body `GET`s send half the body and then close the connection.
    pub fn break_next_gets(&self, n: usize) {
        self.state.broken_gets.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many body `GET`s the server has answered (not counting hf-hub's one-byte metadata requests).
    pub fn gets(&self) -> usize {
        self.state.gets.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// An endpoint on which nothing listens: connections are refused at once.
pub fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A child process that is killed when the test ends, even when it fails.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Transcript `i` of a run folder.
pub fn transcript(out: &Path, i: u32) -> Transcript {
    read_transcript_file(&out.join(format!("conversation-{i:03}.jsonl"))).unwrap()
}

/// The generated turns of a transcript (opening messages left out).
pub fn generated(t: &Transcript) -> Vec<&TurnRecord> {
    t.turns.iter().filter(|t| !t.opening).collect()
}

/// The generated turns of a date-scenario run: several, alternating assistant (`Skye:`) and user (`Mark: "`),
/// each ended before any `\n` (the stop string), none over its limit, and a `max_tokens` stop using the whole
/// limit. With `early_stops_below_limit`, an EOS or stop-string turn must also end strictly under its limit (the
/// in-process backend counts exactly; a server may report its stop on the last allowed token).
pub fn assert_date_turns(turns: &[&TurnRecord], early_stops_below_limit: bool) {
    assert!(turns.len() >= 4, "expected several turns, got {}", turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let (speaker, prefix) = if i % 2 == 0 { (Speaker::Assistant, "Skye:") } else { (Speaker::User, "Mark: \"") };
        assert_eq!(turn.speaker, speaker, "turn {i}");
        assert!(turn.text.starts_with(prefix), "turn {i}: {:?}", turn.text);
        assert!(!turn.text.contains('\n'), "the stop string \\n must end the turn: {:?}", turn.text);
        let limit = turn.max_tokens.unwrap();
        assert!(turn.tokens <= limit, "turn {i}");
        match turn.stop_reason.unwrap() {
            StopReason::MaxTokens => assert_eq!(turn.tokens, limit, "turn {i}"),
            StopReason::Eos | StopReason::StopString => {
                assert!(!early_stops_below_limit || turn.tokens < limit || limit == 0, "turn {i}");
            }
            other => panic!("unexpected stop reason {other:?}"),
        }
    }
}
