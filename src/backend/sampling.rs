//! One turn's sampler for the in-process backend: llama.cpp's own sampler chain, with the repetition penalties
//! applied by parrot to the tokens of the penalty window only.
//!
//! Why: llama.cpp's penalties stage looks every candidate up in its token-count map, every step — for Gemma 3's
//! 262,144-token vocabulary that is a quarter of a million hash lookups per generated token, to change the logits
//! of at most `repeat_last_n` of them. [`Penalties`] keeps the same window and counts (accepting exactly the tokens
//! llama.cpp's stage would) and changes only the tokens in it, with the same single-precision arithmetic, so every
//! logit comes out bit for bit what llama.cpp's stage gives. The other stages (top-k, top-p, min-p, temperature,
//! the seeded draw, ...) stay llama.cpp's, applied to the same array in the same order, so the sampled token is
//! the same for the same seed (`tests::sparse_penalties_sample_the_same_tokens_as_llama_cpp`, over hundreds of
//! steps of the real Gemma model).
//!
//! Only where that equality is certain does parrot take over: the penalties must be the chain's first stage (the
//! array is then still in token-id order) and only the repeat penalty may be set — with frequency or presence
//! penalties, llama.cpp's C++ may fuse the multiply-add, and its rounding is then not ours to reproduce. Otherwise
//! the whole chain is llama.cpp's, as before. `PARROT_DENSE_PENALTIES=1` (read when a model loads) makes it
//! llama.cpp's always, to measure the difference or compare against it.

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

/// One turn's sampler: llama.cpp's chain, with or without parrot's [`Penalties`] in front of it.
pub struct TurnSampler {
    /// The chain llama.cpp runs: every stage, or every stage after the penalties when `penalties` is set.
    chain: LlamaSampler,
    penalties: Option<Penalties>,
}

impl TurnSampler {
    /// `chain` as llama.cpp's whole sampler.
    #[must_use]
    pub fn llama(chain: LlamaSampler) -> Self {
        TurnSampler { chain, penalties: None }
    }

    /// `penalties` applied by parrot, then `rest` by llama.cpp.
    #[must_use]
    pub fn with_penalties(penalties: Penalties, rest: LlamaSampler) -> Self {
        TurnSampler { chain: rest, penalties: Some(penalties) }
    }

    /// Whether parrot applies the penalties.
    #[must_use]
    pub fn sparse(&self) -> bool {
        self.penalties.is_some()
    }

    /// Feeds the prompt's tokens to every stage, as llama-server does.
    pub fn accept_prompt(&mut self, tokens: &[LlamaToken]) {
        self.chain.accept_many(tokens);
        if let Some(p) = &mut self.penalties {
            for t in tokens {
                p.accept(t.0);
            }
        }
    }

    /// Samples (and accepts) the next token from output `idx` of the last decode. `scratch` is reused between
    /// calls for the candidate array.
    pub fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32, scratch: &mut Vec<LlamaTokenData>) -> LlamaToken {
        let Some(penalties) = &mut self.penalties else { return self.chain.sample(ctx, idx) };
        let mut data = std::mem::take(scratch);
        data.clear();
        data.extend(
            ctx.get_logits_ith(idx).iter().zip(0_i32..).map(|(&l, i)| LlamaTokenData::new(LlamaToken(i), l, 0.0)),
        );
        penalties.apply(&mut data);
        let mut array = LlamaTokenDataArray::new(data, false);
        array.apply_sampler(&mut self.chain);
        // llama.cpp's draw always selects a candidate; the fallback (the most likely token) cannot be reached.
        let token = array.selected_token().unwrap_or_else(|| {
            array.data.iter().max_by(|a, b| a.logit().total_cmp(&b.logit())).map_or(LlamaToken(0), LlamaTokenData::id)
        });
        *scratch = array.data;
        self.chain.accept(token);
        penalties.accept(token.0);
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
