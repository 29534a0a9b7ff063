//! Running a set of conversations into a run folder: the part that `run` does once and `sweep` once per cell.
//!
//! The runner takes validated settings ([`crate::settings`]) and owns everything from there: it locks the folder,
//! records the command in `run.json`, opens each role's backend once ([`backends`]), picks one [`Scheduler`] and
//! hands it a [`Queue`] of conversations that it opens lazily, one at a time, as a slot frees up:
//!
//! * [`sequential`] — one conversation after another, streaming its text; the one conversation loop every engine
//!   runs (in-process, HTTP, or one of each). The HTTP workers below run it too.
//! * [`batched`] — `--parallel P` in-process: P conversations as sequences of one llama.cpp context per model,
//!   one decode per model per step, a freed slot refilled at once.
//! * [`workers`] — `--parallel P` over HTTP: P threads, each with its own pair of connections, each taking the
//!   next conversation when it finishes one.
//!
//! The run folder's guarantees ([`folder`]): one writer at a time (an OS lock), every complete turn fsynced before
//! the next begins, whole-file writes atomic, at most P (+ a few) transcripts open whatever `-n` is, finished
//! transcripts never rewritten, and conversations that ended in `error` retried on resume.

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};

use crate::settings::{Console, Invocation, RunOptions, RunPlan, Settings, SweepPlan};

pub mod backends;
#[cfg(feature = "llama")]
pub mod batched;
pub mod folder;
pub mod sequential;
pub mod sink;
pub mod workers;

pub use backends::Backends;
pub use folder::{transcript_name, FolderLock, Queue};
pub use sink::cancel_flag;

/// How a set of conversations ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Conversations that ended with an error.
    pub failures: u32,
    /// Whether Ctrl-C stopped it.
    pub interrupted: bool,
}

impl Outcome {
    /// 130 after Ctrl-C, 1 after failures, else 0.
    #[must_use]
    pub fn exit_code(self) -> ExitCode {
        if self.interrupted {
            ExitCode::from(130)
        } else if self.failures > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }

    /// Adds another set's outcome to this one.
    pub fn add(&mut self, other: Outcome) {
        self.failures += other.failures;
        self.interrupted |= other.interrupted;
    }
}

/// A way of running the conversations of a [`Queue`]: one after another, or several at once. Picked once per job
/// in [`run_job`], from the two roles' backends and `--parallel`.
pub trait Scheduler {
    /// Runs every conversation the queue hands out, until it is empty or Ctrl-C.
    ///
    /// # Errors
    /// When a transcript cannot be written or a backend fails in a way that is not one conversation's error.
    fn run(&mut self, queue: &Queue<'_>, console: &Console) -> Result<Outcome>;
}

/// One set of conversations to run into one folder.
pub struct Job<'a> {
    /// Resolved settings (models still as given: names are resolved when the job starts).
    pub settings: &'a Settings,
    /// The output folder.
    pub out: &'a std::path::Path,
    /// Count, parallelism, force, prompt log.
    pub options: &'a RunOptions,
    /// The command line to record in `run.json`.
    pub invocation: &'a Invocation,
}

/// Runs `parrot run`.
///
/// # Errors
/// An unwritable or locked output folder, an unknown or bad model, before anything is generated; later, a
/// transcript that cannot be written.
pub fn run(console: &Console, plan: &RunPlan) -> Result<Outcome> {
    let job = Job { settings: &plan.settings, out: &plan.out, options: &plan.options, invocation: &plan.invocation };
    run_job(console, &job, &mut Backends::default())
}

/// Runs `parrot sweep`: every cell's job in turn, the models loaded once for all cells that share them.
///
/// # Errors
/// As [`run`], for the sweep's root folder or any cell.
pub fn sweep(console: &Console, plan: &SweepPlan) -> Result<Outcome> {
    let _lock = FolderLock::acquire(&plan.root)?;
    let cells: Vec<serde_json::Value> =
        plan.cells.iter().map(|c| serde_json::json!({"name": c.name, "set": c.overrides})).collect();
    let mut fields = serde_json::Map::new();
    fields.insert("grid".into(), serde_json::to_value(&plan.axes)?);
    fields.insert("cells".into(), serde_json::Value::Array(cells));
    folder::write_record(&plan.root.join("sweep.json"), fields, &plan.invocation)?;
    let mut backends = Backends::default();
    let mut total = Outcome::default();
    for (i, cell) in plan.cells.iter().enumerate() {
        if !console.quiet {
            eprintln!("sweep cell {}/{}: {}", i + 1, plan.cells.len(), cell.name);
        }
        let out = plan.root.join(&cell.name);
        let job = Job { settings: &cell.settings, out: &out, options: &plan.options, invocation: &plan.invocation };
        let outcome = run_job(console, &job, &mut backends).with_context(|| format!("sweep cell {}", cell.name))?;
        total.add(outcome);
        if outcome.interrupted {
            break;
        }
    }
    Ok(total)
}

/// Runs one job: lock, record, open the backends, pick the scheduler, run the queue.
///
/// # Errors
/// See [`run`].
pub fn run_job(console: &Console, job: &Job<'_>, backends: &mut Backends) -> Result<Outcome> {
    let _lock = FolderLock::acquire(job.out)?;
    let settings = backends::resolve_models(console, job.settings)?;
    let parallel = job.options.parallel.min(job.options.conversations).max(1);
    let (assistant, user) = backends.pair(console, &settings, parallel)?;
    let config_json = serde_json::to_value(&settings.config)?;
    let mut fields = serde_json::Map::new();
    fields.insert("config".into(), config_json.clone());
    folder::write_record(&job.out.join("run.json"), fields, job.invocation)?;
    let queue = Queue::new(job, &settings, config_json)?;
    let mut scheduler = pick(assistant, user, parallel, console);
    let mut outcome = scheduler.run(&queue, console)?;
    outcome.interrupted |= cancel_flag().load(Ordering::SeqCst);
    queue.report_retried();
    Ok(outcome)
}

/// The one place a scheduler is chosen: several conversations at once when both roles can do that on the same
/// kind of backend (batched llama.cpp sequences, or HTTP workers), else one after another.
fn pick<'a>(
    assistant: backends::OpenBackend<'a>,
    user: backends::OpenBackend<'a>,
    parallel: u32,
    console: &Console,
) -> Box<dyn Scheduler + 'a> {
    use backends::OpenBackend;
    match (assistant, user) {
        #[cfg(feature = "llama")]
        (OpenBackend::Llama(assistant), OpenBackend::Llama(user)) if parallel > 1 => {
            Box::new(batched::Batched { assistant, user, parallel })
        }
        // Each worker thread opens its own connections; the pair opened here checked that the servers answer.
        (OpenBackend::Http(_), OpenBackend::Http(_)) if parallel > 1 => Box::new(workers::Workers { parallel }),
        (assistant, user) => Box::new(sequential::Sequential { assistant, user, stream: !console.quiet }),
    }
}
