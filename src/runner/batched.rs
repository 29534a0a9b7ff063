//! `--parallel P` in-process: P conversations advance together as sequences 0..P of one llama.cpp context per
//! model. Every step decodes one batch per model holding each active conversation's next token (or prompt chunk);
//! when a conversation ends, the queue's next one starts in its slot at once. Progress bars (one per slot and a
//! total with tokens/s and ETA) replace the streamed text.
//!
//! Ctrl-C: the turns in flight are dropped and every active transcript is closed after its last complete turn
//! with an `interrupted` summary.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::folder::OpenConversation;
use super::sink::{cancel_flag, report};
use super::{transcript_name, Outcome, Queue, Queues, Scheduler};
use crate::backend::llama::{LlamaBackend, SeqJob};
use crate::backend::{Backend, GenRequest};
use crate::conversation::{Dialogue, Next, Sink, TurnPlan};
use crate::settings::Console;
use crate::transcript::{EndReason, Speaker};

/// P conversations at once on two in-process models.
pub struct Batched<'a> {
    /// The assistant's model (loaded with at least `parallel` sequences).
    pub assistant: &'a mut LlamaBackend,
    /// The user's model (loaded with at least `parallel` sequences).
    pub user: &'a mut LlamaBackend,
    /// Slots.
    pub parallel: u32,
}

impl Scheduler for Batched<'_> {
    fn run(&mut self, queues: &Queues<'_, '_>, console: &Console) -> Result<Outcome> {
        run_parallel(console, queues, self.parallel as usize, self.assistant, self.user, cancel_flag())
    }
}

/// A conversation in one slot of the parallel scheduler, from one of the queues (a sweep cell).
struct Slot<'c> {
    queue: &'c Queue<'c>,
    opened: OpenConversation,
    dialogue: Dialogue<'c>,
    job: Option<(TurnPlan, SeqJob)>,
    bar: ProgressBar,
}

