//! Figures of `train` (loss curves and the validation ROC curve) and `evaluate` (ROC and
//! precision–recall curves): two line charts side by side, written as `<stem>.svg` and
//! `<stem>.png` through the step's [`OutputSet`].

use anyhow::Result;
use plotters::chart::SeriesLabelPosition;

use super::checkpoint::EpochLog;
use super::metrics::Curve;
use crate::io::output::OutputSet;
use crate::plot::{self, line_chart, LineChart, Mark, SideBySide};

const HEIGHT: u32 = 520;

/// Left: train and validation loss per epoch (the best epoch marked); right: the validation
/// ROC curve of the best weights.
pub fn write_training(
    set: &OutputSet,
    stem: &str,
    log: &[EpochLog],
    roc: &Curve,
    best_epoch: usize,
) -> Result<()> {
    let per_epoch = |pick: fn(&EpochLog) -> f64| -> Vec<(f64, f64)> {
        log.iter().map(|e| (e.epoch as f64, pick(e))).collect()
    };
    let mut series = vec![
        plot::Series::new("train", per_epoch(|e| e.train_loss)).mark(Mark::Dots),
        plot::Series::new("validation", per_epoch(|e| e.val_loss)).mark(Mark::Dots),
    ];
    let best = log.get(best_epoch.wrapping_sub(1));
    if let Some(best) = best {
        let at = vec![(best.epoch as f64, best.val_loss)];
        let name = format!("best (epoch {})", best.epoch);
        series.push(plot::Series::new(name, at).mark(Mark::Ring));
    }
    // Losses from zero, so train and validation compare at a glance.
    let top = log.iter().flat_map(|e| [e.train_loss, e.val_loss]);
    let top = top.fold(0.0f64, f64::max).max(1e-6) * 1.08;
    let epochs = log.len().max(1) as f64;
    let loss = line_chart(series, "epoch", "cross-entropy", "Loss per epoch")
        .x_range(0.5..epochs + 0.5)
        .y_range(0.0..top)
        .whole_x()
        .size(720, HEIGHT);
    let auroc = best.map_or(f64::NAN, |e| e.auroc);
    let roc = roc_chart(roc, auroc, "Validation ROC (best epoch)").size(480, HEIGHT);
    plot::write_to_set(set, stem, &SideBySide(vec![loss, roc]))
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
    let pr = curve_chart(
        pr,
        &format!("average precision {average_precision:.4}"),
        ("recall", "precision"),
        "Precision–recall",
    );
    let roc = roc_chart(roc, auroc, "ROC");
    let panels = [roc, pr].map(|c| c.size(600, HEIGHT));
    plot::write_to_set(set, stem, &SideBySide(panels.into()))
}

/// A ROC curve over the chance diagonal.
fn roc_chart(roc: &Curve, auroc: f64, title: &str) -> LineChart {
    let rates = ("false positive rate", "true positive rate");
    let mut chart = curve_chart(roc, &format!("AUROC {auroc:.4}"), rates, title);
    let chance = plot::Series::new("", vec![(0.0, 0.0), (1.0, 1.0)]).mark(Mark::Reference);
    chart.series.insert(0, chance);
    chart
}

/// One curve on the unit square named `label` in the legend, or a note where it is empty (a
/// single class has none).
fn curve_chart(curve: &Curve, label: &str, (x, y): (&str, &str), title: &str) -> LineChart {
    let points: Vec<(f64, f64)> = curve
        .x
        .iter()
        .copied()
        .zip(curve.y.iter().copied())
        .collect();
    let empty = points.is_empty();
    let series = if empty {
        vec![]
    } else {
        vec![plot::Series::new(label, points)]
    };
    let chart = line_chart(series, x, y, title)
        .x_range(0.0..1.0)
        .y_range(0.0..1.02)
        .legend_at(SeriesLabelPosition::LowerRight);
    if empty {
        chart.note("one class only: no curve")
    } else {
        chart
    }
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
        let score = vec![
            0.9, 0.8, 0.75, 0.7, 0.6, 0.55, 0.5, 0.4, 0.35, 0.3, 0.2, 0.1,
        ];
        (truth, score)
    }

    /// Writes the figure through `write` into a committed output set; returns the SVG's text.
    fn figure(stem: &str, write: impl FnOnce(&OutputSet) -> Result<()>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let owned = plot::figure_names(stem);
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
