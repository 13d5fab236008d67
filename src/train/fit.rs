//! `virnucpro train`: the original's loop. Per epoch: the training rows in batches (shuffled
//! unless `--no-shuffle`; a last batch of a single row is left out, since BatchNorm cannot
//! normalise one row and PyTorch refuses it), SGD with momentum as PyTorch does it
//! (`buf = momentum·buf + grad`, the first step `buf = grad`; `p -= lr·buf`; no dampening or
//! weight decay), then the validation rows in eval mode, the metrics, early stopping on the
//! validation loss, a StepLR step and a checkpoint. The train loss logged is the mean of the
//! batches' mean losses, as the original's `total / batches` (a short last batch weighs as
//! much as a full one).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use super::checkpoint::{self, EpochLog, Progress, State, CHECKPOINT_FILE};
use super::data::{self, label_name, Samples};
use super::model::{HostTensor, Mlp, ParamSet};
use super::rng::{self, Stream};
use super::{figures, metrics, tensors, TrainOptions};
use super::{CLASSIFIER_FILE, LAST_FILE, LOG_FILE, TRAIN_FIGURE, TRAIN_REPORT, VALIDATION_FILE};
use crate::device::{self, BackendTask, Precision};
use crate::flag_values::UsageError;
use crate::io::output::OutputSet;
use crate::io::output_lock::OutputLock;
use crate::models::ops::ModelOps;
use crate::models::tensor_to_f32;
use crate::preflight;
use crate::runtime::interrupt::{Interrupted, StopOnSignal};
use crate::subcommand::{Finished, Subcommand};

/// Validation rows per forward pass.
const EVAL_ROWS: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub samples: usize,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub feature_dim: usize,
    pub hidden: usize,
    pub dna_model: String,
    pub protein_model: String,
    pub join: data::JoinCounts,
    pub epochs_run: usize,
    pub resumed_after_epoch: Option<usize>,
    pub stopped_early: bool,
    pub best_epoch: usize,
    pub best: EpochLog,
    /// Rows left out of every epoch: a last batch of one row.
    pub rows_skipped_per_epoch: usize,
    pub device: String,
    pub seed: u64,
    pub shuffle: bool,
    pub dropout: f64,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub lr_step: usize,
    pub lr_gamma: f64,
    pub patience: usize,
    pub init: Option<String>,
    pub wall_seconds: f64,
    pub epochs_per_second: f64,
}

/// The learning rate of epoch `e` (0-based): StepLR multiplies it by gamma every `step`
/// epochs, repeatedly as PyTorch does (not `gamma^k` in one go, which rounds differently).
pub fn lr_at(opts: &TrainOptions, epoch: usize) -> f64 {
    let mut lr = opts.lr;
    for _ in 0..epoch / opts.lr_step {
        lr *= opts.lr_gamma;
    }
    lr
}

pub fn run(opts: &TrainOptions) -> Result<TrainSummary> {
    opts.check()?;
    let samples = Samples::open(&opts.dna, &opts.protein, &opts.labels)?;
    samples.check_both_classes("labelled set", &(0..samples.len()).collect::<Vec<_>>())?;
    let val_ids = match &opts.validation_ids {
        Some(p) => Some(data::read_id_list(p)?),
        None => None,
    };
    let (train, val) = data::split(
        &samples,
        opts.validation_fraction,
        opts.seed,
        val_ids.as_deref(),
        opts.validation_ids.as_deref(),
    )?;
    samples.check_both_classes("validation set", &val)?;
    check_memory(opts, samples.dim(), train.len(), val.len())?;
    // Training runs in f32 on one device (one CPU worker), resolved once like a run's.
    let placement = device::Placement::resolve(&device::PlacementRequest {
        device: opts.device.clone(),
        precision: Precision::F32,
        threads: Some(1),
        gpu_lease: None,
        gpu_lease_timeout: None,
        kernel_cache: None,
    })?;
    let name = placement.devices.worker_names().join(",");
    device::dispatch(
        &placement.devices,
        placement.precision,
        Task {
            opts,
            samples: &samples,
            train: &train,
            val: &val,
            device_name: name,
        },
    )
}

