//! Folder-level analysis: many transcripts, analyzed in parallel, summarised per folder, and saved beside a run
//! folder as `analysis.json` so that `report` (and a second `analyze`) need not recompute.
//!
//! This is the one folder pass of parrot: `analyze` ([`analyze_groups`] on [`groups`]) and `report` ([`analyze_groups`] on
//! [`groups_each`], keeping the conversations' text) both go through [`analyze_groups`], so finding transcripts,
//! reusing fresh saved analyses and saving new ones work the same for both.
//!
//! This is the one part of `analysis` that touches the disk; [`super::analyze`] stays pure. Files are analyzed
//! in parallel with rayon, one file in memory per worker and only its (small) analysis kept, so memory is bounded
//! by the largest file, not by the corpus. A bad file becomes a [`FileError`] and the others go on.
//!
//! A saved analysis records who wrote it (`"written_by": "parrot"`), the analysis version, the parrot version, the
//! forced format, and the name, size and modification time of every transcript; [`load_saved`] returns it only
//! while all of those still match what is asked now, so an analysis made with a mistaken `--format` is recomputed
//! rather than shown again.
//!
//! Saving is a policy, because the folders analyzed are not always ours: by default `analysis.json` is written only
//! into folders parrot generated (they hold `run.json` or `sweep.json`), elsewhere only with `--save`, and never
//! over an `analysis.json` that parrot did not write. The sources a saved analysis names are file names inside its
//! folder (`conv-0.jsonl`, `share.json#3`); [`load_saved`] refuses one that leaves the folder (`../x`, `/etc/x`)
//! or is not one of the folder's transcripts, so a crafted `analysis.json` cannot make `report` read other files.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{analyze, formats, legacy, Conversation, ConversationAnalysis, Format};

/// Version of the analysis algorithms and of the saved analysis; bump it when any number they produce or any field
/// saved changes, so saved analyses go stale. (2: every conversation records its [`super::Origin`]; 3: the
/// `recurring_tail` detector, marker-less logs, `warnings` and `embedding`; 4: the loop score's work bound,
/// `legacy.complete`, and paraphrase loops contrasted with the other speaker's turns.)
pub const ANALYSIS_VERSION: u32 = 4;
/// Name of the saved analysis inside a run folder.
pub const SAVED_NAME: &str = "analysis.json";
/// The [`DirAnalysis::written_by`] of every `analysis.json` parrot writes: only a file carrying it is replaced.
pub const WRITTEN_BY: &str = "parrot";
/// Files whose presence makes a folder one that parrot generated (a run or a sweep), where `analysis.json` is
/// saved by default.
pub const RUN_MARKERS: [&str; 2] = ["run.json", "sweep.json"];
/// File extensions read from folders (files named on the command line are read whatever their name).
pub const TRANSCRIPT_EXTENSIONS: [&str; 3] = ["jsonl", "json", "log"];
/// How deep folders are searched for transcripts.
pub const MAX_DEPTH: usize = 8;

/// A file that could not be analyzed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileError {
    /// The file, as given or found.
    pub path: String,
    /// What is wrong with it, one line.
    pub error: String,
}

/// Identity of a transcript when it was analyzed, to tell whether a saved analysis is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// File name inside the folder.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time: seconds since the Unix epoch.
    pub modified_s: i64,
    /// Modification time: nanoseconds within that second.
    pub modified_ns: u32,
}

/// How often one phenomenon occurs in a folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhenomenonRate {
    /// Share of conversations where the assistant shows it.
    pub assistant: f64,
    /// Share of conversations where the user shows it.
    pub user: f64,
    /// Share of conversations where either speaker shows it.
    pub any: f64,
    /// Mean onset (assistant-turn index) over the conversations where it was detected (earliest speaker).
    pub mean_onset: Option<f64>,
    /// Mean severity over all conversations (0 where not detected; the larger of the two speakers).
    pub mean_severity: f64,
}

/// Summary of the conversations of one folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirSummary {
    /// Conversations analyzed.
    pub conversations: usize,
    /// Files that could not be analyzed.
    pub errors: usize,
    /// Mean of the original's loop density.
    pub mean_loop_density: f64,
    /// Mean of the original's average response length (characters).
    pub mean_response_length: f64,
    /// Share of conversations with at least one phenomenon detected.
    pub broken: f64,
    /// Per phenomenon name.
    pub rates: BTreeMap<String, PhenomenonRate>,
    /// The original's histogram of loop densities (label, conversations).
    pub density_histogram: Vec<(String, usize)>,
    /// The original's histogram of response lengths over all responses (label, responses).
    pub length_histogram: Vec<(String, usize)>,
}

