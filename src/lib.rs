//! parrot makes two LLMs talk to each other for hundreds of turns, then measures how, and when, the conversation
//! breaks down.
//!
//! Data flows one way, and each arrow is a module boundary:
//!
//! ```text
//! config ─▶ settings ─▶ conversation driver ⇄ backend ─▶ transcript (JSONL) ─▶ analysis ─▶ report
//! ```
//!
//! * [`config`] reads parrot's TOML or the original tool's `config.json` into one validated [`config::Config`].
//! * [`conversation`] is the pure turn-taking driver: who speaks, the user's memory window with roles swapped,
//!   token budgets and stop rules. It talks to a [`backend::Backend`] and knows nothing of files or terminals.
//! * [`chat_template`] renders Jinja chat templates (from GGUF metadata or `templates/`) with minijinja.
//! * [`backend`] holds the engines: in-process llama.cpp (feature `llama`) and the HTTP adapters.
//! * [`transcript`] is the JSONL format everything downstream reads.
//! * [`analysis`] finds loops and breaks; `report` renders them.
//! * [`cli`] declares the flags; [`settings`] resolves them with the config file into validated settings (no clap
//!   type goes further); [`runner`] runs a set of conversations into a run folder, on whichever backends the
//!   settings name, and owns the folder's guarantees (lock, durable writes, resume).
//! * [`commands`] are thin shells: parse → call → print; [`output`] alone decides colors, progress and quiet mode.

pub mod analysis;
pub mod backend;
pub mod chat_template;
pub mod cli;
pub mod commands;
pub mod config;
pub mod conversation;
pub mod durable;
pub mod gguf;
pub mod models;
pub mod output;
pub mod report;
pub mod runner;
pub mod settings;
pub mod transcript;

/// Version string with git commit and enabled features, embedded by `build.rs`.
pub const LONG_VERSION: &str = env!("PARROT_LONG_VERSION");

/// The CPU code of this build, embedded by `build.rs`: architecture, `target-cpu` (`default` unless RUSTFLAGS name
/// one, see docs/build.md) and the vector extensions llama.cpp's kernels were compiled with.
pub const CPU: &str = env!("PARROT_CPU");
