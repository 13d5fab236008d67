//! `virnucpro evaluate`: any classifier (train's `classifier.safetensors`, or the original's
//! `.pth`) on labelled embeddings: the original's metrics (scikit-learn's, exactly), average
//! precision, a confusion table, per-ORF scores and ROC / precision–recall figures.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::backend::flex::FlexDevice;
use burn::backend::Flex;
use serde::Serialize;

use super::data::{label_name, JoinCounts, Samples};
use super::fit::evaluate_rows;
use super::{figures, metrics};
use crate::io::output::OutputSet;
use crate::io::output_lock::OutputLock;
use crate::models::classifier::Classifier;
use crate::preflight;
use crate::subcommand::{Finished, Subcommand};

pub const REPORT_FILE: &str = "evaluation.json";
pub const CONFUSION_FILE: &str = "confusion.tsv";
pub const SCORES_FILE: &str = "scores.tsv";
pub const FIGURE: &str = "evaluation";

#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    pub dna: Vec<PathBuf>,
    pub protein: Vec<PathBuf>,
    pub labels: PathBuf,
    pub classifier: PathBuf,
    pub outdir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvaluateSummary {
    pub classifier: String,
    pub orfs: usize,
    pub virus: usize,
    pub others: usize,
    pub loss: f64,
    pub metrics: metrics::Metrics,
    pub average_precision: f64,
    pub confusion: metrics::Confusion,
    pub join: JoinCounts,
    pub wall_seconds: f64,
}

pub fn run(opts: &EvaluateOptions) -> Result<EvaluateSummary> {
    let started = Instant::now();
    let samples = Samples::open(&opts.dna, &opts.protein, &opts.labels)?;
    let all: Vec<usize> = (0..samples.len()).collect();
    samples.check_both_classes("labelled test set", &all)?;
    let device = FlexDevice;
    let classifier = Classifier::<Flex>::load(&opts.classifier, &device)
        .with_context(|| format!("loading classifier {}", opts.classifier.display()))?;
    classifier.check_input_dim(samples.dim())?;
    let figs = crate::plot::figure_names(FIGURE);
    let owned: Vec<&str> = [CONFUSION_FILE, SCORES_FILE]
        .into_iter()
        .chain(figs.iter().map(String::as_str))
        .collect();
    let set = OutputSet::begin(&opts.outdir, REPORT_FILE, &owned)?;

    let (loss, probs, calls) =
        evaluate_rows::<Flex>(|x| classifier.forward_logits(x), &samples, &all, &device)?;
    let virus_scores: Vec<f32> = probs.iter().skip(1).step_by(2).copied().collect();
    let m = metrics::metrics(&samples.labels, &calls, &virus_scores);
    let confusion = metrics::Confusion::new(&samples.labels, &calls);
    let ap = metrics::average_precision(&samples.labels, &virus_scores);

    let c = &confusion;
    let table = format!(
        "label\tcalled_virus\tcalled_others\nvirus\t{}\t{}\nothers\t{}\t{}\n",
        c.true_virus, c.false_others, c.false_virus, c.true_others
    );
    set.write(CONFUSION_FILE, table.as_bytes())?;
    let mut text = String::from("id\tlabel\tprediction\tothers_score\tvirus_score\n");
    for (i, id) in samples.ids.iter().enumerate() {
        text.push_str(&format!(
            "{id}\t{}\t{}\t{}\t{}\n",
            label_name(samples.labels[i]),
            label_name(calls[i]),
            probs[2 * i],
            probs[2 * i + 1]
        ));
    }
    set.write(SCORES_FILE, text.as_bytes())?;
    let roc = metrics::roc_curve(&samples.labels, &virus_scores);
    let pr = metrics::pr_curve(&samples.labels, &virus_scores);
    figures::write_evaluation(&set, FIGURE, &roc, m.auroc, &pr, ap)?;
    let virus = samples.labels.iter().filter(|&&l| l == 1).count();
    let summary = EvaluateSummary {
        classifier: opts.classifier.display().to_string(),
        orfs: samples.len(),
        virus,
        others: samples.len() - virus,
        loss,
        metrics: m,
        average_precision: ap,
        confusion,
        join: samples.counts.clone(),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    set.commit(&serde_json::to_vec_pretty(&summary)?)?;
    Ok(summary)
}

impl Subcommand for EvaluateOptions {
    fn check(&self) -> Result<()> {
        for f in self.dna.iter().chain(&self.protein).chain([&self.labels]) {
            preflight::input_file(f, "input")?;
        }
        preflight::input_file(&self.classifier, "--classifier")?;
        preflight::output_dir(&self.outdir, "--outdir")
    }

    fn claim(&self) -> Result<Option<OutputLock>> {
        OutputLock::outdir(&self.outdir).map(Some)
    }

    fn execute(&self) -> Result<Finished> {
        log_summary(&run(self)?, &self.outdir);
        Ok(Finished::COMPLETE)
    }
}

pub fn log_summary(s: &EvaluateSummary, outdir: &std::path::Path) {
    tracing::info!(
        "evaluate: {} ORFs ({} virus): accuracy {:.4}, precision {:.4}, recall {:.4}, F1 {:.4}, AUROC {:.4} -> {}",
        s.orfs,
        s.virus,
        s.metrics.accuracy,
        s.metrics.precision,
        s.metrics.recall,
        s.metrics.f1,
        s.metrics.auroc,
        outdir.display()
    );
}
