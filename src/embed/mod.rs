//! `embed-dna` and `embed-protein`: FASTA in, one embeddings file out ([`crate::io::embeddings`]).
//! Both share everything but the tokenizer and the model: reading, batching, devices, workers,
//! checkpoints, output.
//!
//! - [`EmbedCommand`]: the subcommands (checks, lock, then [`embed_dna`] / [`embed_protein`],
//!   the bare steps `run` also calls);
//! - [`encoders`]: the two models as the engine sees them, and each step's tokenised input;
//! - [`manifest`]: `--manifest`, several inputs in one process; [`reuse`]: their model
//!   loaded once;
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
pub mod manifest;
mod reuse;
mod step;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use engine::EncoderLoader;
use reuse::Reusing;

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
    pub sequences_per_second: f64,
    pub tokens_per_second: f64,
    /// Embedding alone: from the batches planned (the model loaded) to the last batch's
    /// result. What a benchmark that times a library's forward passes compares with.
    pub compute_seconds: f64,
    /// Tokens embedded by this run (not resumed) per `compute_seconds`.
    pub compute_tokens_per_second: f64,
    /// Models loaded for this input (one per device; 0 when an earlier input of the same
    /// process, in `--manifest`, had loaded them already).
    pub model_loads: usize,
    /// Seconds those loads took (reading, converting, uploading the weights).
    pub model_load_seconds: f64,
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
    let loader = Reusing::new(encoders::DnabertLoader(opts.model.clone()));
    step::embed_tokens(opts, placement, encoders::dna_input(opts)?, &loader)
}

/// The embedding of `embed-protein` and `run`'s protein step, on the devices of `placement`.
pub fn embed_protein(opts: &EmbedOptions, placement: &LazyPlacement) -> Result<EmbedSummary> {
    let loader = Reusing::new(encoders::EsmLoader(opts.model.clone()));
    step::embed_tokens(opts, placement, encoders::protein_input(opts)?, &loader)
}

/// Which of the two embedding subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedKind {
    Dna,
    Protein,
}

/// One input of an embedding command: its options and where its report goes.
#[derive(Debug, Clone)]
pub struct EmbedInput {
    pub opts: EmbedOptions,
    pub report: Option<PathBuf>,
    /// Its line in `--manifest` (`None`: the command's one INPUT).
    pub manifest_line: Option<usize>,
}

/// `virnucpro embed-dna` / `embed-protein` as a subcommand: one INPUT, or every line of a
/// `--manifest` with the model loaded once for all of them (see [`manifest`]).
pub struct EmbedCommand {
    pub kind: EmbedKind,
    /// In the order they are embedded; all with the same model and compute settings.
    pub inputs: Vec<EmbedInput>,
    /// `--report` of a manifest run: the loads and every input's summary together (a single
    /// INPUT's `--report` is its `EmbedInput::report`).
    pub manifest_report: Option<PathBuf>,
    pub placement: LazyPlacement,
    /// The locks of every output after the first, held with the first (see `claim`).
    more_locks: std::sync::Mutex<Vec<OutputLock>>,
}

/// What `--manifest ... --report FILE` writes: how often the model was loaded and how long
/// that took, against the time spent embedding, and each input's own summary.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestSummary {
    pub inputs: usize,
    pub model_loads: usize,
    pub model_load_seconds: f64,
    pub compute_seconds: f64,
    pub wall_seconds: f64,
    pub sequences: usize,
    pub failed: usize,
    pub per_input: Vec<EmbedSummary>,
}

impl EmbedCommand {
    pub fn new(
        kind: EmbedKind,
        inputs: Vec<EmbedInput>,
        manifest_report: Option<PathBuf>,
        placement: LazyPlacement,
    ) -> Self {
        Self {
            kind,
            inputs,
            manifest_report,
            placement,
            more_locks: Default::default(),
        }
    }

