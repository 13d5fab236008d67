//! The [`Coordinator`] of one embedding step: once the first model is loaded it makes the
//! [`Plan`] (the token budget, the batches, what an earlier run's checkpoint already holds),
//! then places each finished batch in the output, checkpoints it and reports progress. The
//! engine's end turns it into a value: [`Assembled`] when it ran to the end (the rows, the
//! failures, the counts), [`Kept`] when it stopped early (what the next run resumes from).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::batching::{cpu_budget, cuda_budget, largest_tensor_budget, token_budget_batches};
use super::checkpoint::Checkpoint;
use super::engine::Coordinator;
use super::{DeviceReport, EmbedOptions};
use crate::device::{Devices, Precision};
use crate::io::embeddings::EmbeddingMeta;
use crate::io::fingerprint::Fnv64;
use crate::models::shape::ModelShape;
use crate::runtime::progress::Progress;

/// What one step embeds and where: fixed before the engine starts.
pub(crate) struct Assembler<'a> {
    opts: &'a EmbedOptions,
    meta: &'a EmbeddingMeta,
    tokens: &'a [Vec<u32>],
    ids: &'a [String],
    devices: &'a Devices,
    precision: Precision,
    /// Identifies the work for resume ([`work_fingerprint`]).
    fingerprint: String,
    /// Padded tokens per batch on a GPU whose free memory is not known.
    gpu_default_budget: usize,
    /// When the engine was about to start: the first model's load is timed from here.
    created: Instant,
    /// Made by [`Coordinator::plan`], once the first model is loaded.
    plan: Option<Plan>,
    /// Sequences that failed alone, with the reason.
    failed: Vec<(usize, String)>,
    /// Per worker: sequences, tokens, time inside batches.
    per_device: Vec<(usize, usize, Duration)>,
    progress: Progress,
}

/// The step's plan and the rows it has so far.
struct Plan {
    dim: usize,
    /// `[sequences, dim]` row-major; row `i` is valid when `done[i]`.
    out: Vec<f32>,
    done: Vec<bool>,
    /// The token budget the batches were cut with (an earlier run's, when resuming).
    budget: usize,
    batches: usize,
    /// Rows taken from an earlier run's checkpoint.
    resumed: usize,
    checkpoint: Checkpoint,
    /// Finished batches not yet in the checkpoint.
    pending: Vec<(Vec<usize>, Vec<f32>)>,
    last_save: Instant,
    /// From the engine's start to the first model loaded (read, checked, built and on its
    /// device), when the step is planned.
    load_seconds: f64,
    compute_started: Instant,
    /// When the latest batch result arrived (the end of computing, once all have).
    last_result: Option<Instant>,
}

impl Plan {
    /// Write the pending rows to the checkpoint.
    fn save_pending(&mut self) -> Result<()> {
        self.checkpoint.save(&self.pending, self.dim)?;
        self.pending.clear();
        self.last_save = Instant::now();
        Ok(())
    }

    fn save_due(&self, every: Duration) -> bool {
        !self.pending.is_empty() && self.last_save.elapsed() >= every
    }

    fn rows_done(&self) -> usize {
        self.done.iter().filter(|&&d| d).count()
    }

    /// Seconds from the batches planned to the last result: dropping a large model after it
    /// (11 GB for the 3B on the CPU) is not computing.
    fn compute_seconds(&self) -> f64 {
        self.last_result
            .unwrap_or_else(Instant::now)
            .duration_since(self.compute_started)
            .as_secs_f64()
    }
}

/// A step whose engine ran to the end: every row it has, the sequences that failed alone, and
/// what the summary reports. Its checkpoint goes with it, for the step to remove once the
/// output is written or to keep for a retry of the failures.
pub(crate) struct Assembled {
    plan: Plan,
    /// Sorted by sequence index (input order).
    failed: Vec<(usize, String)>,
    per_device: Vec<DeviceReport>,
    compute_seconds: f64,
}

impl Assembled {
    pub fn dim(&self) -> usize {
        self.plan.dim
    }

