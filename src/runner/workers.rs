//! `--parallel P` with both roles on HTTP servers: P threads, each with its own pair of backends (its own
//! connections: [`HttpBackend::replica`] of the pair opened once, which shares the start-up probes and each role's
//! fleet state, so that all threads spread their requests over the same endpoints and see one taken out or put
//! back), each running the one conversation loop ([`super::sequential::run_one`]) on the next conversation the
//! shared [`Queues`] hand out. Every conversation keeps its own transcript and seed (S + i), so a parallel run
//! writes exactly the files a sequential one would; the text is not streamed (it would interleave), the summary
//! lines still are.

use std::sync::Mutex;

use anyhow::{anyhow, Result};

use super::sequential::run_one;
use super::{Outcome, Queues, Scheduler};
use crate::backend::http::HttpBackend;
use crate::settings::Console;

/// P threads over HTTP.
pub struct Workers {
    /// Threads (conversations in flight).
    pub parallel: u32,
    /// The assistant's backend, opened (and checked) once.
    pub assistant: Box<HttpBackend>,
    /// The user's backend, opened (and checked) once.
    pub user: Box<HttpBackend>,
}

impl Scheduler for Workers {
    fn run(&mut self, queues: &Queues<'_, '_>, console: &Console) -> Result<Outcome> {
        let outcome = Mutex::new(Outcome::default());
        let pairs: Vec<(HttpBackend, HttpBackend)> =
            (0..self.parallel).map(|_| Ok((self.assistant.replica()?, self.user.replica()?))).collect::<Result<_>>()?;
        let worker = |(mut assistant, mut user): (HttpBackend, HttpBackend)| -> Result<()> {
            while let Some(next) = queues.next(&assistant, &user, console, false) {
                let (queue, opened) = next?;
                let mut mine = Outcome::default();
                run_one(queue, opened, &mut assistant, &mut user, &mut mine)?;
                outcome.lock().map_err(|_| anyhow!("run state poisoned"))?.add(mine);
            }
            Ok(())
        };
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = pairs.into_iter().map(|pair| scope.spawn(|| worker(pair))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a conversation thread panicked"))))
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        outcome.into_inner().map_err(|_| anyhow!("run state poisoned"))
    }
}
