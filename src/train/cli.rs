//! Flags of `dataset`, `train` and `evaluate` (kept here so src/cli.rs only names them).

use std::path::PathBuf;

use clap::Args;

use crate::device::DeviceSpec;
use crate::flag_values::{chunk_size, real, shard_size, whole};

#[derive(Args, Debug)]
pub struct DatasetArgs {
    /// FASTA files of viral sequences (label `virus`); every ORF of theirs is kept.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub viral: Vec<PathBuf>,
    /// FASTA files of other sequences (label `others`): as many of their ORFs as there are
    /// viral ones are drawn at random (seeded).
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub others: Vec<PathBuf>,
    /// Chunk length in bp (300 or 500 for the published models' lengths).
    #[arg(short = 'c', long, value_name = "N", allow_hyphen_values = true, value_parser = chunk_size)]
    pub chunk_size: u64,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
    /// Seed of the class balancing draw.
    #[arg(long, default_value_t = 42, value_name = "S", allow_hyphen_values = true, value_parser = seed)]
    pub seed: u64,
    /// Write ORFs as shards of at most N ORFs each (DIR/shards/<k>.identified_*.fa[a]), as
    /// `translate --shard-size` does.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = shard_size)]
    pub shard_size: Option<u64>,
}

// `dataset`'s and `train`'s numeric flags, parsed by the functions below (and
// src/flag_values.rs's) rather than clap's own parsers so
// that a bad value is refused saying what the flag means and what to give. A negative one
// too: the flags take values with a leading hyphen, or clap would read `-1` or `-1e-3` as
// short flags and say only "unexpected argument". `TrainOptions::check` runs the
// same functions on options built in code.

/// Most `--epochs`: the checkpoint, rewritten after every epoch, carries every epoch's log line
/// (about 250 bytes), and a safetensors header over 100 MB cannot be read back, so a run of
/// ~400,000 epochs could not resume; 100,000 stays well below. The original trains 200.
pub const MAX_EPOCHS: u64 = 100_000;

fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

fn probability(v: f64) -> bool {
    (0.0..1.0).contains(&v)
}

pub fn epochs(s: &str) -> Result<u64, String> {
    let hint = "every epoch's log line is kept in the checkpoint; the original trains 200";
    whole(s, "the number of epochs", 1, MAX_EPOCHS, hint)
}

pub fn batch_size(s: &str) -> Result<u64, String> {
    let hint = "BatchNorm needs 2 ORFs per step; the original uses 32";
    whole(s, "the batch size", 2, u64::MAX, hint)
}

pub fn lr(s: &str) -> Result<f64, String> {
    let hint = "the original's is 2e-4";
    real(
        s,
        "the learning rate",
        positive,
        "a positive finite number",
        hint,
    )
}

pub fn momentum(s: &str) -> Result<f64, String> {
    let hint = "0 for none; the original's is 0.9";
    real(s, "the momentum", probability, "in [0, 1)", hint)
}

pub fn lr_step(s: &str) -> Result<u64, String> {
    let hint = "epochs between learning rate steps; the original's is 10";
    whole(s, "the StepLR period", 1, u64::MAX, hint)
}

pub fn lr_gamma(s: &str) -> Result<f64, String> {
    let hint = "the learning rate's factor every --lr-step epochs; the original's is 0.85";
    real(
        s,
        "StepLR's factor",
        positive,
        "a positive finite number",
        hint,
    )
}

pub fn dropout(s: &str) -> Result<f64, String> {
    let hint = "0 for none; the original's is 0.5";
    real(s, "the dropout probability", probability, "in [0, 1)", hint)
}

pub fn patience(s: &str) -> Result<u64, String> {
    let hint = "epochs without a lower validation loss before stopping; the original's is 5";
    whole(s, "the patience", 1, u64::MAX, hint)
}

pub fn hidden(s: &str) -> Result<u64, String> {
    let hint = "the original's is 512";
    whole(s, "the hidden width", 1, u64::MAX, hint)
}

pub fn validation_fraction(s: &str) -> Result<f64, String> {
    let hint = "the original holds out 0.1";
    let between = |v: f64| v > 0.0 && v < 1.0;
    real(
        s,
        "the validation fraction",
        between,
        "between 0 and 1 (exclusive)",
        hint,
    )
}

