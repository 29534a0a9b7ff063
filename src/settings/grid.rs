//! A sweep's grid, pure: `--grid KEY=V1,V2,...` axes, their cross product, and each cell's folder name.
//!
//! A cell's folder is named by its settings so that `ls` reads as a table of contents: the overrides joined with
//! `,`, characters outside `[A-Za-z0-9._=+,-]` replaced by `_`. Two guarantees a file system needs: names are
//! unique (two cells whose names would collide after replacement both get a hash of their full overrides), and at
//! most 255 bytes (a longer name is cut and ends with that hash). The full overrides are in `sweep.json`.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use sha2::{Digest, Sha256};

/// One axis: a key and its values (raw text, as `--set` takes them).
pub type Axis = (String, Vec<String>);

/// Splits `a,b,[1,2],"x,y"` on the commas that are not inside brackets or quotes.
fn split_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut current) = (0i32, false, String::new());
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '[' | '{' if !quoted => depth += 1,
            ']' | '}' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(std::mem::take(&mut current).trim().to_string());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current.trim().to_string());
    out
}

/// The most cells a sweep runs. Every cell's settings are resolved before anything runs and each cell gets its
/// folder, so a grid is refused above this before its cross product is built (2^64 cells would exhaust memory).
pub const MAX_GRID_CELLS: u64 = 100_000;

/// Parses `--grid` arguments.
///
/// # Errors
/// A malformed axis, an empty value, a key given twice, or more than [`MAX_GRID_CELLS`] cells.
pub fn parse_grid(grid: &[String]) -> Result<Vec<Axis>> {
    let mut axes: Vec<Axis> = Vec::new();
    for item in grid {
        let (key, values) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("--grid '{item}': expected KEY=V1,V2,..., e.g. sampler.repeat_penalty=1.0,1.1"))?;
        let key = key.trim().to_string();
        let values = split_values(values);
        if key.is_empty() || values.iter().any(String::is_empty) {
            bail!("--grid '{item}': the key and every value must be non-empty");
        }
        if axes.iter().any(|(k, _)| *k == key) {
            bail!("--grid '{item}': the key '{key}' is already an axis");
        }
        axes.push((key, values));
    }
    let cells = axes.iter().try_fold(1u64, |n, (_, values)| n.checked_mul(u64::try_from(values.len()).ok()?));
    if cells.is_none_or(|n| n > MAX_GRID_CELLS) {
        let count = cells.map_or_else(|| format!("more than {}", u64::MAX), |n| n.to_string());
        bail!(
            "--grid: {count} cells (the product of the axes' value counts), more than the {MAX_GRID_CELLS} a sweep \
             runs: give fewer values, or split it into several sweeps"
        );
    }
    Ok(axes)
}

/// The cross product of the axes: one list of `KEY=VALUE` overrides per cell, first axis slowest.
#[must_use]
pub fn expand_grid(axes: &[Axis]) -> Vec<Vec<String>> {
    axes.iter().fold(vec![Vec::new()], |cells, (key, values)| {
        cells
            .iter()
            .flat_map(|cell| {
                values.iter().map(move |v| {
                    let mut c = cell.clone();
                    c.push(format!("{key}={v}"));
                    c
                })
            })
            .collect()
    })
}

/// The folder name of a cell: its overrides joined with `,`, characters outside `[A-Za-z0-9._=+-]` replaced by `_`.
#[must_use]
pub fn cell_name(cell: &[String]) -> String {
    let name: String = cell
        .join(",")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._=+-,".contains(c) { c } else { '_' })
        .collect();
    if name.starts_with('.') {
        format!("_{name}")
    } else {
        name
    }
}

/// The longest folder name most file systems allow, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Where a name that needs a hash is cut before it (leaves room for `-` and 16 hex digits).
const CUT_AT: usize = 200;

