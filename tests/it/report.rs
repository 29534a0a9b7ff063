//! `parrot report` on the fixture run sets in `tests/fixtures/report/` (parrot JSONL written by its
//! `make_fixtures.py`, and two logs of the original tool): structure, numbers, escaping, bad input, and the page
//! as headless Chromium sees it.

use std::path::{Path, PathBuf};
use std::process::Command;

use parrot::analysis::formats;
use parrot::analysis::legacy;

use crate::common::{parrot, root, stderr};

fn fixture(name: &str) -> String {
    root().join("tests/fixtures/report").join(name).display().to_string()
}

/// Runs `parrot report` on `dirs` into a fresh folder; returns the folder, the page and the process output.
/// `--no-save` keeps the fixture folders of the checkout free of `analysis.json`.
fn report(dirs: &[String], extra: &[&str]) -> (tempfile::TempDir, String, std::process::Output) {
    let out = tempfile::tempdir().unwrap();
    let output = parrot()
        .arg("report")
        .arg("--no-save")
        .args(dirs)
        .arg("--out")
        .arg(out.path())
        .args(extra)
        .output()
        .expect("could not start parrot");
    let html = std::fs::read_to_string(out.path().join("index.html")).unwrap_or_else(|e| {
        panic!("no index.html ({e}); stderr: {}", stderr(&output));
    });
    (out, html, output)
}

fn all_fixtures() -> Vec<String> {
    ["pen11", "pen10", "legacy", "evil"].iter().map(|d| fixture(d)).collect()
}

/// The `data-v` values of the summary-table row of run set `set`.
fn summary_row(html: &str, set: usize) -> Vec<Option<f64>> {
    let table = &html[html.find("id=\"summary-table\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let row_start = table.find(&format!("<tr data-set=\"{set}\">")).expect("no summary row");
    let row = &table[row_start..];
    let row = &row[..row.find("</tr>").unwrap()];
    row.split("data-v=\"")
        .skip(1)
        .map(|s| {
            let v = &s[..s.find('"').unwrap()];
            (!v.is_empty()).then(|| v.parse::<f64>().unwrap())
        })
        .collect()
}

/// Mean loop density and mean average response length of the transcripts in a fixture folder, from the library.
fn expected_means(dir: &str) -> (f64, f64, usize) {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some()).collect();
    files.sort();
    let scores: Vec<_> =
        files.iter().filter_map(|p| formats::read_path(p, None).ok()).map(|c| legacy::score(&c)).collect();
    let n = scores.len() as f64;
    (
        scores.iter().map(|s| s.loop_density).sum::<f64>() / n,
        scores.iter().map(|s| s.avg_response_length).sum::<f64>() / n,
        scores.len(),
    )
}

#[test]
fn report_from_fixture_run_sets_has_every_chart_and_the_analysis_numbers() {
    let (_dir, html, output) = report(&all_fixtures(), &[]);
    // pen10/broken.jsonl is skipped: stated on stderr and the page, and the exit code says so.
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains("broken.jsonl"), "{}", stderr(&output));
    assert!(html.contains("id=\"problems\"") && html.contains("broken.jsonl"));
    // 3 + 2 + 2 + 1 conversations, one scatter point each, one section each.
    assert_eq!(html.matches("<circle class=\"pt\"").count(), 8);
    assert_eq!(html.matches("<section class=\"conv\"").count(), 8);
    assert_eq!(html.matches("class=\"chart hist\"").count(), 8);
    for id in ["fig-scatter", "fig-onset-turns", "fig-onset-tokens", "summary-table", "files-table"] {
        assert!(html.contains(&format!("id=\"{id}\"")), "missing {id}");
    }
    // Labels: the folder name first, then the config difference between the sets.
    assert!(html.contains("pen11 · repeat_penalty=1.1") && html.contains("pen10 · repeat_penalty=1.0"), "labels");
    assert!(html.contains("evil · repeat_penalty=1.1"));
    // Table values equal the analysis.
    for (set, dir) in ["pen11", "pen10", "legacy"].iter().enumerate() {
        let (density, length, n) = expected_means(&fixture(dir));
        let row = summary_row(&html, set);
        assert_eq!(row[0], Some(set as f64), "the run-set column sorts by position");
        assert_eq!(row[1], Some(n as f64), "samples of {dir}");
        assert!((row[2].unwrap() - length).abs() < 1e-9, "avg length of {dir}: {row:?} vs {length}");
        assert!((row[3].unwrap() - density).abs() < 1e-9, "avg density of {dir}: {row:?} vs {density}");
    }
    // No network resource anywhere.
    for needle in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(needle), "{needle}");
    }
}

