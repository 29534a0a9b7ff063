//! How sure each folder's numbers are, and which differences from a baseline folder are more than noise. Pure:
//! takes the [`DirAnalysis`] of every folder, returns plain data that `analyze --json`, the table and the report
//! show. The formulas live in [`super::stats`]; this file only decides what is counted:
//!
//! - a rate counts **conversations** (a phenomenon "detected" in a conversation, for the assistant, the user or
//!   either), with its Wilson 95% interval;
//! - means count conversations (loop density, average response length per conversation, tokens/s where
//!   recorded), with a seeded bootstrap 95% interval ([`BOOTSTRAP_SEED`]);
//! - time to first break counts assistant turns, the one onset definition of `docs/detectors.md` (the report's
//!   onset curve uses this same [`observation`]): a conversation whose first onset is assistant turn k (0-based,
//!   as `analyze` prints it) had k clean assistant turns before it broke; one without is censored at its number
//!   of assistant turns (Kaplan–Meier, median with its interval);
//! - time to first break by tokens counts the tokens generated (both speakers, as the transcript's
//!   `tokens_so_far` counts them) before the turn where the earliest onset begins ([`token_observation`]); one
//!   without a break is censored at its total tokens. Only folders where every conversation records tokens get
//!   it;
//! - each folder is compared with the baseline (the first folder unless chosen): per phenomenon Fisher's exact
//!   test of the "either speaker" rates, the same for the rate of conversations with any phenomenon ([`ANY`]),
//!   and a log-rank test of the time to first break; the p-values of all comparisons are Holm-adjusted together,
//!   and "significant" means adjusted p < [`stats::ALPHA`].

use serde::Serialize;

use super::dir::DirAnalysis;
use super::stats::{self, Interval, KaplanMeier, MedianSurvival, Observation};
use super::{detectors, ConversationAnalysis};

/// The bootstrap seed: fixed, so the same folders give the same intervals every time.
pub const BOOTSTRAP_SEED: u64 = 0x7061_7272_6f74; // "parrot"

/// A rate with the counts behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    /// Conversations where it happened.
    pub count: u64,
    /// Conversations counted.
    pub of: u64,
    /// The share and its Wilson 95% interval; `None` when nothing was counted.
    pub interval: Option<Interval>,
}

impl Rate {
    fn new(count: u64, of: u64) -> Self {
        Rate { count, of, interval: stats::wilson(count, of) }
    }
}

/// Rates of one phenomenon.
#[derive(Debug, Clone, Serialize)]
pub struct PhenomenonConfidence {
    /// Conversations where the assistant shows it.
    pub assistant: Rate,
    /// Conversations where the user shows it.
    pub user: Rate,
    /// Conversations where either does.
    pub any: Rate,
}

/// The confidence figures of one folder.
#[derive(Debug, Clone, Serialize)]
pub struct DirConfidence {
    /// The folder, as in [`DirAnalysis::dir`].
    pub dir: String,
    /// Per phenomenon, in detector order.
    pub rates: Vec<(String, PhenomenonConfidence)>,
    /// Conversations with any phenomenon.
    pub broken: Rate,
    /// Mean loop density (per conversation), bootstrap interval.
    pub loop_density: Option<Interval>,
    /// Mean of the per-conversation average response length (characters), bootstrap interval.
    pub response_length: Option<Interval>,
    /// Mean tokens/s over the conversations that recorded it, bootstrap interval.
    pub tokens_per_s: Option<Interval>,
    /// Kaplan–Meier curve of the first break, by assistant turn.
    pub first_break: KaplanMeier,
    /// Its median with the interval.
    pub median_first_break: MedianSurvival,
    /// Kaplan–Meier curve of the first break by tokens consumed; `None` unless every conversation records tokens.
    pub first_break_tokens: Option<KaplanMeier>,
    /// Its median with the interval, in tokens.
    pub median_first_break_tokens: Option<MedianSurvival>,
    /// The observations behind `first_break`, for the log-rank test.
    #[serde(skip)]
    pub observations: Vec<Observation>,
    /// The observations behind `first_break_tokens`, for the log-rank test by tokens.
    #[serde(skip)]
    pub token_observations: Option<Vec<Observation>>,
}

