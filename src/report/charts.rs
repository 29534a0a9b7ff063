//! The report's charts, drawn with plotters. Each chart is a [`Figure`] (plain data, built by `report`) and one
//! drawing function generic over the plotters backend, so the same code gives the page's inline SVG
//! ([`Figure::svg`], with `SVGBackend::with_string`: a `String`, no file) and the `--png` files (the command layer
//! hands a `BitMapBackend` to [`Figure::draw`]).
//!
//! Text: plotters measures text with `ab_glyph`, which needs a registered font; we embed DejaVu Sans (see
//! `assets/fonts/`) so that charts look the same on every machine. plotters escapes `<`, `>`, `&` and quotes in the
//! text and attributes it writes (checked by a test below); the hover titles we add to the scatter are escaped by
//! [`escape_xml`].
//!
//! Colors: run set `i` gets color `i % 20` of [`PALETTE`] and, from the 11th set on, a different marker and a
//! dashed line, so 20 sets stay distinguishable (and 40 still do).

use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle, RGBColor};

/// The font used to measure and draw chart text (DejaVu Sans, free license: see `assets/fonts/LICENSE-DejaVu`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static FONT_ONCE: Once = Once::new();

/// Family name charts ask for; the browser falls back to its own sans-serif for SVG text.
const FAMILY: &str = "sans-serif";

/// Twenty colors that stay apart on white: Tableau 10, then ten darker or more saturated ones.
pub const PALETTE: [(u8, u8, u8); 20] = [
    (0x1f, 0x77, 0xb4),
    (0xff, 0x7f, 0x0e),
    (0x2c, 0xa0, 0x2c),
    (0xd6, 0x27, 0x28),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
    (0x00, 0x00, 0x75),
    (0x91, 0x1e, 0xb4),
    (0x46, 0x99, 0x90),
    (0x80, 0x80, 0x00),
    (0x80, 0x00, 0x00),
    (0xf0, 0x32, 0xe6),
    (0x3c, 0xb4, 0x4b),
    (0x43, 0x63, 0xd8),
    (0x9a, 0x63, 0x24),
    (0xe6, 0x19, 0x4b),
];

/// Marker shapes, chosen by `set / 10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A filled circle (sets 1–10).
    Circle,
    /// A filled triangle (sets 11–20).
    Triangle,
    /// A filled square (sets 21–30).
    Square,
    /// A cross (sets 31–40).
    Cross,
}

/// How run set `i` is drawn: color, marker and whether its lines are dashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetStyle {
    /// Color.
    pub color: RGBColor,
    /// Marker.
    pub shape: Shape,
    /// Dashed lines (sets past the first ten).
    pub dashed: bool,
}

/// The style of run set `i`.
#[must_use]
pub fn set_style(i: usize) -> SetStyle {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    let shape = match (i / 10) % 4 {
        0 => Shape::Circle,
        1 => Shape::Triangle,
        2 => Shape::Square,
        _ => Shape::Cross,
    };
    SetStyle { color: RGBColor(r, g, b), shape, dashed: (i / 10) % 2 == 1 }
}

/// `#rrggbb` of run set `i`, for the HTML legend.
#[must_use]
pub fn set_color_hex(i: usize) -> String {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Escapes text for XML content and attribute values.
#[must_use]
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
    out
}

/// One point of the scatter.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterPoint {
    /// Loop density (x).
    pub loop_density: f64,
    /// Average response length in characters (y).
    pub avg_response_length: f64,
    /// The hover title: the file and its numbers.
    pub title: String,
    /// Where a click on the point leads: the conversation's section (`#c-12`) or page (`conversations/c-12.html`).
    pub link: String,
}

/// One step of a Kaplan–Meier curve with its 95% band (log-log Greenwood, from `analysis::stats`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandPoint {
    /// Turns or tokens.
    pub x: f64,
    /// Share still free of any detection just after `x`.
    pub survival: f64,
    /// Lower end of its 95% band.
    pub low: f64,
    /// Upper end of its 95% band.
    pub high: f64,
}

/// One Kaplan–Meier step curve of an onset chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Run set index (for the style).
    pub set: usize,
    /// Steps, starting at `(0, 1)` with an empty band.
    pub points: Vec<BandPoint>,
}

/// One run set's entry in a chart legend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LegendEntry {
    /// The run set's label.
    pub label: String,
    /// A second line under the label (the test against the baseline in words); empty for none.
    pub note: String,
    /// Whether the note states a significant difference (drawn with a ★, in the alert color).
    pub significant: bool,
}

/// One interval of a forest plot: an estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Whisker {
    /// The estimate (rate or mean).
    pub estimate: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// Significantly different from the baseline (after Holm's adjustment): marked with a ★.
    pub significant: bool,
}

/// One row of a forest plot: a measure, with one interval per run set (`None`: the set has no value).
#[derive(Debug, Clone, PartialEq)]
pub struct ForestRow {
    /// The measure (a phenomenon, "any").
    pub name: String,
    /// Per run set, in run-set order.
    pub values: Vec<Option<Whisker>>,
}

/// A histogram's bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Bins {
    /// Label of each bin (x axis).
    pub labels: Vec<String>,
    /// Share of the run set's items in each bin, in [0, 1].
    pub shares: Vec<f64>,
    /// The x ticks: a position in bins (bin `i` spans `i..i+1`) and its round label.
    pub ticks: Vec<(f64, String)>,
}

/// A detected phenomenon marked on a timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Message index of its onset.
    pub message: usize,
    /// Its name.
    pub name: String,
}

