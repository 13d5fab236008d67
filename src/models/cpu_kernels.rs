//! Fused kernels for the CPU backend (Burn's Flex), where the profile of ESM-2 showed the matrix
//! products were only a third of the time: the rest went to strided copies (the rotary halves
//! swap, q/k/v as transposed views, the head-expanded mask), a softmax over padded keys and a
//! scalar `erf` per GELU element. Here attention runs per (sequence, head) over the sequence's
//! own keys only, reading q/k/v straight out of the fused projection and writing the context
//! straight into `[batch, len, dim]`; GELU uses a branch-free rational `erf` the compiler
//! vectorises; a projection's bias and the residual it feeds are added by its GEMM
//! ([`linear`]). The norms stay on Burn's (already vectorised) kernel.
//!
//! The models reach these through the backend: this file implements [`ModelOps`] for Flex,
//! whose tensors *are* host buffers, so the kernels read them with no conversion; every other
//! backend keeps the trait's default, the generic composition (`models/ops.rs`). Results equal
//! the generic path to f32 rounding (tests below), and a sequence's rows depend only on that
//! sequence, so a batch gives what each sequence alone gives.

use std::sync::Arc;

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

use super::composed::{self, AlibiBatch, RotaryBatch};
use super::ops::{DenseWeight, Matmul, ModelOps};
use super::reduced;

/// Runs `$f($args)` compiled for the widest vector unit this CPU has (AVX-512F, AVX2, or the
/// x86-64 / other-target baseline): `$f` is `#[inline(always)]` plain Rust whose loops the
/// compiler vectorises for the features of the function it is inlined into. The arithmetic is
/// the same in every version (no FMA contraction, reductions in fixed 16-lane order), so
/// results do not depend on the CPU.
macro_rules! widest_simd {
    ($f:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512(f: impl FnOnce()) { f() }
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(f: impl FnOnce()) { f() }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked just above).
                unsafe { avx512(#[inline(always)] || $f($($arg),*)) }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                unsafe { avx2(#[inline(always)] || $f($($arg),*)) }
            } else {
                $f($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $f($($arg),*)
        }
    }};
}

/// The CPU backend runs the encoders' hot operations on the fused kernels of this file. Each
/// takes the fused path only for f32 tensors (the kernels are f32 code) and otherwise runs the
/// generic composition every other backend runs, so an f16 model on the CPU still works.
impl ModelOps for Flex {
    fn dense(
        x: Tensor<Self, 3>,
        weight: DenseWeight<Self>,
        bias: Option<Tensor<Self, 1>>,
        residual: Option<Tensor<Self, 3>>,
        gelu: bool,
        matmul: Matmul,
    ) -> Tensor<Self, 3> {
        // GELU after a residual is not a composition any model here uses; bf16 and int8
        // products run on the reduced-precision kernels (AMX, VNNI) from a packed weight (a CPU
        // without them never gets one: the composition below covers tests that ask for reduced
        // products there anyway).
        let fused = (!(gelu && residual.is_some()))
            .then(|| {
                let (inp, out, product) = match &weight {
                    DenseWeight::Tensor(w) if matmul == Matmul::F32 => {
                        let [inp, out] = w.dims();
                        (inp, out, Product::F32(view_f32(w.clone())?))
                    }
                    DenseWeight::Tiles(tiles) if reduced::available(tiles.matmul()) => {
                        let (inp, out) = tiles.shape();
                        (inp, out, Product::Tiles(Arc::clone(tiles)))
                    }
                    _ => return None,
                };
                Some(FusedDense {
                    inp,
                    out,
                    product,
                    bias: match &bias {
                        Some(b) => Some(view_f32(b.clone())?),
                        None => None,
                    },
                    residual: match &residual {
                        Some(r) => Some(contiguous_f32(r.clone()).ok()?),
                        None => None,
                    },
                })
            })
            .flatten();
        let x = match fused {
            Some(fused) => match fused.forward(x, gelu) {
                Ok(y) => return y,
                Err(x) => x,
            },
            None => x,
        };
        let (x, weight) = weight.operands(x, matmul);
        composed::dense_composed(
            x,
            weight,
            bias,
            residual,
            gelu.then_some(Self::exact_gelu::<3>),
        )
    }

    fn layer_norm(
        x: Tensor<Self, 3>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, 3> {
        let params = view_f32(gamma.clone()).zip(view_f32(beta.clone()));
        let (Some((g, b)), Ok(flex)) = (params, contiguous_f32(x.clone())) else {
            return composed::layer_norm_composed(x, gamma, beta, eps);
        };
        let [batch, len, dim] = x.dims();
        if values(&g).len() != dim || values(&b).len() != dim {
            return composed::layer_norm_composed(x, gamma, beta, eps);
        }
        let x = values(&flex);
        let mut out = Vec::with_capacity(x.len());
        widest_simd!(layer_norm_rows(
            x,
            &mut out,
            values(&g),
            values(&b),
            eps as f32
        ));
        tensor(out, [batch, len, dim])
    }

    fn exact_gelu<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        match contiguous_f32(x) {
            Ok(flex) => {
                let shape: [usize; D] = flex.layout().shape().to_vec().try_into().expect("rank D");
                let mut values = values(&flex).to_vec();
                gelu_in_place(&mut values);
                tensor(values, shape)
            }
            Err(x) => burn::tensor::activation::gelu(x),
        }
    }

