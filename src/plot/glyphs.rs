//! Bitmap text drawn glyph by glyph with ab_glyph, each glyph where the font puts it.
//!
//! plotters' own ab_glyph renderer starts every glyph's bitmap at the pen, dropping the glyph's
//! left side bearing, which makes letter spacing uneven ("con tig"). This wrapper hands all
//! shapes to the backend it wraps and draws text itself: the same width and anchor as plotters
//! measures (advances and kerning), the same baseline, but each outline placed at its true
//! position, sub-pixel included.

use ab_glyph::{point, Font, FontRef, ScaleFont};
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
    FontStyle, FontTransform,
};

/// A drawing backend that draws text with DejaVu Sans and everything else through `inner`.
pub struct Glyphs<DB> {
    inner: DB,
    regular: Option<FontRef<'static>>,
    bold: Option<FontRef<'static>>,
}

impl<DB: DrawingBackend> Glyphs<DB> {
    pub fn new(inner: DB) -> Self {
        Glyphs {
            inner,
            regular: FontRef::try_from_slice(dejavu::sans::regular()).ok(),
            bold: FontRef::try_from_slice(dejavu::sans::bold()).ok(),
        }
    }
}

type Drawn<E> = Result<(), DrawingErrorKind<E>>;

impl<DB: DrawingBackend> DrawingBackend for Glyphs<DB> {
    type ErrorType = DB::ErrorType;

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Drawn<DB::ErrorType> {
        let face = match style.style() {
            FontStyle::Bold => self.bold.as_ref(),
            _ => self.regular.as_ref(),
        };
        let colour = style.color();
        let (Some(face), FontTransform::None) = (face, style.transform()) else {
            // Rotated text (not used by our figures) or no font: plotters' own renderer.
            return self.inner.draw_text(text, style, pos);
        };
        let ((x0, y0), (x1, y1)) = style
            .layout_box(text)
            .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let left = pos.0
            + match style.anchor().h_pos {
                HPos::Left => 0,
                HPos::Center => -(x1 - x0) / 2,
                HPos::Right => -(x1 - x0),
            };
        let top = pos.1
            + match style.anchor().v_pos {
                VPos::Top => 0,
                VPos::Center => -(y1 - y0) / 2,
                VPos::Bottom => -(y1 - y0),
            };
        // plotters' layout puts the baseline half the font size below the box's top.
        let size = style.size() as f32;
        let font = face.as_scaled(size);
        let baseline = top as f32 + (size / 2.0).trunc();
        let mut caret = left as f32;
        let mut previous = None;
        let mut coverage = Vec::new();
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = previous {
                caret += font.kern(p, id);
            }
            previous = Some(id);
            let glyph = id.with_scale_and_position(font.scale(), point(caret, baseline));
            caret += font.h_advance(id);
            if let Some(outline) = font.outline_glyph(glyph) {
                let at = outline.px_bounds().min;
                outline.draw(|x, y, v| {
                    coverage.push((at.x as i32 + x as i32, at.y as i32 + y as i32, v))
                });
            }
        }
        for (x, y, v) in coverage {
            let alpha = colour.alpha * v.clamp(0.0, 1.0) as f64;
            self.inner.draw_pixel(
                (x, y),
                BackendColor {
                    alpha,
                    rgb: colour.rgb,
                },
            )?;
        }
        Ok(())
    }

    // Shapes: the wrapped backend (paths, circles and polygons reach it through these).
    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> Drawn<DB::ErrorType> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Drawn<DB::ErrorType> {
        self.inner.present()
    }
    fn draw_pixel(&mut self, at: BackendCoord, colour: BackendColor) -> Drawn<DB::ErrorType> {
        self.inner.draw_pixel(at, colour)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Drawn<DB::ErrorType> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Drawn<DB::ErrorType> {
        self.inner.draw_rect(from, to, style, fill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::prelude::*;

    /// Columns of `rgb` (width `w`) holding any non-white pixel.
    fn inked_columns(rgb: &[u8], w: usize) -> Vec<usize> {
        let mut cols: Vec<usize> = rgb
            .chunks(3)
            .enumerate()
            .filter(|(_, p)| p.iter().any(|&c| c < 200))
            .map(|(i, _)| i % w)
            .collect();
        cols.sort_unstable();
        cols.dedup();
        cols
    }

    fn draw(text: &str, h: HPos) -> Vec<u8> {
        super::super::register_fonts().unwrap();
        let mut rgb = vec![255u8; 200 * 60 * 3];
        {
            let root =
                Glyphs::new(BitMapBackend::with_buffer(&mut rgb, (200, 60))).into_drawing_area();
            let style = super::super::font(32, false, &BLACK, h);
            root.draw_text(text, &style, (100, 30)).unwrap();
        }
        rgb
    }

    #[test]
    fn glyphs_keep_their_side_bearing() {
        // "l" in DejaVu Sans has a wide left bearing: its ink starts right of the pen (x = 100),
        // where plotters' renderer would put it at the pen.
        let cols = inked_columns(&draw("l", HPos::Left), 200);
        assert!(cols[0] >= 102, "{cols:?}");
        // Centred text is centred on its anchor, to a pixel or two.
        let cols = inked_columns(&draw("HH", HPos::Center), 200);
        let (first, last) = (cols[0] as i32, *cols.last().unwrap() as i32);
        assert!(((first + last) / 2 - 100).abs() <= 2, "{first}..{last}");
        // Ink for the whole string: the two "o" of "oo" do not overlap.
        assert!(
            inked_columns(&draw("oo", HPos::Left), 200).len()
                > inked_columns(&draw("o", HPos::Left), 200).len() * 3 / 2
        );
    }
}
