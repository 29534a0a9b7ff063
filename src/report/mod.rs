//! The report: one self-contained HTML page that compares run sets (folders of transcripts) and lets a reader
//! drill down to one conversation. Pure: takes analyses and conversations, returns the page as a `String`;
//! [`files`] alone touches the disk (reads the run folders through the analysis folder pass, writes the report).
//!
//! What the page holds, and why:
//! * the original tool's scatter (average response length against loop density, one point per conversation), so
//!   results read the same as before;
//! * an onset curve per run set: the Kaplan–Meier estimate of the share of conversations still free of any
//!   detected loop or break after t turns (or tokens). Conversations that end without breaking are censored, not
//!   counted as healthy forever, so run sets with different lengths compare fairly — the one picture that ranks
//!   sampler settings;
//! * per run set histograms (the original's bins), a sortable summary table and a per-file table;
//! * per conversation a length timeline with detections marked, a turn self-similarity heatmap and the transcript
//!   with repeated spans highlighted.
//!
//! Everything that came from a model or a file is untrusted: the template auto-escapes it, plotters escapes the
//! text it draws, and the hover titles are escaped in `charts`.

pub mod charts;
pub mod files;
pub mod labels;
pub mod text;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use minijinja::{AutoEscape, Environment};
use rayon::prelude::*;
use serde::Serialize;

use crate::analysis::confidence::{self, Comparison, DirConfidence};
use crate::analysis::dir::Analyzed;
use crate::analysis::stats::{self, Interval, KaplanMeier, MedianSurvival};
use crate::analysis::{Conversation, ConversationAnalysis, Detection, PerSpeaker};
use crate::transcript::Speaker;
use charts::{BandPoint, Bins, Curve, Figure, ForestRow, LegendEntry, Mark, ScatterPoint, Whisker};
use labels::{Facts, Variation};

/// The templates, compiled into the binary so that `parrot report` works from any folder: the index page, the
/// style both pages share, the conversation section, and the page a conversation gets in a large report.
const TEMPLATES: [(&str, &str); 4] = [
    ("report.html", include_str!("../../templates/report.html.j2")),
    ("report.css", include_str!("../../templates/report.css")),
    ("report-conversation.html", include_str!("../../templates/report-conversation.html.j2")),
    ("report-conversation-page.html", include_str!("../../templates/report-conversation-page.html.j2")),
];

/// Reports with more conversations than this (by default) give each conversation a page of its own instead of a
/// section of the index: a thousand transcripts in one page would take a browser a minute to open.
pub const INLINE_MAX: usize = 50;
/// The folder of the report, beside `index.html`, that holds the conversations' own pages.
pub const PAGES_DIR: &str = "conversations";

/// The most cells per side of a self-similarity heatmap; longer conversations are binned (maximum per block).
pub const HEATMAP_CELLS: usize = 40;

/// The phenomena in the order the analysis documents them; unknown names follow alphabetically.
const PHENOMENA: &[&str] = &[
    "single_turn_loop",
    "multi_turn_loop",
    "intra_turn_repetition",
    "prefix_repetition",
    "semantic_repetition",
    "word_soup",
    "nothing_to_say",
    "apostrophe_break",
    "leading_whitespace",
    "rejection",
];

/// One conversation of a run set: its analysis and, when the file could be read, its text.
#[derive(Debug, Clone)]
pub struct Item {
    /// The analysis (computed now or loaded from a fresh `analysis.json`).
    pub analysis: ConversationAnalysis,
    /// The conversation itself, for the transcript, the heatmap and the run-set labels; `None` when only a saved
    /// analysis was available.
    pub conversation: Option<Conversation>,
}

/// A file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file or folder.
    pub path: String,
    /// What went wrong.
    pub error: String,
}

/// One run folder.
#[derive(Debug, Clone)]
pub struct RunSet {
    /// The folder as given on the command line.
    pub dir: String,
    /// Its conversations.
    pub items: Vec<Item>,
    /// Files that were skipped.
    pub problems: Vec<Problem>,
}

impl RunSet {
    /// The run set of one group of the analysis folder pass (run with its texts kept): its conversations with
    /// their text, and the files it could not read.
    #[must_use]
    pub fn from_analyzed(analyzed: Analyzed) -> Self {
        let Analyzed { analysis, texts } = analyzed;
        let mut texts = texts.into_iter();
        let items = analysis
            .conversations
            .into_iter()
            .map(|analysis| Item { analysis, conversation: texts.next().flatten() })
            .collect();
        let problems = analysis.errors.into_iter().map(|e| Problem { path: e.path, error: e.error }).collect();
        RunSet { dir: analysis.dir, items, problems }
    }
}

/// Page-level details that are not data.
#[derive(Debug, Clone)]
pub struct Options {
    /// When the report was made (free text; empty to leave out, which keeps snapshots stable).
    pub generated: String,
    /// The most conversations shown in full inside the index; with more, each gets a page of its own.
    pub inline_max: usize,
    /// The run set (index) the others are tested against; the first by default.
    pub baseline: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { generated: String::new(), inline_max: INLINE_MAX, baseline: 0 }
    }
}

/// A rendered report: the index page and, when the conversations do not fit it, one page per conversation.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// `index.html`.
    pub index: String,
    /// Each conversation's own page: its path relative to the index (`conversations/c-3.html`; made from a
    /// counter, never from file or model text) and the page.
    pub pages: Vec<(String, String)>,
}