impl DirSummary {
    /// Summarises analyzed conversations (and counts errors).
    #[must_use]
    pub fn of(conversations: &[ConversationAnalysis], errors: usize) -> Self {
        let n = conversations.len();
        let mean = |f: &dyn Fn(&ConversationAnalysis) -> f64| {
            if n == 0 {
                0.0
            } else {
                conversations.iter().map(f).sum::<f64>() / n as f64
            }
        };
        let share = |count: usize| if n == 0 { 0.0 } else { count as f64 / n as f64 };
        let mut rates = BTreeMap::new();
        for name in super::detectors::names() {
            let get = |c: &ConversationAnalysis| c.detectors.get(name).cloned().unwrap_or_default();
            let a = conversations.iter().filter(|c| get(c).assistant.detected).count();
            let u = conversations.iter().filter(|c| get(c).user.detected).count();
            let onsets: Vec<usize> = conversations
                .iter()
                .filter_map(|c| {
                    let d = get(c);
                    [&d.assistant, &d.user].iter().filter(|x| x.detected).filter_map(|x| x.onset).min()
                })
                .collect();
            let any = conversations.iter().filter(|c| get(c).assistant.detected || get(c).user.detected).count();
            rates.insert(
                name.to_string(),
                PhenomenonRate {
                    assistant: share(a),
                    user: share(u),
                    any: share(any),
                    // Summed as f64: onsets of a reused analysis.json are input, and may add up past usize.
                    mean_onset: (!onsets.is_empty())
                        .then(|| onsets.iter().map(|&o| o as f64).sum::<f64>() / onsets.len() as f64),
                    mean_severity: mean(&|c| {
                        let d = get(c);
                        d.assistant.severity.max(d.user.severity)
                    }),
                },
            );
        }
        let densities: Vec<f64> = conversations.iter().map(|c| c.legacy.loop_density).collect();
        let lengths: Vec<usize> =
            conversations.iter().flat_map(|c| c.legacy.response_lengths.iter().copied()).collect();
        DirSummary {
            conversations: n,
            errors,
            mean_loop_density: mean(&|c| c.legacy.loop_density),
            mean_response_length: mean(&|c| c.legacy.avg_response_length),
            broken: share(conversations.iter().filter(|c| c.first_onset.is_some()).count()),
            rates,
            density_histogram: legacy::density_histogram(&densities),
            length_histogram: legacy::length_histogram(&lengths),
        }
    }
}

/// The analysis of one folder (or of the files named on the command line that live in it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirAnalysis {
    /// The folder, as given on the command line (or the parent of the files given).
    pub dir: String,
    /// Every conversation analyzed, in file-name order. In the saved file each `source` is the transcript's name
    /// inside the folder (with `#i` for entry `i` of a ShareGPT dataset); in memory it is the path, as found.
    pub conversations: Vec<ConversationAnalysis>,
    /// Every file that could not be analyzed.
    pub errors: Vec<FileError>,
    /// [`ANALYSIS_VERSION`] of the build that wrote this.
    #[serde(default)]
    pub version: u32,
    /// Version of parrot that wrote this.
    #[serde(default)]
    pub parrot_version: String,
    /// The format forced with `--format`, if any.
    #[serde(default)]
    pub forced_format: Option<Format>,
    /// The transcripts analyzed, to tell whether a saved analysis is stale.
    #[serde(default)]
    pub files: Vec<FileStamp>,
    /// Rates per phenomenon and the original's aggregate numbers.
    #[serde(default)]
    pub summary: DirSummary,
    /// The LLM judge's verdicts (`analyze --judge`), by transcript hash, judge model and prompt version. Valid
    /// whatever the rest of the file's staleness, so a recomputed analysis carries them over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub judge_cache: Vec<super::judge::CacheEntry>,
}

/// How the folder pass ([`analyze_groups`]) works.
#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    /// Force this format instead of detecting each file's.
    pub forced: Option<Format>,
    /// Reuse a folder's saved `analysis.json` when it is not stale.
    pub reuse_saved: bool,
    /// Save the analysis of every whole folder that parrot generated (holding one of [`RUN_MARKERS`]) beside it.
    pub save: bool,
    /// Save beside every whole folder analyzed, run folder or not (`analyze --save`).
    pub save_anywhere: bool,
    /// Keep every conversation's text beside its analysis (the report shows it). The transcripts of a reused
    /// saved analysis are then read again, for their text only.
    pub keep_text: bool,
    /// Embed every turn with this model and look for paraphrase loops (`--embed`); a saved analysis is then
    /// reused only when it was made with the same model.
    pub embedder: Option<std::sync::Arc<dyn super::embed::Embedder>>,
}

/// What analyzing one file gave: its conversations' analyses, or the one-line reason it could not be read.
pub type FileResult = Result<Vec<ConversationAnalysis>, String>;

/// What the folder pass gives for one [`Group`].
#[derive(Debug, Clone)]
pub struct Analyzed {
    /// The group's analysis, computed now or reused from its `analysis.json`.
    pub analysis: DirAnalysis,
    /// With [`AnalyzeOptions::keep_text`], the conversation behind each of `analysis.conversations`, in the same
    /// order (`None` where a transcript of a reused analysis could not be read again); empty without.
    pub texts: Vec<Option<Conversation>>,
}

/// One group of files that share a folder: what `analyze` summarises together and `report` shows as one run set.
#[derive(Debug, Clone)]
pub struct Group {
    /// The folder.
    pub dir: PathBuf,
    /// The folder as the user wrote it (or found below it).
    pub label: String,
    /// Its transcripts, sorted by name.
    pub files: Vec<PathBuf>,
    /// Paths that could not be listed or do not exist.
    pub errors: Vec<FileError>,
    /// True when the whole folder was given (then it can be saved and reused).
    pub whole_folder: bool,
}

impl Group {
    /// The group's analysis from its files' results (in file order), as `analysis.json` records it: the files'
    /// stamps, the conversations, the errors and the summary.
    #[must_use]
    pub fn analysis<'a>(
        &self,
        results: impl IntoIterator<Item = (&'a Path, FileResult)>,
        forced: Option<Format>,
    ) -> DirAnalysis {
        let mut out = DirAnalysis {
            dir: self.label.clone(),
            conversations: Vec::new(),
            errors: self.errors.clone(),
            version: ANALYSIS_VERSION,
            parrot_version: env!("CARGO_PKG_VERSION").to_string(),
            forced_format: forced,
            files: Vec::new(),
            summary: DirSummary::default(),
            judge_cache: Vec::new(),
        };
        for (path, result) in results {
            if let Some(s) = stamp(path) {
                out.files.push(s);
            }
            match result {
                Ok(mut convs) => out.conversations.append(&mut convs),
                Err(error) => out.errors.push(FileError { path: path.display().to_string(), error }),
            }
        }
        out.summary = DirSummary::of(&out.conversations, out.errors.len());
        out
    }