    /// The token budget the batches were cut with (an earlier run's, when resuming).
    pub fn batch_tokens(&self) -> usize {
        self.plan.budget
    }

    /// Batches planned for this run (resumed rows excluded).
    pub fn batches(&self) -> usize {
        self.plan.batches
    }

    /// Rows taken from an earlier run's checkpoint.
    pub fn resumed(&self) -> usize {
        self.plan.resumed
    }

    /// Sequences that failed alone (index, reason), in input order.
    pub fn failed(&self) -> &[(usize, String)] {
        &self.failed
    }

    /// Each worker's share of the step.
    pub fn device_reports(&self) -> &[DeviceReport] {
        &self.per_device
    }

    /// Embedding alone: from the batches planned to the last batch's result.
    pub fn compute_seconds(&self) -> f64 {
        self.compute_seconds
    }

    /// Loading the first model: from the engine's start to the batches planned.
    pub fn load_seconds(&self) -> f64 {
        self.plan.load_seconds
    }

    /// Every finished row into the checkpoint, for a next run that retries only the failures.
    pub fn save_for_retry(&mut self) -> Result<()> {
        self.plan.save_pending()
    }

    /// The ids and rows of every sequence that did not fail, in input order. The rows are
    /// moved out (not copied: the whole output can be gigabytes), so this is asked once.
    pub fn take_kept_rows(&mut self, ids: &[String]) -> (Vec<String>, Vec<f32>) {
        let plan = &mut self.plan;
        if self.failed.is_empty() {
            return (ids.to_vec(), std::mem::take(&mut plan.out));
        }
        let (n, dim) = (ids.len(), plan.dim);
        let mut is_failed = vec![false; n];
        for (i, _) in &self.failed {
            is_failed[*i] = true;
        }
        let mut kept = Vec::with_capacity(n - self.failed.len());
        let mut values = Vec::with_capacity((n - self.failed.len()) * dim);
        for i in (0..n).filter(|&i| !is_failed[i]) {
            kept.push(ids[i].clone());
            values.extend_from_slice(&plan.out[i * dim..(i + 1) * dim]);
        }
        (kept, values)
    }

    pub fn checkpoint_dir(&self) -> &Path {
        self.plan.checkpoint.dir()
    }

    /// The output is complete: the checkpoint is no longer needed.
    pub fn remove_checkpoint(self) {
        self.plan.checkpoint.remove();
    }
}

/// What a step stopped early leaves for the next run of the same command.
pub(crate) struct Kept {
    /// Rows finished (this run's and resumed ones), all saved in the checkpoint.
    rows: usize,
    dir: PathBuf,
}

