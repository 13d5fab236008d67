//! The prediction figure: the original VirNucPro's per-sequence score plot, done well.
//!
//! Left: for the sequences with the highest virus score, the best ORF virus score of each chunk
//! along the sequence (one line per sequence, points coloured by the chunk's call, a dashed 0.5
//! threshold), with a legend naming the sequences. Right: a histogram of every ORF's virus score.
//! Written as `<stem>.svg` and `<stem>.png`, each atomically (temporary file beside the final
//! name, renamed when complete).
//!
//! PNG text is drawn from the embedded DejaVu Sans font, so no system font library is needed;
//! the SVG names the generic `sans-serif` family. plotters' ab_glyph renderer drops each glyph's
//! left side bearing, which makes letter spacing uneven ("con tig"), so bitmap text is laid out
//! here glyph by glyph with the bearing read from the font's own tables; axes, ticks and labels
//! are drawn here too, so every piece of text goes through that path.

use std::ops::Range;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

/// One chunk of one input sequence: its position (1-based chunk number) and the best virus
/// score over its ORFs, and the chunk call.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPoint {
    pub chunk: usize,
    pub max_virus_score: f32,
    pub is_virus: bool,
}

/// One input sequence with its chunks in order, its sequence-level call and a ranking score.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceTrack {
    pub id: String,
    pub chunks: Vec<ChunkPoint>,
    pub is_virus: bool,
    pub max_virus_score: f32,
}

/// Figure size in pixels (SVG user units).
const SIZE: (u32, u32) = (1400, 700);
/// Histogram bins over the virus score range 0..1.
const BINS: usize = 20;
/// Font family name: registered with DejaVu Sans for the bitmap, a generic CSS family in the SVG.
const FONT: &str = "sans-serif";

const VIRUS: RGBColor = RGBColor(206, 44, 52);
const OTHERS: RGBColor = RGBColor(52, 109, 178);
const INK: RGBColor = RGBColor(34, 34, 34);
const MUTED: RGBColor = RGBColor(105, 105, 105);
const AXIS: RGBColor = RGBColor(120, 120, 120);
const GRID: RGBColor = RGBColor(228, 228, 228);
const RULE: RGBColor = RGBColor(215, 215, 215);
const THRESHOLD: RGBColor = RGBColor(110, 110, 110);

/// Line colours for the drawn sequences: distinct from each other and from the call colours
/// (red / blue), which the points carry.
const SEQUENCE_COLOURS: [RGBColor; 10] = [
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

/// Line colour of the sequence at `rank`: the palette, then a darker round of it, then again.
fn sequence_colour(rank: usize) -> RGBColor {
    let RGBColor(r, g, b) = SEQUENCE_COLOURS[rank % SEQUENCE_COLOURS.len()];
    if (rank / SEQUENCE_COLOURS.len()) % 2 == 1 {
        let dark = |c: u8| (c as f64 * 0.6).round() as u8;
        RGBColor(dark(r), dark(g), dark(b))
    } else {
        RGBColor(r, g, b)
    }
}

/// Write `<stem>.svg` and `<stem>.png` (e.g. stem = outdir/prediction): left, up to `top_n`
/// sequences with the highest `max_virus_score`, each a line of the best ORF virus score per chunk
/// position with points coloured by chunk call and a dashed 0.5 threshold, and a legend naming
/// them; right, a histogram of all per-ORF virus scores (`orf_scores`, 20 bins over 0..1). With
/// nothing scored the figure says "no ORFs scored".
pub fn write_prediction_plots(
    set: &OutputSet,
    stem: &str,
    tracks: &[SequenceTrack],
    orf_scores: &[f32],
    top_n: usize,
) -> Result<()> {
    register_fonts()?;
    let fig = Figure::new(tracks, orf_scores, top_n);
    let [svg_name, png_name] = figure_names(stem);

    let svg_path = set.final_path(&svg_name);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw_figure(&Painter::new(&root, false), &fig)
            .with_context(|| format!("drawing figure {}", svg_path.display()))?;
        root.present()
            .with_context(|| format!("drawing figure {}", svg_path.display()))?;
    }
    set.write(&svg_name, svg.as_bytes())?;

    // Drawn into memory and encoded here (plotters would write the file itself, out of reach of
    // the set's write errors).
    let png_path = set.final_path(&png_name);
    let mut rgb = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        draw_figure(&Painter::new(&root, true), &fig)
            .with_context(|| format!("drawing figure {}", png_path.display()))?;
        root.present()
            .with_context(|| format!("drawing figure {}", png_path.display()))?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, SIZE.0, SIZE.1, image::ColorType::Rgb8)
        .with_context(|| format!("encoding figure {}", png_path.display()))?;
    set.write(&png_name, &png)
}

/// The figure files for `stem`: `<stem>.svg` and `<stem>.png`.
pub fn figure_names(stem: &str) -> [String; 2] {
    [format!("{stem}.svg"), format!("{stem}.png")]
}

use crate::output::OutputSet;

// ---------------------------------------------------------------------------------------------
// Data

/// One drawn sequence: display label, calls and chunks sorted by position.
struct Drawn {
    label: String,
    is_virus: bool,
    max_virus_score: f32,
    points: Vec<(i64, f64, bool)>,
}

