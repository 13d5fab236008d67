//! VirNucPro's classifier: an MLP over the concatenated DNABERT-S and ESM-2 embeddings
//! (docs/method.md, "Classifier"), in eval mode:
//!
//! `Linear(in → hidden)` → `BatchNorm1d(hidden)` with running statistics → ReLU →
//! (dropout, off in eval) → `Linear(hidden → 2)` → softmax. Class 0 is `others`, class 1 `virus`.
//!
//! Sizes are read from the weights, so the real classifiers (3328 → 512 → 2) and the tiny test
//! ones load alike. Weights come from either
//! - the original `300_model.pth` / `500_model.pth`: a whole pickled `__main__.MLPClassifier`
//!   (`torch.save(model)`), read without Python by [`crate::weights::torch_file`]; or
//! - a safetensors file (or anything else [`weights::open`] reads) with the same tensor names:
//!
//! | tensor | shape |
//! | --- | --- |
//! | `hidden_layer.weight` | `[hidden, in]` (PyTorch `[out, in]` layout) |
//! | `hidden_layer.bias` | `[hidden]` |
//! | `bn1.weight`, `bn1.bias`, `bn1.running_mean`, `bn1.running_var` | `[hidden]` |
//! | `output_layer.weight` | `[2, hidden]` |
//! | `output_layer.bias` | `[2]` |
//!
//! (`bn1.num_batches_tracked` may be present and is unused.)
//!
//! Every tensor is checked as it is read ([`check_tensor`]): a NaN or infinite weight, or a
//! negative running variance, is refused naming the tensor and the file. Loaded, such a file
//! gives constant or NaN scores for every input, which nothing downstream can tell apart from
//! a real, if odd, classifier.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::{Module, Param};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::Tensor;

use crate::weights::{self, upload, Weights};

/// `BatchNorm1d`'s default epsilon, which VirNucPro's classifier uses.
pub const BATCH_NORM_EPS: f64 = 1e-5;

/// Number of classes: `others`, `virus`.
pub const NUM_CLASSES: usize = 2;

/// The embedding widths of the real models, for error messages.
const DNABERT_S_DIM: usize = 768;
const ESM2_3B_DIM: usize = 2560;

/// Refuse values no classifier can hold: any non-finite value, and a negative
/// `bn1.running_var` (a variance; `sqrt(var + eps)` of it is NaN). `source` names the file.
/// Used wherever classifier weights are read (`predict`, `evaluate`, `train --init`).
pub fn check_tensor(name: &str, values: &[f32], source: &str) -> Result<()> {
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        bail!(
            "tensor {name} in {source} holds {v} ({bad} of {} values are not finite numbers); \
             the classifier is damaged or was trained to divergence: use another file",
            values.len()
        );
    }
    if name.ends_with("running_var") {
        let negative = values.iter().filter(|&&v| v < 0.0).count();
        if let Some(v) = values.iter().find(|&&v| v < 0.0) {
            bail!(
                "tensor {name} in {source} holds {v} ({negative} of {} values are negative), \
                 but it is BatchNorm's running variance, never negative; the classifier is \
                 damaged: use another file",
                values.len()
            );
        }
    }
    Ok(())
}

#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    /// `[in, hidden]` (transposed from PyTorch at load).
    hidden_weight: Param<Tensor<B, 2>>,
    hidden_bias: Param<Tensor<B, 1>>,
    bn_weight: Param<Tensor<B, 1>>,
    bn_bias: Param<Tensor<B, 1>>,
    bn_mean: Param<Tensor<B, 1>>,
    bn_var: Param<Tensor<B, 1>>,
    /// `[hidden, 2]`.
    output_weight: Param<Tensor<B, 2>>,
    output_bias: Param<Tensor<B, 1>>,
    /// The weights file, for error messages.
    #[module(skip)]
    source: String,
}

