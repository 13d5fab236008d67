//! Classification metrics as the original computes them with scikit-learn, bit for bit:
//! accuracy, precision, recall and F1 of class 1 (`virus`) with `zero_division=0`, and AUROC
//! from `roc_auc_score` (the ROC curve with sklearn's collinear points dropped, then the
//! trapezoid rule summed the way numpy sums). Also the ROC and precision–recall points for
//! figures, and average precision.

use serde::Serialize;

/// Class 1 of the classifier.
pub const VIRUS: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub auroc: f64,
}

/// Counts of (truth, call) pairs; class 1 is positive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    pub true_virus: usize,
    pub false_virus: usize,
    pub true_others: usize,
    pub false_others: usize,
}

impl Confusion {
    pub fn new(truth: &[u8], called: &[u8]) -> Self {
        let mut c = Confusion::default();
        for (&t, &p) in truth.iter().zip(called) {
            match (t == VIRUS, p == VIRUS) {
                (true, true) => c.true_virus += 1,
                (false, true) => c.false_virus += 1,
                (false, false) => c.true_others += 1,
                (true, false) => c.false_others += 1,
            }
        }
        c
    }
}

/// `tp / (tp + fp)` or 0 when nothing was called (sklearn's `zero_division=0`).
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Metrics of calls `called` and class-1 scores `score` against `truth` (all 0/1). AUROC is
/// NaN when `truth` holds one class only (sklearn refuses it).
pub fn metrics(truth: &[u8], called: &[u8], score: &[f32]) -> Metrics {
    let c = Confusion::new(truth, called);
    let correct = c.true_virus + c.true_others;
    let true_pos = c.true_virus + c.false_others;
    let pred_pos = c.true_virus + c.false_virus;
    Metrics {
        accuracy: ratio(correct, truth.len()),
        precision: ratio(c.true_virus, pred_pos),
        recall: ratio(c.true_virus, true_pos),
        // sklearn's F-beta with beta 1: 2·tp / (true positives + predicted positives).
        f1: ratio(2 * c.true_virus, true_pos + pred_pos),
        auroc: auroc(truth, score),
    }
}

/// Cumulative true and false positives at each distinct score, highest first (sklearn's
/// `_binary_clf_curve`): (thresholds, fps, tps).
fn clf_curve(truth: &[u8], score: &[f32]) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
    // sklearn sorts with a stable mergesort ascending and reverses; ties are grouped below, so
    // the order within a tie does not matter.
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let (mut thresholds, mut fps, mut tps) = (Vec::new(), Vec::new(), Vec::new());
    let mut tp = 0.0f64;
    for (k, &i) in order.iter().enumerate() {
        if truth[i] == VIRUS {
            tp += 1.0;
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&j| score[j] != score[i]);
        if last_of_tie {
            thresholds.push(score[i]);
            tps.push(tp);
            fps.push((k + 1) as f64 - tp);
        }
    }
    (thresholds, fps, tps)
}

/// A curve's points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

/// sklearn's `roc_curve` with `drop_intermediate=True`: (false positive rate, true positive
/// rate) from (0, 0). Empty when `truth` holds one class only.
pub fn roc_curve(truth: &[u8], score: &[f32]) -> Curve {
    let (_, fps, tps) = clf_curve(truth, score);
    let (Some(&fp_all), Some(&tp_all)) = (fps.last(), tps.last()) else {
        return Curve {
            x: vec![],
            y: vec![],
        };
    };
    if fp_all == 0.0 || tp_all == 0.0 {
        return Curve {
            x: vec![],
            y: vec![],
        };
    }
    // Keep the ends and every point where either cumulative count changes slope.
    let n = fps.len();
    let keep: Vec<usize> = (0..n)
        .filter(|&i| {
            i == 0
                || i == n - 1
                || fps[i + 1] - 2.0 * fps[i] + fps[i - 1] != 0.0
                || tps[i + 1] - 2.0 * tps[i] + tps[i - 1] != 0.0
        })
        .collect();
    let mut x = vec![0.0];
    let mut y = vec![0.0];
    for &i in &keep {
        x.push(fps[i] / fp_all);
        y.push(tps[i] / tp_all);
    }
    Curve { x, y }
}

/// `roc_auc_score` for binary labels; NaN with one class only.
pub fn auroc(truth: &[u8], score: &[f32]) -> f64 {
    let roc = roc_curve(truth, score);
    if roc.x.is_empty() {
        return f64::NAN;
    }
    // np.trapz: (dx * (y[1:] + y[:-1]) / 2.0).sum()
    let terms: Vec<f64> = (1..roc.x.len())
        .map(|i| (roc.x[i] - roc.x[i - 1]) * (roc.y[i] + roc.y[i - 1]) / 2.0)
        .collect();
    numpy_sum(&terms)
}

/// numpy's pairwise summation of float64 (`pairwise_sum` in its umath loops), so a sum of
/// more than 8 terms rounds exactly as `ndarray.sum()` does.
pub fn numpy_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        numpy_sum(&a[..n2]) + numpy_sum(&a[n2..])
    }
}