    /// Saves `analysis` as the folder's `analysis.json` when the whole folder was analyzed and the policy allows
    /// it (a folder parrot generated, or `anywhere`); returns the warning to print when that fails or when an
    /// `analysis.json` that parrot did not write is in the way.
    #[must_use]
    pub fn save_beside(&self, analysis: &DirAnalysis, anywhere: bool) -> Option<String> {
        if !self.whole_folder || !(anywhere || is_run_folder(&self.dir)) {
            return None;
        }
        save(&self.dir, analysis).err().map(|e| format!("{}: {e:#}", self.label))
    }
}

/// Whether parrot generated `dir` (it holds `run.json` or `sweep.json`).
#[must_use]
pub fn is_run_folder(dir: &Path) -> bool {
    RUN_MARKERS.iter().any(|m| dir.join(m).is_file())
}

/// Files that parrot itself writes into run folders beside the transcripts: never transcripts.
const RUN_FOLDER_FILES: [&str; 4] = [SAVED_NAME, "run.json", "sweep.json", "config.json"];

fn is_transcript_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ext_ok = path.extension().and_then(|e| e.to_str()).is_some_and(|e| TRANSCRIPT_EXTENSIONS.contains(&e));
    ext_ok && !name.starts_with('.') && !RUN_FOLDER_FILES.contains(&name) && !name.ends_with(".config.json")
}

/// The transcripts directly inside `dir` (by extension, sorted by name) and its sub-folders.
fn list_dir(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).context("could not list the folder")? {
        let path = entry.context("could not list the folder")?.path();
        if path.is_dir() {
            if !path.file_name().and_then(|n| n.to_str()).unwrap_or("").starts_with('.') {
                subdirs.push(path);
            }
        } else if is_transcript_name(&path) {
            files.push(path);
        }
    }
    files.sort();
    subdirs.sort();
    Ok((files, subdirs))
}

fn collect_folder(dir: &Path, depth: usize, out: &mut Vec<Group>) {
    let label = dir.display().to_string();
    match list_dir(dir) {
        Err(e) => out.push(Group {
            dir: dir.to_path_buf(),
            label: label.clone(),
            files: Vec::new(),
            errors: vec![FileError { path: label, error: format!("{e:#}") }],
            whole_folder: false,
        }),
        Ok((files, subdirs)) => {
            if !files.is_empty() {
                out.push(Group { dir: dir.to_path_buf(), label, files, errors: Vec::new(), whole_folder: true });
            }
            if depth < MAX_DEPTH {
                for sub in subdirs {
                    collect_folder(&sub, depth + 1, out);
                }
            }
        }
    }
}

/// Turns PATH arguments into groups: each folder (and sub-folder holding transcripts) is one group; files named
/// directly are grouped by their parent folder, in the order given.
#[must_use]
pub fn groups(paths: &[PathBuf]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for path in paths {
        if path.is_dir() {
            let before = out.len();
            collect_folder(path, 0, &mut out);
            if out.len() == before {
                let label = path.display().to_string();
                out.push(Group {
                    dir: path.clone(),
                    label: label.clone(),
                    files: Vec::new(),
                    errors: vec![FileError {
                        path: label,
                        error: format!("no transcripts (*.{}) in this folder", TRANSCRIPT_EXTENSIONS.join(", *.")),
                    }],
                    whole_folder: false,
                });
            }
            continue;
        }
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let label = if parent.as_os_str().is_empty() { ".".to_string() } else { parent.display().to_string() };
        let idx = match out.iter().position(|g| !g.whole_folder && g.label == label) {
            Some(i) => i,
            None => {
                out.push(Group { dir: parent, label, files: Vec::new(), errors: Vec::new(), whole_folder: false });
                out.len() - 1
            }
        };
        if path.exists() {
            out[idx].files.push(path.clone());
        } else {
            out[idx]
                .errors
                .push(FileError { path: path.display().to_string(), error: "no such file or folder".into() });
        }
    }
    out
}

/// The groups of each PATH on its own, in the order given (the report's run sets): a folder gives its groups as in
/// [`groups`], a lone file a group of its own even beside another, and a missing path a group holding its error.
#[must_use]
pub fn groups_each(paths: &[PathBuf]) -> Vec<Group> {
    let mut out = Vec::new();
    for path in paths {
        if path.exists() {
            out.extend(groups(std::slice::from_ref(path)));
        } else {
            let label = path.display().to_string();
            out.push(Group {
                dir: path.clone(),
                label: label.clone(),
                files: Vec::new(),
                errors: vec![FileError { path: label, error: "no such file or folder".into() }],
                whole_folder: false,
            });
        }
    }
    out
}

/// The stamp of a file, if it can be read.
fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta.modified().ok()?;
    let (s, ns) = match modified.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
        Err(e) => (-i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX), e.duration().subsec_nanos()),
    };
    Some(FileStamp {
        name: path.file_name()?.to_string_lossy().into_owned(),
        size: meta.len(),
        modified_s: s,
        modified_ns: ns,
    })
}

