//! bf16 products on AMX tiles (`--precision bf16`): both operands rounded to bf16 (round to
//! nearest even), the products accumulated in f32 by the tile unit (`TDPBF16PS`: a 16×32 by
//! 32×16 block per instruction, 16× the f32 FMA work of an AVX-512 instruction), so the error
//! is that of rounding each product's inputs to 8 significant bits. The weight is rounded into
//! the shared packed layout (`super::pack_columns`: k-pairs side by side) as it loads; the
//! activations are rounded into this thread's scratch tiles per product, which costs
//! 1/`out` of the product.

use super::{
    a_offset, by_column_blocks, in_groups, pack_columns, prefetch_next, tiled_rows, Output,
    Packing, BLOCK, TILE_ROWS, TILE_ROW_BYTES,
};

/// bf16 values per tile row (64 bytes) = the k-depth of one tile product.
const TILE_K: usize = TILE_ROW_BYTES / 2;

/// A projection's weight rounded to bf16 in the shared packed layout (`super::pack_columns`):
/// for each 16-column tile, for each 32-deep k-tile, 16 rows of k-pairs × 16 columns × 2.
pub struct PackedWeight(Packing<u16, ()>);

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight {:?} bf16", self.0.shape())
    }
}

impl PackedWeight {
    /// The packing of the `[k, n]` matrix whose column `j` `column(j, values)` writes.
    pub fn from_columns(k: usize, n: usize, column: impl Fn(usize, &mut [f32]) + Sync) -> Self {
        Self(pack_columns(k, n, column, |values, out: &mut [u16]| {
            round_slice(out, values)
        }))
    }

    /// `[k, n]`.
    pub fn shape(&self) -> (usize, usize) {
        self.0.shape()
    }

    /// The rounded values as a `[k, n]` row-major f32 matrix.
    pub fn unpacked(&self) -> Vec<f32> {
        let (k, n) = self.shape();
        (0..k * n)
            .map(|i| half::bf16::from_bits(self.0.at(i / n, i % n)).to_f32())
            .collect()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.data.len() * 2
    }
}

/// `dst [rows, n] += bf16(x) [rows, k] · w`, in f32 accumulation; `dst` holds what the product
/// adds to (bias, residual). Splits the output's 32-column blocks over the calling rayon
/// pool's threads. Needs AMX-BF16.
pub fn gemm_add(dst: &mut [f32], x: &[f32], rows: usize, w: &PackedWeight) {
    assert!(
        super::available(super::Matmul::Bf16),
        "AMX-BF16 kernels on a CPU without them"
    );
    let ((k, n), w) = (w.shape(), &w.0);
    assert!(
        x.len() == rows * k && dst.len() == rows * n,
        "bf16 GEMM shapes"
    );
    if rows == 0 || n == 0 {
        return;
    }
    // The rounded activations go to this thread's scratch buffer, reused from product to
    // product: a fresh one cost more in page faults and zeroing than the rounding (ESM-2 650M's
    // feed-forward down projection, 1680 tokens: 19 of its 82 ms).
    thread_local! {
        static ROUNDED: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut a = ROUNDED.with(|r| std::mem::take(&mut *r.borrow_mut()));
    tiled_rows(&mut a, x, rows, k, w.k_tiles, |_, src, dst| {
        // SAFETY: AMX-BF16 CPUs have AVX-512 (asserted above).
        unsafe { round_into(dst, src) }
    });
    // SAFETY: AMX-BF16 is available (asserted); each task writes only its own column blocks
    // of `dst`, whose bounds `Output` carries; `a` and `w` are padded to whole blocks.
    unsafe {
        by_column_blocks(dst, rows, n, true, |out, cols| {
            in_groups(rows, cols, |rb, cb| {
                // Row block rb's two 16-row tile rows.
                let ap = a[a_offset(rb * BLOCK, 0, w.k_tiles, TILE_K)..].as_ptr();
                let (b0, b1) = (w.column_tile(2 * cb), w.column_tile(2 * cb + 1));
                let (m0, n0) = (rb * BLOCK, cb * BLOCK);
                if m0 + BLOCK <= out.rows && n0 + BLOCK <= out.n {
                    block(out.ptr.add(m0 * out.n + n0), out.n, ap, w.k_tiles, b0, b1);
                } else {
                    edge_block(out, m0, n0, ap, w.k_tiles, b0, b1);
                }
            })
        })
    };
    ROUNDED.with(|r| *r.borrow_mut() = a);
}

/// `src` rounded to bf16 ([`round_bits`]), vectorised: every CPU with AMX has AVX-512.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn round_into(dst: &mut [u16], src: &[f32]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = round_bits(v);
    }
}

