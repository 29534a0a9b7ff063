//! The synthetic corpus the `analyze` and `report` benchmarks share: parrot transcripts of made-up words, a
//! quarter healthy and the rest looping in the ways the detectors look for, the same on every run.

use std::path::Path;

use parrot::transcript::{Header, ModelRecord, Record, Speaker, StopReason, TranscriptWriter, TurnRecord};

/// A tiny xorshift generator: the corpus must be the same on every machine, with no dependency.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// 3,000 made-up words.
pub fn vocabulary(rng: &mut Rng) -> Vec<String> {
    let syllables = ["ka", "lo", "mi", "ne", "sha", "tor", "vi", "el", "an", "ru", "po", "sta", "de", "qui", "ba"];
    (0..3000)
        .map(|_| {
            let n = 1 + rng.below(3);
            (0..n).map(|_| syllables[rng.below(syllables.len())]).collect::<String>()
        })
        .collect()
}

/// A healthy turn: Zipf-ish words, some punctuation, a stock action now and then.
fn healthy_turn(rng: &mut Rng, vocab: &[String], words: usize) -> String {
    let mut s = String::new();
    if rng.below(4) == 0 {
        s.push_str(" *smiles*");
    }
    for i in 0..words {
        let r = rng.below(vocab.len());
        let idx = r * r.min(rng.below(vocab.len()) + 1) / vocab.len();
        s.push(' ');
        s.push_str(&vocab[idx.min(vocab.len() - 1)]);
        if i % 11 == 10 {
            s.push('.');
        }
    }
    s
}

fn header(seed: u32, repeat_penalty: f64) -> Header {
    let model = ModelRecord {
        path: "bench.gguf".into(),
        file_size: None,
        name: None,
        architecture: None,
        n_ctx: 16384,
        chat_template_source: "gguf".into(),
    };
    Header {
        format: parrot::transcript::FORMAT_NAME.into(),
        format_version: parrot::transcript::FORMAT_VERSION,
        parrot_version: env!("CARGO_PKG_VERSION").into(),
        started: "2026-01-01T00:00:00Z".into(),
        config: serde_json::json!({"agent_prefix": "Skye:", "user_prefix": "Mark:", "turn_max_tokens": 512, "repeat_penalty": repeat_penalty}),
        assistant_model: model.clone(),
        user_model: model,
        backend: "llama".into(),
        user_backend: "llama".into(),
        seed,
        conversation_index: 0,
        cpu: None,
    }
}

/// Writes conversation `i` of about `tokens` tokens, recording `repeat_penalty` in its header config: kind 0 healthy, 1 single-turn loop growing by a glued token, 2 two-turn cycle,
/// 3 word soup that repeats phrases.
pub fn write_conversation(path: &Path, i: usize, vocab: &[String], tokens: u64, repeat_penalty: f64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1));
    let kind = i % 4;
    let onset = 10 + rng.below(40);
    let mut w = TranscriptWriter::create(path, &header(u32::try_from(i).unwrap_or(u32::MAX), repeat_penalty)).unwrap();
    let mut so_far = 0u64;
    let mut index = 0u32;
    let mut assistant_turns: Vec<String> = Vec::new();
    while so_far < tokens {
        let k = assistant_turns.len();
        let (a, stop) = if kind == 0 || k < onset {
            {
                let n = 40 + rng.below(60);
                (healthy_turn(&mut rng, vocab, n), StopReason::Eos)
            }
        } else {
            match kind {
                1 => {
                    let mut t = assistant_turns[k - 1].clone();
                    t.push_str(&vocab[rng.below(vocab.len())]);
                    (t, StopReason::Eos)
                }
                2 => (assistant_turns[k - 2].clone(), StopReason::Eos),
                _ => {
                    let phrase = healthy_turn(&mut rng, vocab, 12);
                    let mut t = healthy_turn(&mut rng, vocab, 200);
                    for _ in 0..4 {
                        t.push_str(&phrase);
                    }
                    (t, StopReason::MaxTokens)
                }
            }
        };
        assistant_turns.push(a.clone());
        let n = 20 + rng.below(40);
        let u = healthy_turn(&mut rng, vocab, n);
        for (speaker, prefix, text, stop) in
            [(Speaker::Assistant, "Skye:", a, stop), (Speaker::User, "Mark:", u, StopReason::Eos)]
        {
            let tokens = u32::try_from(text.split(' ').count()).unwrap_or(u32::MAX).min(512);
            so_far += u64::from(tokens);
            w.write(&Record::Turn(TurnRecord {
                index,
                speaker,
                text: format!("{prefix}{text}"),
                prefix: prefix.into(),
                opening: false,
                tokens,
                prompt_tokens: 0,
                prompt_tokens_evaluated: 0,
                dropped_messages: 0,
                stop_reason: Some(stop),
                max_tokens: Some(512),
                tokens_so_far: so_far,
                timings: None,
                endpoint: None,
            }))
            .unwrap();
            index += 1;
        }
    }
}