    fn rotary_attention(qkv: Tensor<Self, 3>, batch: &RotaryBatch<Self>) -> Tensor<Self, 3> {
        let positions = Positions::Rotary {
            cos: &batch.cos,
            sin_signed: &batch.sin_signed,
        };
        fused_attention(qkv, batch.heads, positions, &batch.lengths, &batch.key_bias)
            .unwrap_or_else(|qkv| composed::rotary_attention_composed(qkv, batch))
    }

    fn alibi_attention(qkv: Tensor<Self, 3>, batch: &AlibiBatch<Self>) -> Tensor<Self, 3> {
        let positions = Positions::Alibi {
            neg_slopes: &batch.neg_slopes,
        };
        fused_attention(qkv, batch.heads, positions, &batch.lengths, &batch.key_bias)
            .unwrap_or_else(|qkv| composed::alibi_attention_composed(qkv, batch))
    }
}

/// What a projection multiplies by: the f32 weight as loaded (contiguous), or its bf16 or
/// int8 tiles.
enum Product {
    F32(FlexTensor),
    Tiles(Arc<reduced::PackedWeight>),
}

/// A projection's operands as host values, ready for [`linear`]: the weight and bias as
/// loaded, the residual made contiguous.
struct FusedDense {
    /// The weight's `[inp, out]`.
    inp: usize,
    out: usize,
    product: Product,
    bias: Option<FlexTensor>,
    residual: Option<FlexTensor>,
}

impl FusedDense {
    /// `x·w + bias + residual`, GELU'd when `gelu`; `Err(x)` when `x` is not f32 or its width
    /// is not the weight's input width (the generic path then fails on the mismatch as Burn
    /// does).
    fn forward(&self, x: Tensor<Flex, 3>, gelu: bool) -> Result<Tensor<Flex, 3>, Tensor<Flex, 3>> {
        let [batch, len, inp] = x.dims();
        if self.inp != inp {
            return Err(x);
        }
        let x = contiguous_f32(x)?;
        let (bias, residual) = (
            self.bias.as_ref().map(values),
            self.residual.as_ref().map(values),
        );
        // The feed-forward's first projection in f32: its bias added in GELU's pass over the
        // product, so the product is written once into a fresh buffer, where starting it from
        // the bias cost a pass (ESM-2 8M f32: 2% of the run in the copies). The reduced kernels
        // add into their output, so theirs starts from the bias.
        let bias_in_gelu = match &self.product {
            Product::F32(_) => bias.filter(|_| gelu && residual.is_none()),
            Product::Tiles(_) => None,
        };
        let mut y = match &self.product {
            Product::F32(w) => {
                let bias = bias.filter(|_| bias_in_gelu.is_none());
                linear(values(&x), values(w), inp, bias, residual)
            }
            Product::Tiles(w) => linear_tiles(values(&x), w, bias, residual),
        };
        match bias_in_gelu {
            Some(b) => bias_gelu_in_place(&mut y, b),
            None if gelu => gelu_in_place(&mut y),
            None => {}
        }
        Ok(tensor(y, [batch, len, self.out]))
    }
}

/// Either encoder's attention through [`FusedAttention`], from the fused projection `qkv`
/// `[batch, len, 3·dim]` to the context `[batch, len, dim]`; `qkv` back when it is not f32 (the
/// caller then takes the composition).
fn fused_attention(
    qkv: Tensor<Flex, 3>,
    heads: usize,
    positions: Positions<'_>,
    lengths: &[usize],
    key_bias: &[f32],
) -> Result<Tensor<Flex, 3>, Tensor<Flex, 3>> {
    let [n, len, three_dim] = qkv.dims();
    let flex = contiguous_f32(qkv)?;
    let dim = three_dim / 3;
    let context = FusedAttention {
        heads,
        head_dim: dim / heads,
        positions,
        lengths,
        key_bias,
    }
    .forward(values(&flex), n, len);
    Ok(tensor(context, [n, len, dim]))
}

/// `t`'s f32 values as one contiguous Flex tensor (a strided view is copied); `Err(t)` for
/// another dtype, which the fused kernels do not compute in.
fn contiguous_f32<const D: usize>(t: Tensor<Flex, D>) -> Result<FlexTensor, Tensor<Flex, D>> {
    if t.dtype() != DType::F32 {
        return Err(t);
    }
    match t.into_primitive() {
        TensorPrimitive::Float(flex) => Ok(
            if flex.is_contiguous() && flex.layout().start_offset() == 0 {
                flex
            } else {
                flex.to_contiguous()
            },
        ),
        q => Err(Tensor::from_primitive(q)),
    }
}