/// `src` rounded to bf16 into `dst`: vectorised where the CPU has AVX-512 (every CPU with
/// AMX does), else one value at a time (the same bits: packing layouts are tested anywhere).
fn round_slice(dst: &mut [u16], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512F/BW (checked just above).
        return unsafe { round_into(dst, src) };
    }
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = round_bits(v);
    }
}

/// `v` rounded to bf16, to nearest even; a NaN stays a quiet NaN (as `half::bf16::from_f32`,
/// tested bit for bit), in branch-free integer operations that vectorise.
#[inline(always)]
fn round_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if v.is_nan() {
        ((b >> 16) | 0x40) as u16
    } else {
        rounded
    }
}

/// A block that runs past the output's last row or column: computed in a zero-padded copy.
///
/// # Safety
/// As [`block`], with `(m0, n0)` inside the output.
#[allow(clippy::too_many_arguments)]
unsafe fn edge_block(
    out: &Output,
    m0: usize,
    n0: usize,
    a: *const u16,
    k_tiles: usize,
    b0: *const u16,
    b1: *const u16,
) {
    let mut c = [0f32; BLOCK * BLOCK];
    let (rows, cols) = ((out.rows - m0).min(BLOCK), (out.n - n0).min(BLOCK));
    for r in 0..rows {
        let src = out.ptr.add((m0 + r) * out.n + n0);
        std::ptr::copy_nonoverlapping(src, c[r * BLOCK..].as_mut_ptr(), cols);
    }
    block(c.as_mut_ptr(), BLOCK, a, k_tiles, b0, b1);
    for r in 0..rows {
        let dst = out.ptr.add((m0 + r) * out.n + n0);
        std::ptr::copy_nonoverlapping(c[r * BLOCK..].as_ptr(), dst, cols);
    }
}

/// `C[32×32] += A[32 × k] · B[k × 32]`: C at `c` (row stride `ldc` floats), A's two tile
/// rows at `a` (each `k_tiles` packed tiles), B as two packed column tiles; tiles 0–3
/// accumulate, 4–5 hold A, 6–7 B; the next k-tile's operands prefetched (`prefetch_next`).
///
/// # Safety
/// Tiles configured (`super::with_tiles`); all pointers valid for the block.
#[inline(always)]
unsafe fn block(
    c: *mut f32,
    ldc: usize,
    a: *const u16,
    k_tiles: usize,
    b0: *const u16,
    b1: *const u16,
) {
    let (cs, stride) = (ldc * 4, TILE_K * 2);
    let tile = TILE_ROWS * TILE_K;
    let rows = TILE_ROWS * ldc;
    std::arch::asm!(
        "tileloadd tmm0, [{c0} + {cs}*1]",
        "tileloadd tmm1, [{c1} + {cs}*1]",
        "tileloadd tmm2, [{c2} + {cs}*1]",
        "tileloadd tmm3, [{c3} + {cs}*1]",
        c0 = in(reg) c,
        c1 = in(reg) c.add(TILE_ROWS),
        c2 = in(reg) c.add(rows),
        c3 = in(reg) c.add(rows + TILE_ROWS),
        cs = in(reg) cs,
        options(nostack),
    );
    for kt in 0..k_tiles {
        prefetch_next(kt, k_tiles, a, b0, b1);
        std::arch::asm!(
            "tileloadd tmm4, [{a0} + {s}*1]",
            "tileloadd tmm6, [{b0} + {s}*1]",
            "tileloadd tmm5, [{a1} + {s}*1]",
            "tileloadd tmm7, [{b1} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a.add(kt * tile),
            a1 = in(reg) a.add((k_tiles + kt) * tile),
            b0 = in(reg) b0.add(kt * tile),
            b1 = in(reg) b1.add(kt * tile),
            s = in(reg) stride,
            options(nostack),
        );
    }
    std::arch::asm!(
        "tilestored [{c0} + {cs}*1], tmm0",
        "tilestored [{c1} + {cs}*1], tmm1",
        "tilestored [{c2} + {cs}*1], tmm2",
        "tilestored [{c3} + {cs}*1], tmm3",
        c0 = in(reg) c,
        c1 = in(reg) c.add(TILE_ROWS),
        c2 = in(reg) c.add(rows),
        c3 = in(reg) c.add(rows + TILE_ROWS),
        cs = in(reg) cs,
        options(nostack),
    );
}