impl Kept {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl<'a> Assembler<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: &'a EmbedOptions,
        meta: &'a EmbeddingMeta,
        tokens: &'a [Vec<u32>],
        ids: &'a [String],
        devices: &'a Devices,
        precision: Precision,
        gpu_default_budget: usize,
        progress: Progress,
    ) -> Self {
        Self {
            opts,
            meta,
            tokens,
            ids,
            devices,
            precision,
            fingerprint: work_fingerprint(opts, meta, devices, precision, tokens),
            gpu_default_budget,
            created: Instant::now(),
            plan: None,
            failed: Vec::new(),
            per_device: Vec::new(),
            progress,
        }
    }

    fn device_name(&self, worker: usize) -> String {
        self.devices
            .worker_names()
            .get(worker)
            .cloned()
            .unwrap_or_else(|| format!("worker {worker}"))
    }

    /// The engine ran to the end: the progress bar is closed and the step's rows, failures
    /// and counts handed on.
    pub fn finish(mut self) -> Result<Assembled> {
        self.progress.finish();
        let Some(plan) = self.plan.take() else {
            bail!("the embedding engine finished without planning the step");
        };
        let compute_seconds = plan.compute_seconds();
        let per_device = self.device_reports(compute_seconds);
        let mut failed = std::mem::take(&mut self.failed);
        failed.sort();
        Ok(Assembled {
            plan,
            failed,
            per_device,
            compute_seconds,
        })
    }

    /// The engine stopped early: what is finished is saved, since the same command resumes
    /// from it. `None` when the step was not planned yet (no checkpoint exists).
    pub fn stop(mut self) -> Result<Option<Kept>> {
        let saved = match &mut self.plan {
            Some(plan) => plan.save_pending(),
            None => Ok(()),
        };
        self.progress.finish();
        saved?;
        Ok(self.plan.map(|plan| Kept {
            rows: plan.rows_done(),
            dir: plan.checkpoint.dir().to_path_buf(),
        }))
    }

    /// Each worker's share of the step, over `compute_seconds` of computing.
    fn device_reports(&self, compute_seconds: f64) -> Vec<DeviceReport> {
        self.per_device
            .iter()
            .enumerate()
            .map(|(w, &(sequences, tokens, busy))| DeviceReport {
                device: self.device_name(w),
                sequences,
                tokens,
                busy_seconds: busy.as_secs_f64(),
                busy_share: busy.as_secs_f64() / compute_seconds.max(1e-9),
            })
            .collect()
    }

    /// Checkpoint the pending rows when the last save is `every` old.
    fn tick_every(&mut self, every: Duration) -> Result<()> {
        match &mut self.plan {
            Some(plan) if plan.save_due(every) => plan.save_pending(),
            _ => Ok(()),
        }
    }

    fn checkpoint_every(&self) -> Duration {
        Duration::from_secs(self.opts.compute.checkpoint_secs)
    }

    fn update_detail(&mut self, compute_started: Instant) {
        let secs = compute_started.elapsed().as_secs_f64().max(1e-9);
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

    /// The token budget of a fresh run: the user's, else one for the devices.
    fn fresh_budget(&self, shape: ModelShape, free_bytes: Option<u64>, lengths: &[usize]) -> usize {
        if let Some(b) = self.opts.compute.batch_tokens {
            return b;
        }
        let longest = lengths.iter().copied().max().unwrap_or(1);
        match (self.devices, free_bytes) {
            (Devices::Cpu { workers }, _) => {
                let cache = crate::device::cpu_cache::last_level();
                let b = cpu_budget(lengths, *workers, shape, cache);
                match cache {
                    Some(c) => tracing::info!(
                        "{} MiB last-level cache shared by {} CPUs: {b} tokens per CPU batch",
                        c.bytes >> 20,
                        c.shared_by
                    ),
                    None => tracing::info!("CPU cache size unknown: {b} tokens per CPU batch"),
                }
                b
            }
            (Devices::Cuda { .. }, Some(free)) => {
                let bytes = if self.precision == Precision::F32 {
                    4
                } else {
                    2
                };
                // No tensor over a quarter of the memory: CubeCL's pools cannot place one.
                let b = cuda_budget(
                    Some(free),
                    None,
                    self.gpu_default_budget,
                    shape,
                    bytes,
                    longest,
                );
                tracing::info!(
                    "{:.1} GiB free on the first GPU after loading the model: {b} tokens per batch",
                    free as f64 / (1u64 << 30) as f64
                );
                b
            }
            (Devices::Cuda { ids }, None) => {
                // Free memory unreadable: the smallest device's total bounds the largest tensor.
                let total = crate::device::cuda::devices().ok().and_then(|all| {
                    all.iter()
                        .filter(|d| ids.contains(&d.index))
                        .map(|d| d.total_bytes)
                        .min()
                });
                cuda_budget(None, total, self.gpu_default_budget, shape, 4, longest)
            }
            (Devices::Wgpu { adapters }, _) => {
                // wgpu reports no free memory; its binding limit bounds every tensor.
                let limit = adapters
                    .iter()
                    .map(|a| a.max_binding_bytes)
                    .min()
                    .unwrap_or(1 << 27);
                let b = largest_tensor_budget(limit, shape, longest).min(self.gpu_default_budget);
                tracing::info!(
                    "wgpu binding limit {} MiB: {b} tokens per batch",
                    limit >> 20
                );
                b
            }
        }
    }
}

