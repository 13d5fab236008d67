//! `embed-dna` and `embed-protein`: FASTA in, one embeddings file out ([`crate::io::embeddings`]).
//! Both share everything but the tokenizer and the model: reading, batching, devices, workers,
//! checkpoints, output.
//!
//! - [`EmbedCommand`]: the subcommands (checks, lock, then [`embed_dna`] / [`embed_protein`],
//!   the bare steps `run` also calls);
//! - [`encoders`]: the two models as the engine sees them, and each step's tokenised input;
//! - [`step`]: tokens to files (devices, the engine, failed.tsv, the checkpoint's fate);
//! - [`assembler`]: the plan of a step and where each finished batch goes;
//! - [`engine`]: workers per device on one queue, split-and-retry of failed batches;
//! - [`batching`]: token-budget batches; [`checkpoint`]: resumable part files.

// Only the steps' entry points, their options and their summary are the crate's surface: the
// parts below are how one step runs, used by nothing outside embed/.
mod assembler;
mod batching;
mod checkpoint;
mod encoders;
mod engine;
mod step;

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::device::placement::DtypeReadBack;
use crate::device::{DeviceSpec, LazyPlacement, PlacementRequest, Precision};
use crate::io::output_lock::OutputLock;
use crate::preflight;
use crate::subcommand::{Finished, Subcommand};

/// Where and how an embedding step runs: the same for embed-dna, embed-protein and `run`'s
/// two embedding steps (built once from the command line's `ComputeArgs`).
#[derive(Debug, Clone)]
pub struct ComputeSettings {
    pub device: DeviceSpec,
    pub precision: Precision,
    /// Padded tokens per batch; `None` = on the CPU at most 2048, less to keep a batch's
    /// activations in the cache or every worker busy (`batching::cpu_budget`); on a GPU from
    /// its free memory.
    pub batch_tokens: Option<usize>,
    /// CPU workers (default: all cores).
    pub threads: Option<usize>,
    /// Save finished batches at least this often (0 = after every batch).
    pub checkpoint_secs: u64,
    /// Where checkpoints go (default: beside the output).
    pub checkpoint_dir: Option<PathBuf>,
    /// Lease this many GPUs through lock files (`VIRNUCPRO_GPU_LEASE`).
    pub gpu_lease: Option<usize>,
    /// Stop waiting for a leased GPU after this long (`VIRNUCPRO_GPU_LEASE_TIMEOUT`).
    pub gpu_lease_timeout: Option<std::time::Duration>,
    /// GPU kernel compilation and autotune caches (`--kernel-cache`; default under
    /// `$XDG_CACHE_HOME`).
    pub kernel_cache: Option<PathBuf>,
}

impl ComputeSettings {
    /// What the devices are resolved from (once per process: [`LazyPlacement`]).
    pub fn placement_request(&self) -> PlacementRequest {
        PlacementRequest {
            device: self.device.clone(),
            precision: self.precision,
            threads: self.threads,
            gpu_lease: self.gpu_lease,
            gpu_lease_timeout: self.gpu_lease_timeout,
            kernel_cache: self.kernel_cache.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub input: PathBuf,
    pub model: PathBuf,
    pub output: PathBuf,
    pub compute: ComputeSettings,
    pub quiet: bool,
}

/// One device's share of a step.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub device: String,
    pub sequences: usize,
    pub tokens: usize,
    /// Time spent inside batches (forward pass and read-back).
    pub busy_seconds: f64,
    /// `busy_seconds` over the step's compute wall time (model loading excluded).
    pub busy_share: f64,
}

/// What an embedding step did, for logs and run reports.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedSummary {
    pub input: String,
    pub output: String,
    pub sequences: usize,
    /// Sequences that failed alone (listed in `failed_file`, left out of the output).
    pub failed: usize,
    pub failed_file: Option<String>,
    /// Sequences taken from an earlier run's checkpoint.
    pub resumed: usize,
    pub tokens: usize,
    pub dim: usize,
    pub devices: String,
    pub per_device: Vec<DeviceReport>,
    /// What the model computed in: the precision asked for (made concrete), checked against
    /// `dtype_read_back` before the first batch.
    pub precision: Precision,
    /// The dtypes read back from the loaded model on the first device: an uploaded weight and
    /// one activation.
    pub dtype_read_back: DtypeReadBack,
    /// Set when the matrix products compute in less than `precision` says (f32 on CUDA: TF32).
    pub matmul_note: Option<String>,
    pub batch_tokens: usize,
    pub batches: usize,
    /// The whole step: reading and tokenising, loading the model, embedding, writing.
    pub wall_seconds: f64,
    /// Loading the model (the first device's copy): its file read, checked, converted and
    /// placed, until the batches are planned.
    pub load_seconds: f64,
    pub sequences_per_second: f64,
    pub tokens_per_second: f64,
    /// Embedding alone: from the batches planned (the model loaded) to the last batch's
    /// result. What a benchmark that times a library's forward passes compares with.
    pub compute_seconds: f64,
    /// Tokens embedded by this run (not resumed) per `compute_seconds`.
    pub compute_tokens_per_second: f64,
    pub peak_rss_mb: Option<f64>,
}