/// Everything the report draws.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    /// Average response length against loop density, one point per conversation, per run set.
    Scatter {
        /// Points of each run set, in run-set order.
        sets: Vec<Vec<ScatterPoint>>,
        /// Run-set entries for the legend beside the plot (empty: no legend).
        legend: Vec<LegendEntry>,
    },
    /// Fraction of conversations still free of any detection, against turns or tokens.
    Onset {
        /// The x axis' description.
        x_label: String,
        /// Whether x counts whole things (turns): integer ticks only.
        integer: bool,
        /// One curve per run set that has the data.
        curves: Vec<Curve>,
        /// Run-set entries for the legend beside the plot (empty: no legend).
        legend: Vec<LegendEntry>,
    },
    /// Intervals (error bars) of one measure per row, one per run set, significant differences marked.
    Forest {
        /// The x axis' description.
        x_label: String,
        /// Values are shares, shown as percentages on a 0–100% axis.
        percent: bool,
        /// The rows, top to bottom.
        rows: Vec<ForestRow>,
        /// Run-set entries for the legend beside the plot (empty: no legend).
        legend: Vec<LegendEntry>,
    },
    /// A histogram of one run set.
    Histogram {
        /// The x axis' description.
        x_label: String,
        /// Run set index (for the color).
        set: usize,
        /// The bins.
        bins: Bins,
        /// The y axis maximum, shared by the run sets so that their histograms compare.
        y_max: f64,
    },
    /// Message length per message, per speaker, with detections marked from their onset.
    Timeline {
        /// `(message index, characters)` of the assistant's messages.
        assistant: Vec<(usize, usize)>,
        /// `(message index, characters)` of the user's messages.
        user: Vec<(usize, usize)>,
        /// Detected phenomena.
        marks: Vec<Mark>,
        /// Number of messages.
        messages: usize,
    },
    /// Pairwise similarity of the messages, possibly downsampled.
    Heatmap {
        /// Square matrix of similarities in [0, 1].
        cells: Vec<Vec<f32>>,
        /// Messages per cell.
        bin: usize,
        /// Number of messages.
        messages: usize,
    },
}

fn ensure_font() {
    FONT_ONCE.call_once(|| {
        // The font is compiled in and known to be valid; a failure would show as charts without text metrics.
        if register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            tracing::warn!("the embedded chart font could not be loaded");
        }
    });
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("could not draw a chart: {e:?}")
}

const GRID: RGBColor = RGBColor(0xe4, 0xe4, 0xe4);
const AXIS: RGBColor = RGBColor(0x55, 0x55, 0x55);
const ASSISTANT: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const USER: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const ALERT: RGBColor = RGBColor(0xc0, 0x1c, 0x28);

impl Figure {
    /// Size in pixels. Charts with a legend grow to fit it, so the legend is never squeezed or cut short.
    #[must_use]
    pub fn size(&self) -> (u32, u32) {
        let legend_height = |legend: &[LegendEntry]| {
            let lines: usize = legend.iter().enumerate().map(|(i, e)| legend_lines(i, e).len()).sum();
            (LEGEND_TOP + LEGEND_LINE * lines as i32 + LEGEND_GAP * legend.len() as i32 + 10) as u32
        };
        match self {
            Figure::Scatter { legend, .. } => (1000, 480.max(legend_height(legend))),
            Figure::Onset { legend, .. } => (1000, 420.max(legend_height(legend))),
            Figure::Forest { rows, legend, .. } => {
                let sets = rows.iter().map(|r| r.values.len()).max().unwrap_or(1).max(1);
                let plot = 80 + rows.len() * (sets * FOREST_SLOT as usize + FOREST_ROW_GAP as usize);
                // Without a legend it is one of a row of small charts (the means).
                let width = if legend.is_empty() { 400 } else { 1000 };
                (width, (plot as u32).max(legend_height(legend)).max(120))
            }
            Figure::Histogram { .. } => (360, 220),
            Figure::Timeline { marks, .. } => (700, 280 + timeline_band(marks.len()) as u32),
            Figure::Heatmap { .. } => (420, 380),
        }
    }

    /// Renders the figure as an SVG document (a `String`; nothing is written).
    ///
    /// # Errors
    /// When plotters fails to draw (it does not for finite data).
    pub fn svg(&self) -> Result<String> {
        let mut out = String::new();
        let hover = {
            let root = SVGBackend::with_string(&mut out, self.size()).into_drawing_area();
            let hover = self.draw(&root)?;
            root.present().map_err(err)?;
            hover
        };
        if !hover.is_empty() {
            // plotters has no element for `<title>`: add an invisible hit layer with one titled circle per point.
            let mut layer = String::from("<g class=\"hover\">\n");
            for (x, y, title, link) in hover {
                layer.push_str(&format!(
                    "<a href=\"{}\"><circle class=\"pt\" cx=\"{x}\" cy=\"{y}\" r=\"7\" fill=\"#000\" fill-opacity=\"0\"><title>{}</title></circle></a>\n",
                    escape_xml(&link),
                    escape_xml(&title)
                ));
            }
            layer.push_str("</g>\n");
            match out.rfind("</svg>") {
                Some(at) => out.insert_str(at, &layer),
                None => out.push_str(&layer),
            }
        }
        Ok(out)
    }

