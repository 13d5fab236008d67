//! Reading a model's tensors onto a device by their checkpoint names: the one helper both
//! encoders build their layers with (`models::layers::{Dense, Norm}::load`). Checkpoints name
//! the same tensor with or without a prefix (`esm.`, `bert.`, fair-esm's `encoder.`): each
//! name is tried with the model's prefixes in order, and errors name every candidate and the
//! file.

use anyhow::Result;
use burn::tensor::{backend::Backend, Tensor};

use super::Weights;

pub struct TensorLoader<'a, B: Backend> {
    weights: &'a Weights,
    /// Tried in order before every name.
    prefixes: &'a [&'a str],
    device: &'a B::Device,
}

impl<'a, B: Backend> TensorLoader<'a, B> {
    pub fn new(weights: &'a Weights, prefixes: &'a [&'a str], device: &'a B::Device) -> Self {
        Self {
            weights,
            prefixes,
            device,
        }
    }

    /// The checkpoint's own name for `name`: the first prefixed form it holds.
    pub fn resolve(&self, name: &str) -> Result<String> {
        let candidates: Vec<String> = self.prefixes.iter().map(|p| format!("{p}{name}")).collect();
        let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
        Ok(self.weights.resolve(&refs)?.to_string())
    }

    /// A tensor of exactly `shape`.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        self.weights
            .tensor::<B, D>(&self.resolve(name)?, shape, self.device)
    }

    /// The weight of a PyTorch `Linear` named `module` (`[out, in]` on disk) as the `[in, out]`
    /// matrix Burn multiplies by.
    pub fn linear_weight(&self, module: &str, out: usize, inp: usize) -> Result<Tensor<B, 2>> {
        self.weights.linear_weight::<B>(
            &self.resolve(&format!("{module}.weight"))?,
            out,
            inp,
            self.device,
        )
    }

    /// The bias of a module with `out` outputs.
    pub fn bias(&self, module: &str, out: usize) -> Result<Tensor<B, 1>> {
        self.tensor(&format!("{module}.bias"), [out])
    }

    /// `(weight, bias)` of a `LayerNorm` over `dim` features.
    pub fn layer_norm(&self, module: &str, dim: usize) -> Result<(Tensor<B, 1>, Tensor<B, 1>)> {
        Ok((
            self.tensor(&format!("{module}.weight"), [dim])?,
            self.bias(module, dim)?,
        ))
    }
}