    /// Every input in turn with one loader, so each device's model is loaded once.
    fn embed_all<L: EncoderLoader>(
        &self,
        loader: &Reusing<L>,
        tokenize: fn(&EmbedOptions) -> Result<encoders::Tokenized>,
    ) -> Result<Vec<EmbedSummary>> {
        let n = self.inputs.len();
        let mut summaries = Vec::with_capacity(n);
        for (i, input) in self.inputs.iter().enumerate() {
            let summary = tokenize(&input.opts)
                .and_then(|t| step::embed_tokens(&input.opts, &self.placement, t, loader));
            let summary = match input.manifest_line {
                None => summary?,
                Some(line) => summary.with_context(|| {
                    format!(
                        "--manifest line {line} ({}; input {} of {n}; the outputs of the {i} before it are complete)",
                        crate::io::fasta::input_label(&input.opts.input),
                        i + 1
                    )
                })?,
            };
            finish(&summary, input.report.as_deref())?;
            summaries.push(summary);
        }
        Ok(summaries)
    }
}

impl Subcommand for EmbedCommand {
    /// The model first (config, tokenizer, weights: a wrong --model fails at once with the
    /// missing file's name, before any sequence is read), then every input, output, the
    /// checkpoint directory and the reports, writable before the embedding starts, not after.
    fn check(&self) -> Result<()> {
        let Some(first) = self.inputs.first() else {
            anyhow::bail!("no input to embed");
        };
        match self.kind {
            EmbedKind::Dna => preflight::dnabert(&first.opts.model)?,
            EmbedKind::Protein => preflight::esm(&first.opts.model)?,
        };
        for input in &self.inputs {
            let (opts, line) = (&input.opts, input.manifest_line);
            let flag = |what: &str| match line {
                None => what.to_string(),
                Some(l) => format!("--manifest line {l}: {}", what.trim_start_matches('-')),
            };
            preflight::input_file(&opts.input, &flag("input"))?;
            preflight::output_file(&opts.output, &flag("--output"))?;
            if let Some(report) = &input.report {
                preflight::output_file(report, &flag("--report"))?;
            }
        }
        if let Some(dir) = &first.opts.compute.checkpoint_dir {
            preflight::output_dir(dir, "--checkpoint-dir")?;
        }
        if let Some(report) = &self.manifest_report {
            preflight::output_file(report, "--report")?;
            let named = self
                .inputs
                .iter()
                .flat_map(|i| [Some(&i.opts.input), Some(&i.opts.output), i.report.as_ref()]);
            if named.flatten().any(|p| manifest::same_path(p, report)) {
                anyhow::bail!(
                    "--report {} is also a file of the manifest; give the run's report its own name",
                    report.display()
                );
            }
        }
        Ok(())
    }

    /// Every output file, locked for the whole command (checkpoint parts included) before the
    /// first is embedded: a second writer of any of them is refused before any work.
    fn claim(&self) -> Result<Option<OutputLock>> {
        let mut locks = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            locks.push(OutputLock::file(&input.opts.output, "--output")?);
        }
        let first = (!locks.is_empty()).then(|| locks.remove(0));
        *self.more_locks.lock().unwrap_or_else(|p| p.into_inner()) = locks;
        Ok(first)
    }

    fn execute(&self) -> Result<Finished> {
        let started = std::time::Instant::now();
        let model = self.inputs[0].opts.model.clone();
        let (summaries, loads) = match self.kind {
            EmbedKind::Dna => {
                let loader = Reusing::new(encoders::DnabertLoader(model));
                (
                    self.embed_all(&loader, encoders::dna_input)?,
                    loader.count(),
                )
            }
            EmbedKind::Protein => {
                let loader = Reusing::new(encoders::EsmLoader(model));
                (
                    self.embed_all(&loader, encoders::protein_input)?,
                    loader.count(),
                )
            }
        };
        let failed = summaries.iter().map(|s| s.failed).sum();
        if self.inputs.len() > 1 {
            tracing::info!(
                "{} inputs: the model loaded {} time(s) in {:.1} s, embedding {:.1} s",
                summaries.len(),
                loads.loads,
                loads.seconds,
                summaries.iter().map(|s| s.compute_seconds).sum::<f64>()
            );
        }
        if let Some(path) = &self.manifest_report {
            let all = ManifestSummary {
                inputs: summaries.len(),
                model_loads: loads.loads,
                model_load_seconds: loads.seconds,
                compute_seconds: summaries.iter().map(|s| s.compute_seconds).sum(),
                wall_seconds: started.elapsed().as_secs_f64(),
                sequences: summaries.iter().map(|s| s.sequences).sum(),
                failed,
                per_input: summaries,
            };
            crate::io::output::write_atomic(path, &serde_json::to_vec_pretty(&all)?)?;
        }
        Ok(Finished { failed })
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