    /// Draws the figure on any plotters area. Returns the scatter's hover targets `(x, y, title, link)` in
    /// backend pixels (empty for other figures).
    ///
    /// # Errors
    /// When the backend fails (a PNG that cannot be written).
    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<Vec<(i32, i32, String, String)>> {
        ensure_font();
        root.fill(&WHITE).map_err(err)?;
        match self {
            Figure::Scatter { sets, legend } => {
                let plot = draw_legend(root, legend, false)?;
                draw_scatter(&plot, sets)
            }
            Figure::Onset { x_label, integer, curves, legend } => {
                let plot = draw_legend(root, legend, true)?;
                draw_onset(&plot, x_label, *integer, curves).map(|()| Vec::new())
            }
            Figure::Forest { x_label, percent, rows, legend } => {
                let plot = draw_legend(root, legend, false)?;
                draw_forest(&plot, x_label, *percent, rows).map(|()| Vec::new())
            }
            Figure::Histogram { x_label, set, bins, y_max } => {
                draw_histogram(root, x_label, *set, bins, *y_max).map(|()| Vec::new())
            }
            Figure::Timeline { assistant, user, marks, messages } => {
                draw_timeline(root, assistant, user, marks, *messages).map(|()| Vec::new())
            }
            Figure::Heatmap { cells, bin, messages } => draw_heatmap(root, cells, *bin, *messages).map(|()| Vec::new()),
        }
    }
}

/// Width of the legend panel beside a scatter, onset or forest plot: outside the plot area, so it never covers
/// data.
const LEGEND_WIDTH: u32 = 340;
/// Legend text size in pixels: readable at 100% zoom (the page shows the charts at their own size).
const LEGEND_FONT: f64 = 13.0;
/// Height of one legend line, first line's baseline offset, and the gap between entries.
const LEGEND_LINE: i32 = 17;
const LEGEND_TOP: i32 = 16;
const LEGEND_GAP: i32 = 5;

/// The most characters of a label's settings on one legend line; they wrap at their commas beyond it.
const LEGEND_LINE_CHARS: usize = 40;
/// The share of the legend's width that [`fit`] lets text take: browsers draw the SVG's `sans-serif` with their
/// own font, up to ~15% wider than the embedded one measures.
const LEGEND_FIT: f64 = 0.85;

/// How a legend line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegendStyle {
    /// The run set's number and name.
    Name,
    /// Settings that tell the set apart, or a note.
    Muted,
    /// A note stating a significant difference.
    Alert,
}

/// The lines of legend entry `i`: its number and name (the label up to ` · `), then the settings that follow in
/// the label, wrapped at their commas so that every one is shown whole rather than cut to a prefix the sets share,
/// then its note (★ when significant).
fn legend_lines(i: usize, entry: &LegendEntry) -> Vec<(String, LegendStyle)> {
    let (name, settings) = entry.label.split_once(" · ").unwrap_or((entry.label.as_str(), ""));
    let mut lines = vec![(format!("{}. {name}", i + 1), LegendStyle::Name)];
    let mut line = String::new();
    for pair in settings.split(", ").filter(|p| !p.is_empty()) {
        if !line.is_empty() && line.chars().count() + 2 + pair.chars().count() > LEGEND_LINE_CHARS {
            lines.push((std::mem::take(&mut line) + ",", LegendStyle::Muted));
        }
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(pair);
    }
    if !line.is_empty() {
        lines.push((line, LegendStyle::Muted));
    }
    if !entry.note.is_empty() {
        lines.push(if entry.significant {
            (format!("★ {}", entry.note), LegendStyle::Alert)
        } else {
            (entry.note.clone(), LegendStyle::Muted)
        });
    }
    lines
}

/// `text` cut with an ellipsis to fit `width` pixels at `px` pixels as the page shows it (measured with the
/// embedded font; a `--png` chart draws its text 1.24 times larger, see [`SVG_FONT_SCALE`], and may cut it at the
/// image's edge).
fn fit<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str, px: f64, width: u32) -> String {
    let measure: TextStyle<'_> = (FAMILY, px).into_font().into();
    let fits = |t: &str| area.estimate_text_size(t, &measure).map_or(true, |(w, _)| w <= width);
    if fits(text) {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let cut: String = chars[..mid].iter().chain(std::iter::once(&'…')).collect();
        if fits(&cut) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    chars[..lo].iter().chain(std::iter::once(&'…')).collect()
}

/// Draws the run-set legend in a panel on the right and returns the area left for the plot. Each entry is the
/// set's number and label and, under it, its note (the test against the baseline, ★ when significant).
fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    lines: bool,
) -> Result<DrawingArea<DB, Shift>> {
    if entries.is_empty() {
        return Ok(root.clone());
    }
    let (plot, side) = root.split_horizontally(root.dim_in_pixel().0.saturating_sub(LEGEND_WIDTH));
    let text = font(LEGEND_FONT).color(&RGBColor(0x22, 0x22, 0x22));
    let muted = font(LEGEND_FONT).color(&AXIS);
    let alert = font(LEGEND_FONT).color(&ALERT);
    let width = (f64::from(LEGEND_WIDTH - 40) * LEGEND_FIT) as u32;
    let mut y = LEGEND_TOP;
    for (i, entry) in entries.iter().enumerate() {
        let style = set_style(i);
        if lines {
            side.draw(&PathElement::new([(4, y), (26, y)], style.color.stroke_width(2))).map_err(err)?;
        }
        let fill = style.color.mix(0.85).filled();
        let at = (15, y);
        match style.shape {
            Shape::Circle => side.draw(&Circle::new(at, 4, fill)),
            Shape::Triangle => side.draw(&TriangleMarker::new(at, 5, fill)),
            Shape::Square => side.draw(&Rectangle::new([(11, y - 4), (19, y + 4)], fill)),
            Shape::Cross => side.draw(&Cross::new(at, 4, style.color.stroke_width(2))),
        }
        .map_err(err)?;
        // Numbered like the page's legend, so a cut line is still identified.
        for (line, kind) in legend_lines(i, entry) {
            let style = match kind {
                LegendStyle::Name => &text,
                LegendStyle::Muted => &muted,
                LegendStyle::Alert => &alert,
            };
            side.draw(&Text::new(fit(&side, &line, LEGEND_FONT, width), (34, y - 8), style.clone())).map_err(err)?;
            y += LEGEND_LINE;
        }
        y += LEGEND_GAP;
    }
    Ok(plot)
}

