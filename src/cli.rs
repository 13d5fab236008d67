//! Command-line definitions (clap derive) and nothing else: each subcommand's work lives in its
//! own module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::device::{DeviceSpec, Precision};

#[derive(Parser, Debug)]
#[command(
    name = "virnucpro",
    version,
    about = "Identify viral sequences with DNABERT-S + ESM-2 embeddings and the VirNucPro classifier",
    long_about = "Identify viral sequences with DNABERT-S + ESM-2 embeddings and the VirNucPro classifier.\n\n\
Each step reads files and writes files, so a pipeline (Nextflow) or a person can run any step alone \
and resume from what exists. Outputs reproduce the original VirNucPro exactly."
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Defaults from a TOML file (see conf/virnucpro.toml); flags given here win.
    #[arg(long, global = true, value_name = "FILE", env = "VIRNUCPRO_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Chunk sequences and keep the stop-free six-frame ORFs (nucleotide .fa + protein .faa).
    Translate(TranslateArgs),
    /// Embed nucleotide ORFs with DNABERT-S (mean over tokens) into a safetensors file.
    EmbedDna(EmbedArgs),
    /// Embed protein ORFs with ESM-2 (mean over residues) into a safetensors file.
    EmbedProtein(EmbedArgs),
    /// Classify ORFs from their DNA + protein embeddings; write the original's tables, a
    /// per-sequence summary and a figure.
    Predict(PredictArgs),
    /// The whole pipeline on one machine: translate, embed-dna, embed-protein, predict
    /// (resumes from completed steps).
    Run(RunArgs),
    /// List the devices `--device auto` would use (CUDA devices with memory and lease state,
    /// wgpu adapters with their kind, and the CPU workers).
    Devices(DevicesArgs),
}

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TranslateArgs {
    /// Input FASTA (plain or compressed with gzip, bzip2, xz or zstd; `-` reads stdin).
    pub input: PathBuf,
    /// Chunk length in bp: 300 or 500 to match the published classifiers.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(3..))]
    pub chunk_size: u64,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(short, long, value_name = "N")]
    pub threads: Option<usize>,
    /// Write ORFs as shards of at most N ORFs each (DIR/shards/<k>.identified_*.fa[a]) for fan-out.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_size: Option<u64>,
    /// Also write the chunks themselves to DIR/chunked.fa.
    #[arg(long)]
    pub write_chunks: bool,
    /// Continue when two records share an id (later steps join by id, so results may mix).
    #[arg(long)]
    pub allow_duplicate_ids: bool,
}

/// Where and how the models run; shared by the embedding steps and `run`.
#[derive(Args, Debug, Clone)]
pub struct ComputeArgs {
    /// auto (all CUDA devices, else every hardware wgpu adapter, else CPU), cpu, cuda, cuda:N,
    /// cuda:0,2,3, wgpu (Vulkan; Metal on macOS) or wgpu:N (as `virnucpro devices` lists them).
    #[arg(short, long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// auto (f32 on CPU and software adapters, f16 on CUDA and GPUs with f16 shaders), f32,
    /// f16 or bf16 (CUDA only).
    #[arg(short, long, default_value = "auto", value_name = "P")]
    pub precision: Precision,
    /// Padded tokens per batch (default: 2048 on CPU, larger on GPUs). Results do not depend on it.
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_tokens: Option<u64>,
    /// CPU workers, each with its own batches (default: all cores).
    #[arg(short, long, value_name = "N")]
    pub threads: Option<usize>,
    /// Save finished batches at least every N seconds (0 = after every batch); a killed run
    /// re-run with the same arguments resumes from them.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub checkpoint_secs: u64,
    /// Keep checkpoints in DIR instead of beside the output: a shared directory lets a retried
    /// pipeline task, which runs in a fresh directory, resume.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Take N GPUs through exclusive lock files (one process per GPU on a node, e.g. under
    /// Nextflow's local executor) instead of using every visible GPU.
    #[arg(
        long,
        value_name = "N",
        env = "VIRNUCPRO_GPU_LEASE",
        hide_env_values = true
    )]
    pub gpu_lease: Option<usize>,
    /// With --gpu-lease: give up after waiting SECS for a free GPU (default: wait for ever).
    #[arg(long, value_name = "SECS", env = "VIRNUCPRO_GPU_LEASE_TIMEOUT")]
    pub gpu_lease_timeout: Option<u64>,
    /// Keep the GPU backends' compiled kernels and autotune results in DIR, shared across runs
    /// and tasks (default: $XDG_CACHE_HOME/virnucpro/cubecl, else ~/.cache/virnucpro/cubecl).
    #[arg(long, value_name = "DIR", env = "VIRNUCPRO_KERNEL_CACHE")]
    pub kernel_cache: Option<PathBuf>,
}

