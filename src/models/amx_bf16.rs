//! bf16 matrix products on Intel AMX, for `--precision bf16` on the CPU: the projections' GEMMs
//! with both operands rounded to bf16 (round to nearest even) and the products accumulated in
//! f32 by the tile unit (`TDPBF16PS`: a 16×32 by 32×16 block per instruction, 16× the f32 FMA
//! work of an AVX-512 instruction). Everything else (norms, attention, GELU, the residual
//! stream) stays f32, as PyTorch's CPU autocast and esm.cpp's reduced paths do, so the error is
//! that of rounding each product's inputs to 8 significant bits.
//!
//! A weight is packed once, as the model is loaded ([`PackedWeight`], kept by
//! `models::layers::Dense` instead of its f32 matrix), into AMX's layout for the right-hand
//! operand — 16-column tiles of k-pairs, `[k/2][16][2]`. The left operand (the activations) is
//! rounded into a padded row-major bf16 copy per product, which costs 1/`out` of the product.
//!
//! The tile instructions are written with `asm!` (Rust's AMX intrinsics are not stable); Linux
//! hands a process the tile state only after it asks (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which
//! [`available`] does once. Dispatch is at run time: on a CPU without AMX-BF16 the CPU backend
//! stays f32 (`device::effective_precision`).

use std::sync::OnceLock;

use rayon::prelude::*;

/// bf16 values per tile row (64 bytes) = the k-depth of one tile product.
const TILE_K: usize = 32;
/// Rows per tile; also the f32 columns of an accumulator tile.
const TILE_ROWS: usize = 16;
/// The C block one kernel call computes: 2×2 accumulator tiles.
const BLOCK: usize = 32;
/// A product runs over groups of 4 × 4 blocks (128 × 128 of the output), each block's
/// accumulators kept in tiles for the whole depth: the output is read and written once, and a
/// group's A and B (`2 × k/32` KiB per block row or column, 8 of them: 1.25 MB at k = 2560)
/// stay in L2 while its 16 blocks are computed; deeper products spill to L3, which the
/// prefetch in [`block`] hides. Loading and storing the accumulators at every 256-deep pass
/// instead (the output streamed through L3 each time) ran at 400–470 GFLOP/s a core at the
/// 650M shapes; this 700–760 (one core, `k` 1280, 2560 and 5120).
const ROW_BLOCKS_PER_GROUP: usize = 4;
/// See [`ROW_BLOCKS_PER_GROUP`].
const COL_BLOCKS_PER_GROUP: usize = 4;

/// Whether this CPU and OS run AMX-BF16, asked once: CPUID's AMX-TILE and AMX-BF16 bits, then
/// Linux's permission for the tile data state, without which the first tile instruction
/// faults.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID exists on every x86-64 CPU; leaf 7 is only read when leaf 0 lists it.
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    let (amx_bf16, amx_tile) = ((edx >> 22) & 1 == 1, (edx >> 24) & 1 == 1);
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with two integer arguments; it only changes this process's permitted
    // XSAVE features (refused by kernels before 5.16 or hypervisors hiding the state).
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// A projection's weight rounded to bf16 in AMX's layout for the right-hand operand of
/// `x [rows, k] · w [k, n]`: for each 16-column tile, for each 32-deep k-tile, 16 rows of
/// k-pairs × 16 columns × 2 (1 KiB, contiguous); `n` padded to whole 32-column blocks and `k`
/// to whole k-tiles with zeros. Made once, when the model is loaded for bf16 products
/// (`models::layers::Dense`), straight from the checkpoint's rows: the model then holds 2 bytes
/// per weight instead of the f32 matrix and its packing side by side.
pub struct PackedWeight {
    k: usize,
    n: usize,
    k_tiles: usize,
    data: Vec<u16>,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight [{}, {}] bf16", self.k, self.n)
    }
}

