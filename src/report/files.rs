//! The report's one contact with the disk, kept apart so the rest of `report` stays pure: [`read_run_sets`] reads
//! the run folders through the analysis folder pass (`analysis::dir`, the same one `parrot analyze` uses), and
//! [`write_report`] is the one place that writes the report folder: `index.html` and the conversations' pages
//! (each replaced atomically with [`crate::durable::write_atomic`]) and, when asked, `png/*.png` drawn by plotters'
//! bitmap backend and encoded by the `png` crate.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::{BitMapBackend, IntoDrawingArea};
use rayon::prelude::*;

use super::{summary_figures, Rendered, RunSet, PAGES_DIR};
use crate::analysis::dir::{analyze_groups, groups_each, AnalyzeOptions};
use crate::durable::write_atomic;

/// Reads the run sets: one per folder (or sub-folder) holding transcripts, and one per other argument (a lone
/// file, a missing path), in the order given. A folder whose saved analysis is fresh and was made with no forced
/// format reuses it, and its transcripts (named in `analysis.json` relative to its folder, and only inside it) are
/// read for their text only; the others are analyzed, and saved beside their folder when `save` and parrot
/// generated the folder (see `analysis::dir`). Returns the run sets and the warnings (saves that failed).
#[must_use]
pub fn read_run_sets(paths: &[PathBuf], save: bool) -> (Vec<RunSet>, Vec<String>) {
    let options = AnalyzeOptions { reuse_saved: true, save, keep_text: true, ..AnalyzeOptions::default() };
    let (analyzed, warnings) = analyze_groups(&groups_each(paths), &options);
    let sets = analyzed
        .into_iter()
        .map(|mut a| {
            crate::analysis::judge::attach_cached(&mut a.analysis, &a.texts);
            RunSet::from_analyzed(a)
        })
        .collect();
    (sets, warnings)
}

/// Writes a rendered report into `out` (created when missing): the conversations' pages, `index.html` and, with
/// `png`, every summary figure of those run sets (tested against the baseline given with them) as `png/NAME.png`.
/// Returns the path of `index.html`.
///
/// # Errors
/// When a folder cannot be created or a file cannot be written or removed.
pub fn write_report(out: &Path, rendered: &Rendered, png: Option<(&[RunSet], usize)>) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("could not create the output folder '{}'", out.display()))?;
    write_pages(out, &rendered.pages)?;
    let index = out.join("index.html");
    write_atomic(&index, rendered.index.as_bytes())?;
    if let Some((sets, baseline)) = png {
        write_pngs(sets, baseline, &out.join("png"))?;
    }
    Ok(index)
}

/// Draws every summary figure as a PNG in `dir`.
fn write_pngs(sets: &[RunSet], baseline: usize, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("could not create '{}'", dir.display()))?;
    for (name, figure) in summary_figures(sets, false, baseline) {
        let path = dir.join(format!("{name}.png"));
        let (width, height) = figure.size();
        let mut rgb = vec![0u8; width as usize * height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
            figure.draw(&root)?;
            root.present().map_err(|e| anyhow::anyhow!("could not draw '{}': {e}", path.display()))?;
        }
        write_atomic(&path, &encode_png(&rgb, width, height)?)?;
    }
    Ok(())
}

/// An RGB image as PNG bytes (with the `png` crate: plotters' own encoder would pull in the whole `image` crate,
/// with JPEG and BMP codecs the report never writes).
fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("could not encode a PNG")?;
    writer.write_image_data(rgb).context("could not encode a PNG")?;
    writer.finish().context("could not encode a PNG")?;
    Ok(bytes)
}

/// Whether a file name is one of our conversation pages (`c-N.html`).
fn is_page_name(name: &str) -> bool {
    name.strip_prefix("c-")
        .and_then(|n| n.strip_suffix(".html"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes the conversations' own pages into `out/conversations/`, first removing the pages an earlier report
/// left there (only files named like ours), so that no stale conversation stays linked.
fn write_pages(out: &Path, pages: &[(String, String)]) -> Result<()> {
    let dir = out.join(PAGES_DIR);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if is_page_name(path.file_name().and_then(|n| n.to_str()).unwrap_or("")) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("could not remove the old page '{}'", path.display()))?;
            }
        }
    }
    if pages.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create '{}'", dir.display()))?;
    pages.par_iter().try_for_each(|(name, html)| write_atomic(&out.join(name), html.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_page_names_are_pages() {
        assert!(is_page_name("c-0.html") && is_page_name("c-123.html"));
        for name in ["c-.html", "c-1.htm", "notes.html", "c-1a.html", "c-1.html.partial"] {
            assert!(!is_page_name(name), "{name}");
        }
    }
}
