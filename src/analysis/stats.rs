//! How sure a comparison is: confidence intervals and tests for the rates, means and survival curves that
//! `analyze` and `report` show. Pure functions on plain numbers; no I/O, no global state.
//!
//! Why here and why these: run sets hold 20–100 conversations, so a rate of 16% has a 95% interval of roughly
//! 8–29% and most visible differences are noise. Each function matches a reference implementation a reader can
//! check (`scripts/stats-reference.py` computes the same quantities with scipy / statsmodels / lifelines on fixed
//! data; `tests/fixtures/stats/reference.json` stores its output and the unit tests below compare against it):
//!
//! - [`wilson`]: Wilson score interval without continuity correction (statsmodels
//!   `proportion_confint(method="wilson")`).
//! - [`bootstrap_mean`] / [`bootstrap_median`]: percentile bootstrap, seeded so the same data and seed give the
//!   same interval on every machine (SplitMix64 generator; no reference, the resampling stream is parrot's own).
//! - [`kaplan_meier`]: product-limit estimate with Greenwood's variance and the **log-log** ("exponential
//!   Greenwood") band, lifelines' `KaplanMeierFitter` default; [`KaplanMeier::median`] with its interval read off
//!   the band as lifelines `median_survival_times(confidence_interval_)` does.
//! - [`fisher_exact`]: two-sided Fisher's exact test of a 2×2 table, as scipy `fisher_exact` (tables as likely
//!   or less likely than the observed one, with scipy's 1e-7 relative tolerance).
//! - [`logrank`]: the log-rank test of two survival curves, as lifelines `logrank_test` (χ² with 1 df).
//! - [`holm`]: Holm's step-down adjustment, as statsmodels `multipletests(method="holm")`.
//! - [`sample_size_two_proportions`]: conversations per set for 80% power, two-sided α = 0.05, by the
//!   arcsine (Cohen's h) normal approximation for two independent groups `n = 2·((z_{1-α/2} + z_{power}) / h)²`,
//!   h = 2·asin√p₁ − 2·asin√p₂ (statsmodels `NormalIndPower` with `proportion_effectsize`, which also counts the
//!   far tail; rounded up, the two agree on the fixture's cases).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::erf::erfc;
use statrs::function::gamma::ln_gamma;

/// The confidence level of every interval parrot shows.
pub const LEVEL: f64 = 0.95;

/// A point estimate with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The estimate itself (rate, mean, median, survival).
    pub estimate: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end of the 95% interval.
    pub high: f64,
}

/// The two-sided standard normal quantile for `level` (1.96 for 0.95).
fn z_two_sided(level: f64) -> f64 {
    normal_quantile(1.0 - (1.0 - level) / 2.0)
}

fn normal_quantile(p: f64) -> f64 {
    // Normal::new(0, 1) cannot fail.
    Normal::new(0.0, 1.0).map_or(f64::NAN, |n| n.inverse_cdf(p))
}

/// Wilson score 95% interval for `successes` out of `n` (no continuity correction). `None` when `n` is 0.
#[must_use]
pub fn wilson(successes: u64, n: u64) -> Option<Interval> {
    if n == 0 || successes > n {
        return None;
    }
    let z = z_two_sided(LEVEL);
    let (k, n) = (successes as f64, n as f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    Some(Interval { estimate: p, low: (center - half).max(0.0), high: (center + half).min(1.0) })
}

/// SplitMix64: a tiny, well-known generator, so bootstrap draws are the same on every platform and version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³² for the sizes used here).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Resamples drawn by [`bootstrap_mean`] and [`bootstrap_median`].
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The value at fraction `q` of sorted `v`, linear between neighbours (numpy's default `percentile`).
fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    quantile_sorted(&s, 0.5)
}

fn bootstrap(values: &[f64], seed: u64, stat: fn(&[f64]) -> f64) -> Option<Interval> {
    let values: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if values.is_empty() {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let mut sample = vec![0.0; values.len()];
    let mut stats: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            for s in &mut sample {
                *s = values[rng.below(values.len())];
            }
            stat(&sample)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - LEVEL) / 2.0;
    Some(Interval {
        estimate: stat(&values),
        low: quantile_sorted(&stats, tail),
        high: quantile_sorted(&stats, 1.0 - tail),
    })
}

/// Percentile-bootstrap 95% interval of the mean of the finite `values` ([`BOOTSTRAP_RESAMPLES`] resamples,
/// seeded). `None` when there is no finite value.
#[must_use]
pub fn bootstrap_mean(values: &[f64], seed: u64) -> Option<Interval> {
    bootstrap(values, seed, mean)
}

/// Percentile-bootstrap 95% interval of the median of the finite `values`, as [`bootstrap_mean`].
#[must_use]
pub fn bootstrap_median(values: &[f64], seed: u64) -> Option<Interval> {
    bootstrap(values, seed, median)
}

/// One subject of a survival analysis: the time it was last seen and whether the event (a break) happened then
/// (`false`: censored — the conversation ended without breaking).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Turn (or token count) of the event or of the end of observation.
    pub time: f64,
    /// True when the event happened at `time`.
    pub event: bool,
}