/// Where a conversation is shown: its section of the index, or its own page.
fn conversation_link(anchor: usize, split: bool) -> String {
    if split {
        view_page_path(anchor)
    } else {
        format!("#c-{anchor}")
    }
}

/// Facts of one conversation: its config flattened (when its text is known), then its models and engines (from
/// the analysis, so known without the text too).
#[must_use]
pub fn conversation_facts(item: &Item) -> Facts {
    let mut facts = Facts::new();
    if let Some(config) = item.conversation.as_ref().and_then(|c| c.config.as_ref()) {
        labels::flatten_config("", config, &mut facts);
    }
    let origin = &item.analysis.origin;
    for (key, model) in [("assistant_model", &origin.assistant_model), ("user_model", &origin.user_model)] {
        if let Some(model) = model {
            facts.insert(key.to_string(), model_name(model));
        }
    }
    for (key, engine) in [("backend", &origin.backend), ("user_backend", &origin.user_backend)] {
        if let Some(engine) = engine {
            facts.insert(key.to_string(), engine.clone());
        }
    }
    facts
}

/// A model description shortened to its file name (paths differ between machines; the file name is the model).
fn model_name(model: &str) -> String {
    let trimmed = model.trim();
    trimmed.rsplit(['/', '\\']).next().unwrap_or(trimmed).to_string()
}

/// Labels of the run sets (their folder names, then what differs between their configs; see [`labels`]) and the
/// variations behind them.
#[must_use]
pub fn run_set_labels(sets: &[RunSet]) -> (Vec<String>, Vec<Variation>) {
    let facts: Vec<Facts> = sets
        .iter()
        .map(|s| labels::common_facts(&s.items.iter().map(conversation_facts).collect::<Vec<_>>()))
        .collect();
    let dirs: Vec<&str> = sets.iter().map(|s| s.dir.as_str()).collect();
    labels::labels(&facts, &folder_names(&dirs))
}

/// The shortest trailing parts of the folders' paths that tell them apart: the folder (or sweep cell) name, or
/// more of the path where two share it (`a/out`, `b/out`).
fn folder_names(dirs: &[&str]) -> Vec<String> {
    let parts: Vec<Vec<&str>> =
        dirs.iter().map(|d| d.split(['/', '\\']).filter(|p| !p.is_empty() && *p != ".").collect::<Vec<_>>()).collect();
    let suffix = |p: &[&str], k: usize| {
        let name = p[p.len().saturating_sub(k)..].join("/");
        if name.is_empty() {
            String::from(".")
        } else {
            name
        }
    };
    let longest = parts.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut names: Vec<String> = parts.iter().map(|p| suffix(p, 1)).collect();
    for k in 2..=longest {
        let clash = |i: usize, names: &[String]| names.iter().filter(|n| **n == names[i]).count() > 1;
        let redo: Vec<usize> = (0..names.len()).filter(|&i| clash(i, &names)).collect();
        if redo.is_empty() {
            break;
        }
        for i in redo {
            names[i] = suffix(&parts[i], k);
        }
    }
    names
}

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// The onset curve's points from a Kaplan–Meier estimate: `(0, 1)` with an empty band, then one per step.
fn band_points(km: &KaplanMeier) -> Vec<BandPoint> {
    std::iter::once(BandPoint { x: 0.0, survival: 1.0, low: 1.0, high: 1.0 })
        .chain(km.steps.iter().map(|st| BandPoint {
            x: st.time,
            survival: st.survival.estimate,
            low: st.survival.low,
            high: st.survival.high,
        }))
        .collect()
}

/// Whether a phenomenon was detected in a conversation, for either speaker.
fn detected(a: &ConversationAnalysis, name: &str) -> bool {
    a.detectors.get(name).is_some_and(|d| d.assistant.detected || d.user.detected)
}

/// The phenomena present in any analysis, in documented order.
fn phenomena(sets: &[RunSet]) -> Vec<String> {
    let names: BTreeSet<&String> =
        sets.iter().flat_map(|s| &s.items).flat_map(|i| i.analysis.detectors.keys()).collect();
    let mut out: Vec<String> =
        PHENOMENA.iter().filter(|p| names.iter().any(|n| n == *p)).map(|p| (*p).to_string()).collect();
    out.extend(names.into_iter().filter(|n| !PHENOMENA.contains(&n.as_str())).cloned());
    out
}

/// The phenomena detected at least once in some run set: the table and the rates chart show these; the others
/// are named in one line (a column of zeros per silent detector would push the table past the page's width).
fn phenomena_shown(sets: &[RunSet]) -> Vec<String> {
    phenomena(sets)
        .into_iter()
        .filter(|p| sets.iter().flat_map(|s| &s.items).any(|i| detected(&i.analysis, p)))
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// A table cell: the raw number (for sorting and tests) and the text shown.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Cell {
    /// The value, when there is one.
    pub v: Option<f64>,
    /// The text shown.
    pub text: String,
    /// The 95% interval shown under it ("9–91%"), empty when there is none.
    pub ci: String,
    /// What the interval is (its hover text): "Wilson 95% interval", "bootstrap 95% interval", ….
    pub ci_kind: &'static str,
    /// Significantly different from the baseline after Holm's adjustment (marked ★).
    pub significant: bool,
}

