//! One turn's sampler for the in-process backend: llama.cpp's own sampler chain, with two of its stages done by
//! parrot where that gives the same tokens — the repetition penalties and the top-p cut.
//!
//! Why: both stages cost llama.cpp time in proportion to the vocabulary, every step, and Gemma 3's vocabulary has
//! 262,144 tokens. The penalties stage looks every candidate up in its token-count map, to change the logits of at
//! most `repeat_last_n` of them; [`Penalties`] keeps the same window and counts (accepting exactly the tokens
//! llama.cpp's stage would) and changes only the tokens in it, with the same single-precision arithmetic. The top-p
//! stage sorts the 256 most likely candidates and, whenever they hold less than `top_p` of the probability — often,
//! for a base model at the original tool's `top_p` 0.8 — sorts the whole vocabulary. [`TopP`] computes the same
//! probabilities in the same order and precision, finds from a histogram of their mass which logits can be in the
//! nucleus, and sorts only those: linear in the vocabulary plus the nucleus's own sort.
//!
//! Every value either stage leaves in the candidate array is bit for bit what llama.cpp's stage leaves: the same
//! tokens, in the same order, with the same logits, probabilities and `sorted` flag. The other stages (top-k,
//! min-p, temperature, the seeded draw, ...) stay llama.cpp's, applied to that array in the same order, so the
//! sampled token is the same for the same seed (`tests::top_p_leaves_what_llama_cpp_leaves` over thousands of
//! arrays against llama.cpp's own stage; `backend::llama`'s tests over hundreds of steps of the real Gemma model).
//!
//! Only where that equality is certain does parrot take over; otherwise the stage is llama.cpp's, as before:
//! - the penalties must be the chain's first stage (the array is then still in token-id order) and only the repeat
//!   penalty may be set — with frequency or presence penalties, llama.cpp's C++ may fuse the multiply-add, and its
//!   rounding is then not ours to reproduce;
//! - top-p takes an array no earlier stage has sorted (after top-k or typical-p it is short and llama.cpp's stage
//!   is cheap), with finite logits, and without two equal logits among the tokens it keeps or at the cut — the
//!   order llama.cpp's unstable sort gives equal logits is not ours to reproduce, so such a step is llama.cpp's.
//!
//! `PARROT_LLAMA_SAMPLERS=1` (read when a model loads) makes every stage llama.cpp's, to measure the difference or
//! compare against it.

use std::collections::{HashMap, VecDeque};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

/// A penalty window (`repeat_last_n`, `dry_penalty_last_n`) as the samplers get it, for a sequence of `n_ctx`
/// tokens: `-1` is the whole context (llama.cpp's meaning), 0 stays 0 (off), and a longer window is the context.
///
/// Why clamp: llama.cpp sizes its buffers by the window, not by the tokens seen — the penalties stage keeps a ring
/// buffer of `last_n` tokens, DRY a ring buffer and a count per position — so a window of `i32::MAX` allocated
/// 8 GiB (DRY 16 GiB) before the first token. A turn's sampler sees at most `n_ctx` tokens (the prompt it accepts
/// plus the tokens it generates fit the context, or the turn is refused), so a longer window cannot change a result.
#[must_use]
pub fn window(last_n: i32, n_ctx: u32) -> i32 {
    let whole = i32::try_from(n_ctx).unwrap_or(i32::MAX);
    if last_n < 0 {
        whole
    } else {
        last_n.min(whole)
    }
}

/// The repeat penalty over the last `last_n` accepted tokens, as llama.cpp's `penalties` stage computes it with
/// frequency and presence penalties 0.
#[derive(Debug, Clone)]
pub struct Penalties {
    last_n: usize,
    repeat: f32,
    window: VecDeque<i32>,
    counts: HashMap<i32, u32>,
}

impl Penalties {
    /// A window of `last_n` tokens (at least 1) with `repeat` as the penalty.
    #[must_use]
    pub fn new(last_n: usize, repeat: f32) -> Self {
        Penalties {
            last_n: last_n.max(1),
            repeat,
            window: VecDeque::with_capacity(last_n.clamp(1, 1 << 16)),
            counts: HashMap::new(),
        }
    }