#[allow(clippy::too_many_lines)]
fn run_parallel(
    console: &Console,
    queues: &Queues<'_, '_>,
    parallel: usize,
    assistant: &mut LlamaBackend,
    user: &mut LlamaBackend,
    cancel: &AtomicBool,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    assistant.reset();
    user.reset();
    let bars = if console.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
    } else {
        MultiProgress::new()
    };
    let total = bars.add(ProgressBar::new(queues.total_tokens()));
    total.set_style(
        ProgressStyle::with_template("total {bar:30} {pos}/{len} tokens  {per_sec}  ETA {eta}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let slot_style = ProgressStyle::with_template("{prefix} {bar:20} {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut progress = CellProgress::new(queues);
    progress.show(&total);
    let mut slots: Vec<Option<Slot<'_>>> = (0..parallel).map(|_| None).collect();
    loop {
        let interrupted = cancel.load(Ordering::SeqCst);
        // Fill free slots, plan the next turn of every idle conversation, close finished ones.
        for (seq, slot) in slots.iter_mut().enumerate() {
            loop {
                if slot.is_none() && !interrupted {
                    let Some(next) = queues.next(&*assistant, &*user, console, false) else { break };
                    let (queue, mut opened) = next?;
                    let config = &queue.settings().config;
                    let dialogue = Dialogue::start(config, opened.seed, &opened.done, &mut opened.sink)?;
                    let bar = bars.insert_before(&total, ProgressBar::new(config.total_tokens));
                    bar.set_style(slot_style.clone());
                    bar.set_prefix(slot_name(queues, queue, opened.index));
                    *slot = Some(Slot { queue, opened, dialogue, job: None, bar });
                }
                let Some(s) = slot.as_mut() else { break };
                if interrupted {
                    // The turn in flight is dropped: the transcript ends after its last complete turn.
                    s.job = None;
                }
                if s.job.is_some() {
                    break;
                }
                let next = if interrupted {
                    Next::End(s.dialogue.summary(EndReason::Interrupted, None))
                } else {
                    s.dialogue.next(&*assistant, &*user)?
                };
                match next {
                    Next::Generate(plan) => {
                        s.opened.sink.prompt(plan.index, plan.speaker, &plan.prompt)?;
                        let request = GenRequest {
                            prompt: &plan.prompt,
                            max_tokens: plan.max_tokens,
                            sampler: s.dialogue.sampler(plan.speaker),
                            seed: plan.seed,
                            cancel,
                        };
                        let engine = if plan.speaker == Speaker::Assistant { &mut *assistant } else { &mut *user };
                        let job = engine.begin(seq, &request)?;
                        s.bar.set_message(format!("turn {}", plan.index));
                        s.job = Some((plan, job));
                        break;
                    }
                    Next::End(summary) => {
                        let mut s = slot.take().context("slot vanished")?;
                        s.opened.sink.finish(&summary)?;
                        bars.remove(&s.bar);
                        bars.suspend(|| report(&s.opened.path, &summary, &mut outcome));
                        progress.finished(queues, s.queue, &total);
                    }
                }
            }
        }
        if slots.iter().all(Option::is_none) {
            break;
        }
        // One decode per model over every conversation waiting on it.
        for (speaker, engine) in [(Speaker::Assistant, &mut *assistant), (Speaker::User, &mut *user)] {
            let mut jobs: Vec<&mut SeqJob> = slots
                .iter_mut()
                .filter_map(|s| s.as_mut().and_then(|s| s.job.as_mut()))
                .filter(|(plan, job)| plan.speaker == speaker && !job.is_done())
                .map(|(_, job)| job)
                .collect();
            if !jobs.is_empty() {
                engine.step(&mut jobs, &mut |_, _| {})?;
            }
        }
        // Record finished turns.
        for slot in &mut slots {
            let Some(s) = slot.as_mut() else { continue };
            if !s.job.as_ref().is_some_and(|(_, j)| j.is_done()) {
                continue;
            }
            let (plan, job) = s.job.take().context("job vanished")?;
            let generation = job.finish();
            let tokens = u64::from(generation.tokens);
            if let Some(summary) = s.dialogue.finish(plan, Ok(generation), &mut s.opened.sink)? {
                let s = slot.take().context("slot vanished")?;
                let mut sink = s.opened.sink;
                sink.finish(&summary)?;
                bars.remove(&s.bar);
                bars.suspend(|| report(&s.opened.path, &summary, &mut outcome));
                progress.finished(queues, s.queue, &total);
            } else {
                s.bar.set_position(s.opened.sink.tokens);
            }
            total.inc(tokens);
        }
    }
    total.finish_and_clear();
    Ok(outcome)
}

/// A slot's progress-bar name: the transcript, behind its cell's folder when several cells share the slots.
fn slot_name(queues: &Queues<'_, '_>, queue: &Queue<'_>, index: u32) -> String {
    let name = transcript_name(index);
    if queues.all().len() < 2 {
        return name;
    }
    let cell = queue.out().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{cell}/{name}")
}

/// Conversations finished so far, in all and per cell, shown on the total bar.
struct CellProgress {
    finished: Vec<u32>,
    sizes: Vec<u32>,
}

impl CellProgress {
    fn new(queues: &Queues<'_, '_>) -> Self {
        let sizes: Vec<u32> = queues.all().iter().map(Queue::len).collect();
        CellProgress { finished: vec![0; sizes.len()], sizes }
    }

    /// Counts one finished conversation of `queue`.
    fn finished(&mut self, queues: &Queues<'_, '_>, queue: &Queue<'_>, total: &ProgressBar) {
        if let Some(i) = queues.all().iter().position(|q| std::ptr::eq(q, queue)) {
            self.finished[i] = self.finished[i].saturating_add(1);
        }
        self.show(total);
    }

    /// `conversations 3/16` and, with several cells, `cells done 1/8` (counted in this run, resumed ones too).
    fn show(&self, total: &ProgressBar) {
        // As u64: `-n` is any u32, and a sweep has several cells of it.
        let done: u64 = self.finished.iter().map(|&n| u64::from(n)).sum();
        let all: u64 = self.sizes.iter().map(|&n| u64::from(n)).sum();
        let mut msg = format!("conversations {done}/{all}");
        if self.sizes.len() > 1 {
            let cells = self.finished.iter().zip(&self.sizes).filter(|(f, n)| f >= n).count();
            msg.push_str(&format!(", cells done {cells}/{}", self.sizes.len()));
        }
        total.set_message(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// #15: `-n` takes any u32; the counts of a sweep's cells add up past it (as u64) instead of overflowing.
    #[test]
    fn issue_15_conversation_counts_past_u32_add_up() {
        let progress = CellProgress { finished: vec![u32::MAX, 1], sizes: vec![u32::MAX, u32::MAX] };
        let bar = ProgressBar::hidden();
        progress.show(&bar);
        assert_eq!(bar.message(), "conversations 4294967296/8589934590, cells done 1/2");
    }
}
