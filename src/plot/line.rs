//! A line chart with a legend, for curves: loss per epoch, ROC and precision-recall; [`SideBySide`]
//! puts several in one figure.
//!
//! ```ignore
//! let chart = line_chart(vec![Series::new("train", train_loss), Series::new("validation", val_loss)],
//!     "epoch", "loss", "Training loss");
//! plot::write_files(&outdir.join("loss"), &chart)?;          // loss.svg + loss.png
//! let roc = line_chart(curves, "false positive rate", "true positive rate", "ROC")
//!     .x_range(0.0..1.0).y_range(0.0..1.0);
//! ```

use std::ops::Range;

use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{font, mesh, padded, series_colour, Area, Canvas, Drawing, AXIS, INK, MUTED};

/// One named series: points in drawing order (NaN points are left out), drawn as `mark`. An
/// empty name keeps it out of the legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub mark: Mark,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A line through the points, in the next palette colour.
    Line,
    /// A line with a dot on each point (for few points, e.g. one per epoch).
    Dots,
    /// A ring around each point, in the colour of the series before it: singles out points of
    /// that series (e.g. the best epoch).
    Ring,
    /// A thin grey line that takes no palette colour (e.g. chance on a ROC curve).
    Reference,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            mark: Mark::Line,
        }
    }

    /// The same series drawn as `mark`.
    pub fn mark(mut self, mark: Mark) -> Self {
        self.mark = mark;
        self
    }
}

/// A titled line chart: one coloured line per series, a legend in the top right corner, axis
/// titles, ranges from the data (padded) unless set. Implements [`Drawing`], so it is written with
/// `plot::write_files` or `plot::write_to_set`.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub x_range: Option<Range<f64>>,
    pub y_range: Option<Range<f64>>,
    pub size: (u32, u32),
    /// Label only whole x values (e.g. epochs).
    pub whole_x: bool,
    pub legend: SeriesLabelPosition,
    /// Text in the middle of the plotting area (e.g. why a curve is missing).
    pub note: Option<String>,
}

/// A 1000 x 640 line chart of `series`, the ranges fitted to the data.
pub fn line_chart(series: Vec<Series>, x_label: &str, y_label: &str, title: &str) -> LineChart {
    LineChart {
        title: title.to_string(),
        x_label: x_label.to_string(),
        y_label: y_label.to_string(),
        series,
        x_range: None,
        y_range: None,
        size: (1000, 640),
        whole_x: false,
        legend: SeriesLabelPosition::UpperRight,
        note: None,
    }
}

impl LineChart {
    /// A fixed x range (e.g. `0.0..1.0` for ROC curves).
    pub fn x_range(mut self, range: Range<f64>) -> Self {
        self.x_range = Some(range);
        self
    }

    /// A fixed y range.
    pub fn y_range(mut self, range: Range<f64>) -> Self {
        self.y_range = Some(range);
        self
    }

    /// Size in pixels (as a figure, or as a panel of [`SideBySide`]).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Label only whole x values.
    pub fn whole_x(mut self) -> Self {
        self.whole_x = true;
        self
    }

    /// Where the legend goes (top right unless set).
    pub fn legend_at(mut self, position: SeriesLabelPosition) -> Self {
        self.legend = position;
        self
    }

    /// Text in the middle of the plotting area.
    pub fn note(mut self, text: impl Into<String>) -> Self {
        self.note = Some(text.into());
        self
    }

    /// The range covering every finite value of one coordinate, padded.
    fn fitted(&self, coord: fn(&(f64, f64)) -> f64) -> Range<f64> {
        let values = self.series.iter().flat_map(|s| s.points.iter().map(coord));
        let (lo, hi) = values
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        if lo <= hi {
            padded(lo, hi)
        } else {
            0.0..1.0
        }
    }
}

