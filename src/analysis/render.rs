//! Renderers of folder analyses for `parrot analyze`: a readable table, one JSON document, or CSV rows (for pandas
//! and spreadsheets). Pure: each takes the [`DirAnalysis`] of every folder and returns the text; the command
//! writes it to stdout or `--out`. The table and the JSON also carry [`confidence`]: 95% intervals of every
//! rate and mean (what each counts is said there and in the table's footnote) and the tests against the
//! baseline folder (index `baseline`, the first unless `--baseline` says otherwise).

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::Serialize;

use super::confidence::{self, Comparison, DirConfidence};
use super::dir::{DirAnalysis, ANALYSIS_VERSION};
use super::stats::{Interval, MedianSurvival};
use super::{detectors, ConversationAnalysis, Detection, Metrics};

/// The `--json` document.
#[derive(Serialize)]
struct JsonDocument<'a> {
    parrot_version: &'a str,
    analysis_version: u32,
    folders: &'a [DirAnalysis],
    /// Per folder, in the order of `folders`.
    confidence: Vec<DirConfidence>,
    /// The folder the others are tested against.
    baseline: Option<&'a str>,
    comparisons: Vec<Comparison>,
    /// Per other folder: conversations per set for 80% power to detect its "any phenomenon" difference.
    sample_size_80_power: Vec<(String, Option<u64>)>,
}