/// Everything the drawing needs, computed once for both backends.
struct Figure {
    n_sequences: usize,
    n_sequences_virus: usize,
    n_chunks: usize,
    drawn: Vec<Drawn>,
    max_chunk: i64,
    n_orfs: usize,
    n_orfs_virus: usize,
    bins: [u64; BINS],
}

impl Figure {
    fn new(tracks: &[SequenceTrack], orf_scores: &[f32], top_n: usize) -> Self {
        let rank_key = |t: &SequenceTrack| {
            if t.max_virus_score.is_nan() {
                f32::NEG_INFINITY
            } else {
                t.max_virus_score
            }
        };
        let mut order: Vec<&SequenceTrack> =
            tracks.iter().filter(|t| !t.chunks.is_empty()).collect();
        // Stable: ties keep input order.
        order.sort_by(|a, b| rank_key(b).total_cmp(&rank_key(a)));
        order.truncate(top_n);
        let drawn: Vec<Drawn> = order
            .iter()
            .map(|t| {
                let mut points: Vec<(i64, f64, bool)> = t
                    .chunks
                    .iter()
                    .filter(|c| !c.max_virus_score.is_nan())
                    .map(|c| {
                        (
                            c.chunk as i64,
                            c.max_virus_score.clamp(0.0, 1.0) as f64,
                            c.is_virus,
                        )
                    })
                    .collect();
                points.sort_by_key(|p| p.0);
                Drawn {
                    label: clean_id(&t.id),
                    is_virus: t.is_virus,
                    max_virus_score: t.max_virus_score,
                    points,
                }
            })
            .collect();
        let max_chunk = drawn
            .iter()
            .flat_map(|d| d.points.iter().map(|p| p.0))
            .max()
            .unwrap_or(1)
            .max(1);

        let mut bins = [0u64; BINS];
        let mut n_orfs_virus = 0;
        for &s in orf_scores.iter().filter(|s| !s.is_nan()) {
            let s = s.clamp(0.0, 1.0);
            bins[((s * BINS as f32) as usize).min(BINS - 1)] += 1;
            if s >= 0.5 {
                n_orfs_virus += 1;
            }
        }
        Figure {
            n_sequences: tracks.len(),
            n_sequences_virus: tracks.iter().filter(|t| t.is_virus).count(),
            n_chunks: tracks.iter().map(|t| t.chunks.len()).sum(),
            drawn,
            max_chunk,
            n_orfs: orf_scores.len(),
            n_orfs_virus,
            bins,
        }
    }
}

/// An id fit for a label: control characters (invalid in SVG) replaced, whitespace runs
/// collapsed. Length is trimmed later, to the pixels available.
fn clean_id(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if s.is_empty() {
        "(unnamed)".to_string()
    } else {
        s
    }
}

/// `n` with thousands separators.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A short axis label for a count.
fn compact(n: u64) -> String {
    fn trim_zero(v: f64) -> String {
        let s = if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    }
    match n {
        0..=99_999 => thousands(n),
        100_000..=999_999 => format!("{}k", trim_zero(n as f64 / 1e3)),
        _ => format!("{}M", trim_zero(n as f64 / 1e6)),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        thousands(n as u64),
        if n == 1 { one } else { many }
    )
}

/// A tick step of 1, 2 or 5 times a power of ten giving about `target` ticks over `span`.
fn nice_step(span: f64, target: usize) -> f64 {
    let raw = (span / target.max(1) as f64).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let r = raw / mag;
    let f = if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

// ---------------------------------------------------------------------------------------------
// Text

/// Register DejaVu Sans (regular and bold) for bitmap text, once per process.
fn register_fonts() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "cannot load the embedded DejaVu Sans font for the figure"
        ))
    }
}

/// The bits of a TrueType font needed to place glyphs the way ab_glyph rasterises them: the
/// character map, left side bearings and the height that ab_glyph scales to the pixel size.
struct FontMetrics {
    data: &'static [u8],
    cmap: Cmap,
    hmtx: usize,
    n_hmetrics: usize,
    num_glyphs: usize,
    /// Ascender minus descender, in font units (ab_glyph's `height_unscaled`).
    height: f64,
}

enum Cmap {
    /// Offset of a format 12 subtable (full Unicode).
    Segmented(usize),
    /// Offset of a format 4 subtable (Basic Multilingual Plane).
    Bmp(usize),
}

fn be_u16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn be_i16(d: &[u8], at: usize) -> Option<i16> {
    be_u16(d, at).map(|v| v as i16)
}

fn be_u32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