/// The folder names of `cells`, in order: [`cell_name`], made unique and short (see the module docs). Stable: the
/// same grid always gives the same names, so a resumed sweep finds its folders.
///
/// # Errors
/// Only if two names still collide after hashing (two identical cells, which [`parse_grid`] prevents).
pub fn cell_names(cells: &[Vec<String>]) -> Result<Vec<String>> {
    let plain: Vec<String> = cells.iter().map(|c| cell_name(c)).collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for n in &plain {
        *count.entry(n.as_str()).or_default() += 1;
    }
    let names: Vec<String> = plain
        .iter()
        .zip(cells)
        .map(|(name, cell)| {
            if count[name.as_str()] == 1 && name.len() <= MAX_NAME_BYTES {
                return name.clone();
            }
            let hash = Sha256::digest(cell.join("\n").as_bytes());
            let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
            // Names are ASCII, so any byte index is a character boundary.
            format!("{}-{hex}", &name[..name.len().min(CUT_AT)])
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for n in &names {
        if !seen.insert(n.as_str()) {
            bail!("two sweep cells would share the folder '{n}': give each grid value once");
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_expand_to_the_cross_product_with_readable_names() {
        let axes =
            parse_grid(&["sampler.repeat_penalty=1.0,1.1".into(), "sampler.dry_multiplier=0,0.8,1.5".into()]).unwrap();
        let cells = expand_grid(&axes);
        assert_eq!(cells.len(), 6);
        assert_eq!(cells[0], vec!["sampler.repeat_penalty=1.0", "sampler.dry_multiplier=0"]);
        assert_eq!(cells[5], vec!["sampler.repeat_penalty=1.1", "sampler.dry_multiplier=1.5"]);
        assert_eq!(cell_name(&cells[4]), "sampler.repeat_penalty=1.1,sampler.dry_multiplier=0.8");
    }

    #[test]
    fn values_with_commas_inside_brackets_or_quotes_stay_whole() {
        let axes = parse_grid(&[r#"sampler.stop=[],["\n","x"],"a,b""#.into()]).unwrap();
        assert_eq!(axes[0].1, vec!["[]", r#"["\n","x"]"#, r#""a,b""#]);
        assert_eq!(cell_name(&["sampler.stop=[\"\\n\"]".into()]), "sampler.stop=___n__");
        assert_eq!(cell_name(&["../x=1".into()]), "_.._x=1");
    }

    #[test]
    fn cell_names_are_unique_and_fit_a_file_system() {
        // `a/b` and `a_b` sanitize alike: both get a hash, and the two differ.
        let cells = vec![vec!["x=a/b".to_string()], vec!["x=a_b".to_string()], vec!["x=c".to_string()]];
        let names = cell_names(&cells).unwrap();
        assert_ne!(names[0], names[1]);
        assert!(names[0].starts_with("x=a_b-") && names[1].starts_with("x=a_b-"), "{names:?}");
        assert_eq!(names[2], "x=c", "names that need no hash keep their readable form");
        let long = vec![
            vec![format!("sampler.stop=[\"{}\"]", "y".repeat(400))],
            vec![format!("sampler.stop=[\"{}z\"]", "y".repeat(400))],
        ];
        let names = cell_names(&long).unwrap();
        assert!(names.iter().all(|n| n.len() <= MAX_NAME_BYTES), "{names:?}");
        assert_ne!(names[0], names[1], "long names that share a prefix still differ");
        assert_eq!(cell_names(&long).unwrap(), names, "stable across runs");
    }

    /// #15: the cross product is refused above [`MAX_GRID_CELLS`] before it is built (a grid of 2^64 cells ran
    /// out of memory instead of saying what was wrong).
    #[test]
    fn issue_15_a_grid_of_too_many_cells_is_refused_before_it_is_expanded() {
        let values = (0..1000).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let big: Vec<String> = ["a", "b", "c"].iter().map(|k| format!("{k}={values}")).collect();
        let e = parse_grid(&big).unwrap_err().to_string();
        assert!(e.starts_with("--grid: 1000000000 cells") && e.contains("100000") && !e.contains('\n'), "{e}");
        let huge: Vec<String> = (0..64).map(|k| format!("k{k}=0,1")).collect();
        let e = parse_grid(&huge).unwrap_err().to_string();
        assert!(e.starts_with("--grid: more than 18446744073709551615 cells"), "{e}");
        let fits: Vec<String> = ["a", "b"].iter().map(|k| format!("{k}={}", vec!["1"; 316].join(","))).collect();
        assert_eq!(parse_grid(&fits).unwrap().len(), 2, "316 x 316 = 99,856 cells is allowed");
    }

    #[test]
    fn malformed_axes_are_refused() {
        assert!(parse_grid(&["sampler.top_k".into()]).is_err());
        assert!(parse_grid(&["sampler.top_k=1,,2".into()]).is_err());
        assert!(parse_grid(&["a=1".into(), "a=2".into()]).is_err());
    }
}
