//! The generic compositions of Burn's ops that the backend extension ([`super::ops`]) falls back
//! to, and that CUDA and wgpu run (their fusion and autotune compile them into few kernels):
//! a dense layer, multi-head attention, and each encoder's attention with its per-forward
//! inputs ([`RotaryBatch`] for ESM-2, [`AlibiBatch`] for DNABERT-S, which the CPU kernels read
//! on the host). Below the extension and the models, so that both can use it: it imports
//! nothing of the crate.

use std::cell::OnceCell;

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData, TensorPrimitive};

/// [`ModelOps::dense`](super::ops::ModelOps::dense) as Burn's ops, in this order: one
/// `[b·l, in] × [in, out]` GEMM with the bias, then `gelu` when given (the backend's own, which
/// its caller passes: this file sits below the backend extension), then the residual.
pub fn dense_composed<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    residual: Option<Tensor<B, 3>>,
    gelu: Option<fn(Tensor<B, 3>) -> Tensor<B, 3>>,
) -> Tensor<B, 3> {
    let mut y = linear_3d(x, weight, bias);
    if let Some(gelu) = gelu {
        y = gelu(y);
    }
    match residual {
        Some(r) => y + r,
        None => y,
    }
}

/// What a projection's matrix product computes in, for a model whose tensors are f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Matmul {
    /// f32 operands (the reference's arithmetic).
    #[default]
    F32,
    /// Both operands rounded to bf16, products accumulated in f32: `--precision bf16` on the
    /// CPU, where the backend multiplies on AMX tiles (`models/reduced/bf16.rs`) and everything
    /// else stays f32. The default composition rounds the operands the same way and multiplies
    /// in f32, which is what the tile unit computes up to the order of the f32 additions.
    Bf16,
    /// W8A8: the weight quantised to int8 per output feature, the activations per row, both
    /// symmetric with scale `max|v| / 127`; exact integer products scaled back to f32:
    /// `--precision int8` on the CPU, on AMX tiles or AVX-512 VNNI (`models/reduced/`). The default
    /// composition multiplies the quantised values scaled back, in f32: the same up to f32
    /// rounding.
    Int8,
}

/// A product's operands as [`Matmul`] computes them, each as f32 values whose f32 product is
/// the reduced one up to the order of the additions: for `Bf16`, both rounded to bf16 (to
/// nearest even) and back; for `Int8`, `x` quantised per row and `weight` (`[in, out]`) per
/// column, and scaled back; anything else unchanged.
pub fn matmul_operands<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    matmul: Matmul,
) -> (Tensor<B, 3>, Tensor<B, 2>) {
    (
        activation_operand(x, matmul),
        match matmul {
            Matmul::Int8 if weight.dtype() == DType::F32 => quantised(weight, 0),
            _ => reduced(weight, matmul),
        },
    )
}

/// The left operand (activations, `[batch, len, in]`) as [`matmul_operands`] makes it: for a
/// weight already reduced as it loaded (packed tiles), only this side is left to reduce.
pub fn activation_operand<B: Backend>(x: Tensor<B, 3>, matmul: Matmul) -> Tensor<B, 3> {
    match matmul {
        Matmul::Int8 if x.dtype() == DType::F32 => quantised(x, 2),
        _ => reduced(x, matmul),
    }
}

/// `t` rounded to bf16 and back for bf16 products of f32 tensors; otherwise unchanged.
fn reduced<B: Backend, const D: usize>(t: Tensor<B, D>, matmul: Matmul) -> Tensor<B, D> {
    if matmul == Matmul::Bf16 && t.dtype() == DType::F32 {
        t.cast(FloatDType::BF16).cast(FloatDType::F32)
    } else {
        t
    }
}

/// `t` quantised symmetrically to int8 along `dim` (one scale per slice across it: per row of
/// activations, per column of an `[in, out]` weight) and scaled back: `round(v · (127 / m))
/// · (m / 127)`, `m = max |v|` over the slice, rounding to nearest even; an all-zero slice
/// stays zero. The tile kernels' arithmetic (`models/reduced/int8.rs`) written as tensor ops.
fn quantised<B: Backend, const D: usize>(t: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = t.clone().abs().max_dim(dim);
    let zero = max.clone().equal_elem(0.0);
    let inv = (max.ones_like() * 127.0)
        .div(max.clone())
        .mask_fill(zero, 0.0);
    let q = (t * inv).round().clamp(-127.0, 127.0);
    q * max.div_scalar(127.0)
}

