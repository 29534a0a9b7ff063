//! `--parallel`, `parrot sweep` and resuming after `kill -9`, with the real small models.

use std::path::Path;

use parrot::transcript::{read_transcript_file, EndReason, Transcript};

use crate::common::{run, stderr};
use crate::run::{gemma, smollm};

fn models() -> Vec<String> {
    vec![
        "--assistant-model".into(),
        gemma().display().to_string(),
        "--user-model".into(),
        smollm().display().to_string(),
        "--threads".into(),
        crate::common::TEST_THREADS.into(),
    ]
}

fn parrot(args: &[&str]) -> std::process::Output {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
    all.extend(models());
    run(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

fn transcripts(dir: &Path) -> Vec<Transcript> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files.iter().map(|p| read_transcript_file(p).unwrap()).collect()
}

fn texts(t: &Transcript) -> Vec<String> {
    t.turns.iter().map(|t| t.text.clone()).collect()
}

#[test]
fn parallel_conversations_are_independent_of_each_other() {
    // Greedy decoding: the first turn of each conversation, decoded while the sequences shared every batch, must
    // be what the same conversation gives alone. (With sampling, batched and single-sequence decoding round
    // differently and can pick different tokens, so only greedy output is comparable across batch shapes.)
    let greedy = ["--quiet", "-n", "2", "--seed", "11", "--total-tokens", "60", "--turn-max-tokens", "30"];
    let seq = tempfile::tempdir().unwrap();
    let par = tempfile::tempdir().unwrap();
    let g = ["--set", "sampler.temperature=0", "--set", "sampler.stop=[]"];
    let o = parrot(&[&["run", "--out", seq.path().to_str().unwrap()], &greedy[..], &g[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = parrot(&[&["run", "--out", par.path().to_str().unwrap(), "--parallel", "2"], &greedy[..], &g[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let first = |t: &Transcript| t.turns.iter().find(|t| !t.opening).map(|t| t.text.clone());
    for (i, (a, b)) in transcripts(seq.path()).iter().zip(&transcripts(par.path())).enumerate() {
        assert_eq!(first(a), first(b), "conversation {i}: its first turn depends on the other sequence");
    }

    // Sampled: three conversations at once, each complete, each its own (different seeds, different texts).
    let dir = tempfile::tempdir().unwrap();
    let o = parrot(&[
        "run",
        "--quiet",
        "--out",
        dir.path().to_str().unwrap(),
        "-n",
        "3",
        "--parallel",
        "3",
        "--seed",
        "11",
        "--total-tokens",
        "150",
        "--turn-max-tokens",
        "30",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p = transcripts(dir.path());
    assert_eq!(p.len(), 3);
    for (i, t) in p.iter().enumerate() {
        assert_eq!(t.header.seed, 11 + u32::try_from(i).unwrap());
        assert_eq!(t.summary.as_ref().unwrap().stop_reason, EndReason::Budget);
        let indices: Vec<u32> = t.turns.iter().map(|t| t.index).collect();
        assert_eq!(indices, (0..u32::try_from(indices.len()).unwrap()).collect::<Vec<_>>());
        assert!(t.turns.iter().filter(|t| !t.opening).count() >= 4, "conversation {i} is too short");
    }
    assert_ne!(texts(&p[0]), texts(&p[1]));
    assert_ne!(texts(&p[1]), texts(&p[2]));
}

#[test]
fn a_sweep_makes_one_folder_per_cell_with_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let o = parrot(&[
        "sweep",
        "--quiet",
        "--out",
        dir.path().to_str().unwrap(),
        "--grid",
        "sampler.repeat_penalty=1.0,1.3",
        "--grid",
        "sampler.temperature=0.5,1.0",
        "-n",
        "1",
        "--total-tokens",
        "24",
        "--turn-max-tokens",
        "12",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut cells = 0;
    for rp in ["1.0", "1.3"] {
        for temp in ["0.5", "1.0"] {
            let cell = dir.path().join(format!("sampler.repeat_penalty={rp},sampler.temperature={temp}"));
            let t = transcripts(&cell);
            assert_eq!(t.len(), 1, "{}", cell.display());
            let sampler = &t[0].header.config["sampler"];
            assert!((sampler["repeat_penalty"].as_f64().unwrap() - rp.parse::<f64>().unwrap()).abs() < 1e-6);
            assert!((sampler["temperature"].as_f64().unwrap() - temp.parse::<f64>().unwrap()).abs() < 1e-6);
            cells += 1;
        }
    }
    assert_eq!(cells, 4);
    assert!(dir.path().join("sweep.json").is_file());
}

/// The time a transcript's conversation ran: from its header's start to start + its summary's wall time.
fn span(t: &Transcript) -> (f64, f64) {
    let start = chrono::DateTime::parse_from_rfc3339(&t.header.started).unwrap().timestamp_micros() as f64 / 1000.0;
    (start, start + t.summary.as_ref().unwrap().wall_ms)
}

#[test]
fn a_sweep_with_more_cells_than_slots_runs_cells_at_the_same_time() {
    // Four cells of one conversation each on two slots: one queue for the sweep puts two cells' conversations in
    // the two slots at once (run cell after cell, no two would ever overlap).
    let dir = tempfile::tempdir().unwrap();
    let o = parrot(&[
        "sweep",
        "--quiet",
        "--out",
        dir.path().to_str().unwrap(),
        "--grid",
        "sampler.temperature=0.2,0.4,0.6,0.8",
        "-n",
        "1",
        "--parallel",
        "2",
        "--total-tokens",
        "40",
        "--turn-max-tokens",
        "10",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cells: Vec<(f64, Transcript)> = ["0.2", "0.4", "0.6", "0.8"]
        .iter()
        .map(|t| {
            let mut ts = transcripts(&dir.path().join(format!("sampler.temperature={t}")));
            assert_eq!(ts.len(), 1);
            (t.parse().unwrap(), ts.remove(0))
        })
        .collect();
    for (temp, t) in &cells {
        // Each cell's transcript carries exactly its own cell's settings, though it shared the slots.
        assert!((t.header.config["sampler"]["temperature"].as_f64().unwrap() - temp).abs() < 1e-9);
        assert_eq!(t.summary.as_ref().unwrap().stop_reason, EndReason::Budget);
    }
    let spans: Vec<(f64, f64)> = cells.iter().map(|(_, t)| span(t)).collect();
    let overlapping = |a: (f64, f64), b: (f64, f64)| a.0 < b.1 && b.0 < a.1;
    assert!(overlapping(spans[0], spans[1]), "cells 1 and 2 did not run at the same time: {spans:?}");
    let at_once = spans.iter().map(|a| spans.iter().filter(|b| b.0 <= a.0 && a.0 < b.1).count()).max().unwrap();
    assert!(at_once <= 2, "more conversations at once than the two slots: {spans:?}");
}

#[test]
fn a_grid_key_that_does_not_exist_names_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let o = parrot(&["sweep", "--out", dir.path().to_str().unwrap(), "--grid", "sampler.repeat_penalti=1.0,1.1"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("unknown key 'sampler.repeat_penalti'") && err.contains("repeat_penalty"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing may be generated");
}

#[test]
fn a_parallel_too_large_for_memory_names_the_largest_that_fits() {
    let dir = tempfile::tempdir().unwrap();
    let o = parrot(&[
        "run",
        "--out",
        dir.path().to_str().unwrap(),
        "-n",
        "256",
        "--parallel",
        "256",
        "--assistant-ctx",
        "32768",
        "--total-tokens",
        "20000",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let fits: u32 = err
        .split("the largest --parallel that fits is ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no largest value in: {err}"));
    assert!(fits > 0 && fits < 256, "{err}");
}

#[test]
fn kill_9_then_resume_completes_every_transcript_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let mut args: Vec<String> = ["run", "--quiet", "--out", out, "-n", "3", "--parallel", "2", "--seed", "5"]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
    args.extend(["--total-tokens", "200", "--turn-max-tokens", "25"].map(String::from));
    args.extend(models());
    let mut child = crate::common::KillOnDrop(crate::common::parrot().args(&args).spawn().unwrap());
    let first = dir.path().join("conversation-000.jsonl");
    let third = dir.path().join("conversation-002.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    // Wait until one conversation has finished and the next has started.
    loop {
        let finished = std::fs::read_to_string(&first).is_ok_and(|s| s.contains("\"type\":\"summary\""))
            || std::fs::read_to_string(dir.path().join("conversation-001.jsonl"))
                .is_ok_and(|s| s.contains("\"type\":\"summary\""));
        if finished && third.exists() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // A file killed before its header line was complete holds nothing to keep.
    let before: Vec<Option<Transcript>> = (0..3)
        .map(|i| {
            let path = dir.path().join(format!("conversation-{i:03}.jsonl"));
            let complete_line = std::fs::read(&path).is_ok_and(|b| b.contains(&b'\n'));
            complete_line.then(|| read_transcript_file(&path).unwrap())
        })
        .collect();
    let finished: Vec<(usize, Vec<u8>)> = before
        .iter()
        .enumerate()
        .filter(|(_, t)| t.as_ref().is_some_and(Transcript::is_finished))
        .map(|(i, _)| (i, std::fs::read(dir.path().join(format!("conversation-{i:03}.jsonl"))).unwrap()))
        .collect();
    assert!(!finished.is_empty() && finished.len() < 3);

    let o = run(&["run", "--quiet", "--resume", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = transcripts(dir.path());
    assert_eq!(after.len(), 3);
    for (i, t) in after.iter().enumerate() {
        assert_eq!(t.summary.as_ref().unwrap().stop_reason, EndReason::Budget, "conversation {i}");
        let indices: Vec<u32> = t.turns.iter().map(|t| t.index).collect();
        assert_eq!(indices, (0..u32::try_from(indices.len()).unwrap()).collect::<Vec<_>>(), "conversation {i}");
        assert!(t.torn_tail.is_none());
        // Turns written before the kill are kept as they were.
        if let Some(b) = &before[i] {
            assert_eq!(&t.turns[..b.turns.len()], &b.turns[..], "conversation {i}");
        }
    }
    for (i, bytes) in finished {
        let now = std::fs::read(dir.path().join(format!("conversation-{i:03}.jsonl"))).unwrap();
        assert_eq!(now, bytes, "finished conversation {i} was regenerated");
    }
}
