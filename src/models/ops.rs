//! The operations the encoders run through their backend rather than as fixed Burn
//! compositions: Burn's backend-extension pattern, a trait over `Backend` whose default methods
//! are the generic composition of Burn's ops, which a backend overrides where it has its own
//! kernels. The CPU backend (Flex) overrides them all with the fused host kernels of
//! `cpu_kernels.rs`; CUDA and wgpu keep the defaults, whose ops CubeCL fuses and autotunes.
//! The models are generic over [`ModelOps`], so no model code asks which backend it runs on.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

pub use super::composed::Matmul;
use super::composed::{self, AlibiBatch, RotaryBatch};
use super::reduced::PackedWeight;

/// Which kernels a model runs: the backend's own ([`ModelOps`]) or the generic composition
/// (to compare the two on one backend), and what its projections multiply in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    pub backend_ops: bool,
    pub matmul: Matmul,
}

impl Default for Kernels {
    fn default() -> Self {
        Self {
            backend_ops: true,
            matmul: Matmul::F32,
        }
    }
}

/// A projection's weight as a model holds it.
#[derive(Clone, Debug)]
pub enum DenseWeight<B: Backend> {
    /// `[in, out]`, in the model's dtype.
    Tensor(Tensor<B, 2>),
    /// Reduced (bf16 or int8) and packed for the CPU's reduced-precision kernels as the model
    /// was loaded (`--precision bf16` or `int8`, `models/reduced/`): its products are in the
    /// packing's arithmetic whatever `matmul` says.
    Tiles(Arc<PackedWeight>),
}

impl<B: Backend> DenseWeight<B> {
    /// `(x, weight)` as the generic composition multiplies them in `matmul`: a packed
    /// weight's values (rounded, or quantised and scaled back) unpacked to an `[in, out]`
    /// tensor (on `x`'s device), `x` reduced the packing's way.
    pub fn operands(self, x: Tensor<B, 3>, matmul: Matmul) -> (Tensor<B, 3>, Tensor<B, 2>) {
        match self {
            DenseWeight::Tensor(weight) => composed::matmul_operands(x, weight, matmul),
            DenseWeight::Tiles(tiles) => {
                let (k, n) = tiles.shape();
                let data = TensorData::new(tiles.unpacked(), [k, n]);
                let weight = Tensor::from_data(data, &x.device());
                (composed::activation_operand(x, tiles.matmul()), weight)
            }
        }
    }
}

/// A backend the encoders run on. Every method has the generic composition as its default;
/// an override must compute the same function (to f32 rounding: the parity tests hold the CPU
/// kernels to the composition) and may fall back to the default for inputs it does not cover.
pub trait ModelOps: Backend {
    /// A `Linear` over `[batch, len, in]` with an `[in, out]` weight: `x·w + bias`, then GELU
    /// when `gelu`, then `+ residual` when given (`[batch, len, out]`); the product in
    /// `matmul` (a packed weight's own arithmetic).
    fn dense(
        x: Tensor<Self, 3>,
        weight: DenseWeight<Self>,
        bias: Option<Tensor<Self, 1>>,
        residual: Option<Tensor<Self, 3>>,
        gelu: bool,
        matmul: Matmul,
    ) -> Tensor<Self, 3> {
        let (x, weight) = weight.operands(x, matmul);
        composed::dense_composed(
            x,
            weight,
            bias,
            residual,
            gelu.then_some(Self::exact_gelu::<3>),
        )
    }

    /// LayerNorm over the last dimension with `gamma`/`beta`, in f32 whatever `x`'s dtype.
    fn layer_norm(
        x: Tensor<Self, 3>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, 3> {
        composed::layer_norm_composed(x, gamma, beta, eps)
    }

    /// Exact (erf) GELU.
    fn exact_gelu<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        burn::tensor::activation::gelu(x)
    }

    /// ESM-2's rotary self-attention: the fused projection `[batch, len, 3·dim]` to the
    /// context `[batch, len, dim]`.
    fn rotary_attention(qkv: Tensor<Self, 3>, batch: &RotaryBatch<Self>) -> Tensor<Self, 3> {
        composed::rotary_attention_composed(qkv, batch)
    }

    /// DNABERT-S's ALiBi self-attention: the fused projection `[batch, len, 3·dim]` to the
    /// context `[batch, len, dim]`.
    fn alibi_attention(qkv: Tensor<Self, 3>, batch: &AlibiBatch<Self>) -> Tensor<Self, 3> {
        composed::alibi_attention_composed(qkv, batch)
    }
}

// The GPU backends in the precisions `device::dispatch` runs them in: Burn's ops, which their
// fusion and autotune already compile into few kernels (the cases their own attention op gets
// wrong are in `composed::attention`).
#[cfg(feature = "cuda")]
mod cuda {
    use burn::backend::Cuda;
    impl super::ModelOps for Cuda<f32, i32> {}
    impl super::ModelOps for Cuda<half::f16, i32> {}
    impl super::ModelOps for Cuda<half::bf16, i32> {}
}

#[cfg(any(feature = "wgpu", feature = "wgpu-metal"))]
mod wgpu {
    use burn::backend::wgpu::Wgpu;
    impl super::ModelOps for Wgpu<f32, i32> {}
    impl super::ModelOps for Wgpu<half::f16, i32> {}
}
