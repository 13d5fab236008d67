//! The trainable VirNucPro MLP: `Linear(in → hidden)` → `BatchNorm1d` → ReLU → `Dropout` →
//! `Linear(hidden → 2)`, the module `predict` loads ([`crate::models::classifier`]), with its
//! forward and backward passes written out by hand on Burn tensors.
//!
//! Why by hand rather than Burn's autodiff: the network is two matrix products and a batch
//! norm, whose gradients are a dozen lines; written out, each operation is the one PyTorch
//! runs (biased batch variance in the normalisation, the unbiased one in the running
//! statistics, `(softmax - onehot) / n` for the mean cross-entropy), the momentum buffers and
//! running statistics are plain tensors that a checkpoint saves and restores, and the build
//! needs no extra Burn feature. Everything runs in f32 on whichever backend `--device` picks,
//! as PyTorch does; the parity test shows f32 reaches the golden run within 1e-4 on every
//! weight after 12 epochs, so f64 is not needed.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand_chacha::rand_core::RngCore;

use crate::models::classifier::{check_tensor, BATCH_NORM_EPS, NUM_CLASSES};
use crate::models::tensor_to_f32;
use crate::weights::Weights;

/// BatchNorm1d's default momentum for the running statistics.
pub const BN_MOMENTUM: f64 = 0.1;

/// The trained parameters, PyTorch names, in the order PyTorch's `model.parameters()` yields them.
pub const PARAMS: [&str; 6] = [
    "hidden_layer.weight",
    "hidden_layer.bias",
    "bn1.weight",
    "bn1.bias",
    "output_layer.weight",
    "output_layer.bias",
];
/// BatchNorm's running statistics: saved with the weights, not trained by SGD.
pub const BUFFERS: [&str; 2] = ["bn1.running_mean", "bn1.running_var"];

/// A named tensor on the host in PyTorch's layout (`Linear` weights `[out, in]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The six trained tensors (or their gradients, or momentum buffers), Burn layout
/// (`Linear` weights `[in, out]`).
#[derive(Debug, Clone)]
pub struct ParamSet<B: Backend> {
    pub w1: Tensor<B, 2>,
    pub b1: Tensor<B, 1>,
    pub gamma: Tensor<B, 1>,
    pub beta: Tensor<B, 1>,
    pub w2: Tensor<B, 2>,
    pub b2: Tensor<B, 1>,
}

impl<B: Backend> ParamSet<B> {
    /// Host copies in PyTorch layout under `prefix` + the PyTorch names.
    pub fn to_host(&self, prefix: &str) -> Result<Vec<HostTensor>> {
        let [input, hidden] = self.w1.dims();
        let mut out = Vec::with_capacity(6);
        let mut push = |name: &str, shape: Vec<usize>, values: Vec<f32>| {
            out.push(HostTensor {
                name: format!("{prefix}{name}"),
                shape,
                values,
            })
        };
        push(
            PARAMS[0],
            vec![hidden, input],
            tensor_to_f32(self.w1.clone().transpose())?,
        );
        push(PARAMS[1], vec![hidden], tensor_to_f32(self.b1.clone())?);
        push(PARAMS[2], vec![hidden], tensor_to_f32(self.gamma.clone())?);
        push(PARAMS[3], vec![hidden], tensor_to_f32(self.beta.clone())?);
        push(
            PARAMS[4],
            vec![NUM_CLASSES, hidden],
            tensor_to_f32(self.w2.clone().transpose())?,
        );
        push(
            PARAMS[5],
            vec![NUM_CLASSES],
            tensor_to_f32(self.b2.clone())?,
        );
        Ok(out)
    }

    /// From host tensors named `prefix` + the PyTorch names (shapes already checked).
    pub fn from_host(
        tensors: &BTreeMap<String, HostTensor>,
        prefix: &str,
        device: &B::Device,
    ) -> Result<Self> {
        let get = |name: &str| -> Result<&HostTensor> {
            tensors
                .get(&format!("{prefix}{name}"))
                .with_context(|| format!("tensor {prefix}{name} is missing"))
        };
        let matrix = |name: &str| -> Result<Tensor<B, 2>> {
            let t = get(name)?;
            let [rows, cols] = t.shape[..] else {
                bail!("tensor {prefix}{name} is not a matrix");
            };
            Ok(
                Tensor::<B, 2>::from_data(TensorData::new(t.values.clone(), [rows, cols]), device)
                    .transpose(),
            )
        };
        let vector = |name: &str| -> Result<Tensor<B, 1>> {
            let t = get(name)?;
            Ok(Tensor::from_data(
                TensorData::new(t.values.clone(), [t.values.len()]),
                device,
            ))
        };
        Ok(Self {
            w1: matrix(PARAMS[0])?,
            b1: vector(PARAMS[1])?,
            gamma: vector(PARAMS[2])?,
            beta: vector(PARAMS[3])?,
            w2: matrix(PARAMS[4])?,
            b2: vector(PARAMS[5])?,
        })
    }
}

/// The MLP: trained parameters plus BatchNorm's running statistics.
#[derive(Debug, Clone)]
pub struct Mlp<B: Backend> {
    pub params: ParamSet<B>,
    pub running_mean: Tensor<B, 1>,
    pub running_var: Tensor<B, 1>,
}