impl Cell {
    fn num(v: Option<f64>, decimals: usize) -> Self {
        match v {
            Some(v) => Cell { v: Some(v), text: format!("{v:.decimals$}"), ..Cell::default() },
            None => Cell { v: None, text: "—".into(), ..Cell::default() },
        }
    }
    /// A mean with its bootstrap 95% interval beneath.
    fn mean_interval(v: Option<f64>, interval: Option<Interval>, decimals: usize) -> Self {
        let mut cell = Cell::num(v, decimals);
        if let (Some(_), Some(i)) = (v, interval) {
            cell.ci = format!("{:.decimals$}–{:.decimals$}", i.low, i.high);
            cell.ci_kind = "bootstrap 95% interval of the mean";
        }
        cell
    }
    /// A Kaplan–Meier median with its 95% interval beneath; "not reached" when over half never broke.
    fn median(samples: usize, m: &MedianSurvival) -> Self {
        match m.estimate {
            Some(v) => {
                let t = |x: Option<f64>| x.map_or_else(|| "∞".to_string(), |x| format!("{x:.0}"));
                Cell {
                    v: Some(v),
                    text: format!("{v:.0}"),
                    ci: format!("{}–{}", t(m.low), t(m.high)),
                    ci_kind: "95% interval (log-log Greenwood band); ∞: not reached",
                    significant: false,
                }
            }
            None if samples > 0 => Cell { v: None, text: "not reached".into(), ..Cell::default() },
            None => Cell::num(None, 0),
        }
    }
    /// A rate with its Wilson 95% interval ("16%" over "8–29%"); the plain rate when there is no interval.
    fn pct_interval(v: Option<f64>, interval: Option<Interval>) -> Self {
        match (v, interval) {
            (Some(v), Some(i)) => Cell {
                v: Some(v),
                text: format!("{:.0}%", v * 100.0),
                ci: format!("{:.0}–{:.0}%", i.low * 100.0, i.high * 100.0),
                ci_kind: "Wilson 95% interval",
                significant: false,
            },
            _ => Cell::pct(v),
        }
    }
    fn pct(v: Option<f64>) -> Self {
        match v {
            Some(v) => Cell { v: Some(v), text: format!("{:.0}%", v * 100.0), ..Cell::default() },
            None => Cell { v: None, text: "—".into(), ..Cell::default() },
        }
    }
}

/// The numbers of one run set's row in the page's summary table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryRow {
    /// Conversations in the set.
    pub samples: usize,
    /// Files skipped.
    pub skipped: usize,
    /// Mean over conversations of the average assistant response length (characters).
    pub avg_response_length: Option<f64>,
    /// Mean over conversations of the original loop density.
    pub avg_loop_density: Option<f64>,
    /// Share of conversations where each phenomenon (in [`phenomena`] order) was detected.
    pub rates: Vec<Option<f64>>,
    /// Share of conversations with any detection.
    pub any_rate: Option<f64>,
    /// Kaplan–Meier median of assistant turns until the first detection, with its 95% interval.
    pub median_onset_turns: Option<f64>,
    /// Kaplan–Meier median of tokens generated before the first detection; `None` unless every conversation
    /// records tokens, or when not reached.
    pub median_onset_tokens: Option<f64>,
    /// Mean generation speed, where recorded.
    pub tokens_per_s: Option<f64>,
}

/// Computes a run set's summary row.
#[must_use]
pub fn summarize(set: &RunSet, phenomena: &[String]) -> SummaryRow {
    let analyses: Vec<&ConversationAnalysis> = set.items.iter().map(|i| &i.analysis).collect();
    let n = analyses.len();
    let rate = |pred: &dyn Fn(&ConversationAnalysis) -> bool| {
        (n > 0).then(|| analyses.iter().filter(|a| pred(a)).count() as f64 / n as f64)
    };
    let km = stats::kaplan_meier(&analyses.iter().map(|a| confidence::observation(a)).collect::<Vec<_>>());
    let km_tokens = confidence::token_observations(analyses.iter().copied()).map(|o| stats::kaplan_meier(&o));
    SummaryRow {
        samples: n,
        skipped: set.problems.len(),
        avg_response_length: mean(analyses.iter().map(|a| a.legacy.avg_response_length)),
        avg_loop_density: mean(analyses.iter().map(|a| a.legacy.loop_density)),
        rates: phenomena.iter().map(|p| rate(&|a| detected(a, p))).collect(),
        any_rate: rate(&|a| a.first_onset.is_some()),
        median_onset_turns: if n > 0 { km.median().estimate } else { None },
        median_onset_tokens: km_tokens.and_then(|k| k.median().estimate),
        tokens_per_s: mean(analyses.iter().filter_map(|a| a.tokens_per_s)),
    }
}

/// The original tool's loop-density bins: 0.05 wide from 0 to 0.8, then 0.8 and more.
fn density_bins(values: &[f64]) -> Bins {
    let mut labels: Vec<String> = (0..16).map(|k| format!("{:.2}", f64::from(k) * 0.05)).collect();
    labels.push("0.8+".into());
    let mut counts = vec![0usize; labels.len()];
    for &v in values.iter().filter(|v| v.is_finite()) {
        counts[((v.max(0.0) / 0.05) as usize).min(16)] += 1;
    }
    // Ticks on the bins' left edges, every 0.2.
    let ticks = [(0.0, "0"), (4.0, "0.2"), (8.0, "0.4"), (12.0, "0.6"), (16.0, "0.8+")];
    shares(labels, &counts, ticks.iter().map(|(x, l)| (*x, (*l).to_string())).collect())
}

