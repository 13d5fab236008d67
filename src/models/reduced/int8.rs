//! int8 products on AMX tiles (`--precision int8`), W8A8 as esm.cpp's INT8 and most CPU
//! inference engines compute it: the weight quantised symmetrically per output feature as it
//! loads (`q = round(w · 127 / max|w_j|)`, scale `max|w_j| / 127`), the activations per row
//! (token) as each product starts, the same way; the tile unit multiplies int8 by int8 into
//! exact int32 sums (`TDPBSSD`: a 16×64 by 64×16 block per instruction, twice the
//! multiplications of `TDPBF16PS` on half the bytes), and each output element is scaled back
//! once: `dst += (Σ q_x q_w) · (s_x · s_w)`. The scales come from the data (no calibration
//! set); the error is that of 8-bit operands, about a hundred times bf16's, measured against
//! f32 in the README's accuracy table.

use std::arch::x86_64::*;

use super::{
    a_offset, by_column_blocks, features, in_groups, pack_columns, prefetch_next, tiled_rows,
    Output, Packing, Sums, BLOCK, TILE_ROWS, TILE_ROW_BYTES,
};

/// int8 values per tile row (64 bytes) = the k-depth of one tile product.
const TILE_K: usize = TILE_ROW_BYTES;
/// The largest quantised magnitude (symmetric: -128 is never used).
const Q_MAX: f32 = 127.0;

/// A projection's weight quantised to int8 per output feature, in the shared packed layout
/// (`super::pack_columns`: for each 16-column tile, for each 64-deep k-tile, 16 rows of k-quads
/// × 16 columns × 4), with each column's scale.
pub struct PackedWeight(Packing<i8, Column>);

/// What is kept of a weight's column beside its values: its scale, and the sum of its
/// quantised values (what the VNNI kernels' offset activations add to each product, 128 times).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Column {
    scale: f32,
    sum: i32,
}

/// The offset that makes a signed int8 activation an unsigned byte for VNNI.
const OFFSET: i32 = 128;

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight {:?} int8", self.0.shape())
    }
}

impl PackedWeight {
    /// The packing of the `[k, n]` matrix whose column `j` `column(j, values)` writes, each
    /// column quantised with its own scale.
    pub fn from_columns(k: usize, n: usize, column: impl Fn(usize, &mut [f32]) + Sync) -> Self {
        Self(pack_columns(k, n, column, |values, out: &mut [i8]| {
            quantize_slice(out, values)
        }))
    }

    /// `[k, n]`.
    pub fn shape(&self) -> (usize, usize) {
        self.0.shape()
    }

    /// The quantised values scaled back (`q · s_j`) as a `[k, n]` row-major f32 matrix.
    pub fn unpacked(&self) -> Vec<f32> {
        let (k, n) = self.shape();
        (0..k * n)
            .map(|i| f32::from(self.0.at(i / n, i % n)) * self.0.columns[i % n].scale)
            .collect()
    }

    /// Bytes held (the values and their scales).
    pub fn bytes(&self) -> usize {
        self.0.data.len() + self.0.columns.len() * std::mem::size_of::<Column>()
    }
}

/// Which int8 kernels multiply: AMX tiles, or AVX-512 VNNI (`super::vnni`) on CPUs without
/// AMX-INT8. Both compute the same exact integer sums, so the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernel {
    Amx,
    Vnni,
}

/// `dst [rows, n] += x [rows, k] · w` in W8A8: each row of `x` quantised with its own scale,
/// exact int32 products, `dst += sum · (s_row · s_col)`. Splits the output's 32-column blocks
/// over the calling rayon pool's threads. Needs AMX-INT8 or AVX-512 VNNI.
pub fn gemm_add(dst: &mut [f32], x: &[f32], rows: usize, w: &PackedWeight) {
    let f = features();
    let kernel = match (f.int8, f.vnni) {
        (true, _) => Kernel::Amx,
        (false, true) => Kernel::Vnni,
        (false, false) => panic!("int8 kernels on a CPU without AMX-INT8 or AVX-512 VNNI"),
    };
    gemm_add_on(kernel, dst, x, rows, w);
}