/// Reads and analyzes one file (all conversations of a ShareGPT dataset).
///
/// # Errors
/// When the file cannot be read or parsed.
pub fn analyze_file(path: &Path, forced: Option<Format>) -> Result<Vec<ConversationAnalysis>> {
    read_file(path, forced, false, None).map(|read| read.analyses)
}

/// Analyzes transcripts and folders of them, in parallel across files. Saves and reuses nothing.
#[must_use]
pub fn analyze_paths(paths: &[PathBuf], forced: Option<Format>) -> Vec<DirAnalysis> {
    analyze_paths_with(paths, &AnalyzeOptions { forced, ..AnalyzeOptions::default() }).0
}

/// Analyzes transcripts and folders of them, grouped as [`groups`] does, reusing and saving `analysis.json` as
/// `options` say. Returns the analyses and warnings (saves that failed).
#[must_use]
pub fn analyze_paths_with(paths: &[PathBuf], options: &AnalyzeOptions) -> (Vec<DirAnalysis>, Vec<String>) {
    let (analyzed, warnings) = analyze_groups(&groups(paths), options);
    (analyzed.into_iter().map(|a| a.analysis).collect(), warnings)
}

/// The folder pass, shared by `analyze` and `report`: reuses the fresh saved analysis of each whole folder, reads
/// and analyzes the files of every other group in one parallel pass over all of them, and saves each such
/// folder's analysis beside it. Returns one [`Analyzed`] per group, in order, and the warnings (saves that
/// failed).
#[must_use]
pub fn analyze_groups(groups: &[Group], options: &AnalyzeOptions) -> (Vec<Analyzed>, Vec<String>) {
    let mut warnings = Vec::new();
    let reused: Vec<Option<DirAnalysis>> = groups
        .iter()
        .map(|g| {
            if !(options.reuse_saved && g.whole_folder) {
                return None;
            }
            load_saved(&g.dir, options.forced)
                .unwrap_or_else(|refused| {
                    warnings
                        .push(format!("{}: {refused}; analyzing the folder again", g.dir.join(SAVED_NAME).display()));
                    None
                })
                .filter(|saved| {
                    options.embedder.as_ref().is_none_or(|e| {
                        saved.conversations.iter().all(|c| c.embedding.as_ref().is_some_and(|x| x.model == e.name()))
                    })
                })
        })
        .collect();
    let jobs: Vec<(usize, &Path)> = groups
        .iter()
        .enumerate()
        .filter(|(i, _)| reused[*i].is_none())
        .flat_map(|(i, g)| g.files.iter().map(move |f| (i, f.as_path())))
        .collect();
    let read: Vec<(usize, &Path, Result<FileRead, String>)> = jobs
        .par_iter()
        .map(|&(i, f)| {
            let read = read_file(f, options.forced, options.keep_text, options.embedder.as_deref());
            (i, f, read.map_err(|e| format!("{e:#}")))
        })
        .collect();
    let mut per_group: Vec<Vec<(&Path, Result<FileRead, String>)>> = groups.iter().map(|_| Vec::new()).collect();
    for (i, path, result) in read {
        per_group[i].push((path, result));
    }
    let reused_pairs: Vec<(&Path, &DirAnalysis)> =
        groups.iter().zip(&reused).filter_map(|(g, saved)| Some((g.dir.as_path(), saved.as_ref()?))).collect();
    let mut texts_of_reused = reread_texts(&reused_pairs, options.keep_text).into_iter();
    let mut out = Vec::with_capacity(groups.len());
    for ((g, saved), files) in groups.iter().zip(reused).zip(per_group) {
        if let Some(mut analysis) = saved {
            analysis.dir.clone_from(&g.label);
            let texts = texts_of_reused.next().unwrap_or_default();
            out.push(Analyzed { analysis, texts });
            continue;
        }
        let mut texts = Vec::new();
        let results: Vec<(&Path, FileResult)> = files
            .into_iter()
            .map(|(path, result)| {
                let result = result.map(|read| {
                    texts.extend(read.texts.into_iter().map(Some));
                    read.analyses
                });
                (path, result)
            })
            .collect();
        let mut analysis = g.analysis(results, options.forced);
        if g.whole_folder {
            analysis.judge_cache = load_judge_cache(&g.dir);
        }
        if options.save || options.save_anywhere {
            warnings.extend(g.save_beside(&analysis, options.save_anywhere));
        }
        out.push(Analyzed { analysis, texts });
    }
    (out, warnings)
}

/// One file of the folder pass: its conversations' analyses and, when kept, the conversations themselves.
struct FileRead {
    analyses: Vec<ConversationAnalysis>,
    texts: Vec<Conversation>,
}

fn read_file(
    path: &Path,
    forced: Option<Format>,
    keep_text: bool,
    embedder: Option<&dyn super::embed::Embedder>,
) -> Result<FileRead> {
    let conversations = formats::read_path_all(path, forced)?;
    let analyses = match embedder {
        None => conversations.iter().map(analyze).collect(),
        Some(e) => conversations
            .iter()
            .map(|c| {
                let vectors = super::embed::embed_conversation(c, e)
                    .with_context(|| format!("could not embed the turns with '{}'", e.name()))?;
                Ok(super::analyze_with(c, Some(super::embed::analyze_vectors(c, &vectors, e.name()))))
            })
            .collect::<Result<_>>()?,
    };
    Ok(FileRead { analyses, texts: if keep_text { conversations } else { Vec::new() } })
}

