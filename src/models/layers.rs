//! The building blocks both encoders share, loaded from PyTorch checkpoints: a `Linear` applied
//! through the backend's [`ModelOps::dense`] (as one GEMM over every token of a batch) and a
//! LayerNorm on the backend's kernel; attention written out as matmuls is in `composed.rs`.
//! Norms and the softmax run in f32 whatever the model's dtype, as fair-esm and PyTorch's
//! autocast do.

use burn::module::{Module, Param};

use super::composed::{dense_composed, layer_norm_composed, linear_3d, matmul_operands};
use super::ops::{Kernels, ModelOps};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::weights::loader::TensorLoader;

/// A PyTorch `Linear` as an `[in, out]` weight and an optional bias.
#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    weight: Param<Tensor<B, 2>>,
    bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Dense<B> {
    /// `weight` is `[in, out]` (a checkpoint's `[out, in]` transposed); `bias` is `[out]`.
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
        }
    }

    /// The PyTorch `Linear` named `module` (`out` × `inp`), with its bias when `bias`.
    pub fn load(
        loader: &TensorLoader<B>,
        module: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> anyhow::Result<Self> {
        let weight = loader.linear_weight(module, out, inp)?;
        let bias = if bias {
            Some(loader.bias(module, out)?)
        } else {
            None
        };
        Ok(Self::new(weight, bias))
    }

    /// `[batch, len, in]` -> `[batch, len, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        linear_3d(x, self.weight.val(), self.bias.as_ref().map(Param::val))
    }
}

impl<B: ModelOps> Dense<B> {
    /// `forward(x)`, then GELU when `gelu`, then `+ residual` when given, the product in
    /// `kernels.matmul`: through the backend's own [`ModelOps::dense`] when
    /// `kernels.backend_ops` (on the CPU one GEMM into a buffer that starts as `residual +
    /// bias`, GELU in place), else as [`dense_composed`] (how the parity tests hold the CPU
    /// kernels to the composition on the same backend).
    pub fn forward_fused(
        &self,
        x: Tensor<B, 3>,
        residual: Option<&Tensor<B, 3>>,
        gelu: bool,
        kernels: Kernels,
    ) -> Tensor<B, 3> {
        let weight = self.weight.val();
        let bias = self.bias.as_ref().map(Param::val);
        let residual = residual.cloned();
        if kernels.backend_ops {
            B::dense(x, weight, bias, residual, gelu, kernels.matmul)
        } else {
            let (x, weight) = matmul_operands(x, weight, kernels.matmul);
            dense_composed(
                x,
                weight,
                bias,
                residual,
                gelu.then_some(B::exact_gelu::<3>),
            )
        }
    }
}

/// LayerNorm over the last dimension with a checkpoint's gamma/beta.
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    gamma: Param<Tensor<B, 1>>,
    beta: Param<Tensor<B, 1>>,
    #[module(skip)]
    eps: f64,
}

impl<B: Backend> Norm<B> {
    /// The `LayerNorm` named `module` over `dim` features.
    pub fn load(
        loader: &TensorLoader<B>,
        module: &str,
        dim: usize,
        eps: f64,
    ) -> anyhow::Result<Self> {
        let (gamma, beta) = loader.layer_norm(module, dim)?;
        Ok(Self::new(gamma, beta, eps))
    }

    pub fn new(gamma: Tensor<B, 1>, beta: Tensor<B, 1>, eps: f64) -> Self {
        Self {
            gamma: Param::from_tensor(gamma),
            beta: Param::from_tensor(beta),
            eps,
        }
    }
}

impl<B: ModelOps> Norm<B> {
    /// Normalised `x`: through the backend's own [`ModelOps::layer_norm`] when `backend_ops`
    /// (the CPU's one-pass-per-row kernel), else the generic composition.
    pub fn forward(&self, x: Tensor<B, 3>, backend_ops: bool) -> Tensor<B, 3> {
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        if backend_ops {
            <B as ModelOps>::layer_norm(x, gamma, beta, self.eps)
        } else {
            layer_norm_composed(x, gamma, beta, self.eps)
        }
    }
}
