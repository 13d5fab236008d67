//! Training and evaluating the classifier, as the original's workflow
//! (`make_train_dataset_*.py`, `features_extract.py`, `train.py`) does it:
//!
//! - [`dataset`]: `virnucpro dataset`, chunks and six-frame ORFs of viral and other sequences
//!   (translate's own code), class-balanced, with `labels.tsv`;
//! - [`data`]: labels joined with the embeddings files `embed-dna` / `embed-protein` write;
//! - [`model`]: the MLP `predict` loads, with a hand-written backward pass (why: see there);
//! - [`fit`]: SGD with momentum, StepLR, early stopping, per-epoch checkpoints ([`checkpoint`]);
//! - [`metrics`]: scikit-learn's metrics, exactly; [`evaluate`]: `virnucpro evaluate`;
//! - [`figures`]: loss curves, ROC and precision–recall figures.
//!
//! Randomness (split, initial weights, shuffling, dropout, class balancing) comes from our
//! seeded generator ([`rng`]), not torch's: runs are reproducible, not identical to torch's
//! draws. With `--init`, `--no-shuffle`, `--dropout 0` and `--validation-ids` nothing is
//! random and training matches PyTorch's to float rounding (tests/training/parity.rs).

pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod dataset;
pub mod evaluate;
pub mod figures;
pub mod fit;
pub mod metrics;
pub mod model;
pub mod rng;
pub mod tensors;

use std::path::PathBuf;

use crate::device::DeviceSpec;

pub const CLASSIFIER_FILE: &str = "classifier.safetensors";
pub const LAST_FILE: &str = "last.safetensors";
pub const LOG_FILE: &str = "train_log.tsv";
pub const VALIDATION_FILE: &str = "validation_predictions.tsv";
pub const TRAIN_FIGURE: &str = "training";
pub const TRAIN_REPORT: &str = "train.json";

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub dna: Vec<PathBuf>,
    pub protein: Vec<PathBuf>,
    pub labels: PathBuf,
    pub outdir: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub lr_step: usize,
    pub lr_gamma: f64,
    pub dropout: f64,
    pub patience: usize,
    pub hidden: usize,
    pub validation_fraction: f64,
    pub validation_ids: Option<PathBuf>,
    pub seed: u64,
    pub shuffle: bool,
    pub init: Option<PathBuf>,
    /// Ignore a checkpoint of an interrupted run: start from scratch.
    pub force: bool,
    pub device: DeviceSpec,
    pub quiet: bool,
}

impl cli::TrainArgs {
    pub fn options(&self, quiet: bool) -> TrainOptions {
        TrainOptions {
            dna: self.dna.clone(),
            protein: self.protein.clone(),
            labels: self.labels.clone(),
            outdir: self.outdir.clone(),
            epochs: self.epochs as usize,
            batch_size: self.batch_size as usize,
            lr: self.lr,
            momentum: self.momentum,
            lr_step: self.lr_step as usize,
            lr_gamma: self.lr_gamma,
            dropout: self.dropout,
            patience: self.patience as usize,
            hidden: self.hidden as usize,
            validation_fraction: self.validation_fraction,
            validation_ids: self.validation_ids.clone(),
            seed: self.seed,
            shuffle: !self.no_shuffle,
            init: self.init.clone(),
            force: self.force,
            device: self.device.clone(),
            quiet,
        }
    }
}

impl TrainOptions {
    /// Every input file, for preflight checks and the checkpoint fingerprint.
    pub fn inputs(&self) -> Vec<(&std::path::Path, &'static str)> {
        let mut out: Vec<(&std::path::Path, &'static str)> = Vec::new();
        out.extend(self.dna.iter().map(|p| (p.as_path(), "--dna file")));
        out.extend(self.protein.iter().map(|p| (p.as_path(), "--protein file")));
        out.push((&self.labels, "--labels"));
        if let Some(p) = &self.validation_ids {
            out.push((p, "--validation-ids"));
        }
        if let Some(p) = &self.init {
            out.push((p, "--init"));
        }
        out
    }

    /// Values outside their range are usage errors ([`crate::flag_values::UsageError`]), said before
    /// any work: the command line's are refused by clap already, through the same functions
    /// ([`cli`]'s parsers), which see here the options built in code.
    pub fn check(&self) -> anyhow::Result<()> {
        fn rule<T>(
            flag: &str,
            value: impl std::fmt::Display,
            parse: fn(&str) -> Result<T, String>,
        ) -> anyhow::Result<()> {
            let value = value.to_string();
            match parse(&value) {
                Ok(_) => Ok(()),
                Err(why) => {
                    Err(crate::flag_values::UsageError(format!("{flag} {value}: {why}")).into())
                }
            }
        }
        rule("--epochs", self.epochs, cli::epochs)?;
        rule("--batch-size", self.batch_size, cli::batch_size)?;
        rule("--lr", self.lr, cli::lr)?;
        rule("--momentum", self.momentum, cli::momentum)?;
        rule("--lr-step", self.lr_step, cli::lr_step)?;
        rule("--lr-gamma", self.lr_gamma, cli::lr_gamma)?;
        rule("--dropout", self.dropout, cli::dropout)?;
        rule("--patience", self.patience, cli::patience)?;
        rule("--hidden", self.hidden, cli::hidden)?;
        rule(
            "--validation-fraction",
            self.validation_fraction,
            cli::validation_fraction,
        )?;
        Ok(())
    }
}