/// [`gemm_add`] on the given kernels (the caller has checked the CPU runs them).
pub(super) fn gemm_add_on(
    kernel: Kernel,
    dst: &mut [f32],
    x: &[f32],
    rows: usize,
    w: &PackedWeight,
) {
    let ((k, n), w) = (w.shape(), &w.0);
    assert!(
        x.len() == rows * k && dst.len() == rows * n,
        "int8 GEMM shapes"
    );
    if rows == 0 || n == 0 {
        return;
    }
    // Per-thread scratch reused from product to product, as the bf16 kernels' (a fresh buffer
    // costs page faults and zeroing each time).
    thread_local! {
        static QUANTISED: std::cell::RefCell<(Vec<i8>, Vec<f32>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    let (mut a, mut row_scales) = QUANTISED.with(|q| std::mem::take(&mut *q.borrow_mut()));
    // Each row's scale, then its values against it (a row's 64-wide parts are quantised
    // separately, all with the row's scale). VNNI multiplies unsigned by signed bytes: its
    // activations are stored offset by 128, and 128 · Σ q_w taken off each sum.
    let offset = if kernel == Kernel::Vnni { OFFSET } else { 0 };
    row_scales.clear();
    row_scales.extend(x.chunks_exact(k).map(max_abs));
    tiled_rows(&mut a, x, rows, k, w.k_tiles, |r, src, dst| {
        // SAFETY: AMX-INT8 and AVX-512 VNNI CPUs have AVX-512 F/BW (the caller's check).
        unsafe { quantize_into(dst, src, inverse(row_scales[r]), offset != 0) };
    });
    for s in &mut row_scales {
        *s = scale(*s);
    }
    // SAFETY: the kernels run here (the caller's check); each task writes only its own column
    // blocks of `dst`, whose bounds `Output` carries; `a` and `w` are padded to whole blocks.
    unsafe {
        by_column_blocks(dst, rows, n, kernel == Kernel::Amx, |out, cols| {
            let mut sums = Sums([0; BLOCK * BLOCK]);
            in_groups(rows, cols, |rb, cb| {
                let ap = a[a_offset(rb * BLOCK, 0, w.k_tiles, TILE_K)..].as_ptr();
                let (b0, b1) = (w.column_tile(2 * cb), w.column_tile(2 * cb + 1));
                match kernel {
                    Kernel::Amx => block(&mut sums, ap, w.k_tiles, b0, b1),
                    Kernel::Vnni => super::vnni::block(&mut sums, ap.cast(), w.k_tiles, b0, b1),
                }
                let (m0, n0) = (rb * BLOCK, cb * BLOCK);
                scale_into(
                    out,
                    (m0, n0),
                    &sums,
                    offset,
                    &row_scales[m0..],
                    &w.columns[n0..n0 + BLOCK],
                );
            })
        })
    };
    QUANTISED.with(|q| *q.borrow_mut() = (a, row_scales));
}

/// The largest magnitude of a row or column (NaN when it holds a NaN, so that the NaN reaches
/// the output as in f32). Vectorised where the CPU has AVX-512 (every CPU with AMX does; the
/// maximum is the same in any order).
fn max_abs(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { max_abs_avx512(values) };
    }
    let mut max = 0f32;
    let mut nan = false;
    for &v in values {
        max = max.max(v.abs());
        nan |= v.is_nan();
    }
    if nan {
        f32::NAN
    } else {
        max
    }
}

/// [`max_abs`] 16 lanes at a time.
#[target_feature(enable = "avx512f")]
unsafe fn max_abs_avx512(values: &[f32]) -> f32 {
    let mut max = _mm512_setzero_ps();
    let mut nan: __mmask16 = 0;
    let mut chunks = values.chunks_exact(16);
    for c in &mut chunks {
        let v = _mm512_loadu_ps(c.as_ptr());
        nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        max = _mm512_max_ps(max, _mm512_abs_ps(v));
    }
    let mut m = _mm512_reduce_max_ps(max);
    for &v in chunks.remainder() {
        if v.is_nan() {
            nan = 1;
        }
        m = m.max(v.abs());
    }
    if nan != 0 {
        f32::NAN
    } else {
        m
    }
}

/// The scale of values whose largest magnitude is `max`: `max / 127` (0 for an all-zero row or
/// column, whose values all quantise to 0).
fn scale(max: f32) -> f32 {
    max / Q_MAX
}

/// What values whose largest magnitude is `max` are multiplied by to quantise them: `127 /
/// max` (0 for `max` 0). The composition in `models/composed.rs` computes both the same way.
fn inverse(max: f32) -> f32 {
    if max == 0.0 {
        0.0
    } else {
        Q_MAX / max
    }
}

/// `values` quantised against their own scale into `out`; returns the scale and the sum of the
/// quantised values.
fn quantize_slice(out: &mut [i8], values: &[f32]) -> Column {
    let max = max_abs(values);
    let inv = inverse(max);
    #[cfg(target_arch = "x86_64")]
    let vector = std::arch::is_x86_feature_detected!("avx512bw");
    #[cfg(not(target_arch = "x86_64"))]
    let vector = false;
    if vector {
        // SAFETY: the CPU has AVX-512F/BW (checked just above).
        unsafe { quantize_into(out, values, inv, false) };
    } else {
        for (o, &v) in out.iter_mut().zip(values) {
            *o = quantize(v, inv);
        }
    }
    Column {
        scale: scale(max),
        sum: out.iter().map(|&q| i32::from(q)).sum(),
    }
}

/// `v · inv` rounded to nearest even, as int8. `|v| ≤ max` keeps it within ±127; a NaN or an
/// infinity (whose row's scale is then NaN or infinite) gives 0.
#[inline(always)]
fn quantize(v: f32, inv: f32) -> i8 {
    let q = (v * inv).round_ties_even();
    if q.is_finite() {
        q.clamp(-Q_MAX, Q_MAX) as i8
    } else {
        0
    }
}

/// [`quantize`] over a slice, 16 at a time with AVX-512 (the same bits: round to nearest even
/// is the conversion's default mode, and finite products stay within ±127.5); with `offset`,
/// each stored plus 128 as an unsigned byte (VNNI's left operand).
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_into(dst: &mut [i8], src: &[f32], inv: f32, offset: bool) {
    let flip = _mm_set1_epi8(if offset { i8::MIN } else { 0 });
    let factor = _mm512_set1_ps(inv);
    let limit = _mm512_set1_ps(Q_MAX);
    let whole = src.len() / 16 * 16;
    for (d, s) in dst[..whole]
        .chunks_exact_mut(16)
        .zip(src[..whole].chunks_exact(16))
    {
        let v = _mm512_mul_ps(_mm512_loadu_ps(s.as_ptr()), factor);
        // Non-finite products (a row holding an infinity or a NaN) become 0, as in `quantize`.
        let finite = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(_mm512_abs_ps(v), _mm512_set1_ps(f32::MAX));
        let v = _mm512_maskz_mov_ps(
            finite,
            _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-Q_MAX)), limit),
        );
        let q = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v));
        _mm_storeu_si128(d.as_mut_ptr().cast(), _mm_xor_si128(q, flip));
    }
    for (d, &v) in dst[whole..].iter_mut().zip(&src[whole..]) {
        *d = quantize(v, inv) ^ if offset { i8::MIN } else { 0 };
    }
}

