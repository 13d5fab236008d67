//! Figures of `train` (loss curves and the validation ROC curve) and `evaluate` (ROC and
//! precision–recall curves), drawn with plotters' charts, as SVG and PNG. PNG text uses the
//! embedded DejaVu Sans font (no system fonts needed); both files go through the step's
//! [`OutputSet`].

use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::checkpoint::EpochLog;
use super::metrics::Curve;
use crate::output::OutputSet;

const SIZE: (u32, u32) = (1200, 520);
const FONT: &str = "sans-serif";
const TRAIN: RGBColor = RGBColor(52, 109, 178);
const VAL: RGBColor = RGBColor(206, 44, 52);
const CHANCE: RGBColor = RGBColor(150, 150, 150);

/// `<stem>.svg` and `<stem>.png`.
pub fn names(stem: &str) -> [String; 2] {
    [format!("{stem}.svg"), format!("{stem}.png")]
}

/// DejaVu Sans for bitmap text, registered once per process.
fn register_fonts() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| anyhow!("cannot load the embedded DejaVu Sans font for the figure"))
}

type Area<'a, DB> = DrawingArea<DB, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Draw with `$draw(area, args…)` into `<stem>.svg` and `<stem>.png` of the set.
macro_rules! render {
    ($set:expr, $stem:expr, $draw:ident, $($arg:expr),*) => {{
        register_fonts()?;
        let [svg_name, png_name] = names($stem);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            $draw(&root, $($arg),*)
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("drawing figure {}", $set.final_path(&svg_name).display()))?;
            root.present().map_err(|e| anyhow!("{e}"))?;
        }
        $set.write(&svg_name, svg.as_bytes())?;
        let mut rgb = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
            $draw(&root, $($arg),*)
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("drawing figure {}", $set.final_path(&png_name).display()))?;
            root.present().map_err(|e| anyhow!("{e}"))?;
        }
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&rgb, SIZE.0, SIZE.1, image::ColorType::Rgb8)
            .with_context(|| format!("encoding figure {}", $set.final_path(&png_name).display()))?;
        $set.write(&png_name, &png)
    }};
}

/// Left: train and validation loss per epoch (the best epoch marked); right: the validation
/// ROC curve of the best weights.
pub fn write_training(
    set: &OutputSet,
    stem: &str,
    log: &[EpochLog],
    roc: &Curve,
    best_epoch: usize,
) -> Result<()> {
    render!(set, stem, draw_training, log, roc, best_epoch)
}

/// Left: ROC curve; right: precision–recall curve.
pub fn write_evaluation(
    set: &OutputSet,
    stem: &str,
    roc: &Curve,
    auroc: f64,
    pr: &Curve,
    average_precision: f64,
) -> Result<()> {
    render!(
        set,
        stem,
        draw_evaluation,
        roc,
        auroc,
        pr,
        average_precision
    )
}

