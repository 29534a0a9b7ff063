//! The run folder's guarantees, with the real small models and tiny budgets: one test per way the folder could
//! lose work before the runner was rebuilt (issue "Runner", failures 1-8), the crash-consistency loop, and the
//! bound on open transcripts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use parrot::transcript::{read_transcript_file, EndReason, Record, Summary, Transcript};

use crate::common::{parrot, parrot_bin, run, stderr, KillOnDrop};
use crate::run::{gemma, smollm};

/// `run --quiet --out DIR` on the two test models, plus `extra`.
fn run_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["run", "--quiet", "--out", out.to_str().unwrap(), "--threads", crate::common::TEST_THREADS]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
    args.extend(["--assistant-model".into(), gemma().display().to_string()]);
    args.extend(["--user-model".into(), smollm().display().to_string()]);
    args.extend(extra.iter().map(|s| (*s).to_string()));
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn path(dir: &Path, i: u32) -> PathBuf {
    dir.join(format!("conversation-{i:03}.jsonl"))
}

fn finished(p: &Path) -> bool {
    std::fs::read_to_string(p).is_ok_and(|s| s.contains("\"type\":\"summary\""))
}

/// Waits (at most 10 minutes) until `ready` holds.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn resume(dir: &Path) -> Output {
    run(&["run", "--quiet", "--resume", dir.to_str().unwrap()])
}

fn assert_complete(t: &Transcript, what: &str) {
    assert!(t.torn_tail.is_none(), "{what}: torn tail");
    assert_eq!(t.summary.as_ref().map(|s| s.stop_reason), Some(EndReason::Budget), "{what}");
    let indices: Vec<u32> = t.turns.iter().map(|t| t.index).collect();
    assert_eq!(indices, (0..u32::try_from(indices.len()).unwrap()).collect::<Vec<_>>(), "{what}: turns");
}

/// Failures 1 and 2: `run --force`, Ctrl-C, `--resume`: finished transcripts stay as they were (the recorded
/// `--force` is not replayed), and `--resume` works a second and third time.
#[test]
fn resume_after_force_keeps_finished_transcripts_and_works_any_number_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let args = run_args(dir.path(), &["--force", "-n", "2", "--total-tokens", "80", "--turn-max-tokens", "20"]);
    let mut child = KillOnDrop(parrot().args(&args).spawn().unwrap());
    wait_for("the first conversation finished", || finished(&path(dir.path(), 0)) && path(dir.path(), 1).exists());
    let kill = Command::new("kill").args(["-INT", &child.0.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.0.wait().unwrap();
    let first = std::fs::read(path(dir.path(), 0)).unwrap();
    if status.code() == Some(0) {
        // The second conversation also finished before Ctrl-C arrived; resume must still leave both alone.
        assert!(finished(&path(dir.path(), 1)));
    } else {
        assert_eq!(status.code(), Some(130));
    }
    for round in 0..3 {
        let o = resume(dir.path());
        assert!(o.status.success(), "resume {round}: {}", stderr(&o));
        assert_eq!(std::fs::read(path(dir.path(), 0)).unwrap(), first, "resume {round} rewrote a finished transcript");
        assert_complete(&read_transcript_file(&path(dir.path(), 1)).unwrap(), "conversation 1");
    }
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap()).unwrap();
    assert_eq!(record["command"][1], "run");
    assert!(record["command"].as_array().unwrap().iter().any(|a| a == "--force"), "the original command is kept");
    let history = record["history"].as_array().unwrap();
    assert_eq!(history.len(), 4, "the start and three resumes: {history:?}");
    assert!(history[1..].iter().all(|h| h["resume"] == true));
}

/// Failure 3: a second writer on a folder that a process is writing is refused, naming the folder and the
/// process; a fresh start and a resume alike.
#[test]
fn a_second_writer_on_a_busy_folder_is_refused_naming_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let args = run_args(dir.path(), &["--total-tokens", "4000", "--turn-max-tokens", "40"]);
    let mut child = KillOnDrop(parrot().args(&args).spawn().unwrap());
    wait_for("the first turn is written", || {
        std::fs::read_to_string(path(dir.path(), 0)).is_ok_and(|s| s.contains("\"opening\":false"))
    });
    let before = std::fs::read(path(dir.path(), 0)).unwrap();
    for second in [strs(&args), vec!["run", "--quiet", "--resume", dir.path().to_str().unwrap()]] {
        let mut other = parrot().args(&second).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while other.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = other.kill();
                let _ = other.wait();
                panic!("a second writer was not refused: it is writing the folder too");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = other.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(dir.path().to_str().unwrap()), "{err}");
        assert!(err.contains(&format!("process {}", child.0.id())), "{err}");
    }
    // The first writer is undisturbed: its file only grew.
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::fs::read(path(dir.path(), 0)).unwrap().starts_with(&before));
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