/// The original tool's response-length bins: 0, then 100 characters wide up to 2000, then 2000 and more.
fn length_bins(values: &[usize]) -> Bins {
    let mut labels = vec!["0".to_string()];
    labels.extend((0..20).map(|k| format!("{}", k * 100)));
    labels.push("2000+".into());
    let mut counts = vec![0usize; labels.len()];
    for &v in values {
        let bin = if v == 0 { 0 } else { (v / 100 + 1).min(21) };
        counts[bin] += 1;
    }
    // Ticks on the bins' left edges, every 500 characters (bin k ≥ 1 starts at (k − 1) × 100; bin 0 is "empty").
    let ticks = (0..5).map(|k| (f64::from(1 + 5 * k), if k == 4 { "2000+".into() } else { format!("{}", 500 * k) }));
    shares(labels, &counts, ticks.collect())
}

fn shares(labels: Vec<String>, counts: &[usize], ticks: Vec<(f64, String)>) -> Bins {
    let total: usize = counts.iter().sum();
    let shares = counts.iter().map(|&c| if total > 0 { c as f64 / total as f64 } else { 0.0 }).collect();
    Bins { labels, shares, ticks }
}

/// What the page and its charts say about the run sets as a whole: their labels, confidence figures and the
/// tests against the baseline. Computed once per report (the bootstrap is not free).
pub struct Overview {
    /// Run-set labels, in run-set order.
    pub labels: Vec<String>,
    /// What differs between the run sets.
    pub variations: Vec<Variation>,
    /// Confidence figures per run set (named by its label).
    pub confs: Vec<DirConfidence>,
    /// Every test against the baseline, Holm-adjusted together.
    pub comparisons: Vec<Comparison>,
    /// The baseline's index.
    pub baseline: usize,
}

impl Overview {
    /// Labels, intervals and tests of `sets` against `sets[baseline]`.
    #[must_use]
    pub fn of(sets: &[RunSet], baseline: usize) -> Self {
        let (labels, variations) = run_set_labels(sets);
        let confs: Vec<DirConfidence> = sets
            .iter()
            .enumerate()
            .map(|(i, set)| confidence::of_conversations(&labels[i], set.items.iter().map(|it| &it.analysis)))
            .collect();
        let comparisons = confidence::compare(&confs, baseline);
        Overview { labels, variations, confs, comparisons, baseline }
    }

    /// The test of run set `set` against the baseline for `what` (a phenomenon or `first_break`).
    fn comparison(&self, set: usize, what: &str) -> Option<&Comparison> {
        let dir = &self.confs.get(set)?.dir;
        self.comparisons.iter().find(|c| &c.dir == dir && c.what == what)
    }

    /// Whether run set `set` differs significantly from the baseline in `what` (after Holm's adjustment).
    fn significant(&self, set: usize, what: &str) -> bool {
        self.comparison(set, what).is_some_and(|c| c.significant)
    }

    /// Legend entries with, under each label, `note(set)` (the baseline says so instead, when there are others).
    fn legend(&self, note: impl Fn(usize) -> Option<(String, bool)>) -> Vec<LegendEntry> {
        (0..self.labels.len())
            .map(|i| {
                let (note, significant) = if i == self.baseline && self.labels.len() > 1 {
                    ("baseline".to_string(), false)
                } else {
                    note(i).unwrap_or_default()
                };
                LegendEntry { label: self.labels[i].clone(), note, significant }
            })
            .collect()
    }

    /// The log-rank test against the baseline in a few words: "breaks later than baseline (Holm p = 0.004)";
    /// `what` is `first_break` (by turns) or `first_break_tokens`.
    fn break_note(&self, set: usize, what: &str) -> Option<(String, bool)> {
        let c = self.comparison(set, what)?;
        let head = c.sentence.split(':').next().unwrap_or(&c.sentence);
        Some((format!("{head} (Holm {})", fmt_p(c.p_adjusted)), c.significant))
    }
}