/// Copies of the parameters alive at once at the peak, the checkpoint's save: the weights,
/// the momentum buffers, the best weights (on the host), and the checkpoint's host copies of
/// these three and their serialised bytes; one more for the transient tensors of a step (the
/// gradients, SGD's new weights before the old are dropped) and of the conversions.
const PARAM_COPIES: u128 = 10;
/// Hidden-wide and input-wide f32 rows alive per ORF of a training step (the forward's
/// pre-activation, centred, normalised and activated values, ReLU's and dropout's masks, the
/// backward's gradients; the batch's features on the host and on the device) and of a
/// validation block (forward only).
const TRAIN_ROW: (u128, u128) = (12, 3);
const EVAL_ROW: (u128, u128) = (4, 2);

/// Bytes training needs with `hidden` units on `dim`-wide features, `rows` ORFs per step and
/// `eval_rows` per validation block: an estimate on the safe side, in u128 so that absurd
/// widths cannot overflow it.
pub fn training_bytes(dim: usize, hidden: usize, rows: usize, eval_rows: usize) -> u128 {
    let (d, h) = (dim as u128, hidden as u128);
    // w1, b1, BatchNorm's weight, bias and running statistics, w2, b2.
    let params = h * d + 4 * h + 2 * h + 2 * h + 2;
    let per_row = |(hw, dw): (u128, u128)| hw * h + dw * d;
    let activations =
        (rows as u128 * per_row(TRAIN_ROW)).max(eval_rows as u128 * per_row(EVAL_ROW));
    4 * (PARAM_COPIES * params + activations)
}

fn gib(bytes: u128) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// Refuse a `--hidden` or `--batch-size` whose training would not fit in the memory this
/// process may use ([`crate::runtime::resources::memory_limit_bytes`]), before anything is allocated:
/// past it the allocation aborts the process, or the kernel kills it. A quarter of the limit
/// is left to the rest (the code, threads, the mapped embeddings, the allocator's slack).
/// With `--init` the width is the file's.
fn check_memory(opts: &TrainOptions, dim: usize, train_rows: usize, val_rows: usize) -> Result<()> {
    let Some(limit) = crate::runtime::resources::memory_limit_bytes() else {
        return Ok(());
    };
    let usable = u128::from(limit) / 4 * 3;
    let (hidden, what) = match &opts.init {
        // Unreadable or malformed --init files are reported when they are loaded.
        Some(path) => match init_hidden(path) {
            Some(h) => (h, format!("--init {} (hidden width {h})", path.display())),
            None => return Ok(()),
        },
        None => (opts.hidden, format!("--hidden {}", opts.hidden)),
    };
    // A step takes at most every training row, however large --batch-size is.
    let rows = opts.batch_size.min(train_rows).max(2);
    let eval_rows = val_rows.min(EVAL_ROWS);
    let need = |hidden: usize, rows: usize| training_bytes(dim, hidden, rows, eval_rows);
    let limit_text = format!(
        "this process may use {:.1} GiB (the least of the physical memory, its cgroup's limit \
         and ulimit -v), a quarter of it kept for the rest of the process",
        gib(u128::from(limit))
    );
    if need(hidden, 2) > usable {
        // The largest width that fits with the smallest batch (need grows with the width).
        let (mut lo, mut hi) = (0usize, hidden);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if need(mid, 2) <= usable {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        return Err(UsageError(format!(
            "{what}: training a model this wide on {dim}-d embeddings needs about {:.1} GiB \
             (weights, gradients, momentum, best weights and checkpoint copies, a batch's \
             activations) but {limit_text}; {}",
            gib(need(hidden, 2)),
            if lo == 0 {
                "free memory or raise the limit".to_string()
            } else if opts.init.is_some() {
                format!("start from a model of at most {lo} hidden units")
            } else {
                format!("give --hidden {lo} or less (the original's is 512)")
            }
        ))
        .into());
    }
    if need(hidden, rows) > usable {
        let (mut lo, mut hi) = (2usize, rows);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if need(hidden, mid) <= usable {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        return Err(UsageError(format!(
            "--batch-size {}: steps of {rows} ORFs{} with a hidden width of {hidden} need about \
             {:.1} GiB but {limit_text}; give --batch-size {lo} or less",
            opts.batch_size,
            if rows < opts.batch_size {
                " (every training row)"
            } else {
                ""
            },
            gib(need(hidden, rows)),
        ))
        .into());
    }
    Ok(())
}

/// The hidden width of an `--init` file, from its header; None when it cannot be read (the
/// load says why later).
fn init_hidden(path: &std::path::Path) -> Option<usize> {
    let weights = crate::weights::open(path).ok()?;
    let shape = weights.source().shape(super::model::PARAMS[0])?;
    (shape.len() == 2).then(|| shape[0])
}

struct Task<'a> {
    opts: &'a TrainOptions,
    samples: &'a Samples,
    train: &'a [usize],
    val: &'a [usize],
    device_name: String,
}

impl BackendTask for Task<'_> {
    type Output = TrainSummary;
    fn run<B: ModelOps>(self, devices: Vec<B::Device>, _cpu: bool) -> Result<TrainSummary> {
        train_on::<B>(self, &devices[0])
    }
}