/// Tick labels without useless decimals: integers for counts, two decimals below 10.
fn tick(v: &f64) -> String {
    if ((v - v.round()).abs() < 1e-9 && v.abs() >= 1.0) || *v == 0.0 {
        format!("{v:.0}")
    } else if v.abs() < 10.0 {
        format!("{v:.2}").trim_end_matches('0').to_string()
    } else {
        format!("{v:.0}")
    }
}

/// Round tick positions from 0 to at least `max`: a step of 1, 2 or 5 × 10^k giving at most `most` + 1 ticks
/// (never below 1 when `integer`: turns and messages are whole). Returns the ticks and the axis end (the last
/// tick), so the axis ends on a labelled value.
#[must_use]
pub fn round_ticks(max: f64, most: usize, integer: bool) -> (Vec<f64>, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let rough = max / most.max(1) as f64;
    let magnitude = 10f64.powf(rough.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= rough).unwrap_or(rough);
    if integer {
        step = step.max(1.0).round();
    }
    let count = (max / step - 1e-9).ceil().max(1.0) as usize;
    let ticks: Vec<f64> = (0..=count).map(|k| k as f64 * step).collect();
    let end = ticks.last().copied().unwrap_or(max);
    (ticks, end)
}

/// A linear `f64` axis whose ticks are exactly the given ones (plotters' own choice gives 0.5-turn ticks on a
/// short curve and 0/400/900 under bins).
#[derive(Debug, Clone)]
struct Ticked {
    start: f64,
    end: f64,
    ticks: Vec<f64>,
}

fn ticked(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Ticked {
    Ticked { start: range.start, end: range.end, ticks }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.end - self.start;
        if span == 0.0 || !span.is_finite() {
            return (limit.0 + limit.1) / 2;
        }
        let share = (value - self.start) / span;
        // Clamped before the cast: a value far outside the axis (an onset a crafted analysis.json puts past the
        // last message) would otherwise come out near i32::MAX and overflow the additions here and in the callers.
        // Sixteen plot widths either side is off the drawing by far, and exact inside it.
        let span_px = f64::from(limit.1 - limit.0);
        let offset = (span_px * share + 1e-3).floor().clamp(-16.0 * span_px.abs(), 17.0 * span_px.abs());
        limit.0 + offset as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only bold points: no light grid between the ticks.
        if hint.weight().allow_light_points() && hint.max_num_points() > 0 {
            return Vec::new();
        }
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.start..self.end
    }
}

/// plotters' SVG backend writes `font-size` as the size divided by 1.24 (points to pixels, as it reckons); sizes
/// here are the pixels a reader gets in the page, so they are multiplied back.
const SVG_FONT_SCALE: f64 = 1.24;

/// The chart font at `px` pixels as the page shows it.
fn font(px: impl Into<f64>) -> FontDesc<'static> {
    (FAMILY, px.into() * SVG_FONT_SCALE).into_font()
}

fn axis_font() -> TextStyle<'static> {
    font(13).color(&AXIS)
}

fn draw_marker<DB: DrawingBackend, X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    at: (f64, f64),
    style: SetStyle,
) -> Result<()> {
    let fill = style.color.mix(0.85).filled();
    match style.shape {
        Shape::Circle => chart.draw_series(std::iter::once(Circle::new(at, 4, fill))).map(|_| ()),
        Shape::Triangle => chart.draw_series(std::iter::once(TriangleMarker::new(at, 5, fill))).map(|_| ()),
        Shape::Square => chart
            .draw_series(std::iter::once(EmptyElement::at(at) + Rectangle::new([(-4, -4), (4, 4)], fill)))
            .map(|_| ()),
        Shape::Cross => chart.draw_series(std::iter::once(Cross::new(at, 4, style.color.stroke_width(2)))).map(|_| ()),
    }
    .map_err(err)
}

type Hover = Vec<(i32, i32, String, String)>;

fn draw_scatter<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, sets: &[Vec<ScatterPoint>]) -> Result<Hover> {
    let all = sets.iter().flatten();
    // Both axes are [`Ticked`]: plotters' own f64 axis never finishes choosing its ticks for a range near f64::MAX
    // (densities of a crafted analysis.json), and maps values far outside its range past i32.
    let (x_ticks, x_max) = round_ticks(all.clone().map(|p| p.loop_density).fold(0.0, f64::max).max(0.1), 8, false);
    let (y_ticks, y_max) = round_ticks(all.map(|p| p.avg_response_length).fold(0.0, f64::max).max(10.0), 8, true);
    let mut chart = ChartBuilder::on(root)
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(ticked(0.0..x_max, x_ticks), ticked(0.0..y_max, y_ticks))
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .axis_style(AXIS)
        .x_desc("loop density (share of assistant characters in repeated word runs)")
        .y_desc("average response length (characters)")
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(axis_font())
        .axis_desc_style(font(14))
        .draw()
        .map_err(err)?;
    let mut hover = Vec::new();
    for (i, points) in sets.iter().enumerate() {
        let style = set_style(i);
        for p in points {
            let at = (p.loop_density, p.avg_response_length);
            if !(at.0.is_finite() && at.1.is_finite()) {
                continue;
            }
            draw_marker(&mut chart, at, style)?;
            let (x, y) = chart.backend_coord(&at);
            hover.push((x, y, p.title.clone(), p.link.clone()));
        }
    }
    Ok(hover)
}

