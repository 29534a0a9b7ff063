//! The flags of `parrot analyze` (resolved into `analysis::dir::AnalyzeOptions` by the command).

use std::path::PathBuf;

use clap::Args;

use crate::analysis::Format;
use crate::backend::judge::JudgeFlavor;

/// Arguments of `parrot analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Transcripts to analyze, or folders of them (searched for *.jsonl, *.json and *.log, sub-folders included).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print everything as one JSON document instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print one CSV row per conversation instead of a table (for pandas and spreadsheets).
    #[arg(long)]
    pub csv: bool,
    /// Write the output to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Read every file in this format instead of detecting it: parrot, legacy_log, chat_json, chat_jsonl or
    /// sharegpt.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Do not save `analysis.json` beside the run folders analyzed.
    #[arg(long)]
    pub no_save: bool,
    /// Save `analysis.json` beside every folder analyzed, also one that parrot did not generate (without it, only
    /// folders holding run.json or sweep.json get one). A file of that name that parrot did not write is never
    /// replaced.
    #[arg(long, conflicts_with = "no_save")]
    pub save: bool,
    /// The folder the others are tested against (Fisher's exact and log-rank, Holm-adjusted): one of the PATHs
    /// as given. Default: the first.
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// Recompute even when a folder's saved `analysis.json` is up to date.
    #[arg(long)]
    pub recompute: bool,
    /// Embed every turn with this model (a GGUF path or registry name, run in-process through llama.cpp) and
    /// report a speaker re-telling the same moment in other words as `semantic_repetition`; the similarities
    /// appear in `--json` under `embedding`.
    #[arg(long, value_name = "MODEL")]
    pub embed: Option<String>,
    /// Have this model read every window of 5 messages and say, as JSON constrained by a grammar, what happens,
    /// its topics and whether the story advanced; windows that do not advance twice in a row are evidence for
    /// `semantic_repetition`. A GGUF file or a registry name, run in-process and greedily. Verdicts are cached in
    /// `analysis.json` by transcript, model and prompt version.
    #[arg(long, value_name = "MODEL", conflicts_with = "judge_url")]
    pub judge: Option<String>,
    /// Have the model served at this URL judge instead of --judge (see --judge-flavor).
    #[arg(long, value_name = "URL")]
    pub judge_url: Option<String>,
    /// How --judge-url is asked for constrained JSON: llama-server (`grammar`), openai (`response_format` with a
    /// JSON schema, and llama-cpp-python's `grammar`) or vllm (`guided_json`).
    #[arg(long, value_name = "FLAVOR", default_value = "llama-server", requires = "judge_url")]
    pub judge_flavor: JudgeFlavor,
    /// The chat template of --judge-url's model (a name such as `chatml`, or a file), when the server reports none.
    #[arg(long, value_name = "NAME|FILE", requires = "judge_url")]
    pub judge_template: Option<String>,
    /// The environment variable that holds --judge-url's API key, sent as a bearer token (never printed).
    #[arg(long, value_name = "NAME", default_value = "PARROT_API_KEY")]
    pub judge_api_key_env: String,
}