fn draw_training<DB: DrawingBackend>(
    root: &Area<DB>,
    log: &[EpochLog],
    roc: &Curve,
    best_epoch: usize,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(SIZE.0 * 3 / 5);
    let epochs = log.len().max(1) as f64;
    let losses = log.iter().flat_map(|e| [e.train_loss, e.val_loss]);
    let top = losses.fold(0.0f64, f64::max).max(1e-6) * 1.08;
    let mut chart = ChartBuilder::on(&left)
        .caption("Loss per epoch", (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.5f64..epochs + 0.5, 0.0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("cross-entropy")
        // Epochs are whole: ticks between them stay unlabelled.
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    for (name, colour, pick) in [
        (
            "train",
            TRAIN,
            (|e: &EpochLog| e.train_loss) as fn(&EpochLog) -> f64,
        ),
        ("validation", VAL, |e: &EpochLog| e.val_loss),
    ] {
        let pts: Vec<(f64, f64)> = log.iter().map(|e| (e.epoch as f64, pick(e))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    if let Some(best) = log.get(best_epoch.wrapping_sub(1)) {
        chart
            .draw_series(std::iter::once(Circle::new(
                (best.epoch as f64, best.val_loss),
                7,
                VAL.stroke_width(2),
            )))?
            .label(format!("best (epoch {})", best.epoch))
            .legend(|(x, y)| Circle::new((x + 10, y), 6, VAL.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    let auroc = log
        .get(best_epoch.wrapping_sub(1))
        .map_or(f64::NAN, |e| e.auroc);
    draw_roc(&right, roc, auroc, "Validation ROC (best epoch)")
}

fn draw_roc<DB: DrawingBackend>(area: &Area<DB>, roc: &Curve, auroc: f64, title: &str) -> DrawResult
where
    DB::ErrorType: 'static,
{
    draw_curve(
        area,
        title,
        ("false positive rate", "true positive rate"),
        roc,
        &format!("AUROC {auroc:.4}"),
        true,
    )
}

fn draw_curve<DB: DrawingBackend>(
    area: &Area<DB>,
    title: &str,
    (xd, yd): (&str, &str),
    curve: &Curve,
    label: &str,
    diagonal: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0f64..1.0, 0.0f64..1.02)?;
    chart
        .configure_mesh()
        .x_desc(xd)
        .y_desc(yd)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    if diagonal {
        chart.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            CHANCE.stroke_width(1),
        ))?;
    }
    let pts: Vec<(f64, f64)> = curve
        .x
        .iter()
        .copied()
        .zip(curve.y.iter().copied())
        .collect();
    if pts.is_empty() {
        chart.draw_series(std::iter::once(Text::new(
            "one class only: no curve",
            (0.3, 0.5),
            (FONT, 18),
        )))?;
    } else {
        chart
            .draw_series(LineSeries::new(pts, VAL.stroke_width(2)))?
            .label(label.to_string())
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], VAL.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    Ok(())
}

fn draw_evaluation<DB: DrawingBackend>(
    root: &Area<DB>,
    roc: &Curve,
    auroc: f64,
    pr: &Curve,
    average_precision: f64,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    draw_roc(&left, roc, auroc, "ROC")?;
    draw_curve(
        &right,
        "Precision–recall",
        ("recall", "precision"),
        pr,
        &format!("average precision {average_precision:.4}"),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::svg_texts;
    use crate::train::metrics::{pr_curve, roc_curve};

    fn log(n: usize) -> Vec<EpochLog> {
        (1..=n)
            .map(|epoch| EpochLog {
                epoch,
                train_loss: 0.7 * (-(epoch as f64) / 4.0).exp() + 0.05,
                val_loss: 0.7 * (-(epoch as f64) / 5.0).exp() + 0.1 + 0.01 * epoch as f64,
                lr: 0.01,
                accuracy: 0.9,
                precision: 0.9,
                recall: 0.9,
                f1: 0.9,
                auroc: 0.9375,
            })
            .collect()
    }

    /// Labels and scores with some overlap, so both curves have a few steps.
    fn scored() -> (Vec<u8>, Vec<f32>) {
        let truth = vec![1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0];
        let score = vec![0.9, 0.8, 0.75, 0.7, 0.6, 0.55, 0.5, 0.4, 0.35, 0.3, 0.2, 0.1];
        (truth, score)
    }

    /// Writes the figure through `write` into a committed output set; returns the SVG's text.
    fn figure(stem: &str, write: impl FnOnce(&OutputSet) -> Result<()>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let owned = names(stem);
        let set = OutputSet::begin(dir.path(), "done.json", &[&owned[0], &owned[1]]).unwrap();
        write(&set).unwrap();
        set.commit(b"{}").unwrap();
        let png = std::fs::read(dir.path().join(&owned[1])).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
        std::fs::read_to_string(dir.path().join(&owned[0])).unwrap()
    }

    fn assert_texts(svg: &str, wanted: &[&str]) {
        let texts = svg_texts(svg);
        for text in wanted {
            assert!(texts.contains(text), "{text} missing from {texts:?}");
        }
    }

    #[test]
    fn training_figure_has_loss_and_roc_panels() {
        let (truth, score) = scored();
        let svg = figure("training", |set| {
            write_training(set, "training", &log(8), &roc_curve(&truth, &score), 6)
        });
        assert_texts(
            &svg,
            &[
                "Loss per epoch",
                "epoch",
                "cross-entropy",
                "train",
                "validation",
                "best (epoch 6)",
                "Validation ROC (best epoch)",
                "false positive rate",
                "true positive rate",
                "AUROC 0.9375",
            ],
        );
    }

    #[test]
    fn evaluation_figure_has_roc_and_pr_panels() {
        let (truth, score) = scored();
        let svg = figure("evaluation", |set| {
            write_evaluation(
                set,
                "evaluation",
                &roc_curve(&truth, &score),
                0.75,
                &pr_curve(&truth, &score),
                0.8125,
            )
        });
        assert_texts(
            &svg,
            &[
                "ROC",
                "AUROC 0.7500",
                "false positive rate",
                "Precision–recall",
                "recall",
                "precision",
                "average precision 0.8125",
            ],
        );
    }

    #[test]
    fn one_class_only_says_so_instead_of_a_curve() {
        let svg = figure("one_class", |set| {
            let none = roc_curve(&[1, 1], &[0.2, 0.9]);
            write_evaluation(set, "one_class", &none, f64::NAN, &none, f64::NAN)
        });
        assert_eq!(svg.matches("one class only: no curve").count(), 2);
        assert!(!svg_texts(&svg).iter().any(|t| t.starts_with("AUROC")));
    }
}