impl FontMetrics {
    fn parse(data: &'static [u8]) -> Option<Self> {
        let n_tables = be_u16(data, 4)? as usize;
        let table = |tag: &[u8; 4]| -> Option<usize> {
            (0..n_tables)
                .map(|i| 12 + 16 * i)
                .find(|&rec| data.get(rec..rec + 4) == Some(&tag[..]))
                .and_then(|rec| be_u32(data, rec + 8))
                .map(|o| o as usize)
        };
        let hhea = table(b"hhea")?;
        let (mut ascender, mut descender) = (be_i16(data, hhea + 4)?, be_i16(data, hhea + 6)?);
        // As ttf-parser: OS/2 typographic metrics when its USE_TYPO_METRICS bit is set.
        if let Some(os2) = table(b"OS/2") {
            if be_u16(data, os2 + 62)? & (1 << 7) != 0 {
                ascender = be_i16(data, os2 + 68)?;
                descender = be_i16(data, os2 + 70)?;
            }
        }
        let cmap_at = table(b"cmap")?;
        let mut bmp = None;
        let mut full = None;
        for i in 0..be_u16(data, cmap_at + 2)? as usize {
            let rec = cmap_at + 4 + 8 * i;
            let (platform, encoding) = (be_u16(data, rec)?, be_u16(data, rec + 2)?);
            let sub = cmap_at + be_u32(data, rec + 4)? as usize;
            let unicode = platform == 0 || (platform == 3 && (encoding == 1 || encoding == 10));
            match be_u16(data, sub)? {
                4 if unicode => bmp = bmp.or(Some(sub)),
                12 if unicode => full = full.or(Some(sub)),
                _ => {}
            }
        }
        let cmap = match (full, bmp) {
            (Some(f), _) => Cmap::Segmented(f),
            (None, Some(b)) => Cmap::Bmp(b),
            (None, None) => return None,
        };
        Some(FontMetrics {
            data,
            cmap,
            hmtx: table(b"hmtx")?,
            n_hmetrics: be_u16(data, hhea + 34)? as usize,
            num_glyphs: be_u16(data, table(b"maxp")? + 4)? as usize,
            height: (ascender as f64 - descender as f64).max(1.0),
        })
    }

    fn glyph(&self, c: char) -> usize {
        self.lookup(c as u32).unwrap_or(0)
    }

    fn lookup(&self, c: u32) -> Option<usize> {
        let d = self.data;
        match self.cmap {
            Cmap::Segmented(sub) => {
                let groups = be_u32(d, sub + 12)? as usize;
                let (mut lo, mut hi) = (0usize, groups);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    let g = sub + 16 + 12 * mid;
                    let (start, end) = (be_u32(d, g)?, be_u32(d, g + 4)?);
                    if c < start {
                        hi = mid;
                    } else if c > end {
                        lo = mid + 1;
                    } else {
                        return Some((be_u32(d, g + 8)? + (c - start)) as usize);
                    }
                }
                None
            }
            Cmap::Bmp(sub) => {
                let c = u16::try_from(c).ok()?;
                let seg_x2 = be_u16(d, sub + 6)? as usize;
                let ends = sub + 14;
                let starts = ends + seg_x2 + 2;
                let deltas = starts + seg_x2;
                let ranges = deltas + seg_x2;
                let seg =
                    (0..seg_x2 / 2).find(|&i| be_u16(d, ends + 2 * i).is_some_and(|e| e >= c))?;
                let start = be_u16(d, starts + 2 * seg)?;
                if c < start {
                    return None;
                }
                let delta = be_u16(d, deltas + 2 * seg)?;
                let range = be_u16(d, ranges + 2 * seg)? as usize;
                let g = if range == 0 {
                    c.wrapping_add(delta)
                } else {
                    let at = ranges + 2 * seg + range + 2 * (c - start) as usize;
                    match be_u16(d, at)? {
                        0 => 0,
                        g => g.wrapping_add(delta),
                    }
                };
                Some(g as usize)
            }
        }
    }

    /// Left side bearing of a glyph, in font units.
    fn left_bearing(&self, glyph: usize) -> f64 {
        let glyph = glyph.min(self.num_glyphs.saturating_sub(1));
        let at = if glyph < self.n_hmetrics {
            self.hmtx + 4 * glyph + 2
        } else {
            self.hmtx + 4 * self.n_hmetrics + 2 * (glyph - self.n_hmetrics)
        };
        be_i16(self.data, at).unwrap_or(0) as f64
    }

    /// Advance width of a glyph, in font units.
    #[cfg(test)]
    fn advance(&self, glyph: usize) -> f64 {
        let i = glyph.min(self.n_hmetrics.saturating_sub(1));
        be_u16(self.data, self.hmtx + 4 * i).unwrap_or(0) as f64
    }

    /// Pixel offset from the pen to where ab_glyph puts the glyph's bitmap at `size`.
    fn ink_offset(&self, c: char, size: f64) -> i32 {
        (self.left_bearing(self.glyph(c)) * size / self.height).floor() as i32
    }
}

fn metrics(bold: bool) -> Option<&'static FontMetrics> {
    static REGULAR: OnceLock<Option<FontMetrics>> = OnceLock::new();
    static BOLD: OnceLock<Option<FontMetrics>> = OnceLock::new();
    if bold {
        BOLD.get_or_init(|| FontMetrics::parse(dejavu::sans::bold()))
            .as_ref()
    } else {
        REGULAR
            .get_or_init(|| FontMetrics::parse(dejavu::sans::regular()))
            .as_ref()
    }
}

/// Text font. Use even sizes: plotters' ab_glyph renderer truncates `size / 2` when placing a
/// glyph vertically, so odd sizes set short glyphs ("." and "·") a pixel off the baseline.
#[derive(Clone, Copy)]
struct Font {
    size: u32,
    bold: bool,
    colour: RGBColor,
}

const fn regular(size: u32) -> Font {
    Font {
        size,
        bold: false,
        colour: INK,
    }
}

const fn bold(size: u32) -> Font {
    Font {
        size,
        bold: true,
        colour: INK,
    }
}

const fn muted(size: u32) -> Font {
    Font {
        size,
        bold: false,
        colour: MUTED,
    }
}