    /// Takes `token` into the window, dropping the oldest when it is full (llama.cpp's ring buffer).
    pub fn accept(&mut self, token: i32) {
        *self.counts.entry(token).or_insert(0) += 1;
        if self.window.len() >= self.last_n {
            if let Some(old) = self.window.pop_front() {
                if let Some(c) = self.counts.get_mut(&old) {
                    *c -= 1;
                    if *c == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.window.push_back(token);
    }

    /// Penalises, in `candidates` (indexed by token id, as a fresh array from the logits is), every token of the
    /// window: a non-positive logit is multiplied by the penalty, a positive one divided by it.
    pub fn apply(&self, candidates: &mut [LlamaTokenData]) {
        for &token in self.counts.keys() {
            let Some(c) = usize::try_from(token).ok().and_then(|i| candidates.get_mut(i)) else { continue };
            let logit = c.logit();
            c.set_logit(if logit <= 0.0 { logit * self.repeat } else { logit / self.repeat });
        }
    }
}

/// Histogram buckets per unit of logit below the largest, in [`TopP`]'s search for the nucleus.
const BUCKETS_PER_LOGIT: f32 = 16.0;
/// Buckets in all: logits more than 64 below the largest (probability below e^-64) share the last one.
const BUCKETS: usize = 1024;

/// llama.cpp's top-p stage (`llama_sampler_init_top_p(p, min_keep)`) on an array no earlier stage has sorted:
/// it keeps the most likely tokens whose probabilities, summed in descending order, first reach `p`.
pub struct TopP {
    p: f32,
    min_keep: usize,
    /// llama.cpp's own stage, for the arrays parrot leaves to it.
    llama: LlamaSampler,
}

impl TopP {
    /// The stage for `p` below 1 (at 1 llama.cpp's stage keeps everything, and no chain includes it).
    #[must_use]
    pub fn new(p: f32, min_keep: usize) -> Self {
        TopP { p, min_keep, llama: LlamaSampler::top_p(p, min_keep) }
    }

    /// Applies the stage to `array`: parrot's cut where it is certain to leave what llama.cpp's leaves, llama.cpp's
    /// stage otherwise. `nucleus` and `mass` are scratch space reused between steps.
    pub fn apply(&mut self, array: &mut LlamaTokenDataArray, nucleus: &mut Vec<LlamaTokenData>, mass: &mut Vec<f64>) {
        if array.sorted || !self.cut(&mut array.data, nucleus, mass) {
            array.apply_sampler(&mut self.llama);
            return;
        }
        std::mem::swap(&mut array.data, nucleus);
        array.sorted = true;
    }

    /// Writes into `out` what llama.cpp's stage leaves of the unsorted array `data` — the kept tokens in descending
    /// order of logit, each with its probability over the whole array — and returns true; or returns false where
    /// that is not certain (a non-finite logit, or equal logits among the kept tokens or at the cut). Writes the
    /// probabilities into `data`, as llama.cpp's stage does; leaves its logits and order as they are.
    fn cut(&self, data: &mut [LlamaTokenData], out: &mut Vec<LlamaTokenData>, mass: &mut Vec<f64>) -> bool {
        out.clear();
        // llama.cpp's softmax: the largest logit, then expf(logit - max) summed in single precision in array
        // order, then each divided by the sum.
        let Some(first) = data.first() else { return false };
        let mut max = first.logit();
        for d in data.iter() {
            let l = d.logit();
            if l.is_nan() {
                return false;
            }
            if max < l {
                max = l;
            }
        }
        if !max.is_finite() {
            return false;
        }
        mass.clear();
        mass.resize(BUCKETS, 0.0);
        let bucket = |logit: f32| {
            // Saturating: a logit of -inf lands in the last bucket.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let b = ((max - logit) * BUCKETS_PER_LOGIT) as usize;
            b.min(BUCKETS - 1)
        };
        let mut sum = 0.0_f32;
        for d in data.iter_mut() {
            let p = (d.logit() - max).exp();
            d.set_p(p);
            sum += p;
            mass[bucket(d.logit())] += f64::from(p);
        }
        for d in data.iter_mut() {
            d.set_p(d.p() / sum);
        }
        // The buckets that certainly hold the nucleus: mass up to `p` (with a margin for rounding) and one more.
        // The bucket is monotonic in the logit, so the tokens in them are the most likely ones, and equal logits
        // share a bucket. Should the estimate fall short, the second pass takes every token.
        let target = f64::from(self.p) * f64::from(sum) * (1.0 + 1e-3);
        let mut acc = 0.0;
        let estimate = mass.iter().position(|m| {
            acc += m;
            acc >= target
        });
        let estimate = estimate.map_or(BUCKETS - 1, |b| (b + 1).min(BUCKETS - 1));
        for last_bucket in [estimate, BUCKETS - 1] {
            out.clear();
            out.extend(data.iter().filter(|d| bucket(d.logit()) <= last_bucket).copied());
            if out.len() < self.min_keep.min(data.len()) && out.len() < data.len() {
                continue;
            }
            out.sort_unstable_by(|a, b| b.logit().total_cmp(&a.logit()));
            // llama.cpp's cut: the first prefix whose single-precision running sum reaches p, keeping min_keep.
            let mut cum = 0.0_f32;
            let kept = out.iter().enumerate().find_map(|(i, d)| {
                cum += d.p();
                (cum >= self.p && i + 1 >= self.min_keep).then_some(i + 1)
            });
            let kept = match kept {
                Some(k) => k,
                None if out.len() == data.len() => out.len(),
                None => continue,
            };
            // Equal logits (IEEE equality: 0.0 and -0.0 too) among the kept tokens or at the cut.
            let checked = (kept + 1).min(out.len());
            if out[..checked].windows(2).any(|w| w[0].logit() == w[1].logit()) {
                return false;
            }
            out.truncate(kept);
            return true;
        }
        false
    }
}

/// One stage of a [`TurnSampler`]: llama.cpp's, or one of parrot's that leaves the same array.
enum Stage {
    /// Consecutive stages of llama.cpp's, as one chain.
    Llama(LlamaSampler),
    /// The repeat penalty, on an array in token-id order.
    Penalties(Penalties),
    /// The top-p cut.
    TopP(TopP),
}

/// The candidate arrays sampling reuses every step (one per model: jobs sample one after another).
#[derive(Default)]
pub struct Scratch {
    candidates: Vec<LlamaTokenData>,
    nucleus: Vec<LlamaTokenData>,
    mass: Vec<f64>,
}

/// Builds a [`TurnSampler`] stage by stage, in the chain's order.
#[derive(Default)]
pub struct TurnSamplerBuilder {
    stages: Vec<Stage>,
    pending: Vec<LlamaSampler>,
}

impl TurnSamplerBuilder {
    /// Whether no stage has been added yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty() && self.pending.is_empty()
    }

    /// Adds one of llama.cpp's stages.
    pub fn llama(&mut self, stage: LlamaSampler) {
        self.pending.push(stage);
    }

    /// Adds parrot's repeat penalty. Only as the first stage: it takes the array in token-id order.
    pub fn penalties(&mut self, penalties: Penalties) {
        debug_assert!(self.is_empty(), "parrot's penalties are the chain's first stage");
        self.stages.push(Stage::Penalties(penalties));
    }

    /// Adds parrot's top-p cut.
    pub fn top_p(&mut self, top_p: TopP) {
        self.flush();
        self.stages.push(Stage::TopP(top_p));
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.stages.push(Stage::Llama(LlamaSampler::chain_simple(std::mem::take(&mut self.pending))));
        }
    }

    /// The sampler.
    #[must_use]
    pub fn build(mut self) -> TurnSampler {
        self.flush();
        TurnSampler { stages: self.stages }
    }
}

/// One turn's sampler: llama.cpp's chain, some of whose stages may be parrot's.
pub struct TurnSampler {
    stages: Vec<Stage>,
}

impl TurnSampler {
    /// The stages parrot applies itself, by name (`"penalties"`, `"top_p"`), in the chain's order.
    #[must_use]
    pub fn parrot_stages(&self) -> Vec<&'static str> {
        self.stages
            .iter()
            .filter_map(|s| match s {
                Stage::Llama(_) => None,
                Stage::Penalties(_) => Some("penalties"),
                Stage::TopP(_) => Some("top_p"),
            })
            .collect()
    }