/// For each reused analysis (with its folder), in order, the text of its conversations, read again from their
/// sources (in the format the analysis was made with) in one parallel pass over all of them; nothing unless
/// `keep_text`. A source that cannot be read leaves its conversations without text. The sources were checked by
/// [`load_saved`]: each is a transcript of its folder, entry `i` of a ShareGPT dataset named `file#i`.
fn reread_texts(reused: &[(&Path, &DirAnalysis)], keep_text: bool) -> Vec<Vec<Option<Conversation>>> {
    if !keep_text {
        return Vec::new();
    }
    // Per reused analysis, per conversation: the file to read and the entry wanted (`None`: the next one).
    let wanted: Vec<Vec<(PathBuf, Option<usize>)>> = reused
        .iter()
        .map(|&(dir, saved)| {
            saved
                .conversations
                .iter()
                .map(|c| {
                    let rel =
                        Path::new(&c.source).strip_prefix(dir).map_or(c.source.clone(), |r| r.display().to_string());
                    let (file, entry) = split_source(&rel, &saved.files).unwrap_or((rel.as_str(), None));
                    (dir.join(file), entry)
                })
                .collect()
        })
        .collect();
    let mut sources: Vec<(&Path, Option<Format>)> = Vec::new();
    for (w, (_, saved)) in wanted.iter().zip(reused) {
        for (file, _) in w {
            if !sources.contains(&(file.as_path(), saved.forced_format)) {
                sources.push((file.as_path(), saved.forced_format));
            }
        }
    }
    let read: HashMap<(&Path, Option<Format>), Vec<Conversation>> = sources
        .par_iter()
        .filter_map(|&(file, forced)| Some(((file, forced), formats::read_path_all(file, forced).ok()?)))
        .collect();
    wanted
        .iter()
        .zip(reused)
        .map(|(w, (_, saved))| {
            let mut next: HashMap<&Path, usize> = HashMap::new();
            w.iter()
                .map(|(file, entry)| {
                    let k = next.entry(file.as_path()).or_default();
                    let i = entry.unwrap_or(*k);
                    // A crafted `file#i` can name the last usize: no entry has it, and the next one is past it.
                    *k = i.saturating_add(1);
                    read.get(&(file.as_path(), saved.forced_format)).and_then(|c| c.get(i).cloned())
                })
                .collect()
        })
        .collect()
}

/// A saved source (`name` or `name#i`) as the transcript it names and the entry, when it is one of `files`: a
/// plain file name inside the folder, never a path.
fn split_source<'a>(source: &'a str, files: &[FileStamp]) -> Option<(&'a str, Option<usize>)> {
    let known = |name: &str| files.iter().any(|f| f.name == name);
    if known(source) {
        return Some((source, None));
    }
    let (name, entry) = source.rsplit_once('#')?;
    let entry = entry.parse::<usize>().ok().filter(|_| entry.bytes().all(|b| b.is_ascii_digit()))?;
    known(name).then_some((name, Some(entry)))
}

/// Writes `analysis` to `dir/analysis.json` with [`crate::durable::write_atomic`], so that a reader (or a crash)
/// never sees half of it. The sources are saved as names inside `dir`, so that the folder can be moved and the
/// analysis still names its transcripts.
///
/// # Errors
/// When an `analysis.json` that parrot did not write is already there (it is left as it is), or the file cannot
/// be written.
pub fn save(dir: &Path, analysis: &DirAnalysis) -> Result<()> {
    let path = dir.join(SAVED_NAME);
    if path.exists() && !written_by_parrot(&path) {
        bail!(
            "'{}' was not written by parrot, so it is left as it is and the analysis was not saved (rename that file \
             to let parrot save its own)",
            path.display()
        );
    }
    let mut analysis = analysis.clone();
    for c in &mut analysis.conversations {
        if let Ok(rel) = Path::new(&c.source).strip_prefix(dir) {
            c.source = rel.display().to_string();
        }
    }
    let saved = Saved { written_by: WRITTEN_BY.to_string(), analysis };
    let bytes = serde_json::to_vec(&saved).context("could not serialize the analysis")?;
    crate::durable::write_atomic(&path, &bytes).context("could not save the analysis")
}

/// The judge cache of a folder's `analysis.json` written by parrot, stale or not (its entries are keyed by what they
/// depend on); empty when there is none or it cannot be read. Reads at most [`MAX_SAVED_BYTES`].
#[must_use]
pub fn load_judge_cache(dir: &Path) -> Vec<super::judge::CacheEntry> {
    #[derive(Deserialize)]
    struct JudgeOnly {
        #[serde(default)]
        judge_cache: Vec<super::judge::CacheEntry>,
    }
    read_bounded(&dir.join(SAVED_NAME))
        .ok()
        .and_then(|b| serde_json::from_slice::<Saved<JudgeOnly>>(&b).ok())
        .filter(|s| s.written_by == WRITTEN_BY)
        .map(|s| s.analysis.judge_cache)
        .unwrap_or_default()
}

/// `analysis.json` as saved: the analysis and the mark that parrot wrote it.
#[derive(Serialize, Deserialize)]
struct Saved<A> {
    /// Always [`WRITTEN_BY`] (`"parrot"`): marks the file as parrot's, so that a second save may replace it, and
    /// no file of the same name that parrot did not write is ever overwritten or trusted.
    #[serde(default)]
    written_by: String,
    #[serde(flatten)]
    analysis: A,
}

