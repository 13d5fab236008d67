//! `embed-dna` and `embed-protein`: FASTA in, one embeddings file out (see [`store`]).
//! Both share everything but the tokenizer and the model: reading, batching, devices, workers,
//! output.

pub mod batching;
pub mod checkpoint;
pub mod engine;
pub mod models;
pub mod store;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::device::{self, DeviceSpec, Devices, Precision};
use crate::fasta::{input_label, read_unique, FastaRecord};
use crate::fingerprint::Fnv64;
use crate::interrupt::{Interrupted, StopOnSignal};
use crate::output::write_atomic;
use crate::output_lock::OutputLock;
use crate::preflight;
use crate::progress::Progress;
use batching::{cuda_budget, largest_tensor_budget, token_budget_batches};
use checkpoint::Checkpoint;
use engine::{Coordinator, EmbedJob, EncoderLoader, Faults, ModelShape};
use store::{EmbeddingMeta, EmbeddingSet};

/// Where and how an embedding step runs: the same for embed-dna, embed-protein and `run`'s
/// two embedding steps (built once from the command line's `ComputeArgs`).
#[derive(Debug, Clone)]
pub struct ComputeSettings {
    pub device: DeviceSpec,
    pub precision: Precision,
    /// Padded tokens per batch; `None` = 2048 on the CPU, from free memory on a GPU.
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
    pub precision: Precision,
    pub batch_tokens: usize,
    pub batches: usize,
    pub wall_seconds: f64,
    pub sequences_per_second: f64,
    pub tokens_per_second: f64,
    pub peak_rss_mb: Option<f64>,
}

/// `<output>.failed.tsv`: sequences that failed alone (id, step, reason).
pub fn failed_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".failed.tsv");
    PathBuf::from(name)
}

/// Identifies the work for resume: the tokens, the model files, and what changes the numbers.
fn work_fingerprint(
    opts: &EmbedOptions,
    meta: &EmbeddingMeta,
    devices: &Devices,
    precision: Precision,
    tokens: &[Vec<u32>],
) -> String {
    let mut h = Fnv64::default();
    let kind = match devices {
        Devices::Cpu { .. } => "cpu",
        Devices::Cuda { .. } => "cuda",
        Devices::Wgpu { .. } => "wgpu",
    };
    let settings = serde_json::json!({
        "kind": meta.kind,
        "model": crate::fingerprint::model_contents(&opts.model),
        "precision": precision,
        "backend": kind,
        "version": env!("CARGO_PKG_VERSION"),
    });
    h.bytes(settings.to_string().as_bytes());
    h.u64(tokens.len() as u64);
    for t in tokens {
        h.u64(t.len() as u64);
        for &id in t {
            h.bytes(&id.to_le_bytes());
        }
    }
    h.hex()
}

/// Places results, checkpoints them, reports progress: the [`Coordinator`] of one step.
struct Assembler<'a> {
    opts: &'a EmbedOptions,
    meta: &'a EmbeddingMeta,
    tokens: &'a [Vec<u32>],
    ids: &'a [String],
    devices: &'a Devices,
    precision: Precision,
    fingerprint: String,
    gpu_default_budget: usize,
    // Filled by `plan`.
    dim: usize,
    out: Vec<f32>,
    done: Vec<bool>,
    budget: usize,
    batches: usize,
    resumed: usize,
    checkpoint: Option<Checkpoint>,
    pending: Vec<(Vec<usize>, Vec<f32>)>,
    last_save: Instant,
    failed: Vec<(usize, String)>,
    per_device: Vec<(usize, usize, Duration)>,
    compute_started: Instant,
    progress: Progress,
}

impl Assembler<'_> {
    fn device_name(&self, worker: usize) -> String {
        self.devices
            .worker_names()
            .get(worker)
            .cloned()
            .unwrap_or_else(|| format!("worker {worker}"))
    }

    fn save_pending(&mut self) -> Result<()> {
        if let Some(cp) = &mut self.checkpoint {
            cp.save(&self.pending, self.dim)?;
        }
        self.pending.clear();
        self.last_save = Instant::now();
        Ok(())
    }

    fn save_due(&self) -> bool {
        !self.pending.is_empty()
            && self.last_save.elapsed() >= Duration::from_secs(self.opts.compute.checkpoint_secs)
    }

    fn update_detail(&mut self) {
        let secs = self.compute_started.elapsed().as_secs_f64().max(1e-9);
        let tokens: usize = self.per_device.iter().map(|d| d.1).sum();
        let mut detail = format!("{:.0} tokens/s", tokens as f64 / secs);
        if self.per_device.len() > 1 {
            for (w, d) in self.per_device.iter().enumerate() {
                detail.push_str(&format!(
                    " | {} {:.1}/s",
                    self.device_name(w),
                    d.0 as f64 / secs
                ));
            }
        }
        self.progress.set_detail(detail);
    }
}