fn fmt_p(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

/// "median 18 tokens (12–25)": a median survival time with its interval, "not reached" where the curve (or a
/// band's edge) stays above one half.
fn fmt_median(m: &MedianSurvival, unit: &str) -> String {
    let t = |v: Option<f64>| v.map_or_else(|| "not reached".to_string(), |v| format!("{v:.0}"));
    match m.estimate {
        None => "median not reached".into(),
        Some(_) => format!("median {} {unit} ({}–{})", t(m.estimate), t(m.low), t(m.high)),
    }
}

fn whisker(i: Option<Interval>, significant: bool) -> Option<Whisker> {
    i.map(|i| Whisker { estimate: i.estimate, low: i.low, high: i.high, significant })
}

/// The figures that summarize all run sets, with a file-name stem each (also the `--png` file names), tested
/// against run set `baseline` (`--baseline`; the first by default), as the HTML's are.
///
/// `split` says whether the scatter's points link to conversation pages (see [`Options::inline_max`]) or to
/// sections of the index.
#[must_use]
pub fn summary_figures(sets: &[RunSet], split: bool, baseline: usize) -> Vec<(String, Figure)> {
    figures(sets, split, &Overview::of(sets, baseline), &phenomena_shown(sets))
}

fn figures(sets: &[RunSet], split: bool, overview: &Overview, shown: &[String]) -> Vec<(String, Figure)> {
    let legend = overview.legend(|_| None);
    let mut out = Vec::new();
    let mut anchor = 0;
    let mut scatter = Vec::new();
    for set in sets {
        let mut points = Vec::new();
        for item in &set.items {
            let a = &item.analysis;
            points.push(ScatterPoint {
                loop_density: a.legacy.loop_density,
                avg_response_length: a.legacy.avg_response_length,
                title: format!(
                    "{} — loop density {:.3}, avg length {:.0}",
                    a.source, a.legacy.loop_density, a.legacy.avg_response_length
                ),
                link: conversation_link(anchor, split),
            });
            anchor += 1;
        }
        scatter.push(points);
    }
    out.push(("scatter".to_string(), Figure::Scatter { sets: scatter, legend: legend.clone() }));
    // Rates with their Wilson intervals, ★ where Fisher's test against the baseline is significant.
    let mut rows: Vec<ForestRow> = shown
        .iter()
        .map(|p| ForestRow {
            name: p.clone(),
            values: overview
                .confs
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let rate = c.rates.iter().find(|(n, _)| n == p).and_then(|(_, r)| r.any.interval);
                    whisker(rate, overview.significant(i, p))
                })
                .collect(),
        })
        .collect();
    rows.push(ForestRow {
        name: "any".into(),
        values: overview
            .confs
            .iter()
            .enumerate()
            .map(|(i, c)| whisker(c.broken.interval, overview.significant(i, confidence::ANY)))
            .collect(),
    });
    let significant = |i: usize| {
        overview
            .comparisons
            .iter()
            .filter(|c| c.dir == overview.confs[i].dir && c.significant && !c.what.starts_with("first_break"))
            .count()
    };
    let rate_legend = overview.legend(|i| {
        let k = significant(i);
        (k > 0).then(|| (format!("{k} rate{} differ from baseline", if k == 1 { "" } else { "s" }), true))
    });
    out.push((
        "rates".into(),
        Figure::Forest {
            x_label: "share of conversations (Wilson 95% interval)".into(),
            percent: true,
            rows,
            legend: rate_legend,
        },
    ));
    for (name, label, pick) in [
        (
            "mean_loop_density",
            "mean loop density",
            (|c: &DirConfidence| c.loop_density) as fn(&DirConfidence) -> Option<Interval>,
        ),
        ("mean_response_length", "mean response length (characters)", |c: &DirConfidence| c.response_length),
        ("mean_tokens_per_s", "mean tokens/s", |c: &DirConfidence| c.tokens_per_s),
    ] {
        let values: Vec<Option<Whisker>> = overview.confs.iter().map(|c| whisker(pick(c), false)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        out.push((
            name.into(),
            Figure::Forest {
                x_label: label.to_string(),
                percent: false,
                rows: vec![ForestRow { name: String::new(), values }],
                legend: Vec::new(),
            },
        ));
    }
    let curves: Vec<Curve> = sets
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.items.is_empty())
        .map(|(i, _)| Curve { set: i, points: band_points(&overview.confs[i].first_break) })
        .collect();
    out.push((
        "onset_turns".into(),
        Figure::Onset {
            x_label: "assistant turns".into(),
            integer: true,
            curves,
            legend: overview.legend(|i| overview.break_note(i, "first_break")),
        },
    ));
    let token_curves: Vec<Curve> = overview
        .confs
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.first_break_tokens.as_ref().map(|km| Curve { set: i, points: band_points(km) }))
        .collect();
    if !token_curves.is_empty() {
        // Each set's median in tokens, and the log-rank test by tokens against the baseline.
        let token_legend = overview.legend(|i| {
            let median = overview.confs[i]
                .median_first_break_tokens
                .as_ref()
                .map_or_else(|| "no tokens recorded".into(), |m| fmt_median(m, "tokens"));
            Some(match overview.break_note(i, "first_break_tokens") {
                Some((note, significant)) => (format!("{median}; {note}"), significant),
                None => (median, false),
            })
        });
        out.push((
            "onset_tokens".into(),
            Figure::Onset {
                x_label: "tokens generated".into(),
                integer: true,
                curves: token_curves,
                legend: token_legend,
            },
        ));
    }
    let density: Vec<Bins> = sets
        .iter()
        .map(|s| density_bins(&s.items.iter().map(|i| i.analysis.legacy.loop_density).collect::<Vec<_>>()))
        .collect();
    let lengths: Vec<Bins> = sets
        .iter()
        .map(|s| {
            length_bins(
                &s.items.iter().flat_map(|i| i.analysis.legacy.response_lengths.iter().copied()).collect::<Vec<_>>(),
            )
        })
        .collect();
    let max_of = |bins: &[Bins]| bins.iter().flat_map(|b| b.shares.iter().copied()).fold(0.0, f64::max);
    let (dmax, lmax) = (max_of(&density), max_of(&lengths));
    for (i, (d, l)) in density.into_iter().zip(lengths).enumerate() {
        if sets[i].items.is_empty() {
            continue;
        }
        out.push((
            format!("density_{i}"),
            Figure::Histogram { x_label: "loop density (per conversation)".into(), set: i, bins: d, y_max: dmax },
        ));
        out.push((
            format!("lengths_{i}"),
            Figure::Histogram { x_label: "response length (characters)".into(), set: i, bins: l, y_max: lmax },
        ));
    }
    out
}