/// Step coordinates of a curve: horizontal to each step's time, then down (or up) to its value.
fn steps(points: &[BandPoint], value: impl Fn(&BandPoint) -> f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (k, p) in points.iter().enumerate() {
        if k > 0 {
            out.push((p.x, value(&points[k - 1])));
        }
        out.push((p.x, value(p)));
    }
    out
}

fn draw_onset<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    x_label: &str,
    integer: bool,
    curves: &[Curve],
) -> Result<()> {
    let x_data = curves.iter().flat_map(|c| c.points.iter().map(|p| p.x)).fold(0.0, f64::max);
    let (x_ticks, x_max) = round_ticks(x_data.max(1.0), 10, integer);
    let y_ticks: Vec<f64> = (0..=5).map(|k| f64::from(k) * 0.2).collect();
    let mut chart = ChartBuilder::on(root)
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(ticked(0.0..x_max, x_ticks), ticked(0.0..1.02, y_ticks))
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .axis_style(AXIS)
        .x_desc(x_label)
        .x_label_formatter(&tick)
        .y_desc("conversations still free of loops/breaks")
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .label_style(axis_font())
        .axis_desc_style(font(14))
        .draw()
        .map_err(err)?;
    // Bands first, all of them, so that no band covers another set's line.
    for curve in curves {
        let color = set_style(curve.set).color;
        let upper = steps(&curve.points, |p| p.high);
        let lower = steps(&curve.points, |p| p.low);
        let outline: Vec<(f64, f64)> = upper.iter().copied().chain(lower.iter().rev().copied()).collect();
        if outline.len() > 2 {
            chart.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.14).filled()))).map_err(err)?;
        }
    }
    for curve in curves {
        let style = set_style(curve.set);
        let line = style.color.stroke_width(2);
        let points = steps(&curve.points, |p| p.survival);
        if style.dashed {
            chart.draw_series(DashedLineSeries::new(points, 6, 4, line)).map_err(err)?;
        } else {
            chart.draw_series(LineSeries::new(points, line)).map_err(err)?;
        }
        if let Some(last) = curve.points.last() {
            draw_marker(&mut chart, (last.x, last.survival), style)?;
        }
    }
    Ok(())
}

/// Height of one run set's slot in a forest row, and the gap between rows, in pixels.
const FOREST_SLOT: i32 = 13;
const FOREST_ROW_GAP: i32 = 12;

fn draw_forest<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    x_label: &str,
    percent: bool,
    rows: &[ForestRow],
) -> Result<()> {
    let sets = rows.iter().map(|r| r.values.len()).max().unwrap_or(1).max(1);
    let data_max = rows.iter().flat_map(|r| r.values.iter().flatten()).map(|w| w.high).fold(0.0, f64::max);
    let (x_ticks, x_max) = if percent {
        ((0..=10).map(|k| f64::from(k) * 0.1).collect(), 1.0)
    } else {
        round_ticks(data_max.max(1e-6), 8, false)
    };
    // One unit of y per row: sets at evenly spaced offsets inside it, the gap above and below.
    let n = rows.len().max(1) as f64;
    let centers: Vec<f64> = (0..rows.len()).map(|r| r as f64 + 0.5).collect();
    let names: Vec<String> = rows.iter().map(|r| r.name.replace('_', " ")).collect();
    // A single unnamed row (one measure, said by the x label) needs no row names.
    let names_width = if rows.len() == 1 && rows[0].name.is_empty() { 8 } else { 170 };
    let mut chart = ChartBuilder::on(root)
        .margin(14)
        .margin_right(30)
        .x_label_area_size(44)
        .y_label_area_size(names_width)
        .build_cartesian_2d(ticked(0.0..x_max, x_ticks), ticked(n..0.0, centers))
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .disable_y_mesh()
        .axis_style(AXIS)
        .x_desc(x_label)
        .x_label_formatter(&|v| if percent { format!("{:.0}%", v * 100.0) } else { tick(v) })
        .y_label_formatter(&|v| names.get(v.floor() as usize).cloned().unwrap_or_default())
        .label_style(axis_font())
        .axis_desc_style(font(14))
        .draw()
        .map_err(err)?;
    for r in 1..rows.len() {
        chart
            .draw_series(std::iter::once(PathElement::new([(0.0, r as f64), (x_max, r as f64)], GRID)))
            .map_err(err)?;
    }
    let star = font(15).color(&ALERT);
    for (r, row) in rows.iter().enumerate() {
        for (i, value) in row.values.iter().enumerate() {
            let Some(w) = value else { continue };
            if ![w.estimate, w.low, w.high].iter().all(|v| v.is_finite()) {
                continue;
            }
            let y = r as f64 + 0.1 + 0.8 * (i as f64 + 0.5) / sets as f64;
            let style = set_style(i);
            let stroke = style.color.stroke_width(2);
            chart.draw_series(std::iter::once(PathElement::new([(w.low, y), (w.high, y)], stroke))).map_err(err)?;
            for end in [w.low, w.high] {
                chart
                    .draw_series(std::iter::once(
                        EmptyElement::at((end, y)) + PathElement::new([(0, -4), (0, 4)], stroke),
                    ))
                    .map_err(err)?;
            }
            draw_marker(&mut chart, (w.estimate, y), style)?;
            if w.significant {
                let (px, py) = chart.backend_coord(&(w.high, y));
                root.draw(&Text::new("★", (px + 4, py - 8), star.clone())).map_err(err)?;
            }
        }
    }
    Ok(())
}