pub fn seed(s: &str) -> Result<u64, String> {
    whole(s, "the seed", 0, u64::MAX, "the default is 42")
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// DNABERT-S embeddings files (from embed-dna; several shards allowed).
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub dna: Vec<PathBuf>,
    /// ESM-2 embeddings files (from embed-protein; several shards allowed).
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub protein: Vec<PathBuf>,
    /// Labels: `id<TAB>label` with label `virus` or `others` (dataset's labels.tsv).
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
    /// Most epochs (at most 100000); early stopping may end sooner. A re-run continues a
    /// checkpoint only with at least the epochs it holds (or starts over with --force).
    #[arg(long, default_value_t = 200, value_name = "N", allow_hyphen_values = true, value_parser = epochs)]
    pub epochs: u64,
    /// ORFs per SGD step (at least 2; refused when a step would not fit in memory).
    #[arg(long, default_value_t = 32, value_name = "N", allow_hyphen_values = true, value_parser = batch_size)]
    pub batch_size: u64,
    /// SGD learning rate.
    #[arg(long, default_value_t = 2e-4, value_name = "F", allow_hyphen_values = true, value_parser = lr)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9, value_name = "F", allow_hyphen_values = true, value_parser = momentum)]
    pub momentum: f64,
    /// Multiply the learning rate by --lr-gamma every N epochs (StepLR).
    #[arg(long, default_value_t = 10, value_name = "N", allow_hyphen_values = true, value_parser = lr_step)]
    pub lr_step: u64,
    /// StepLR's factor.
    #[arg(long, default_value_t = 0.85, value_name = "F", allow_hyphen_values = true, value_parser = lr_gamma)]
    pub lr_gamma: f64,
    /// Dropout probability after the hidden layer.
    #[arg(long, default_value_t = 0.5, value_name = "P", allow_hyphen_values = true, value_parser = dropout)]
    pub dropout: f64,
    /// Stop after N epochs without a lower validation loss.
    #[arg(long, default_value_t = 5, value_name = "N", allow_hyphen_values = true, value_parser = patience)]
    pub patience: u64,
    /// Hidden layer width (ignored with --init, whose weights fix it; refused when the model
    /// would not fit in memory).
    #[arg(long, default_value_t = 512, value_name = "N", allow_hyphen_values = true, value_parser = hidden)]
    pub hidden: u64,
    /// Share of the ORFs held out for validation (seeded random split).
    #[arg(long, default_value_t = 0.1, value_name = "F", allow_hyphen_values = true, value_parser = validation_fraction)]
    pub validation_fraction: f64,
    /// Validate on these ORF ids (one per line) instead of a random split.
    #[arg(long, value_name = "FILE")]
    pub validation_ids: Option<PathBuf>,
    /// Seed of the split, the initial weights, the shuffling and dropout (our generator, not
    /// torch's: see README).
    #[arg(long, default_value_t = 42, value_name = "S", allow_hyphen_values = true, value_parser = seed)]
    pub seed: u64,
    /// Train on the rows in the labels file's order every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Start from these weights (a classifier .safetensors or the original's .pth).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Start from scratch even when --outdir holds a checkpoint of an interrupted run of these
    /// inputs and flags (it is replaced after the first epoch).
    #[arg(long)]
    pub force: bool,
    /// cpu, auto, cuda[:N] or wgpu[:N] (GPU backends when built with them); training runs in f32.
    #[arg(short, long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// DNABERT-S embeddings files of the test set.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub dna: Vec<PathBuf>,
    /// ESM-2 embeddings files of the test set.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub protein: Vec<PathBuf>,
    /// Labels: `id<TAB>label` (`virus` / `others`).
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Classifier: train's classifier.safetensors or the original's 300_model.pth / 500_model.pth.
    #[arg(long, value_name = "FILE")]
    pub classifier: PathBuf,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
}

impl DatasetArgs {
    pub fn options(self) -> super::dataset::DatasetOptions {
        super::dataset::DatasetOptions {
            viral: self.viral,
            others: self.others,
            chunk_size: self.chunk_size as usize,
            outdir: self.outdir,
            seed: self.seed,
            shard_size: self.shard_size.map(|n| n as usize),
        }
    }
}

impl EvaluateArgs {
    pub fn options(self) -> super::evaluate::EvaluateOptions {
        super::evaluate::EvaluateOptions {
            dna: self.dna,
            protein: self.protein,
            labels: self.labels,
            classifier: self.classifier,
            outdir: self.outdir,
        }
    }
}
