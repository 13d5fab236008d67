//! One embedding step from tokens to files: devices chosen, the engine run under an
//! [`Assembler`], then the outputs written from what it [`Assembled`] (the embeddings file,
//! `<output>.failed.tsv` when sequences failed alone) and the checkpoint removed or kept for the
//! retry.

use std::time::Instant;

use anyhow::Result;

use super::assembler::{Assembled, Assembler, Kept};
use super::encoders::Tokenized;
use super::engine::{EmbedJob, EncoderLoader, Faults};
use super::{failed_path, EmbedOptions, EmbedSummary};
use crate::device::placement::DtypeReadBack;
use crate::device::{self, Devices, LazyPlacement, Precision};
use crate::io::embeddings::{EmbeddingKind, EmbeddingMeta, EmbeddingSet};
use crate::io::fasta::input_label;
use crate::io::output::write_atomic;
use crate::runtime::interrupt::{Interrupted, StopOnSignal};
use crate::runtime::progress::Progress;

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
    let read_back = match run_engine(&mut asm, loader, &tokens, &ids, devices, precision)? {
        Ok(read_back) => read_back,
        Err(stop) => return Err(stopped(asm.stop(), ids.len(), stop)),
    };
    let assembled = asm.finish()?;
    // What the summary reports of the assembled step, read before its rows go to the output.
    let (resumed, dim, budget, batches) = (
        assembled.resumed(),
        assembled.dim(),
        assembled.batch_tokens(),
        assembled.batches(),
    );
    let failed = assembled.failed().len();
    let per_device = assembled.device_reports().to_vec();
    let compute_wall = assembled.compute_seconds();
    let load_seconds = assembled.load_seconds();
    let out = Outputs {
        opts,
        ids: &ids,
        meta: &meta,
        precision,
        step,
    };
    let kept = out.write(assembled)?;
    let wall = started.elapsed().as_secs_f64();
    let n_tokens: usize = tokens.iter().map(Vec::len).sum();
    let computed_tokens: usize = per_device.iter().map(|d| d.tokens).sum();
    Ok(EmbedSummary {
        input: input_label(&opts.input),
        output: opts.output.display().to_string(),
        sequences: kept,
        failed,
        failed_file: (failed > 0).then(|| failed_path(&opts.output).display().to_string()),
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
        load_seconds,
        sequences_per_second: kept as f64 / wall.max(1e-9),
        tokens_per_second: n_tokens as f64 / wall.max(1e-9),
        compute_seconds: compute_wall,
        compute_tokens_per_second: computed_tokens as f64 / compute_wall.max(1e-9),
        peak_rss_mb: crate::runtime::resources::peak_rss_bytes().map(|b| b as f64 / 1048576.0),
    })
}

/// Run the engine with signal handlers installed: the dtypes read back from the model, or why
/// it stopped early.
fn run_engine<L: EncoderLoader>(
    asm: &mut Assembler,
    loader: &L,
    tokens: &[Vec<u32>],
    ids: &[String],
    devices: &Devices,
    precision: Precision,
) -> Result<Result<DtypeReadBack, Stop>> {
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
    let interrupted = signals.requested();
    drop(signals);
    Ok(match (interrupted, result) {
        (Some(signal), _) => Err(Stop::Signal(signal)),
        (None, Err(e)) => Err(Stop::Failed(e)),
        (None, Ok(read_back)) => Ok(read_back),
    })
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

/// The engine stopped early: say in the error what was kept (`kept`, saved by
/// [`Assembler::stop`]) for the same command to resume from, or why saving it failed.
fn stopped(kept: Result<Option<Kept>>, n: usize, stop: Stop) -> anyhow::Error {
    let kept = match kept {
        Ok(kept) => kept,
        Err(e) => return e,
    };
    let done = kept.as_ref().map_or(0, Kept::rows);
    let dir = kept.map(|k| k.dir().display().to_string());
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
    /// The embeddings file without the failed sequences, their list, and the checkpoint's
    /// fate; returns the number of sequences written.
    fn write(&self, mut assembled: Assembled) -> Result<usize> {
        let (ids, dim, n) = (self.ids, assembled.dim(), self.ids.len());
        let failed = assembled.failed().len();
        if n > 0 && failed == n {
            // Nothing to hand on: that is a failed step, not a step with some failures.
            let (first, reason) = &assembled.failed()[0];
            anyhow::bail!(
                "every one of the {n} sequences failed, e.g. {}: {reason}",
                ids[*first]
            );
        }
        if failed > 0 {
            // Every finished row into the checkpoint, which is kept: the next run of the same
            // command retries only the failed sequences.
            assembled.save_for_retry()?;
        }
        let (kept_ids, values) = assembled.take_kept_rows(ids);
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
        self.write_failed(assembled.failed())?;
        if failed == 0 {
            assembled.remove_checkpoint();
        } else {
            tracing::info!(
                "keeping the checkpoint {}: running the same command again retries only the {} failed sequences",
                assembled.checkpoint_dir().display(),
                failed
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
