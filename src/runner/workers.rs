//! `--parallel P` with both roles on HTTP servers: P threads, each with its own pair of backends (its own
//! connections), each running the one conversation loop ([`super::sequential::run_one`]) on the next conversation
//! the shared [`Queues`] hand out. Every conversation keeps its own transcript and seed (S + i), so a parallel run
//! writes exactly the files a sequential one would; the text is not streamed (it would interleave), the summary
//! lines still are.

use std::sync::Mutex;

use anyhow::{anyhow, Result};

use super::backends::open_http;
use super::sequential::run_one;
use super::{Outcome, Queues, Scheduler};
use crate::settings::{Console, Role};

/// P threads over HTTP.
pub struct Workers {
    /// Threads (conversations in flight).
    pub parallel: u32,
}

impl Scheduler for Workers {
    fn run(&mut self, queues: &Queues<'_, '_>, console: &Console) -> Result<Outcome> {
        let outcome = Mutex::new(Outcome::default());
        let worker = || -> Result<()> {
            let s = queues.settings();
            let mut assistant = open_http(s, Role::Assistant, false)?;
            let mut user = open_http(s, Role::User, false)?;
            let (assistant, user) = (assistant.backend(), user.backend());
            while let Some(next) = queues.next(assistant, user, console, false) {
                let (queue, opened) = next?;
                let mut mine = Outcome::default();
                run_one(queue, opened, assistant, user, &mut mine)?;
                outcome.lock().map_err(|_| anyhow!("run state poisoned"))?.add(mine);
            }
            Ok(())
        };
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.parallel).map(|_| scope.spawn(worker)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a conversation thread panicked"))))
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        outcome.into_inner().map_err(|_| anyhow!("run state poisoned"))
    }
}
