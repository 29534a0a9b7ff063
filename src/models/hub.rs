//! Downloading from the Hugging Face hub through `hf-hub` (0.4, its tokio API), with a progress bar.
//!
//! Files land in the hub's own cache layout, so other Hugging Face tools share them: hf-hub streams into
//! `blobs/<etag>.sync.part` (resumable), renames it when the transfer ends, and links it from `snapshots/<commit>/`;
//! parrot then checks the file (`verify_hub_file`) and removes it if it fails, so a corrupt file is never found as
//! if complete. A transfer that breaks off mid-body is started over, resuming from what hf-hub committed.
//!
//! Why 0.4 and not hf-hub 1.0: 1.0 always links the Xet storage client, which forces reqwest's aws-lc TLS (a C
//! library built with cmake) and ~50 more crates into every cold build; plain `resolve/` downloads, all parrot
//! needs, work the same through 0.4 (see `docs/build.md`).
//!
//! What the hub answers is input: before hf-hub writes anything, a `HEAD` of the file checks that the commit and
//! ETag it will use as folder and file names are plain hex / token characters (a crafted `ETag: ../../x` must
//! never become a path). hf-hub's own client has no timeouts, so a watchdog ends a transfer that makes no progress
//! for [`STALL`].
//! The boundary: choosing between the hub and PyPI, and the offline rule, are `fetch`'s; finding an already
//! cached file is `cache`'s.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hf_hub::api::tokio::{ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};
use indicatif::ProgressBar;

use super::download::{check_file, download_bar, sha256_file, status};
use super::registry::is_sha256;
use super::ModelEntry;

/// How many times a transfer that breaks off mid-body is started over.
const HUB_ATTEMPTS: usize = 3;
/// The hub's address unless `HF_ENDPOINT` says otherwise (as in every Hugging Face tool).
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Connecting to the hub, and its answer to the metadata request.
const CONNECT: Duration = Duration::from_secs(20);
/// A transfer that receives no byte for this long is ended (and started over, up to [`HUB_ATTEMPTS`]).
const STALL: Duration = Duration::from_secs(120);