/// The most bytes of an `analysis.json` read back; a larger one is not parrot's (a saved analysis holds numbers,
/// not text) and is analyzed again rather than read.
pub const MAX_SAVED_BYTES: u64 = 256 << 20;

/// Whether the file at `path` is an analysis parrot wrote: it carries `"written_by": "parrot"`. (Reads only the
/// field, with the size bound of [`MAX_SAVED_BYTES`].)
fn written_by_parrot(path: &Path) -> bool {
    read_bounded(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Saved<serde::de::IgnoredAny>>(&b).ok())
        .is_some_and(|m| m.written_by == WRITTEN_BY)
}

/// The saved analysis at `path`, read within [`MAX_SAVED_BYTES`] (callers treat any failure as "none saved").
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    crate::config::read_bounded(path, MAX_SAVED_BYTES)
}

/// The saved analysis of a run folder when it is valid for an analysis with `forced` now: written by parrot, by
/// the same analysis and parrot versions, with the same forced format, over the same transcripts with the same
/// sizes and modification times. Its sources are turned back into paths inside `dir`.
///
/// # Errors
/// A one-line reason when the saved analysis names a source outside the folder or that is not one of its
/// transcripts (a crafted or damaged file); it is then not used. A missing, foreign or stale one is `Ok(None)`.
pub fn load_saved(dir: &Path, forced: Option<Format>) -> Result<Option<DirAnalysis>, String> {
    let Ok(text) = read_bounded(&dir.join(SAVED_NAME)) else { return Ok(None) };
    let Ok(Saved { written_by, analysis: mut saved }) = serde_json::from_slice::<Saved<DirAnalysis>>(&text) else {
        return Ok(None);
    };
    if written_by != WRITTEN_BY
        || saved.version != ANALYSIS_VERSION
        || saved.parrot_version != env!("CARGO_PKG_VERSION")
        || saved.forced_format != forced
    {
        return Ok(None);
    }
    let Ok((files, _)) = list_dir(dir) else { return Ok(None) };
    let Some(mut now) = files.iter().map(|f| stamp(f)).collect::<Option<Vec<_>>>() else { return Ok(None) };
    let mut then = saved.files.clone();
    now.sort_by(|a, b| a.name.cmp(&b.name));
    then.sort_by(|a, b| a.name.cmp(&b.name));
    if now != then {
        return Ok(None);
    }
    for c in &mut saved.conversations {
        if split_source(&c.source, &saved.files).is_none() {
            return Err(format!(
                "the source '{}' is not a transcript of this folder, so the saved analysis is not used",
                formats::shorten(&c.source, 120).escape_debug()
            ));
        }
        c.source = dir.join(&c.source).display().to_string();
    }
    Ok(Some(saved))
}

#[cfg(test)]
mod run_folder_tests {
    use super::*;

