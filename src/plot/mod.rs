//! Figures: one drawing written as `<stem>.svg` and `<stem>.png`, both through the project's
//! atomic outputs, and the house style they share (colours, fonts, axes).
//!
//! A figure is anything implementing [`Drawing`]: plotters draws it twice, once into an SVG
//! string and once into an RGB buffer that is PNG-encoded in memory, so a full disk is reported by
//! our own write like any other output. [`line_chart`] is the ready-made chart for curves (loss
//! per epoch, ROC, PR), [`SideBySide`] puts figures in one (`train::figures`); `predict::plot` is
//! the prediction figure.
//!
//! Text: the SVG names the generic `sans-serif` family (the viewer's font); the PNG is drawn with
//! the embedded DejaVu Sans, so no system font library is needed (HPC nodes and containers often
//! have none). Text is measured by plotters with that font; [`glyphs::Glyphs`] draws it.

mod glyphs;
mod line;

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use image::ImageEncoder;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

pub use line::{line_chart, LineChart, Mark, Series};

use crate::io::output::{write_atomic, OutputSet};

/// Font family name: registered with DejaVu Sans for the bitmap, a generic CSS family in the SVG.
pub const FONT: &str = "sans-serif";
pub const INK: RGBColor = RGBColor(34, 34, 34);
pub const MUTED: RGBColor = RGBColor(105, 105, 105);
pub const AXIS: RGBColor = RGBColor(120, 120, 120);
pub const TICK_LABEL: RGBColor = RGBColor(60, 60, 60);
pub const GRID: RGBColor = RGBColor(228, 228, 228);
pub const RULE: RGBColor = RGBColor(215, 215, 215);

/// Line colours for series: distinct from each other and from red / blue, which the prediction
/// figure keeps for its calls.
const PALETTE: [RGBColor; 10] = [
    RGBColor(27, 158, 119),
    RGBColor(230, 120, 0),
    RGBColor(117, 100, 179),
    RGBColor(102, 166, 30),
    RGBColor(212, 160, 0),
    RGBColor(140, 86, 55),
    RGBColor(199, 60, 160),
    RGBColor(90, 90, 90),
    RGBColor(20, 170, 190),
    RGBColor(150, 150, 40),
];

/// Colour of series `i`: the palette, then a darker round of it, then again.
pub fn series_colour(i: usize) -> RGBColor {
    let RGBColor(r, g, b) = PALETTE[i % PALETTE.len()];
    let dark = |c: u8| (c as f64 * 0.6).round() as u8;
    if (i / PALETTE.len()) % 2 == 1 {
        RGBColor(dark(r), dark(g), dark(b))
    } else {
        RGBColor(r, g, b)
    }
}

/// A picture plotters can draw on any backend: the same code makes the SVG and the PNG.
pub trait Drawing {
    /// Size in pixels (SVG user units).
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// Drawings side by side, left to right, each as wide as its own size; as tall as the tallest.
pub struct SideBySide<D>(pub Vec<D>);

impl<D: Drawing> Drawing for SideBySide<D> {
    fn size(&self) -> (u32, u32) {
        let sizes = self.0.iter().map(Drawing::size);
        sizes.fold((0, 0), |(w, h), (pw, ph)| (w + pw, h.max(ph)))
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let mut rest = root.clone();
        for panel in &self.0 {
            let (area, right) = rest.split_horizontally(panel.size().0);
            panel.draw(&area)?;
            rest = right;
        }
        Ok(())
    }
}

/// The figure files for `stem`: `<stem>.svg` and `<stem>.png`.
pub fn figure_names(stem: &str) -> [String; 2] {
    [format!("{stem}.svg"), format!("{stem}.png")]
}

/// Stage `<stem>.svg` and `<stem>.png` in a step's output set (they appear with its marker).
pub fn write_to_set(set: &OutputSet, stem: &str, fig: &impl Drawing) -> Result<()> {
    let [svg_name, png_name] = figure_names(stem);
    let svg = svg(fig)
        .with_context(|| format!("drawing figure {}", set.final_path(&svg_name).display()))?;
    set.write(&svg_name, svg.as_bytes())?;
    let png = png(fig)
        .with_context(|| format!("drawing figure {}", set.final_path(&png_name).display()))?;
    set.write(&png_name, &png)
}

/// Write `<stem>.svg` and `<stem>.png` on their own, each atomically (for figures outside an
/// output set, e.g. a training run's curves).
pub fn write_files(stem: &Path, fig: &impl Drawing) -> Result<()> {
    for (name, bytes) in figure_names(&stem.to_string_lossy())
        .into_iter()
        .zip([svg(fig).map(String::into_bytes), png(fig)])
    {
        let path = Path::new(&name);
        write_atomic(
            path,
            &bytes.with_context(|| format!("drawing figure {}", path.display()))?,
        )?;
    }
    Ok(())
}

/// The figure as an SVG document.
pub fn svg(fig: &impl Drawing) -> Result<String> {
    register_fonts()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, fig.size()).into_drawing_area();
        fig.draw(&root)?;
        root.present()?;
    }
    Ok(svg)
}

