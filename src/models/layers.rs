//! The building blocks both encoders share, loaded from PyTorch checkpoints: a `Linear` applied
//! through the backend's [`ModelOps::dense`] (as one GEMM over every token of a batch) and a
//! LayerNorm on the backend's kernel; attention written out as matmuls is in `composed.rs`.
//! Norms and the softmax run in f32 whatever the model's dtype, as fair-esm and PyTorch's
//! autocast do.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::composed::{dense_composed, layer_norm_composed, linear_3d};
use super::ops::{DenseWeight, Kernels, Matmul, ModelOps};
use super::reduced::{self, PackedWeight};
use crate::weights::loader::{check_parts, TensorLoader};
use crate::weights::LinearRows;

/// A PyTorch `Linear` as an `[in, out]` weight and an optional bias. For bf16 or int8 products
/// on a CPU that runs them (`--precision bf16`, `int8`: `models/reduced/`) the weight is held
/// only packed, from the checkpoint as it loads: a half (bf16) or a quarter (int8) of the f32
/// matrix's memory,
/// and nothing left to pack at the first batch (ESM-2 3B in bf16: 5.6 GB instead of 11.1 GB
/// of f32 weights plus their packing).
#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    /// `[in, out]`; `None` when the weight is held as `tiles`.
    weight: Option<Param<Tensor<B, 2>>>,
    bias: Option<Param<Tensor<B, 1>>>,
    /// The weight reduced and packed in the reduced-precision kernels' layout, in place of
    /// `weight`.
    #[module(skip)]
    tiles: Option<Arc<PackedWeight>>,
}

/// Whether weights loaded for products in `matmul` are packed: bf16 or int8 products where
/// this CPU's kernels for them run. Elsewhere a reduced request keeps the f32
/// weight, and the generic composition reduces both operands per product (the tests'
/// reference for the kernels).
fn packs(matmul: Matmul) -> bool {
    reduced::available(matmul)
}

impl<B: Backend> Dense<B> {
    /// `weight` is `[in, out]` (a checkpoint's `[out, in]` transposed); `bias` is `[out]`.
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight: Some(Param::from_tensor(weight)),
            bias: bias.map(Param::from_tensor),
            tiles: None,
        }
    }

    fn with_tiles(tiles: PackedWeight, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight: None,
            bias: bias.map(Param::from_tensor),
            tiles: Some(Arc::new(tiles)),
        }
    }

    /// The PyTorch `Linear` named `module` (`out` × `inp`), with its bias when `bias`, for
    /// products in `matmul`.
    pub fn load(
        loader: &TensorLoader<B>,
        module: &str,
        out: usize,
        inp: usize,
        bias: bool,
        matmul: Matmul,
    ) -> anyhow::Result<Self> {
        let bias = if bias {
            Some(loader.bias(module, out)?)
        } else {
            None
        };
        if packs(matmul) {
            let rows = loader.linear_rows(module, out, inp)?;
            return Ok(Self::with_tiles(
                tiles_of(loader, &[(&rows, 0..out)], inp, matmul),
                bias,
            ));
        }
        Ok(Self::new(loader.linear_weight(module, out, inp)?, bias))
    }

    /// Several bias-carrying `Linear`s of `out` × `inp` (attention's q, k and v) fused into one
    /// `[inp, modules·out]` projection with one `[modules·out]` bias, for products in `matmul`.
    pub fn load_fused(
        loader: &TensorLoader<B>,
        modules: &[String],
        out: usize,
        inp: usize,
        matmul: Matmul,
    ) -> anyhow::Result<Self> {
        if !packs(matmul) {
            let (weight, bias) = loader.fused_linear(modules, out, inp)?;
            return Ok(Self::new(weight, Some(bias)));
        }
        let rows = modules
            .iter()
            .map(|m| loader.linear_rows(m, out, inp))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let parts: Vec<_> = rows.iter().map(|r| (r, 0..out)).collect();
        let tiles = tiles_of(loader, &parts, inp, matmul);
        let bias = loader.fused_bias(modules, out)?;
        Ok(Self::with_tiles(tiles, Some(bias)))
    }

    /// A bias-free PyTorch `Linear` named `module` (`out` × `inp`) cut by output features into
    /// `parts`, one projection each (DNABERT-S's gate and up), for products in `matmul`.
    pub fn load_split<const N: usize>(
        loader: &TensorLoader<B>,
        module: &str,
        out: usize,
        inp: usize,
        parts: [std::ops::Range<usize>; N],
        matmul: Matmul,
    ) -> anyhow::Result<[Self; N]> {
        if !packs(matmul) {
            let weights = loader.split_linear(module, out, inp, parts)?;
            return Ok(weights.map(|w| Self::new(w, None)));
        }
        let rows = loader.linear_rows(module, out, inp)?;
        check_parts(module, out, &parts)?;
        Ok(parts
            .map(|part| Self::with_tiles(tiles_of(loader, &[(&rows, part)], inp, matmul), None)))
    }

    /// `[batch, len, in]` -> `[batch, len, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let (x, weight) = self.weight().operands(x, Matmul::F32);
        linear_3d(x, weight, self.bias.as_ref().map(Param::val))
    }

    fn weight(&self) -> DenseWeight<B> {
        match (&self.weight, &self.tiles) {
            (Some(weight), _) => DenseWeight::Tensor(weight.val()),
            (None, Some(tiles)) => DenseWeight::Tiles(Arc::clone(tiles)),
            (None, None) => unreachable!("a Dense holds its weight one way or the other"),
        }
    }

    /// The same projection with its weight packed into tiles, when products in `matmul`
    /// take them (see [`packs`]): how a model loaded in f32 is switched to reduced products.
    /// A packed weight cannot go back nor change kind: its f32 values are gone.
    pub fn for_matmul(self, matmul: Matmul) -> Self {
        match (&self.weight, &self.tiles, packs(matmul)) {
            (Some(weight), _, true) => {
                let [k, n] = weight.dims();
                let values = crate::models::tensor_to_f32(weight.val())
                    .expect("a Dense weight reads back as f32");
                let bias = self.bias.map(|b| b.val());
                Self::with_tiles(PackedWeight::new(matmul, &values, k, n), bias)
            }
            (None, Some(tiles), _) if tiles.matmul() != matmul => panic!(
                "a projection loaded for {:?} products holds only its reduced weights: load the \
                 model again for {matmul:?} products",
                tiles.matmul()
            ),
            _ => self,
        }
    }
}