impl Drawing for LineChart {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let canvas = Canvas(root);
        let title = font(24, true, &INK, HPos::Left);
        let width = root.dim_in_pixel().0 as i32;
        canvas.text(&self.title, &title, (24, 28), width - 48)?;
        let x_range = self.x_range.clone().unwrap_or_else(|| self.fitted(|p| p.0));
        let y_range = self.y_range.clone().unwrap_or_else(|| self.fitted(|p| p.1));
        let mut chart = ChartBuilder::on(root)
            .margin_left(24)
            .margin_right(32)
            .margin_top(92)
            .margin_bottom(12)
            .x_label_area_size(56)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range, y_range)?;
        // Ticks between whole values stay unlabelled.
        let whole = |x: &f64| match x.round() {
            r if (x - r).abs() < 1e-9 => format!("{r:.0}"),
            _ => String::new(),
        };
        let mut axes = mesh(&mut chart, &self.x_label);
        axes.x_labels(10).y_labels(8);
        if self.whole_x {
            axes.x_label_formatter(&whole);
        }
        axes.draw()?;
        canvas.y_title(&chart, &self.y_label)?;
        let mut palette = 0;
        for s in &self.series {
            let colour = match s.mark {
                Mark::Reference => AXIS,
                Mark::Ring => series_colour(palette.max(1) - 1),
                Mark::Line | Mark::Dots => {
                    palette += 1;
                    series_colour(palette - 1)
                }
            };
            let points = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite());
            let drawn = match s.mark {
                Mark::Reference => {
                    chart.draw_series(LineSeries::new(points, colour.stroke_width(1)))?
                }
                Mark::Line => chart.draw_series(LineSeries::new(points, colour.stroke_width(2)))?,
                // Filled: the dots are discs (the line ignores filling).
                Mark::Dots => chart.draw_series(
                    LineSeries::new(points, colour.filled().stroke_width(2)).point_size(3),
                )?,
                Mark::Ring => {
                    chart.draw_series(points.map(|p| Circle::new(p, 7, colour.stroke_width(2))))?
                }
            };
            if !s.name.is_empty() {
                let ring = s.mark == Mark::Ring;
                drawn.label(s.name.clone()).legend(move |(x, y)| {
                    if ring {
                        Circle::new((x + 12, y), 6, colour.stroke_width(2)).into_dyn()
                    } else {
                        PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
                            .into_dyn()
                    }
                });
            }
        }
        if let Some(note) = &self.note {
            let (xs, ys) = chart.plotting_area().get_pixel_range();
            let (x0, y0) = root.get_base_pixel();
            let centre = ((xs.start + xs.end) / 2 - x0, (ys.start + ys.end) / 2 - y0);
            canvas.text(
                note,
                &font(18, false, &MUTED, HPos::Center),
                centre,
                xs.len() as i32,
            )?;
        }
        if self.series.iter().any(|s| !s.name.is_empty()) {
            chart
                .configure_series_labels()
                .position(self.legend.clone())
                .legend_area_size(32)
                // Placed by its top left corner, line by line.
                .label_font(font(16, false, &INK, HPos::Left).pos(Pos::new(HPos::Left, VPos::Top)))
                .background_style(WHITE.mix(0.9))
                .border_style(super::RULE)
                .draw()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::{png, svg, svg_texts, write_files, SideBySide};

    fn curves() -> LineChart {
        let train: Vec<(f64, f64)> = (1..=30)
            .map(|e| (e as f64, 0.7 * (-(e as f64) / 8.0).exp() + 0.05))
            .collect();
        let val: Vec<(f64, f64)> = (1..=30)
            .map(|e| (e as f64, 0.7 * (-(e as f64) / 10.0).exp() + 0.09))
            .collect();
        line_chart(
            vec![
                Series::new("train", train),
                Series::new("validation <&>", val),
            ],
            "epoch",
            "loss",
            "Training loss",
        )
    }

    #[test]
    fn a_line_chart_has_its_titles_lines_and_legend() {
        let chart = curves();
        let svg = svg(&chart).unwrap();
        let texts = svg_texts(&svg);
        for text in [
            "Training loss",
            "epoch",
            "loss",
            "train",
            "validation &lt;&amp;&gt;",
        ] {
            assert!(texts.contains(&text), "{text} missing from {texts:?}");
        }
        // Each series: its line and its legend mark.
        for i in 0..2 {
            let RGBColor(r, g, b) = series_colour(i);
            let stroke = format!("stroke=\"#{r:02X}{g:02X}{b:02X}\"");
            assert_eq!(svg.matches(&stroke).count(), 2, "{stroke}");
        }
        let png = image::load_from_memory(&png(&chart).unwrap())
            .unwrap()
            .to_rgb8();
        assert_eq!(png.dimensions(), (1000, 640));
        // The series colours are there, and the title is ink on the top strip.
        for i in 0..2 {
            let RGBColor(r, g, b) = series_colour(i);
            assert!(
                png.pixels().any(|p| p.0 == [r, g, b]),
                "series {i} colour missing"
            );
        }
        let title_ink = (0..400u32)
            .flat_map(|x| (10..46u32).map(move |y| (x, y)))
            .filter(|&(x, y)| png.get_pixel(x, y).0.iter().all(|&c| c < 100))
            .count();
        assert!(title_ink > 300, "title ink {title_ink}");
    }

    #[test]
    fn roc_with_fixed_ranges_and_odd_points_writes_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let roc = line_chart(
            vec![
                Series::new(
                    "model",
                    vec![(0.0, 0.0), (0.1, 0.7), (f64::NAN, 0.8), (1.0, 1.0)],
                ),
                Series::new("chance", vec![(0.0, 0.0), (1.0, 1.0)]),
                Series::new("", vec![]),
            ],
            "false positive rate",
            "true positive rate",
            "ROC",
        )
        .x_range(0.0..1.0)
        .y_range(0.0..1.0);
        write_files(&dir.path().join("roc"), &roc).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("roc.svg")).unwrap();
        assert!(svg_texts(&svg).contains(&"false positive rate") && !svg.contains("NaN"));
        assert_eq!(
            &std::fs::read(dir.path().join("roc.png")).unwrap()[..4],
            b"\x89PNG"
        );
        // Nothing to draw at all still makes a figure.
        write_files(
            &dir.path().join("empty"),
            &line_chart(vec![], "x", "y", "empty"),
        )
        .unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    /// The x attribute of the SVG text element reading `text`.
    fn text_x(svg: &str, text: &str) -> f64 {
        let element = svg
            .split("<text")
            .find(|e| svg_texts(&format!("<text{e}")) == [text])
            .unwrap_or_else(|| panic!("no text {text}"));
        let x = element.split_once("x=\"").unwrap().1;
        x.split_once('"').unwrap().0.parse().unwrap()
    }

    #[test]
    fn panels_sit_side_by_side_with_their_own_titles_marks_and_notes() {
        let epochs: Vec<(f64, f64)> = (1..=3).map(|e| (e as f64, 100.0 * e as f64)).collect();
        let left = |whole: bool| {
            let series = vec![
                Series::new("loss", epochs.clone()).mark(Mark::Dots),
                Series::new("best", vec![epochs[1]]).mark(Mark::Ring),
            ];
            let chart = line_chart(series, "epoch", "left y", "Left")
                .x_range(0.5..3.5)
                .size(400, 300);
            if whole {
                chart.whole_x()
            } else {
                chart
            }
        };
        let right = |whole: bool| {
            let chance = Series::new("", vec![(0.0, 0.0), (1.0, 1.0)]).mark(Mark::Reference);
            let chart = line_chart(vec![chance], "x", "right y", "Right")
                .note("nothing here")
                .size(300, 280);
            [left(whole), chart]
        };
        let fig = SideBySide(right(true).into());
        assert_eq!(fig.size(), (700, 300));
        let svg = svg(&fig).unwrap();
        let texts = svg_texts(&svg);
        for text in [
            "Left",
            "left y",
            "loss",
            "best",
            "Right",
            "right y",
            "nothing here",
        ] {
            assert!(texts.contains(&text), "{text} missing from {texts:?}");
        }
        // Each panel's titles and note lie in its own columns.
        assert!(text_x(&svg, "Left") < 100.0 && text_x(&svg, "left y") < 100.0);
        assert!((400.0..500.0).contains(&text_x(&svg, "Right")));
        assert!((400.0..500.0).contains(&text_x(&svg, "right y")));
        assert!((450.0..650.0).contains(&text_x(&svg, "nothing here")));
        // Whole x values only: epoch 2 is labelled, the tick at 1.5 is not.
        assert!(texts.contains(&"2") && !texts.contains(&"1.5"), "{texts:?}");
        let plain = crate::plot::svg(&SideBySide(right(false).into())).unwrap();
        assert!(svg_texts(&plain).contains(&"1.5"));
        // The ring takes the colour of the series it marks; the reference line takes none.
        let RGBColor(r, g, b) = series_colour(0);
        let first = format!("stroke=\"#{r:02X}{g:02X}{b:02X}\"");
        let RGBColor(r, g, b) = series_colour(1);
        let second = format!("stroke=\"#{r:02X}{g:02X}{b:02X}\"");
        assert!(svg.matches(&first).count() >= 4 && !svg.contains(&second));
    }
}