impl ComputeArgs {
    pub fn settings(&self) -> crate::embed::ComputeSettings {
        crate::embed::ComputeSettings {
            device: self.device.clone(),
            precision: self.precision,
            batch_tokens: self.batch_tokens.map(|n| n as usize),
            threads: self.threads,
            checkpoint_secs: self.checkpoint_secs,
            checkpoint_dir: self.checkpoint_dir.clone(),
            // VIRNUCPRO_GPU_LEASE=0 means no leasing.
            gpu_lease: self.gpu_lease.filter(|&n| n > 0),
            gpu_lease_timeout: self.gpu_lease_timeout.map(std::time::Duration::from_secs),
            kernel_cache: self.kernel_cache.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Input FASTA of ORFs (translate's identified_nucleotide.fa / identified_protein.faa or a shard).
    pub input: PathBuf,
    /// Model: a Hugging Face directory (config.json + model.safetensors / pytorch_model.bin),
    /// or for ESM-2 also a fair-esm checkpoint file (esm2_t36_3B_UR50D.pt).
    #[arg(short, long, value_name = "DIR|FILE")]
    pub model: PathBuf,
    /// Output embeddings file (.safetensors: tensor `embeddings` [N, D], ids in metadata).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Also write the run's figures (sequences, tokens, devices, wall time, rates) as JSON here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

impl EmbedArgs {
    pub fn options(&self, quiet: bool) -> crate::embed::EmbedOptions {
        crate::embed::EmbedOptions {
            input: self.input.clone(),
            model: self.model.clone(),
            output: self.output.clone(),
            compute: self.compute.settings(),
            quiet,
        }
    }
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// DNABERT-S embeddings files (from embed-dna; several shards allowed).
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub dna: Vec<PathBuf>,
    /// ESM-2 embeddings files (from embed-protein; several shards allowed).
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub protein: Vec<PathBuf>,
    /// Classifier: VirNucPro's 300_model.pth / 500_model.pth (whole pickled module), or a
    /// safetensors file with the same tensor names.
    #[arg(long, value_name = "FILE")]
    pub classifier: PathBuf,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
    /// Call a sequence viral when at least this fraction of its scored chunks are viral.
    #[arg(long, default_value_t = 0.5, value_name = "F")]
    pub min_viral_fraction: f64,
    /// Sequences drawn in prediction.svg/.png (highest virus score first).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub plot_top: usize,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Input FASTA (plain or compressed with gzip, bzip2, xz or zstd).
    pub input: PathBuf,
    /// DNABERT-S model directory (config.json, tokenizer.json, model.safetensors or pytorch_model.bin).
    #[arg(long, value_name = "DIR")]
    pub dnabert: PathBuf,
    /// ESM-2 model: Hugging Face directory or fair-esm .pt file.
    #[arg(long, value_name = "DIR|FILE")]
    pub esm: PathBuf,
    /// Classifier file (300_model.pth / 500_model.pth, matching --chunk-size).
    #[arg(long, value_name = "FILE")]
    pub classifier: PathBuf,
    /// Chunk length in bp (300 or 500, matching the classifier).
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(3..))]
    pub chunk_size: u64,
    /// Output directory: every step's outputs are kept here.
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Redo every step even when its outputs are complete.
    #[arg(long)]
    pub force: bool,
    /// Call a sequence viral when at least this fraction of its scored chunks are viral.
    #[arg(long, default_value_t = 0.5, value_name = "F")]
    pub min_viral_fraction: f64,
}