impl PackedWeight {
    /// The packing of the `[k, n]` matrix whose column `j` (a PyTorch `Linear`'s output
    /// feature `j`, row `j` of its `[out, in]` weight) `column(j, values)` writes into its `k`
    /// values. One column tile per task, in parallel: each reads its 16 columns once, in
    /// checkpoint order (contiguous), and writes its own `k_tiles` KiB.
    pub fn from_columns(k: usize, n: usize, column: impl Fn(usize, &mut [f32]) + Sync) -> Self {
        let k_tiles = k.div_ceil(TILE_K);
        let col_tiles = n.div_ceil(BLOCK) * 2;
        let tile = TILE_ROWS * TILE_K;
        let mut data = vec![0u16; col_tiles * k_tiles * tile];
        crate::weights::host::advise_huge(&data[..]);
        // A column tile's 16 columns decoded and rounded side by side (`k_pad` apart; past
        // `k`, and columns past `n`, zero), then interleaved a tile row at a time: each tile
        // row (64 bytes) written whole, in order.
        let k_pad = k_tiles * TILE_K;
        let scratch = || (vec![0f32; k], vec![0u16; TILE_ROWS * k_pad]);
        data.par_chunks_mut(k_tiles * tile)
            .enumerate()
            .for_each_init(scratch, |(values, rounded), (ct, out)| {
                let n0 = ct * TILE_ROWS;
                let cols = n.saturating_sub(n0).min(TILE_ROWS);
                if cols == 0 {
                    return; // a padding tile: zeros
                }
                for (c, row) in rounded.chunks_exact_mut(k_pad).enumerate() {
                    if c < cols {
                        column(n0 + c, values);
                        round_slice(&mut row[..k], values);
                    } else {
                        row.fill(0); // a padding column (the scratch may hold an earlier tile's)
                    }
                }
                // Tile row `q % 16` of k-tile `q / 16` holds k-pair q (k = 2q, 2q + 1) of
                // the 16 columns.
                for (q, dst) in out.chunks_exact_mut(TILE_K).enumerate() {
                    for (c, pair) in dst.chunks_exact_mut(2).enumerate() {
                        pair.copy_from_slice(&rounded[c * k_pad + 2 * q..][..2]);
                    }
                }
            });
        Self {
            k,
            n,
            k_tiles,
            data,
        }
    }

    /// The packing of `w`, `[k, n]` row-major f32 (a model loaded in f32, switched to bf16
    /// products by [`crate::models::layers::Dense::for_matmul`]).
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "packed weight shape");
        Self::from_columns(k, n, |j, values| {
            for (v, row) in values.iter_mut().zip(w.chunks_exact(n)) {
                *v = row[j];
            }
        })
    }

    /// `[k, n]`.
    pub fn shape(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The rounded values as a `[k, n]` row-major f32 matrix: what the generic composition
    /// multiplies by where the AMX kernels do not run.
    pub fn unpacked(&self) -> Vec<f32> {
        let tile = TILE_ROWS * TILE_K;
        let mut w = vec![0f32; self.k * self.n];
        for (i, row) in w.chunks_exact_mut(self.n.max(1)).enumerate() {
            let (kt, pair, e) = (i / TILE_K, (i % TILE_K) / 2, i % 2);
            for (j, v) in row.iter_mut().enumerate() {
                let (ct, c) = (j / TILE_ROWS, j % TILE_ROWS);
                let at = (ct * self.k_tiles + kt) * tile + pair * TILE_K + 2 * c + e;
                *v = half::bf16::from_bits(self.data[at]).to_f32();
            }
        }
        w
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }

    /// The first of column tile `ct`'s k-tiles.
    fn column_tile(&self, ct: usize) -> *const u16 {
        self.data[ct * self.k_tiles * TILE_ROWS * TILE_K..].as_ptr()
    }
}

/// `dst [rows, n] += bf16(x) [rows, k] · w`, in f32 accumulation; `dst` holds what the product
/// adds to (bias, residual). Splits the output's 32-column blocks over the calling rayon
/// pool's threads. Needs [`available`].
pub fn gemm_add(dst: &mut [f32], x: &[f32], rows: usize, w: &PackedWeight) {
    assert!(available(), "AMX-BF16 kernels on a CPU without them");
    let (k, n) = (w.k, w.n);
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
    rounded_rows(&mut a, x, rows, k, w.k_tiles);
    let out = Output {
        ptr: dst.as_mut_ptr(),
        rows,
        n,
    };
    let col_blocks = n.div_ceil(BLOCK);
    let threads = rayon::current_num_threads().min(col_blocks).max(1);
    let per = col_blocks.div_ceil(threads);
    let run = |t: usize| {
        let cols = t * per..((t + 1) * per).min(col_blocks);
        // SAFETY: AMX is available (asserted); each task writes only its own column blocks of
        // `dst`, whose bounds `Output` carries; `a` and `w` are padded to whole blocks.
        unsafe { with_tiles(|| groups(&out, &a, w, cols)) }
    };
    if threads == 1 {
        run(0);
    } else {
        (0..threads).into_par_iter().for_each(run);
    }
    ROUNDED.with(|r| *r.borrow_mut() = a);
}

