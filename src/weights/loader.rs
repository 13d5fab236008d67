//! Reading a model's tensors onto a device by their checkpoint names: the one helper both
//! encoders build their layers with (`models::layers::{Dense, Norm}::load`). Checkpoints name
//! the same tensor with or without a prefix (`esm.`, `bert.`, fair-esm's `encoder.`): each
//! name is tried with the model's prefixes in order, and errors name every candidate and the
//! file.

use anyhow::Result;
use burn::tensor::{backend::Backend, Tensor};

use super::host::Dest;
use super::{LinearRows, Weights};

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

    /// Start reading the weights of `modules` (PyTorch `Linear`s) from disk ahead of their
    /// use ([`Weights::prefetch`]); names the checkpoint lacks are left to the read to report.
    pub fn prefetch(&self, modules: &[String]) {
        for module in modules {
            if let Ok(name) = self.resolve(&format!("{module}.weight")) {
                self.weights.prefetch(&name);
            }
        }
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

    /// The weight of the PyTorch `Linear` named `module` (`out` × `inp`), read by output
    /// feature ([`Weights::linear_rows`]).
    pub fn linear_rows(&self, module: &str, out: usize, inp: usize) -> Result<LinearRows<'a>> {
        self.weights
            .linear_rows(&self.resolve(&format!("{module}.weight"))?, out, inp)
    }

    /// `convert`, turning `bytes` of weights read by [`Self::linear_rows`] into the model's
    /// own layout, counted in the load's conversion time.
    pub fn converting<T>(&self, bytes: usize, convert: impl FnOnce() -> T) -> T {
        self.weights.timed(bytes, convert)
    }

    /// A bias-free PyTorch `Linear` named `module` (`out` × `inp`) cut by output features
    /// into `parts`, each uploaded as its own contiguous `[inp, part]` matrix. Not as column
    /// slices of one uploaded weight: a slice is a strided view (CUDA keeps the parent's row
    /// pitch), and a strided right-hand side is what made CubeCL's autotune pick a matmul
    /// kernel that is wrong at some shapes (see [`super::Weights::linear_weight`]).
    pub fn split_linear<const N: usize>(
        &self,
        module: &str,
        out: usize,
        inp: usize,
        parts: [std::ops::Range<usize>; N],
    ) -> Result<[Tensor<B, 2>; N]> {
        let name = self.resolve(&format!("{module}.weight"))?;
        self.weights.check_shape(&name, &[out, inp])?;
        let mut tensors = Vec::with_capacity(N);
        check_parts(&name, out, &parts)?;
        for part in parts {
            let width = part.end - part.start;
            let mut values = super::host::buffer(inp * width);
            let dst = Dest {
                values: &mut values,
                stride: width,
                col: 0,
            };
            self.weights
                .linear_weight_into(&name, out, inp, part, dst)?;
            tensors.push(super::upload(values, [inp, width], self.device));
        }
        Ok(tensors
            .try_into()
            .unwrap_or_else(|_| unreachable!("one tensor per part")))
    }

    /// Several bias-carrying `Linear`s of `out` × `inp` (e.g. attention's q, k and v) fused
    /// side by side into one `[inp, modules·out]` weight and one `[modules·out]` bias, built
    /// on the host so the device receives each once (see [`super::upload`]).
    pub fn fused_linear(
        &self,
        modules: &[String],
        out: usize,
        inp: usize,
    ) -> Result<(Tensor<B, 2>, Tensor<B, 1>)> {
        let names = modules
            .iter()
            .map(|m| {
                let name = self.resolve(&format!("{m}.weight"))?;
                self.weights.check_shape(&name, &[out, inp])?;
                Ok(name)
            })
            .collect::<Result<Vec<_>>>()?;
        let width = modules.len() * out;
        let mut weight = super::host::buffer(inp * width);
        for (m, name) in names.iter().enumerate() {
            // Each module's transpose lands in its own columns of the fused weight.
            let dst = Dest {
                values: &mut weight,
                stride: width,
                col: m * out,
            };
            self.weights
                .linear_weight_into(name, out, inp, 0..out, dst)?;
        }
        Ok((
            super::upload(weight, [inp, width], self.device),
            self.fused_bias(modules, out)?,
        ))
    }

    /// The biases of `modules` (`out` each) end to end, as one `[modules·out]` tensor: a fused
    /// projection's bias.
    pub fn fused_bias(&self, modules: &[String], out: usize) -> Result<Tensor<B, 1>> {
        let mut bias = Vec::with_capacity(modules.len() * out);
        for module in modules {
            let name = self.resolve(&format!("{module}.bias"))?;
            bias.extend(self.weights.read(&name, &[out])?);
        }
        Ok(super::upload(bias, [modules.len() * out], self.device))
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

/// That every one of `parts` is a non-empty range of the `out` output features of the
/// weight `name`.
pub fn check_parts(name: &str, out: usize, parts: &[std::ops::Range<usize>]) -> Result<()> {
    for part in parts {
        anyhow::ensure!(
            part.start < part.end && part.end <= out,
            "{name}: output features {part:?} outside 0..{out}"
        );
    }
    Ok(())
}
