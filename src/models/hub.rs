//! Downloading from the Hugging Face hub through `hf-hub` 1.0, with a progress bar.
//!
//! Files land in the hub's own cache layout, so other Hugging Face tools share them: hf-hub streams into
//! `blobs/<etag>.incomplete`, renames it when the transfer ends, and links it from `snapshots/<commit>/`; parrot
//! then checks the file (`verify_hub_file`) and removes it if it fails, so a corrupt file is never found as if
//! complete. A transfer that breaks off mid-body is started over (hf-hub itself retries only the request).
//! The boundary: choosing between the hub and PyPI, and the offline rule, are `fetch`'s; finding an already
//! cached file is `cache`'s.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use super::download::{check_file, download_bar, sha256_file, status};
use super::registry::is_sha256;
use super::ModelEntry;

/// How many times a transfer that breaks off mid-body is started over (hf-hub itself retries only the request).
const HUB_ATTEMPTS: usize = 3;

struct BarProgress(ProgressBar);

impl hf_hub::progress::ProgressHandler for BarProgress {
    fn on_progress(&self, event: &hf_hub::progress::ProgressEvent) {
        use hf_hub::progress::{DownloadEvent, ProgressEvent};
        let ProgressEvent::Download(event) = event else { return };
        match event {
            DownloadEvent::Start { total_bytes, .. } => {
                self.0.reset();
                self.0.set_length(*total_bytes);
            }
            DownloadEvent::Progress { files } => {
                for f in files {
                    if f.total_bytes > 0 {
                        self.0.set_length(f.total_bytes);
                    }
                    self.0.set_position(f.bytes_completed);
                }
            }
            DownloadEvent::AggregateProgress { bytes_completed, total_bytes, .. } => {
                self.0.set_length(*total_bytes);
                self.0.set_position(*bytes_completed);
            }
            DownloadEvent::Complete => {}
        }
    }
}

/// Whether a hub error means the network (or the endpoint) could not be reached at all.
fn is_unreachable(err: &hf_hub::HFError) -> bool {
    matches!(err, hf_hub::HFError::Request { source, .. } if source.is_connect() || source.is_timeout())
}

/// Whether a hub error is a transfer that broke off after it started, worth starting over.
fn is_interrupted(err: &hf_hub::HFError) -> bool {
    matches!(err, hf_hub::HFError::Request { source, .. } if !source.is_connect() && !source.is_builder())
}

/// Downloads `entry`'s file into the hub cache `hub_dir` and checks it; returns its snapshot path.
pub(super) fn fetch_from_hub(entry: &ModelEntry, hub_dir: &Path, quiet: bool) -> Result<PathBuf> {
    // hf-hub is async; parrot's callers are not. A scoped thread with its own runtime works whether or not the
    // caller is already inside a tokio runtime (where `block_on` would panic).
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("Could not start the download runtime")?;
                runtime.block_on(hub_download(entry, hub_dir, quiet))
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the download thread panicked")))
    })
}

async fn hub_download(entry: &ModelEntry, hub_dir: &Path, quiet: bool) -> Result<PathBuf> {
    let http = reqwest::Client::builder()
        .user_agent(format!("parrot/{}; hf-hub/1.0", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(120))
        .build()
        .context("Could not set up the HTTP client")?;
    let client = hf_hub::HFClient::builder()
        .client(http)
        .cache_dir(hub_dir)
        .retry_max_attempts(3)
        .retry_base_delay(Duration::from_millis(200))
        .build()
        .context("Could not set up the Hugging Face client (check HF_ENDPOINT)")?;
    let endpoint = client.endpoint().to_string();
    let (owner, name) = hf_hub::split_id(&entry.repo);
    let repo = client.model(owner, name);
    status(quiet, &format!("downloading {} ({}/{}) from {endpoint}", entry.name, entry.repo, entry.file));
    let bar = download_bar(entry.size.unwrap_or(0), quiet, &entry.name);
    let mut attempt = 1;
    let path = loop {
        let result = repo
            .download_file()
            .filename(entry.file.clone())
            .maybe_revision(entry.revision.clone())
            .progress(hf_hub::progress::Progress::new(BarProgress(bar.clone())))
            .send()
            .await;
        match result {
            Ok(path) => break path,
            Err(err) if is_unreachable(&err) => {
                bar.abandon();
                bail!("could not reach the Hugging Face hub at {endpoint}: {err}");
            }
            Err(err) if attempt < HUB_ATTEMPTS && is_interrupted(&err) => {
                attempt += 1;
                tracing::warn!("download of {} interrupted ({err}); attempt {attempt} of {HUB_ATTEMPTS}", entry.name);
                status(
                    quiet,
                    &format!("download interrupted ({err}); starting over, attempt {attempt} of {HUB_ATTEMPTS}"),
                );
            }
            Err(err) => {
                bar.abandon();
                return Err(anyhow::Error::new(err)
                    .context(format!("Could not download '{}' from '{}' at {endpoint}", entry.file, entry.repo)));
            }
        }
    };
    bar.finish_and_clear();
    verify_hub_file(entry, &path)?;
    Ok(path)
}

/// Checks a file hf-hub just placed in the cache. Its blob is named after the ETag, which for LFS files is the
/// content's SHA-256, so even entries without a registry checksum get one. A file that fails is removed (blob and
/// snapshot link) so that it is never found as if complete.
fn verify_hub_file(entry: &ModelEntry, path: &Path) -> Result<()> {
    let blob = fs::canonicalize(path).with_context(|| format!("Could not resolve '{}'", path.display()))?;
    let etag = blob.file_name().and_then(|n| n.to_str()).map(str::to_ascii_lowercase);
    let expected_sha = entry.sha256.clone().or(etag.filter(|e| is_sha256(e)));
    let size = fs::metadata(&blob).with_context(|| format!("Could not read '{}'", blob.display()))?.len();
    let actual_sha = match &expected_sha {
        Some(_) => Some(sha256_file(&blob)?),
        None => None,
    };
    let what = format!("the downloaded '{}'", entry.file);
    if let Err(err) = check_file(&what, size, actual_sha.as_deref(), entry.size, expected_sha.as_deref()) {
        let _ = fs::remove_file(path);
        let _ = fs::remove_file(&blob);
        return Err(err.context("removed the corrupt file from the cache; run the command again to retry"));
    }
    Ok(())
}