/// The figures of one conversation: its timeline and, when its text is known, its self-similarity heatmap.
#[must_use]
pub fn conversation_figures(item: &Item) -> (Figure, Option<Figure>) {
    let a = &item.analysis;
    let mut assistant = Vec::new();
    let mut user = Vec::new();
    for (i, (&len, speaker)) in a.message_lengths.iter().zip(&a.message_speakers).enumerate() {
        match speaker {
            Speaker::Assistant => assistant.push((i, len)),
            Speaker::User => user.push((i, len)),
            Speaker::System => {}
        }
    }
    let mut marks: Vec<Mark> = a
        .detectors
        .iter()
        .filter_map(|(name, d)| {
            [&d.assistant, &d.user]
                .into_iter()
                .filter(|d| d.detected)
                .filter_map(|d| d.onset_message)
                .min()
                .map(|message| Mark { message, name: name.clone() })
        })
        .collect();
    marks.sort_by_key(|m| m.message);
    let timeline = Figure::Timeline { assistant, user, marks, messages: a.message_lengths.len() };
    let heatmap = item.conversation.as_ref().map(|c| {
        let texts: Vec<&str> = c.messages.iter().map(|m| m.text.as_str()).collect();
        let (cells, bin) = text::similarity_heatmap(&texts, HEATMAP_CELLS);
        Figure::Heatmap { cells, bin, messages: texts.len() }
    });
    (timeline, heatmap)
}

#[derive(Serialize)]
struct SetView {
    index: usize,
    label: String,
    dir: String,
    color: String,
    marker: String,
    summary: SummaryRow,
    cells: Vec<Cell>,
    density_svg: Option<String>,
    lengths_svg: Option<String>,
}

/// One speaker's detection of one phenomenon: speakers are never merged, so a weak user-side onset does not sit
/// beside the assistant's severity.
#[derive(Serialize)]
struct DetectionView {
    name: String,
    speaker: &'static str,
    onset: Option<usize>,
    onset_message: Option<usize>,
    severity: f64,
    evidence: Vec<String>,
}

#[derive(Serialize)]
struct MessageView {
    index: usize,
    speaker: &'static str,
    opening: bool,
    tokens: Option<u32>,
    segments: Vec<text::Segment>,
}

#[derive(Serialize)]
struct ConversationView {
    anchor: String,
    href: String,
    marker: String,
    set: usize,
    set_label: String,
    color: String,
    source: String,
    name: String,
    format: String,
    complete: bool,
    messages: usize,
    assistant_turns: usize,
    user_turns: usize,
    total_tokens: Option<u64>,
    tokens_per_s: Cell,
    loop_density: Cell,
    avg_response_length: Cell,
    first_onset: Cell,
    /// Earliest onset of the assistant's detections, and of the user's: kept apart in the table.
    first_onset_assistant: Cell,
    first_onset_user: Cell,
    /// "name A@3" per speaker's detection.
    detected: Vec<String>,
    detections: Vec<DetectionView>,
    top_ngrams: Vec<(String, usize)>,
    timeline_svg: String,
    heatmap_svg: Option<String>,
    heatmap_bin: usize,
    transcript: Option<Vec<MessageView>>,
    /// Whether the transcript shown stops before the conversation's end ([`text::TRANSCRIPT_MAX_BYTES`]).
    transcript_cut: bool,
    /// That limit, in MiB, for the note saying so.
    transcript_max_mib: usize,
    /// The LLM judge's verdicts cached by `parrot analyze --judge`, when there are some.
    judge: Option<crate::analysis::judge::ConversationJudge>,
}

#[derive(Serialize)]
struct Page {
    generated: String,
    version: &'static str,
    problems: Vec<Problem>,
    fatal: Option<String>,
    variations: Vec<Variation>,
    /// The phenomena with a column in the table and a row in the rates chart (detected somewhere).
    phenomena: Vec<String>,
    /// The phenomena no run set shows, named in one line instead.
    silent: Vec<String>,
    sets: Vec<SetView>,
    /// The run set the others are tested against, when there are others.
    baseline: Option<String>,
    /// Each test against the baseline, in words, with whether it is significant after Holm's adjustment.
    comparisons: Vec<Comparison>,
    /// Per other run set: conversations per set for 80% power to detect its difference in "any" rate.
    sample_sizes: Vec<(String, Option<u64>)>,
    total: usize,
    scatter_svg: String,
    rates_svg: Option<String>,
    means_svgs: Vec<String>,
    onset_turns_svg: Option<String>,
    onset_tokens_svg: Option<String>,
    split: bool,
    conversations: Vec<ConversationView>,
}

/// A small legend swatch in the set's color and marker (fixed shapes, no data in it).
fn marker_svg(i: usize) -> String {
    let color = charts::set_color_hex(i);
    let shape = match charts::set_style(i).shape {
        charts::Shape::Circle => format!("<circle cx=\"7\" cy=\"7\" r=\"5\" fill=\"{color}\"/>"),
        charts::Shape::Triangle => format!("<polygon points=\"7,1 13,12 1,12\" fill=\"{color}\"/>"),
        charts::Shape::Square => format!("<rect x=\"2\" y=\"2\" width=\"10\" height=\"10\" fill=\"{color}\"/>"),
        charts::Shape::Cross => {
            format!("<path d=\"M2 2L12 12M12 2L2 12\" stroke=\"{color}\" stroke-width=\"2\"/>")
        }
    };
    format!("<svg class=\"swatch\" width=\"14\" height=\"14\" viewBox=\"0 0 14 14\" aria-hidden=\"true\">{shape}</svg>")
}