/// `x`'s rows rounded to bf16 in AMX tiles, into `a` (resized; its earlier contents are
/// overwritten): for each 16-row block, for each k-tile, the tile's 16 rows × 32 contiguous
/// (1 KiB), zero-padded to whole 32-row blocks and k-tiles. Row strides that are multiples of
/// 2 KiB (k = 1024, 2560, 5120) would put a tile's rows in the same few L1 sets; contiguous
/// tiles never do.
fn rounded_rows(a: &mut Vec<u16>, x: &[f32], rows: usize, k: usize, k_tiles: usize) {
    let tile = TILE_ROWS * TILE_K;
    let padded_rows = rows.div_ceil(BLOCK) * BLOCK;
    a.resize(padded_rows * k_tiles * TILE_K, 0);
    let at = |r: usize, kt: usize| {
        (r / TILE_ROWS) * k_tiles * tile + (r % TILE_ROWS) * TILE_K + kt * tile
    };
    for (r, src) in x.chunks_exact(k).enumerate() {
        for (kt, part) in src.chunks(TILE_K).enumerate() {
            let row = &mut a[at(r, kt)..][..TILE_K];
            // SAFETY: AMX-BF16 CPUs have AVX-512 (`gemm_add` asserts `available`).
            unsafe { round_into(&mut row[..part.len()], part) };
            row[part.len()..].fill(0); // k's padding (none when k is a multiple of 32)
        }
    }
    for r in rows..padded_rows {
        for kt in 0..k_tiles {
            a[at(r, kt)..][..TILE_K].fill(0);
        }
    }
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

/// The f32 output: `rows × n`, row-major. Shared by the tasks of one product, each writing its
/// own columns.
struct Output {
    ptr: *mut f32,
    rows: usize,
    n: usize,
}

// SAFETY: tasks write disjoint column ranges (see `gemm_add`).
unsafe impl Sync for Output {}

/// Column blocks `cols` of the product, in groups of [`ROW_BLOCKS_PER_GROUP`] ×
/// [`COL_BLOCKS_PER_GROUP`] blocks, each block over the whole depth.
///
/// # Safety
/// The tile configuration of [`with_tiles`] is loaded; `a` is [`rounded_rows`]' layout for
/// `out.rows` rows, padded to whole row blocks.
unsafe fn groups(out: &Output, a: &[u16], w: &PackedWeight, cols: std::ops::Range<usize>) {
    let row_blocks = out.rows.div_ceil(BLOCK);
    for c0 in cols.clone().step_by(COL_BLOCKS_PER_GROUP) {
        let group_cols = c0..(c0 + COL_BLOCKS_PER_GROUP).min(cols.end);
        for r0 in (0..row_blocks).step_by(ROW_BLOCKS_PER_GROUP) {
            for rb in r0..(r0 + ROW_BLOCKS_PER_GROUP).min(row_blocks) {
                // Row block rb's two 16-row tile rows.
                let ap = a[rb * 2 * w.k_tiles * TILE_ROWS * TILE_K..].as_ptr();
                for cb in group_cols.clone() {
                    let (b0, b1) = (w.column_tile(2 * cb), w.column_tile(2 * cb + 1));
                    let (m0, n0) = (rb * BLOCK, cb * BLOCK);
                    if m0 + BLOCK <= out.rows && n0 + BLOCK <= out.n {
                        block(out.ptr.add(m0 * out.n + n0), out.n, ap, w.k_tiles, b0, b1);
                    } else {
                        edge_block(out, m0, n0, ap, w.k_tiles, b0, b1);
                    }
                }
            }
        }
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
/// accumulate, 4–5 hold A, 6–7 B. The next k-tile's four operand tiles are prefetched into L1
/// while this one's are multiplied: `tileloadd` from L2 waits on every line, and the four
/// products of a k-tile take about as long as four loads from L1 (one core, 650M shapes:
/// 620 → 700+ GFLOP/s).
///
/// # Safety
/// Tiles configured ([`with_tiles`]); all pointers valid for the block.
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
        if kt + 1 < k_tiles {
            let next = (kt + 1) * tile;
            for t in [
                a.add(next),
                a.add(k_tiles * tile + next),
                b0.add(next),
                b1.add(next),
            ] {
                prefetch_tile(t);
            }
        }
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

/// A packed tile's 16 lines (1 KiB, contiguous) into L1.
#[inline(always)]
unsafe fn prefetch_tile(t: *const u16) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for line in 0..TILE_ROWS {
        _mm_prefetch::<_MM_HINT_T0>(t.cast::<i8>().add(line * 64));
    }
}

/// Runs `f` with all eight tiles configured as 16 rows × 64 bytes, then releases them (a
/// thread holding tile state makes every context switch save 8 KiB more).
///
/// # Safety
/// AMX-BF16 is [`available`].
unsafe fn with_tiles<R>(f: impl FnOnce() -> R) -> R {
    #[repr(C, align(64))]
    struct Config([u8; 64]);
    let mut cfg = Config([0; 64]);
    cfg.0[0] = 1; // palette 1
    for t in 0..8 {
        cfg.0[16 + 2 * t] = (TILE_K * 2) as u8; // bytes per row (u16 little-endian)
        cfg.0[48 + t] = TILE_ROWS as u8;
    }
    std::arch::asm!("ldtilecfg [{0}]", in(reg) cfg.0.as_ptr(), options(nostack));
    let r = f();
    std::arch::asm!("tilerelease", options(nostack, nomem));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn noise(i: usize) -> f32 {
        let x = (i as u32).wrapping_mul(2654435761) >> 8;
        (x as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
    }

    fn round(v: f32) -> f64 {
        bf16::from_f32(v).to_f64()
    }

    /// Every edge: rows not a whole block, columns not a whole block nor tile, k not a whole
    /// tile, several block groups each way; threads 1 and 2.
    #[test]
    fn products_equal_f64_products_of_the_rounded_operands() {
        if !available() {
            eprintln!("this CPU has no AMX-BF16: the bf16 CPU path is not used here");
            return;
        }
        for &(rows, k, n) in &[(1, 32, 16), (45, 80, 72), (300, 1056, 48), (33, 64, 1000)] {
            let x: Vec<f32> = (0..rows * k).map(noise).collect();
            let w: Vec<f32> = (0..k * n).map(|i| noise(i + 77_777)).collect();
            let start: Vec<f32> = (0..rows * n).map(|i| noise(i + 5)).collect();
            let packed = PackedWeight::new(&w, k, n);
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
        if !available() {
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
        if !available() {
            return;
        }
        // A product with k and rows off the tile sizes, alone on a fresh thread and then on a
        // thread whose scratch held a larger product's rounded rows: the same bits.
        let product = |rows: usize, k: usize, n: usize| {
            let x: Vec<f32> = (0..rows * k).map(|i| noise(i + 3)).collect();
            let w: Vec<f32> = (0..k * n).map(|i| noise(i + 99)).collect();
            let mut dst = vec![0f32; rows * n];
            gemm_add(&mut dst, &x, rows, &PackedWeight::new(&w, k, n));
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
                from_rows.data,
                PackedWeight::new(&transposed, k, n).data,
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
        let p = PackedWeight::new(&w, k, n);
        assert_eq!(p.k_tiles, 1);
        // Column tile 0: row (pair) 0 holds k = 0, 1 for each column; pair 1 holds k = 2, 0.
        let t0 = &p.data[..TILE_ROWS * TILE_K];
        let at = |pair: usize, col: usize, e: usize| bf16::from_bits(t0[pair * 32 + col * 2 + e]);
        assert_eq!(at(0, 5, 0).to_f32(), w[5]);
        assert_eq!(at(0, 5, 1).to_f32(), w[n + 5]);
        assert_eq!(at(1, 5, 0).to_f32(), w[2 * n + 5]);
        assert_eq!(at(1, 5, 1).to_f32(), 0.0);
        // Column 16 is in the second column tile; columns 17.. are padding.
        let t1 = &p.data[TILE_ROWS * TILE_K..2 * TILE_ROWS * TILE_K];
        assert_eq!(bf16::from_bits(t1[0]).to_f32(), w[16]);
        assert!(t1[2..32].iter().all(|&v| v == 0));
        assert_eq!(p.data.len(), 2 * TILE_ROWS * TILE_K);
    }
}