/// The starting state: the checkpoint of an interrupted run, `--init` or a fresh model.
fn start<B: Backend>(
    opts: &TrainOptions,
    dim: usize,
    fingerprint: &str,
    device: &B::Device,
) -> Result<(State<B>, Option<usize>)> {
    let ckpt = opts.outdir.join(CHECKPOINT_FILE);
    if opts.force {
        if ckpt.exists() {
            tracing::info!(
                "train: --force: starting over; {} is replaced after the first epoch",
                ckpt.display()
            );
        }
    } else if let Some(state) = checkpoint::load::<B>(&ckpt, fingerprint, device)? {
        let done = state.progress.epochs_done;
        // Fewer epochs than the checkpoint holds: starting over would replace the trained
        // epochs after the first new one, so the user chooses, nothing is touched.
        if done > opts.epochs {
            return Err(UsageError(format!(
                "--epochs {}: {} already holds {done} epochs of this run; give --epochs {done} \
                 or more to continue it, or --force to train from scratch (which replaces it)",
                opts.epochs,
                ckpt.display()
            ))
            .into());
        }
        if state.model.input_dim() == dim {
            tracing::info!("train: resuming after epoch {done} from {}", ckpt.display());
            return Ok((state, Some(done)));
        }
        tracing::warn!(
            "{} holds a model of {}-d input, not {dim}-d; starting over",
            ckpt.display(),
            state.model.input_dim()
        );
    }
    let model = match &opts.init {
        Some(path) => {
            let weights = crate::weights::open(path)
                .with_context(|| format!("reading --init {}", path.display()))?;
            let model = Mlp::<B>::from_weights(&weights, device)
                .with_context(|| format!("reading --init {}", path.display()))?;
            if model.input_dim() != dim {
                bail!(
                    "--init {} takes {}-d features but the embeddings are {dim}-d; were they made \
                     with other DNABERT-S / ESM-2 models?",
                    path.display(),
                    model.input_dim()
                );
            }
            model
        }
        None => Mlp::init(
            dim,
            opts.hidden,
            &mut rng::rng(opts.seed, Stream::Init),
            device,
        ),
    };
    Ok((
        State {
            model,
            momentum: None,
            best: Vec::new(),
            best_val_probs: Vec::new(),
            progress: Progress::default(),
        },
        None,
    ))
}

fn features<B: Backend>(
    samples: &Samples,
    rows: &[usize],
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let mut x = Vec::new();
    samples.gather(rows, &mut x)?;
    Ok(Tensor::from_data(
        TensorData::new(x, [rows.len(), samples.dim()]),
        device,
    ))
}