fn conversation_view(item: &Item, anchor: usize, set: usize, set_label: &str, split: bool) -> Result<ConversationView> {
    let a = &item.analysis;
    let (timeline, heatmap) = conversation_figures(item);
    let heatmap_bin = match &heatmap {
        Some(Figure::Heatmap { bin, .. }) => *bin,
        _ => 1,
    };
    let mut detections: Vec<DetectionView> = a
        .detectors
        .iter()
        .flat_map(|(name, d)| {
            [("assistant", &d.assistant), ("user", &d.user)].into_iter().filter(|(_, d)| d.detected).map(
                move |(speaker, d)| DetectionView {
                    name: name.clone(),
                    speaker,
                    onset: d.onset,
                    onset_message: d.onset_message,
                    severity: d.severity,
                    evidence: d.evidence.iter().take(3).map(|e| e.text.clone()).collect(),
                },
            )
        })
        .collect();
    detections.sort_by_key(|d| (d.onset_message.unwrap_or(usize::MAX), d.name.clone(), d.speaker));
    let first = |who: &dyn Fn(&PerSpeaker<Detection>) -> &Detection| {
        a.detectors.values().map(who).filter(|d| d.detected).filter_map(|d| d.onset).min().map(|o| o as f64)
    };
    // The viewer shows at most TRANSCRIPT_MAX_BYTES of text (memory bounded by design, issue #15).
    let mut transcript_cut = false;
    let transcript = item.conversation.as_ref().map(|c| {
        let texts = text::shown_prefix(c.messages.iter().map(|m| m.text.as_str()), text::TRANSCRIPT_MAX_BYTES);
        let shown: usize = texts.iter().map(|t| t.len()).sum();
        transcript_cut = shown < c.messages.iter().map(|m| m.text.len()).sum::<usize>();
        text::repeated_spans(&texts)
            .into_iter()
            .zip(&c.messages)
            .enumerate()
            .map(|(index, (segments, m))| MessageView {
                index,
                speaker: m.speaker.as_str(),
                opening: m.opening,
                tokens: m.tokens,
                segments,
            })
            .collect()
    });
    Ok(ConversationView {
        anchor: format!("c-{anchor}"),
        href: conversation_link(anchor, split),
        marker: marker_svg(set),
        set,
        set_label: set_label.to_string(),
        color: charts::set_color_hex(set),
        source: a.source.clone(),
        name: file_name(&a.source).to_string(),
        format: serde_json::to_value(a.format).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        complete: a.complete,
        messages: a.messages,
        assistant_turns: a.assistant_turns,
        user_turns: a.user_turns,
        total_tokens: a.total_tokens,
        tokens_per_s: Cell::num(a.tokens_per_s, 1),
        loop_density: Cell::num(Some(a.legacy.loop_density), 3),
        avg_response_length: Cell::num(Some(a.legacy.avg_response_length), 0),
        first_onset: Cell::num(a.first_onset.map(|v| v as f64), 0),
        detected: detections
            .iter()
            .map(|d| {
                let onset = d.onset.map_or_else(|| "?".to_string(), |o| o.to_string());
                format!("{} {}@{onset}", d.name, if d.speaker == "assistant" { "A" } else { "U" })
            })
            .collect(),
        first_onset_assistant: Cell::num(first(&|d: &PerSpeaker<Detection>| &d.assistant), 0),
        first_onset_user: Cell::num(first(&|d: &PerSpeaker<Detection>| &d.user), 0),
        detections,
        top_ngrams: a.legacy.top_ngrams.iter().take(5).cloned().collect(),
        timeline_svg: timeline.svg()?,
        heatmap_svg: heatmap.map(|h| h.svg()).transpose()?,
        heatmap_bin,
        transcript_cut,
        transcript_max_mib: text::TRANSCRIPT_MAX_BYTES >> 20,
        transcript,
        judge: a.judge.clone(),
    })
}

/// Every problem worth stating on the page and on stderr: skipped files, empty run sets, no data at all.
#[must_use]
pub fn problems(sets: &[RunSet]) -> Vec<Problem> {
    let mut out = Vec::new();
    for set in sets {
        out.extend(set.problems.iter().cloned());
        if set.items.is_empty() {
            out.push(Problem {
                path: set.dir.clone(),
                error: "no conversations could be read from this run set".into(),
            });
        }
    }
    out
}

/// The template environment: every template of the report, HTML auto-escaping everywhere.
fn environment() -> Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    for (name, source) in TEMPLATES {
        env.add_template(name, source).with_context(|| format!("the report template '{name}' does not parse"))?;
    }
    Ok(env)
}

fn render_template(env: &Environment<'_>, name: &str, ctx: impl Serialize) -> Result<String> {
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| anyhow::anyhow!("could not render the report ({name}): {e:#}"))
}

