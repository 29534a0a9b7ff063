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
    /// ShareGPT. Every sub-folder that holds transcripts is a run set of its own (so a `parrot sweep` folder
    /// gives one per cell); a single transcript file is a run set of one.
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
    /// Show the conversations in full inside `index.html` when there are at most this many; with more, each
    /// conversation gets a page of its own in `DIR/conversations/`, so the index stays quick to open.
    #[arg(long, value_name = "N", default_value_t = report::INLINE_MAX)]
    pub inline_max: usize,
    /// Do not save `analysis.json` beside the run folders that had to be analyzed (as `parrot analyze` does, so
    /// that the next report reuses it).
    #[arg(long)]
    pub no_save: bool,
}

/// Runs `parrot report`.
///
/// # Errors
/// When the output folder or the page cannot be written. Unreadable inputs are not errors: they are reported
/// and make the exit code 1.
pub fn run(global: &GlobalArgs, args: ReportArgs) -> Result<ExitCode> {
    let (sets, warnings) = read_run_sets(&args.run_dirs, !args.no_save);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let problems = report::problems(&sets);
    for p in &problems {
        eprintln!("warning: {}: {}", p.path, p.error);
    }
    let options = report::Options {
        generated: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        inline_max: args.inline_max,
    };
    let rendered = report::render(&sets, &options)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("could not create the output folder '{}'", args.out.display()))?;
    write_pages(&args.out, &rendered.pages)?;
    let index = args.out.join("index.html");
    std::fs::write(&index, rendered.index).with_context(|| format!("could not write '{}'", index.display()))?;
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
    for (name, figure) in report::summary_figures(sets, false) {
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

/// Writes the conversations' own pages into `out/conversations/`, first removing the pages an earlier report
/// left there (only files named like ours), so that no stale conversation stays linked.
fn write_pages(out: &Path, pages: &[(String, String)]) -> Result<()> {
    let dir = out.join(report::PAGES_DIR);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let ours = name
                .strip_prefix("c-")
                .and_then(|n| n.strip_suffix(".html"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if ours {
                std::fs::remove_file(&path)
                    .with_context(|| format!("could not remove the old page '{}'", path.display()))?;
            }
        }
    }
    if pages.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create '{}'", dir.display()))?;
    pages.par_iter().try_for_each(|(name, html)| {
        let path = out.join(name);
        std::fs::write(&path, html).with_context(|| format!("could not write '{}'", path.display()))
    })
}

/// What one transcript file gave: its conversations, analyzed, or the one-line reason it could not be read.
type ItemsResult = Result<Vec<Item>, String>;

/// Reads the run sets: one per folder (or sub-folder) holding transcripts, as `parrot analyze` groups them.
/// A folder whose saved analysis is fresh reuses it; the files of the others are read and analyzed in one
/// parallel pass over all of them, and each such folder's analysis is saved beside it when `save` (failures to
/// save become warnings).
fn read_run_sets(paths: &[PathBuf], save: bool) -> (Vec<RunSet>, Vec<String>) {
    // Each argument on its own: a missing path or a lone file is a run set of its own, in the order given.
    let mut groups = Vec::new();
    for path in paths {
        if path.exists() {
            groups.extend(saved::groups(std::slice::from_ref(path)));
        } else {
            let label = path.display().to_string();
            groups.push(saved::Group {
                dir: path.clone(),
                label: label.clone(),
                files: Vec::new(),
                errors: vec![saved::FileError { path: label, error: "no such file or folder".into() }],
                whole_folder: false,
            });
        }
    }
    let fresh: Vec<Option<saved::DirAnalysis>> =
        groups.iter().map(|g| g.whole_folder.then(|| saved::load_saved(&g.dir)).flatten()).collect();
    let jobs: Vec<(usize, &PathBuf)> = groups
        .iter()
        .enumerate()
        .filter(|(i, _)| fresh[*i].is_none())
        .flat_map(|(i, g)| g.files.iter().map(move |f| (i, f)))
        .collect();
    let analyzed: Vec<(usize, &PathBuf, ItemsResult)> =
        jobs.par_iter().map(|&(i, path)| (i, path, read_and_analyze(path))).collect();
    let mut per_group: Vec<Vec<(&PathBuf, ItemsResult)>> = groups.iter().map(|_| Vec::new()).collect();
    for (i, path, result) in analyzed {
        per_group[i].push((path, result));
    }
    let mut warnings = Vec::new();
    let mut sets = Vec::with_capacity(groups.len());
    for ((group, fresh), files) in groups.iter().zip(fresh).zip(per_group) {
        if let Some(analysis) = fresh {
            sets.push(from_saved(group.label.clone(), analysis));
            continue;
        }
        if save {
            let results = files.iter().map(|(path, items)| {
                let analyses = items
                    .as_ref()
                    .map(|items| items.iter().map(|item| item.analysis.clone()).collect())
                    .map_err(Clone::clone);
                (path.as_path(), analyses)
            });
            warnings.extend(group.save_beside(&group.analysis(results, None)));
        }
        let mut set = RunSet {
            dir: group.label.clone(),
            items: Vec::new(),
            problems: group.errors.iter().map(|e| Problem { path: e.path.clone(), error: e.error.clone() }).collect(),
        };
        for (path, result) in files {
            match result {
                Ok(items) => set.items.extend(items),
                Err(error) => set.problems.push(Problem { path: path.display().to_string(), error }),
            }
        }
        sets.push(set);
    }
    (sets, warnings)
}

/// Reads one transcript file and analyzes each of its conversations, keeping the text for the page; the
/// one-line reason when the file cannot be read.
fn read_and_analyze(path: &Path) -> ItemsResult {
    let conversations = formats::read_path_all(path, None).map_err(|e| format!("{e:#}"))?;
    let facts = header_facts(path, &conversations);
    Ok(conversations
        .into_iter()
        .map(|conversation| Item {
            analysis: crate::analysis::analyze(&conversation),
            conversation: Some(conversation),
            extra_facts: facts.clone(),
        })
        .collect())
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
