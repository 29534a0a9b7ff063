//! `parrot analyze`: the I/O shell around `analysis`. It expands the PATHs, lets `analysis::dir` analyze every
//! file in parallel (reusing and saving `analysis.json` beside run folders), then renders one of three outputs
//! (a table, JSON, CSV) to stdout or `--out`. Renderers return strings; only [`run`] writes.
//!
//! A bad file never stops the others: it is reported as `PATH: what is wrong` on stderr, and the exit code is 1
//! at the end.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::analysis::dir::{analyze_paths_with, AnalyzeOptions, DirAnalysis, ANALYSIS_VERSION};
use crate::analysis::{detectors, ConversationAnalysis, Detection, Format, Metrics};
use crate::cli::GlobalArgs;

/// Arguments of `parrot analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Transcripts to analyze, or folders of them (searched for *.jsonl, *.json and *.log, sub-folders included).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print everything as one JSON document instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print one CSV row per conversation instead of a table (for pandas and spreadsheets).
    #[arg(long)]
    pub csv: bool,
    /// Write the output to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Read every file in this format instead of detecting it: parrot, legacy_log, chat_json, chat_jsonl or
    /// sharegpt.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Do not save `analysis.json` beside the folders analyzed.
    #[arg(long)]
    pub no_save: bool,
    /// Recompute even when a folder's saved `analysis.json` is up to date.
    #[arg(long)]
    pub recompute: bool,
}

/// Runs `parrot analyze`.
///
/// # Errors
/// When the output cannot be written. Bad transcripts are not errors: they are reported and make the exit code 1.
pub fn run(global: &GlobalArgs, args: AnalyzeArgs) -> Result<ExitCode> {
    let options = AnalyzeOptions { forced: args.format, reuse_saved: !args.recompute, save: !args.no_save };
    let (dirs, warnings) = analyze_paths_with(&args.paths, &options);
    let mut stderr = std::io::stderr().lock();
    let mut failed = false;
    for d in &dirs {
        for e in &d.errors {
            failed = true;
            writeln!(stderr, "{}: {}", e.path, e.error)?;
        }
    }
    for w in &warnings {
        writeln!(stderr, "warning: {w}")?;
    }
    let rendered = if args.json {
        render_json(&dirs)?
    } else if args.csv {
        render_csv(&dirs)
    } else {
        render_table(&dirs)
    };
    match &args.out {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("could not write the analysis to '{}'", path.display()))?,
        None => std::io::stdout().lock().write_all(rendered.as_bytes()).context("could not write to stdout")?,
    }
    if failed && !global.quiet {
        let n: usize = dirs.iter().map(|d| d.errors.len()).sum();
        writeln!(stderr, "{n} file(s) could not be analyzed")?;
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The `--json` document.
#[derive(Serialize)]
struct JsonDocument<'a> {
    parrot_version: &'a str,
    analysis_version: u32,
    folders: &'a [DirAnalysis],
}

/// Renders everything as one JSON document: `{parrot_version, analysis_version, folders: [DirAnalysis…]}`.
///
/// # Errors
/// Never in practice (serialization of plain data).
pub fn render_json(dirs: &[DirAnalysis]) -> Result<String> {
    let doc =
        JsonDocument { parrot_version: env!("CARGO_PKG_VERSION"), analysis_version: ANALYSIS_VERSION, folders: dirs };
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

/// Renders one CSV row per conversation, with a header row. Detector columns per speaker: detected, onset
/// (empty when not detected) and severity; then the standard metrics per speaker.
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
    let mut out = header.join(",");
    out.push('\n');
    for d in dirs {
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
pub fn render_table(dirs: &[DirAnalysis]) -> String {
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
            let chars: usize = c.message_lengths.iter().sum();
            let name = crate::analysis::formats::shorten(&c.source, width);
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
    for d in dirs {
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
        let _ = writeln!(
            out,
            "  {:<22} {:>9} {:>6} {:>6} {:>10} {:>9}",
            "phenomenon", "assistant", "user", "any", "mean onset", "severity"
        );
        for (name, r) in &s.rates {
            let onset = r.mean_onset.map_or_else(|| "-".to_string(), |o| format!("{o:.1}"));
            let _ = writeln!(
                out,
                "  {:<22} {:>8.0}% {:>5.0}% {:>5.0}% {:>10} {:>9.2}",
                name,
                100.0 * r.assistant,
                100.0 * r.user,
                100.0 * r.any,
                onset,
                r.mean_severity
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyze, formats};

    fn dirs() -> Vec<DirAnalysis> {
        let text = r#"[{"role":"user","content":"hi, \"you\""},{"role":"assistant","content":"hello there"}]"#;
        let conv = formats::parse_reader(text.as_bytes(), "runs/a,b.json", None).unwrap();
        let conversations = vec![analyze(&conv)];
        vec![DirAnalysis {
            dir: "runs".into(),
            summary: crate::analysis::dir::DirSummary::of(&conversations, 0),
            conversations,
            errors: Vec::new(),
            version: ANALYSIS_VERSION,
            parrot_version: String::new(),
            forced_format: None,
            files: Vec::new(),
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
    fn table_lists_conversations_and_folder_rates() {
        let t = render_table(&dirs());
        assert!(t.contains("runs/a,b.json"));
        assert!(t.contains("runs: 1 conversation(s), 0 error(s)"));
        assert!(t.contains("rejection"));
        let json = render_json(&dirs()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["folders"][0]["conversations"][0]["format"], "chat_json");
    }
}
