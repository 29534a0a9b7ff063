//! The one conversation loop every backend runs: take the next conversation from the queue, run it to its end
//! through [`run_conversation`], write its summary, report it. [`Sequential`] does that with one pair of backends
//! (in-process, HTTP, or one of each), streaming the text; the HTTP workers call [`run_one`] on their own threads.

use anyhow::Result;

use super::backends::OpenBackend;
use super::folder::OpenConversation;
use super::sink::{cancel_flag, report};
use super::{Outcome, Queue, Queues, Scheduler};
use crate::backend::Backend;
use crate::conversation::{run_conversation, Roles};
use crate::settings::Console;

/// One conversation after another on one pair of backends.
pub struct Sequential<'a> {
    /// The assistant's backend.
    pub assistant: OpenBackend<'a>,
    /// The user's backend.
    pub user: OpenBackend<'a>,
    /// Whether to stream the text to stdout.
    pub stream: bool,
}

impl Scheduler for Sequential<'_> {
    fn run(&mut self, queues: &Queues<'_, '_>, console: &Console) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        let (assistant, user) = (self.assistant.backend(), self.user.backend());
        while let Some(next) = queues.next(assistant, user, console, self.stream) {
            let (queue, opened) = next?;
            run_one(queue, opened, assistant, user, &mut outcome)?;
            if outcome.interrupted {
                break;
            }
        }
        Ok(outcome)
    }
}

/// Runs one opened conversation to its end on these backends and reports it into `outcome`.
///
/// # Errors
/// When its transcript cannot be written (a backend's failure ends the conversation with `error` instead).
pub fn run_one(
    queue: &Queue<'_>,
    mut c: OpenConversation,
    assistant: &mut dyn Backend,
    user: &mut dyn Backend,
    outcome: &mut Outcome,
) -> Result<()> {
    assistant.reset();
    user.reset();
    let mut roles = Roles { assistant, user };
    let summary = run_conversation(&queue.settings().config, &mut roles, c.seed, &c.done, &mut c.sink, cancel_flag())?;
    c.sink.finish(&summary)?;
    report(&c.path, &summary, outcome);
    Ok(())
}