#[test]
fn untrusted_text_appears_only_escaped() {
    let (_dir, html, output) = report(&[fixture("evil")], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for raw in
        ["<script>alert", "</textarea>", "\"onload=", "<img src=x", "<svg onload", "<!-- comment", "&amp; &lt;b&gt;"]
    {
        assert!(!html.contains(raw), "unescaped {raw:?} in the page");
    }
    assert!(html.contains("&lt;script&gt;alert("));
    assert!(html.contains("&lt;&#x2f;textarea&gt;"));
    assert!(html.contains("&quot;onload=alert(1)"));
    assert!(html.contains("&amp;amp; &amp;lt;b&amp;gt;"));
    assert!(html.contains("&amp;#60;script&amp;#62;"));
    assert_eq!(html.matches("<script").count(), 1, "only the page's own sorting script");
}

/// Runs `parrot report` on `dirs`, expecting the one-line error of a bad run set: exit 2, nothing written.
fn report_refused(dirs: &[String]) -> String {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("report");
    let output =
        parrot().arg("report").arg("--no-save").args(dirs).arg("--out").arg(&target).output().expect("no parrot");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(!target.exists(), "nothing may be written");
    assert!(output.stdout.is_empty());
    let err = stderr(&output);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn missing_and_empty_run_sets_are_one_line_errors() {
    let empty = tempfile::tempdir().unwrap();
    let missing = empty.path().join("does-not-exist");
    let err = report_refused(&[fixture("pen11"), missing.display().to_string()]);
    assert!(err.contains("does-not-exist': no such file or folder"), "{err}");
    let err = report_refused(&[empty.path().display().to_string(), fixture("pen11")]);
    assert!(err.contains("holds no readable conversation"), "{err}");
}

#[test]
fn png_charts_are_written_with_png() {
    let (dir, _html, output) = report(&[fixture("pen11"), fixture("pen10")], &["--png"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    for name in ["scatter", "onset_turns", "onset_tokens", "density_0", "lengths_1"] {
        let bytes = std::fs::read(dir.path().join("png").join(format!("{name}.png"))).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{name}.png is not a PNG");
        assert!(bytes.len() > 2000, "{name}.png is suspiciously small");
    }
}

/// Records script errors, console errors, chart sizes and whether sorting works into a `<pre id="probe">`.
const PROBE: &str = r##"<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push("error: " + e.message); });
["error", "warn"].forEach(function (k) { var o = console[k]; console[k] = function () {
  window.__errors.push(k + ": " + Array.from(arguments).join(" ")); o.apply(console, arguments); }; });
window.addEventListener("load", function () {
  var boxes = Array.from(document.querySelectorAll("figure.chart svg")).map(function (s) {
    var r = s.getBoundingClientRect(); return [r.width, r.height]; });
  // Layout at 1280 px: nothing scrolls sideways, neither the page nor a table; chart text is at least 12 px.
  var wraps = Array.from(document.querySelectorAll(".tablewrap")).map(function (w) {
    return [w.querySelector("table").id, w.scrollWidth - w.clientWidth]; });
  var small = Array.from(document.querySelectorAll("#fig-scatter svg text, #fig-onset-turns svg text, #fig-rates svg text, figure.timeline svg text"))
    .map(function (t) { return [t.textContent, parseFloat(getComputedStyle(t).fontSize)]; })
    .filter(function (t) { return t[1] < 12; });
  var th = document.querySelectorAll("#files-table th")[5];
  th.click(); th.click();
  var col = Array.from(document.querySelectorAll("#files-table tbody tr")).map(function (r) {
    return parseFloat(r.cells[5].dataset.v); });
  var pre = document.createElement("pre"); pre.id = "probe";
  pre.textContent = JSON.stringify({ errors: window.__errors, boxes: boxes, sorted_desc: col,
    page_width: document.documentElement.scrollWidth, table_overflow: wraps, small_text: small });
  document.body.appendChild(pre);
});
</script>"##;

fn chromium() -> String {
    let bin = std::env::var("PARROT_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "headless Chromium is needed for this test and '{bin}' could not be run: install Debian's `chromium` \
         package (apt-get install -y chromium) or point PARROT_CHROMIUM at a Chromium binary"
    );
    bin
}

fn run_chromium(bin: &str, page: &Path, extra: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--window-size=1280,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("could not start chromium")
}

#[test]
fn report_opens_in_headless_chromium_without_errors() {
    let bin = chromium();
    let (dir, html, _) = report(&all_fixtures(), &[]);
    let probed = html.replacen("<head>", &format!("<head>\n{PROBE}"), 1);
    let page = dir.path().join("probed.html");
    std::fs::write(&page, probed).unwrap();
    let out = run_chromium(&bin, &page, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom
        .find("<pre id=\"probe\">")
        .unwrap_or_else(|| panic!("the probe did not run; chromium stderr: {}", String::from_utf8_lossy(&out.stderr)))
        + "<pre id=\"probe\">".len();
    let json = dom[start..][..dom[start..].find("</pre>").unwrap()].replace("&quot;", "\"");
    let probe: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(probe["errors"], serde_json::json!([]), "console errors");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("Uncaught") && !log.contains("ERR_"), "chromium reported page errors: {log}");
    assert!(probe["page_width"].as_f64().unwrap() <= 1280.0, "the page scrolls sideways at 1280 px: {probe}");
    for t in probe["table_overflow"].as_array().unwrap() {
        assert!(t[1].as_f64().unwrap() <= 0.0, "a table scrolls sideways at 1280 px: {t}");
    }
    assert_eq!(probe["small_text"], serde_json::json!([]), "chart text under 12 px");
    let boxes = probe["boxes"].as_array().unwrap();
    // Scatter, rates, three means, two onset curves, 2 histograms × 4 sets, timeline + heatmap × 8 conversations.
    assert_eq!(boxes.len(), 7 + 8 + 16, "{probe}");
    for b in boxes {
        assert!(b[0].as_f64().unwrap() > 50.0 && b[1].as_f64().unwrap() > 50.0, "a chart has no size: {b}");
    }
    let sorted: Vec<f64> = probe["sorted_desc"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(sorted.len(), 8);
    assert!(sorted.windows(2).all(|w| w[0] >= w[1]), "clicking a header twice sorts descending: {sorted:?}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let out = run_chromium(&bin, &dir.path().join("index.html"), &[&format!("--screenshot={}", shot.display())]);
    let bytes = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 50_000, "screenshot looks empty");
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn a_fresh_saved_analysis_is_used_and_the_text_still_shown() {
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("pen11");
    std::fs::create_dir(&dir).unwrap();
    for f in ["conv-0.jsonl", "conv-1.jsonl", "conv-2.jsonl"] {
        std::fs::copy(root().join("tests/fixtures/report/pen11").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("run.json"), "{}").unwrap();
    let analyzed = parrot().arg("analyze").arg(&dir).output().unwrap();
    assert!(analyzed.status.success(), "{}", stderr(&analyzed));
    let saved_path = dir.join("analysis.json");
    // Mark the saved analysis so that the page shows whether it was used: change one number.
    let mut saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved_path).unwrap()).unwrap();
    saved["conversations"][0]["legacy"]["avg_response_length"] = serde_json::json!(4321.5);
    std::fs::write(&saved_path, serde_json::to_vec(&saved).unwrap()).unwrap();
    let (_out, html, output) = report(&[dir.display().to_string()], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(html.contains("data-v=\"4321.5\""), "the saved analysis was not used");
    assert_eq!(html.matches("<div class=\"transcript\">").count(), 3, "transcripts are read for their text");
}

#[test]
fn a_sweep_folder_gives_a_run_set_per_cell_saves_its_analysis_and_splits_large_reports() {
    // A sweep-like folder: one sub-folder per cell, plus the files parrot writes that are not transcripts.
    let sweep = tempfile::tempdir().unwrap();
    for cell in ["pen11", "pen10"] {
        let dir = sweep.path().join(format!("cell-{cell}"));
        std::fs::create_dir(&dir).unwrap();
        for f in ["conv-0.jsonl", "conv-1.jsonl"] {
            std::fs::copy(root().join("tests/fixtures/report").join(cell).join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("run.json"), "{}").unwrap();
    }
    std::fs::write(sweep.path().join("sweep.json"), "{}").unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = |inline_max: &str| {
        let output = parrot()
            .args(["report", "--inline-max", inline_max, "--out"])
            .arg(out.path())
            .arg(sweep.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        std::fs::read_to_string(out.path().join("index.html")).unwrap()
    };
    let html = run("3");
    // Two run sets, labelled by their config difference, with the cells' numbers.
    let legend = &html[html.find("id=\"legend\"").unwrap()..html.find("id=\"summary-table\"").unwrap()];
    assert_eq!(legend.matches("<li").count(), 2, "{legend}");
    assert!(html.contains("repeat_penalty=1.1") && html.contains("repeat_penalty=1.0"));
    for (set, cell) in ["cell-pen10", "cell-pen11"].iter().enumerate() {
        assert_eq!(summary_row(&html, set)[1], Some(2.0), "samples of {cell}");
        // The analysis was saved beside the transcripts, as `parrot analyze` does.
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sweep.path().join(cell).join("analysis.json")).unwrap()).unwrap();
        assert_eq!(saved["conversations"].as_array().unwrap().len(), 2);
    }
    // Four conversations > 3: each has its own page, linked from the table and the scatter.
    assert_eq!(html.matches("<section class=\"conv\"").count(), 0);
    let pages = out.path().join("conversations");
    for i in 0..4 {
        let page = std::fs::read_to_string(pages.join(format!("c-{i}.html"))).unwrap();
        assert_eq!(page.matches("<section class=\"conv\"").count(), 1);
        assert!(page.contains("<div class=\"transcript\">"));
        // (The template writes `/` in attributes as `&#x2f;`, which the browser reads as `/`.)
        let links = html.replace("&#x2f;", "/").matches(&format!("href=\"conversations/c-{i}.html\"")).count();
        assert_eq!(links, 2, "table row and scatter point");
    }
    // A second report reuses the saved analysis and, inline again, leaves no stale page behind.
    let html = run("100");
    assert_eq!(html.matches("<section class=\"conv\"").count(), 4);
    assert_eq!(std::fs::read_dir(&pages).unwrap().count(), 0, "old pages are removed");
}

#[test]
fn issue_15_report_reads_saved_sources_inside_their_folder_only_and_from_anywhere() {
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("set");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("run.json"), "{}").unwrap();
    std::fs::write(
        dir.join("share.json"),
        r#"[{"conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"first answer"}]},
            {"conversations":[{"from":"human","value":"bye"},{"from":"gpt","value":"second answer"}]}]"#,
    )
    .unwrap();
    // A mistaken --format saved first: the report must not show it (0 conversations) but analyze again.
    let wrong = parrot().args(["analyze", "--format", "chat_json"]).arg(&dir).output().unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    let out = tempfile::tempdir().unwrap();
    // Run from another folder than the one analyze ran in: the saved sources are relative to analysis.json.
    let report =
        |cwd: &Path| parrot().current_dir(cwd).arg("report").arg(&dir).arg("--out").arg(out.path()).output().unwrap();
    let first = report(runs.path());
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("analysis.json")).unwrap()).unwrap();
    assert_eq!(saved["conversations"][1]["source"], "share.json#1");
    let elsewhere = tempfile::tempdir().unwrap();
    let second = report(elsewhere.path());
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let html = std::fs::read_to_string(out.path().join("index.html")).unwrap();
    assert!(html.contains("first answer") && html.contains("second answer"), "ShareGPT entries resolve");
    // A crafted analysis.json naming a file outside the folder is refused with one line; that file is not read.
    let secret = runs.path().join("secret.json");
    std::fs::write(&secret, r#"[{"role":"user","content":"SECRET-CONTENT"}]"#).unwrap();
    let mut crafted = saved.clone();
    crafted["conversations"][0]["source"] = "../secret.json".into();
    std::fs::write(dir.join("analysis.json"), serde_json::to_vec(&crafted).unwrap()).unwrap();
    let third = report(elsewhere.path());
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    let err = stderr(&third);
    assert!(err.contains("'../secret.json' is not a transcript of this folder"), "{err}");
    let html = std::fs::read_to_string(out.path().join("index.html")).unwrap();
    assert!(!html.contains("SECRET-CONTENT"));
    assert!(html.contains("second answer"));
}
