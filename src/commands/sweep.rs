//! `parrot sweep`: the cross product of sampler (or any config) settings, one run folder per cell, named by its
//! settings, ready for `parrot report DIR/*`. The grid is pure ([`expand_grid`], [`cell_name`]); each cell is a
//! `run` with `--set` overrides, and the models stay loaded across cells.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use crate::cli::GlobalArgs;
use crate::commands::run::{check_out_dir, fetch_models, resolve, RunArgs};
use crate::commands::session::{run_set, Engines, Outcome, RunSet};

/// Arguments of `parrot sweep`: every `run` flag (`--out` is the sweep's root folder), plus the grid.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// One axis of the grid: a config key and its values, comma-separated, e.g.
    /// `--grid 'sampler.repeat_penalty=1.0,1.1,1.2'`. Repeat for more axes; the sweep runs their cross product.
    #[arg(long = "grid", value_name = "KEY=V1,V2,...", required = true)]
    pub grid: Vec<String>,
    /// The run flags; each cell goes to `OUT/<its settings>/`.
    #[command(flatten)]
    pub run: RunArgs,
}

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

/// Parses `--grid` arguments.
///
/// # Errors
/// A malformed axis, an empty value or a key given twice.
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

/// Runs `parrot sweep`.
///
/// # Errors
/// A bad grid key or value (naming the key and the valid ones), or anything `run` refuses.
pub fn run(global: &GlobalArgs, args: SweepArgs) -> Result<ExitCode> {
    if args.run.out.as_os_str().is_empty() {
        bail!("--out DIR is required: the sweep's root folder (each cell gets a folder inside it)");
    }
    let axes = parse_grid(&args.grid)?;
    let cells = expand_grid(&axes);
    // Check every cell's settings before generating anything.
    let mut planned = Vec::with_capacity(cells.len());
    for cell in &cells {
        let mut cell_args = RunArgs { set: args.run.set.clone(), ..args.run.clone() };
        cell_args.set.extend(cell.iter().cloned());
        let settings = resolve(&cell_args).with_context(|| format!("sweep cell {}", cell.join(", ")))?;
        planned.push((cell_name(cell), settings));
    }
    check_out_dir(&args.run.out)?;
    let record = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "cwd": std::env::current_dir().ok(),
        "grid": axes,
        "cells": planned.iter().map(|(n, _)| n).collect::<Vec<_>>(),
    });
    let sweep_file = args.run.out.join("sweep.json");
    std::fs::write(&sweep_file, serde_json::to_vec_pretty(&record)?)
        .with_context(|| format!("could not write '{}'", sweep_file.display()))?;
    let mut engines = Engines::default();
    let mut total = Outcome::default();
    for (i, (name, mut settings)) in planned.into_iter().enumerate() {
        let out = args.run.out.join(&name);
        check_out_dir(&out)?;
        fetch_models(global, &mut settings)?;
        if !global.quiet {
            eprintln!("sweep cell {}/{}: {}", i + 1, cells.len(), Path::new(&name).display());
        }
        let set = RunSet {
            settings: &settings,
            out: &out,
            conversations: args.run.conversations,
            parallel: args.run.parallel,
            force: args.run.force,
            prompt_log: args.run.prompt_log.as_deref(),
        };
        let outcome = run_set(global, &set, &mut engines)?;
        total.failures += outcome.failures;
        if outcome.interrupted {
            total.interrupted = true;
            break;
        }
    }
    Ok(total.exit_code())
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
    fn malformed_axes_are_refused() {
        assert!(parse_grid(&["sampler.top_k".into()]).is_err());
        assert!(parse_grid(&["sampler.top_k=1,,2".into()]).is_err());
        assert!(parse_grid(&["a=1".into(), "a=2".into()]).is_err());
    }
}
