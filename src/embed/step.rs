//! One embedding step from tokens to files: devices chosen, the engine run under an
//! [`Assembler`], then the outputs written (the embeddings file, `<output>.failed.tsv` when
//! sequences failed alone) and the checkpoint removed or kept for the retry.

use std::time::Instant;

use anyhow::Result;

use super::assembler::{Assembler, Plan};
use super::encoders::Tokenized;
use super::engine::{EmbedJob, EncoderLoader, Faults};
use super::{failed_path, DeviceReport, EmbedOptions, EmbedSummary};
use crate::device::placement::DtypeReadBack;
use crate::device::{self, Devices, LazyPlacement, Precision};
use crate::embeddings::{EmbeddingKind, EmbeddingMeta, EmbeddingSet};
use crate::fasta::input_label;
use crate::interrupt::{Interrupted, StopOnSignal};
use crate::output::write_atomic;
use crate::progress::Progress;

/// The shared path: tokens in, embeddings file out.
pub(crate) fn embed_tokens<L: EncoderLoader>(
    opts: &EmbedOptions,
    placement: &LazyPlacement,
    input: Tokenized,
    loader: &L,
) -> Result<EmbedSummary> {
    let started = Instant::now();
    let Tokenized { ids, tokens, meta } = input;
    let placement = placement.get()?;
    let (devices, precision) = (&placement.devices, placement.precision);
    let step = step_name(&meta.kind);
    let progress = Progress::new(step, "sequences", Some(ids.len() as u64), opts.quiet);
    let mut asm = Assembler::new(
        opts,
        &meta,
        &tokens,
        &ids,
        devices,
        precision,
        L::GPU_BATCH_TOKENS,
        progress,
    );
    let (ran, compute_wall) = run_engine(&mut asm, loader, &tokens, &ids, devices, precision)?;
    let read_back = match ran {
        Ok(read_back) => read_back,
        Err(stop) => return Err(stopped(&mut asm, ids.len(), stop)),
    };
    asm.progress.finish();
    let Some(plan) = asm.plan.take() else {
        anyhow::bail!("the embedding engine finished without planning the step");
    };
    let (resumed, dim, budget, batches) = (plan.resumed, plan.dim, plan.budget, plan.batches);
    let mut failed = std::mem::take(&mut asm.failed);
    failed.sort();
    let out = Outputs {
        opts,
        ids: &ids,
        meta: &meta,
        precision,
        step,
    };
    let kept = out.write(plan, &failed)?;
    let wall = started.elapsed().as_secs_f64();
    let n_tokens: usize = tokens.iter().map(Vec::len).sum();
    let per_device = device_reports(&asm, compute_wall);
    let computed_tokens: usize = per_device.iter().map(|d| d.tokens).sum();
    Ok(EmbedSummary {
        input: input_label(&opts.input),
        output: opts.output.display().to_string(),
        sequences: kept,
        failed: failed.len(),
        failed_file: (!failed.is_empty()).then(|| failed_path(&opts.output).display().to_string()),
        resumed,
        tokens: n_tokens,
        dim,
        devices: devices.to_string(),
        per_device,
        precision,
        dtype_read_back: read_back,
        matmul_note: placement.matmul_note().map(str::to_string),
        batch_tokens: budget,
        batches,
        wall_seconds: wall,
        sequences_per_second: kept as f64 / wall.max(1e-9),
        tokens_per_second: n_tokens as f64 / wall.max(1e-9),
        compute_seconds: compute_wall,
        compute_tokens_per_second: computed_tokens as f64 / compute_wall.max(1e-9),
        peak_rss_mb: crate::resources::peak_rss_bytes().map(|b| b as f64 / 1048576.0),
    })
}

/// Run the engine with signal handlers installed: the dtypes read back from the model, or why
/// it stopped early; and the seconds it computed for (model loading excluded).
fn run_engine<L: EncoderLoader>(
    asm: &mut Assembler,
    loader: &L,
    tokens: &[Vec<u32>],
    ids: &[String],
    devices: &Devices,
    precision: Precision,
) -> Result<(Result<DtypeReadBack, Stop>, f64)> {
    let signals = StopOnSignal::install()?;
    let stop = signals.flag();
    let job = EmbedJob {
        loader,
        tokens,
        ids,
        names: &devices.worker_names(),
        coordinator: &mut *asm,
        stop: &stop,
        first_gpu: match devices {
            Devices::Cuda { .. } if !device::gpu_probe().computes_on_cuda() => None,
            Devices::Cuda { ids } => ids.first().copied(),
            Devices::Cpu { .. } | Devices::Wgpu { .. } => None,
        },
        precision,
        faults: Faults::injected(),
    };
    let result = device::dispatch(devices, precision, job);
    // Up to the last result, not to the threads' end: dropping a large model (11 GB for the
    // 3B on the CPU) is not computing.
    let compute_wall = asm.plan.as_ref().map_or(0.0, |p| {
        p.last_result
            .unwrap_or_else(Instant::now)
            .duration_since(p.compute_started)
            .as_secs_f64()
    });
    let interrupted = signals.requested();
    drop(signals);
    let ran = match (interrupted, result) {
        (Some(signal), _) => Err(Stop::Signal(signal)),
        (None, Err(e)) => Err(Stop::Failed(e)),
        (None, Ok(read_back)) => Ok(read_back),
    };
    Ok((ran, compute_wall))
}

