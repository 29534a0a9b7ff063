//! `parrot report`: reads run folders, analyses what has no fresh saved analysis, renders the page with
//! [`crate::report::render`] and writes it. This is the only place of the report that touches files: it lists the
//! folders, reads transcripts, writes `DIR/index.html` (and `DIR/png/*.png` with `--png`, drawn by plotters'
//! bitmap backend) and starts the browser with `--open`.
//!
//! Bad input never stops the report: an unreadable file or an empty folder is stated on the page and on stderr,
//! and only the exit code (1) says that something was left out.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use plotters::prelude::{BitMapBackend, IntoDrawingArea};
use rayon::prelude::*;

use crate::analysis::{dir as saved, formats, Conversation, Format};
use crate::cli::GlobalArgs;
use crate::report::{self, labels::Facts, Item, Problem, RunSet};
use crate::transcript::Record;

/// Arguments of `parrot report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run folders to compare; each is one run set (a model pair × sampler × backend). A folder may hold any
    /// transcripts `parrot analyze` reads: parrot's `.jsonl`, the original tool's `.log`, chat JSON/JSONL,
    /// ShareGPT. A single transcript file is a run set of one.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub run_dirs: Vec<PathBuf>,
    /// Folder to write the report into (`DIR/index.html`); created when missing.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the summary charts as PNG files in `DIR/png/` (for slides and terminals).
    #[arg(long)]
    pub png: bool,
    /// Open the report in the default browser when it is written (best effort).
    #[arg(long)]
    pub open: bool,
}

/// File names in a run folder that are never transcripts.
const NOT_TRANSCRIPTS: &[&str] = &["analysis.json", "config.json", "index.html"];

/// Runs `parrot report`.
///
/// # Errors
/// When the output folder or the page cannot be written. Unreadable inputs are not errors: they are reported
/// and make the exit code 1.
pub fn run(global: &GlobalArgs, args: ReportArgs) -> Result<ExitCode> {
    let sets: Vec<RunSet> = args.run_dirs.iter().map(|dir| read_run_set(dir)).collect();
    let problems = report::problems(&sets);
    for p in &problems {
        eprintln!("warning: {}: {}", p.path, p.error);
    }
    let options = report::Options { generated: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string() };
    let html = report::render(&sets, &options)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("could not create the output folder '{}'", args.out.display()))?;
    let index = args.out.join("index.html");
    std::fs::write(&index, html).with_context(|| format!("could not write '{}'", index.display()))?;
    if args.png {
        write_pngs(&sets, &args.out.join("png"))?;
    }
    if !global.quiet {
        let total: usize = sets.iter().map(|s| s.items.len()).sum();
        eprintln!(
            "report: {} run set{}, {total} conversation{}{}",
            sets.len(),
            if sets.len() == 1 { "" } else { "s" },
            if total == 1 { "" } else { "s" },
            if problems.is_empty() {
                String::new()
            } else {
                format!(", {} problem(s) listed on the page", problems.len())
            }
        );
    }
    println!("{}", index.display());
    if args.open {
        open_in_browser(&index);
    }
    Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Draws every summary figure as a PNG in `dir`.
fn write_pngs(sets: &[RunSet], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("could not create '{}'", dir.display()))?;
    for (name, figure) in report::summary_figures(sets) {
        let path = dir.join(format!("{name}.png"));
        let root = BitMapBackend::new(&path, figure.size()).into_drawing_area();
        figure.draw(&root)?;
        root.present().map_err(|e| anyhow::anyhow!("could not write '{}': {e}", path.display()))?;
    }
    Ok(())
}

/// Starts the platform's opener without waiting for it; a failure is only a warning.
fn open_in_browser(path: &Path) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let result = if cfg!(windows) {
        std::process::Command::new("cmd").arg("/C").arg("start").arg("").arg(path).spawn()
    } else {
        std::process::Command::new(opener).arg(path).spawn()
    };
    if let Err(e) = result {
        eprintln!("warning: could not open the report in a browser ({opener}: {e}); open {} yourself", path.display());
    }
}

