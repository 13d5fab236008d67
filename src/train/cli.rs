//! Flags of `dataset`, `train` and `evaluate` (kept here so src/cli.rs only names them).

use std::path::PathBuf;

use clap::Args;

use crate::device::DeviceSpec;

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
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(3..))]
    pub chunk_size: u64,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
    /// Seed of the class balancing draw.
    #[arg(long, default_value_t = 42, value_name = "S")]
    pub seed: u64,
    /// Write ORFs as shards of at most N ORFs each (DIR/shards/<k>.identified_*.fa[a]), as
    /// `translate --shard-size` does.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_size: Option<u64>,
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
    /// Most epochs; early stopping may end sooner.
    #[arg(long, default_value_t = 200, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: u64,
    /// ORFs per SGD step.
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    pub batch_size: u64,
    /// SGD learning rate.
    #[arg(long, default_value_t = 2e-4, value_name = "F")]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9, value_name = "F")]
    pub momentum: f64,
    /// Multiply the learning rate by --lr-gamma every N epochs (StepLR).
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub lr_step: u64,
    /// StepLR's factor.
    #[arg(long, default_value_t = 0.85, value_name = "F")]
    pub lr_gamma: f64,
    /// Dropout probability after the hidden layer.
    #[arg(long, default_value_t = 0.5, value_name = "P")]
    pub dropout: f64,
    /// Stop after N epochs without a lower validation loss.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub patience: u64,
    /// Hidden layer width (ignored with --init, whose weights fix it).
    #[arg(long, default_value_t = 512, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub hidden: u64,
    /// Share of the ORFs held out for validation (seeded random split).
    #[arg(long, default_value_t = 0.1, value_name = "F")]
    pub validation_fraction: f64,
    /// Validate on these ORF ids (one per line) instead of a random split.
    #[arg(long, value_name = "FILE")]
    pub validation_ids: Option<PathBuf>,
    /// Seed of the split, the initial weights, the shuffling and dropout (our generator, not
    /// torch's: see README).
    #[arg(long, default_value_t = 42, value_name = "S")]
    pub seed: u64,
    /// Train on the rows in the labels file's order every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Start from these weights (a classifier .safetensors or the original's .pth).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
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
