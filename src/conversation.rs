//! The turn-taking driver, as the original tool does it, without files or terminals.
//!
//! 1. The assistant sees the whole conversation (chat template with a generation prompt) and its turn is forced to
//!    start with `agent_prefix`; the stored turn is `agent_prefix + generated text`.
//! 2. The user model sees `user_system` as its system prompt, then the last `user_memory` messages of the
//!    conversation with roles swapped (the assistant's turns become `user`, the user's become `assistant`),
//!    and its turn starts with `user_prefix`. The conversation's own system prompt is the assistant's
//!    instructions, so it is never part of the user's window.
//! 3. Turns alternate until `initial_tokens` plus the generated tokens reach `total_tokens`. Each turn may
//!    generate at most `min(turn_max_tokens, tokens left in the budget)`, so the total never exceeds the budget.
//!
//! Context limits are checked before generating. The assistant stops the conversation with `context_full` when its
//! prompt plus the turn limit no longer fits. The user model drops the oldest messages of its window until the
//! prompt fits and records how many it dropped (the original silently produced an empty turn here — a false
//! "nothing to say"); only when not even the last message fits does the conversation stop with `context_full`.
//!
//! Everything the driver produces goes to a [`Sink`]: the run command writes transcripts and prints; tests collect.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Result;

use crate::backend::{Backend, GenRequest, Generation, Interrupted};
use crate::chat_template::ChatMessage;
use crate::config::Config;
use crate::transcript::{EndReason, Speaker, SpeakerTotals, StopReason, Summary, Timings, TurnRecord};

/// Receives what the driver produces, as it happens.
pub trait Sink {
    /// The exact prompt text of message `index`, before it is generated (for `--prompt-log`).
    ///
    /// # Errors
    /// When it cannot be stored; the conversation stops.
    fn prompt(&mut self, _index: u32, _speaker: Speaker, _prompt: &str) -> Result<()> {
        Ok(())
    }
    /// A generated turn starts; `prefix` is the forced prefix.
    fn turn_started(&mut self, speaker: Speaker, prefix: &str);
    /// A streamed piece of the current turn.
    fn piece(&mut self, speaker: Speaker, text: &str);
    /// A message is complete (opening messages included). Write it out before returning.
    ///
    /// # Errors
    /// When it cannot be stored; the conversation stops.
    fn turn(&mut self, record: &TurnRecord) -> Result<()>;
}

/// The two roles.
pub struct Roles<'a> {
    /// The assistant's backend.
    pub assistant: &'a mut dyn Backend,
    /// The user's backend.
    pub user: &'a mut dyn Backend,
}

/// Seed of one turn's sampler: distinct per turn and per conversation, reproducible from the transcript.
#[must_use]
pub fn turn_seed(conversation_seed: u32, index: u32) -> u32 {
    // SplitMix-style mixing so that seed s at turn t and seed s+1 at turn t-1 differ.
    let mut z = (u64::from(conversation_seed) << 32 | u64::from(index)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// The messages the user model sees: its system prompt, then the last `memory` non-system messages, roles swapped.
/// `drop` removes that many of the oldest messages from the window.
#[must_use]
pub fn user_view(config: &Config, history: &[(Speaker, String)], drop: usize) -> Vec<ChatMessage> {
    let turns: Vec<&(Speaker, String)> = history.iter().filter(|(s, _)| *s != Speaker::System).collect();
    let start = turns.len().saturating_sub(config.user_memory) + drop;
    // `user_memory` is input (any usize): the window never holds more than the history.
    let mut out = Vec::with_capacity(turns.len().min(config.user_memory) + 1);
    if !config.user_system.is_empty() {
        out.push(ChatMessage::new(Speaker::System, config.user_system.clone()));
    }
    for (speaker, text) in turns.iter().skip(start) {
        let swapped = if *speaker == Speaker::Assistant { Speaker::User } else { Speaker::Assistant };
        out.push(ChatMessage::new(swapped, text.clone()));
    }
    out
}

/// Number of non-system messages in the user's window (before any drop).
fn window_len(config: &Config, history: &[(Speaker, String)]) -> usize {
    history.iter().filter(|(s, _)| *s != Speaker::System).count().min(config.user_memory)
}

/// One planned turn: what to ask a backend for.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnPlan {
    /// Index the message will have.
    pub index: u32,
    /// Who speaks.
    pub speaker: Speaker,
    /// The full prompt: rendered template plus the forced prefix.
    pub prompt: String,
    /// The turn's token limit.
    pub max_tokens: u32,
    /// The turn's sampler seed.
    pub seed: u32,
    /// User turns: oldest window messages dropped to fit the context.
    pub dropped: u32,
}

/// What a conversation needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Generate this turn, then call [`Dialogue::finish`].
    Generate(TurnPlan),
    /// The conversation is over.
    End(Summary),
}