/// sklearn's `precision_recall_curve` as (recall, precision), lowest threshold first, with
/// the point (0, 1) it appends; empty without any virus row.
pub fn pr_curve(truth: &[u8], score: &[f32]) -> Curve {
    let (_, fps, tps) = clf_curve(truth, score);
    let Some(&tp_all) = tps.last() else {
        return Curve {
            x: vec![],
            y: vec![],
        };
    };
    if tp_all == 0.0 {
        return Curve {
            x: vec![],
            y: vec![],
        };
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    // From the lowest threshold up (sklearn ≥ 1.1 keeps every threshold).
    for i in (0..tps.len()).rev() {
        x.push(tps[i] / tp_all);
        y.push(tps[i] / (tps[i] + fps[i]));
    }
    x.push(0.0);
    y.push(1.0);
    Curve { x, y }
}

/// sklearn's `average_precision_score`: Σ (R_n − R_{n−1}) · P_n over the PR curve.
pub fn average_precision(truth: &[u8], score: &[f32]) -> f64 {
    let pr = pr_curve(truth, score);
    if pr.x.is_empty() {
        return f64::NAN;
    }
    let terms: Vec<f64> = (0..pr.x.len() - 1)
        .map(|i| -((pr.x[i + 1] - pr.x[i]) * pr.y[i]))
        .collect();
    numpy_sum(&terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ratios() {
        let truth = [1, 1, 0, 0, 1];
        let called = [1, 0, 1, 0, 1];
        let m = metrics(&truth, &called, &[0.9, 0.2, 0.6, 0.1, 0.8]);
        assert_eq!(m.accuracy, 3.0 / 5.0);
        assert_eq!(m.precision, 2.0 / 3.0);
        assert_eq!(m.recall, 2.0 / 3.0);
        assert_eq!(m.f1, 4.0 / 6.0);
        // Positives 0.9, 0.8, 0.2; negatives 0.6, 0.1: 5 of 6 pairs ordered (the trapezoids
        // round differently from 5/6 in the last bit, as in sklearn).
        assert!((m.auroc - 5.0 / 6.0).abs() < 1e-15, "{}", m.auroc);
    }

    #[test]
    fn nothing_called_is_zero_not_nan() {
        let m = metrics(&[1, 0], &[0, 0], &[0.4, 0.3]);
        assert_eq!((m.precision, m.recall, m.f1), (0.0, 0.0, 0.0));
        assert_eq!(m.auroc, 1.0);
    }

    #[test]
    fn ties_count_half() {
        assert_eq!(auroc(&[1, 0], &[0.5, 0.5]), 0.5);
        assert_eq!(auroc(&[1, 0, 1, 0], &[0.5, 0.5, 0.9, 0.1]), 0.875);
    }

    #[test]
    fn one_class_has_no_auroc() {
        assert!(auroc(&[1, 1], &[0.2, 0.3]).is_nan());
        assert!(roc_curve(&[0, 0], &[0.2, 0.3]).x.is_empty());
    }

    #[test]
    fn roc_drops_collinear_points() {
        // All positives above all negatives: (0,0), (0,1)..., (1,1) with the runs collapsed.
        let roc = roc_curve(&[1, 1, 1, 0, 0, 0], &[0.9, 0.8, 0.7, 0.3, 0.2, 0.1]);
        assert_eq!(roc.x, vec![0.0, 0.0, 0.0, 1.0]);
        assert_eq!(roc.y, vec![0.0, 1.0 / 3.0, 1.0, 1.0]);
    }

    #[test]
    fn pr_curve_and_average_precision() {
        let truth = [1, 0, 1, 0];
        let score = [0.9, 0.8, 0.7, 0.1];
        let pr = pr_curve(&truth, &score);
        assert_eq!(pr.x, vec![1.0, 1.0, 0.5, 0.5, 0.0]);
        assert_eq!(pr.y, vec![0.5, 2.0 / 3.0, 0.5, 1.0, 1.0]);
        // sklearn: 0.5 * 1 + 0.5 * 2/3.
        assert_eq!(average_precision(&truth, &score), 0.5 + 0.5 * (2.0 / 3.0));
    }

    #[test]
    fn pairwise_sum_matches_numpy_blocking() {
        // Below 8 terms: left to right. Above: eight interleaved partial sums.
        let small = [1e16, 1.0, -1e16];
        assert_eq!(numpy_sum(&small), 0.0);
        let mut v = vec![1.0; 9];
        v[0] = 1e16;
        v[8] = -1e16;
        // ((1e16 + 1) + (1 + 1)) + ((1 + 1) + (1 + 1)) = 1e16 + 6 (1e16 + 1 ties to 1e16),
        // then the tail: 6, where a left-to-right sum loses every 1 and gives 0.
        assert_eq!(numpy_sum(&v), 6.0);
        let big: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        assert_eq!(numpy_sum(&big), 499500.0);
    }
}