#[cfg(test)]
mod tests {
    use super::super::noise;
    use super::*;
    use half::bf16;

    fn packed(w: &[f32], k: usize, n: usize) -> PackedWeight {
        match super::super::PackedWeight::new(super::super::Matmul::Bf16, w, k, n) {
            super::super::PackedWeight::Bf16(p) => p,
            other => unreachable!("{other:?}"),
        }
    }

    fn round(v: f32) -> f64 {
        bf16::from_f32(v).to_f64()
    }

    /// Every edge: rows not a whole block, columns not a whole block nor tile, k not a whole
    /// tile, several block groups each way; threads 1 and 2.
    #[test]
    fn products_equal_f64_products_of_the_rounded_operands() {
        if !super::super::available(super::super::Matmul::Bf16) {
            eprintln!("this CPU has no AMX-BF16: the bf16 CPU path is not used here");
            return;
        }
        for &(rows, k, n) in &[(1, 32, 16), (45, 80, 72), (300, 1056, 48), (33, 64, 1000)] {
            let x: Vec<f32> = (0..rows * k).map(noise).collect();
            let w: Vec<f32> = (0..k * n).map(|i| noise(i + 77_777)).collect();
            let start: Vec<f32> = (0..rows * n).map(|i| noise(i + 5)).collect();
            let packed = packed(&w, k, n);
            for threads in [1, 2] {
                let mut dst = start.clone();
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| gemm_add(&mut dst, &x, rows, &packed));
                for r in 0..rows {
                    for c in 0..n {
                        let want = start[r * n + c] as f64
                            + (0..k)
                                .map(|i| round(x[r * k + i]) * round(w[i * n + c]))
                                .sum::<f64>();
                        let got = dst[r * n + c] as f64;
                        // f32 accumulation of k products of magnitude ≤ 1.
                        let tol = 1e-6 * (k as f64).sqrt() * 4.0 + 1e-6;
                        assert!(
                            (got - want).abs() <= tol,
                            "{rows}x{k}x{n} ({threads} threads) at ({r}, {c}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rounding_matches_the_half_crate_everywhere() {
        if !super::super::available(super::super::Matmul::Bf16) {
            eprintln!("this CPU has no AMX-BF16 (nor, perhaps, AVX-512): rounding not run");
            return;
        }
        let specials = [
            0.0,
            -0.0,
            1.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
        ];
        let values: Vec<f32> = (0..200_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .chain(specials.iter().flat_map(|&v| [v, -v]))
            .chain([
                f32::NAN,
                1.0 + f32::EPSILON * 64.0,
                1.0 + f32::EPSILON * 192.0,
            ])
            .collect();
        let mut got = vec![0u16; values.len()];
        unsafe { round_into(&mut got, &values) };
        for (&v, &g) in values.iter().zip(&got) {
            let want = bf16::from_f32(v);
            if v.is_nan() {
                assert!(bf16::from_bits(g).is_nan(), "{v}");
            } else {
                assert_eq!(g, want.to_bits(), "{v:e} ({:#x})", v.to_bits());
            }
        }
    }

    #[test]
    fn a_reused_scratch_buffer_leaves_nothing_behind() {
        if !super::super::available(super::super::Matmul::Bf16) {
            return;
        }
        // A product with k and rows off the tile sizes, alone on a fresh thread and then on a
        // thread whose scratch held a larger product's rounded rows: the same bits.
        let product = |rows: usize, k: usize, n: usize| {
            let x: Vec<f32> = (0..rows * k).map(|i| noise(i + 3)).collect();
            let w: Vec<f32> = (0..k * n).map(|i| noise(i + 99)).collect();
            let mut dst = vec![0f32; rows * n];
            gemm_add(&mut dst, &x, rows, &packed(&w, k, n));
            dst
        };
        let alone = std::thread::spawn(move || product(45, 80, 72))
            .join()
            .unwrap();
        let after = std::thread::spawn(move || {
            product(300, 1056, 48);
            product(45, 80, 72)
        })
        .join()
        .unwrap();
        assert_eq!(alone, after);
    }

    /// Packing from a checkpoint's `[out, in]` rows (how models load) gives the bits packing
    /// the transposed `[in, out]` matrix gives, and unpacking gives the rounded matrix back.
    #[test]
    fn packing_from_rows_equals_packing_the_transpose() {
        for &(k, n) in &[(3, 17), (64, 48), (100, 33), (1056, 40)] {
            let rows: Vec<f32> = (0..n * k).map(|i| noise(i + 11) * 3.0).collect();
            let from_rows = PackedWeight::from_columns(k, n, |j, values| {
                values.copy_from_slice(&rows[j * k..(j + 1) * k]);
            });
            let transposed: Vec<f32> = (0..k * n).map(|i| rows[(i % n) * k + i / n]).collect();
            assert_eq!(
                from_rows.0.data,
                packed(&transposed, k, n).0.data,
                "{k}x{n}"
            );
            let rounded: Vec<f32> = transposed.iter().map(|&v| round(v) as f32).collect();
            assert_eq!(from_rows.unpacked(), rounded, "{k}x{n}");
            assert_eq!(from_rows.shape(), (k, n));
        }
    }

    #[test]
    fn packing_puts_k_pairs_side_by_side_and_pads_with_zeros() {
        let (k, n) = (3, 17);
        let w: Vec<f32> = (0..k * n).map(|i| i as f32).collect();
        let p = packed(&w, k, n);
        assert_eq!(p.0.k_tiles, 1);
        // Column tile 0: row (pair) 0 holds k = 0, 1 for each column; pair 1 holds k = 2, 0.
        let t0 = &p.0.data[..TILE_ROWS * TILE_K];
        let at = |pair: usize, col: usize, e: usize| bf16::from_bits(t0[pair * 32 + col * 2 + e]);
        assert_eq!(at(0, 5, 0).to_f32(), w[5]);
        assert_eq!(at(0, 5, 1).to_f32(), w[n + 5]);
        assert_eq!(at(1, 5, 0).to_f32(), w[2 * n + 5]);
        assert_eq!(at(1, 5, 1).to_f32(), 0.0);
        // Column 16 is in the second column tile; columns 17.. are padding.
        let t1 = &p.0.data[TILE_ROWS * TILE_K..2 * TILE_ROWS * TILE_K];
        assert_eq!(bf16::from_bits(t1[0]).to_f32(), w[16]);
        assert!(t1[2..32].iter().all(|&v| v == 0));
        assert_eq!(p.0.data.len(), 2 * TILE_ROWS * TILE_K);
    }
}