/// A conversation's time to its first break, in clean assistant turns (its onset), or censored (see the module
/// docs).
#[must_use]
pub fn observation(c: &ConversationAnalysis) -> Observation {
    match c.first_onset {
        Some(k) => Observation { time: k as f64, event: true },
        None => Observation { time: c.assistant_turns as f64, event: false },
    }
}

/// A conversation's time to its first break in tokens consumed (the earliest onset of any detected phenomenon,
/// either speaker), or censored at its total tokens; `None` when its format records no tokens.
#[must_use]
pub fn token_observation(c: &ConversationAnalysis) -> Option<Observation> {
    if c.first_onset.is_some() {
        let onset = c
            .detectors
            .values()
            .flat_map(|d| [&d.assistant, &d.user])
            .filter(|d| d.detected)
            .filter_map(|d| d.onset_tokens)
            .min()?;
        Some(Observation { time: onset as f64, event: true })
    } else {
        c.total_tokens.map(|t| Observation { time: t as f64, event: false })
    }
}

/// The token observations of `cs`, when every one of them has one (and there is at least one).
#[must_use]
pub fn token_observations<'a>(cs: impl IntoIterator<Item = &'a ConversationAnalysis>) -> Option<Vec<Observation>> {
    let obs: Option<Vec<Observation>> = cs.into_iter().map(token_observation).collect();
    obs.filter(|o| !o.is_empty())
}

/// The confidence figures of `d`.
#[must_use]
pub fn of_dir(d: &DirAnalysis) -> DirConfidence {
    of_conversations(&d.dir, d.conversations.iter())
}

/// The confidence figures of the conversations of folder `dir`.
#[must_use]
pub fn of_conversations<'a>(dir: &str, cs: impl Iterator<Item = &'a ConversationAnalysis>) -> DirConfidence {
    let cs: Vec<&ConversationAnalysis> = cs.collect();
    let n = cs.len() as u64;
    let count = |f: &dyn Fn(&ConversationAnalysis) -> bool| cs.iter().filter(|c| f(c)).count() as u64;
    let rates = detectors::names()
        .iter()
        .map(|&name| {
            let det = |c: &ConversationAnalysis| c.detectors.get(name).cloned().unwrap_or_default();
            let conf = PhenomenonConfidence {
                assistant: Rate::new(count(&|c| det(c).assistant.detected), n),
                user: Rate::new(count(&|c| det(c).user.detected), n),
                any: Rate::new(count(&|c| det(c).assistant.detected || det(c).user.detected), n),
            };
            (name.to_string(), conf)
        })
        .collect();
    let values = |f: fn(&ConversationAnalysis) -> Option<f64>| cs.iter().filter_map(|c| f(c)).collect::<Vec<f64>>();
    let observations: Vec<Observation> = cs.iter().map(|c| observation(c)).collect();
    let first_break = stats::kaplan_meier(&observations);
    let by_tokens = token_observations(cs.iter().copied());
    let first_break_tokens = by_tokens.as_deref().map(stats::kaplan_meier);
    DirConfidence {
        dir: dir.to_string(),
        observations,
        token_observations: by_tokens,
        rates,
        broken: Rate::new(count(&|c| c.first_onset.is_some()), n),
        loop_density: stats::bootstrap_mean(&values(|c| Some(c.legacy.loop_density)), BOOTSTRAP_SEED),
        response_length: stats::bootstrap_mean(&values(|c| Some(c.legacy.avg_response_length)), BOOTSTRAP_SEED),
        tokens_per_s: stats::bootstrap_mean(&values(|c| c.tokens_per_s), BOOTSTRAP_SEED),
        median_first_break: first_break.median(),
        first_break,
        median_first_break_tokens: first_break_tokens.as_ref().map(KaplanMeier::median),
        first_break_tokens,
    }
}