/// One step of a Kaplan–Meier curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KmStep {
    /// The time of the step.
    pub time: f64,
    /// Subjects still at risk just before `time`.
    pub at_risk: u64,
    /// Events at `time`.
    pub events: u64,
    /// Survival just after `time`, with its 95% log-log Greenwood band.
    pub survival: Interval,
}

/// A Kaplan–Meier curve: one step per distinct observed time (events or censoring), starting after time 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KaplanMeier {
    /// The steps, in time order.
    pub steps: Vec<KmStep>,
}

/// The Kaplan–Meier estimate of `obs` with Greenwood's variance and the log-log 95% band (lifelines'
/// default). Where survival is 0 or 1 the band collapses to the estimate, as lifelines reports it.
#[must_use]
pub fn kaplan_meier(obs: &[Observation]) -> KaplanMeier {
    let mut sorted: Vec<Observation> = obs.iter().copied().filter(|o| o.time.is_finite()).collect();
    sorted.sort_by(|a, b| a.time.total_cmp(&b.time));
    let z = z_two_sided(LEVEL);
    let mut at_risk = sorted.len() as u64;
    // Survival as exp(Σ ln(n − d) − ln n), summed in logs as lifelines does, so that a curve landing on exactly one
    // half rounds the same way (the median is the first time at or below 0.5).
    let (mut log_s, mut greenwood) = (0.0f64, 0.0f64);
    let mut steps = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let t = sorted[i].time;
        let (mut d, mut c) = (0u64, 0u64);
        while i < sorted.len() && sorted[i].time == t {
            if sorted[i].event {
                d += 1;
            } else {
                c += 1;
            }
            i += 1;
        }
        let n = at_risk as f64;
        if d > 0 {
            log_s += (n - d as f64).ln() - n.ln();
            greenwood += if at_risk > d { d as f64 / (n * (n - d as f64)) } else { f64::INFINITY };
        }
        let s = log_s.exp();
        let (low, high) = if s > 0.0 && s < 1.0 && greenwood.is_finite() {
            let v = s.ln();
            let spread = z * greenwood.sqrt() / v;
            ((-((-v).ln() - spread).exp()).exp(), (-((-v).ln() + spread).exp()).exp())
        } else {
            (s, s)
        };
        steps.push(KmStep { time: t, at_risk, events: d, survival: Interval { estimate: s, low, high } });
        at_risk -= d + c;
    }
    KaplanMeier { steps }
}

impl KaplanMeier {
    /// The first time at which `f(step)` is at or below 0.5; `None` (not reached) when it never is.
    fn crossing(&self, f: impl Fn(&Interval) -> f64) -> Option<f64> {
        self.steps.iter().find(|st| f(&st.survival) <= 0.5).map(|st| st.time)
    }

    /// Median time to the event with its 95% interval, each end the first time the curve or a band edge is at
    /// or below one half (lifelines `median_survival_times`). `None` in an end means not reached within the
    /// observations (lifelines' `inf`).
    #[must_use]
    pub fn median(&self) -> MedianSurvival {
        MedianSurvival {
            estimate: self.crossing(|i| i.estimate),
            low: self.crossing(|i| i.low),
            high: self.crossing(|i| i.high),
        }
    }
}