impl Coordinator for Assembler<'_> {
    fn plan(
        &mut self,
        dim: usize,
        shape: ModelShape,
        free_bytes: Option<u64>,
    ) -> Result<Vec<Vec<usize>>> {
        let n = self.tokens.len();
        self.dim = dim;
        self.out = vec![0f32; n * dim];
        self.done = vec![false; n];
        let lengths: Vec<usize> = self.tokens.iter().map(Vec::len).collect();
        let longest = lengths.iter().copied().max().unwrap_or(1);
        let fresh_budget = self.opts.compute.batch_tokens.unwrap_or_else(|| match (self.devices, free_bytes) {
            (Devices::Cpu { .. }, _) => 2048,
            (Devices::Cuda { .. }, Some(free)) => {
                let bytes = if self.precision == Precision::F32 { 4 } else { 2 };
                // No tensor over a quarter of the memory: CubeCL's pools cannot place one.
                let b = cuda_budget(Some(free), None, self.gpu_default_budget, shape, bytes, longest);
                tracing::info!("{:.1} GiB free on the first GPU after loading the model: {b} tokens per batch", free as f64 / (1u64 << 30) as f64);
                b
            }
            (Devices::Cuda { ids }, None) => {
                // Free memory unreadable: the smallest device's total bounds the largest tensor.
                let total = device::cuda::devices().ok().and_then(|all| {
                    all.iter().filter(|d| ids.contains(&d.index)).map(|d| d.total_bytes).min()
                });
                cuda_budget(None, total, self.gpu_default_budget, shape, 4, longest)
            }
            (Devices::Wgpu { adapters }, _) => {
                // wgpu reports no free memory; its binding limit bounds every tensor.
                let limit = adapters.iter().map(|a| a.max_binding_bytes).min().unwrap_or(1 << 27);
                let b = largest_tensor_budget(limit, shape, longest).min(self.gpu_default_budget);
                tracing::info!("wgpu binding limit {} MiB: {b} tokens per batch", limit >> 20);
                b
            }
        });
        let (cp, resumed) = Checkpoint::open(
            &self.opts.output,
            self.opts.compute.checkpoint_dir.as_deref(),
            &self.fingerprint,
            n,
            dim,
            fresh_budget,
            self.opts.compute.batch_tokens.is_some(),
        )?;
        self.budget = fresh_budget;
        if let Some(r) = resumed {
            self.budget = r.batch_tokens;
            for (i, row) in r.rows {
                if !self.done[i] {
                    self.out[i * dim..(i + 1) * dim].copy_from_slice(&row);
                    self.done[i] = true;
                    self.resumed += 1;
                }
            }
            tracing::info!(
                "resuming: {} of {n} sequences done by an earlier run (checkpoint {})",
                self.resumed,
                cp.dir().display()
            );
        }
        self.checkpoint = Some(cp);
        // The whole plan, then what is left of it: every remaining batch is the batch an
        // uninterrupted run computes, so results are identical bit for bit.
        let batches: Vec<Vec<usize>> = token_budget_batches(&lengths, self.budget)
            .into_iter()
            .map(|b| b.into_iter().filter(|&i| !self.done[i]).collect::<Vec<_>>())
            .filter(|b| !b.is_empty())
            .collect();
        self.batches = batches.len();
        tracing::info!(
            "{}: {} sequences ({} to embed), {} tokens in {} batches of <= {} tokens on {} ({})",
            self.meta.kind,
            n,
            n - self.resumed,
            lengths.iter().sum::<usize>(),
            batches.len(),
            self.budget,
            self.devices,
            self.precision
        );
        self.progress.inc(self.resumed as u64);
        self.compute_started = Instant::now();
        self.last_save = Instant::now();
        Ok(batches)
    }

    fn done(&mut self, worker: usize, batch: &[usize], rows: &[f32], busy: Duration) -> Result<()> {
        let dim = self.dim;
        for (r, &i) in batch.iter().enumerate() {
            self.out[i * dim..(i + 1) * dim].copy_from_slice(&rows[r * dim..(r + 1) * dim]);
            self.done[i] = true;
        }
        if self.per_device.len() <= worker {
            self.per_device.resize(worker + 1, (0, 0, Duration::ZERO));
        }
        let d = &mut self.per_device[worker];
        d.0 += batch.len();
        d.1 += batch.iter().map(|&i| self.tokens[i].len()).sum::<usize>();
        d.2 += busy;
        self.pending.push((batch.to_vec(), rows.to_vec()));
        self.update_detail();
        self.progress.inc(batch.len() as u64);
        if self.save_due() {
            self.save_pending()?;
        }
        Ok(())
    }

    fn failed(&mut self, worker: usize, index: usize, reason: &str) {
        tracing::warn!(
            "{} failed on {} and is left out: {reason}",
            self.ids[index],
            self.device_name(worker)
        );
        self.failed.push((index, reason.to_string()));
        self.progress.inc(1);
    }

    fn tick(&mut self) -> Result<()> {
        if self.save_due() {
            self.save_pending()?;
        }
        Ok(())
    }
}