/// One test of a folder against the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The folder compared.
    pub dir: String,
    /// What is compared: a phenomenon name (its "either speaker" rate, Fisher's exact test), [`ANY`] (the rate of
    /// conversations with any phenomenon, Fisher's exact test), `first_break`
    /// (time to first break in assistant turns, log-rank test) or `first_break_tokens` (the same in tokens consumed,
    /// where both folders record tokens).
    pub what: String,
    /// The raw p-value.
    pub p: f64,
    /// Holm-adjusted over every comparison of the run.
    pub p_adjusted: f64,
    /// `p_adjusted` < 0.05.
    pub significant: bool,
    /// The comparison in words, e.g. "breaks later than baseline: median 31 vs 18 turns (p = 0.004)".
    pub sentence: String,
}

fn fmt_median(m: Option<f64>) -> String {
    m.map_or_else(|| "not reached".into(), |t| format!("{t:.0}"))
}

fn fmt_p(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

/// A log-rank comparison in words: "breaks later than baseline: median 31 vs 18 turns". Later when the folder's
/// median (`m1`, in `unit`) is past the baseline's (`m0`) or not reached; with neither reached, when it breaks
/// less often.
fn break_words(conf: &DirConfidence, base: &DirConfidence, m1: Option<f64>, m0: Option<f64>, unit: &str) -> String {
    let later = match (m1, m0) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
        _ => conf.broken.interval.map(|x| x.estimate) < base.broken.interval.map(|x| x.estimate),
    };
    let when = if later { "later" } else { "earlier" };
    format!("breaks {when} than baseline: median {} vs {} {unit}", fmt_median(m1), fmt_median(m0))
}

/// What the comparison of the "any phenomenon" rates ([`DirConfidence::broken`]) is called in [`Comparison::what`].
pub const ANY: &str = "any";

/// A rate comparison in words: "single_turn_loop less often than baseline: 17% vs 100%" (`k1` of `n1` against
/// the baseline's `k0` of `n0`).
fn rate_words(name: &str, k1: u64, n1: u64, k0: u64, n0: u64) -> String {
    let pct = |k: u64, n: u64| 100.0 * k as f64 / n.max(1) as f64;
    let more = if u128::from(k1) * u128::from(n0) > u128::from(k0) * u128::from(n1) { "more" } else { "less" };
    format!("{name} {more} often than baseline: {:.0}% vs {:.0}%", pct(k1, n1), pct(k0, n0))
}

/// Tests every folder but `baseline` (an index into `confs`) against it; p-values Holm-adjusted together.
#[must_use]
pub fn compare(confs: &[DirConfidence], baseline: usize) -> Vec<Comparison> {
    let Some(base) = confs.get(baseline) else { return Vec::new() };
    let mut raw: Vec<(String, String, f64, String)> = Vec::new();
    for (i, conf) in confs.iter().enumerate() {
        if i == baseline || conf.broken.of == 0 {
            continue;
        }
        for ((name, r), (_, b)) in conf.rates.iter().zip(&base.rates) {
            let (k1, n1, k0, n0) = (r.any.count, r.any.of, b.any.count, b.any.of);
            if k1 + k0 == 0 {
                continue;
            }
            let p = stats::fisher_exact(k1, n1 - k1, k0, n0 - k0);
            raw.push((conf.dir.clone(), name.clone(), p, rate_words(name, k1, n1, k0, n0)));
        }
        let (k1, n1, k0, n0) = (conf.broken.count, conf.broken.of, base.broken.count, base.broken.of);
        if k1 + k0 > 0 && n0 > 0 {
            let p = stats::fisher_exact(k1, n1 - k1, k0, n0 - k0);
            raw.push((conf.dir.clone(), ANY.into(), p, rate_words("any phenomenon", k1, n1, k0, n0)));
        }
        if let Some(lr) = stats::logrank(&conf.observations, &base.observations) {
            let words =
                break_words(conf, base, conf.median_first_break.estimate, base.median_first_break.estimate, "turns");
            raw.push((conf.dir.clone(), "first_break".into(), lr.p, words));
        }
        let tokens = conf.token_observations.as_deref().zip(base.token_observations.as_deref());
        if let Some(lr) = tokens.and_then(|(a, b)| stats::logrank(a, b)) {
            let median = |c: &DirConfidence| c.median_first_break_tokens.as_ref().and_then(|m| m.estimate);
            let words = break_words(conf, base, median(conf), median(base), "tokens");
            raw.push((conf.dir.clone(), "first_break_tokens".into(), lr.p, words));
        }
    }
    let adjusted = stats::holm(&raw.iter().map(|r| r.2).collect::<Vec<_>>());
    raw.into_iter()
        .zip(adjusted)
        .map(|((dir, what, p, words), p_adjusted)| Comparison {
            sentence: format!("{words} ({}, Holm-adjusted {})", fmt_p(p), fmt_p(p_adjusted)),
            dir,
            what,
            p,
            p_adjusted,
            significant: p_adjusted < stats::ALPHA,
        })
        .collect()
}

