//! The building blocks both encoders share, loaded from PyTorch checkpoints: a `Linear` applied
//! as one GEMM over every token of a batch, a LayerNorm on the backend's kernel, and attention
//! written out as matmuls. Norms and the softmax run in f32 whatever the model's dtype, as
//! fair-esm and PyTorch's autocast do.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;

use super::ops::ModelOps;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{DType, FloatDType, Tensor, TensorPrimitive};

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
    /// `forward(x)`, then GELU when `gelu`, then `+ residual` when given: through the
    /// backend's own [`ModelOps::dense`] when `backend_ops` (on the CPU one GEMM into a buffer
    /// that starts as `residual + bias`, GELU in place), else as [`dense_composed`] (how the
    /// parity tests hold the CPU kernels to the composition on the same backend).
    pub fn forward_fused(
        &self,
        x: Tensor<B, 3>,
        residual: Option<&Tensor<B, 3>>,
        gelu: bool,
        backend_ops: bool,
    ) -> Tensor<B, 3> {
        let weight = self.weight.val();
        let bias = self.bias.as_ref().map(Param::val);
        let residual = residual.cloned();
        if backend_ops {
            B::dense(x, weight, bias, residual, gelu)
        } else {
            dense_composed(x, weight, bias, residual, gelu)
        }
    }
}

/// [`ModelOps::dense`] as Burn's ops, in this order: one `[b·l, in] × [in, out]` GEMM with the
/// bias, then the backend's GELU when `gelu`, then the residual.
pub fn dense_composed<B: ModelOps>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    residual: Option<Tensor<B, 3>>,
    gelu: bool,
) -> Tensor<B, 3> {
    let mut y = linear_3d(x, weight, bias);
    if gelu {
        y = B::exact_gelu(y);
    }
    match residual {
        Some(r) => y + r,
        None => y,
    }
}

/// `[batch, len, in]` -> `[batch, len, out]` as one `[b·l, in] × [in, out]` GEMM instead of b
/// broadcast ones: the weight is read once.
fn linear_3d<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 3> {
    let [batch, len, dim] = x.dims();
    let y = linear(x.reshape([batch * len, dim]), weight, bias);
    let out = y.dims()[1];
    y.reshape([batch, len, out])
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

    /// In f32 whatever `x`'s dtype, back in `x`'s dtype: Burn's layer norm on the GPU
    /// backends is a composition whose `(x - mean)²` would run in f16 and overflow once
    /// `|x - mean|` passes 256, and its output would then silently equal beta.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let f32 = |t: Tensor<B, 1>| t.cast(FloatDType::F32);
        let y: Tensor<B, 3> = Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
            x.cast(FloatDType::F32).into_primitive().tensor(),
            f32(self.gamma.val()).into_primitive().tensor(),
            Some(f32(self.beta.val()).into_primitive().tensor()),
            self.eps,
        )));
        y.cast(FloatDType::from(dtype))
    }
}

/// Multi-head attention `softmax(q·kᵀ·scale + bias)·v` on `[batch, heads, len, head_dim]`,
/// written as two matmuls and a softmax rather than Burn's attention op: on the CubeCL backends
/// that op autotunes between kernels of which some compute a batch's offset from its first
/// stride (wrong for a broadcast mask and for q/k/v as strided views) and some need the length
/// to be a multiple of their tile. Scores, bias and softmax are f32 (an f16 score overflows, and
/// ALiBi's large distances lose their digits in f16); the probabilities go back to `v`'s dtype
/// for the second matmul.
///
/// `scale`: multiplies the scores (`None` when q is already scaled); `bias`: additive, f32,
/// broadcast to `[batch, heads, len, len]` (e.g. `[batch, 1, 1, len]` with `-inf` on padded
/// keys, or ALiBi's `[1, heads, len, len]`).
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    scale: Option<f64>,
) -> Tensor<B, 4> {
    let dtype = v.dtype();
    let mut scores = q.matmul(k.swap_dims(2, 3)).cast(FloatDType::F32);
    if let Some(scale) = scale {
        scores = scores * scale;
    }
    if let Some(bias) = bias {
        debug_assert_eq!(bias.dtype(), DType::F32, "attention bias must be f32");
        scores = scores + bias;
    }
    softmax(scores, 3).cast(FloatDType::from(dtype)).matmul(v)
}
