//! `parrot analyze --judge` with the real SmolLM2 test model as the judge: valid JSON for every window, the same
//! verdicts for the same transcript, a second run served from `analysis.json` with no inference, and the report's
//! topics table. One short conversation (3 windows) keeps it to a few seconds.

use std::path::Path;

use serde_json::Value;

use crate::common::{run, stderr, stdout};
use crate::run::smollm;

/// A role-play that re-tells one moment (12 messages: windows of 5, 5 and 2), names in the text.
fn paraphrase_loop() -> String {
    let turns = [
        ("assistant", "Skye: The sunset paints the harbour gold as I take your hand."),
        ("user", "Mark: I squeeze your hand and watch the boats."),
        ("assistant", "Skye: Golden light falls on the quiet harbour; our hands stay together."),
        ("user", "Mark: It is beautiful here with you."),
        ("assistant", "Skye: We keep holding hands while the harbour glows in the sunset."),
        ("user", "Mark: I never want this evening to end."),
        ("assistant", "Skye: The harbour shines gold, and my hand rests in yours."),
        ("user", "Mark: The boats rock gently on the water."),
        ("assistant", "Skye: Sunset light wraps the harbour as we hold hands."),
        ("user", "Mark: I smile at you."),
        ("assistant", "Skye: Our hands together, the golden harbour quiet around us."),
        ("user", "Mark: Shall we walk?"),
    ];
    let lines: Vec<String> =
        turns.iter().map(|(role, text)| serde_json::json!({"role": role, "content": text}).to_string()).collect();
    lines.join("\n") + "\n"
}

fn judge_of(doc: &Value, folder: usize) -> &Value {
    &doc["folders"][folder]["conversations"][0]["judge"]
}

fn assert_valid_verdicts(judge: &Value) {
    let windows = judge["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 3, "{judge}");
    for w in windows {
        assert!(w["summary"].as_str().is_some_and(|s| !s.trim().is_empty()), "{w}");
        assert!(w["topics"].as_array().is_some_and(|t| t.len() <= 4 && t.iter().all(Value::is_string)), "{w}");
        assert!(w["advanced"].is_boolean(), "{w}");
    }
}

fn analyze_judged(dirs: &[&Path], model: &Path) -> (Value, String) {
    let mut args = vec!["analyze".to_string()];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    args.extend(["--judge".into(), model.display().to_string(), "--json".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    (serde_json::from_str(&stdout(&o)).expect("--json is JSON"), stderr(&o))
}

#[test]
fn issue_14_the_judge_answers_valid_json_deterministically_and_again_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("conversation.jsonl"), paraphrase_loop()).unwrap();
        // A run folder: analysis.json (and so the judge's cache) is saved by default only there.
        std::fs::write(d.join("run.json"), "{}").unwrap();
    }
    let model = smollm();
    // Two folders with the same transcript: judged twice in one run, once each.
    let (doc, err) = analyze_judged(&[&a, &b], &model);
    assert!(err.contains("0 window(s) served from the cache, 6 judged now"), "{err}");
    for folder in 0..2 {
        let j = judge_of(&doc, folder);
        assert_valid_verdicts(j);
        assert_eq!(j["cached"], false);
        assert_eq!(j["prompt_version"], 1);
    }
    assert_eq!(judge_of(&doc, 0)["windows"], judge_of(&doc, 1)["windows"], "greedy: the same verdicts");
    // analysis.json keeps the verdicts in its cache, the conversation's analysis stays the lexical one.
    let saved: Value = serde_json::from_slice(&std::fs::read(a.join("analysis.json")).unwrap()).unwrap();
    assert_eq!(saved["judge_cache"].as_array().map(Vec::len), Some(1));
    assert!(saved["conversations"][0].get("judge").is_none());
    assert!(doc["folders"][0].get("judge_cache").is_none(), "the cache is not part of the output");

    // The second run infers nothing: every window comes from the cache, the same verdicts.
    let (again, err) = analyze_judged(&[&a], &model);
    assert!(err.contains("3 window(s) served from the cache, 0 judged now"), "{err}");
    assert_eq!(judge_of(&again, 0)["cached"], true);
    assert_eq!(judge_of(&again, 0)["windows"], judge_of(&doc, 0)["windows"]);

    // The report shows the cached topics over turns.
    let out = tmp.path().join("report");
    let o = run(&["report", &a.display().to_string(), "--out", &out.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("Topics over turns"), "the report has the judge's table");
}

#[test]
fn a_judge_that_is_not_a_model_is_one_line_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.jsonl"), paraphrase_loop()).unwrap();
    let fake = tmp.path().join("judge.gguf");
    std::fs::write(&fake, b"not a gguf").unwrap();
    let o = run(&["analyze", &tmp.path().display().to_string(), "--judge", &fake.display().to_string()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("--judge") && err.lines().count() == 1, "{err}");
    assert!(!tmp.path().join("analysis.json").exists(), "nothing analyzed or saved");
}