/// For the baseline's and each other folder's "any phenomenon" rate: conversations per set needed to detect
/// that difference with 80% power (arcsine approximation, [`stats::sample_size_two_proportions`]).
#[must_use]
pub fn sample_sizes(confs: &[DirConfidence], baseline: usize) -> Vec<(String, Option<u64>)> {
    let Some(base) = confs.get(baseline).and_then(|b| b.broken.interval) else { return Vec::new() };
    confs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != baseline)
        .filter_map(|(_, c)| {
            let r = c.broken.interval?;
            Some((c.dir.clone(), stats::sample_size_two_proportions(r.estimate, base.estimate)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::dir::DirSummary;
    use crate::analysis::{Detection, PerSpeaker};

    fn conv(onset: Option<usize>, turns: usize) -> ConversationAnalysis {
        let text = r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"hello there"}]"#;
        let mut c =
            crate::analysis::analyze(&crate::analysis::formats::parse_reader(text.as_bytes(), "x", None).unwrap());
        c.detectors.clear();
        c.first_onset = onset;
        c.assistant_turns = turns;
        if let Some(t) = onset {
            let hit = Detection { detected: true, onset: Some(t), ..Detection::default() };
            c.detectors.insert("single_turn_loop".into(), PerSpeaker { assistant: hit, user: Detection::default() });
        }
        c
    }

    fn dir(name: &str, cs: Vec<ConversationAnalysis>) -> DirAnalysis {
        DirAnalysis {
            dir: name.into(),
            summary: DirSummary::of(&cs, 0),
            conversations: cs,
            errors: Vec::new(),
            version: 0,
            parrot_version: String::new(),
            forced_format: None,
            files: Vec::new(),
            judge_cache: Vec::new(),
        }
    }

    #[test]
    fn a_clear_difference_is_significant_and_said_in_words() {
        let base = dir("base", (0..30).map(|i| conv(Some(2 + i % 5), 40)).collect());
        let better = dir("dry", (0..30).map(|i| conv((i % 6 == 0).then_some(30), 40)).collect());
        let dirs = [base, better];
        let confs: Vec<DirConfidence> = dirs.iter().map(of_dir).collect();
        let r = &confs[0].rates.iter().find(|(n, _)| n == "single_turn_loop").unwrap().1.any;
        assert_eq!((r.count, r.of), (30, 30));
        assert!(r.interval.unwrap().low < 1.0);
        // Onsets 2..=6 in equal numbers: the median conversation had 4 clean assistant turns.
        assert_eq!(confs[0].median_first_break.estimate, Some(4.0));
        assert_eq!(confs[1].median_first_break.estimate, None);
        let cmp = compare(&confs, 0);
        let lr = cmp.iter().find(|c| c.what == "first_break").unwrap();
        assert!(lr.significant, "{lr:?}");
        assert!(
            lr.sentence.starts_with("breaks later than baseline: median not reached vs 4 turns"),
            "{}",
            lr.sentence
        );
        let fisher = cmp.iter().find(|c| c.what == "single_turn_loop").unwrap();
        assert!(fisher.significant && fisher.p_adjusted >= fisher.p);
        assert!(fisher.sentence.contains("less often than baseline: 17% vs 100%"), "{}", fisher.sentence);
        let any = cmp.iter().find(|c| c.what == ANY).expect("the rate of any phenomenon is tested too");
        assert!(any.significant, "{any:?}");
        assert!(any.sentence.starts_with("any phenomenon less often than baseline: 17% vs 100%"), "{}", any.sentence);
        assert_eq!(any.p, stats::fisher_exact(5, 25, 30, 0));
        let n = sample_sizes(&confs, 0);
        assert_eq!(n.len(), 1);
        assert!(n[0].1.unwrap() < 10);
    }

    #[test]
    fn time_to_first_break_by_tokens_where_every_conversation_records_them() {
        let with_tokens = |onset: Option<usize>, tokens: u64| {
            let mut c = conv(onset, 10);
            c.total_tokens = Some(tokens);
            if let Some(d) = c.detectors.get_mut("single_turn_loop") {
                d.assistant.onset_tokens = Some(tokens / 2);
            }
            c
        };
        // Breaks after 100, 200 and 300 tokens; one healthy to its end at 1000 tokens.
        let d = dir(
            "t",
            vec![
                with_tokens(Some(1), 200),
                with_tokens(Some(2), 400),
                with_tokens(Some(3), 600),
                with_tokens(None, 1000),
            ],
        );
        let conf = of_dir(&d);
        assert_eq!(token_observation(&d.conversations[3]), Some(Observation { time: 1000.0, event: false }));
        let km = conf.first_break_tokens.as_ref().unwrap();
        assert_eq!(km.steps.iter().map(|s| s.time).collect::<Vec<_>>(), [100.0, 200.0, 300.0, 1000.0]);
        // S = 3/4, 1/2, 1/4: the median is the first time at or below one half.
        assert_eq!(conf.median_first_break_tokens.unwrap().estimate, Some(200.0));
        let json = serde_json::to_value(&conf).unwrap();
        assert_eq!(json["median_first_break_tokens"]["estimate"], 200.0);
        // A conversation without tokens (a chat JSON) leaves the folder without the token curve.
        let mixed = dir("m", vec![with_tokens(Some(1), 200), conv(None, 4)]);
        assert!(of_dir(&mixed).first_break_tokens.is_none());
    }

    #[test]
    fn the_same_numbers_are_not_significant() {
        let a = dir("a", (0..10).map(|i| conv((i % 2 == 0).then_some(5), 20)).collect());
        let b = dir("b", (0..10).map(|i| conv((i % 2 == 1).then_some(5), 20)).collect());
        let dirs = [a, b];
        let confs: Vec<DirConfidence> = dirs.iter().map(of_dir).collect();
        assert!(compare(&confs, 0).iter().all(|c| !c.significant));
        assert_eq!(sample_sizes(&confs, 0), vec![("b".to_string(), None)]);
    }

    #[test]
    fn the_time_to_first_break_is_also_tested_by_tokens() {
        // The same onsets in turns, but the second folder's turns are ten times longer: it breaks far later in
        // tokens consumed. By turns the folders are alike; by tokens they differ.
        let with_tokens = |onset: Option<usize>, per_turn: u64| {
            let mut c = conv(onset, 20);
            c.total_tokens = Some(20 * per_turn);
            if let (Some(d), Some(t)) = (c.detectors.get_mut("single_turn_loop"), onset) {
                d.assistant.onset_tokens = Some(t as u64 * per_turn);
            }
            c
        };
        let short = dir("short", (0..20).map(|i| with_tokens(Some(3 + i % 4), 10)).collect());
        let long = dir("long", (0..20).map(|i| with_tokens(Some(3 + i % 4), 100)).collect());
        let dirs = [short, long];
        let confs: Vec<DirConfidence> = dirs.iter().map(of_dir).collect();
        let cmp = compare(&confs, 0);
        let by_turns = cmp.iter().find(|c| c.what == "first_break").unwrap();
        assert!(!by_turns.significant, "{by_turns:?}");
        let by_tokens = cmp.iter().find(|c| c.what == "first_break_tokens").expect("a log-rank test by tokens");
        let lr = stats::logrank(
            confs[1].token_observations.as_deref().unwrap(),
            confs[0].token_observations.as_deref().unwrap(),
        )
        .unwrap();
        assert!((by_tokens.p - lr.p).abs() < 1e-12, "{by_tokens:?}");
        assert!(by_tokens.significant, "{by_tokens:?}");
        assert!(
            by_tokens.sentence.starts_with("breaks later than baseline: median 500 vs 50 tokens"),
            "{}",
            by_tokens.sentence
        );
        // Holm-adjusted together with the others.
        assert!(by_tokens.p_adjusted >= by_tokens.p);
    }
}