fn draw_histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    x_label: &str,
    set: usize,
    bins: &Bins,
    y_max: f64,
) -> Result<()> {
    let n = bins.labels.len().max(1);
    let ticks = bins.ticks.clone();
    let positions: Vec<f64> = ticks.iter().map(|t| t.0).collect();
    let (y_ticks, y_end) = round_ticks(y_max.max(0.05), 4, false);
    let mut chart = ChartBuilder::on(root)
        .margin(8)
        .margin_right(18)
        .x_label_area_size(40)
        .y_label_area_size(44)
        .build_cartesian_2d(ticked(0.0..n as f64, positions), ticked(0.0..y_end, y_ticks))
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .axis_style(AXIS)
        .x_label_formatter(&|v| ticks.iter().find(|t| (t.0 - v).abs() < 1e-9).map(|t| t.1.clone()).unwrap_or_default())
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .x_desc(x_label)
        .label_style(font(12).color(&AXIS))
        .axis_desc_style(font(12))
        .draw()
        .map_err(err)?;
    let color = set_style(set).color;
    chart
        .draw_series(bins.shares.iter().enumerate().map(|(i, &share)| {
            Rectangle::new([(i as f64 + 0.08, 0.0), (i as f64 + 0.92, share)], color.mix(0.85).filled())
        }))
        .map_err(err)?;
    Ok(())
}

/// Height of the band above a timeline's plot: one line for its legend, then up to three lines of detector
/// labels, so that neither covers the data.
fn timeline_band(marks: usize) -> i32 {
    26 + 15 * marks.min(3) as i32
}

fn draw_timeline<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    assistant: &[(usize, usize)],
    user: &[(usize, usize)],
    marks: &[Mark],
    messages: usize,
) -> Result<()> {
    let data_max = assistant.iter().chain(user).map(|p| p.1 as f64).fold(0.0, f64::max);
    let (y_ticks, y_max) = round_ticks(data_max.max(10.0), 6, true);
    let (x_ticks, _) = round_ticks((messages.max(2) - 1) as f64, 12, true);
    let x_max = (messages.max(2) - 1) as f64;
    let x_ticks: Vec<f64> = x_ticks.into_iter().filter(|t| *t <= x_max).collect();
    let band = timeline_band(marks.len());
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .margin_top(band as u32)
        .x_label_area_size(38)
        .y_label_area_size(56)
        .build_cartesian_2d(ticked(0.0..x_max, x_ticks), ticked(0.0..y_max, y_ticks))
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .axis_style(AXIS)
        .x_desc("message")
        .y_desc("characters")
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(axis_font())
        .axis_desc_style(font(13))
        .draw()
        .map_err(err)?;
    // The legend: the first line of the band, left-aligned with the plot.
    let legend_font = font(12).color(&RGBColor(0x22, 0x22, 0x22));
    let (left, _) = chart.backend_coord(&(0.0, y_max));
    let mut x = left;
    for (color, name) in [(ASSISTANT, "assistant"), (USER, "user")] {
        root.draw(&PathElement::new([(x, 12), (x + 18, 12)], color.stroke_width(2))).map_err(err)?;
        root.draw(&Text::new(name, (x + 22, 5), legend_font.clone())).map_err(err)?;
        x += 22 + root.estimate_text_size(name, &legend_font).map_or(60, |(w, _)| w as i32) + 18;
    }
    let width = root.dim_in_pixel().0 as i32;
    let mark_font = font(12).color(&ALERT);
    for (k, mark) in marks.iter().enumerate() {
        let x = mark.message as f64;
        chart
            .draw_series(DashedLineSeries::new([(x, 0.0), (x, y_max)], 4, 3, ALERT.mix(0.7).stroke_width(1)))
            .map_err(err)?;
        let (px, top) = chart.backend_coord(&(x, y_max));
        let label = format!("▼ {}", mark.name);
        let w = root.estimate_text_size(&label, &mark_font).map_or(120, |(w, _)| w as i32);
        // Above the plot, in the band; labels near the right edge end at the line instead of starting there.
        let at_x = if px + w + 4 > width { px - w + 4 } else { px - 4 };
        let row = (marks.len().min(3) - 1 - k % 3) as i32;
        let at_y = top - 18 - 15 * row;
        root.draw(&Text::new(label, (at_x.max(0), at_y), mark_font.clone())).map_err(err)?;
    }
    for (points, color) in [(assistant, ASSISTANT), (user, USER)] {
        let pts: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x as f64, y as f64)).collect();
        chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2))).map_err(err)?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 2, color.filled()))).map_err(err)?;
    }
    Ok(())
}

/// White → yellow-green → blue → navy: similarity 0 is the page's background, so empty cells need no drawing.
fn heat_color(v: f32) -> RGBColor {
    const STOPS: [(f32, (f32, f32, f32)); 5] = [
        (0.0, (255.0, 255.0, 255.0)),
        (0.25, (199.0, 233.0, 180.0)),
        (0.5, (65.0, 182.0, 196.0)),
        (0.75, (34.0, 94.0, 168.0)),
        (1.0, (8.0, 29.0, 88.0)),
    ];
    let v = v.clamp(0.0, 1.0);
    for w in STOPS.windows(2) {
        let ((a, ca), (b, cb)) = (w[0], w[1]);
        if v <= b {
            let t = (v - a) / (b - a);
            let mix = |x: f32, y: f32| (x + (y - x) * t).round() as u8;
            return RGBColor(mix(ca.0, cb.0), mix(ca.1, cb.1), mix(ca.2, cb.2));
        }
    }
    RGBColor(8, 29, 88)
}