fn onehot<B: Backend>(samples: &Samples, rows: &[usize], device: &B::Device) -> Tensor<B, 2> {
    let mut v = vec![0f32; rows.len() * 2];
    for (k, &i) in rows.iter().enumerate() {
        v[2 * k + samples.labels[i] as usize] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [rows.len(), 2]), device)
}

/// SGD with momentum, in place: `buf = momentum·buf + grad` (first step `buf = grad`),
/// `p -= lr·buf`.
fn sgd<B: Backend>(
    model: &mut Mlp<B>,
    buf: &mut Option<ParamSet<B>>,
    g: ParamSet<B>,
    lr: f64,
    momentum: f64,
) {
    let b = match buf.take() {
        None => g,
        Some(b) => ParamSet {
            w1: b.w1.mul_scalar(momentum) + g.w1,
            b1: b.b1.mul_scalar(momentum) + g.b1,
            gamma: b.gamma.mul_scalar(momentum) + g.gamma,
            beta: b.beta.mul_scalar(momentum) + g.beta,
            w2: b.w2.mul_scalar(momentum) + g.w2,
            b2: b.b2.mul_scalar(momentum) + g.b2,
        },
    };
    let p = &mut model.params;
    p.w1 = p.w1.clone() - b.w1.clone().mul_scalar(lr);
    p.b1 = p.b1.clone() - b.b1.clone().mul_scalar(lr);
    p.gamma = p.gamma.clone() - b.gamma.clone().mul_scalar(lr);
    p.beta = p.beta.clone() - b.beta.clone().mul_scalar(lr);
    p.w2 = p.w2.clone() - b.w2.clone().mul_scalar(lr);
    p.b2 = p.b2.clone() - b.b2.clone().mul_scalar(lr);
    *buf = Some(b);
}

/// Validation pass: (mean cross-entropy, softmax scores `[n, 2]`, calls).
pub fn evaluate_rows<B: Backend>(
    logits_of: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
    samples: &Samples,
    rows: &[usize],
    device: &B::Device,
) -> Result<(f64, Vec<f32>, Vec<u8>)> {
    let mut loss = 0.0f64;
    let mut probs = Vec::with_capacity(rows.len() * 2);
    let mut calls = Vec::with_capacity(rows.len());
    for block in rows.chunks(EVAL_ROWS) {
        let logits = tensor_to_f32(logits_of(features::<B>(samples, block, device)?))?;
        for (k, &i) in block.iter().enumerate() {
            let (l0, l1) = (logits[2 * k], logits[2 * k + 1]);
            // Softmax in f32 as torch does; the loss from the log-sum-exp in f64.
            let m = l0.max(l1);
            let (e0, e1) = ((l0 - m).exp(), (l1 - m).exp());
            probs.push(e0 / (e0 + e1));
            probs.push(e1 / (e0 + e1));
            let lse = m as f64 + (((l0 - m) as f64).exp() + ((l1 - m) as f64).exp()).ln();
            let target = if samples.labels[i] == 1 { l1 } else { l0 };
            loss += lse - target as f64;
            // argmax, ties to `others` as torch's argmax takes the first.
            calls.push(u8::from(l1 > l0));
        }
    }
    let loss = loss / rows.len() as f64;
    if !loss.is_finite() {
        bail!(
            "the validation loss is {loss}: training diverged (lower --lr, or check the embeddings)"
        );
    }
    Ok((loss, probs, calls))
}