/// A conversation as a state machine: [`Dialogue::next`] plans the next turn, a backend generates it (alone, or
/// batched with other conversations' turns), [`Dialogue::finish`] records it. [`run_conversation`] is the simple
/// loop over it; the parallel scheduler interleaves many.
pub struct Dialogue<'c> {
    config: &'c Config,
    seed: u32,
    started: Instant,
    history: Vec<(Speaker, String)>,
    totals: (SpeakerTotals, SpeakerTotals),
    tokens_so_far: u64,
}

impl<'c> Dialogue<'c> {
    /// Starts a conversation, or resumes one from the turns already in its transcript (`done`). A new
    /// conversation emits its opening messages to `sink` first.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn start(config: &'c Config, seed: u32, done: &[TurnRecord], sink: &mut dyn Sink) -> Result<Self> {
        let mut d = Dialogue {
            config,
            seed,
            started: Instant::now(),
            history: Vec::new(),
            totals: (SpeakerTotals::default(), SpeakerTotals::default()),
            tokens_so_far: config.initial_tokens,
        };
        if done.is_empty() {
            for (i, m) in config.conversation.iter().enumerate() {
                let record = TurnRecord {
                    index: u32::try_from(i)?,
                    speaker: m.role,
                    text: m.content.clone(),
                    prefix: String::new(),
                    opening: true,
                    tokens: 0,
                    prompt_tokens: 0,
                    prompt_tokens_evaluated: 0,
                    dropped_messages: 0,
                    stop_reason: None,
                    max_tokens: None,
                    tokens_so_far: d.tokens_so_far,
                    timings: None,
                    endpoint: None,
                };
                sink.turn(&record)?;
                d.history.push((m.role, m.content.clone()));
            }
        } else {
            for t in done {
                d.history.push((t.speaker, t.text.clone()));
                if !t.opening {
                    // Saturating: the resumed transcript and `initial_tokens` are input; a full count ends on budget.
                    d.tokens_so_far = d.tokens_so_far.saturating_add(u64::from(t.tokens));
                    d.totals_mut(t.speaker).add(t);
                }
            }
        }
        Ok(d)
    }

    fn totals_mut(&mut self, speaker: Speaker) -> &mut SpeakerTotals {
        match speaker {
            Speaker::Assistant => &mut self.totals.0,
            _ => &mut self.totals.1,
        }
    }

    /// The summary of the conversation so far, ending it for `reason`.
    #[must_use]
    pub fn summary(&self, stop_reason: EndReason, error: Option<String>) -> Summary {
        Summary {
            stop_reason,
            error,
            messages: u32::try_from(self.history.len()).unwrap_or(u32::MAX),
            total_tokens: self.tokens_so_far,
            wall_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            assistant: self.totals.0,
            user: self.totals.1,
        }
    }

    /// The forced prefix of `speaker`.
    #[must_use]
    pub fn prefix(&self, speaker: Speaker) -> &'c str {
        match speaker {
            Speaker::Assistant => &self.config.agent_prefix,
            _ => &self.config.user_prefix,
        }
    }

    /// The sampler of `speaker`.
    #[must_use]
    pub fn sampler(&self, speaker: Speaker) -> &'c crate::config::SamplerConfig {
        match speaker {
            Speaker::Assistant => &self.config.sampler,
            _ => self.config.user_sampler(),
        }
    }

    /// Plans the next turn: who speaks, with which prompt (fitted to that backend's context) and token limit.
    ///
    /// # Errors
    /// Never from the backends: a prompt that cannot be rendered or counted ends the conversation with
    /// [`EndReason::Error`]; only an index past `u32` would.
    pub fn next(&self, assistant: &dyn Backend, user: &dyn Backend) -> Result<Next> {
        let config = self.config;
        if self.tokens_so_far >= config.total_tokens {
            return Ok(Next::End(self.summary(EndReason::Budget, None)));
        }
        let speaker = match self.history.last() {
            Some((Speaker::Assistant, _)) => Speaker::User,
            _ => Speaker::Assistant,
        };
        let left = config.total_tokens - self.tokens_so_far;
        let max_tokens = config.turn_max_tokens.min(u32::try_from(left).unwrap_or(u32::MAX));
        let backend = if speaker == Speaker::Assistant { assistant } else { user };
        let prefix = self.prefix(speaker);
        let mut dropped = 0usize;
        loop {
            let messages = match speaker {
                Speaker::Assistant => self.history.iter().map(|(s, t)| ChatMessage::new(*s, t.clone())).collect(),
                _ => user_view(config, &self.history, dropped),
            };
            let prompt = match backend.render(&messages) {
                Ok(p) => p + prefix,
                Err(e) => return Ok(Next::End(self.summary(EndReason::Error, Some(format!("{e:#}"))))),
            };
            // A backend that cannot count (an HTTP tokenize endpoint that kept failing) ends this conversation only.
            let n = match backend.count_tokens(&prompt) {
                Ok(n) => n,
                Err(e) => return Ok(Next::End(self.summary(EndReason::Error, Some(format!("{e:#}"))))),
            };
            if u64::from(n) + u64::from(max_tokens) <= u64::from(backend.n_ctx()) {
                let index = u32::try_from(self.history.len())?;
                return Ok(Next::Generate(TurnPlan {
                    index,
                    speaker,
                    prompt,
                    max_tokens,
                    seed: turn_seed(self.seed, index),
                    dropped: u32::try_from(dropped)?,
                }));
            }
            if speaker == Speaker::User && dropped + 1 < window_len(config, &self.history) {
                dropped += 1;
                continue;
            }
            return Ok(Next::End(self.summary(EndReason::ContextFull, None)));
        }
    }

    /// Records the outcome of a planned turn. Returns the summary when the conversation ends here (backend error,
    /// Ctrl-C, context full); otherwise `None` and [`Dialogue::next`] goes on.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn finish(
        &mut self,
        plan: TurnPlan,
        generated: Result<Generation>,
        sink: &mut dyn Sink,
    ) -> Result<Option<Summary>> {
        let g = match generated {
            Ok(g) => g,
            Err(e) if e.is::<Interrupted>() => return Ok(Some(self.summary(EndReason::Interrupted, None))),
            Err(e) => return Ok(Some(self.summary(EndReason::Error, Some(format!("{e:#}"))))),
        };
        if g.stop_reason == StopReason::ContextFull && g.tokens == 0 {
            return Ok(Some(self.summary(EndReason::ContextFull, None)));
        }
        // A server's count is input too (it may pass `max_tokens`): saturate rather than overflow.
        self.tokens_so_far = self.tokens_so_far.saturating_add(u64::from(g.tokens));
        let prefix = self.prefix(plan.speaker);
        let text = format!("{prefix}{}", g.text);
        let record = TurnRecord {
            index: plan.index,
            speaker: plan.speaker,
            text: text.clone(),
            prefix: prefix.to_string(),
            opening: false,
            tokens: g.tokens,
            prompt_tokens: g.prompt_tokens,
            prompt_tokens_evaluated: g.prompt_tokens_evaluated,
            dropped_messages: plan.dropped,
            stop_reason: Some(g.stop_reason),
            max_tokens: Some(plan.max_tokens),
            tokens_so_far: self.tokens_so_far,
            timings: Some(Timings {
                prompt_ms: g.prompt_ms,
                generation_ms: g.generation_ms,
                tokens_per_s: if g.generation_ms > 0.0 { f64::from(g.tokens) * 1000.0 / g.generation_ms } else { 0.0 },
            }),
            endpoint: g.endpoint,
        };
        self.totals_mut(plan.speaker).add(&record);
        sink.turn(&record)?;
        self.history.push((plan.speaker, text));
        if g.stop_reason == StopReason::ContextFull {
            return Ok(Some(self.summary(EndReason::ContextFull, None)));
        }
        Ok(None)
    }
}