/// `sums = A[32 × k] · B[k × 32]` in int32: A's two tile rows at `a` (each `k_tiles` packed
/// tiles), B as two packed column tiles; tiles 0–3 accumulate from zero, 4–5 hold A, 6–7 B;
/// the next k-tile's operands prefetched (`prefetch_next`). Exact: |Σ| ≤ 127² · k fits i32
/// for k < 133,000.
///
/// # Safety
/// Tiles configured (`super::with_tiles`); all pointers valid for the block.
#[inline(always)]
unsafe fn block(sums: &mut Sums, a: *const i8, k_tiles: usize, b0: *const i8, b1: *const i8) {
    let tile = TILE_ROWS * TILE_K;
    std::arch::asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem),
    );
    for kt in 0..k_tiles {
        prefetch_next(kt, k_tiles, a, b0, b1);
        std::arch::asm!(
            "tileloadd tmm4, [{a0} + {s}*1]",
            "tileloadd tmm6, [{b0} + {s}*1]",
            "tileloadd tmm5, [{a1} + {s}*1]",
            "tileloadd tmm7, [{b1} + {s}*1]",
            "tdpbssd tmm0, tmm4, tmm6",
            "tdpbssd tmm1, tmm4, tmm7",
            "tdpbssd tmm2, tmm5, tmm6",
            "tdpbssd tmm3, tmm5, tmm7",
            a0 = in(reg) a.add(kt * tile),
            a1 = in(reg) a.add((k_tiles + kt) * tile),
            b0 = in(reg) b0.add(kt * tile),
            b1 = in(reg) b1.add(kt * tile),
            s = in(reg) TILE_ROW_BYTES,
            options(nostack),
        );
    }
    let c = sums.0.as_mut_ptr();
    std::arch::asm!(
        "tilestored [{c0} + {cs}*1], tmm0",
        "tilestored [{c1} + {cs}*1], tmm1",
        "tilestored [{c2} + {cs}*1], tmm2",
        "tilestored [{c3} + {cs}*1], tmm3",
        c0 = in(reg) c,
        c1 = in(reg) c.add(TILE_ROWS),
        c2 = in(reg) c.add(TILE_ROWS * BLOCK),
        c3 = in(reg) c.add(TILE_ROWS * BLOCK + TILE_ROWS),
        cs = in(reg) BLOCK * 4,
        options(nostack),
    );
}

