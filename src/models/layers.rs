//! The building blocks both encoders share, loaded from PyTorch checkpoints: a `Linear` applied
//! as one GEMM over every token of a batch, a LayerNorm on the backend's kernel, and attention
//! written out as matmuls. Norms and the softmax run in f32 whatever the model's dtype, as
//! fair-esm and PyTorch's autocast do.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;

use super::cpu_kernels;
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
        let [batch, len, dim] = x.dims();
        // One [b·l, in] × [in, out] GEMM instead of b broadcast ones: the weight is read once.
        let y = linear(
            x.reshape([batch * len, dim]),
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
        );
        let out = y.dims()[1];
        y.reshape([batch, len, out])
    }

    /// `forward(x)`, then GELU when `gelu`, then `+ residual` when given. With `cpu_kernels` on
    /// the CPU backend (f32, contiguous weight) one GEMM does it all into a buffer that starts
    /// as `residual + bias` and GELU runs in place (`cpu_kernels::linear`); elsewhere Burn's
    /// ops, in that order.
    pub fn forward_fused(
        &self,
        x: Tensor<B, 3>,
        residual: Option<&Tensor<B, 3>>,
        gelu: bool,
        cpu_kernels: bool,
    ) -> Tensor<B, 3> {
        let x = if cpu_kernels {
            match self.forward_cpu(x, residual, gelu) {
                Ok(y) => return y,
                Err(x) => x,
            }
        } else {
            x
        };
        let mut y = self.forward(x);
        if gelu {
            y = self::gelu(y);
        }
        match residual {
            Some(r) => y + r.clone(),
            None => y,
        }
    }

    /// [`Self::forward_fused`] on the host, `Err(x)` when the backend, a dtype or the weight's
    /// layout does not allow it.
    fn forward_cpu(
        &self,
        x: Tensor<B, 3>,
        residual: Option<&Tensor<B, 3>>,
        gelu: bool,
    ) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
        // GELU after a residual is not a composition any model here uses.
        if gelu && residual.is_some() {
            return Err(x);
        }
        let Some(w) = cpu_kernels::flex_view(self.weight.val()) else {
            return Err(x);
        };
        let bias = match &self.bias {
            Some(b) => match cpu_kernels::flex_view(b.val()) {
                Some(b) => Some(b),
                None => return Err(x),
            },
            None => None,
        };
        let residual = match residual.map(|r| cpu_kernels::to_flex(r.clone())) {
            Some(Ok(r)) => Some(r),
            Some(Err(_)) => return Err(x),
            None => None,
        };
        let [batch, len, inp] = x.dims();
        let [w_in, out] = self.weight.dims();
        if w_in != inp {
            return Err(x);
        }
        let x = cpu_kernels::to_flex(x)?;
        let mut y = cpu_kernels::linear(
            cpu_kernels::values(&x),
            cpu_kernels::values(&w),
            inp,
            bias.as_ref().map(cpu_kernels::values),
            residual.as_ref().map(cpu_kernels::values),
        );
        if gelu {
            cpu_kernels::gelu_in_place(&mut y);
        }
        Ok(cpu_kernels::from_flex(y, [batch, len, out]))
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

/// Exact (erf) GELU: on the CPU backend the fused kernel (`cpu_kernels::gelu_in_place`, a
/// vectorised erf), elsewhere Burn's.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match cpu_kernels::to_flex(x) {
        Ok(flex) => {
            let shape: [usize; D] = flex.layout().shape().to_vec().try_into().expect("rank D");
            let mut values = cpu_kernels::values(&flex).to_vec();
            cpu_kernels::gelu_in_place(&mut values);
            cpu_kernels::from_flex(values, shape)
        }
        Err(x) => burn::tensor::activation::gelu(x),
    }
}