/// LayerNorm over the last dimension, in f32 whatever `x`'s dtype, back in `x`'s dtype: Burn's
/// layer norm on the GPU backends is a composition whose `(x - mean)²` would run in f16 and
/// overflow once `|x - mean|` passes 256, and its output would then silently equal beta.
pub fn layer_norm_composed<B: Backend>(
    x: Tensor<B, 3>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, 3> {
    let dtype = x.dtype();
    let f32 = |t: Tensor<B, 1>| t.cast(FloatDType::F32);
    let y: Tensor<B, 3> = Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
        x.cast(FloatDType::F32).into_primitive().tensor(),
        f32(gamma).into_primitive().tensor(),
        Some(f32(beta).into_primitive().tensor()),
        eps,
    )));
    y.cast(FloatDType::from(dtype))
}

/// `[batch, len, in]` -> `[batch, len, out]` as one `[b·l, in] × [in, out]` GEMM instead of b
/// broadcast ones: the weight is read once.
pub fn linear_3d<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 3> {
    let [batch, len, dim] = x.dims();
    let y = linear(x.reshape([batch * len, dim]), weight, bias);
    let out = y.dims()[1];
    y.reshape([batch, len, out])
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

/// One forward's attention inputs, shared by all layers: what the CPU kernel reads on the host,
/// and the same as device tensors for the composition, uploaded on first use only (a backend
/// with its own kernel never needs them).
pub struct RotaryBatch<B: Backend> {
    pub(crate) heads: usize,
    /// Per sequence, its token count.
    pub(crate) lengths: Vec<usize>,
    /// `[batch, len]`: 0 for real keys, `-inf` for padding (a padded key's attention weight is
    /// then exactly 0).
    pub(crate) key_bias: Vec<f32>,
    /// Rotary tables `[len, head_dim]`: `cos`, and `sin` with the first half negated so that
    /// `rotate_half(x)·sin == swap_halves(x)·sin_signed`.
    pub(crate) cos: Vec<f32>,
    pub(crate) sin_signed: Vec<f32>,
    pub(super) device: B::Device,
    pub(super) tensors: OnceCell<RotaryTensors<B>>,
}

/// [`RotaryBatch`]'s tables on the device.
pub(super) struct RotaryTensors<B: Backend> {
    /// `[batch, 1, 1, len]` in f32; `None` without padding.
    key_bias: Option<Tensor<B, 4>>,
    /// `[1, len, 1, head_dim]` each.
    cos: Tensor<B, 4>,
    sin_signed: Tensor<B, 4>,
}

impl<B: Backend> RotaryBatch<B> {
    fn tensors(&self) -> &RotaryTensors<B> {
        self.tensors.get_or_init(|| {
            let n = self.lengths.len();
            let len = self.key_bias.len() / n.max(1);
            let head_dim = self.cos.len() / len.max(1);
            let table = |v: &[f32]| {
                Tensor::<B, 4>::from_data(
                    TensorData::new(v.to_vec(), [1, len, 1, head_dim]),
                    &self.device,
                )
            };
            let any_padding = self.key_bias.iter().any(|&b| b != 0.0);
            RotaryTensors {
                // Broadcast over heads and queries by the addition itself.
                key_bias: any_padding.then(|| {
                    Tensor::<B, 4>::from_data(
                        TensorData::new(self.key_bias.clone(), [n, 1, 1, len]),
                        (&self.device, DType::F32),
                    )
                }),
                cos: table(&self.cos),
                sin_signed: table(&self.sin_signed),
            }
        })
    }
}

/// [`ModelOps::rotary_attention`](super::ops::ModelOps::rotary_attention) on Burn's ops, `[b, l, 3·dim]` → `[b, l, dim]` (the GPU
/// backends, and the CPU for dtypes its kernel does not cover).
pub fn rotary_attention_composed<B: Backend>(
    qkv: Tensor<B, 3>,
    batch: &RotaryBatch<B>,
) -> Tensor<B, 3> {
    let heads = batch.heads;
    let tables = batch.tensors();
    let [n, len, three_dim] = qkv.dims();
    let dim = three_dim / 3;
    let head_dim = dim / heads;
    // [b, l, 3H, hd] is a free view of the fused projection: q heads, k heads, v heads.
    let qkv = qkv.reshape([n, len, 3 * heads, head_dim]);
    // Rotary on q and k together. fair-esm scales q by head_dim^-0.5 before the rotation;
    // the rotation is linear, so scaling q after it is the same.
    let qk = qkv.clone().slice_dim(2, 0..2 * heads);
    let swapped = qk
        .clone()
        .reshape([n, len, 2 * heads, 2, head_dim / 2])
        .flip([3])
        .reshape([n, len, 2 * heads, head_dim]);
    let qk = qk * tables.cos.clone() + swapped * tables.sin_signed.clone();

    let scale = (head_dim as f64).powf(-0.5);
    let q = qk.clone().slice_dim(2, 0..heads).swap_dims(1, 2) * scale;
    let k = qk.slice_dim(2, heads..2 * heads).swap_dims(1, 2);
    let v = qkv.slice_dim(2, 2 * heads..3 * heads).swap_dims(1, 2);
    let context = attention(q, k, v, tables.key_bias.clone(), None);
    context.swap_dims(1, 2).reshape([n, len, dim])
}

/// One forward's attention inputs, shared by all layers: what the CPU kernel reads on the host,
/// and the bias tensor the composition adds, built on the device on first use only (a backend
/// with its own kernel never needs it).
pub struct AlibiBatch<B: Backend> {
    pub(crate) heads: usize,
    /// ALiBi slopes negated, f32.
    pub(crate) neg_slopes: Vec<f32>,
    /// Per sequence, its token count.
    pub(crate) lengths: Vec<usize>,
    /// `[batch, len]` additive key bias: 0 for real tokens, `-inf` for padding (the attention
    /// weight of a padded key is then exactly 0, as if the sequence ran alone).
    pub(crate) key_bias: Vec<f32>,
    pub(super) device: B::Device,
    /// ALiBi plus `-inf` on padded keys, `[1 or batch, heads, len, len]`.
    pub(super) bias: OnceCell<Tensor<B, 4>>,
}

impl<B: Backend> AlibiBatch<B> {
    /// One `[1, heads, len, len]` ALiBi table per forward, for this batch's length (the
    /// original extrapolates past 512 by rebuilding its table the same way). Without padding
    /// it broadcasts over the batch; with padding the key bias is folded in once here rather
    /// than masked again in every layer.
    fn bias(&self) -> &Tensor<B, 4> {
        self.bias.get_or_init(|| {
            let n = self.lengths.len();
            let len = self.key_bias.len() / n.max(1);
            let bias = alibi_bias::<B>(&self.neg_slopes, len, &self.device);
            if self.lengths.iter().any(|&l| l < len) {
                let keys = Tensor::<B, 4>::from_data(
                    TensorData::new(self.key_bias.clone(), [n, 1, 1, len]),
                    (&self.device, DType::F32),
                );
                bias + keys
            } else {
                bias
            }
        })
    }
}

/// [`ModelOps::alibi_attention`](super::ops::ModelOps::alibi_attention) on Burn's ops, `[b, l, 3·dim]` → `[b, l, dim]` (the GPU
/// backends, and the CPU for dtypes its kernel does not cover).
pub fn alibi_attention_composed<B: Backend>(
    qkv: Tensor<B, 3>,
    batch: &AlibiBatch<B>,
) -> Tensor<B, 3> {
    let heads = batch.heads;
    let [n, len, three_dim] = qkv.dims();
    let dim = three_dim / 3;
    let head_dim = dim / heads;

    // `(t h d)` order, as the original's rearrange: q heads, k heads, v heads.
    let qkv = qkv.reshape([n, len, 3 * heads, head_dim]).swap_dims(1, 2);
    let q = qkv.clone().slice_dim(1, 0..heads);
    let k = qkv.clone().slice_dim(1, heads..2 * heads);
    let v = qkv.slice_dim(1, 2 * heads..3 * heads);
    // softmax(q·kᵀ / sqrt(head_dim) + bias)·v, scaled after the matmul as the original.
    let scale = (head_dim as f64).powf(-0.5);
    let ctx = attention(q, k, v, Some(batch.bias().clone()), Some(scale));
    ctx.swap_dims(1, 2).reshape([n, len, dim])
}

/// `[1, heads, len, len]` with `-slope_h·|q - k|` in f32 whatever the model's dtype, built on the
/// device (a long sequence's table never crosses the bus). The product is the same f32 one as
/// the original's.
fn alibi_bias<B: Backend>(neg_slopes: &[f32], len: usize, device: &B::Device) -> Tensor<B, 4> {
    let heads = neg_slopes.len();
    let pos = Tensor::<B, 1, Int>::arange(0..len as i64, device);
    let dist = (pos.clone().reshape([len, 1]) - pos.reshape([1, len]))
        .abs()
        .cast(FloatDType::F32)
        .reshape([1, 1, len, len]);
    let slopes = Tensor::<B, 4>::from_data(
        TensorData::new(neg_slopes.to_vec(), [1, heads, 1, 1]),
        (device, DType::F32),
    );
    dist * slopes
}
