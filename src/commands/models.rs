//! `parrot models`: the shell around [`crate::models`] — list the registry with what is cached, fetch a model,
//! print a model's path for scripts. All decisions live in `models`; this file only wires flags to it and writes.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{GlobalArgs, ModelsArgs, ModelsCommand};
use crate::models::{self, ResolveOptions, Source};

impl ModelsArgs {
    fn resolve_options(&self, global: &GlobalArgs, source: Source) -> ResolveOptions {
        ResolveOptions {
            registry: self.registry.clone(),
            offline: self.offline,
            // Progress bars would interleave with `-v` debug lines (STYLE.md §10), so they go under `-v` too.
            quiet: global.quiet || global.verbose > 0,
            source,
            ..ResolveOptions::default()
        }
    }
}

/// Runs `parrot models`.
///
/// # Errors
/// A bad registry file, an unknown name, an offline miss or a failed download.
pub fn run(global: &GlobalArgs, args: ModelsArgs) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match &args.command {
        ModelsCommand::List => {
            let opts = args.resolve_options(global, Source::Auto);
            let registry = models::load_registry(opts.registry.as_deref())?;
            let rows = models::list_rows(&registry, &opts.cache_dirs());
            stdout.write_all(models::render_list(&rows).as_bytes())?;
        }
        ModelsCommand::Fetch { name, source } => {
            let opts = args.resolve_options(global, *source);
            let registry = models::load_registry(opts.registry.as_deref())?;
            let Some(entry) = registry.get(name) else {
                anyhow::bail!("unknown model '{name}'; known models: {}", registry.names_line());
            };
            let cached = models::cached_path(&opts.cache_dirs(), entry);
            let path = models::ensure_model(&registry, entry, &opts)?;
            if !global.quiet {
                let verb = if cached.is_some() { "is already cached at" } else { "is cached at" };
                eprintln!("{name} {verb} {}", path.display());
            }
        }
        ModelsCommand::Path { name } => {
            let opts = args.resolve_options(global, Source::Auto);
            let path = models::resolve_model(name, &opts)?;
            writeln!(stdout, "{}", path.display())?;
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