    #[test]
    fn files_parrot_writes_beside_transcripts_are_not_transcripts() {
        for name in ["run.json", "sweep.json", "analysis.json", "config.json", ".hidden.jsonl"] {
            assert!(!is_transcript_name(Path::new(name)), "{name}");
        }
        assert!(is_transcript_name(Path::new("conversation-000.jsonl")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"hello there"}]"#;

    #[test]
    fn folder_with_good_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), CHAT).unwrap();
        std::fs::write(dir.path().join("b.jsonl"), b"").unwrap();
        std::fs::write(dir.path().join("c.log"), b"no done here\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let out = analyze_paths(&[dir.path().to_path_buf()], None);
        assert_eq!(out.len(), 1);
        let d = &out[0];
        assert_eq!(d.conversations.len(), 1);
        assert_eq!(d.errors.len(), 2);
        assert!(d.errors[0].path.ends_with("b.jsonl") && d.errors[0].error.contains("empty"), "{:?}", d.errors);
        assert_eq!(d.summary.conversations, 1);
        assert_eq!(d.summary.errors, 2);
        assert_eq!(d.files.len(), 3);
    }

    #[test]
    fn saved_analysis_goes_stale_when_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), CHAT).unwrap();
        std::fs::write(dir.path().join("run.json"), "{}").unwrap();
        assert_eq!(load_saved(dir.path(), None), Ok(None));
        let opts = AnalyzeOptions { reuse_saved: true, save: true, ..AnalyzeOptions::default() };
        let (out, warnings) = analyze_paths_with(&[dir.path().to_path_buf()], &opts);
        assert!(warnings.is_empty());
        let saved = load_saved(dir.path(), None).unwrap().expect("fresh");
        assert_eq!(saved.conversations, out[0].conversations);
        // A new transcript makes it stale.
        std::fs::write(dir.path().join("b.json"), CHAT).unwrap();
        assert_eq!(load_saved(dir.path(), None), Ok(None));
        let (out, _) = analyze_paths_with(&[dir.path().to_path_buf()], &opts);
        assert_eq!(out[0].conversations.len(), 2);
        assert!(load_saved(dir.path(), None).unwrap().is_some());
        // So does a changed size.
        std::fs::write(dir.path().join("b.json"), format!("{CHAT}\n")).unwrap();
        assert_eq!(load_saved(dir.path(), None), Ok(None));
    }

    #[test]
    fn the_judge_cache_survives_a_recomputed_analysis() {
        use crate::analysis::judge::{CacheEntry, CacheKey};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), CHAT).unwrap();
        let opts = AnalyzeOptions { reuse_saved: true, save: true, save_anywhere: true, ..AnalyzeOptions::default() };
        let (mut out, _) = analyze_paths_with(&[dir.path().to_path_buf()], &opts);
        let key = CacheKey { transcript: "h".into(), model: "m".into(), prompt_version: 1 };
        out[0].judge_cache.push(CacheEntry { key, windows: Vec::new() });
        save(dir.path(), &out[0]).unwrap();
        // A new transcript makes the analysis stale: recomputed, it keeps the cache (keyed by what it depends on).
        std::fs::write(dir.path().join("b.json"), CHAT).unwrap();
        let (again, _) = analyze_paths_with(&[dir.path().to_path_buf()], &opts);
        assert_eq!(again[0].conversations.len(), 2);
        assert_eq!(again[0].judge_cache, out[0].judge_cache);
        assert_eq!(load_saved(dir.path(), None).unwrap().unwrap().judge_cache, out[0].judge_cache);
    }

    #[test]
    fn files_named_directly_are_grouped_by_folder_and_missing_ones_reported() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("x.json");
        std::fs::write(&a, CHAT).unwrap();
        let out = analyze_paths(&[a.clone(), dir.path().join("missing.json"), a], None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].conversations.len(), 2);
        assert_eq!(out[0].errors.len(), 1);
        assert!(out[0].errors[0].error.contains("no such file"));
    }

    /// A log of the original tool that records its models (but no engine).
    const LOG: &str = "--- DONE ---\nFull Config:\n{}\nAssistant Model: a.gguf\nUser Model: u.gguf\n\n\
=== assistant @ 0 ===\nhello\n=== user @ 3 ===\nhi\n\n--- 5 tokens, 2 turns ---\n";

    #[test]
    fn the_report_pass_keeps_texts_and_origins_also_from_a_saved_analysis() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), CHAT).unwrap();
        std::fs::write(dir.path().join("b.log"), LOG).unwrap();
        std::fs::write(dir.path().join("run.json"), "{}").unwrap();
        let opts = AnalyzeOptions { reuse_saved: true, save: true, keep_text: true, ..AnalyzeOptions::default() };
        let groups = groups_each(&[dir.path().to_path_buf()]);
        let (fresh, warnings) = analyze_groups(&groups, &opts);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(fresh[0].texts.len(), 2);
        assert!(fresh[0].texts.iter().all(Option::is_some));
        let origin = &fresh[0].analysis.conversations[1].origin;
        assert_eq!((origin.assistant_model.as_deref(), origin.backend.as_deref()), (Some("a.gguf"), None));
        // The second pass reuses the saved analysis, origins included, and reads the transcripts for their text.
        let saved = load_saved(dir.path(), None).unwrap().expect("saved and fresh");
        assert_eq!(saved.conversations, fresh[0].analysis.conversations);
        let (reused, _) = analyze_groups(&groups, &opts);
        assert_eq!(reused[0].analysis, saved);
        assert_eq!(reused[0].texts, fresh[0].texts);
        // Without keep_text no text is kept.
        let (plain, _) = analyze_groups(&groups, &AnalyzeOptions::default());
        assert!(plain[0].texts.is_empty());
        assert_eq!(plain[0].analysis.conversations, saved.conversations);
    }

    /// #15: onsets of a reused analysis.json are input (`analyze --judge` summarises them again): their mean is
    /// taken without adding them up in usize.
    #[test]
    fn issue_15_the_mean_onset_of_saved_onsets_at_the_top_of_usize() {
        let conv = formats::parse_reader(CHAT.as_bytes(), "a.json", None).unwrap();
        let mut v = serde_json::to_value(analyze(&conv)).unwrap();
        let d = &mut v["detectors"]["single_turn_loop"]["assistant"];
        d["detected"] = true.into();
        d["onset"] = usize::MAX.into();
        let c: ConversationAnalysis = serde_json::from_value(v).unwrap();
        let summary = DirSummary::of(&[c.clone(), c], 0);
        assert_eq!(summary.rates["single_turn_loop"].mean_onset, Some(usize::MAX as f64));
    }

    #[test]
    fn groups_each_keeps_every_argument_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        std::fs::write(&a, CHAT).unwrap();
        std::fs::write(&b, CHAT).unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(groups(&[a.clone(), b.clone()]).len(), 1, "analyze groups files by folder");
        let each = groups_each(&[a, b, missing.clone()]);
        assert_eq!(each.len(), 3);
        assert_eq!(each[2].label, missing.display().to_string());
        assert_eq!(each[2].errors[0].error, "no such file or folder");
        assert!(each.iter().all(|g| !g.whole_folder));
    }
}

/// The saving policy and the validity of a saved analysis (issue #15).
#[cfg(test)]
mod policy_tests {
    use super::*;