fn train_on<B: Backend>(task: Task<'_>, device: &B::Device) -> Result<TrainSummary> {
    let Task {
        opts,
        samples,
        train,
        val,
        device_name,
    } = task;
    let started = Instant::now();
    let fingerprint = checkpoint::fingerprint(opts);
    let ckpt_path = opts.outdir.join(CHECKPOINT_FILE);
    let (mut state, resumed) = start::<B>(opts, samples.dim(), &fingerprint, device)?;
    let signals = StopOnSignal::install()?;
    let skipped = if train.len() % opts.batch_size == 1 {
        tracing::warn!(
            "{} training rows leave a last batch of 1 row, which BatchNorm cannot normalise: \
             it is left out of each epoch (PyTorch would stop with an error)",
            train.len()
        );
        1
    } else {
        0
    };
    let val_truth: Vec<u8> = val.iter().map(|&i| samples.labels[i]).collect();
    let mut epochs_run = 0usize;
    let mut epoch_times = 0.0f64;
    while state.progress.epochs_done < opts.epochs && !state.progress.stopped_early {
        let epoch = state.progress.epochs_done;
        let t0 = Instant::now();
        let lr = lr_at(opts, epoch);
        let ctx = EpochCtx {
            opts,
            samples,
            signals: &signals,
            epoch,
            lr,
        };
        let train_loss = train_epoch(&ctx, &mut state, train, device)?;
        let model = &state.model;
        let (val_loss, probs, calls) =
            evaluate_rows::<B>(|x| model.eval_logits(x), samples, val, device)?;
        let virus: Vec<f32> = probs.iter().skip(1).step_by(2).copied().collect();
        let m = metrics::metrics(&val_truth, &calls, &virus);
        let log = EpochLog {
            epoch: epoch + 1,
            train_loss,
            val_loss,
            lr,
            accuracy: m.accuracy,
            precision: m.precision,
            recall: m.recall,
            f1: m.f1,
            auroc: m.auroc,
        };
        record_epoch(opts, &mut state, &log, probs)?;
        // Saved before the epoch is reported: an epoch said done is an epoch a re-run skips.
        checkpoint::save(&ckpt_path, &fingerprint, &state)?;
        epochs_run += 1;
        epoch_times += t0.elapsed().as_secs_f64();
        tracing::info!(
            "train: epoch {}/{}: train loss {:.6}, val loss {:.6}, accuracy {:.4}, F1 {:.4}, AUROC {:.4}, lr {:.3e} ({:.1} s){}",
            epoch + 1,
            opts.epochs,
            log.train_loss,
            log.val_loss,
            log.accuracy,
            log.f1,
            log.auroc,
            lr,
            t0.elapsed().as_secs_f64(),
            if state.progress.stopped_early { "; early stop" } else { "" }
        );
    }
    if let Some(signal) = signals.requested() {
        return Err(stopped(signal, opts, state.progress.epochs_done));
    }
    let (_, best_epoch) = state
        .progress
        .best
        .context("internal error: no epoch was run")?;
    let summary = TrainSummary {
        samples: samples.len(),
        train_rows: train.len(),
        validation_rows: val.len(),
        feature_dim: samples.dim(),
        hidden: state.model.hidden_dim(),
        dna_model: samples.dna_model.clone(),
        protein_model: samples.protein_model.clone(),
        join: samples.counts.clone(),
        epochs_run: state.progress.epochs_done,
        resumed_after_epoch: resumed,
        stopped_early: state.progress.stopped_early,
        best_epoch,
        best: state.progress.log[best_epoch - 1].clone(),
        rows_skipped_per_epoch: skipped,
        device: device_name,
        seed: opts.seed,
        shuffle: opts.shuffle,
        dropout: opts.dropout,
        batch_size: opts.batch_size,
        lr: opts.lr,
        momentum: opts.momentum,
        lr_step: opts.lr_step,
        lr_gamma: opts.lr_gamma,
        patience: opts.patience,
        init: opts.init.as_ref().map(|p| p.display().to_string()),
        wall_seconds: started.elapsed().as_secs_f64(),
        epochs_per_second: if epoch_times > 0.0 {
            epochs_run as f64 / epoch_times
        } else {
            0.0
        },
    };
    write_outputs(opts, samples, val, &state, &summary)?;
    // The outputs are complete: the checkpoint has served its purpose.
    let _ = std::fs::remove_file(&ckpt_path);
    Ok(summary)
}

