//! `parrot analyze` on real files: the original's logs, parrot transcripts written with the transcript writer,
//! chat JSON/JSONL, ShareGPT, and folders that mix good and bad files.

use std::path::Path;

use parrot::transcript::{
    Header, ModelRecord, Record, Speaker, StopReason, TranscriptWriter, TurnRecord, FORMAT_NAME, FORMAT_VERSION,
};

use crate::common::{root, run, stderr, stdout};

fn legacy_dir() -> std::path::PathBuf {
    root().join("tests/fixtures/legacy")
}

fn header() -> Header {
    let model = ModelRecord {
        path: "m.gguf".into(),
        file_size: None,
        name: None,
        architecture: None,
        n_ctx: 4096,
        chat_template_source: "gguf".into(),
    };
    Header {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
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

/// A parrot transcript where the assistant starts looping on glued junk at its third turn.
fn write_looping_transcript(path: &Path) {
    let mut w = TranscriptWriter::create(path, &header()).unwrap();
    let assistant = [
        " I love the sea breeze here.",
        " Did you bring the sandwiches?",
        " remarquerurusan",
        " remarquerurusanuserdata",
        " remarquerurusanuserdataで購入",
        " remarquerurusanuserdataで購入した",
    ];
    let user = [
        " Yes, it is lovely.",
        " Of course, with cheese.",
        " What do you mean?",
        " Skye, are you okay?",
        " Hello?",
        " I'm worried now.",
    ];
    let mut index = 0;
    let mut so_far = 0;
    for (a, u) in assistant.iter().zip(user) {
        for (speaker, prefix, text) in [(Speaker::Assistant, "Skye:", a), (Speaker::User, "Mark:", &u)] {
            so_far += 9;
            w.write(&Record::Turn(TurnRecord {
                index,
                speaker,
                text: format!("{prefix}{text}"),
                prefix: prefix.into(),
                opening: false,
                tokens: 9,
                prompt_tokens: 100,
                prompt_tokens_evaluated: 9,
                dropped_messages: 0,
                stop_reason: Some(StopReason::Eos),
                max_tokens: Some(256),
                tokens_so_far: so_far,
                timings: None,
                endpoint: None,
            }))
            .unwrap();
            index += 1;
        }
    }
}

#[test]
fn the_original_logs_give_the_original_numbers() {
    let logs = ["gemma-smol-parrot_2.log", "gemma-smol-nopen-parrot_3.log"].map(|f| legacy_dir().join(f));
    let out = run(&["analyze", "--json", "--no-save", logs[0].to_str().unwrap(), logs[1].to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let convs = v["folders"][0]["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 2);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(legacy_dir().join("original-analyzer-results.json")).unwrap())
            .unwrap();
    for c in convs {
        let name = Path::new(c["source"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_string();
        let e = &expected[&name];
        assert_eq!(c["legacy"]["loop_score"], e["loop_score"], "{name}");
        assert_eq!(c["legacy"]["loop_density"], e["loop_density"], "{name}");
        assert_eq!(c["legacy"]["top_ngrams"], e["top_ngrams"], "{name}");
        // The user repeats the same line every turn in both logs.
        assert_eq!(c["detectors"]["single_turn_loop"]["user"]["detected"], true, "{name}");
    }
}

#[test]
fn a_folder_mixing_good_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_looping_transcript(&d.join("good.jsonl"));
    std::fs::copy(legacy_dir().join("gemma-smol-parrot_2.log"), d.join("legacy.log")).unwrap();
    std::fs::write(d.join("chat.json"), r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"hey"}]"#)
        .unwrap();
    std::fs::write(
        d.join("chat.jsonl"),
        "{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":\"assistant\",\"content\":\"yo\"}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("share.json"),
        r#"[{"conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"hello"}]},
            {"conversations":[{"from":"human","value":"bye"},{"from":"gpt","value":"see you"}]}]"#,
    )
    .unwrap();
    std::fs::write(d.join("empty.jsonl"), b"").unwrap();
    std::fs::write(d.join("binary.log"), b"\x00\xff\xfe garbage \xc3\x28").unwrap();
    let log = std::fs::read_to_string(legacy_dir().join("gemma-smol-parrot_2.log")).unwrap();
    std::fs::write(d.join("cut.log"), log.split("--- DONE ---").next().unwrap()).unwrap();
    std::fs::write(d.join("huge.json"), "[".repeat(3_000_000)).unwrap();

    // Not a folder parrot generated: `--save` asks for the analysis to be saved beside it all the same.
    let out = run(&["analyze", "--save", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "bad files make the exit code 1");
    let err = stderr(&out);
    for bad in
        ["empty.jsonl: the file is empty", "binary.log: not valid UTF-8", "cut.log: no '--- DONE ---'", "huge.json: "]
    {
        assert!(err.contains(bad), "missing {bad:?} in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let table = stdout(&out);
    for good in ["good.jsonl", "legacy.log", "chat.json", "chat.jsonl", "share.json#1"] {
        assert!(table.contains(good), "missing {good} in:\n{table}");
    }
    assert!(table.contains("single_turn_loop A@3"), "{table}");
    assert!(table.contains("6 conversation(s), 4 error(s)"), "{table}");

    // The analysis was saved beside the folder and is reused while nothing changes.
    let saved = d.join("analysis.json");
    assert!(saved.exists());
    let csv_out = d.join("out.csv");
    let out = run(&["analyze", "--csv", "--out", csv_out.to_str().unwrap(), d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let csv = std::fs::read_to_string(&csv_out).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
}

#[test]
fn a_good_file_alone_exits_zero_and_format_can_be_forced() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("conversation.txt");
    std::fs::write(&f, "{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":\"assistant\",\"content\":\"yo\"}\n")
        .unwrap();
    let out = run(&["analyze", "--json", "--format", "chat_jsonl", f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["folders"][0]["conversations"][0]["format"], "chat_jsonl");
    let out = run(&["analyze", "--format", "sharegpt", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["analyze", "--format", "xml", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "clap rejects an unknown format");
    assert!(stderr(&out).contains("unknown format 'xml'"));
}

#[test]
fn a_missing_path_prints_only_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["analyze", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no table: {}", String::from_utf8_lossy(&out.stdout));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("nope': no such file or folder"), "{err}");
}

#[test]
fn issue_15_analysis_json_only_in_run_folders_and_never_over_a_foreign_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_looping_transcript(&d.join("good.jsonl"));
    let out = run(&["analyze", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!d.join("analysis.json").exists(), "a folder parrot did not generate is not written into");
    // A run folder holding someone else's analysis.json: analyzed, the file left as it is, a one-line warning.
    std::fs::write(d.join("run.json"), "{}").unwrap();
    std::fs::write(d.join("analysis.json"), "{\"theirs\": true}").unwrap();
    let out = run(&["analyze", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(d.join("analysis.json")).unwrap(), "{\"theirs\": true}");
    assert!(stderr(&out).contains("was not written by parrot"), "{}", stderr(&out));
    assert!(stdout(&out).contains("good.jsonl"));
}