/// hf-hub's progress callbacks, drawn on parrot's bar; every callback also marks the time of the last progress.
#[derive(Clone)]
struct BarProgress {
    bar: ProgressBar,
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl BarProgress {
    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// How long since the last callback (or since the start).
    fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl hf_hub::api::tokio::Progress for BarProgress {
    async fn init(&mut self, size: usize, _filename: &str) {
        self.touch();
        self.bar.reset();
        self.bar.set_length(size as u64);
    }
    async fn update(&mut self, size: usize) {
        self.touch();
        self.bar.inc(size as u64);
    }
    async fn finish(&mut self) {
        self.touch();
    }
}

/// Whether a hub error means the network (or the endpoint) could not be reached at all.
fn is_unreachable(err: &reqwest::Error) -> bool {
    err.is_connect() || err.is_timeout()
}

/// Whether a hub error is a transfer that broke off after it started, worth starting over.
fn is_interrupted(err: &ApiError) -> bool {
    match err {
        ApiError::RequestError(e) => !e.is_connect() && !e.is_builder() && !e.is_status(),
        ApiError::IoError(_) => true,
        _ => false,
    }
}

/// An ETag or commit the hub sent, checked before hf-hub uses it as a file or folder name.
fn safe_name(value: &str, what: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value != "."
        && value != ".."
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !value.contains("..");
    if !ok {
        bail!("the hub sent an unusable {what} ({:?}); refusing to use it as a cache file name", truncate(value));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Downloads `entry`'s file into the hub cache `hub_dir` and checks it; returns its snapshot path.
pub(super) fn fetch_from_hub(entry: &ModelEntry, hub_dir: &Path, quiet: bool) -> Result<PathBuf> {
    // hf-hub is async; parrot's callers are not. A scoped thread with its own runtime works whether or not the
    // caller is already inside a tokio runtime (where `block_on` would panic). Dropping that runtime at the end
    // also ends any chunk task hf-hub spawned for a transfer the watchdog gave up on.
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

/// The token for private or gated repositories: `HF_TOKEN`, else the one `huggingface-cli login` saved.
fn token(hub_dir: &Path) -> Option<String> {
    if std::env::var_os("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some() {
        return std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty());
    }
    std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()).or_else(|| {
        let file = hub_dir.parent()?.join("token");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(fs::File::open(file).ok()?, 4096), &mut text).ok()?;
        Some(text.trim().to_string()).filter(|t| !t.is_empty())
    })
}

/// `HEAD` of the file: that the hub answers at all, and that the names hf-hub will build paths from are safe.
async fn check_metadata(url: &str, token: Option<&str>) -> std::result::Result<Result<()>, reqwest::Error> {
    let client = reqwest::Client::builder()
        .user_agent(format!("parrot/{}", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT)
        .timeout(CONNECT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut request = client.head(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    if !(status.is_success() || status.is_redirection()) {
        return Ok(Err(anyhow::anyhow!("the hub answered {status} for {url}")));
    }
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let etag = header("x-linked-etag").or_else(|| header("etag")).unwrap_or_default().replace('"', "");
    let etag = etag.trim_start_matches("W/").to_string();
    let commit = header("x-repo-commit").unwrap_or_default();
    Ok(safe_name(&etag, "ETag").and_then(|()| safe_name(&commit, "commit")))
}

async fn hub_download(entry: &ModelEntry, hub_dir: &Path, quiet: bool) -> Result<PathBuf> {
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .map(|e| e.trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let token = token(hub_dir);
    let api = ApiBuilder::new()
        .with_endpoint(endpoint.clone())
        .with_cache_dir(hub_dir.to_path_buf())
        .with_token(token.clone())
        .with_progress(false)
        .with_user_agent("parrot", env!("CARGO_PKG_VERSION"))
        .build()
        .context("Could not set up the Hugging Face client (check HF_ENDPOINT)")?;
    let repo = match &entry.revision {
        Some(rev) => Repo::with_revision(entry.repo.clone(), RepoType::Model, rev.clone()),
        None => Repo::new(entry.repo.clone(), RepoType::Model),
    };
    let repo = api.repo(repo);
    let url = repo.url(&entry.file);
    status(quiet, &format!("downloading {} ({}/{}) from {endpoint}", entry.name, entry.repo, entry.file));
    match check_metadata(&url, token.as_deref()).await {
        Err(err) if is_unreachable(&err) => bail!("could not reach the Hugging Face hub at {endpoint}: {err}"),
        Err(err) => {
            return Err(anyhow::Error::new(err)
                .context(format!("Could not download '{}' from '{}' at {endpoint}", entry.file, entry.repo)))
        }
        Ok(checked) => checked
            .with_context(|| format!("Could not download '{}' from '{}' at {endpoint}", entry.file, entry.repo))?,
    }
    let bar = download_bar(entry.size.unwrap_or(0), quiet, &entry.name);
    let mut attempt = 1;
    let path = loop {
        let progress = BarProgress { bar: bar.clone(), start: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) };
        let watch = progress.clone();
        let transfer = repo.download_with_progress(&entry.file, progress);
        let result = tokio::select! {
            result = transfer => result.map_err(Some),
            () = async {
                while watch.idle() < STALL {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            } => Err(None),
        };
        let err = match result {
            Ok(path) => break path,
            Err(err) => err,
        };
        let retry = err.as_ref().is_none_or(is_interrupted);
        let what = match &err {
            Some(err) => err.to_string(),
            None => format!("no data for {} s", STALL.as_secs()),
        };
        if let Some(ApiError::RequestError(e)) = &err {
            if is_unreachable(e) && !e.is_timeout() {
                bar.abandon();
                bail!("could not reach the Hugging Face hub at {endpoint}: {e}");
            }
        }
        if attempt < HUB_ATTEMPTS && retry {
            attempt += 1;
            tracing::warn!("download of {} interrupted ({what}); attempt {attempt} of {HUB_ATTEMPTS}", entry.name);
            status(
                quiet,
                &format!("download interrupted ({what}); starting over, attempt {attempt} of {HUB_ATTEMPTS}"),
            );
            continue;
        }
        bar.abandon();
        bail!("Could not download '{}' from '{}' at {endpoint}: {what}", entry.file, entry.repo);
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
