//! The [`Coordinator`] of one embedding step: once the first model is loaded it makes the
//! [`Plan`] (the token budget, the batches, what an earlier run's checkpoint already holds),
//! then places each finished batch in the output, checkpoints it and reports progress.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::batching::{cpu_budget, cuda_budget, largest_tensor_budget, token_budget_batches};
use super::checkpoint::Checkpoint;
use super::engine::Coordinator;
use super::EmbedOptions;
use crate::device::{Devices, Precision};
use crate::embeddings::EmbeddingMeta;
use crate::fingerprint::Fnv64;
use crate::models::shape::ModelShape;
use crate::progress::Progress;

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
    /// Made by [`Coordinator::plan`], once the first model is loaded.
    pub plan: Option<Plan>,
    /// Sequences that failed alone, with the reason.
    pub failed: Vec<(usize, String)>,
    /// Per worker: sequences, tokens, time inside batches.
    pub per_device: Vec<(usize, usize, Duration)>,
    pub progress: Progress,
}

/// The step's plan and the rows it has so far.
pub(crate) struct Plan {
    pub dim: usize,
    /// `[sequences, dim]` row-major; row `i` is valid when `done[i]`.
    pub out: Vec<f32>,
    pub done: Vec<bool>,
    /// The token budget the batches were cut with (an earlier run's, when resuming).
    pub budget: usize,
    pub batches: usize,
    /// Rows taken from an earlier run's checkpoint.
    pub resumed: usize,
    pub checkpoint: Checkpoint,
    /// Finished batches not yet in the checkpoint.
    pending: Vec<(Vec<usize>, Vec<f32>)>,
    last_save: Instant,
    pub compute_started: Instant,
    /// When the latest batch result arrived (the end of computing, once all have).
    pub last_result: Option<Instant>,
}

impl Plan {
    /// Write the pending rows to the checkpoint.
    pub fn save_pending(&mut self) -> Result<()> {
        self.checkpoint.save(&self.pending, self.dim)?;
        self.pending.clear();
        self.last_save = Instant::now();
        Ok(())
    }

    fn save_due(&self, every: Duration) -> bool {
        !self.pending.is_empty() && self.last_save.elapsed() >= every
    }

    pub fn rows_done(&self) -> usize {
        self.done.iter().filter(|&&d| d).count()
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
            plan: None,
            failed: Vec::new(),
            per_device: Vec::new(),
            progress,
        }
    }

    pub fn device_name(&self, worker: usize) -> String {
        self.devices
            .worker_names()
            .get(worker)
            .cloned()
            .unwrap_or_else(|| format!("worker {worker}"))
    }

    /// Save what is finished (when the step stops early, or before keeping a checkpoint).
    pub fn save_pending(&mut self) -> Result<()> {
        match &mut self.plan {
            Some(plan) => plan.save_pending(),
            None => Ok(()),
        }
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