/// Runs (or resumes) one conversation to its end. `done` holds turns already in the transcript (for resume; empty
/// for a new conversation, in which case the opening messages are emitted first).
///
/// # Errors
/// Only when the sink fails. Backend failures (rendering, counting, generating) end the conversation with
/// [`EndReason::Error`]; Ctrl-C with [`EndReason::Interrupted`].
pub fn run_conversation(
    config: &Config,
    roles: &mut Roles<'_>,
    seed: u32,
    done: &[TurnRecord],
    sink: &mut dyn Sink,
    cancel: &AtomicBool,
) -> Result<Summary> {
    let mut dialogue = Dialogue::start(config, seed, done, sink)?;
    loop {
        let plan = match dialogue.next(&*roles.assistant, &*roles.user)? {
            Next::End(summary) => return Ok(summary),
            Next::Generate(plan) => plan,
        };
        sink.prompt(plan.index, plan.speaker, &plan.prompt)?;
        sink.turn_started(plan.speaker, dialogue.prefix(plan.speaker));
        let backend: &mut dyn Backend =
            if plan.speaker == Speaker::Assistant { &mut *roles.assistant } else { &mut *roles.user };
        let request = GenRequest {
            prompt: &plan.prompt,
            max_tokens: plan.max_tokens,
            sampler: dialogue.sampler(plan.speaker),
            seed: plan.seed,
            cancel,
        };
        let speaker = plan.speaker;
        let generated = backend.generate(&request, &mut |p: &str| sink.piece(speaker, p));
        if let Some(summary) = dialogue.finish(plan, generated, sink)? {
            return Ok(summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::scripted::Scripted;
    use crate::config::{OpeningMessage, Syntax};

    #[derive(Default)]
    struct Collect {
        turns: Vec<TurnRecord>,
        streamed: String,
    }

    impl Sink for Collect {
        fn turn_started(&mut self, _: Speaker, prefix: &str) {
            self.streamed.push_str(prefix);
        }
        fn piece(&mut self, _: Speaker, text: &str) {
            self.streamed.push_str(text);
        }
        fn turn(&mut self, record: &TurnRecord) -> Result<()> {
            self.turns.push(record.clone());
            Ok(())
        }
    }

    fn config() -> Config {
        let mut c =
            Config::from_str(include_str!("../tests/fixtures/broken-record-config.json"), Syntax::Json, "config.json")
                .unwrap();
        c.total_tokens = 40;
        c.turn_max_tokens = 6;
        c
    }

    fn go(c: &Config, a: &mut Scripted, u: &mut Scripted) -> (Summary, Collect) {
        let mut sink = Collect::default();
        let cancel = AtomicBool::new(false);
        let summary = run_conversation(c, &mut Roles { assistant: a, user: u }, 7, &[], &mut sink, &cancel).unwrap();
        (summary, sink)
    }

    #[test]
    fn alternates_with_prefixes_and_respects_the_budget() {
        let c = config();
        let mut a = Scripted::new(&[" one two three", " four five six seven eight nine ten"], 10_000);
        let mut u = Scripted::new(&["hi there\" more", "ok"], 10_000);
        let (summary, sink) = go(&c, &mut a, &mut u);
        assert_eq!(summary.stop_reason, EndReason::Budget);
        assert_eq!(summary.total_tokens, 40);
        let generated: Vec<_> = sink.turns.iter().filter(|t| !t.opening).collect();
        for (i, t) in generated.iter().enumerate() {
            let (speaker, prefix) =
                if i % 2 == 0 { (Speaker::Assistant, "Skye:") } else { (Speaker::User, "Mark: \"") };
            assert_eq!(t.speaker, speaker);
            assert!(t.text.starts_with(prefix), "{:?}", t.text);
        }
        assert_eq!(generated[1].stop_reason, Some(StopReason::Eos));
        assert_eq!(generated[2].stop_reason, Some(StopReason::MaxTokens));
        assert_eq!(generated.last().unwrap().tokens_so_far, 40);
        assert_eq!(sink.turns.iter().map(|t| u64::from(t.tokens)).sum::<u64>(), 40);
    }

    #[test]
    fn stop_strings_cut_the_turn() {
        let mut c = config();
        c.sampler.stop = vec!["\n".into()];
        let mut a = Scripted::new(&[" line one\nline two"], 10_000);
        let mut u = Scripted::new(&["ok"], 10_000);
        let (_, sink) = go(&c, &mut a, &mut u);
        let first = sink.turns.iter().find(|t| !t.opening).unwrap();
        assert_eq!(first.text, "Skye: line one");
        assert_eq!(first.stop_reason, Some(StopReason::StopString));
    }

    #[test]
    fn the_user_sees_its_window_with_roles_swapped() {
        let mut c = config();
        c.user_memory = 2;
        c.user_system = "You are Mark.".into();
        let mut a = Scripted::new(&[" a"], 10_000);
        let mut u = Scripted::new(&["u"], 10_000);
        let (_, _) = go(&c, &mut a, &mut u);
        let p = &u.prompts[0];
        // Window: the opening user message (now assistant) and the first generated assistant turn (now user).
        assert!(p.starts_with("<|im_start|>system\nYou are Mark.<|im_end|>\n<|im_start|>assistant\nMark: \"Hey Skye"));
        assert!(p.ends_with("<|im_start|>user\nSkye: a<|im_end|>\n<|im_start|>assistant\nMark: \""), "{p}");
        assert!(
            !p.contains("on a date. They flirt, but nothing more. Skye loves"),
            "the assistant's system prompt leaked"
        );
    }

    #[test]
    fn the_user_window_shrinks_to_fit_its_context_and_records_it() {
        let mut c = config();
        c.conversation = vec![OpeningMessage { role: Speaker::User, content: "w ".repeat(30) }];
        c.user_system = "Be Mark.".into();
        c.turn_max_tokens = 4;
        c.total_tokens = 12;
        let mut a = Scripted::new(&[" a b"], 10_000);
        let mut u = Scripted::new(&["x"], 20);
        let (summary, sink) = go(&c, &mut a, &mut u);
        let user_turn = sink.turns.iter().find(|t| !t.opening && t.speaker == Speaker::User).unwrap();
        assert_eq!(user_turn.dropped_messages, 1);
        assert!(user_turn.prompt_tokens + 4 <= 20);
        assert_eq!(summary.stop_reason, EndReason::Budget);
    }

    #[test]
    fn a_prompt_that_cannot_fit_ends_with_context_full() {
        let c = config();
        let mut a = Scripted::new(&[" a"], 30);
        let mut u = Scripted::new(&["u"], 10_000);
        let (summary, sink) = go(&c, &mut a, &mut u);
        assert_eq!(summary.stop_reason, EndReason::ContextFull);
        assert!(sink.turns.iter().all(|t| t.opening));
    }

    /// #15: a resumed transcript and its config are input. Turns that carry the count past `u64` end the
    /// conversation on its budget instead of overflowing.
    #[test]
    fn a_resume_past_u64_tokens_ends_on_the_budget() {
        let mut c = config();
        c.initial_tokens = u64::MAX - 1;
        c.total_tokens = u64::MAX;
        c.validate().unwrap();
        let mut sink = Collect::default();
        Dialogue::start(&c, 7, &[], &mut sink).unwrap();
        let mut done = sink.turns.clone();
        let mut turn = done.last().unwrap().clone();
        turn.index += 1;
        turn.speaker = Speaker::Assistant;
        turn.opening = false;
        turn.tokens = 5;
        done.push(turn);
        let mut a = Scripted::new(&[" a"], 10_000);
        let mut u = Scripted::new(&["u"], 10_000);
        let cancel = AtomicBool::new(false);
        let mut roles = Roles { assistant: &mut a, user: &mut u };
        let summary = run_conversation(&c, &mut roles, 7, &done, &mut sink, &cancel).unwrap();
        assert_eq!((summary.stop_reason, summary.total_tokens), (EndReason::Budget, u64::MAX));
    }

    /// #15: `user_memory` is any usize in a config; one at the top of usize (or too large to allocate) means the
    /// whole history, not an overflow or a capacity panic.
    #[test]
    fn issue_15_a_huge_user_memory_sees_the_whole_history() {
        let text = include_str!("../tests/fixtures/broken-record-config.json")
            .replace("\"user_memory\": 9", &format!("\"user_memory\": {}", usize::MAX));
        let mut c = Config::from_str(&text, Syntax::Json, "config.json").unwrap();
        assert_eq!(c.user_memory, usize::MAX);
        c.total_tokens = 40;
        c.turn_max_tokens = 6;
        for memory in [usize::MAX, usize::MAX / 64] {
            c.user_memory = memory;
            let mut a = Scripted::new(&[" a"], 10_000);
            let mut u = Scripted::new(&["u"], 10_000);
            let (summary, _) = go(&c, &mut a, &mut u);
            assert_eq!(summary.stop_reason, EndReason::Budget);
        }
    }

    #[test]
    fn turn_seeds_differ() {
        assert_ne!(turn_seed(1, 2), turn_seed(2, 1));
        assert_eq!(turn_seed(5, 5), turn_seed(5, 5));
    }
}
