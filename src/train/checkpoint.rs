//! Resumable training: after every epoch, the whole state (weights, BatchNorm running
//! statistics, momentum buffers, the best weights so far and their validation scores, the
//! epoch log, the early-stopping counter) goes into one safetensors file in the output
//! directory, written atomically ([`write_atomic`]): a `kill -9` leaves the previous epoch's
//! file or this one, never half of one. The random streams need no saving: each epoch's are
//! derived from the seed and the epoch ([`super::rng`]). A resumed run therefore repeats the
//! uninterrupted one to float rounding (not bit for bit: the CPU backend's parallel sums are
//! split adaptively by rayon, so two uninterrupted runs differ in the last bits too).
//!
//! The file carries a fingerprint of the inputs (paths, sizes, modification times) and every
//! flag except `--epochs`; a re-run whose fingerprint differs starts over (with a warning),
//! one with as many `--epochs` or more continues where the last one ended, one with fewer is
//! refused (starting over would replace the epochs already trained; `--force` does that on
//! purpose). It is removed once the outputs are committed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{HostTensor, Mlp, ParamSet};
use super::tensors;
use super::TrainOptions;
use crate::io::output::write_atomic;

pub const CHECKPOINT_FILE: &str = "train.checkpoint.safetensors";
const FORMAT: &str = "virnucpro-train-checkpoint/1";

/// One epoch's line of `train_log.tsv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub lr: f64,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub auroc: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub epochs_done: usize,
    /// Lowest validation loss so far and its epoch (1-based); None before the first epoch.
    pub best: Option<(f64, usize)>,
    /// Epochs since the best one.
    pub bad_epochs: usize,
    pub stopped_early: bool,
    pub log: Vec<EpochLog>,
}

/// Everything training needs to continue.
pub struct State<B: Backend> {
    pub model: Mlp<B>,
    /// SGD momentum buffers; None before the first step.
    pub momentum: Option<ParamSet<B>>,
    /// The weights at the lowest validation loss (PyTorch names and layout).
    pub best: Vec<HostTensor>,
    /// Softmax scores `[validation rows, 2]` of the best weights.
    pub best_val_probs: Vec<f32>,
    pub progress: Progress,
}

/// Inputs by identity and every flag that changes the result, except `--epochs`.
pub fn fingerprint(opts: &TrainOptions) -> String {
    let value = serde_json::json!({
        "format": FORMAT,
        "inputs": opts.inputs().iter().map(|(p, what)| serde_json::json!([what, crate::io::fingerprint::file(p)])).collect::<Vec<_>>(),
        "batch_size": opts.batch_size,
        "lr": opts.lr,
        "momentum": opts.momentum,
        "lr_step": opts.lr_step,
        "lr_gamma": opts.lr_gamma,
        "dropout": opts.dropout,
        "patience": opts.patience,
        "hidden": opts.hidden,
        "validation_fraction": opts.validation_fraction,
        "seed": opts.seed,
        "shuffle": opts.shuffle,
        "device": format!("{:?}", opts.device),
    });
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

const CURRENT: &str = "current.";
const MOMENTUM: &str = "momentum.";
const BEST: &str = "best.";
const BEST_PROBS: &str = "best_val_probs";

pub fn save<B: Backend>(path: &Path, fingerprint: &str, state: &State<B>) -> Result<()> {
    let mut all = state.model.to_host(CURRENT)?;
    if let Some(m) = &state.momentum {
        all.extend(m.to_host(MOMENTUM)?);
    }
    all.extend(state.best.iter().map(|t| HostTensor {
        name: format!("{BEST}{}", t.name),
        ..t.clone()
    }));
    all.push(HostTensor {
        name: BEST_PROBS.into(),
        shape: vec![state.best_val_probs.len()],
        values: state.best_val_probs.clone(),
    });
    let meta = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("fingerprint".to_string(), fingerprint.to_string()),
        (
            "progress".to_string(),
            serde_json::to_string(&state.progress)?,
        ),
    ]);
    write_atomic(path, &tensors::to_bytes(&all, &meta)?)
        .with_context(|| format!("saving the training checkpoint {}", path.display()))
}

/// The state an earlier run saved for these inputs and flags, or None (no file, another
/// run's file, or an unreadable one: each says why in the log and training starts over).
pub fn load<B: Backend>(
    path: &Path,
    fingerprint: &str,
    device: &B::Device,
) -> Result<Option<State<B>>> {
    if !path.exists() {
        return Ok(None);
    }
    let (tensors, meta) = match tensors::read(path) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("ignoring the unreadable training checkpoint: {e:#}; starting over");
            return Ok(None);
        }
    };
    if meta.get("format").map(String::as_str) != Some(FORMAT)
        || meta.get("fingerprint").map(String::as_str) != Some(fingerprint)
    {
        tracing::warn!(
            "{} is from a run with other inputs or flags; starting over",
            path.display()
        );
        return Ok(None);
    }
    let restored = (|| -> Result<State<B>> {
        let progress: Progress = serde_json::from_str(
            meta.get("progress")
                .context("no progress in the checkpoint")?,
        )?;
        let model = Mlp::from_host(&tensors, CURRENT, device)?;
        let momentum = if tensors.keys().any(|k| k.starts_with(MOMENTUM)) {
            Some(ParamSet::from_host(&tensors, MOMENTUM, device)?)
        } else {
            None
        };
        let best = tensors
            .values()
            .filter_map(|t| {
                t.name.strip_prefix(BEST).map(|n| HostTensor {
                    name: n.to_string(),
                    ..t.clone()
                })
            })
            .collect();
        let best_val_probs = tensors
            .get(BEST_PROBS)
            .map(|t| t.values.clone())
            .unwrap_or_default();
        Ok(State {
            model,
            momentum,
            best,
            best_val_probs,
            progress,
        })
    })();
    match restored {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            tracing::warn!(
                "ignoring the damaged training checkpoint {}: {e:#}; starting over",
                path.display()
            );
            Ok(None)
        }
    }
}