/// Renders everything as one JSON document: `{parrot_version, analysis_version, folders: [DirAnalysis…],
/// confidence: [DirConfidence…], baseline, comparisons, sample_size_80_power}`.
///
/// # Errors
/// Never in practice (serialization of plain data).
pub fn render_json(dirs: &[DirAnalysis], baseline: usize) -> Result<String> {
    let confidence: Vec<DirConfidence> = dirs.iter().map(confidence::of_dir).collect();
    let doc = JsonDocument {
        parrot_version: env!("CARGO_PKG_VERSION"),
        analysis_version: ANALYSIS_VERSION,
        folders: dirs,
        comparisons: confidence::compare(&confidence, baseline),
        sample_size_80_power: confidence::sample_sizes(&confidence, baseline),
        baseline: (dirs.len() > 1).then(|| dirs.get(baseline).map(|d| d.dir.as_str())).flatten(),
        confidence,
    };
    let mut s = serde_json::to_string_pretty(&doc).context("could not serialize the analysis")?;
    s.push('\n');
    Ok(s)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn metric_columns(prefix: &str) -> Vec<String> {
    let mut cols = Vec::new();
    for n in 1..=4 {
        cols.push(format!("{prefix}_seq_rep_{n}"));
    }
    for n in 1..=4 {
        cols.push(format!("{prefix}_distinct_{n}"));
    }
    cols.extend(["rep_w16", "compression_ratio", "longest_repeated_substring"].iter().map(|c| format!("{prefix}_{c}")));
    cols
}

fn metric_values(m: &Metrics) -> Vec<String> {
    let mut v: Vec<String> = m.seq_rep.iter().chain(&m.distinct).map(f64::to_string).collect();
    v.push(m.rep_w16.to_string());
    v.push(m.compression_ratio.to_string());
    v.push(m.longest_repeated_substring.to_string());
    v
}

/// The folder-level columns of the CSV: each folder's figures from [`confidence`] with their 95% intervals,
/// repeated on every row of the folder so that the file stays one tidy table (group by `dir` to get one row per
/// folder). Estimate, `_low`, `_high`; empty where there is none (or "not reached" for a median).
fn folder_columns() -> Vec<String> {
    let mut cols = vec!["dir_conversations".to_string()];
    let mut triple = |name: &str| {
        for suffix in ["", "_low", "_high"] {
            cols.push(format!("dir_{name}{suffix}"));
        }
    };
    triple("broken_rate");
    for name in detectors::names() {
        triple(&format!("{name}_rate"));
    }
    for name in [
        "mean_loop_density",
        "mean_response_length",
        "mean_tokens_per_s",
        "median_first_break_turns",
        "median_first_break_tokens",
    ] {
        triple(name);
    }
    cols
}

fn folder_values(conf: &DirConfidence) -> Vec<String> {
    let interval = |i: Option<Interval>| match i {
        Some(i) => vec![i.estimate.to_string(), i.low.to_string(), i.high.to_string()],
        None => vec![String::new(); 3],
    };
    let median = |m: Option<MedianSurvival>| match m {
        Some(m) => vec![opt(m.estimate), opt(m.low), opt(m.high)],
        None => vec![String::new(); 3],
    };
    let mut v = vec![conf.broken.of.to_string()];
    v.extend(interval(conf.broken.interval));
    for name in detectors::names() {
        v.extend(interval(conf.rates.iter().find(|(n, _)| n == name).and_then(|(_, r)| r.any.interval)));
    }
    v.extend(interval(conf.loop_density));
    v.extend(interval(conf.response_length));
    v.extend(interval(conf.tokens_per_s));
    v.extend(median(Some(conf.median_first_break)));
    v.extend(median(conf.median_first_break_tokens));
    v
}

/// Renders one CSV row per conversation, with a header row. Detector columns per speaker: detected, onset
/// (empty when not detected) and severity; then the standard metrics per speaker; then the folder's figures with
/// their 95% intervals ([`folder_columns`]: rates Wilson, means bootstrap, medians Kaplan–Meier).
#[must_use]
pub fn render_csv(dirs: &[DirAnalysis]) -> String {
    let mut header: Vec<String> = [
        "dir",
        "source",
        "format",
        "complete",
        "messages",
        "assistant_turns",
        "user_turns",
        "total_tokens",
        "tokens_per_s",
        "character_count",
        "loop_score",
        "loop_density",
        "avg_response_length",
        "responses",
        "first_onset",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    for name in detectors::names() {
        for who in ["assistant", "user"] {
            for what in ["detected", "onset", "severity"] {
                header.push(format!("{name}_{who}_{what}"));
            }
        }
    }
    header.extend(metric_columns("assistant"));
    header.extend(metric_columns("user"));
    header.extend(folder_columns());
    let mut out = header.join(",");
    out.push('\n');
    for d in dirs {
        let folder = folder_values(&confidence::of_dir(d));
        for c in &d.conversations {
            let mut row = vec![
                csv_field(&d.dir),
                csv_field(&c.source),
                c.format.to_string(),
                c.complete.to_string(),
                c.messages.to_string(),
                c.assistant_turns.to_string(),
                c.user_turns.to_string(),
                opt(c.total_tokens),
                opt(c.tokens_per_s),
                c.legacy.character_count.to_string(),
                c.legacy.loop_score.to_string(),
                c.legacy.loop_density.to_string(),
                c.legacy.avg_response_length.to_string(),
                c.legacy.responses.to_string(),
                opt(c.first_onset),
            ];
            for name in detectors::names() {
                let det = c.detectors.get(name).cloned().unwrap_or_default();
                for x in [&det.assistant, &det.user] {
                    row.push(x.detected.to_string());
                    row.push(if x.detected { opt(x.onset) } else { String::new() });
                    row.push(x.severity.to_string());
                }
            }
            row.extend(metric_values(&c.metrics.assistant));
            row.extend(metric_values(&c.metrics.user));
            row.extend(folder.iter().cloned());
            out.push_str(&row.join(","));
            out.push('\n');
        }
    }
    out
}

/// "name A@3 U@5" for each detected phenomenon of a conversation.
fn phenomena(c: &ConversationAnalysis) -> String {
    let mut parts = Vec::new();
    for name in detectors::names() {
        let Some(det) = c.detectors.get(name) else { continue };
        let who = |tag: &str, x: &Detection| x.detected.then(|| format!("{tag}@{}", opt(x.onset)));
        let speakers: Vec<String> = [who("A", &det.assistant), who("U", &det.user)].into_iter().flatten().collect();
        if !speakers.is_empty() {
            parts.push(format!("{name} {}", speakers.join(" ")));
        }
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(", ")
    }
}

/// Renders the readable table: one line per conversation, then a summary per folder with the rate of every
/// phenomenon. Onsets are assistant-turn indices; `A` is the assistant, `U` the user.
#[must_use]
pub fn render_table(dirs: &[DirAnalysis], baseline: usize) -> String {
    let mut out = String::new();
    let width = dirs
        .iter()
        .flat_map(|d| d.conversations.iter().map(|c| c.source.chars().count()))
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    let _ = writeln!(
        out,
        "{:<width$}  {:<10}  {:>5}  {:>6}  {:>7}  {:>7}  PHENOMENA (speaker@onset turn)",
        "FILE", "FORMAT", "TURNS", "CHARS", "TOKENS", "DENSITY"
    );
    for d in dirs {
        for c in &d.conversations {
            // Saturating: a reused analysis.json is input, and its lengths may add up past usize.
            let chars = c.message_lengths.iter().fold(0usize, |sum, &n| sum.saturating_add(n));
            let name = super::formats::shorten(&c.source, width);
            let incomplete = if c.complete { "" } else { " (incomplete)" };
            let _ = writeln!(
                out,
                "{name:<width$}  {:<10}  {:>5}  {:>6}  {:>7}  {:>7.3}  {}{incomplete}",
                c.format.to_string(),
                c.messages,
                chars,
                opt(c.total_tokens),
                c.legacy.loop_density,
                phenomena(c)
            );
        }
    }
    let confs: Vec<DirConfidence> = dirs.iter().map(confidence::of_dir).collect();
    for (d, conf) in dirs.iter().zip(&confs) {
        let s = &d.summary;
        let _ = writeln!(
            out,
            "\n{}: {} conversation(s), {} error(s); mean loop density {:.3}; mean response {:.1} characters; \
             {:.0}% with a loop or break",
            d.dir,
            s.conversations,
            s.errors,
            s.mean_loop_density,
            s.mean_response_length,
            100.0 * s.broken
        );
        if s.conversations == 0 {
            continue;
        }
        let mb = conf.median_first_break;
        let turn = |t: Option<f64>| t.map_or_else(|| "not reached".to_string(), |t| format!("{t:.0}"));
        let tokens = conf
            .median_first_break_tokens
            .map_or_else(String::new, |m| format!(", {} tokens ({}–{})", turn(m.estimate), turn(m.low), turn(m.high)));
        let _ = writeln!(
            out,
            "  95% intervals: loop density {}; response {} characters; first break: median {} turns ({}–{}){tokens}",
            mean_interval(conf.loop_density, 3),
            mean_interval(conf.response_length, 1),
            turn(mb.estimate),
            turn(mb.low),
            turn(mb.high)
        );
        let _ = writeln!(
            out,
            "  {:<22} {:>15} {:>15} {:>15} {:>10} {:>9}",
            "phenomenon", "assistant", "user", "any", "mean onset", "severity"
        );
        for (name, r) in &s.rates {
            let onset = r.mean_onset.map_or_else(|| "-".to_string(), |o| format!("{o:.1}"));
            let c = conf.rates.iter().find(|(n, _)| n == name).map(|(_, c)| c);
            let cell = |f: fn(&confidence::PhenomenonConfidence) -> &confidence::Rate, rate: f64| {
                c.and_then(|c| f(c).interval).map_or_else(|| format!("{:.0}%", 100.0 * rate), rate_interval)
            };
            let _ = writeln!(
                out,
                "  {:<22} {:>15} {:>15} {:>15} {:>10} {:>9.2}",
                name,
                cell(|c| &c.assistant, r.assistant),
                cell(|c| &c.user, r.user),
                cell(|c| &c.any, r.any),
                onset,
                r.mean_severity
            );
        }
    }
    let comparisons = confidence::compare(&confs, baseline);
    if !comparisons.is_empty() {
        let _ = writeln!(out, "\nagainst baseline {} (Fisher's exact / log-rank, Holm-adjusted):", dirs[baseline].dir);
        for c in &comparisons {
            let mark = if c.significant { "*" } else { " " };
            let _ = writeln!(out, "{mark} {}: {}", c.dir, c.sentence);
        }
        for (dir, n) in confidence::sample_sizes(&confs, baseline) {
            if let Some(n) = n {
                let _ = writeln!(
                    out,
                    "  {dir}: {n} conversations per set would detect its difference in 'any' rate with 80% power"
                );
            }
        }
    }
    if !dirs.is_empty() {
        let _ = writeln!(
            out,
            "\nRates count conversations (Wilson 95% interval in brackets); means count conversations (seeded \
             bootstrap 95%); first break counts assistant turns, and tokens generated where recorded (Kaplan-Meier, \
             censored at the end)."
        );
    }
    out
}

fn rate_interval(i: Interval) -> String {
    format!("{:.0}% ({:.0}-{:.0})", 100.0 * i.estimate, 100.0 * i.low, 100.0 * i.high)
}

fn mean_interval(i: Option<Interval>, digits: usize) -> String {
    i.map_or_else(|| "-".to_string(), |i| format!("{:.digits$} ({:.digits$}-{:.digits$})", i.estimate, i.low, i.high))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyze, dir::DirSummary, formats};

    fn dirs() -> Vec<DirAnalysis> {
        let text = r#"[{"role":"user","content":"hi, \"you\""},{"role":"assistant","content":"hello there"}]"#;
        let conv = formats::parse_reader(text.as_bytes(), "runs/a,b.json", None).unwrap();
        let conversations = vec![analyze(&conv)];
        vec![DirAnalysis {
            dir: "runs".into(),
            summary: DirSummary::of(&conversations, 0),
            conversations,
            errors: Vec::new(),
            version: ANALYSIS_VERSION,
            parrot_version: String::new(),
            forced_format: None,
            files: Vec::new(),
            judge_cache: Vec::new(),
        }]
    }

    #[test]
    fn csv_has_one_row_per_conversation_and_quotes_fields() {
        let csv = render_csv(&dirs());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        let cols = lines[0].split(',').count();
        assert!(lines[0].contains("single_turn_loop_assistant_onset"));
        assert!(lines[1].starts_with("runs,\"runs/a,b.json\",chat_json,true,2,1,1,"), "{}", lines[1]);
        // The quoted field holds one comma.
        assert_eq!(lines[1].split(',').count(), cols + 1);
    }

    #[test]
    fn csv_carries_each_folders_intervals() {
        let csv = render_csv(&dirs());
        let lines: Vec<&str> = csv.lines().collect();
        let header: Vec<&str> = lines[0].split(',').collect();
        let row_line = lines[1].replace("\"runs/a,b.json\"", "x");
        let row: Vec<&str> = row_line.split(',').collect();
        let at = |name: &str| row[header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name}"))];
        assert_eq!(header.len(), row.len());
        assert_eq!(at("dir_conversations"), "1");
        // One conversation, none broken: 0% with the Wilson interval 0–79%.
        assert_eq!(at("dir_broken_rate"), "0");
        let high: f64 = at("dir_broken_rate_high").parse().unwrap();
        assert!((high - 0.7935).abs() < 1e-3, "{high}");
        assert!(!at("dir_mean_loop_density_low").is_empty() && !at("dir_single_turn_loop_rate_high").is_empty());
        // The median first break is not reached: empty, as in the JSON's null.
        assert_eq!(at("dir_median_first_break_turns"), "");
    }

    /// One onset definition: the first onset shown in the table, `--json`, `--csv` and the report's onset-curve
    /// data is the same number (the 0-based assistant turn where the first detection begins).
    #[test]
    fn one_onset_in_table_json_csv_and_report() {
        let loop_turn = "I look at the sea and I say the very same words again and again to you";
        let mut msgs = vec![
            r#"{"role":"assistant","content":"Good morning, the harbour is busy with boats today."}"#.to_string(),
            r#"{"role":"user","content":"Tell me about the boats and the fishermen."}"#.to_string(),
            r#"{"role":"assistant","content":"The fishermen mend their nets while gulls circle the masts above."}"#
                .to_string(),
        ];
        for i in 0..5 {
            msgs.push(format!(r#"{{"role":"user","content":"And then, number {i}?"}}"#));
            msgs.push(format!(r#"{{"role":"assistant","content":"{loop_turn}"}}"#));
        }
        let text = format!("[{}]", msgs.join(","));
        let conv = formats::parse_reader(text.as_bytes(), "runs/loop.json", None).unwrap();
        let a = analyze(&conv);
        let onset = a.first_onset.expect("the repeated turns are detected");
        assert!(onset >= 1, "the first two assistant turns are healthy, onset {onset}");
        let conversations = vec![a.clone()];
        let dirs = vec![DirAnalysis {
            dir: "runs".into(),
            summary: DirSummary::of(&conversations, 0),
            conversations,
            errors: Vec::new(),
            version: ANALYSIS_VERSION,
            parrot_version: String::new(),
            forced_format: None,
            files: Vec::new(),
            judge_cache: Vec::new(),
        }];
        let csv = render_csv(&dirs);
        let lines: Vec<&str> = csv.lines().collect();
        let col = lines[0].split(',').position(|h| h == "first_onset").unwrap();
        assert_eq!(lines[1].split(',').nth(col), Some(onset.to_string().as_str()), "{csv}");
        let v: serde_json::Value = serde_json::from_str(&render_json(&dirs, 0).unwrap()).unwrap();
        assert_eq!(v["folders"][0]["conversations"][0]["first_onset"], onset);
        let table = render_table(&dirs, 0);
        let earliest = table
            .lines()
            .find(|l| l.contains("runs/loop.json"))
            .unwrap()
            .split_whitespace()
            .filter_map(|w| w.rsplit_once('@').and_then(|(_, k)| k.parse::<usize>().ok()))
            .min();
        assert_eq!(earliest, Some(onset), "{table}");
        let o = super::confidence::observation(&a);
        assert_eq!((o.time, o.event), (onset as f64, true));
    }

    #[test]
    fn table_lists_conversations_and_folder_rates() {
        let t = render_table(&dirs(), 0);
        assert!(t.contains("runs/a,b.json"));
        assert!(t.contains("runs: 1 conversation(s), 0 error(s)"));
        assert!(t.contains("rejection"));
        let json = render_json(&dirs(), 0).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["folders"][0]["conversations"][0]["format"], "chat_json");
        assert_eq!(v["confidence"][0]["broken"]["of"], 1);
        assert!(v["confidence"][0]["loop_density"]["low"].is_number());
        assert!(t.contains("Wilson 95% interval"), "{t}");
    }

    /// #15: a reused analysis.json is input. Message lengths whose sum passes `usize` render (saturated) instead of
    /// overflowing.
    #[test]
    fn a_saved_analysis_with_huge_message_lengths_renders() {
        let mut v = serde_json::to_value(&dirs()[0]).unwrap();
        v["conversations"][0]["message_lengths"] = serde_json::json!([u64::MAX, 1]);
        let dirs = vec![serde_json::from_value::<DirAnalysis>(v).unwrap()];
        let t = render_table(&dirs, 0);
        assert!(t.contains(&format!("  {}  ", usize::MAX)), "{t}");
        assert_eq!(render_csv(&dirs).lines().count(), 2);
        render_json(&dirs, 0).unwrap();
    }
}