/// Each worker's share of the step, for the summary.
fn device_reports(asm: &Assembler, compute_wall: f64) -> Vec<DeviceReport> {
    asm.per_device
        .iter()
        .enumerate()
        .map(|(w, &(sequences, tokens, busy))| DeviceReport {
            device: asm.device_name(w),
            sequences,
            tokens,
            busy_seconds: busy.as_secs_f64(),
            busy_share: busy.as_secs_f64() / compute_wall.max(1e-9),
        })
        .collect()
}

/// The step's name in messages and failed.tsv.
fn step_name(kind: &EmbeddingKind) -> &'static str {
    if *kind == EmbeddingKind::Dna {
        "embed-dna"
    } else {
        "embed-protein"
    }
}

/// Why the engine stopped before the end.
enum Stop {
    /// A signal asked for it (its number).
    Signal(i32),
    Failed(anyhow::Error),
}

/// The engine stopped early: keep what was finished, since the same command resumes from it,
/// and say so in the error.
fn stopped(asm: &mut Assembler, n: usize, stop: Stop) -> anyhow::Error {
    let saved = asm.save_pending();
    let done = asm.plan.as_ref().map_or(0, Plan::rows_done);
    let dir = asm
        .plan
        .as_ref()
        .map(|p| p.checkpoint.dir().display().to_string());
    asm.progress.finish();
    if let Err(e) = saved {
        return e;
    }
    let err = match stop {
        Stop::Signal(signal) => {
            // Only a stop asked for from outside is cured by running again.
            let detail = match dir {
                Some(dir) => format!(
                    "{done} of {n} sequences are saved in {dir}; run the same command again to resume"
                ),
                None => "no sequence was finished yet; run the same command again to start over"
                    .to_string(),
            };
            return Interrupted { signal, detail }.into();
        }
        Stop::Failed(err) => err,
    };
    // A failure (a model that does not load, a full disk) needs its cause fixed first; say
    // what is kept for then, when anything is.
    match dir {
        Some(dir) if done > 0 => err.context(format!(
            "embedding stopped with {done} of {n} sequences kept in {dir} for the next run"
        )),
        _ => err,
    }
}

/// What a finished step writes.
struct Outputs<'a> {
    opts: &'a EmbedOptions,
    ids: &'a [String],
    meta: &'a EmbeddingMeta,
    precision: Precision,
    step: &'static str,
}

impl Outputs<'_> {
    /// The embeddings file without the `failed` sequences, their list, and the checkpoint's
    /// fate; returns the number of sequences written.
    fn write(&self, mut plan: Plan, failed: &[(usize, String)]) -> Result<usize> {
        let (ids, dim, n) = (self.ids, plan.dim, self.ids.len());
        if n > 0 && failed.len() == n {
            // Nothing to hand on: that is a failed step, not a step with some failures.
            anyhow::bail!(
                "every one of the {n} sequences failed, e.g. {}: {}",
                ids[failed[0].0],
                failed[0].1
            );
        }
        if !failed.is_empty() {
            // Every finished row into the checkpoint, which is kept: the next run of the same
            // command retries only the failed sequences.
            plan.save_pending()?;
        }
        let (kept_ids, values) = kept_rows(ids, &mut plan, failed);
        let kept = kept_ids.len();
        let set = EmbeddingSet {
            ids: kept_ids,
            dim,
            values,
            meta: EmbeddingMeta {
                precision: self.precision.to_string(),
                ..self.meta.clone()
            },
        };
        set.write(&self.opts.output)?;
        self.write_failed(failed)?;
        if failed.is_empty() {
            plan.checkpoint.remove();
        } else {
            tracing::info!(
                "keeping the checkpoint {}: running the same command again retries only the {} failed sequences",
                plan.checkpoint.dir().display(),
                failed.len()
            );
        }
        Ok(kept)
    }

    /// `<output>.failed.tsv` listing the failed sequences, or no such file.
    fn write_failed(&self, failed: &[(usize, String)]) -> Result<()> {
        let failed_file = failed_path(&self.opts.output);
        if failed.is_empty() {
            // A stale list from an earlier run must not outlive the records it named.
            let _ = std::fs::remove_file(&failed_file);
            return Ok(());
        }
        let mut tsv = String::from("id\tstep\treason\n");
        for (i, reason) in failed {
            tsv.push_str(&format!(
                "{}\t{}\t{}\n",
                self.ids[*i],
                self.step,
                reason.replace(['\t', '\n'], " ")
            ));
        }
        write_atomic(&failed_file, tsv.as_bytes())
    }
}

/// The ids and rows of every sequence that did not fail, in input order.
fn kept_rows(
    ids: &[String],
    plan: &mut Plan,
    failed: &[(usize, String)],
) -> (Vec<String>, Vec<f32>) {
    if failed.is_empty() {
        return (ids.to_vec(), std::mem::take(&mut plan.out));
    }
    let (n, dim) = (ids.len(), plan.dim);
    let mut is_failed = vec![false; n];
    for (i, _) in failed {
        is_failed[*i] = true;
    }
    let mut kept = Vec::with_capacity(n - failed.len());
    let mut values = Vec::with_capacity((n - failed.len()) * dim);
    for i in (0..n).filter(|&i| !is_failed[i]) {
        kept.push(ids[i].clone());
        values.extend_from_slice(&plan.out[i * dim..(i + 1) * dim]);
    }
    (kept, values)
}