/// Failure 4 and the bound on open files: `-n 10000 --parallel 8` under an open-file limit far below 10000 runs
/// (it used to open every transcript up front and fail), and never holds more than P + 4 transcripts open.
#[test]
fn thousands_of_conversations_hold_only_a_few_transcripts_open() {
    let dir = tempfile::tempdir().unwrap();
    let args = run_args(dir.path(), &["-n", "10000", "--parallel", "8", "--total-tokens", "1"]);
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!("ulimit -n 256 && exec '{}' {}", parrot_bin().display(), quoted.join(" "));
    let mut child = KillOnDrop(
        Command::new("sh").args(["-c", &script]).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap(),
    );
    let fd_dir = PathBuf::from(format!("/proc/{}/fd", child.0.id()));
    let (mut most, mut samples) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !finished(&path(dir.path(), 23)) {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("parrot stopped early ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "24 conversations did not finish in time");
        let open = std::fs::read_dir(&fd_dir).map_or(0, |entries| {
            entries
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().contains(".jsonl"))
                .count()
        });
        most = most.max(open);
        samples += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    eprintln!("transcripts open at once: at most {most} over {samples} samples of /proc/PID/fd");
    assert!(samples > 10, "too few samples of the open files: {samples}");
    assert!(most >= 1, "no transcript was ever seen open: the check would catch nothing");
    assert!(most <= 8 + 4, "{most} transcripts open at once with --parallel 8");
}

/// Failure 5: every record is fsynced before the next turn begins, and `run.json` is replaced by a rename, never
/// rewritten in place (checked with strace; `--seccomp-bpf` stops the process only at the traced calls, so the run is
/// not slowed by the thousands of futex and yield calls of llama.cpp's threads).
#[test]
fn every_turn_is_fsynced_and_run_json_is_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let trace = dir.path().join("trace");
    let args = run_args(&out, &["--total-tokens", "60", "--turn-max-tokens", "20"]);
    let o = Command::new("strace")
        .args([
            "--seccomp-bpf",
            "-f",
            "-qq",
            "-e",
            "signal=none",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,write",
        ])
        .arg("-o")
        .arg(&trace)
        .arg(parrot_bin())
        .args(&args)
        .output()
        .expect("strace runs (scripts/setup.sh installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    let trace = std::fs::read_to_string(&trace).unwrap();
    let lines = std::fs::read_to_string(path(&out, 0)).unwrap().lines().count();
    assert!(lines >= 4, "{lines}");
    // After each write of a record line (it ends in `}\n`) comes a sync before any other record's write.
    let calls: Vec<&str> = trace.lines().filter_map(|l| l.split_once(' ').map(|(_, c)| c.trim_start())).collect();
    let record_writes: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with("write(") && c.contains("{\\\"type\\\":\\\""))
        .map(|(i, _)| i)
        .collect();
    assert!(record_writes.len() >= lines, "{} record writes for {lines} lines", record_writes.len());
    for pair in record_writes.windows(2) {
        assert!(
            calls[pair[0]..pair[1]].iter().any(|c| c.starts_with("fdatasync(") || c.starts_with("fsync(")),
            "a record was written with no sync before the next one: {:?}",
            &calls[pair[0]..=pair[1]]
        );
    }
    let run_json = out.join("run.json");
    assert!(
        calls.iter().any(|c| c.starts_with("rename")
            && c.contains("run.json.partial")
            && c.contains(run_json.to_str().unwrap())),
        "run.json is not renamed into place"
    );
}

/// Failure 6: a conversation that ended in `error` is continued by a resume, which says so on stderr.
#[test]
fn resume_retries_a_conversation_that_ended_in_error() {
    let dir = tempfile::tempdir().unwrap();
    let args = run_args(dir.path(), &["--total-tokens", "120", "--turn-max-tokens", "20"]);
    let o = run(&strs(&args));
    assert!(o.status.success(), "{}", stderr(&o));
    // As a server hiccup leaves it: two generated turns, then an `error` summary.
    let done = read_transcript_file(&path(dir.path(), 0)).unwrap();
    let keep = done.turns.iter().position(|t| !t.opening).unwrap() + 2;
    let text = std::fs::read_to_string(path(dir.path(), 0)).unwrap();
    let mut lines: Vec<String> = text.lines().take(1 + keep).map(String::from).collect();
    let summary =
        Summary { stop_reason: EndReason::Error, error: Some("server hiccup".into()), ..done.summary.unwrap() };
    lines.push(serde_json::to_string(&Record::Summary(summary)).unwrap());
    std::fs::write(path(dir.path(), 0), lines.join("\n") + "\n").unwrap();
    let o = resume(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("retried 1 conversation that had ended in error"), "{}", stderr(&o));
    let t = read_transcript_file(&path(dir.path(), 0)).unwrap();
    assert_complete(&t, "retried conversation");
    assert!(t.turns.len() > keep, "the retry generated nothing");
    assert_eq!(t.turns[..keep], done.turns[..keep]);
}

