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
pub use folder::{transcript_name, FolderLock, Queue, Queues};
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

/// A way of running the conversations of a set of [`Queues`]: one after another, or several at once. Picked once
/// per group of jobs in [`run_group`], from the two roles' backends and `--parallel`.
pub trait Scheduler {
    /// Runs every conversation the queues hand out, until they are empty or Ctrl-C.
    ///
    /// # Errors
    /// When a transcript cannot be written or a backend fails in a way that is not one conversation's error.
    fn run(&mut self, queues: &Queues<'_, '_>, console: &Console) -> Result<Outcome>;
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
    /// Its sweep cell's name, for messages (`None` for `parrot run`).
    pub cell: Option<&'a str>,
}

/// Runs `parrot run`.
///
/// # Errors
/// An unwritable or locked output folder, an unknown or bad model, before anything is generated; later, a
/// transcript that cannot be written.
pub fn run(console: &Console, plan: &RunPlan) -> Result<Outcome> {
    let job = Job {
        settings: &plan.settings,
        out: &plan.out,
        options: &plan.options,
        invocation: &plan.invocation,
        cell: None,
    };
    run_group(console, std::slice::from_ref(&job), &mut Backends::default())
}

/// Runs `parrot sweep`. Consecutive cells that run on the same models (same files, context sizes, threads, servers:
/// [`backends::share_key`]) form one group, served by one set of `--parallel` slots: a slot freed in one cell takes
/// the next conversation of the next cell at once, so `-n 1 --parallel 8` over 8 cells runs 8 conversations at the
/// same time. Each cell keeps its own folder, `run.json`, transcripts and settings; the models are loaded once for
/// all cells that share them.
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
    let outs: Vec<std::path::PathBuf> = plan.cells.iter().map(|c| plan.root.join(&c.name)).collect();
    let jobs: Vec<Job<'_>> = plan
        .cells
        .iter()
        .zip(&outs)
        .map(|(cell, out)| Job {
            settings: &cell.settings,
            out,
            options: &plan.options,
            invocation: &plan.invocation,
            cell: Some(&cell.name),
        })
        .collect();
    let mut backends = Backends::default();
    let mut total = Outcome::default();
    let mut start = 0;
    while start < jobs.len() {
        let key = backends::share_key(jobs[start].settings);
        let len = jobs[start..].iter().take_while(|j| backends::share_key(j.settings) == key).count();
        let group = &jobs[start..start + len];
        if !console.quiet {
            let names: Vec<&str> = plan.cells[start..start + len].iter().map(|c| c.name.as_str()).collect();
            eprintln!(
                "sweep cells {}-{} of {} share one set of {} slot(s): {}",
                start + 1,
                start + len,
                jobs.len(),
                plan.options.parallel,
                names.join(", ")
            );
        }
        let outcome = run_group(console, group, &mut backends)?;
        total.add(outcome);
        start += len;
        if outcome.interrupted {
            break;
        }
    }
    Ok(total)
}

/// Runs jobs that share their models as one: lock every folder, resolve the models, open the backends once with
/// room for `--parallel` conversations, record each folder's `run.json`, pick the scheduler, run the queues.
///
/// # Errors
/// See [`run`].
pub fn run_group(console: &Console, jobs: &[Job<'_>], backends: &mut Backends) -> Result<Outcome> {
    let _locks: Vec<FolderLock> = jobs.iter().map(|j| FolderLock::acquire(j.out)).collect::<Result<_>>()?;
    let resolved: Vec<Settings> = jobs
        .iter()
        .map(|j| match j.cell {
            Some(cell) => backends::resolve_models(console, j.settings).with_context(|| format!("sweep cell {cell}")),
            None => backends::resolve_models(console, j.settings),
        })
        .collect::<Result<_>>()?;
    let first = resolved.first().context("no conversations to run")?;
    let conversations: u32 = jobs.iter().map(|j| j.options.conversations).fold(0, u32::saturating_add);
    let parallel = jobs.iter().map(|j| j.options.parallel).max().unwrap_or(1).min(conversations).max(1);
    let (assistant, user) = backends.pair(console, first, parallel)?;
    let mut queues = Vec::with_capacity(jobs.len());
    for (job, settings) in jobs.iter().zip(&resolved) {
        let config_json = serde_json::to_value(&settings.config)?;
        let mut fields = serde_json::Map::new();
        fields.insert("config".into(), config_json.clone());
        if let Some(endpoints) = endpoint_record(settings) {
            fields.insert("endpoints".into(), endpoints);
        }
        folder::write_record(&job.out.join("run.json"), fields, job.invocation)?;
        queues.push(Queue::new(job, settings, config_json)?);
    }
    let all = Queues::new(&queues)?;
    let mut scheduler = pick(assistant, user, parallel, console);
    let mut outcome = scheduler.run(&all, console)?;
    outcome.interrupted |= cancel_flag().load(Ordering::SeqCst);
    for queue in &queues {
        queue.report_retried();
    }
    Ok(outcome)
}

/// `run.json`'s `endpoints`: per HTTP role, its servers as `scheme://host:port` (never a credential, path or
/// query) with flavor and weight. `None` when both roles run in-process.
fn endpoint_record(s: &Settings) -> Option<serde_json::Value> {
    use crate::backend::http::fleet::endpoint_label;
    use crate::settings::{BackendSpec, Role};
    let mut out = serde_json::Map::new();
    for role in [Role::Assistant, Role::User] {
        if let BackendSpec::Http { endpoints, flavor } = &s.role(role).backend {
            let list: Vec<serde_json::Value> = endpoints
                .iter()
                .filter_map(|e| {
                    let label = endpoint_label(&e.url).ok()?;
                    let flavor = e.flavor.unwrap_or(*flavor).as_str();
                    Some(serde_json::json!({"endpoint": label, "flavor": flavor, "weight": e.weight}))
                })
                .collect();
            out.insert(role.as_str().into(), serde_json::Value::Array(list));
        }
    }
    (!out.is_empty()).then_some(serde_json::Value::Object(out))
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
        // Each worker thread gets its own connections to the fleets opened (and checked) here.
        (OpenBackend::Http(assistant, _), OpenBackend::Http(user, _)) if parallel > 1 => {
            Box::new(workers::Workers { parallel, assistant, user })
        }
        (assistant, user) => Box::new(sequential::Sequential { assistant, user, stream: !console.quiet }),
    }
}