/// What one training batch gives back: its mean loss and the gradients.
pub struct Step<B: Backend> {
    pub loss: f64,
    pub grads: ParamSet<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn input_dim(&self) -> usize {
        self.params.w1.dims()[0]
    }

    pub fn hidden_dim(&self) -> usize {
        self.params.w1.dims()[1]
    }

    /// A fresh model as the original initialises it: Xavier-uniform weights, PyTorch's
    /// default `Linear` biases (uniform in ±1/√fan_in), BatchNorm weight 1, bias 0, running
    /// mean 0 and variance 1. Drawn from `rng` (ours, not torch's: see [`super::rng`]).
    pub fn init(input: usize, hidden: usize, rng: &mut impl RngCore, device: &B::Device) -> Self {
        let mut uniform = |n: usize, bound: f64| -> Vec<f32> {
            (0..n)
                .map(|_| ((super::rng::unit_f64(rng) * 2.0 - 1.0) * bound) as f32)
                .collect()
        };
        let xavier = |fan_in: usize, fan_out: usize| (6.0 / (fan_in + fan_out) as f64).sqrt();
        // PyTorch layout [out, in], transposed to Burn's below.
        let w1 = uniform(hidden * input, xavier(input, hidden));
        let b1 = uniform(hidden, 1.0 / (input as f64).sqrt());
        let w2 = uniform(NUM_CLASSES * hidden, xavier(hidden, NUM_CLASSES));
        let b2 = uniform(NUM_CLASSES, 1.0 / (hidden as f64).sqrt());
        let mat = |v: Vec<f32>, rows: usize, cols: usize| {
            Tensor::<B, 2>::from_data(TensorData::new(v, [rows, cols]), device).transpose()
        };
        let vec1 = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<B, 1>::from_data(TensorData::new(v, [n]), device)
        };
        Self {
            params: ParamSet {
                w1: mat(w1, hidden, input),
                b1: vec1(b1),
                gamma: Tensor::ones([hidden], device),
                beta: Tensor::zeros([hidden], device),
                w2: mat(w2, NUM_CLASSES, hidden),
                b2: vec1(b2),
            },
            running_mean: Tensor::zeros([hidden], device),
            running_var: Tensor::ones([hidden], device),
        }
    }

    /// Starting weights from a file (`--init`): a safetensors file with the classifier's
    /// tensor names, or the original's pickled `.pth`.
    pub fn from_weights(weights: &Weights, device: &B::Device) -> Result<Self> {
        let source = weights.source();
        let shape = source.shape(PARAMS[0]).with_context(|| {
            format!(
                "{} has no {}: not a VirNucPro classifier",
                source.describe(),
                PARAMS[0]
            )
        })?;
        let [hidden, input] = shape[..] else {
            bail!(
                "{} in {} has shape {shape:?}, expected [hidden, input]",
                PARAMS[0],
                source.describe()
            );
        };
        let mut host = BTreeMap::new();
        for (name, shape) in [
            (PARAMS[0], vec![hidden, input]),
            (PARAMS[1], vec![hidden]),
            (PARAMS[2], vec![hidden]),
            (PARAMS[3], vec![hidden]),
            (PARAMS[4], vec![NUM_CLASSES, hidden]),
            (PARAMS[5], vec![NUM_CLASSES]),
            (BUFFERS[0], vec![hidden]),
            (BUFFERS[1], vec![hidden]),
        ] {
            let values = weights.read(name, &shape)?;
            // NaN starting weights would train into a classifier full of NaN.
            check_tensor(name, &values, &source.describe())?;
            host.insert(
                name.to_string(),
                HostTensor {
                    name: name.to_string(),
                    shape,
                    values,
                },
            );
        }
        weights.check_all_used(
            |n| n.ends_with(".num_batches_tracked"),
            "is it VirNucPro's MLPClassifier (Linear → BatchNorm1d → ReLU → Linear)?",
        )?;
        Self::from_host(&host, "", device)
    }

    /// From host tensors named `prefix` + the PyTorch names.
    pub fn from_host(
        tensors: &BTreeMap<String, HostTensor>,
        prefix: &str,
        device: &B::Device,
    ) -> Result<Self> {
        let buffer = |name: &str| -> Result<Tensor<B, 1>> {
            let t = tensors
                .get(&format!("{prefix}{name}"))
                .with_context(|| format!("tensor {prefix}{name} is missing"))?;
            Ok(Tensor::from_data(
                TensorData::new(t.values.clone(), [t.values.len()]),
                device,
            ))
        };
        Ok(Self {
            params: ParamSet::from_host(tensors, prefix, device)?,
            running_mean: buffer(BUFFERS[0])?,
            running_var: buffer(BUFFERS[1])?,
        })
    }

    /// Every tensor `predict` needs, PyTorch names and layout, under `prefix`.
    pub fn to_host(&self, prefix: &str) -> Result<Vec<HostTensor>> {
        let mut out = self.params.to_host(prefix)?;
        let hidden = self.hidden_dim();
        for (name, t) in [
            (BUFFERS[0], &self.running_mean),
            (BUFFERS[1], &self.running_var),
        ] {
            out.push(HostTensor {
                name: format!("{prefix}{name}"),
                shape: vec![hidden],
                values: tensor_to_f32(t.clone())?,
            });
        }
        Ok(out)
    }

    /// Class scores in eval mode (running statistics, no dropout), as `predict` computes them.
    pub fn eval_logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let p = &self.params;
        let z = x.matmul(p.w1.clone()) + p.b1.clone().unsqueeze::<2>();
        let inv_std = self
            .running_var
            .clone()
            .add_scalar(BATCH_NORM_EPS)
            .sqrt()
            .recip();
        let h = (z - self.running_mean.clone().unsqueeze::<2>())
            * inv_std.unsqueeze::<2>()
            * p.gamma.clone().unsqueeze::<2>()
            + p.beta.clone().unsqueeze::<2>();
        burn::tensor::activation::relu(h).matmul(p.w2.clone()) + p.b2.clone().unsqueeze::<2>()
    }

    /// One training batch: forward in training mode (batch statistics), the mean
    /// cross-entropy, its gradients, and BatchNorm's running statistics updated as PyTorch
    /// does (momentum 0.1, unbiased batch variance). `onehot` is `[n, 2]`; `keep` is the
    /// dropout mask already scaled by 1/(1-p), or `None` without dropout.
    pub fn train_batch(
        &mut self,
        x: Tensor<B, 2>,
        onehot: Tensor<B, 2>,
        keep: Option<Tensor<B, 2>>,
    ) -> Result<Step<B>> {
        let n = x.dims()[0];
        if n < 2 {
            bail!("internal error: a training batch of {n} row (BatchNorm needs at least 2)");
        }
        let p = &self.params;
        // Linear.
        let z = x.clone().matmul(p.w1.clone()) + p.b1.clone().unsqueeze::<2>();
        // BatchNorm1d, training mode: normalise with the batch mean and biased variance.
        let mean = z.clone().mean_dim(0);
        let centred = z - mean.clone();
        let var = centred.clone().powi_scalar(2).mean_dim(0);
        let inv_std = var.clone().add_scalar(BATCH_NORM_EPS).sqrt().recip();
        let xhat = centred.clone() * inv_std.clone();
        let a = xhat * p.gamma.clone().unsqueeze::<2>() + p.beta.clone().unsqueeze::<2>();
        // ReLU, then dropout.
        let active = a.clone().greater_elem(0.0).float();
        let mut h = burn::tensor::activation::relu(a);
        if let Some(k) = &keep {
            h = h * k.clone();
        }
        let logits = h.clone().matmul(p.w2.clone()) + p.b2.clone().unsqueeze::<2>();
        // Cross-entropy through log-softmax, mean over the batch.
        let shifted = logits.clone() - logits.max_dim(1);
        let log_probs = shifted.clone() - shifted.exp().sum_dim(1).log();
        let loss = (log_probs.clone() * onehot.clone()).sum().neg() / n as f64;
        let loss = f64::from(tensor_to_f32(loss)?[0]);

        // Backward.
        let dlogits = (log_probs.exp() - onehot) / n as f64;
        let dw2 = h.transpose().matmul(dlogits.clone());
        let db2 = dlogits.clone().sum_dim(0).reshape([NUM_CLASSES]);
        let mut dh = dlogits.matmul(p.w2.clone().transpose());
        if let Some(k) = keep {
            dh = dh * k;
        }
        let da = dh * active;
        // BatchNorm's backward in the form PyTorch's CPU kernel uses: with
        // dotp = Σ(z − μ)·da, dz = (da − (z − μ)·dotp·σ⁻²/n − mean(da))·σ⁻¹·γ.
        let dotp = (centred.clone() * da.clone()).sum_dim(0);
        let dgamma = dotp.clone() * inv_std.clone();
        let dbeta = da.clone().sum_dim(0);
        let k = dotp * inv_std.clone().powi_scalar(2) / n as f64;
        let dz = (da.clone() - centred * k - da.mean_dim(0))
            * (inv_std * p.gamma.clone().unsqueeze::<2>());
        let dw1 = x.transpose().matmul(dz.clone());
        let db1 = dz.sum_dim(0);
        let hidden = self.hidden_dim();

        // Running statistics: momentum 0.1, the unbiased batch variance.
        let unbiased = var.mul_scalar(n as f64 / (n - 1) as f64).reshape([hidden]);
        self.running_mean = self.running_mean.clone().mul_scalar(1.0 - BN_MOMENTUM)
            + mean.reshape([hidden]).mul_scalar(BN_MOMENTUM);
        self.running_var = self.running_var.clone().mul_scalar(1.0 - BN_MOMENTUM)
            + unbiased.mul_scalar(BN_MOMENTUM);
        Ok(Step {
            loss,
            grads: ParamSet {
                w1: dw1,
                b1: db1.reshape([hidden]),
                gamma: dgamma.reshape([hidden]),
                beta: dbeta.reshape([hidden]),
                w2: dw2,
                b2: db2,
            },
        })
    }
}