/// A median survival time and its interval; `None` = not reached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MedianSurvival {
    /// Median time to the event.
    pub estimate: Option<f64>,
    /// Lower end of its 95% interval.
    pub low: Option<f64>,
    /// Upper end of its 95% interval.
    pub high: Option<f64>,
}

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

/// Two-sided p-value of Fisher's exact test of the table `[[a, b], [c, d]]` (scipy `fisher_exact`): the total
/// probability, under fixed margins, of every table no more likely than the observed one.
#[must_use]
pub fn fisher_exact(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let (row1, col1, n) = (a + b, a + c, a + b + c + d);
    if n == 0 {
        return 1.0;
    }
    let ln_total = ln_choose(n, col1);
    let prob = |x: u64| (ln_choose(row1, x) + ln_choose(n - row1, col1 - x) - ln_total).exp();
    let lo = col1.saturating_sub(n - row1);
    let hi = row1.min(col1);
    let observed = prob(a);
    let p: f64 = (lo..=hi).map(prob).filter(|&q| q <= observed * (1.0 + 1e-7)).sum();
    p.min(1.0)
}

/// The log-rank test of two groups (lifelines `logrank_test`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogRank {
    /// The χ² statistic (1 degree of freedom).
    pub statistic: f64,
    /// Its p-value.
    pub p: f64,
}

/// Log-rank test that `a` and `b` have the same survival curve. `None` when no event happened in either group.
#[must_use]
pub fn logrank(a: &[Observation], b: &[Observation]) -> Option<LogRank> {
    let mut all: Vec<(f64, bool, bool)> = a
        .iter()
        .map(|o| (o.time, o.event, true))
        .chain(b.iter().map(|o| (o.time, o.event, false)))
        .filter(|o| o.0.is_finite())
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (mut n_a, mut n) = (all.iter().filter(|o| o.2).count() as f64, all.len() as f64);
    let (mut observed_minus_expected, mut variance) = (0.0, 0.0);
    let mut i = 0;
    while i < all.len() {
        let t = all[i].0;
        let (mut d, mut d_a, mut leave, mut leave_a) = (0.0, 0.0, 0.0, 0.0);
        while i < all.len() && all[i].0 == t {
            let (_, event, in_a) = all[i];
            leave += 1.0;
            if in_a {
                leave_a += 1.0;
            }
            if event {
                d += 1.0;
                if in_a {
                    d_a += 1.0;
                }
            }
            i += 1;
        }
        if d > 0.0 {
            observed_minus_expected += d_a - d * n_a / n;
            if n > 1.0 {
                variance += d * (n_a / n) * (1.0 - n_a / n) * (n - d) / (n - 1.0);
            }
        }
        n -= leave;
        n_a -= leave_a;
    }
    if variance <= 0.0 {
        return None;
    }
    let statistic = observed_minus_expected * observed_minus_expected / variance;
    // χ²(1) survival function: P(Z² > x) = erfc(√(x/2)).
    Some(LogRank { statistic, p: erfc((statistic / 2.0).sqrt()) })
}

/// Holm step-down adjusted p-values, in the order given (statsmodels `multipletests(method="holm")`).
#[must_use]
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// The significance level of every test parrot marks.
pub const ALPHA: f64 = 0.05;

/// The power [`sample_size_two_proportions`] plans for.
pub const POWER: f64 = 0.8;