/// The shared path: tokens in, embeddings file out.
pub(crate) fn embed_tokens<L: EncoderLoader>(
    opts: &EmbedOptions,
    ids: Vec<String>,
    tokens: Vec<Vec<u32>>,
    loader: &L,
    meta: EmbeddingMeta,
    gpu_default_budget: usize,
) -> Result<EmbedSummary> {
    let started = Instant::now();
    // Before anything touches a GPU (device checks included): CubeCL reads its cache settings once.
    if opts.compute.device != DeviceSpec::Cpu {
        let gpu_asked = opts.compute.device != DeviceSpec::Auto;
        device::kernel_cache::setup(opts.compute.kernel_cache.as_deref(), gpu_asked)?;
    }
    let devices = device::resolve(
        &opts.compute.device,
        opts.compute.threads,
        opts.compute.gpu_lease,
        opts.compute.gpu_lease_timeout,
    )?;
    let precision = device::effective_precision(&devices, opts.compute.precision)?;
    let step = if meta.kind == "dna" {
        "embed-dna"
    } else {
        "embed-protein"
    };
    let mut asm = Assembler {
        opts,
        meta: &meta,
        tokens: &tokens,
        ids: &ids,
        devices: &devices,
        precision,
        fingerprint: work_fingerprint(opts, &meta, &devices, precision, &tokens),
        gpu_default_budget,
        dim: 0,
        out: Vec::new(),
        done: Vec::new(),
        budget: 0,
        batches: 0,
        resumed: 0,
        checkpoint: None,
        pending: Vec::new(),
        last_save: Instant::now(),
        failed: Vec::new(),
        per_device: Vec::new(),
        compute_started: Instant::now(),
        progress: Progress::new(step, "sequences", Some(ids.len() as u64), opts.quiet),
    };
    let signals = StopOnSignal::install()?;
    let stop = signals.flag();
    let job = EmbedJob {
        loader,
        tokens: &tokens,
        ids: &ids,
        names: &devices.worker_names(),
        coordinator: &mut asm,
        stop: &stop,
        first_gpu: match &devices {
            Devices::Cuda { ids } => ids.first().copied(),
            Devices::Cpu { .. } | Devices::Wgpu { .. } => None,
        },
        faults: Faults::from_env(),
    };
    let result = device::dispatch(&devices, precision, job);
    let compute_wall = asm.compute_started.elapsed().as_secs_f64();
    let interrupted = signals.requested();
    drop(signals);
    if result.is_err() || interrupted.is_some() {
        // Keep what was finished: the same command resumes from it.
        let saved = asm.save_pending();
        let done = asm.done.iter().filter(|&&d| d).count();
        let dir = asm
            .checkpoint
            .as_ref()
            .map(|c| c.dir().display().to_string());
        asm.progress.finish();
        saved?;
        if let Some(signal) = interrupted {
            // Only a stop asked for from outside is cured by running again.
            let detail = match dir {
                Some(dir) => format!(
                    "{done} of {} sequences are saved in {dir}; run the same command again to resume",
                    ids.len()
                ),
                None => "no sequence was finished yet; run the same command again to start over"
                    .to_string(),
            };
            return Err(Interrupted { signal, detail }.into());
        }
        let err = result.unwrap_err();
        // A failure (a model that does not load, a full disk) needs its cause fixed first; say
        // what is kept for then, when anything is.
        return Err(match dir {
            Some(dir) if done > 0 => err.context(format!(
                "embedding stopped with {done} of {} sequences kept in {dir} for the next run",
                ids.len()
            )),
            _ => err,
        });
    }
    asm.progress.finish();
    let dim = asm.dim;
    let n = ids.len();
    let mut failed = std::mem::take(&mut asm.failed);
    failed.sort();
    if n > 0 && failed.len() == n {
        // Nothing to hand on: that is a failed step, not a step with some failures.
        anyhow::bail!(
            "every one of the {n} sequences failed, e.g. {}: {}",
            ids[failed[0].0],
            failed[0].1
        );
    }
    let is_failed = {
        let mut f = vec![false; n];
        for (i, _) in &failed {
            f[*i] = true;
        }
        f
    };
    if !failed.is_empty() {
        // Every finished row into the checkpoint, which is kept: the next run of the same
        // command retries only the failed sequences.
        asm.save_pending()?;
    }
    let (kept_ids, values) = if failed.is_empty() {
        (ids.clone(), std::mem::take(&mut asm.out))
    } else {
        let mut kept = Vec::with_capacity(n - failed.len());
        let mut vals = Vec::with_capacity((n - failed.len()) * dim);
        for i in (0..n).filter(|&i| !is_failed[i]) {
            kept.push(ids[i].clone());
            vals.extend_from_slice(&asm.out[i * dim..(i + 1) * dim]);
        }
        (kept, vals)
    };
    let set = EmbeddingSet {
        ids: kept_ids,
        dim,
        values,
        meta: EmbeddingMeta {
            precision: precision.to_string(),
            ..meta.clone()
        },
    };
    set.write(&opts.output)?;
    let failed_file = failed_path(&opts.output);
    if failed.is_empty() {
        // A stale list from an earlier run must not outlive the records it named.
        let _ = std::fs::remove_file(&failed_file);
    } else {
        let mut tsv = String::from("id\tstep\treason\n");
        for (i, reason) in &failed {
            tsv.push_str(&format!(
                "{}\t{step}\t{}\n",
                ids[*i],
                reason.replace(['\t', '\n'], " ")
            ));
        }
        write_atomic(&failed_file, tsv.as_bytes())?;
    }
    if let Some(cp) = asm.checkpoint.take() {
        if failed.is_empty() {
            cp.remove();
        } else {
            tracing::info!(
                "keeping the checkpoint {}: running the same command again retries only the {} failed sequences",
                cp.dir().display(),
                failed.len()
            );
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let n_tokens: usize = tokens.iter().map(Vec::len).sum();
    let per_device = asm
        .per_device
        .iter()
        .enumerate()
        .map(|(w, &(sequences, tokens, busy))| DeviceReport {
            device: asm.device_name(w),
            sequences,
            tokens,
            busy_seconds: busy.as_secs_f64(),
            busy_share: busy.as_secs_f64() / compute_wall.max(1e-9),
        })
        .collect();
    Ok(EmbedSummary {
        input: input_label(&opts.input),
        output: opts.output.display().to_string(),
        sequences: set.ids.len(),
        failed: failed.len(),
        failed_file: (!failed.is_empty()).then(|| failed_file.display().to_string()),
        resumed: asm.resumed,
        tokens: n_tokens,
        dim,
        devices: devices.to_string(),
        per_device,
        precision,
        batch_tokens: asm.budget,
        batches: asm.batches,
        wall_seconds: wall,
        sequences_per_second: set.ids.len() as f64 / wall.max(1e-9),
        tokens_per_second: n_tokens as f64 / wall.max(1e-9),
        peak_rss_mb: crate::resources::peak_rss_bytes().map(|b| b as f64 / 1048576.0),
    })
}

/// What an embedding step checks and claims before any work: its input readable, its output
/// (and checkpoint) location writable, then the output locked for the whole step. The model is
/// checked by the caller (it knows which kind). The lock is released when dropped.
pub(crate) fn claim_output(opts: &EmbedOptions) -> Result<OutputLock> {
    preflight::input_file(&opts.input, "input")?;
    preflight::output_file(&opts.output, "--output")?;
    if let Some(dir) = &opts.compute.checkpoint_dir {
        preflight::output_dir(dir, "--checkpoint-dir")?;
    }
    OutputLock::file(&opts.output, "--output")
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