/// `t` as a Flex tensor without a copy: `None` for another dtype or a strided view (weights are
/// uploaded contiguous; a view would cost a copy on every call, so its caller takes the generic
/// path instead).
fn view_f32<const D: usize>(t: Tensor<Flex, D>) -> Option<FlexTensor> {
    if t.dtype() != DType::F32 {
        return None;
    }
    match t.into_primitive() {
        TensorPrimitive::Float(flex) => {
            (flex.is_contiguous() && flex.layout().start_offset() == 0).then_some(flex)
        }
        TensorPrimitive::QFloat(_) => None,
    }
}

/// A kernel's f32 output as a tensor.
fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<Flex, D> {
    let flex = FlexTensor::from_data(TensorData::new(values, shape));
    Tensor::from_primitive(TensorPrimitive::Float(flex))
}

/// `x·w + bias + residual` for `x` `[rows, inp]` and `w` `[inp, out]` (row-major, as `Dense`
/// keeps it), `bias` `[out]`, `residual` `[rows, out]`: one GEMM accumulating into a buffer
/// that starts as `residual + bias`, where Burn's ops make three passes over the output (the
/// product, the bias, the residual). The sum is `(residual + bias) + x·w` instead of
/// `(x·w + bias) + residual`: equal up to the rounding of one addition.
pub fn linear(
    x: &[f32],
    w: &[f32],
    inp: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    assert!(
        inp > 0 && x.len().is_multiple_of(inp) && w.len().is_multiple_of(inp),
        "linear shapes"
    );
    let (rows, out) = (x.len() / inp, w.len() / inp);
    let read_dst = bias.is_some() || residual.is_some();
    // Without bias or residual the GEMM writes every element without reading any: the buffer
    // is left unwritten until then (zeroing it first cost a pass over the output).
    let mut dst = if read_dst {
        started_output(rows, out, bias, residual)
    } else {
        fresh_output(rows * out)
    };
    if rows == 0 || out == 0 {
        return dst;
    }
    // SAFETY: dst is rows×out (row stride out), x rows×inp (row stride inp), w inp×out (row
    // stride out), all contiguous and checked above.
    unsafe {
        gemm::gemm(
            rows,
            out,
            inp,
            dst.as_mut_ptr(),
            1,
            out as isize,
            read_dst,
            x.as_ptr(),
            1,
            inp as isize,
            w.as_ptr(),
            1,
            out as isize,
            if read_dst { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
        if !read_dst {
            // SAFETY: the GEMM (read_dst false) wrote all rows × out elements of the capacity.
            dst.set_len(rows * out);
        }
    }
    dst
}

/// [`linear`] with the product in the packed weight's arithmetic on the CPU's reduced-precision
/// kernels ([`reduced::PackedWeight::gemm_add`]): the same buffer that starts as `residual +
/// bias`, the product added into it.
pub fn linear_tiles(
    x: &[f32],
    w: &reduced::PackedWeight,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (inp, out) = w.shape();
    assert!(x.len().is_multiple_of(inp), "linear shapes");
    let rows = x.len() / inp;
    let mut dst = started_output(rows, out, bias, residual);
    w.gemm_add(&mut dst, x, rows);
    dst
}

/// A projection's `[rows, out]` output buffer before its product: `residual + bias` (either
/// may be absent, then zeros), their shapes checked.
fn started_output(
    rows: usize,
    out: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    assert!(bias.is_none_or(|b| b.len() == out), "bias shape");
    assert!(
        residual.is_none_or(|r| r.len() == rows * out),
        "residual shape"
    );
    // Written once, not zeroed first: the zeroing cost as much as the copy (3% of a 35M
    // forward).
    let mut dst = fresh_output(rows * out);
    if rows > 0 && out > 0 {
        widest_simd!(start_rows(&mut dst, rows, out, bias, residual));
    }
    dst
}

/// An empty buffer with room for a projection's `len` outputs, on huge pages where it is large.
fn fresh_output(len: usize) -> Vec<f32> {
    let mut dst = Vec::with_capacity(len);
    crate::weights::host::advise_huge_capacity(&mut dst);
    dst
}

/// The GEMM's threads: the calling rayon pool's (an embedding worker's pool has one).
fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `rows` rows of `residual + bias` (either may be absent, then zeros) appended to `dst`.
#[inline(always)]
fn start_rows(
    dst: &mut Vec<f32>,
    rows: usize,
    out: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) {
    match (bias, residual) {
        (Some(b), Some(r)) => {
            for r in r.chunks_exact(out) {
                dst.extend(r.iter().zip(b).map(|(r, b)| r + b));
            }
        }
        (Some(b), None) => {
            for _ in 0..rows {
                dst.extend_from_slice(b);
            }
        }
        (None, Some(r)) => dst.extend_from_slice(r),
        (None, None) => dst.resize(rows * out, 0.0),
    }
}

/// The f32 values of a tensor [`contiguous_f32`] or [`view_f32`] returned (contiguous by
/// construction).
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("contiguous_f32 and view_f32 return contiguous f32 tensors")
}

/// Exact (erf) GELU, `x·½·(1 + erf(x/√2))`, as PyTorch's `gelu` without approximation.
pub fn gelu_in_place(x: &mut [f32]) {
    widest_simd!(gelu_slice(x))
}

#[inline(always)]
fn gelu_slice(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu(*v);
    }
}