/// Conversations per set needed to tell rate `p1` from `p2` with 80% power at two-sided α = 0.05, by the
/// arcsine approximation (module docs), rounded up. `None` when the rates are equal or not in [0, 1].
#[must_use]
pub fn sample_size_two_proportions(p1: f64, p2: f64) -> Option<u64> {
    if !(0.0..=1.0).contains(&p1) || !(0.0..=1.0).contains(&p2) {
        return None;
    }
    let h = (2.0 * p1.sqrt().asin() - 2.0 * p2.sqrt().asin()).abs();
    if h < 1e-12 {
        return None;
    }
    let n = 2.0 * ((z_two_sided(1.0 - ALPHA) + normal_quantile(POWER)) / h).powi(2);
    Some(n.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn reference() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/stats/reference.json")).unwrap()
    }

    fn close(got: f64, want: &Value, what: &str) {
        let want = want.as_f64().unwrap_or(f64::INFINITY);
        if want.is_infinite() {
            assert!(got.is_infinite(), "{what}: got {got}, want inf");
            return;
        }
        // The fixture prints 10 significant digits.
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1e-3), "{what}: got {got}, want {want}");
    }

    fn observations(v: &Value) -> Vec<Observation> {
        let t = v["times"].as_array().unwrap();
        let e = v["events"].as_array().unwrap();
        t.iter().zip(e).map(|(t, e)| Observation { time: t.as_f64().unwrap(), event: e.as_i64() == Some(1) }).collect()
    }

    #[test]
    fn wilson_matches_statsmodels() {
        for case in reference()["wilson"].as_array().unwrap() {
            let (k, n) = (case["k"].as_u64().unwrap(), case["n"].as_u64().unwrap());
            let got = wilson(k, n).unwrap();
            close(got.low, &case["low"], &format!("wilson {k}/{n} low"));
            close(got.high, &case["high"], &format!("wilson {k}/{n} high"));
        }
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn fisher_matches_scipy() {
        for case in reference()["fisher"].as_array().unwrap() {
            let t: Vec<u64> = case["table"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            close(fisher_exact(t[0], t[1], t[2], t[3]), &case["p"], &format!("fisher {t:?}"));
        }
    }

    #[test]
    fn logrank_matches_lifelines() {
        for case in reference()["logrank"].as_array().unwrap() {
            let got = logrank(&observations(&case["a"]), &observations(&case["b"])).unwrap();
            close(got.statistic, &case["statistic"], "logrank statistic");
            close(got.p, &case["p"], "logrank p");
        }
    }

    #[test]
    fn kaplan_meier_matches_lifelines() {
        for case in reference()["kaplan_meier"].as_array().unwrap() {
            let km = kaplan_meier(&observations(case));
            let want = case["curve"].as_array().unwrap();
            // lifelines' timeline starts at 0 (survival 1); parrot's curve starts at the first observed time.
            let want: Vec<&Value> = want.iter().filter(|r| r["time"].as_f64() != Some(0.0)).collect();
            assert_eq!(km.steps.len(), want.len());
            for (st, w) in km.steps.iter().zip(want) {
                close(st.time, &w["time"], "km time");
                close(st.survival.estimate, &w["survival"], &format!("km S({})", st.time));
                close(st.survival.low, &w["low"], &format!("km low({})", st.time));
                close(st.survival.high, &w["high"], &format!("km high({})", st.time));
            }
            let m = km.median();
            let med = &case["median"];
            for (got, key) in [(m.estimate, "estimate"), (m.low, "low"), (m.high, "high")] {
                close(got.unwrap_or(f64::INFINITY), &med[key], &format!("median {key}"));
            }
        }
    }

    #[test]
    fn holm_matches_statsmodels() {
        for case in reference()["holm"].as_array().unwrap() {
            let p: Vec<f64> = case["p"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            for (got, want) in holm(&p).iter().zip(case["adjusted"].as_array().unwrap()) {
                close(*got, want, "holm");
            }
        }
    }

    #[test]
    fn sample_size_matches_statsmodels() {
        for case in reference()["sample_size"].as_array().unwrap() {
            let (p1, p2) = (case["p1"].as_f64().unwrap(), case["p2"].as_f64().unwrap());
            assert_eq!(sample_size_two_proportions(p1, p2), case["n"].as_u64(), "n for {p1} vs {p2}");
        }
        assert_eq!(sample_size_two_proportions(0.3, 0.3), None);
    }

    #[test]
    fn bootstrap_is_seeded_and_covers_the_estimate() {
        let v: Vec<f64> = (0..50).map(|i| f64::from((i * 37) % 23)).collect();
        let a = bootstrap_mean(&v, 7).unwrap();
        assert_eq!(Some(a), bootstrap_mean(&v, 7));
        assert_ne!(Some(a), bootstrap_mean(&v, 8));
        assert!(a.low < a.estimate && a.estimate < a.high, "{a:?}");
        let m = bootstrap_median(&v, 7).unwrap();
        assert!(m.low <= m.estimate && m.estimate <= m.high, "{m:?}");
        assert_eq!(bootstrap_mean(&[f64::NAN], 1), None);
    }
}
