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
        "2".into(),
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
    let seq = tempfile::tempdir().unwrap();
    let par = tempfile::tempdir().unwrap();
    let common = ["--quiet", "-n", "3", "--seed", "11", "--total-tokens", "150", "--turn-max-tokens", "30"];
    let o = parrot(&[&["run", "--out", seq.path().to_str().unwrap()], &common[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = parrot(&[&["run", "--out", par.path().to_str().unwrap(), "--parallel", "3"], &common[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let (s, p) = (transcripts(seq.path()), transcripts(par.path()));
    assert_eq!(p.len(), 3);
    for (i, (a, b)) in s.iter().zip(&p).enumerate() {
        assert_eq!(b.header.seed, 11 + u32::try_from(i).unwrap());
        assert_eq!(b.summary.as_ref().unwrap().stop_reason, EndReason::Budget);
        // Batched decoding rounds differently from single-sequence decoding, so long conversations may drift
        // apart; the first generated turn, decoded while all three sequences shared every batch, must not.
        let first = |t: &Transcript| t.turns.iter().find(|t| !t.opening).map(|t| t.text.clone());
        assert_eq!(first(a), first(b), "conversation {i}: the first turn depends on the other sequences");
        let generated = b.turns.iter().filter(|t| !t.opening).count();
        assert!(generated >= 4, "conversation {i} has only {generated} turns");
    }
    // Different seeds gave different conversations: nothing leaked from one sequence into another.
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