/// What one epoch's steps share.
struct EpochCtx<'a> {
    opts: &'a TrainOptions,
    samples: &'a Samples,
    signals: &'a StopOnSignal,
    epoch: usize,
    lr: f64,
}

/// One epoch of SGD over the training rows (shuffled unless asked not to; a last batch of one
/// row left out); returns the mean training loss. Stops at a signal, between batches.
fn train_epoch<B: Backend>(
    ctx: &EpochCtx<'_>,
    state: &mut State<B>,
    train: &[usize],
    device: &B::Device,
) -> Result<f64> {
    let (opts, epoch) = (ctx.opts, ctx.epoch);
    let mut order = train.to_vec();
    if opts.shuffle {
        rng::shuffle(&mut rng::rng(opts.seed, Stream::Shuffle(epoch)), &mut order);
    }
    let mut dropout_rng = rng::rng(opts.seed, Stream::Dropout(epoch));
    let hidden = state.model.hidden_dim();
    let (mut total, mut batches) = (0.0f64, 0usize);
    for batch in order.chunks(opts.batch_size) {
        if batch.len() < 2 {
            continue;
        }
        if let Some(signal) = ctx.signals.requested() {
            return Err(stopped(signal, opts, epoch));
        }
        let x = features::<B>(ctx.samples, batch, device)?;
        let y = onehot::<B>(ctx.samples, batch, device);
        let keep = (opts.dropout > 0.0).then(|| {
            dropout_mask::<B>(
                &mut dropout_rng,
                opts.dropout,
                [batch.len(), hidden],
                device,
            )
        });
        let step = state.model.train_batch(x, y, keep)?;
        if !step.loss.is_finite() {
            bail!(
                "the training loss became {} in epoch {}: training diverged (lower --lr, or check the embeddings)",
                step.loss,
                epoch + 1
            );
        }
        total += step.loss;
        batches += 1;
        sgd(
            &mut state.model,
            &mut state.momentum,
            step.grads,
            ctx.lr,
            opts.momentum,
        );
    }
    Ok(total / batches as f64)
}

/// Inverted dropout's mask: each unit kept with probability 1 − p and scaled by 1 / (1 − p).
fn dropout_mask<B: Backend>(
    rng: &mut rand_chacha::ChaCha8Rng,
    p: f64,
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2> {
    let scale = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..shape[0] * shape[1])
        .map(|_| if rng::unit_f64(rng) >= p { scale } else { 0.0 })
        .collect();
    Tensor::<B, 2>::from_data(TensorData::new(mask, shape), device)
}

/// Early stopping as the original: a lower validation loss resets the counter (and these
/// weights become the best, copied, not referenced); `patience` epochs without one stop
/// training. The epoch is logged and counted done.
fn record_epoch<B: Backend>(
    opts: &TrainOptions,
    state: &mut State<B>,
    log: &EpochLog,
    val_probs: Vec<f32>,
) -> Result<()> {
    let p = &mut state.progress;
    if p.best.is_none_or(|(best, _)| log.val_loss < best) {
        p.best = Some((log.val_loss, log.epoch));
        p.bad_epochs = 0;
        state.best = state.model.to_host("")?;
        state.best_val_probs = val_probs;
    } else {
        p.bad_epochs += 1;
        if p.bad_epochs >= opts.patience {
            p.stopped_early = true;
        }
    }
    let p = &mut state.progress;
    p.log.push(log.clone());
    p.epochs_done = log.epoch;
    Ok(())
}

fn stopped(signal: i32, opts: &TrainOptions, epochs_done: usize) -> anyhow::Error {
    Interrupted {
        signal,
        detail: format!(
            "training stopped; {epochs_done} finished epochs are saved in {}: run the same \
             command again to continue",
            opts.outdir.join(CHECKPOINT_FILE).display()
        ),
    }
    .into()
}

