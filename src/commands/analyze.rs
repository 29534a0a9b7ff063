//! `parrot analyze`: the I/O shell around `analysis`. It lets `analysis::dir` analyze every PATH (in parallel,
//! reusing and saving `analysis.json` beside run folders), has `analysis::render` render one of three outputs (a
//! table, JSON, CSV) and writes it to stdout or `--out`. Only [`run`] writes.
//!
//! With `--judge`/`--judge-url` (see [`crate::analysis::judge`]) the folder pass keeps the conversations' text,
//! every folder is judged (from its cache where it can be), its analysis is saved with the updated cache before
//! the verdicts are applied (so `analysis.json` keeps the lexical detections and the cache apart), and a line on
//! stderr counts the windows served from the cache and inferred.
//!
//! A bad file never stops the others: it is reported as `PATH: what is wrong` on stderr, and the exit code is 1
//! at the end. A PATH that does not exist is a mistake on the command line instead: one line naming it, exit 2,
//! nothing analyzed or printed.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::analysis::dir::{analyze_groups, groups, AnalyzeOptions, DirAnalysis};
use crate::analysis::judge::{self, JudgeCounts, JudgeEngine};
use crate::analysis::render::{render_csv, render_json, render_table};
use crate::cli::{AnalyzeArgs, GlobalArgs};

/// Resolves and loads the `--embed` model.
#[cfg(feature = "llama")]
fn open_embedder(global: &GlobalArgs, spec: &str) -> Result<std::sync::Arc<dyn crate::analysis::embed::Embedder>> {
    let opts = crate::models::ResolveOptions { quiet: global.quiet, ..Default::default() };
    let path = crate::models::resolve_model(spec, &opts).context("--embed")?;
    let e = crate::backend::embed::LlamaEmbedder::load(&path, spec, None, global.verbose)?;
    Ok(std::sync::Arc::new(e))
}

/// Without llama.cpp there is nothing to embed with.
#[cfg(not(feature = "llama"))]
fn open_embedder(_: &GlobalArgs, _: &str) -> Result<std::sync::Arc<dyn crate::analysis::embed::Embedder>> {
    bail!("--embed needs llama.cpp: this parrot was built without the 'llama' feature; rebuild with it (the default)")
}

/// Runs `parrot analyze`.
///
/// # Errors
/// When a PATH does not exist or the output cannot be written. Bad transcripts are not errors: they are reported and make the exit code 1.
pub fn run(global: &GlobalArgs, args: AnalyzeArgs) -> Result<ExitCode> {
    if let Some(missing) = args.paths.iter().find(|p| !p.exists()) {
        bail!("'{}': no such file or folder; pass transcript files or run folders", missing.display());
    }
    if let Some(b) = &args.baseline {
        if !args.paths.contains(b) {
            bail!("--baseline '{}' is not one of the PATHs given; pass one of them as given", b.display());
        }
    }
    let mut engine = judge_engine(global, &args)?;
    let options = AnalyzeOptions {
        forced: args.format,
        reuse_saved: !args.recompute,
        // With a judge, each folder is saved once judged (its cache updated).
        save: !args.no_save && engine.is_none(),
        keep_text: engine.is_some(),
        embedder: args.embed.as_deref().map(|m| open_embedder(global, m)).transpose()?,
        save_anywhere: args.save,
    };
    let groups = groups(&args.paths);
    let (analyzed, mut warnings) = analyze_groups(&groups, &options);
    let mut counts = JudgeCounts::default();
    let mut dirs: Vec<DirAnalysis> = Vec::with_capacity(analyzed.len());
    for (group, mut a) in groups.iter().zip(analyzed) {
        if let Some(engine) = engine.as_mut() {
            let judgement = judge::judge_dir(&mut a.analysis, &a.texts, engine.as_mut());
            counts.cached += judgement.counts.cached;
            counts.inferred += judgement.counts.inferred;
            if !args.no_save {
                warnings.extend(group.save_beside(&a.analysis, args.save));
            }
            judge::apply_dir(&mut a.analysis, &a.texts, judgement);
        }
        // The cache is analysis.json's, not part of the output.
        a.analysis.judge_cache.clear();
        dirs.push(a.analysis);
    }
    // The folder analysis labels each folder as given on the command line.
    let baseline = args
        .baseline
        .as_ref()
        .and_then(|b| dirs.iter().position(|d| std::path::Path::new(&d.dir) == b.as_path()))
        .unwrap_or(0);
    let mut stderr = std::io::stderr().lock();
    let mut failed = false;
    for d in &dirs {
        for e in &d.errors {
            failed = true;
            writeln!(stderr, "{}: {}", e.path, e.error)?;
        }
    }
    for w in &warnings {
        writeln!(stderr, "warning: {w}")?;
    }
    for c in dirs.iter().flat_map(|d| &d.conversations) {
        for w in &c.warnings {
            writeln!(stderr, "warning: {}: {w}", c.source)?;
        }
    }

    if let Some(e) = &engine {
        if !global.quiet {
            writeln!(
                stderr,
                "judge {}: {} window(s) served from the cache, {} judged now",
                e.model_id(),
                counts.cached,
                counts.inferred
            )?;
        }
    }
    let rendered = if args.json {
        render_json(&dirs, baseline)?
    } else if args.csv {
        render_csv(&dirs)
    } else {
        render_table(&dirs, baseline)
    };
    match &args.out {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("could not write the analysis to '{}'", path.display()))?,
        None => std::io::stdout().lock().write_all(rendered.as_bytes()).context("could not write to stdout")?,
    }
    if failed && !global.quiet {
        let n: usize = dirs.iter().map(|d| d.errors.len()).sum();
        writeln!(stderr, "{n} file(s) could not be analyzed")?;
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The judge `--judge`/`--judge-url` name, if any: a GGUF (a registry name is fetched on first use) checked before
/// anything is analyzed, or a server connected to.
fn judge_engine(global: &GlobalArgs, args: &AnalyzeArgs) -> Result<Option<Box<dyn JudgeEngine>>> {
    if let Some(url) = &args.judge_url {
        let key = std::env::var(&args.judge_api_key_env).ok();
        let judge = crate::backend::judge::HttpJudge::connect(url, args.judge_flavor, args.judge_template.clone(), key)
            .context("--judge-url")?;
        return Ok(Some(Box::new(judge)));
    }
    let Some(spec) = &args.judge else { return Ok(None) };
    #[cfg(feature = "llama")]
    {
        let opts = crate::models::ResolveOptions { quiet: global.quiet, ..Default::default() };
        let path = crate::models::resolve_model(spec, &opts).context("--judge")?;
        let judge = crate::backend::judge::LlamaJudge::new(&path, None, None, global.verbose)?;
        Ok(Some(Box::new(judge)))
    }
    #[cfg(not(feature = "llama"))]
    {
        let _ = (global, spec);
        bail!("--judge needs the in-process backend, and this parrot was built without the `llama` feature: rebuild with default features, or use --judge-url")
    }
}