/// Each row of `x` (rows of `bias.len()`) plus `bias`, through the exact GELU, in place.
pub fn bias_gelu_in_place(x: &mut [f32], bias: &[f32]) {
    assert!(
        !bias.is_empty() && x.len().is_multiple_of(bias.len()),
        "bias shape"
    );
    widest_simd!(bias_gelu_rows(x, bias))
}

#[inline(always)]
fn bias_gelu_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = gelu(*v + b);
        }
    }
}

#[inline(always)]
fn gelu(v: f32) -> f32 {
    v * 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf` in f32 as a rational function of x² on [-4, 4] (constant beyond, where erf is within
/// 1.6e-8 of ±1): no branches and no table, so loops over it vectorise. Largest absolute
/// error against an f64 `erf`: 4.5e-7 (tested below), the class of PyTorch's own vectorised
/// CPU `erf` (Abramowitz–Stegun 7.1.26, ~1e-7); libm's scalar `erff` was 9% of ESM-2's time.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_2e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// How an encoder puts positions into its attention.
pub enum Positions<'a> {
    /// ESM-2: q and k rotated by the `[len, head_dim]` tables (`sin` with its first half
    /// negated), q scaled by `head_dim^-0.5` after its rotation, as the generic path does.
    Rotary {
        cos: &'a [f32],
        sin_signed: &'a [f32],
    },
    /// DNABERT-S: the product scaled by `head_dim^-0.5`, then ALiBi's `neg_slope_h·|i − j|`
    /// (the f32 product the original's table holds) added.
    Alibi { neg_slopes: &'a [f32] },
}

/// Self-attention over one batch, fused. `qkv` is the fused projection `[n, len, 3·dim]`
/// (q heads, k heads, v heads, as both encoders lay it out); [`Self::forward`] returns the
/// context `[n, len, dim]`.
pub struct FusedAttention<'a> {
    pub heads: usize,
    pub head_dim: usize,
    pub positions: Positions<'a>,
    /// Per sequence, its token count (keys and queries beyond it are padding).
    pub lengths: &'a [usize],
    /// `[n, len]` additive key bias: 0, or `-inf` for a key never attended to (ESM-2's
    /// padding tokens); positions beyond a sequence's length are never read.
    pub key_bias: &'a [f32],
}

impl FusedAttention<'_> {
    pub fn forward(&self, qkv: &[f32], n: usize, len: usize) -> Vec<f32> {
        let (heads, hd) = (self.heads, self.head_dim);
        let dim = heads * hd;
        let row = 3 * dim;
        assert_eq!(qkv.len(), n * len * row, "qkv shape");
        assert_eq!(self.key_bias.len(), n * len, "key bias shape");
        let scale = (hd as f64).powf(-0.5) as f32;
        // Padded query rows stay 0: nothing pools them, and zeros keep later layers finite.
        let mut out = vec![0f32; n * len * dim];
        let rotary = matches!(self.positions, Positions::Rotary { .. });
        let (mut q, mut k) = if rotary {
            (vec![0f32; len * hd], vec![0f32; len * hd])
        } else {
            (Vec::new(), Vec::new())
        };
        let mut scores = vec![0f32; len * len];
        let mut inverse_sums = vec![0f32; len];
        for b in 0..n {
            let m = self.lengths[b].min(len);
            if m == 0 {
                continue;
            }
            let base = b * len * row;
            let bias = &self.key_bias[b * len..b * len + m];
            for h in 0..heads {
                // q rows (stride q_rs) and k rows (stride k_rs): rotated copies, or in place.
                let (q_ptr, q_rs, k_ptr, k_rs) = match self.positions {
                    Positions::Rotary { cos, sin_signed } => {
                        let tables = (cos, sin_signed);
                        rotate(&qkv[base..], h * hd, row, m, hd, tables, scale, &mut q);
                        rotate(&qkv[base..], dim + h * hd, row, m, hd, tables, 1.0, &mut k);
                        (q.as_ptr(), hd, k.as_ptr(), hd)
                    }
                    Positions::Alibi { .. } => (
                        qkv[base + h * hd..].as_ptr(),
                        row,
                        qkv[base + dim + h * hd..].as_ptr(),
                        row,
                    ),
                };
                // scores[i, j] = q_i · k_j (k read transposed where it lies). SAFETY: every
                // row read is one of the sequence's first m, inside `qkv` or the buffers
                // (lengths are clamped to len); `scores` holds m·m.
                unsafe {
                    gemm::gemm(
                        m,
                        m,
                        hd,
                        scores.as_mut_ptr(),
                        1,
                        m as isize,
                        false,
                        q_ptr,
                        1,
                        q_rs as isize,
                        k_ptr,
                        k_rs as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                let alibi = match self.positions {
                    Positions::Alibi { neg_slopes } => Some((neg_slopes[h], scale)),
                    Positions::Rotary { .. } => None,
                };
                let inv = &mut inverse_sums[..m];
                softmax_rows(&mut scores[..m * m], m, bias, alibi, inv);
                // context[i, h] = (Σ_j e[i, j] · v_j) / Σ_j e[i, j], v read in place, written
                // in place, each row divided (by the factor `inv` holds) after its product.
                // SAFETY: as above; the output rows are the sequence's first m, head h.
                unsafe {
                    gemm::gemm(
                        m,
                        hd,
                        m,
                        out.as_mut_ptr().add(b * len * dim + h * hd),
                        1,
                        dim as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        m as isize,
                        qkv.as_ptr().add(base + 2 * dim + h * hd),
                        1,
                        row as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for (i, &inv) in inv.iter().enumerate() {
                    let at = b * len * dim + i * dim + h * hd;
                    for c in &mut out[at..at + hd] {
                        *c *= inv;
                    }
                }
            }
        }
        out
    }
}

/// Rows `0..m` of the head at column `col` of `x` (row stride `row`), rotated and scaled,
/// into `dst` `[m, hd]`: `(x·cos + swap_halves(x)·sin_signed)·scale`, the generic path's
/// operations in its order.
#[allow(clippy::too_many_arguments)]
fn rotate(
    x: &[f32],
    col: usize,
    row: usize,
    m: usize,
    hd: usize,
    (cos, sin): (&[f32], &[f32]),
    scale: f32,
    dst: &mut [f32],
) {
    let half = hd / 2;
    for i in 0..m {
        let src = &x[i * row + col..i * row + col + hd];
        let (c, s) = (&cos[i * hd..(i + 1) * hd], &sin[i * hd..(i + 1) * hd]);
        let d = &mut dst[i * hd..(i + 1) * hd];
        for j in 0..half {
            d[j] = (src[j] * c[j] + src[j + half] * s[j]) * scale;
            d[j + half] = (src[j + half] * c[j + half] + src[j] * s[j + half]) * scale;
        }
    }
}

/// In place, each of the `m` rows of `scores` (`m × m`): with ALiBi `(slope, scale)`,
/// `s·scale + slope·|i − j|` first; then `softmax(s + bias)` in f32, but for its division:
/// each row is left as `e^(s + bias − max)` and `inv` gets `1 / Σ` of it (0 for a row whose
/// keys are all masked, left at 0). The caller scales the row's product with v instead, a
/// pass over `m × head_dim` values in place of one over the `m × m` scores (ESM-2 8M's
/// head_dim is 16: the division was a fifth of softmax's time).
fn softmax_rows(
    scores: &mut [f32],
    m: usize,
    bias: &[f32],
    alibi: Option<(f32, f32)>,
    inv: &mut [f32],
) {
    widest_simd!(softmax_rows_impl(scores, m, bias, alibi, inv))
}

const LANES: usize = 16;

#[inline(always)]
fn softmax_rows_impl(
    scores: &mut [f32],
    m: usize,
    bias: &[f32],
    alibi: Option<(f32, f32)>,
    inv: &mut [f32],
) {
    // A sequence's own keys are all real tokens but where a model masks some: the bias is then
    // all zeros, and adding it (x + 0 = x, but for -0, which neither the max nor e^(x − max)
    // tells from +0) would be a pass over every row for nothing.
    let bias = &bias[..m];
    let biased = bias.iter().any(|&b| b != 0.0);
    for ((i, row), inv) in scores.chunks_exact_mut(m).enumerate().zip(inv) {
        if let Some((slope, scale)) = alibi {
            for (j, s) in row.iter_mut().enumerate() {
                *s = *s * scale + i.abs_diff(j) as f32 * slope;
            }
        }
        // The bias is added in a pass of its own: fused into the max's loop, the compiler
        // kept both scalar (16 scalar adds, stores and maxes a chunk: a third of softmax's
        // time at ESM-2 8M), where apart each is one vector instruction a chunk.
        if biased {
            for (s, b) in row.iter_mut().zip(bias) {
                *s += b;
            }
        }
        // Max and sums over 16 lanes, then across them in a fixed tree ([`across`]): the same
        // order on every CPU. The last partial chunk goes through a 16-wide copy padded with
        // -inf (which changes neither the max nor, as e^-inf = 0, the sums): the same lanes
        // and arithmetic as element by element, but vector code, where the scalar tail cost
        // nearly as much as the rest of the row.
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let (chunks, rest) = row.as_chunks_mut::<LANES>();
        for c in chunks.iter() {
            lanes_max(&mut lanes, c);
        }
        let mut tail = [f32::NEG_INFINITY; LANES];
        for (t, &v) in tail.iter_mut().zip(rest.iter()) {
            *t = v;
        }
        lanes_max(&mut lanes, &tail);
        let max = across(lanes, f32::max);
        if max == f32::NEG_INFINITY {
            // Every key masked: no real sequence has no real token, but stay finite.
            row.fill(0.0);
            *inv = 0.0;
            continue;
        }
        let mut sums = [0f32; LANES];
        let (chunks, rest) = row.as_chunks_mut::<LANES>();
        for c in chunks {
            lanes_exp(c, max, &mut sums);
        }
        lanes_exp(&mut tail, max, &mut sums);
        for (s, &t) in rest.iter_mut().zip(tail.iter()) {
            *s = t;
        }
        *inv = 1.0 / across(sums, |a, b| a + b);
    }
}

/// The 16 lanes combined pairwise, halves first (lane l with l + 8, then + 4, + 2, + 1): a
/// fixed order, so the same result on every CPU, and 4 dependent steps of vector shuffles
/// where a left-to-right fold was 16 dependent scalar ones (at ESM-2 8M's ~170 keys a row,
/// the folds' latency cost as much as a third of the row's arithmetic).
#[inline(always)]
fn across(mut lanes: [f32; LANES], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            lanes[l] = f(lanes[l], lanes[l + width]);
        }
        width /= 2;
    }
    lanes[0]
}

/// `lanes[l] = max(lanes[l], c[l])`, as `if >` rather than `f32::max`: the same for scores
/// (never NaN), and it compiles to one vector max, where `max`'s NaN rule kept it scalar.
#[inline(always)]
fn lanes_max(lanes: &mut [f32; LANES], c: &[f32; LANES]) {
    for l in 0..LANES {
        lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
    }
}

/// `c[l] = e^(c[l] − max)`, added to `sums[l]`.
#[inline(always)]
fn lanes_exp(c: &mut [f32; LANES], max: f32, sums: &mut [f32; LANES]) {
    for l in 0..LANES {
        c[l] = exp(c[l] - max);
        sums[l] += c[l];
    }
}

/// Each row of `x` (rows of `gamma.len()`) normalised, `(x − mean)/√(var + eps)·gamma + beta`,
/// appended to `out`: mean and variance in two passes over the row (as Burn's kernel and
/// PyTorch's) with 16-lane sums added in a fixed order ([`across`]). Burn's own kernel spends
/// more on its per-call thread fan-out and zeroed output than on the arithmetic at these
/// widths; writing the result straight into a fresh buffer, where a copy of `x` was normalised
/// in place, saves a pass over the residual stream per norm.
#[inline(always)]
fn layer_norm_rows(x: &[f32], out: &mut Vec<f32>, gamma: &[f32], beta: &[f32], eps: f32) {
    let d = gamma.len();
    #[inline(always)]
    fn lanes_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
        let mut lanes = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                lanes[l] += f(c[l]);
            }
        }
        for (l, &v) in chunks.remainder().iter().enumerate() {
            lanes[l] += f(v);
        }
        across(lanes, |a, b| a + b)
    }
    for row in x.chunks_exact(d) {
        let mean = lanes_sum(row, |v| v) / d as f32;
        let var = lanes_sum(row, |v| (v - mean) * (v - mean)) / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        out.extend(
            row.iter()
                .zip(gamma)
                .zip(beta)
                .map(|((v, g), b)| (v - mean) * inv * g + b),
        );
    }
}

/// `e^x` in f32 for `x <= 0` (softmax's shifted scores), branch-free so loops over it
/// vectorise: `2^n·p(r)` with `n = round(x·log2 e)`, `r = x − n·ln 2` in two parts and Cephes'
/// degree-6 polynomial for `e^r`; within 2 ulp of the exact value (tested below). Below
/// `-87.3` (where `e^x` leaves f32's normal range), and at `-inf` (a masked key), exactly 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer without `round`
    // (which the baseline x86-64 target would call out of line).
    const ROUND: f32 = 12_582_912.0;
    let under = x < -87.336_55;
    let x = x.clamp(-87.336_55, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    // 2^n from the bits of `shifted`, whose low mantissa bits hold n (two's complement, offset
    // by ROUND's 0x4B40_0000): shifting by 23 drops the offset and leaves (n + 127) << 23, the
    // exponent field. The same value as `(n as i32 + 127) << 23` for the clamped range
    // (-126 ≤ n ≤ 127), but integer lane operations only: Rust's saturating `as i32` made
    // the compiler convert each lane with scalar instructions.
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    if under {
        0.0
    } else {
        y * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn erf_is_within_5e_7_of_f64() {
        let mut worst = 0f64;
        for i in -600_000..=600_000 {
            let x = i as f32 * 1e-5;
            let exact = libm::erf(x as f64);
            worst = worst.max((erf(x) as f64 - exact).abs());
        }
        assert!(worst < 5e-7, "max error {worst}");
        // Saturated beyond 4 (erf(4) = 1 - 1.5e-8), odd, and finite at the extremes.
        assert_eq!(erf(9.0), erf(4.0));
        assert_eq!(erf(-f32::MAX), -erf(f32::MAX));
        assert!((erf(f32::MAX) - 1.0).abs() < 2e-7);
        assert_eq!(erf(0.0), 0.0);
    }

    #[test]
    fn exp_is_within_2_ulp_and_exactly_0_for_masked_keys() {
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -87.0 * i as f32 / 2_000_000.0;
            let exact = (x as f64).exp();
            worst = worst.max((exp(x) as f64 - exact).abs() / exact);
        }
        assert!(
            worst < 2.0 * f32::EPSILON as f64,
            "max relative error {worst:e}"
        );
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
    }

    /// A deterministic value in [-2, 2).
    fn noise(i: usize) -> f32 {
        let x = (i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
    }

    /// Rotary tables as `esm2::rotary_tables` lays them out, computed here in f64.
    fn tables(len: usize, hd: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut cos, mut sin) = (vec![0f32; len * hd], vec![0f32; len * hd]);
        for p in 0..len {
            for j in 0..hd {
                let angle = p as f64 / 10000f64.powf((2 * (j % (hd / 2))) as f64 / hd as f64);
                cos[p * hd + j] = angle.cos() as f32;
                let s = angle.sin() as f32;
                sin[p * hd + j] = if j < hd / 2 { -s } else { s };
            }
        }
        (cos, sin)
    }

    /// The attention of one padded batch at the real models' head sizes (32 for ESM-2
    /// 8M–650M, 64 for ESM-2 3B and DNABERT-S), rotary and ALiBi, against a plain f64
    /// evaluation of the same formula, sequence by sequence.
    #[test]
    fn fused_attention_matches_a_plain_evaluation() {
        // Head dims of ESM-2 8M (16), 35M (24), 150M (32), 650M/3B (64) and DNABERT-S (64).
        for (heads, hd, alibi) in [
            (3usize, 32usize, false),
            (2, 64, false),
            (3, 64, true),
            (4, 16, false),
            (2, 24, true),
        ] {
            let dim = heads * hd;
            let lengths = [37usize, 64, 1, 50];
            let (n, len) = (lengths.len(), 64);
            let qkv: Vec<f32> = (0..n * len * 3 * dim).map(noise).collect();
            let (cos, sin) = tables(len, hd);
            let neg_slopes: Vec<f32> = (0..heads).map(|h| -0.5f32.powi(h as i32 + 1)).collect();
            let mut key_bias = vec![f32::NEG_INFINITY; n * len];
            for (b, &m) in lengths.iter().enumerate() {
                key_bias[b * len..b * len + m].fill(0.0);
            }
            key_bias[len + 5] = f32::NEG_INFINITY; // a masked key inside sequence 1
            let positions = if alibi {
                Positions::Alibi {
                    neg_slopes: &neg_slopes,
                }
            } else {
                Positions::Rotary {
                    cos: &cos,
                    sin_signed: &sin,
                }
            };
            let out = FusedAttention {
                heads,
                head_dim: hd,
                positions,
                lengths: &lengths,
                key_bias: &key_bias,
            }
            .forward(&qkv, n, len);

            let at = |b: usize, i: usize, c: usize| qkv[(b * len + i) * 3 * dim + c] as f64;
            let pos = |b: usize, i: usize, c0: usize, j: usize| {
                if alibi {
                    return at(b, i, c0 + j);
                }
                let partner = if j < hd / 2 { j + hd / 2 } else { j - hd / 2 };
                at(b, i, c0 + j) * cos[i * hd + j] as f64
                    + at(b, i, c0 + partner) * sin[i * hd + j] as f64
            };
            let mut worst = 0f64;
            for (b, &m) in lengths.iter().enumerate() {
                for h in 0..heads {
                    for i in 0..len {
                        let got = &out[(b * len + i) * dim + h * hd..][..hd];
                        if i >= m {
                            assert!(got.iter().all(|&v| v == 0.0), "padded rows are zero");
                            continue;
                        }
                        let s: Vec<f64> = (0..m)
                            .map(|j| {
                                let dot: f64 = (0..hd)
                                    .map(|d| pos(b, i, h * hd, d) * pos(b, j, dim + h * hd, d))
                                    .sum();
                                let alibi_bias = if alibi {
                                    neg_slopes[h] as f64 * i.abs_diff(j) as f64
                                } else {
                                    0.0
                                };
                                dot / (hd as f64).sqrt() + alibi_bias + key_bias[b * len + j] as f64
                            })
                            .collect();
                        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                        let total: f64 = e.iter().sum();
                        for d in 0..hd {
                            let want: f64 = (0..m)
                                .map(|j| e[j] / total * at(b, j, 2 * dim + h * hd + d))
                                .sum();
                            worst = worst.max((got[d] as f64 - want).abs());
                        }
                    }
                }
            }
            // Values up to 2 give scores up to ~30, whose f32 rounding (ulp 2e-6) moves the
            // softmax weights by as much relatively: f32 agreement here is a few 1e-6.
            assert!(
                worst < 1e-5,
                "head dim {hd}, alibi {alibi}: max abs diff {worst:e}"
            );
        }
    }

    #[test]
    fn linear_adds_bias_and_residual_like_burn() {
        let (rows, inp, out) = (37usize, 48usize, 80usize);
        let x: Vec<f32> = (0..rows * inp).map(noise).collect();
        let w: Vec<f32> = (0..inp * out).map(|i| noise(i + 7) * 0.1).collect();
        let b: Vec<f32> = (0..out).map(|i| noise(i + 11)).collect();
        let r: Vec<f32> = (0..rows * out).map(|i| noise(i + 13)).collect();
        let dev = Default::default();
        let t = |v: &[f32], shape: [usize; 2]| {
            Tensor::<Flex, 2>::from_data(TensorData::new(v.to_vec(), shape), &dev)
        };
        let product = t(&x, [rows, inp]).matmul(t(&w, [inp, out]));
        let bias = Tensor::<Flex, 1>::from_data(TensorData::new(b.clone(), [out]), &dev);
        let with_bias = product.clone() + bias.unsqueeze();
        let with_both = with_bias.clone() + t(&r, [rows, out]);
        let data = |t: Tensor<Flex, 2>| t.into_data().to_vec::<f32>().unwrap();
        let max_diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        // Without a residual the same additions in the same order: equal.
        assert_eq!(linear(&x, &w, inp, None, None), data(product));
        assert_eq!(linear(&x, &w, inp, Some(&b), None), data(with_bias));
        // With one, the order of two additions differs: one rounding.
        let got = linear(&x, &w, inp, Some(&b), Some(&r));
        assert!(max_diff(&got, &data(with_both)) < 1e-5);
        let no_bias = data(t(&x, [rows, inp]).matmul(t(&w, [inp, out])) + t(&r, [rows, out]));
        assert!(max_diff(&linear(&x, &w, inp, None, Some(&r)), &no_bias) < 1e-5);
        assert!(linear(&[], &w, inp, Some(&b), None).is_empty());
    }

    #[test]
    fn views_refuse_strided_tensors_and_other_dtypes() {
        let t = Tensor::<Flex, 2>::from_data(
            TensorData::new(vec![1f32, 2., 3., 4.], [2, 2]),
            &Default::default(),
        );
        assert_eq!(values(&view_f32(t.clone()).unwrap()), &[1., 2., 3., 4.]);
        assert!(view_f32(t.clone().transpose()).is_none());
        assert!(view_f32(t.clone().slice_dim(1, 1..2)).is_none());
        assert!(view_f32(t.cast(burn::tensor::FloatDType::F16)).is_none());
    }

    #[test]
    fn gelu_matches_burn_gelu() {
        let x: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.005).collect();
        let t = Tensor::<Flex, 1>::from_data(
            TensorData::new(x.clone(), [x.len()]),
            &Default::default(),
        );
        let want: Vec<f32> = burn::tensor::activation::gelu(t)
            .into_data()
            .to_vec()
            .unwrap();
        let mut got = x;
        gelu_in_place(&mut got);
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 2e-6, "max diff {diff}");
    }

    /// The feed-forward's fused bias and GELU: bit for bit the bias added, then GELU.
    #[test]
    fn bias_gelu_is_the_bias_added_then_gelu() {
        let (rows, out) = (7, 50);
        let x: Vec<f32> = (0..rows * out).map(|i| noise(i) * 4.0).collect();
        let b: Vec<f32> = (0..out).map(|i| noise(i + 3)).collect();
        let mut want: Vec<f32> = x
            .chunks_exact(out)
            .flat_map(|r| r.iter().zip(&b).map(|(v, b)| v + b))
            .collect();
        gelu_in_place(&mut want);
        let mut got = x;
        bias_gelu_in_place(&mut got, &b);
        assert_eq!(got, want);
    }

    #[test]
    fn contiguous_round_trip_and_other_dtypes_untouched() {
        let t = Tensor::<Flex, 2>::from_data(
            TensorData::new(vec![1f32, 2., 3., 4.], [2, 2]),
            &Default::default(),
        );
        // A transposed view comes out contiguous, in logical order.
        let flex = contiguous_f32(t.transpose()).ok().expect("f32");
        assert_eq!(values(&flex), &[1., 3., 2., 4.]);
        let back: Tensor<Flex, 2> = tensor(values(&flex).to_vec(), [2, 2]);
        assert_eq!(
            back.into_data().to_vec::<f32>().unwrap(),
            vec![1., 3., 2., 4.]
        );
        let half =
            Tensor::<Flex, 1>::from_data(TensorData::new(vec![1f32], [1]), &Default::default())
                .cast(burn::tensor::FloatDType::F16);
        assert!(
            contiguous_f32(half).is_err(),
            "only f32 takes the fused path"
        );
    }
}