/// `out[m0.., n0..] += (sums - offset · Σ q_w) · (s_row · s_col)` over the block's rows and
/// columns inside the output (`row_scales` from row `m0`, `columns` the block's 32), two
/// 16-lane vectors a row: `(sum as f32) · (s_row · s_col)` added to the output, in that order
/// (the scalar reference in the tests computes the same, so the same bits).
///
/// # Safety
/// `(m0, n0)` inside `out`; this task owns the block's columns; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn scale_into(
    out: &Output,
    (m0, n0): (usize, usize),
    sums: &Sums,
    offset: i32,
    row_scales: &[f32],
    columns: &[Column],
) {
    let (rows, cols) = ((out.rows - m0).min(BLOCK), (out.n - n0).min(BLOCK));
    // The block's columns side by side (the packing keeps scale and sum together per column).
    let mut col_scales = [0f32; BLOCK];
    let mut col_offsets = [0i32; BLOCK];
    for (c, column) in columns[..BLOCK].iter().enumerate() {
        col_scales[c] = column.scale;
        col_offsets[c] = offset.wrapping_mul(column.sum);
    }
    let half = TILE_ROWS;
    let scale = [0, half].map(|h| _mm512_loadu_ps(col_scales[h..].as_ptr()));
    let off = [0, half].map(|h| _mm512_loadu_si512(col_offsets[h..].as_ptr().cast()));
    // Lanes inside the output, per half (all of them but at the last block column).
    let lanes = |h: usize| -> __mmask16 {
        let n = cols.saturating_sub(h * half).min(half);
        ((1u32 << n) - 1) as __mmask16
    };
    let mask = [lanes(0), lanes(1)];
    for (r, &s) in row_scales[..rows].iter().enumerate() {
        let s = _mm512_set1_ps(s);
        let dst = out.ptr.add((m0 + r) * out.n + n0);
        for h in 0..2 {
            if mask[h] == 0 {
                continue;
            }
            let sum = _mm512_loadu_si512(sums.0[r * BLOCK + h * half..].as_ptr().cast());
            let exact = _mm512_sub_epi32(sum, off[h]);
            let product = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(s, scale[h]));
            let d = _mm512_maskz_loadu_ps(mask[h], dst.add(h * half));
            _mm512_mask_storeu_ps(dst.add(h * half), mask[h], _mm512_add_ps(d, product));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{noise, Matmul};
    use super::Kernel;
    use super::*;

    fn packed(w: &[f32], k: usize, n: usize) -> PackedWeight {
        match super::super::PackedWeight::new(Matmul::Int8, w, k, n) {
            super::super::PackedWeight::Int8(p) => p,
            other => unreachable!("{other:?}"),
        }
    }

    /// The quantised `[k, n]` weight and its column scales, read back from the packing.
    fn quantised(p: &PackedWeight) -> (Vec<i8>, Vec<f32>) {
        let (k, n) = p.shape();
        let q = (0..k * n).map(|i| p.0.at(i / n, i % n)).collect();
        (q, p.0.columns[..n].iter().map(|c| c.scale).collect())
    }

    /// The kernels compute exactly `dst + (Σ q_x q_w as f32) · (s_x · s_w)`, the integer sums
    /// taken here in i64 from this file's own quantisation; every edge: rows not a whole
    /// block, columns not a whole block nor tile, k not a whole tile, several block groups
    /// each way; threads 1 and 2.
    /// The kernels this CPU runs, AMX-INT8 and AVX-512 VNNI, whichever it has.
    fn kernels_here() -> Vec<Kernel> {
        let f = features();
        let mut k = Vec::new();
        if f.int8 {
            k.push(Kernel::Amx);
        }
        if f.vnni {
            k.push(Kernel::Vnni);
        }
        if k.is_empty() {
            eprintln!("this CPU has neither AMX-INT8 nor AVX-512 VNNI: int8 kernels not run");
        }
        k
    }

    #[test]
    fn products_are_the_exact_integer_sums_scaled() {
        for &(rows, k, n) in &[(1, 64, 16), (45, 80, 72), (300, 1056, 48), (33, 130, 1000)] {
            let x: Vec<f32> = (0..rows * k).map(|i| noise(i) * 3.0).collect();
            let w: Vec<f32> = (0..k * n).map(|i| noise(i + 77_777)).collect();
            let start: Vec<f32> = (0..rows * n).map(|i| noise(i + 5)).collect();
            let p = packed(&w, k, n);
            let (qw, sw) = quantised(&p);
            for (threads, kernel) in [1, 2]
                .into_iter()
                .flat_map(|t| kernels_here().into_iter().map(move |k| (t, k)))
            {
                let mut dst = start.clone();
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| gemm_add_on(kernel, &mut dst, &x, rows, &p));
                for r in 0..rows {
                    let row = &x[r * k..(r + 1) * k];
                    let max = max_abs(row);
                    let (sx, inv) = (scale(max), inverse(max));
                    let qx: Vec<i8> = row.iter().map(|&v| quantize(v, inv)).collect();
                    for c in 0..n {
                        let sum: i64 = (0..k)
                            .map(|i| i64::from(qx[i]) * i64::from(qw[i * n + c]))
                            .sum();
                        let want = start[r * n + c] + sum as f32 * (sx * sw[c]);
                        assert_eq!(
                            dst[r * n + c].to_bits(),
                            want.to_bits(),
                            "{rows}x{k}x{n} ({kernel:?}, {threads} threads) at ({r}, {c})"
                        );
                    }
                }
            }
        }
    }

    /// The vector quantisation gives the scalar one's bits, at the extremes too.
    #[test]
    fn vector_quantisation_equals_the_scalar_one() {
        if !std::arch::is_x86_feature_detected!("avx512bw") {
            return;
        }
        let mut values: Vec<f32> = (0..1000).map(|i| noise(i) * 5.0).collect();
        values.extend([5.0, -5.0, 0.0, -0.0, 2.5 / 127.0, -7.5 / 127.0 * 5.0]);
        let inv = inverse(max_abs(&values));
        let mut got = vec![0i8; values.len()];
        unsafe { quantize_into(&mut got, &values, inv, false) };
        let want: Vec<i8> = values.iter().map(|&v| quantize(v, inv)).collect();
        assert_eq!(got, want);
        assert!(got.contains(&127) && got.contains(&-127));
        // Non-finite inputs quantise to 0 both ways (their row's scale carries them).
        let odd = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0];
        let mut got = [7i8; 4];
        unsafe { quantize_into(&mut got, &odd, 1.0, false) };
        assert_eq!(got, odd.map(|v| quantize(v, 1.0)));
        assert_eq!(got, [0, 0, 0, 1]);
    }

    #[test]
    fn scales_are_per_column_and_round_trip_within_half_a_step() {
        let (k, n) = (100, 33);
        let w: Vec<f32> = (0..k * n).map(|i| noise(i) * (1 + i % n) as f32).collect();
        let p = packed(&w, k, n);
        let (q, s) = quantised(&p);
        let back = p.unpacked();
        for j in 0..n {
            let max = (0..k).map(|i| w[i * n + j].abs()).fold(0f32, f32::max);
            assert_eq!(s[j], max / 127.0, "column {j}");
            assert!((0..k).any(|i| q[i * n + j].unsigned_abs() == 127));
            for i in 0..k {
                let err = (back[i * n + j] - w[i * n + j]).abs();
                assert!(
                    err <= s[j] * 0.5 + 1e-6,
                    "({i}, {j}): {err} > {}",
                    s[j] / 2.0
                );
            }
        }
        // An all-zero column has scale 0 and zero values; padding columns too.
        let zeros = packed(&vec![0.0; 64 * 3], 64, 3);
        assert!(quantised(&zeros).0.iter().all(|&v| v == 0));
        assert!(zeros.0.columns.iter().all(|c| c.scale == 0.0 && c.sum == 0));
    }

    #[test]
    fn a_nan_in_a_row_reaches_its_outputs() {
        let (rows, k, n) = (3, 64, 16);
        let mut x: Vec<f32> = (0..rows * k).map(noise).collect();
        x[k + 5] = f32::NAN;
        let w: Vec<f32> = (0..k * n).map(|i| noise(i + 9)).collect();
        for kernel in kernels_here() {
            let mut dst = vec![0f32; rows * n];
            gemm_add_on(kernel, &mut dst, &x, rows, &packed(&w, k, n));
            assert!(dst[n..2 * n].iter().all(|v| v.is_nan()), "{kernel:?}");
            assert!(dst[..n].iter().chain(&dst[2 * n..]).all(|v| v.is_finite()));
        }
    }

    /// A weight column's kept sum is the sum of its quantised values (what the VNNI kernels
    /// take off, 128 times, for their offset activations).
    #[test]
    fn column_sums_are_the_sums_of_the_quantised_values() {
        let (k, n) = (130, 40);
        let w: Vec<f32> = (0..k * n).map(|i| noise(i + 3) - 0.3).collect();
        let p = packed(&w, k, n);
        let (q, _) = quantised(&p);
        for j in 0..n {
            let sum: i32 = (0..k).map(|i| i32::from(q[i * n + j])).sum();
            assert_eq!(p.0.columns[j].sum, sum, "column {j}");
        }
    }
}
