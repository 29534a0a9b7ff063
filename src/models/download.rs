//! What both download sources (`hub`, `pypi`) share: status lines and progress bars on stderr (both silenced by
//! `quiet`), streaming SHA-256, and [`check_file`], the size and checksum check every download passes before
//! parrot uses it. Apart from `fetch` so that the sources depend on it and `fetch` on them, never in a circle.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::Bytes;

/// Prints one status line on stderr, unless `quiet`.
pub(super) fn status(quiet: bool, line: &str) {
    if !quiet {
        eprintln!("{line}");
    }
}

/// A byte-counting progress bar named `name` (hidden when `quiet` or stderr is not a terminal).
pub(super) fn download_bar(len: Bytes, quiet: bool, name: &str) -> ProgressBar {
    let bar = crate::output::progress_bar(len, quiet);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30.cyan/blue}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_string());
    bar
}

/// Compares a file's actual size and SHA-256 with what the entry (or the hub) expects.
///
/// # Errors
/// A sentence naming the file, the expected and the actual value.
pub fn check_file(
    what: &str,
    actual_size: Bytes,
    actual_sha256: Option<&str>,
    expected_size: Option<Bytes>,
    expected_sha256: Option<&str>,
) -> Result<()> {
    if let Some(size) = expected_size {
        if size != actual_size {
            bail!("{what} has {actual_size} bytes, expected {size}: the download is incomplete or corrupt");
        }
    }
    if let (Some(expected), Some(actual)) = (expected_sha256, actual_sha256) {
        if !expected.eq_ignore_ascii_case(actual) {
            bail!("{what} has SHA-256 {actual}, expected {expected}: the download is corrupt");
        }
    }
    Ok(())
}

/// Streams a file through SHA-256.
pub(super) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("Could not open '{}'", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("Could not read '{}'", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_file_compares_size_and_checksum() {
        let sha = "a".repeat(64);
        assert!(check_file("f", 10, Some(&sha), Some(10), Some(&sha.to_uppercase())).is_ok());
        assert!(check_file("f", 10, None, None, None).is_ok());
        let e = check_file("f", 9, Some(&sha), Some(10), Some(&sha)).unwrap_err().to_string();
        assert!(e.contains("9 bytes, expected 10"), "{e}");
        let e = check_file("f", 10, Some(&"b".repeat(64)), Some(10), Some(&sha)).unwrap_err().to_string();
        assert!(e.contains("SHA-256"), "{e}");
    }

    #[test]
    fn hex_and_sha256_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
