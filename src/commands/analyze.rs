//! `parrot analyze`: the I/O shell around `analysis`. It lets `analysis::dir` analyze every PATH (in parallel,
//! reusing and saving `analysis.json` beside run folders), has `analysis::render` render one of three outputs (a
//! table, JSON, CSV) and writes it to stdout or `--out`. Only [`run`] writes.
//!
//! A bad file never stops the others: it is reported as `PATH: what is wrong` on stderr, and the exit code is 1
//! at the end. A PATH that does not exist is a mistake on the command line instead: one line naming it, exit 2,
//! nothing analyzed or printed.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::analysis::dir::{analyze_paths_with, AnalyzeOptions};
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
    let options = AnalyzeOptions {
        forced: args.format,
        reuse_saved: !args.recompute,
        save: !args.no_save,
        embedder: args.embed.as_deref().map(|m| open_embedder(global, m)).transpose()?,
        save_anywhere: args.save,
        ..AnalyzeOptions::default()
    };
    if let Some(b) = &args.baseline {
        if !args.paths.contains(b) {
            bail!("--baseline '{}' is not one of the PATHs given; pass one of them as given", b.display());
        }
    }
    let (dirs, warnings) = analyze_paths_with(&args.paths, &options);
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
