//! `parrot models list`: the registry's entries with what is cached, as an aligned table.
//!
//! Why a file of its own: [`render_list`] is a pure renderer, testable without caches; [`list_rows`] gathers its
//! input through the `cache` lookups. The boundary: writing the table to stdout is `commands::models`'s job.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use indicatif::HumanBytes;

use super::{cached_path, Bytes, CacheDirs, Registry};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