/// The transcript files of a run folder, sorted by name (a file given directly is its own list).
fn list_transcripts(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let entries = std::fs::read_dir(dir).context("could not read the folder")?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            !name.starts_with('.')
                && !NOT_TRANSCRIPTS.contains(&name)
                && matches!(ext.to_ascii_lowercase().as_str(), "jsonl" | "json" | "log")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and analyses one run folder (reusing its `analysis.json` when fresh); every failure becomes a
/// [`Problem`] of the set.
fn read_run_set(dir: &Path) -> RunSet {
    let name = dir.display().to_string();
    if dir.is_dir() {
        if let Some(fresh) = saved::load_saved(dir) {
            return from_saved(name, fresh);
        }
    }
    let files = match list_transcripts(dir) {
        Ok(files) => files,
        Err(e) => {
            return RunSet {
                dir: name.clone(),
                items: vec![],
                problems: vec![Problem { path: name, error: format!("{e:#}") }],
            }
        }
    };
    let results: Vec<Result<Vec<Item>, Problem>> = files
        .par_iter()
        .map(|path| {
            let conversations = formats::read_path_all(path, None)
                .map_err(|e| Problem { path: path.display().to_string(), error: format!("{e:#}") })?;
            let extra = header_facts(path, &conversations);
            Ok(conversations
                .into_iter()
                .map(|conversation| Item {
                    analysis: crate::analysis::analyze(&conversation),
                    conversation: Some(conversation),
                    extra_facts: extra.clone(),
                })
                .collect())
        })
        .collect();
    let mut set = RunSet { dir: name, items: Vec::new(), problems: Vec::new() };
    for r in results {
        match r {
            Ok(items) => set.items.extend(items),
            Err(p) => set.problems.push(p),
        }
    }
    set
}

/// Facts a parrot header records but [`Conversation`] does not: the backends.
fn header_facts(path: &Path, conversations: &[Conversation]) -> Facts {
    let mut facts = Facts::new();
    if !conversations.iter().any(|c| c.format == Format::Parrot) {
        return facts;
    }
    let first_line = std::fs::File::open(path).ok().and_then(|f| BufReader::new(f).lines().next()).and_then(Result::ok);
    if let Some(Ok(Record::Header(h))) = first_line.map(|l| serde_json::from_str::<Record>(&l)) {
        facts.insert("backend".into(), h.backend.clone());
        facts.insert("user_backend".into(), h.user_backend.clone());
    }
    facts
}

/// A run set from a fresh saved analysis: the numbers come from it; the transcripts are still read for their
/// text (transcript viewer, heatmap, labels). A transcript that cannot be read keeps its analysis, without text.
fn from_saved(name: String, analysis: saved::DirAnalysis) -> RunSet {
    let mut sources: Vec<&str> = analysis.conversations.iter().map(|a| a.source.as_str()).collect();
    sources.dedup();
    let texts: std::collections::HashMap<&str, (Vec<Conversation>, Facts)> = sources
        .par_iter()
        .filter_map(|&source| {
            let path = Path::new(source);
            let conversations = formats::read_path_all(path, analysis.forced_format).ok()?;
            let facts = header_facts(path, &conversations);
            Some((source, (conversations, facts)))
        })
        .collect();
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let items = analysis
        .conversations
        .iter()
        .map(|a| {
            let k = seen.entry(a.source.as_str()).or_default();
            let text = texts.get(a.source.as_str());
            let item = Item {
                analysis: a.clone(),
                conversation: text.and_then(|(c, _)| c.get(*k).cloned()),
                extra_facts: text.map(|(_, f)| f.clone()).unwrap_or_default(),
            };
            *k += 1;
            item
        })
        .collect();
    let problems = analysis.errors.iter().map(|e| Problem { path: e.path.clone(), error: e.error.clone() }).collect();
    RunSet { dir: name, items, problems }
}