/// The tiles for products in `matmul` of the projection whose output features are `parts`
/// (rows of checkpoint weights) one after the other, packed from the file's bytes in one
/// parallel pass.
fn tiles_of<B: Backend>(
    loader: &TensorLoader<B>,
    parts: &[(&LinearRows<'_>, std::ops::Range<usize>)],
    inp: usize,
    matmul: Matmul,
) -> PackedWeight {
    let n: usize = parts.iter().map(|(_, r)| r.len()).sum();
    let bytes: usize = parts
        .iter()
        .map(|(rows, r)| rows.stored_bytes() / rows.out_features() * r.len())
        .sum();
    loader.converting(bytes, || {
        PackedWeight::from_columns(matmul, inp, n, |mut j, values| {
            for (rows, range) in parts {
                if j < range.len() {
                    return rows.row(range.start + j, values);
                }
                j -= range.len();
            }
            unreachable!("column inside the parts");
        })
    })
}

impl<B: ModelOps> Dense<B> {
    /// `forward(x)`, then GELU when `gelu`, then `+ residual` when given, the product in
    /// `kernels.matmul` (a packed weight's own arithmetic): through the backend's own
    /// [`ModelOps::dense`] when `kernels.backend_ops` (on the CPU one GEMM into a buffer that
    /// starts as `residual + bias`, GELU in place), else as [`dense_composed`] (how the parity
    /// tests hold the CPU kernels to the composition on the same backend).
    pub fn forward_fused(
        &self,
        x: Tensor<B, 3>,
        residual: Option<&Tensor<B, 3>>,
        gelu: bool,
        kernels: Kernels,
    ) -> Tensor<B, 3> {
        let weight = self.weight();
        let bias = self.bias.as_ref().map(Param::val);
        let residual = residual.cloned();
        if kernels.backend_ops {
            B::dense(x, weight, bias, residual, gelu, kernels.matmul)
        } else {
            let (x, weight) = weight.operands(x, kernels.matmul);
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