/// Cells below this similarity are left white: it keeps the SVG of a long, healthy conversation small.
const HEAT_FLOOR: f32 = 0.05;
/// Number of color steps of the heatmap (a binned colormap: easier to read and to compress).
const HEAT_LEVELS: usize = 10;

/// The color step of a similarity, `None` below [`HEAT_FLOOR`].
fn heat_level(v: f32) -> Option<usize> {
    (v >= HEAT_FLOOR).then(|| ((v.clamp(0.0, 1.0) * HEAT_LEVELS as f32) as usize).min(HEAT_LEVELS - 1))
}

/// The similarity a color step is drawn with (its middle).
fn level_value(level: usize) -> f32 {
    (level as f32 + 0.5) / HEAT_LEVELS as f32
}

fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    cells: &[Vec<f32>],
    bin: usize,
    messages: usize,
) -> Result<()> {
    let (main, bar) = root.split_horizontally(root.dim_in_pixel().0 - 74);
    let n = (cells.len() * bin).max(1) as f64;
    let ticks: Vec<f64> = round_ticks(n, 8, true).0.into_iter().filter(|t| *t <= n).collect();
    let mut chart = ChartBuilder::on(&main)
        .margin(10)
        .x_label_area_size(38)
        .y_label_area_size(48)
        .build_cartesian_2d(ticked(0.0..n, ticks.clone()), ticked(n..0.0, ticks))
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .axis_style(AXIS)
        .x_desc(format!("message (of {messages})"))
        .y_desc("message")
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(axis_font())
        .axis_desc_style(font(13))
        .draw()
        .map_err(err)?;
    // Colors come in HEAT_LEVELS steps and equal neighbours in a row become one rectangle: a looping conversation
    // is similar almost everywhere, and one element per cell would make its SVG hundreds of kilobytes.
    let b = bin as f64;
    let mut runs: Vec<(usize, usize, usize, usize)> = Vec::new();
    for (i, row) in cells.iter().enumerate() {
        let mut j = 0;
        while j < row.len() {
            if let Some(level) = heat_level(row[j]) {
                let start = j;
                while j + 1 < row.len() && heat_level(row[j + 1]) == Some(level) {
                    j += 1;
                }
                runs.push((i, start, j, level));
            }
            j += 1;
        }
    }
    chart
        .draw_series(runs.into_iter().map(|(i, j0, j1, level)| {
            Rectangle::new(
                [(j0 as f64 * b, i as f64 * b), ((j1 + 1) as f64 * b, (i + 1) as f64 * b)],
                heat_color(level_value(level)).filled(),
            )
        }))
        .map_err(err)?;
    let mut scale = ChartBuilder::on(&bar)
        .margin(10)
        .margin_left(4)
        .x_label_area_size(38)
        .y_label_area_size(0)
        .right_y_label_area_size(34)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(err)?;
    scale
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style(font(12).color(&AXIS))
        .draw()
        .map_err(err)?;
    scale
        .draw_series((0..HEAT_LEVELS).map(|k| {
            let (lo, hi) = (k as f64 / HEAT_LEVELS as f64, (k + 1) as f64 / HEAT_LEVELS as f64);
            Rectangle::new([(0.0, lo), (1.0, hi)], heat_color(level_value(k)).filled())
        }))
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(x: f64, y: f64, title: &str) -> ScatterPoint {
        ScatterPoint { loop_density: x, avg_response_length: y, title: title.into(), link: "#c-0".into() }
    }

    #[test]
    fn scatter_has_one_titled_point_per_conversation_and_escapes_titles() {
        let fig = Figure::Scatter {
            sets: vec![
                vec![point(0.1, 100.0, "a.jsonl"), point(0.3, 50.0, "<b>&\"x\".log")],
                vec![point(0.0, 0.0, "c")],
            ],
            legend: vec![
                LegendEntry { label: "a<&>".into(), ..LegendEntry::default() },
                LegendEntry { label: "b".into(), note: "<i>".into(), significant: true },
            ],
        };
        let svg = fig.svg().unwrap();
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("<title>&lt;b&gt;&amp;&quot;x&quot;.log</title>"), "{svg}");
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("a&lt;&amp;&gt;"), "the legend is drawn and escaped");
        assert!(svg.contains("★ &lt;i&gt;"), "the note is drawn, marked and escaped");
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    /// #16: labels that share a long prefix (`dry_multiplier=0.0, repeat_penalty=1.0` / `…=1.1`) were cut to that
    /// prefix in the charts' legends; the settings now wrap at their commas, each drawn whole.
    #[test]
    fn legend_labels_keep_the_settings_that_tell_sets_apart() {
        let entry = |label: &str| LegendEntry { label: label.into(), ..LegendEntry::default() };
        let legend = vec![
            entry("baseline · dry_multiplier=0.0, repeat_penalty=1.0, assistant_model=gemma-3-270m +1 more"),
            entry("pen11 · dry_multiplier=0.0, repeat_penalty=1.1, assistant_model=gemma-3-270m +1 more"),
            LegendEntry { label: "dry08".into(), note: "breaks later".into(), significant: true },
        ];
        let lines: Vec<String> = legend_lines(1, &legend[1]).into_iter().map(|(l, _)| l).collect();
        assert_eq!(lines[0], "2. pen11");
        assert!(lines[1..].iter().all(|l| l.chars().count() <= LEGEND_LINE_CHARS + 1), "{lines:?}");
        assert_eq!(lines[1..].concat(), "dry_multiplier=0.0, repeat_penalty=1.1,assistant_model=gemma-3-270m +1 more");
        assert_eq!(
            legend_lines(2, &legend[2]),
            [("3. dry08".to_string(), LegendStyle::Name), ("★ breaks later".to_string(), LegendStyle::Alert)]
        );
        let fig = Figure::Scatter { sets: vec![vec![], vec![], vec![]], legend };
        let svg = fig.svg().unwrap();
        for whole in ["repeat_penalty=1.0", "repeat_penalty=1.1", "2. pen11", "★ breaks later"] {
            assert!(svg.contains(whole), "{whole} is drawn whole");
        }
        assert!(!svg.contains('…'), "nothing is cut");
    }

    #[test]
    fn plotters_escapes_the_text_it_draws() {
        let fig = Figure::Timeline {
            assistant: vec![(1, 10), (3, 20)],
            user: vec![(2, 5)],
            marks: vec![Mark { message: 2, name: "<script>&".into() }],
            messages: 4,
        };
        let svg = fig.svg().unwrap();
        assert!(svg.contains("&lt;script&gt;&amp;"), "{svg}");
        assert!(!svg.contains("<script>"));
    }

    #[test]
    fn empty_data_still_draws() {
        for fig in [
            Figure::Scatter { sets: vec![], legend: vec![] },
            Figure::Onset {
                x_label: "turns".into(),
                integer: true,
                curves: vec![],
                legend: vec![LegendEntry { label: "only".into(), ..LegendEntry::default() }],
            },
            Figure::Forest { x_label: "x".into(), percent: true, rows: vec![], legend: vec![] },
            Figure::Timeline { assistant: vec![], user: vec![], marks: vec![], messages: 0 },
            Figure::Heatmap { cells: vec![], bin: 1, messages: 0 },
            Figure::Histogram {
                x_label: "x".into(),
                set: 3,
                bins: Bins { labels: vec![], shares: vec![], ticks: vec![] },
                y_max: 0.0,
            },
        ] {
            let svg = fig.svg().unwrap();
            assert!(svg.starts_with("<svg"), "{svg}");
        }
    }

    #[test]
    fn ticks_are_round_and_whole_for_counts() {
        // A short curve gets whole turns, never 0.5.
        assert_eq!(round_ticks(3.2, 10, true), (vec![0.0, 1.0, 2.0, 3.0, 4.0], 4.0));
        assert_eq!(round_ticks(0.3, 10, true), (vec![0.0, 1.0], 1.0));
        // Characters: 0/500/1000…, not 0/400/900.
        let (ticks, end) = round_ticks(1900.0, 8, true);
        assert_eq!((ticks[1], end), (500.0, 2000.0));
        assert_eq!(round_ticks(0.37, 8, false).0[1], 0.05);
    }

    #[test]
    fn bands_error_bars_and_marks_are_drawn() {
        let band = |x: f64, s: f64| BandPoint { x, survival: s, low: s - 0.2, high: (s + 0.1).min(1.0) };
        let onset = Figure::Onset {
            x_label: "turns".into(),
            integer: true,
            curves: vec![Curve { set: 0, points: vec![band(0.0, 1.0), band(2.0, 0.6), band(5.0, 0.4)] }],
            legend: vec![LegendEntry { label: "a".into(), note: "breaks later".into(), significant: true }],
        };
        let svg = onset.svg().unwrap();
        assert!(svg.contains("<polygon") && svg.contains("0.14"), "no shaded band: {svg}");
        assert!(svg.contains("★ breaks later"), "the legend says it in words");
        let whisker = |e: f64, significant| Some(Whisker { estimate: e, low: e - 0.1, high: e + 0.1, significant });
        let forest = Figure::Forest {
            x_label: "share".into(),
            percent: true,
            rows: vec![ForestRow {
                name: "single_turn_loop".into(),
                values: vec![whisker(0.5, false), whisker(0.2, true)],
            }],
            legend: vec![],
        };
        let svg = forest.svg().unwrap();
        assert_eq!(svg.matches('★').count(), 1, "one significant difference, one mark");
        assert!(svg.contains("single turn loop") && svg.contains("100%"), "{svg}");
    }

    #[test]
    fn heatmap_draws_only_similar_cells() {
        let cells = vec![vec![1.0, 0.0, 0.9], vec![0.0, 1.0, 0.0], vec![0.9, 0.0, 1.0]];
        let svg = Figure::Heatmap { cells, bin: 1, messages: 3 }.svg().unwrap();
        // 5 cells above the floor, 10 colour-bar steps, plus the background rectangles of the areas.
        let rects = svg.matches("<rect").count();
        assert!((15..20).contains(&rects), "{rects}");
        // Equal neighbours merge: a uniform 4 × 4 matrix is 4 row rectangles.
        let uniform = Figure::Heatmap { cells: vec![vec![0.95; 4]; 4], bin: 1, messages: 4 }.svg().unwrap();
        assert_eq!(uniform.matches("<rect").count(), rects - 5 + 4);
        assert_eq!((heat_level(0.01), heat_level(0.05), heat_level(1.0)), (None, Some(0), Some(9)));
    }

    #[test]
    fn styles_differ_for_twenty_sets() {
        let styles: Vec<SetStyle> = (0..20).map(set_style).collect();
        for i in 0..20 {
            for j in 0..i {
                assert_ne!(styles[i], styles[j]);
            }
        }
        assert_eq!(set_color_hex(0), "#1f77b4");
        assert_eq!(heat_color(0.0), RGBColor(255, 255, 255));
        assert_eq!([tick(&800.0), tick(&0.25), tick(&0.0), tick(&12.4)], ["800", "0.25", "0", "12"]);
    }
}