/// A classifier file `predict` reads: PyTorch names, sorted, so resumed and uninterrupted
/// runs write the same bytes.
fn classifier_bytes(tensors_: &[HostTensor], what: &str) -> Result<Vec<u8>> {
    let mut sorted = tensors_.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let meta = BTreeMap::from([
        ("format".to_string(), "virnucpro-classifier/1".to_string()),
        ("weights".to_string(), what.to_string()),
    ]);
    tensors::to_bytes(&sorted, &meta)
}

fn write_outputs<B: Backend>(
    opts: &TrainOptions,
    samples: &Samples,
    val: &[usize],
    state: &State<B>,
    summary: &TrainSummary,
) -> Result<()> {
    let figs = crate::plot::figure_names(TRAIN_FIGURE);
    let owned: Vec<&str> = [CLASSIFIER_FILE, LAST_FILE, LOG_FILE, VALIDATION_FILE]
        .into_iter()
        .chain(figs.iter().map(String::as_str))
        .collect();
    let set = OutputSet::begin(&opts.outdir, TRAIN_REPORT, &owned)?;
    set.write(
        CLASSIFIER_FILE,
        &classifier_bytes(&state.best, "lowest validation loss")?,
    )?;
    set.write(
        LAST_FILE,
        &classifier_bytes(&state.model.to_host("")?, "last epoch")?,
    )?;

    let mut log = set.create(LOG_FILE)?;
    let path = log.path().to_path_buf();
    let mut text =
        String::from("epoch\ttrain_loss\tval_loss\tlr\taccuracy\tprecision\trecall\tf1\tauroc\n");
    for e in &state.progress.log {
        // `{}` prints the shortest decimal that reads back as the same f64.
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            e.epoch,
            e.train_loss,
            e.val_loss,
            e.lr,
            e.accuracy,
            e.precision,
            e.recall,
            e.f1,
            e.auroc
        ));
    }
    log.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    log.finish()?;

    let mut text = String::from("id\tlabel\tprediction\tothers_score\tvirus_score\n");
    let probs = &state.best_val_probs;
    for (k, &i) in val.iter().enumerate() {
        let (p0, p1) = (probs[2 * k], probs[2 * k + 1]);
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            samples.ids[i],
            label_name(samples.labels[i]),
            label_name(u8::from(p1 > p0)),
            p0,
            p1
        ));
    }
    set.write(VALIDATION_FILE, text.as_bytes())?;

    let truth: Vec<u8> = val.iter().map(|&i| samples.labels[i]).collect();
    let virus: Vec<f32> = probs.iter().skip(1).step_by(2).copied().collect();
    figures::write_training(
        &set,
        TRAIN_FIGURE,
        &state.progress.log,
        &metrics::roc_curve(&truth, &virus),
        summary.best_epoch,
    )?;
    set.commit(&serde_json::to_vec_pretty(summary)?)
}

impl Subcommand for TrainOptions {
    /// The flags' values first (usage errors, exit 64), then the files.
    fn check(&self) -> Result<()> {
        TrainOptions::check(self)?;
        for (f, what) in self.inputs() {
            preflight::input_file(f, what)?;
        }
        preflight::output_dir(&self.outdir, "--outdir")
    }

    fn claim(&self) -> Result<Option<OutputLock>> {
        OutputLock::outdir(&self.outdir).map(Some)
    }

    fn execute(&self) -> Result<Finished> {
        log_summary(&run(self)?, &self.outdir);
        Ok(Finished::COMPLETE)
    }
}

pub fn log_summary(s: &TrainSummary, outdir: &std::path::Path) {
    tracing::info!(
        "train: {} epochs{}, best epoch {} (val loss {:.6}, accuracy {:.4}, AUROC {:.4}); {} training and {} validation ORFs; {:.2} epochs/s -> {}",
        s.epochs_run,
        if s.stopped_early { " (early stop)" } else { "" },
        s.best_epoch,
        s.best.val_loss,
        s.best.accuracy,
        s.best.auroc,
        s.train_rows,
        s.validation_rows,
        s.epochs_per_second,
        outdir.display()
    );
}
