//! Durable writes: the one place that knows how to put bytes on disk so that a crash (power loss, `kill -9`)
//! leaves either the old file or the new one, never a torn or empty one.
//!
//! A file that is replaced whole (`run.json`, `sweep.json`, `analysis.json`, a transcript rewritten for resume) is
//! written to a temporary file beside it, fsynced, renamed over the old one, and then the folder is fsynced so the
//! rename itself survives a crash ([`write_atomic`]). Files that grow line by line (transcripts) call
//! [`std::fs::File::sync_data`] after each complete turn instead (see `transcript::TranscriptWriter`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The temporary name `path` is written under before it is renamed into place: `NAME.partial` in the same folder
/// (a rename is atomic only within one file system).
#[must_use]
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Replaces `path` with `bytes` atomically and durably: temp file, fsync, rename, fsync of the folder.
///
/// # Errors
/// When the temporary file cannot be written or synced, or the rename fails; the message names the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = partial_path(path);
    let result = (|| -> Result<()> {
        let mut file = File::create(&tmp).with_context(|| format!("could not create '{}'", tmp.display()))?;
        file.write_all(bytes).with_context(|| format!("could not write '{}'", tmp.display()))?;
        file.sync_all().with_context(|| format!("could not sync '{}' to disk", tmp.display()))?;
        drop(file);
        commit_rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Renames the already-synced `tmp` over `path`, then fsyncs the folder so the new name is durable.
///
/// # Errors
/// When the rename fails.
pub fn commit_rename(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).with_context(|| format!("could not replace '{}'", path.display()))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Fsyncs a folder, so that files created or renamed in it survive a crash. Best effort: some file systems do not
/// allow opening a folder for syncing, and a failure there must not fail the run.
pub fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if let Ok(d) = OpenOptions::new().read(true).open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!partial_path(&path).exists());
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a folder: the rename fails, the folder and its content stay.
        let path = dir.path().join("sub");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"x").unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        assert!(path.join("keep").exists());
        assert!(!partial_path(&path).exists());
    }
}