    /// Feeds the prompt's tokens to every stage, as llama-server does.
    pub fn accept_prompt(&mut self, tokens: &[LlamaToken]) {
        for stage in &mut self.stages {
            match stage {
                Stage::Llama(chain) => chain.accept_many(tokens),
                Stage::Penalties(p) => tokens.iter().for_each(|t| p.accept(t.0)),
                Stage::TopP(_) => {}
            }
        }
    }

    /// Samples (and accepts) the next token from output `idx` of the last decode.
    pub fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32, scratch: &mut Scratch) -> LlamaToken {
        if let [Stage::Llama(chain)] = self.stages.as_mut_slice() {
            return chain.sample(ctx, idx);
        }
        let mut data = std::mem::take(&mut scratch.candidates);
        data.clear();
        data.extend(
            ctx.get_logits_ith(idx).iter().zip(0_i32..).map(|(&l, i)| LlamaTokenData::new(LlamaToken(i), l, 0.0)),
        );
        let mut array = LlamaTokenDataArray::new(data, false);
        for stage in &mut self.stages {
            match stage {
                Stage::Llama(chain) => array.apply_sampler(chain),
                Stage::Penalties(p) => p.apply(&mut array.data),
                Stage::TopP(top_p) => top_p.apply(&mut array, &mut scratch.nucleus, &mut scratch.mass),
            }
        }
        // llama.cpp's draw always selects a candidate; the fallback (the most likely token) cannot be reached.
        let token = array.selected_token().unwrap_or_else(|| {
            array.data.iter().max_by(|a, b| a.logit().total_cmp(&b.logit())).map_or(LlamaToken(0), LlamaTokenData::id)
        });
        // Keep both buffers: the array may now hold the nucleus's.
        if array.data.capacity() >= scratch.nucleus.capacity() {
            scratch.candidates = array.data;
        } else {
            scratch.candidates = std::mem::replace(&mut scratch.nucleus, array.data);
        }
        for stage in &mut self.stages {
            match stage {
                Stage::Llama(chain) => chain.accept(token),
                Stage::Penalties(p) => p.accept(token.0),
                Stage::TopP(_) => {}
            }
        }
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// #15: a window past the context is the context (llama.cpp allocated a buffer of the window's size: 8 GiB at
    /// `i32::MAX`); -1 is the context, 0 is off, and a window within the context is unchanged.
    #[test]
    fn issue_15_penalty_windows_are_clamped_to_the_context() {
        assert_eq!(window(i32::MAX, 4096), 4096);
        assert_eq!(window(4097, 4096), 4096);
        assert_eq!(window(4096, 4096), 4096);
        assert_eq!(window(64, 4096), 64);
        assert_eq!(window(0, 4096), 0);
        assert_eq!(window(-1, 4096), 4096);
        assert_eq!(window(-1, u32::MAX), i32::MAX);
        assert_eq!(window(i32::MAX, u32::MAX), i32::MAX);
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// A uniform draw in [0, 1).
    #[allow(clippy::cast_precision_loss)]
    fn uniform(state: &mut u64) -> f64 {
        (xorshift(state) >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// `n` logits of one of several shapes: flat, peaked, heavy-tailed like a language model's, quantised (equal
    /// logits everywhere), half -inf (a grammar's or a bias's), all equal.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    fn logits(n: usize, shape: usize, rng: &mut u64) -> Vec<f32> {
        let normal = |rng: &mut u64| (0..12).map(|_| uniform(rng)).sum::<f64>() - 6.0;
        (0..n)
            .map(|i| match shape {
                0 => normal(rng) as f32,
                1 => (3.0 * normal(rng) + if i % 997 == 3 { 12.0 } else { 0.0 }) as f32,
                2 => (18.0 - 3.0 * (-uniform(rng).max(1e-300).ln()).sqrt() * 2.5) as f32,
                3 => ((5.0 * normal(rng)) * 4.0).round() as f32 / 4.0,
                4 if i % 2 == 0 => f32::NEG_INFINITY,
                4 => (4.0 * normal(rng)) as f32,
                _ => 1.5,
            })
            .collect()
    }

    /// #12: parrot's top-p leaves exactly what llama.cpp's stage leaves (tokens, order, logits, probabilities,
    /// `sorted`), over arrays of every size up to Gemma 3's vocabulary and many shapes, cut-offs and `min_keep`s —
    /// by its own cut where it can be certain, by llama.cpp's stage where not (equal logits).
    #[test]
    fn top_p_leaves_what_llama_cpp_leaves() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let (mut nucleus, mut mass, mut copy) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cases, mut by_parrot, mut wide_by_parrot) = (0, 0, 0);
        for n in [1_usize, 2, 7, 100, 1024, 1025, 4000, 32_768, 262_144] {
            for shape in 0..6 {
                for (p, min_keep) in
                    [(0.1_f32, 1_usize), (0.5, 1), (0.8, 1), (0.95, 1), (0.999, 1), (0.8, 3), (0.9, 2000)]
                {
                    let data: Vec<_> = logits(n, shape, &mut rng)
                        .into_iter()
                        .zip(0_i32..)
                        .map(|(l, i)| LlamaTokenData::new(LlamaToken(i), l, 0.0))
                        .collect();
                    let mut reference = LlamaTokenDataArray::new(data.clone(), false);
                    reference.apply_sampler(&mut LlamaSampler::top_p(p, min_keep));
                    let mut stage = TopP::new(p, min_keep);
                    copy.clone_from(&data);
                    let parrots = stage.cut(&mut copy, &mut nucleus, &mut mass);
                    let mut ours = LlamaTokenDataArray::new(data, false);
                    stage.apply(&mut ours, &mut nucleus, &mut mass);
                    let what = format!("n {n}, shape {shape}, p {p}, min_keep {min_keep}, parrot's cut {parrots}");
                    assert_eq!(ours.sorted, reference.sorted, "{what}");
                    assert_eq!(ours.selected, reference.selected, "{what}");
                    assert_eq!(ours.data.len(), reference.data.len(), "{what}");
                    for (a, b) in ours.data.iter().zip(&reference.data) {
                        assert_eq!(
                            (a.id(), a.logit().to_bits(), a.p().to_bits()),
                            (b.id(), b.logit().to_bits(), b.p().to_bits()),
                            "{what}"
                        );
                    }
                    cases += 1;
                    by_parrot += usize::from(parrots);
                    wide_by_parrot += usize::from(parrots && reference.data.len() > 256 && n > 1024);
                }
            }
        }
        // Equal logits are frequent in these synthetic arrays (shapes 3 and 5 are made of them); elsewhere the cut
        // is parrot's, including nuclei past the 256 tokens llama.cpp sorts first.
        assert!(by_parrot * 2 > cases, "parrot's cut in {by_parrot} of {cases} cases");
        assert!(wide_by_parrot >= 10, "parrot's cut of a nucleus over 256 tokens in {wide_by_parrot} cases");
    }

    #[test]
    fn the_window_keeps_the_last_n_tokens_and_their_counts() {
        let mut p = Penalties::new(3, 2.0);
        for t in [5, 5, 7, 9] {
            p.accept(t);
        }
        // The window is [5, 7, 9]: token 5 once.
        assert_eq!(p.counts.get(&5), Some(&1));
        p.accept(1);
        assert_eq!(p.counts.get(&5), None);
        let mut c: Vec<LlamaTokenData> =
            (0..10).map(|i| LlamaTokenData::new(LlamaToken(i), if i == 7 { -1.0 } else { 3.0 }, 0.0)).collect();
        p.apply(&mut c);
        assert!((c[7].logit() - -2.0).abs() < f32::EPSILON, "a negative logit is multiplied");
        assert!((c[9].logit() - 1.5).abs() < f32::EPSILON, "a positive one divided");
        assert!((c[5].logit() - 3.0).abs() < f32::EPSILON, "tokens out of the window are untouched");
    }
}