/// Failure 7: `-n 0` is refused at once, before a model loads or the folder is touched.
#[test]
fn zero_conversations_are_refused_before_anything_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&strs(&run_args(&out, &["-n", "0"])));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("-n 1 or more"), "{}", stderr(&o));
    assert!(!out.exists(), "the output folder was created");
}

/// Failure 8: sweep cells whose names would collide, or pass 255 bytes, get folders of their own, and
/// `sweep.json` holds each cell's full settings.
#[test]
fn sweep_cells_get_unique_short_folders_and_sweep_json_has_their_settings() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("[\"{}\"]", "y".repeat(300));
    let grid = format!("sampler.stop=[\"a/b\"],[\"a_b\"],{long}");
    let mut args = run_args(dir.path(), &["--total-tokens", "1", "--grid", &grid]);
    args[0] = "sweep".into();
    let o = run(&strs(&args));
    assert!(o.status.success(), "{}", stderr(&o));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("sweep.json")).unwrap()).unwrap();
    let cells = record["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3);
    let names: std::collections::HashSet<&str> = cells.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for cell in cells {
        let name = cell["name"].as_str().unwrap();
        assert!(name.len() <= 255);
        assert!(finished(&path(&dir.path().join(name), 0)), "cell {name} has no finished transcript");
    }
    assert_eq!(cells[2]["set"][0], format!("sampler.stop={long}"), "the full settings are recorded");
}

/// Crash consistency: `kill -9` at seeded random moments, resuming each time. At the end every transcript is
/// valid and complete, no turn is duplicated or missing, every turn complete before a kill is byte-identical
/// afterwards, and a conversation finished before a kill was never rewritten.
#[test]
fn kill_9_at_random_moments_then_resume_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_args(
        dir.path(),
        &["-n", "4", "--parallel", "2", "--seed", "9", "--total-tokens", "160", "--turn-max-tokens", "20"],
    );
    let resume_args = ["run", "--quiet", "--resume", dir.path().to_str().unwrap()];
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Per conversation: the complete lines seen after some kill, and whether the file had finished then.
    let mut seen: Vec<Vec<(Vec<u8>, bool)>> = vec![Vec::new(); 4];
    for round in 0..5 {
        let args: Vec<&str> = if round == 0 { strs(&first) } else { resume_args.to_vec() };
        let mut child = KillOnDrop(parrot().args(&args).spawn().unwrap());
        // Let the models load and a turn or so be written, then kill at a random moment.
        let lines = |p: &Path| std::fs::read(p).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        let start: usize = (0..4).map(|i| lines(&path(dir.path(), i))).sum();
        wait_for("a new line is written", || {
            (0..4).map(|i| lines(&path(dir.path(), i))).sum::<usize>() > start || child.0.try_wait().unwrap().is_some()
        });
        std::thread::sleep(Duration::from_millis(next() % 2500));
        let _ = child.0.kill();
        child.0.wait().unwrap();
        for (i, seen) in seen.iter_mut().enumerate() {
            let Ok(bytes) = std::fs::read(path(dir.path(), u32::try_from(i).unwrap())) else { continue };
            let complete = bytes.iter().rposition(|&c| c == b'\n').map_or(0, |e| e + 1);
            seen.push((bytes[..complete].to_vec(), finished(&path(dir.path(), u32::try_from(i).unwrap()))));
        }
    }
    let o = run(&resume_args);
    assert!(o.status.success(), "{}", stderr(&o));
    for (i, seen) in seen.iter().enumerate() {
        let p = path(dir.path(), u32::try_from(i).unwrap());
        let t = read_transcript_file(&p).unwrap();
        assert_complete(&t, &format!("conversation {i}"));
        let now = std::fs::read(&p).unwrap();
        for (bytes, was_finished) in seen {
            if *was_finished {
                assert_eq!(&now, bytes, "conversation {i} was rewritten after it finished");
            } else {
                assert!(now.starts_with(bytes), "conversation {i}: a turn complete before a kill changed");
            }
        }
    }
}