impl<B: Backend> Classifier<B> {
    /// Load a classifier from a whole pickled `MLPClassifier` (`.pth`) or a safetensors file
    /// with the tensor names in the module docs.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        // Every error below names the file already; callers add what they were doing.
        let weights = weights::open(path)?;
        let model = Self::from_weights(&weights, device)?;
        // A checkpoint with more layers is another architecture, not this one truncated.
        weights.check_all_used(
            |n| n.ends_with(".num_batches_tracked"),
            "is it VirNucPro's MLPClassifier (Linear → BatchNorm1d → ReLU → Linear)?",
        )?;
        Ok(model)
    }

    /// Build from already opened weights; sizes come from `hidden_layer.weight`.
    pub fn from_weights(weights: &Weights, device: &B::Device) -> Result<Self> {
        let source = weights.source();
        let hidden_shape = source.shape("hidden_layer.weight").with_context(|| {
            format!(
                "{} has no hidden_layer.weight: not a VirNucPro classifier",
                source.describe()
            )
        })?;
        let [hidden, input] = hidden_shape[..] else {
            bail!(
                "hidden_layer.weight in {} has shape {hidden_shape:?}, expected [hidden, input]",
                source.describe()
            );
        };
        let output_shape = source.shape("output_layer.weight").unwrap_or_default();
        if output_shape.first().is_some_and(|&n| n != NUM_CLASSES) {
            bail!(
                "output_layer.weight in {} has shape {output_shape:?}: VirNucPro classifiers have \
                 {NUM_CLASSES} classes (others, virus)",
                source.describe()
            );
        }
        let describe = source.describe();
        // Read on the host and checked before upload (the same values, the same layout as
        // `Weights::tensor` / `Weights::linear_weight` give).
        let vector = |name: &str, len: usize| -> Result<Param<Tensor<B, 1>>> {
            let values = weights.read(name, &[len])?;
            check_tensor(name, &values, &describe)?;
            Ok(Param::from_tensor(upload(values, [len], device)))
        };
        let matrix = |name: &str, out: usize, inp: usize| -> Result<Param<Tensor<B, 2>>> {
            let values = weights.linear_weight_host(name, out, inp)?;
            check_tensor(name, &values, &describe)?;
            Ok(Param::from_tensor(upload(values, [inp, out], device)))
        };
        Ok(Self {
            hidden_weight: matrix("hidden_layer.weight", hidden, input)?,
            hidden_bias: vector("hidden_layer.bias", hidden)?,
            bn_weight: vector("bn1.weight", hidden)?,
            bn_bias: vector("bn1.bias", hidden)?,
            bn_mean: vector("bn1.running_mean", hidden)?,
            bn_var: vector("bn1.running_var", hidden)?,
            output_weight: matrix("output_layer.weight", NUM_CLASSES, hidden)?,
            output_bias: vector("output_layer.bias", NUM_CLASSES)?,
            source: describe,
        })
    }

    /// Feature width the classifier was trained on (3328 for the released models).
    pub fn input_dim(&self) -> usize {
        self.hidden_weight.val().dims()[0]
    }

    /// Hidden width (512 for the released models).
    pub fn hidden_dim(&self) -> usize {
        self.hidden_weight.val().dims()[1]
    }

    /// A clear error when the embeddings do not have the width this classifier expects
    /// (e.g. a different ESM-2 size than the one it was trained with).
    pub fn check_input_dim(&self, dim: usize) -> Result<()> {
        let expected = self.input_dim();
        if dim == expected {
            return Ok(());
        }
        let makeup = if expected == DNABERT_S_DIM + ESM2_3B_DIM {
            format!(" (DNABERT-S {DNABERT_S_DIM} + ESM-2 {ESM2_3B_DIM})")
        } else {
            String::new()
        };
        bail!(
            "classifier {} expects {expected}-d features{makeup} but the embeddings are {dim}-d; \
             were they made with other DNABERT-S / ESM-2 models than the classifier was trained on?",
            self.source
        )
    }

    /// Class scores before softmax, `[N, in]` → `[N, 2]`.
    pub fn forward_logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = linear(x, self.hidden_weight.val(), Some(self.hidden_bias.val()));
        // BatchNorm1d in eval mode, written as PyTorch computes it (not folded into the
        // Linear) so the scores match the original to float rounding.
        let inv_std = self.bn_var.val().add_scalar(BATCH_NORM_EPS).sqrt().recip();
        let h = (h - self.bn_mean.val().unsqueeze::<2>())
            * inv_std.unsqueeze::<2>()
            * self.bn_weight.val().unsqueeze::<2>()
            + self.bn_bias.val().unsqueeze::<2>();
        let h = relu(h);
        linear(h, self.output_weight.val(), Some(self.output_bias.val()))
    }

    /// Softmax probabilities `[N, 2]`: column 0 `others`, column 1 `virus`.
    pub fn forward_probs(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        softmax(self.forward_logits(x), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_and_negative_variances_are_refused_by_name() {
        assert!(check_tensor("bn1.running_var", &[0.0, 2.5], "f").is_ok());
        // A negative mean or weight is an ordinary value.
        assert!(check_tensor("bn1.running_mean", &[-3.0], "f").is_ok());
        let err = check_tensor("hidden_layer.weight", &[1.0, f32::NAN], "c.pth").unwrap_err();
        let err = err.to_string();
        assert!(
            err.starts_with("tensor hidden_layer.weight in c.pth holds NaN (1 of 2"),
            "{err}"
        );
        let err = check_tensor("bn1.bias", &[f32::NEG_INFINITY], "c").unwrap_err();
        assert!(err.to_string().contains("holds -inf"), "{err}");
        let err = check_tensor("bn1.running_var", &[1.0, -0.5], "c").unwrap_err();
        assert!(
            err.to_string().contains("bn1.running_var in c holds -0.5"),
            "{err}"
        );
    }
}