    const CHAT: &str = r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"hello there"}]"#;
    const SHARE: &str = r#"[{"conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"one"}]},
        {"conversations":[{"from":"human","value":"bye"},{"from":"gpt","value":"two"}]}]"#;

    fn pass(dir: &Path, options: &AnalyzeOptions) -> (Vec<Analyzed>, Vec<String>) {
        analyze_groups(&groups_each(&[dir.to_path_buf()]), options)
    }

    fn saving() -> AnalyzeOptions {
        AnalyzeOptions { reuse_saved: true, save: true, keep_text: true, ..AnalyzeOptions::default() }
    }

    #[test]
    fn issue_15_saved_only_into_run_folders_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), CHAT).unwrap();
        let (_, warnings) = pass(dir.path(), &saving());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!dir.path().join(SAVED_NAME).exists(), "a dataset folder is not written into by default");
        let (_, warnings) = pass(dir.path(), &AnalyzeOptions { save_anywhere: true, ..saving() });
        assert!(warnings.is_empty(), "{warnings:?}");
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(SAVED_NAME)).unwrap()).unwrap();
        assert_eq!(saved["written_by"], "parrot");
        assert_eq!(saved["conversations"][0]["source"], "a.json", "sources are saved inside the folder");
        // A run folder gets one by default.
        let run = tempfile::tempdir().unwrap();
        std::fs::write(run.path().join("a.json"), CHAT).unwrap();
        std::fs::write(run.path().join("sweep.json"), "{}").unwrap();
        pass(run.path(), &saving());
        assert!(run.path().join(SAVED_NAME).exists());
    }

    #[test]
    fn issue_15_never_over_a_file_parrot_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), CHAT).unwrap();
        std::fs::write(dir.path().join("run.json"), "{}").unwrap();
        let foreign = br#"{"labels": [1, 2, 3]}"#;
        std::fs::write(dir.path().join(SAVED_NAME), foreign).unwrap();
        let (out, warnings) = pass(dir.path(), &AnalyzeOptions { save_anywhere: true, ..saving() });
        assert_eq!(out[0].analysis.conversations.len(), 1);
        assert_eq!(std::fs::read(dir.path().join(SAVED_NAME)).unwrap(), foreign, "left as it is");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("was not written by parrot"), "{warnings:?}");
        // Nor over a full analysis whose mark says it is not parrot's.
        let mut other = serde_json::to_value(&out[0].analysis).unwrap();
        other["written_by"] = "someone".into();
        std::fs::write(dir.path().join(SAVED_NAME), serde_json::to_vec(&other).unwrap()).unwrap();
        assert_eq!(load_saved(dir.path(), None), Ok(None), "not trusted either");
        assert!(save(dir.path(), &out[0].analysis).is_err());
    }

    #[test]
    fn issue_15_a_saved_analysis_is_invalid_once_the_format_differs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), CHAT).unwrap();
        std::fs::write(dir.path().join("run.json"), "{}").unwrap();
        // A mistaken --format: every file fails.
        let wrong = AnalyzeOptions { forced: Some(Format::Sharegpt), ..saving() };
        let (out, _) = pass(dir.path(), &wrong);
        assert_eq!(out[0].analysis.conversations.len(), 0);
        assert!(load_saved(dir.path(), Some(Format::Sharegpt)).unwrap().is_some());
        // Without it (the report forces none), the folder is analyzed again.
        assert_eq!(load_saved(dir.path(), None), Ok(None));
        let (out, _) = pass(dir.path(), &saving());
        assert_eq!(out[0].analysis.conversations.len(), 1);
        assert_eq!(out[0].texts.len(), 1);
    }

    #[test]
    fn issue_15_saved_sources_stay_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), CHAT).unwrap();
        std::fs::write(dir.path().join("run.json"), "{}").unwrap();
        pass(dir.path(), &saving());
        let path = dir.path().join(SAVED_NAME);
        let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let secret = dir.path().parent().unwrap().join("secret.json");
        for crafted in ["../../etc/passwd", "/etc/passwd", "a.json/../../x.json", &secret.display().to_string()] {
            let mut v = good.clone();
            v["conversations"][0]["source"] = crafted.into();
            std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
            let refused = load_saved(dir.path(), None).expect_err(crafted);
            assert!(refused.contains("is not a transcript of this folder"), "{refused}");
            assert!(!refused.contains('\n'));
            let (out, warnings) = pass(dir.path(), &AnalyzeOptions { save: false, ..saving() });
            assert!(warnings.iter().any(|w| w.contains("analysis.json") && w.contains("analyzing the folder again")));
            assert_eq!(out[0].analysis.conversations[0].source, dir.path().join("a.json").display().to_string());
        }
    }

    #[test]
    fn issue_15_sharegpt_entries_of_a_saved_analysis_resolve_from_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("share.json"), SHARE).unwrap();
        std::fs::write(dir.path().join("run.json"), "{}").unwrap();
        let (fresh, _) = pass(dir.path(), &saving());
        let saved = load_saved(dir.path(), None).unwrap().expect("saved");
        let share = dir.path().join("share.json").display().to_string();
        assert_eq!(saved.conversations[1].source, format!("{share}#1"), "resolved inside the folder");
        let (reused, _) = pass(dir.path(), &saving());
        assert_eq!(reused[0].analysis, saved);
        assert_eq!(reused[0].texts, fresh[0].texts);
        let text = |i: usize| reused[0].texts[i].as_ref().map(|c| c.messages[1].text.clone());
        assert_eq!((text(0).as_deref(), text(1).as_deref()), (Some("one"), Some("two")));
    }

    /// A crafted entry index at the top of `usize` names no entry: that conversation has no text, and the next
    /// one without an index is not pushed past the end (it overflowed).
    #[test]
    fn issue_15_a_huge_sharegpt_entry_of_a_saved_analysis_reads_without_overflow() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("share.json"), SHARE).unwrap();
        std::fs::write(dir.path().join("run.json"), "{}").unwrap();
        pass(dir.path(), &saving());
        let path = dir.path().join(SAVED_NAME);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["conversations"][0]["source"] = format!("share.json#{}", usize::MAX).into();
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let (reused, warnings) = pass(dir.path(), &AnalyzeOptions { save: false, ..saving() });
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(reused[0].texts.len(), 2);
        assert!(reused[0].texts[0].is_none(), "no such entry");
        assert!(reused[0].texts[1].is_some(), "entry #1 is still read");
    }
}