/// Renders the report: the index page and, with more than [`Options::inline_max`] conversations, a page per
/// conversation (rendered in parallel; each keeps only the index's table row once its page is made).
///
/// # Errors
/// When a template fails to render or a chart fails to draw (neither happens for valid data).
pub fn render(sets: &[RunSet], options: &Options) -> Result<Rendered> {
    let overview = Overview::of(sets, options.baseline);
    let labels = &overview.labels;
    let all = phenomena(sets);
    let phenomena = phenomena_shown(sets);
    let silent: Vec<String> = all.into_iter().filter(|p| !phenomena.contains(p)).collect();
    let total: usize = sets.iter().map(|s| s.items.len()).sum();
    let split = total > options.inline_max;
    let env = environment()?;
    let mut figures: BTreeMap<String, Figure> = figures(sets, split, &overview, &phenomena).into_iter().collect();
    let mut svg_of = |name: &str| figures.remove(name).map(|f| f.svg()).transpose();
    let scatter_svg = svg_of("scatter")?.unwrap_or_default();
    let rates_svg = if total > 0 { svg_of("rates")? } else { None };
    let mut means_svgs = Vec::new();
    for name in ["mean_loop_density", "mean_response_length", "mean_tokens_per_s"] {
        means_svgs.extend(svg_of(name)?);
    }
    let onset_turns_svg = svg_of("onset_turns")?;
    let onset_tokens_svg = svg_of("onset_tokens")?;
    let mut set_views = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let summary = summarize(set, &phenomena);
        let conf = &overview.confs[i];
        let rate_interval = |name: &str| conf.rates.iter().find(|(n, _)| n == name).and_then(|(_, r)| r.any.interval);
        let mut cells = vec![
            Cell::num(Some(summary.samples as f64), 0),
            Cell::mean_interval(summary.avg_response_length, conf.response_length, 0),
            Cell::mean_interval(summary.avg_loop_density, conf.loop_density, 3),
        ];
        cells.extend(summary.rates.iter().zip(&phenomena).map(|(r, p)| {
            let mut cell = Cell::pct_interval(*r, rate_interval(p));
            cell.significant = overview.significant(i, p);
            cell
        }));
        let mut any = Cell::pct_interval(summary.any_rate, conf.broken.interval);
        any.significant = overview.significant(i, confidence::ANY);
        cells.push(any);
        let mut onset = Cell::median(summary.samples, &conf.median_first_break);
        onset.significant = overview.significant(i, "first_break");
        cells.push(onset);
        cells.push(match &conf.median_first_break_tokens {
            Some(m) => {
                let mut cell = Cell::median(summary.samples, m);
                cell.significant = overview.significant(i, "first_break_tokens");
                cell
            }
            None => Cell::num(None, 0),
        });
        cells.push(Cell::mean_interval(summary.tokens_per_s, conf.tokens_per_s, 1));
        set_views.push(SetView {
            index: i,
            label: labels[i].clone(),
            dir: set.dir.clone(),
            color: charts::set_color_hex(i),
            marker: marker_svg(i),
            summary,
            cells,
            density_svg: svg_of(&format!("density_{i}"))?,
            lengths_svg: svg_of(&format!("lengths_{i}"))?,
        });
    }
    let jobs: Vec<(usize, usize, &Item)> = sets
        .iter()
        .enumerate()
        .flat_map(|(s, set)| set.items.iter().map(move |item| (s, item)))
        .enumerate()
        .map(|(anchor, (s, item))| (anchor, s, item))
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    let rendered = jobs
        .par_iter()
        .map(|&(anchor, s, item)| {
            let mut view = conversation_view(item, anchor, s, &labels[s], split)?;
            if !split {
                return Ok((view, None));
            }
            let page = render_template(
                &env,
                "report-conversation-page.html",
                minijinja::context! { c => &view, version => version },
            )?;
            // The index needs only the table row: drop the heavy parts now rather than hold them all.
            view.transcript = None;
            view.detections.clear();
            view.timeline_svg.clear();
            view.heatmap_svg = None;
            Ok((view, Some((view_page_path(anchor), page))))
        })
        .collect::<Result<Vec<_>>>()?;
    let (conversations, pages): (Vec<ConversationView>, Vec<Option<(String, String)>>) = rendered.into_iter().unzip();
    let fatal = if sets.is_empty() {
        Some("No run folders were given.".to_string())
    } else if total == 0 {
        Some("None of the run folders holds a conversation that could be read.".to_string())
    } else {
        None
    };
    let page = Page {
        generated: options.generated.clone(),
        version,
        problems: problems(sets),
        fatal,
        variations: overview.variations.clone(),
        phenomena,
        silent,
        sets: set_views,
        baseline: (sets.len() > 1).then(|| labels.get(options.baseline).cloned()).flatten(),
        sample_sizes: confidence::sample_sizes(&overview.confs, options.baseline),
        comparisons: overview.comparisons.clone(),
        total,
        scatter_svg,
        rates_svg,
        means_svgs,
        onset_turns_svg,
        onset_tokens_svg,
        split,
        conversations,
    };
    let index = render_template(&env, "report.html", &page)?;
    Ok(Rendered { index, pages: pages.into_iter().flatten().collect() })
}

/// The path of conversation `anchor`'s own page, relative to the index.
fn view_page_path(anchor: usize) -> String {
    format!("{PAGES_DIR}/c-{anchor}.html")
}

#[cfg(test)]
mod tests;
