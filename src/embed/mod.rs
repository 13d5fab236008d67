//! `embed-dna` and `embed-protein`: FASTA in, one embeddings file out (see [`store`]).
//! Both share everything but the tokenizer and the model: reading, batching, devices, workers,
//! output.

pub mod batching;
pub mod engine;
pub mod models;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::device::{self, DeviceSpec, Devices, Precision};
use crate::fasta::{input_label, read_unique, FastaRecord};
use crate::progress::Progress;
use batching::token_budget_batches;
use engine::{EmbedJob, EncoderLoader};
use store::{EmbeddingMeta, EmbeddingSet};

#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub input: PathBuf,
    pub model: PathBuf,
    pub output: PathBuf,
    pub device: DeviceSpec,
    pub precision: Precision,
    /// Padded tokens per batch; `None` = a default for the device.
    pub batch_tokens: Option<usize>,
    /// CPU workers (default: all cores).
    pub threads: Option<usize>,
    pub quiet: bool,
}

/// What an embedding step did, for logs and run reports.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedSummary {
    pub input: String,
    pub output: String,
    pub sequences: usize,
    pub tokens: usize,
    pub dim: usize,
    pub devices: String,
    pub precision: Precision,
    pub batch_tokens: usize,
    pub batches: usize,
    pub wall_seconds: f64,
    pub sequences_per_second: f64,
    pub tokens_per_second: f64,
}

/// Default token budget per batch: modest on the CPU (cache-friendly, one batch per worker),
/// large on a GPU (keeps it busy).
fn default_batch_tokens(devices: &Devices, gpu_default: usize) -> usize {
    match devices {
        Devices::Cpu { .. } => 2048,
        Devices::Cuda { .. } => gpu_default,
    }
}

/// The shared path: tokens in, embeddings file out.
pub(crate) fn embed_tokens<L: EncoderLoader>(
    opts: &EmbedOptions,
    ids: Vec<String>,
    tokens: Vec<Vec<u32>>,
    loader: &L,
    meta: EmbeddingMeta,
    gpu_batch_tokens: usize,
) -> Result<EmbedSummary> {
    let started = Instant::now();
    let devices = device::resolve(&opts.device, opts.threads)?;
    let precision = device::effective_precision(&devices, opts.precision);
    let budget = opts
        .batch_tokens
        .unwrap_or_else(|| default_batch_tokens(&devices, gpu_batch_tokens));
    let lengths: Vec<usize> = tokens.iter().map(Vec::len).collect();
    let batches = token_budget_batches(&lengths, budget);
    let n_batches = batches.len();
    tracing::info!(
        "{}: {} sequences, {} tokens in {} batches of <= {} tokens on {} ({})",
        meta.kind,
        ids.len(),
        lengths.iter().sum::<usize>(),
        n_batches,
        budget,
        devices,
        precision
    );
    let job = EmbedJob {
        loader,
        tokens: &tokens,
        batches,
        progress: Mutex::new(Progress::new(
            if meta.kind == "dna" {
                "embed-dna"
            } else {
                "embed-protein"
            },
            "sequences",
            Some(ids.len() as u64),
            opts.quiet,
        )),
    };
    let (values, dim) = device::dispatch(&devices, precision, job)?;
    let set = EmbeddingSet {
        ids,
        dim,
        values,
        meta: EmbeddingMeta {
            precision: precision.to_string(),
            ..meta
        },
    };
    set.write(&opts.output)?;
    let wall = started.elapsed().as_secs_f64();
    let n_tokens: usize = lengths.iter().sum();
    Ok(EmbedSummary {
        input: input_label(&opts.input),
        output: opts.output.display().to_string(),
        sequences: set.ids.len(),
        tokens: n_tokens,
        dim,
        devices: devices.to_string(),
        precision,
        batch_tokens: budget,
        batches: n_batches,
        wall_seconds: wall,
        sequences_per_second: set.ids.len() as f64 / wall.max(1e-9),
        tokens_per_second: n_tokens as f64 / wall.max(1e-9),
    })
}

/// Records of an embedding input; an empty file gives no records and a warning.
pub(crate) fn read_input(input: &Path) -> Result<Vec<FastaRecord>> {
    match read_unique(input)? {
        Some(recs) => Ok(recs),
        None => {
            tracing::warn!(
                "{} is empty: writing an empty embeddings file",
                input_label(input)
            );
            Ok(Vec::new())
        }
    }
}

/// A short name for a model path: its directory or file name.
pub(crate) fn model_name(path: &Path) -> String {
    let p = if path.is_file()
        && path
            .file_name()
            .is_some_and(|n| !n.to_string_lossy().ends_with(".pt"))
    {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| p.display().to_string())
}

/// Log the summary and, when asked, write it as JSON.
pub fn finish(s: &EmbedSummary, report: Option<&Path>) -> Result<()> {
    log_summary(s);
    if let Some(path) = report {
        crate::output::write_atomic(path, &serde_json::to_vec_pretty(s)?)?;
    }
    Ok(())
}

pub fn log_summary(s: &EmbedSummary) {
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
        s.precision
    );
}