/// The figure as a PNG file's bytes.
pub fn png(fig: &impl Drawing) -> Result<Vec<u8>> {
    register_fonts()?;
    let (w, h) = fig.size();
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let bitmap = BitMapBackend::with_buffer(&mut rgb, (w, h));
        let root = glyphs::Glyphs::new(bitmap).into_drawing_area();
        fig.draw(&root)?;
        root.present()?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, w, h, image::ColorType::Rgb8)
        .context("encoding PNG")?;
    Ok(png)
}

/// Register DejaVu Sans (regular and bold) as [`FONT`] for plotters' text measures, once.
fn register_fonts() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| anyhow!("cannot load the embedded DejaVu Sans font for the figure"))
}

/// Text style: [`FONT`] at `size` pixels, `colour`, vertically centred on its anchor. Use even
/// sizes: plotters places glyphs at `size / 2` truncated, so odd sizes sit a pixel off.
pub fn font(size: u32, bold: bool, colour: &'static RGBColor, h: HPos) -> TextStyle<'static> {
    let face = if bold {
        FontStyle::Bold
    } else {
        FontStyle::Normal
    };
    (FONT, size, face)
        .into_font()
        .color(colour)
        .pos(Pos::new(h, VPos::Center))
}

/// A figure's root area, for text and marks placed by hand in root pixels.
pub struct Canvas<'a, DB: DrawingBackend>(pub &'a Area<DB>);

pub type Area<DB> = DrawingArea<DB, Shift>;

impl<DB: DrawingBackend> Canvas<'_, DB>
where
    DB::ErrorType: 'static,
{
    /// Width of `text` in pixels.
    pub fn width(&self, text: &str, style: &TextStyle) -> Result<i32> {
        Ok(self.0.estimate_text_size(text, style)?.0 as i32)
    }

    /// Draw `text` at `at` (anchored per `style`), shortened with an ellipsis to at most
    /// `max_width` pixels; returns the width drawn.
    pub fn text(
        &self,
        text: &str,
        style: &TextStyle,
        at: (i32, i32),
        max_width: i32,
    ) -> Result<i32> {
        let text = self.fit(text, style, max_width)?;
        self.0.draw_text(&text, style, at)?;
        self.width(&text, style)
    }

    /// `text`, shortened with an ellipsis until it fits in `max_width` pixels.
    fn fit(&self, text: &str, style: &TextStyle, max_width: i32) -> Result<String> {
        if self.width(text, style)? <= max_width {
            return Ok(text.to_string());
        }
        let chars: Vec<char> = text.chars().collect();
        let shortened =
            |n: usize| chars[..n].iter().collect::<String>().trim_end().to_string() + "…";
        // Longest prefix (plus ellipsis) that fits, by binary search over the prefix length.
        let (mut lo, mut hi) = (0usize, chars.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.width(&shortened(mid), style)? <= max_width {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(shortened(lo))
    }

    /// A chart's y axis title, above the top left corner of its plotting area (horizontal, so it
    /// reads easily and never collides with the tick labels).
    pub fn y_title<X: Ranged, Y: Ranged>(
        &self,
        chart: &ChartContext<DB, Cartesian2d<X, Y>>,
        title: &str,
    ) -> Result<()> {
        // Pixel ranges are the backend's; text is placed relative to this area.
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let (x0, y0) = self.0.get_base_pixel();
        let style = font(16, false, &MUTED, HPos::Left);
        self.text(
            title,
            &style,
            (xs.start - 8 - x0, ys.start - 16 - y0),
            i32::MAX,
        )?;
        Ok(())
    }
}

/// The house axes on a chart: gridlines at the key points only, grey axes with 5-pixel ticks,
/// 16-pixel tick labels and the x title centred under the axis (the y title: [`Canvas::y_title`]).
pub fn mesh<'a, 'b, X, Y, XT, YT, DB>(
    chart: &'b mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    x_title: &str,
) -> plotters::chart::MeshStyle<'a, 'b, X, Y, DB>
where
    X: Ranged<ValueType = XT> + ValueFormatter<XT>,
    Y: Ranged<ValueType = YT> + ValueFormatter<YT>,
    DB: DrawingBackend,
{
    let mut mesh = chart.configure_mesh();
    mesh.max_light_lines(0)
        .bold_line_style(GRID)
        .axis_style(AXIS)
        .set_all_tick_mark_size(5)
        .label_style(font(16, false, &TICK_LABEL, HPos::Center))
        .axis_desc_style(font(16, false, &INK, HPos::Center))
        .x_desc(x_title);
    mesh
}

/// A float range padded by 4% on each side (a point's width where the range is empty).
fn padded(lo: f64, hi: f64) -> Range<f64> {
    let pad = if hi > lo { (hi - lo) * 0.04 } else { 0.5 };
    (lo - pad)..(hi + pad)
}

/// The text elements' contents of an SVG written by plotters, in document order.
#[cfg(test)]
pub fn svg_texts(svg: &str) -> Vec<&str> {
    fn content(element: &str) -> Option<&str> {
        Some(element.split_once('>')?.1.split_once("</text>")?.0.trim())
    }
    svg.split("<text").skip(1).filter_map(content).collect()
}
