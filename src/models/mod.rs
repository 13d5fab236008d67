//! The three networks of VirNucPro, one file each. The classifier is generic over any Burn
//! backend; the encoders over [`ops::ModelOps`], the backends with their hot operations
//! (the CPU's fused kernels, the GPUs' generic composition).

pub mod classifier;
pub mod composed;
pub mod cpu_kernels;
pub mod dnabert_s;
pub mod esm2;
pub mod layers;
pub mod ops;
pub mod reduced;
pub mod shape;

use anyhow::{anyhow, Result};
use burn::tensor::{backend::Backend, Tensor};

/// Any float tensor (f32, f16, bf16) as `f32` values on the host: how every model's output is
/// read back (the embedding engine's pooled rows, the classifier's probabilities).
pub fn tensor_to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| anyhow!("{e:?}"))
}