impl Coordinator for Assembler<'_> {
    fn plan(
        &mut self,
        dim: usize,
        shape: ModelShape,
        free_bytes: Option<u64>,
    ) -> Result<Vec<Vec<usize>>> {
        let load_seconds = self.created.elapsed().as_secs_f64();
        let n = self.tokens.len();
        let lengths: Vec<usize> = self.tokens.iter().map(Vec::len).collect();
        let fresh_budget = self.fresh_budget(shape, free_bytes, &lengths);
        let (checkpoint, resumed) = Checkpoint::open(
            &self.opts.output,
            self.opts.compute.checkpoint_dir.as_deref(),
            &self.fingerprint,
            n,
            dim,
            fresh_budget,
            self.opts.compute.batch_tokens.is_some(),
        )?;
        let mut plan = Plan {
            dim,
            out: vec![0f32; n * dim],
            done: vec![false; n],
            budget: fresh_budget,
            batches: 0,
            resumed: 0,
            checkpoint,
            pending: Vec::new(),
            last_save: Instant::now(),
            load_seconds,
            compute_started: Instant::now(),
            last_result: None,
        };
        if let Some(r) = resumed {
            plan.budget = r.batch_tokens;
            for (i, row) in r.rows {
                if !plan.done[i] {
                    plan.out[i * dim..(i + 1) * dim].copy_from_slice(&row);
                    plan.done[i] = true;
                    plan.resumed += 1;
                }
            }
            tracing::info!(
                "resuming: {} of {n} sequences done by an earlier run (checkpoint {})",
                plan.resumed,
                plan.checkpoint.dir().display()
            );
        }
        // The whole plan, then what is left of it: every remaining batch is the batch an
        // uninterrupted run computes, so results are identical bit for bit.
        let batches: Vec<Vec<usize>> = token_budget_batches(&lengths, plan.budget)
            .into_iter()
            .map(|b| b.into_iter().filter(|&i| !plan.done[i]).collect::<Vec<_>>())
            .filter(|b| !b.is_empty())
            .collect();
        plan.batches = batches.len();
        tracing::info!(
            "{}: {} sequences ({} to embed), {} tokens in {} batches of <= {} tokens on {} ({})",
            self.meta.kind,
            n,
            n - plan.resumed,
            lengths.iter().sum::<usize>(),
            batches.len(),
            plan.budget,
            self.devices,
            self.precision
        );
        self.progress.inc(plan.resumed as u64);
        plan.compute_started = Instant::now();
        plan.last_save = Instant::now();
        self.plan = Some(plan);
        Ok(batches)
    }

    fn done(&mut self, worker: usize, batch: &[usize], rows: &[f32], busy: Duration) -> Result<()> {
        let every = self.checkpoint_every();
        let Some(plan) = self.plan.as_mut() else {
            bail!("a batch finished before the step was planned");
        };
        let dim = plan.dim;
        for (r, &i) in batch.iter().enumerate() {
            plan.out[i * dim..(i + 1) * dim].copy_from_slice(&rows[r * dim..(r + 1) * dim]);
            plan.done[i] = true;
        }
        plan.pending.push((batch.to_vec(), rows.to_vec()));
        plan.last_result = Some(Instant::now());
        let compute_started = plan.compute_started;
        if self.per_device.len() <= worker {
            self.per_device.resize(worker + 1, (0, 0, Duration::ZERO));
        }
        let d = &mut self.per_device[worker];
        d.0 += batch.len();
        d.1 += batch.iter().map(|&i| self.tokens[i].len()).sum::<usize>();
        d.2 += busy;
        self.update_detail(compute_started);
        self.progress.inc(batch.len() as u64);
        self.tick_every(every)
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
        self.tick_every(self.checkpoint_every())
    }
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
        "kind": meta.kind.as_str(),
        "model": crate::io::fingerprint::model_contents(&opts.model),
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