impl Font {
    const fn colour(self, colour: RGBColor) -> Font {
        Font { colour, ..self }
    }

    fn style(&self, h: HPos) -> TextStyle<'static> {
        let style = if self.bold {
            FontStyle::Bold
        } else {
            FontStyle::Normal
        };
        (FONT, self.size, style)
            .into_font()
            .color(&self.colour)
            .pos(Pos::new(h, VPos::Center))
    }
}

/// Draws on the whole figure in pixel coordinates. On a bitmap, text goes glyph by glyph (see
/// the module comment); in SVG it is one `<text>` element, anchored by the viewer.
struct Painter<'a, DB: DrawingBackend> {
    root: &'a DrawingArea<DB, Shift>,
    per_glyph: bool,
}

impl<'a, DB: DrawingBackend> Painter<'a, DB>
where
    DB::ErrorType: 'static,
{
    fn new(root: &'a DrawingArea<DB, Shift>, per_glyph: bool) -> Self {
        Painter { root, per_glyph }
    }

    fn width(&self, text: &str, font: Font) -> Result<i32> {
        Ok(self
            .root
            .estimate_text_size(text, &font.style(HPos::Left))?
            .0 as i32)
    }

    /// Draw `text` at `x` (its left edge, centre or right edge per `h`), centred on `y`; returns
    /// its width.
    fn text(&self, text: &str, font: Font, (x, y): (i32, i32), h: HPos) -> Result<i32> {
        let width = self.width(text, font)?;
        let glyphs = if self.per_glyph {
            metrics(font.bold)
        } else {
            None
        };
        let Some(m) = glyphs else {
            self.root.draw_text(text, &font.style(h), (x, y))?;
            return Ok(width);
        };
        let left = match h {
            HPos::Left => x,
            HPos::Center => x - width / 2,
            HPos::Right => x - width,
        };
        let style = font.style(HPos::Left);
        // The pen from plotters' own layout of the prefix (advances and kerning), measured at
        // 8x size for sub-pixel precision: ab_glyph does no hinting, so widths scale linearly.
        let fine = Font {
            size: font.size * 8,
            ..font
        };
        let mut buf = [0u8; 4];
        for (i, c) in text.char_indices() {
            if c.is_whitespace() {
                continue;
            }
            let pen = if i == 0 {
                0.0
            } else {
                self.width(&text[..i], fine)? as f64 / 8.0
            };
            let x = left + pen.round() as i32 + m.ink_offset(c, font.size as f64);
            self.root
                .draw_text(c.encode_utf8(&mut buf), &style, (x, y))?;
        }
        Ok(width)
    }

    /// `text`, shortened with an ellipsis until it fits in `max_width` pixels.
    fn fit(&self, text: &str, font: Font, max_width: i32) -> Result<String> {
        if self.width(text, font)? <= max_width {
            return Ok(text.to_string());
        }
        let chars: Vec<char> = text.chars().collect();
        let shortened =
            |n: usize| chars[..n].iter().collect::<String>().trim_end().to_string() + "…";
        // Longest prefix (plus ellipsis) that fits, by binary search over the prefix length.
        let (mut lo, mut hi) = (0usize, chars.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.width(&shortened(mid), font)? <= max_width {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(shortened(lo))
    }

    fn line(&self, points: Vec<(i32, i32)>, colour: RGBColor, width: u32) -> Result<()> {
        self.root
            .draw(&PathElement::new(points, colour.stroke_width(width)))?;
        Ok(())
    }

    fn dashed(&self, from: (i32, i32), to: (i32, i32), colour: RGBColor) -> Result<()> {
        self.root.draw(&DashedPathElement::new(
            vec![from, to],
            8,
            5,
            colour.stroke_width(2),
        ))?;
        Ok(())
    }

    fn dot(&self, at: (i32, i32), radius: i32, colour: RGBColor) -> Result<()> {
        self.root.draw(&Circle::new(at, radius, colour.filled()))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Drawing

/// Pixel box of an area of the figure.
fn bounds<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> (Range<i32>, Range<i32>) {
    area.get_pixel_range()
}

fn draw_figure<DB: DrawingBackend>(p: &Painter<DB>, fig: &Figure) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let root = p.root;
    root.fill(&WHITE)?;
    let (w, h) = root.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let header_h = 60;

    let title = "VirNucPro prediction";
    let title_w = p.text(title, bold(28), (24, 30), HPos::Left)?;
    let nothing = fig.n_orfs == 0 && fig.drawn.is_empty();
    let summary = format!(
        "{} ({} viral)  ·  {}  ·  {} scored",
        plural(fig.n_sequences, "sequence", "sequences"),
        thousands(fig.n_sequences_virus as u64),
        plural(fig.n_chunks, "chunk", "chunks"),
        plural(fig.n_orfs, "ORF", "ORFs"),
    );
    let room = w - 24 - (24 + title_w + 28);
    let summary = p.fit(&summary, muted(18), room)?;
    p.text(&summary, muted(18), (24 + title_w + 28, 31), HPos::Left)?;
    p.line(vec![(24, header_h - 2), (w - 24, header_h - 2)], RULE, 1)?;

    if nothing {
        let mid = (header_h + h) / 2;
        p.text("no ORFs scored", muted(40), (w / 2, mid - 10), HPos::Center)?;
        p.text(
            "no ORF had both a DNA and a protein embedding to classify",
            muted(18),
            (w / 2, mid + 36),
            HPos::Center,
        )?;
        return Ok(());
    }

    let (_, body) = root.split_vertically(header_h);
    let (left, right) = body.split_horizontally(w * 64 / 100);
    draw_tracks(p, &left, fig)?;
    draw_histogram(p, &right, fig)?;
    Ok(())
}

/// Panel header: a bold heading and, unless empty, a muted line under it. Returns the body.
fn panel<DB: DrawingBackend>(
    p: &Painter<DB>,
    area: &DrawingArea<DB, Shift>,
    heading: &str,
    sub: &str,
) -> Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    let (xs, ys) = bounds(area);
    let room = xs.end - xs.start - 48;
    let heading = p.fit(heading, bold(20), room)?;
    p.text(
        &heading,
        bold(20),
        (xs.start + 24, ys.start + 24),
        HPos::Left,
    )?;
    if !sub.is_empty() {
        let sub = p.fit(sub, muted(16), room)?;
        p.text(&sub, muted(16), (xs.start + 24, ys.start + 50), HPos::Left)?;
    }
    Ok(area.split_vertically(68).1)
}

/// Gridlines under the data; call before drawing it.
fn draw_grid<DB: DrawingBackend>(
    p: &Painter<DB>,
    plot: &(Range<i32>, Range<i32>),
    x_ticks: &[(i32, String)],
    y_ticks: &[(i32, String)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (xs, ys) = plot;
    for (y, _) in y_ticks {
        p.line(vec![(xs.start, *y), (xs.end, *y)], GRID, 1)?;
    }
    for (x, _) in x_ticks {
        p.line(vec![(*x, ys.start), (*x, ys.end)], GRID, 1)?;
    }
    Ok(())
}

/// Axis lines, ticks, tick labels and titles: the x title centred under the axis, the y title
/// level with the top of the y axis (horizontal, so it reads easily and never collides).
fn draw_axes<DB: DrawingBackend>(
    p: &Painter<DB>,
    plot: &(Range<i32>, Range<i32>),
    x_ticks: &[(i32, String)],
    y_ticks: &[(i32, String)],
    x_title: &str,
    y_title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (xs, ys) = plot;
    let (x0, y1) = (xs.start, ys.end - 1);
    p.line(vec![(x0, ys.start), (x0, y1)], AXIS, 1)?;
    p.line(vec![(x0, y1), (xs.end, y1)], AXIS, 1)?;
    let label = regular(16).colour(RGBColor(60, 60, 60));
    for (x, text) in x_ticks {
        p.line(vec![(*x, y1), (*x, y1 + 5)], AXIS, 1)?;
        p.text(text, label, (*x, y1 + 17), HPos::Center)?;
    }
    for (y, text) in y_ticks {
        p.line(vec![(x0 - 5, *y), (x0, *y)], AXIS, 1)?;
        p.text(text, label, (x0 - 9, *y), HPos::Right)?;
    }
    p.text(
        x_title,
        regular(16),
        ((xs.start + xs.end) / 2, y1 + 44),
        HPos::Center,
    )?;
    p.text(y_title, muted(16), (x0 - 8, ys.start - 16), HPos::Left)?;
    Ok(())
}

fn draw_tracks<DB: DrawingBackend>(
    p: &Painter<DB>,
    area: &DrawingArea<DB, Shift>,
    fig: &Figure,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let heading = if fig.drawn.is_empty() {
        "Sequences".to_string()
    } else if fig.drawn.len() < fig.n_sequences {
        format!(
            "Top {} of {} by virus score",
            fig.drawn.len(),
            plural(fig.n_sequences, "sequence", "sequences")
        )
    } else {
        format!(
            "{} by virus score",
            plural(fig.n_sequences, "sequence", "sequences")
        )
    };
    let body = panel(
        p,
        area,
        &heading,
        "best ORF virus score of each chunk along the sequence; point colour = chunk call",
    )?;
    let (bx, by) = bounds(&body);
    if fig.drawn.is_empty() {
        p.text(
            "no sequences to draw",
            muted(28),
            ((bx.start + bx.end) / 2, (by.start + by.end) / 2),
            HPos::Center,
        )?;
        return Ok(());
    }

    let legend_w = 262;
    let (plot_area, legend) = body.split_horizontally((bx.end - bx.start - legend_w).max(1));
    let max_chunk = fig.max_chunk;
    let chart = ChartBuilder::on(&plot_area)
        .margin_left(20)
        .margin_right(16)
        .margin_top(30)
        .margin_bottom(12)
        .x_label_area_size(52)
        .y_label_area_size(40)
        .build_cartesian_2d(0i64..max_chunk + 1, -0.03f64..1.03f64)?;
    let plot = chart.plotting_area().get_pixel_range();

    let step = nice_step(max_chunk as f64, 10).max(1.0) as i64;
    let mut xs: Vec<i64> = (1..=max_chunk / step).map(|k| k * step).collect();
    if step > 1 && xs.first().is_none_or(|&f| f > step / 2) {
        xs.insert(0, 1);
    }
    let x_ticks: Vec<(i32, String)> = xs
        .iter()
        .map(|&x| (chart.backend_coord(&(x, 0.0)).0, thousands(x as u64)))
        .collect();
    let y_ticks: Vec<(i32, String)> = (0..=5)
        .map(|k| {
            let y = k as f64 * 0.2;
            (chart.backend_coord(&(0, y)).1, format!("{y:.1}"))
        })
        .collect();
    draw_grid(p, &plot, &x_ticks, &y_ticks)?;

    // Point size from the horizontal room per chunk.
    let per_chunk = (plot.0.end - plot.0.start) as f64 / (max_chunk + 1) as f64;
    let radius = (per_chunk / 3.0).clamp(2.0, 5.0).round() as i32;
    let line_w = if per_chunk < 3.0 { 1 } else { 2 };

    // Rank 1 last, so it lies on top; all lines under all points.
    let mut chart = chart;
    for (rank, d) in fig.drawn.iter().enumerate().rev() {
        let colour = sequence_colour(rank);
        chart.draw_series(LineSeries::new(
            d.points.iter().map(|&(x, y, _)| (x, y)),
            colour.stroke_width(line_w),
        ))?;
    }
    // The threshold over the lines, under the points.
    let y_half = chart.backend_coord(&(0, 0.5)).1;
    p.dashed((plot.0.start, y_half), (plot.0.end, y_half), THRESHOLD)?;
    for d in fig.drawn.iter().rev() {
        chart.draw_series(d.points.iter().flat_map(|&(x, y, v)| {
            let call = if v { VIRUS } else { OTHERS };
            [
                Circle::new((x, y), radius + 1, WHITE.filled()),
                Circle::new((x, y), radius, call.filled()),
            ]
        }))?;
    }
    draw_axes(
        p,
        &plot,
        &x_ticks,
        &y_ticks,
        "chunk number along the sequence",
        "max ORF virus score",
    )?;

    draw_legend(p, &legend, fig, plot.1.start - 16)
}

fn draw_legend<DB: DrawingBackend>(
    p: &Painter<DB>,
    area: &DrawingArea<DB, Shift>,
    fig: &Figure,
    top: i32,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (xs, ys) = bounds(area);
    let x0 = xs.start + 6;
    let text_x = x0 + 36;
    let text_w = (xs.end - text_x - 12).max(20);

    // Key to the marks.
    let mut y = top;
    for (colour, label) in [(VIRUS, "virus chunk"), (OTHERS, "others chunk")] {
        p.dot((x0 + 15, y), 5, colour)?;
        p.text(label, regular(16), (text_x, y), HPos::Left)?;
        y += 24;
    }
    p.dashed((x0, y), (x0 + 30, y), THRESHOLD)?;
    p.text("call threshold 0.5", regular(16), (text_x, y), HPos::Left)?;
    y += 20;
    p.line(vec![(x0, y), (xs.end - 16, y)], RULE, 1)?;
    y += 20;

    // Sequences in rank order: two lines each if they fit, one if not, then "+ n more".
    let room = ys.end - 10 - y;
    let n = fig.drawn.len() as i32;
    let two_lines = n * 44 <= room;
    let step = if two_lines { 44 } else { 22 };
    let fits = (room / step).max(0) as usize;
    let listed = if fits >= fig.drawn.len() {
        fig.drawn.len()
    } else {
        fits.saturating_sub(1)
    };
    for (rank, d) in fig.drawn.iter().enumerate().take(listed) {
        let colour = sequence_colour(rank);
        p.line(vec![(x0, y), (x0 + 30, y)], colour, 3)?;
        let call = if d.is_virus { VIRUS } else { OTHERS };
        if two_lines {
            let name = p.fit(&d.label, regular(16), text_w)?;
            p.text(&name, regular(16), (text_x, y), HPos::Left)?;
            let detail = format!(
                "{} · max {} · {}",
                if d.is_virus { "virus" } else { "others" },
                if d.max_virus_score.is_nan() {
                    "n/a".to_string()
                } else {
                    format!("{:.3}", d.max_virus_score)
                },
                plural(d.points.len(), "chunk", "chunks")
            );
            let detail_font = regular(14).colour(call);
            let detail = p.fit(&detail, detail_font, text_w)?;
            p.text(&detail, detail_font, (text_x, y + 18), HPos::Left)?;
        } else {
            p.dot((x0 + 15, y), 4, call)?;
            let name = p.fit(&d.label, regular(14), text_w)?;
            p.text(&name, regular(14), (text_x, y), HPos::Left)?;
        }
        y += step;
    }
    if listed < fig.drawn.len() {
        p.text(
            &format!("+ {} more drawn", fig.drawn.len() - listed),
            muted(14),
            (text_x, y),
            HPos::Left,
        )?;
    }
    Ok(())
}

fn draw_histogram<DB: DrawingBackend>(
    p: &Painter<DB>,
    area: &DrawingArea<DB, Shift>,
    fig: &Figure,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let body = panel(
        p,
        area,
        &format!("Virus score of all {}", plural(fig.n_orfs, "ORF", "ORFs")),
        "",
    )?;
    // The sub-line: the two call counts in their colours.
    let (ax, ay) = bounds(area);
    let mut x = ax.start + 24;
    let n_virus = fig.n_orfs_virus as u64;
    let n_others = (fig.n_orfs - fig.n_orfs_virus) as u64;
    for (colour, text) in [
        (VIRUS, format!("{} virus (≥ 0.5)", thousands(n_virus))),
        (OTHERS, format!("{} others (< 0.5)", thousands(n_others))),
    ] {
        p.root.draw(&Rectangle::new(
            [(x, ay.start + 44), (x + 10, ay.start + 54)],
            colour.filled(),
        ))?;
        x += 16;
        x += p.text(
            &text,
            regular(16).colour(colour),
            (x, ay.start + 50),
            HPos::Left,
        )? + 22;
    }

    let (bx, by) = bounds(&body);
    if fig.n_orfs == 0 {
        p.text(
            "no ORFs scored",
            muted(28),
            ((bx.start + bx.end) / 2, (by.start + by.end) / 2),
            HPos::Center,
        )?;
        return Ok(());
    }

    let peak = fig.bins.iter().copied().max().unwrap_or(0).max(1);
    let y_step = (nice_step(peak as f64, 6).max(1.0)) as u64;
    let y_top = ((peak as f64 * 1.05).ceil() as u64).max(peak + 1);
    // Room for the widest count label.
    let widest = p.width(&compact(peak / y_step * y_step), regular(16))?;
    let mut chart = ChartBuilder::on(&body)
        .margin_left(8)
        .margin_right(28)
        .margin_top(30)
        .margin_bottom(12)
        .x_label_area_size(52)
        .y_label_area_size(widest + 18)
        .build_cartesian_2d(0f64..1f64, 0u64..y_top)?;
    let plot = chart.plotting_area().get_pixel_range();
    let x_ticks: Vec<(i32, String)> = (0..=10)
        .map(|k| {
            let x = k as f64 / 10.0;
            (chart.backend_coord(&(x, 0)).0, format!("{x:.1}"))
        })
        .collect();
    let y_ticks: Vec<(i32, String)> = (0..=y_top / y_step)
        .map(|k| k * y_step)
        .filter(|&y| y <= y_top)
        .map(|y| (chart.backend_coord(&(0.0, y)).1, compact(y)))
        .collect();
    draw_grid(p, &plot, &[], &y_ticks)?;

    let width = 1.0 / BINS as f64;
    chart.draw_series(fig.bins.iter().enumerate().map(|(i, &c)| {
        let lo = i as f64 * width;
        let colour = if lo >= 0.5 { VIRUS } else { OTHERS };
        Rectangle::new(
            [(lo + width * 0.06, 0), (lo + width * 0.94, c)],
            colour.mix(0.85).filled(),
        )
    }))?;
    let x_half = chart.backend_coord(&(0.5, 0)).0;
    p.dashed((x_half, plot.1.start), (x_half, plot.1.end), THRESHOLD)?;
    draw_axes(
        p,
        &plot,
        &x_ticks,
        &y_ticks,
        "ORF virus score (20 bins)",
        "ORFs",
    )?;
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    /// `stem` with `suffix` appended (not `with_extension`, which would eat a dotted stem's tail).
    fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
        let mut s: OsString = stem.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    }

    /// Draw the figures for `stem` (a path) as predict does: staged in an output set, committed.
    fn plot(stem: &Path, tracks: &[SequenceTrack], orfs: &[f32], top_n: usize) -> Result<()> {
        let name = stem.file_name().unwrap().to_str().unwrap();
        let names = figure_names(name);
        let owned: Vec<&str> = names.iter().map(String::as_str).collect();
        let set = OutputSet::begin(stem.parent().unwrap(), "figures.json", &owned)?;
        write_prediction_plots(&set, name, tracks, orfs, top_n)?;
        set.commit(b"{}")
    }

    fn track(id: &str, scores: &[f32]) -> SequenceTrack {
        let chunks: Vec<ChunkPoint> = scores
            .iter()
            .enumerate()
            .map(|(i, &s)| ChunkPoint {
                chunk: i + 1,
                max_virus_score: s,
                is_virus: s >= 0.5,
            })
            .collect();
        let max = scores.iter().copied().fold(0.0f32, f32::max);
        let viral = chunks.iter().filter(|c| c.is_virus).count() * 2 >= chunks.len();
        SequenceTrack {
            id: id.to_string(),
            chunks,
            is_virus: viral,
            max_virus_score: max,
        }
    }

    fn check_outputs(stem: &Path) {
        let svg = std::fs::read_to_string(with_suffix(stem, ".svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        let png = std::fs::read(with_suffix(stem, ".png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 10_000, "png only {} bytes", png.len());
        // Nothing left behind but the two figures.
        let dir = stem.parent().unwrap();
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with('.')),
            "temporary left: {names:?}"
        );
    }

    /// A deterministic pseudo-random score stream.
    fn scores(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (x >> 40) as f32 / (1u64 << 24) as f32;
                // Bimodal, like real classifier output.
                if (x >> 20) & 1 == 0 {
                    u * u * 0.6
                } else {
                    1.0 - u * u * 0.6
                }
            })
            .collect()
    }

    #[test]
    fn writes_svg_and_png_for_a_few_tracks() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("prediction");
        let tracks = vec![
            track(
                "NC_001422.1 Escherichia phage phiX174, complete genome",
                &scores(1, 18),
            ),
            track("contig_2<&>\"odd\"\tid\u{7}", &scores(2, 9)),
            track("single", &[0.93]),
            track("human_chr1_fragment", &[0.02, 0.11, 0.4, 0.07, 0.01]),
            track("", &[0.55, 0.45]),
        ];
        let orfs = scores(3, 900);
        plot(&stem, &tracks, &orfs, 10).unwrap();
        check_outputs(&stem);
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        assert!(svg.contains("&lt;&amp;&gt;"), "odd id characters escaped");
        assert!(!svg.contains('\u{7}'));
        // Overwrites an existing figure.
        plot(&stem, &tracks[..1], &orfs[..10], 10).unwrap();
        check_outputs(&stem);
    }

    #[test]
    fn writes_a_figure_for_zero_tracks() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("prediction");
        plot(&stem, &[], &[], 10).unwrap();
        check_outputs(&stem);
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        assert!(svg.contains("no ORFs scored"));
    }

    #[test]
    fn draws_only_top_n_of_thousands() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("sample.v1.prediction");
        let tracks: Vec<SequenceTrack> = (0..2000)
            .map(|i| track(&format!("seq_{i:05}"), &scores(i as u64, 1 + i % 40)))
            .collect();
        let orfs: Vec<f32> = tracks
            .iter()
            .flat_map(|t| t.chunks.iter().map(|c| c.max_virus_score))
            .collect();
        let started = std::time::Instant::now();
        plot(&stem, &tracks, &orfs, 10).unwrap();
        assert!(started.elapsed().as_secs() < 30);
        // The dotted stem keeps its tail: sample.v1.prediction.svg, not sample.v1.svg.
        check_outputs(&stem);
        let svg = std::fs::read_to_string(with_suffix(&stem, ".svg")).unwrap();
        let fig = Figure::new(&tracks, &orfs, 10);
        assert_eq!(fig.drawn.len(), 10);
        for d in &fig.drawn {
            assert!(svg.contains(&d.label), "{} not in legend", d.label);
        }
        let tenth = fig.drawn[9].max_virus_score;
        assert!(tracks.iter().filter(|t| t.max_virus_score > tenth).count() < 10);
        assert_eq!(fig.bins.iter().sum::<u64>(), orfs.len() as u64);
    }

    #[test]
    fn odd_inputs_still_draw() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("prediction");
        let mut nan = track("nan_scores", &[0.2, 0.9]);
        nan.chunks[0].max_virus_score = f32::NAN;
        nan.max_virus_score = f32::NAN;
        let mut zero_based = track("zero_based", &[0.7, 0.8]);
        zero_based.chunks[0].chunk = 0;
        let tracks = vec![
            nan,
            zero_based,
            track("ウイルス_🦠_contig", &[0.99, 0.98]),
            track("no_chunks", &[]),
            track(&"x".repeat(5000), &[0.6]),
        ];
        let orfs = [0.0, 1.0, 0.5, f32::NAN, -3.0, 7.0];
        plot(&stem, &tracks, &orfs, 10).unwrap();
        check_outputs(&stem);
        // Nothing drawn on the left, the histogram still there.
        plot(&stem, &tracks, &orfs, 0).unwrap();
        check_outputs(&stem);
        let svg = std::fs::read_to_string(with_suffix(&stem, ".svg")).unwrap();
        assert!(svg.contains("no sequences to draw"));
    }

    #[test]
    fn error_names_the_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let stem = dir.path().join("file").join("prediction");
        let err = plot(&stem, &[], &[], 10).unwrap_err();
        assert!(format!("{err:#}").contains("file"), "{err:#}");
    }

    #[test]
    fn helpers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(compact(9999), "9,999");
        assert_eq!(compact(250_000), "250k");
        assert_eq!(compact(1_500_000), "1.5M");
        assert_eq!(nice_step(30.0, 10), 5.0);
        assert_eq!(nice_step(1.0, 10), 0.1);
        assert_eq!(nice_step(1480.0, 6), 500.0);
        assert_eq!(clean_id("a\tb\u{1}c  d"), "a b c d");
        assert_eq!(clean_id("\n"), "(unnamed)");
        assert_eq!(
            with_suffix(Path::new("out/a.b"), ".png"),
            PathBuf::from("out/a.b.png")
        );
    }

    #[test]
    fn font_metrics_match_the_renderer() {
        register_fonts().unwrap();
        for bold_face in [false, true] {
            let m = metrics(bold_face).expect("DejaVu tables parse");
            assert_ne!(m.glyph('A'), 0);
            assert_ne!(m.glyph('…'), 0);
            assert_ne!(m.glyph('≥'), 0);
            assert_eq!(m.glyph('\u{10FFFD}'), 0);
            // 'i' sits further from its pen than 'T' in DejaVu Sans.
            assert!(m.left_bearing(m.glyph('i')) > m.left_bearing(m.glyph('T')));
            // Our scale agrees with plotters' own text measure (ab_glyph), to a pixel.
            let mut svg = String::new();
            let root = SVGBackend::with_string(&mut svg, (100, 100)).into_drawing_area();
            let font = if bold_face { bold(40) } else { regular(40) };
            let text = "MMMMMMMMMMMMMMMMMMMM";
            let measured = root
                .estimate_text_size(text, &font.style(HPos::Left))
                .unwrap()
                .0 as f64;
            let ours = 20.0 * m.advance(m.glyph('M')) * 40.0 / m.height;
            assert!((measured - ours).abs() <= 1.0, "{measured} vs {ours}");
        }
    }
}