/// `<output>.failed.tsv`: sequences that failed alone (id, step, reason).
pub(crate) fn failed_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".failed.tsv");
    PathBuf::from(name)
}

/// The embedding of `embed-dna` and `run`'s DNA step, on the devices of `placement` (resolved
/// on first use, then shared by every step of the process). Checks and the output lock are the
/// caller's ([`EmbedCommand`], or `run`'s own).
pub fn embed_dna(opts: &EmbedOptions, placement: &LazyPlacement) -> Result<EmbedSummary> {
    let input = encoders::dna_input(opts)?;
    step::embed_tokens(
        opts,
        placement,
        input,
        &encoders::DnabertLoader(opts.model.clone()),
    )
}

/// The embedding of `embed-protein` and `run`'s protein step, on the devices of `placement`.
pub fn embed_protein(opts: &EmbedOptions, placement: &LazyPlacement) -> Result<EmbedSummary> {
    let input = encoders::protein_input(opts)?;
    step::embed_tokens(
        opts,
        placement,
        input,
        &encoders::EsmLoader(opts.model.clone()),
    )
}

/// Which of the two embedding subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedKind {
    Dna,
    Protein,
}

/// `virnucpro embed-dna` / `embed-protein` as a subcommand.
pub struct EmbedCommand {
    pub kind: EmbedKind,
    pub opts: EmbedOptions,
    /// `--report`: the summary as JSON, also here.
    pub report: Option<PathBuf>,
    pub placement: LazyPlacement,
}

impl Subcommand for EmbedCommand {
    /// The model first (config, tokenizer, weights: a wrong --model fails at once with the
    /// missing file's name, before any sequence is read), then the input, the output, the
    /// checkpoint directory and `--report`, writable before the embedding starts, not after.
    fn check(&self) -> Result<()> {
        let opts = &self.opts;
        match self.kind {
            EmbedKind::Dna => preflight::dnabert(&opts.model)?,
            EmbedKind::Protein => preflight::esm(&opts.model)?,
        };
        preflight::input_file(&opts.input, "input")?;
        preflight::output_file(&opts.output, "--output")?;
        if let Some(dir) = &opts.compute.checkpoint_dir {
            preflight::output_dir(dir, "--checkpoint-dir")?;
        }
        if let Some(report) = &self.report {
            preflight::output_file(report, "--report")?;
        }
        Ok(())
    }

    /// The output file, locked for the whole step (its checkpoint parts included).
    fn claim(&self) -> Result<Option<OutputLock>> {
        OutputLock::file(&self.opts.output, "--output").map(Some)
    }

    fn execute(&self) -> Result<Finished> {
        let summary = match self.kind {
            EmbedKind::Dna => embed_dna(&self.opts, &self.placement)?,
            EmbedKind::Protein => embed_protein(&self.opts, &self.placement)?,
        };
        finish(&summary, self.report.as_deref())?;
        Ok(Finished {
            failed: summary.failed,
        })
    }
}

/// Log the summary and, when asked, write it as JSON.
pub fn finish(s: &EmbedSummary, report: Option<&Path>) -> Result<()> {
    log_summary(s);
    if let Some(path) = report {
        crate::io::output::write_atomic(path, &serde_json::to_vec_pretty(s)?)?;
    }
    Ok(())
}

pub(crate) fn log_summary(s: &EmbedSummary) {
    tracing::info!(
        "{} -> {}: {} sequences x {} dims, {:.1} s ({:.1} sequences/s, {:.0} tokens/s) on {} ({})",
        s.input,
        s.output,
        s.sequences,
        s.dim,
        s.wall_seconds,
        s.sequences_per_second,
        s.tokens_per_second,
        s.devices,
        s.matmul_note.as_deref().unwrap_or(&s.precision.to_string())
    );
    if s.resumed > 0 {
        tracing::info!(
            "{} of them came from an earlier run's checkpoint",
            s.resumed
        );
    }
    if let Some(f) = &s.failed_file {
        tracing::warn!(
            "{} sequences failed and are not in {}: listed in {f}",
            s.failed,
            s.output
        );
    }
}
