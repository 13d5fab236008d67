//! Reduced-precision matrix products on the CPU, for `--precision bf16` and `--precision int8`:
//! the projections' GEMMs (`x [rows, k] · w [k, n]`, added into an output that already holds
//! bias and residual) with both operands reduced. Everything else (norms, attention, GELU, the
//! residual stream) stays f32, as PyTorch's CPU autocast and esm.cpp's reduced paths do.
//!
//! - [`bf16`]: both operands rounded to bf16, f32 accumulation on Intel AMX tiles
//!   (`TDPBF16PS`).
//! - [`int8`]: W8A8 — the weight quantised per output feature as it loads, the activations per
//!   row (token) as each product starts, both symmetric; exact int32 accumulation on AMX tiles
//!   (`TDPBSSD`) or, on CPUs without AMX-INT8, with AVX-512 VNNI (`vnni.rs`, `VPDPBUSD`: the
//!   same sums, so the same bits), scaled back to f32 once per output element.
//!
//! This file holds what they share: detection, the tile configuration, the layout all pack
//! into (every tile 16 rows × 64 bytes; a weight as 16-column tiles whose rows hold one 4-byte
//! group of k per column — a bf16 pair or an int8 quad, one AVX-512 vector —, the activations
//! as 16-row tiles of 64 contiguous bytes per row), the split of a product's column blocks
//! over the rayon pool and the order blocks are visited in. A weight is packed once, as the
//! model is loaded ([`PackedWeight`], kept by `models::layers::Dense` in place of its f32
//! matrix).
//!
//! The tile instructions are written with `asm!` (Rust's AMX intrinsics are not stable); Linux
//! hands a process the tile state only after it asks (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which
//! detection does once. Dispatch is at run time: on a CPU without the instructions the CPU
//! backend stays f32 (`device::effective_precision`).

pub mod bf16;
pub mod int8;
mod vnni;

use std::sync::OnceLock;

use rayon::prelude::*;

use super::composed::Matmul;

/// Rows per tile; also the f32/i32 columns of an accumulator tile.
const TILE_ROWS: usize = 16;
/// Bytes per tile row.
const TILE_ROW_BYTES: usize = 64;
/// The C block one kernel call computes: 2×2 accumulator tiles.
const BLOCK: usize = 32;
/// A product runs over groups of 4 × 4 blocks (128 × 128 of the output), each block's
/// accumulators kept in tiles for the whole depth: the output is read and written once, and a
/// group's A and B (`k/16` KiB per block row or column at bf16, 8 of them: 1.25 MB at
/// k = 2560) stay in L2 while its 16 blocks are computed; deeper products spill to L3, which
/// the kernels' prefetch hides. Loading and storing the accumulators at every 256-deep pass
/// instead (the output streamed through L3 each time) ran at 400–470 GFLOP/s a core at the
/// 650M shapes in bf16; this 700–760 (one core, `k` 1280, 2560 and 5120).
const ROW_BLOCKS_PER_GROUP: usize = 4;
/// See [`ROW_BLOCKS_PER_GROUP`].
const COL_BLOCKS_PER_GROUP: usize = 4;

/// What this CPU and OS run, asked once.
#[derive(Clone, Copy, Debug, Default)]
struct Features {
    /// AMX-BF16 tiles.
    bf16: bool,
    /// AMX-INT8 tiles.
    int8: bool,
    /// AVX-512 VNNI (with F and BW): int8 products without AMX (`vnni.rs`).
    vnni: bool,
}

/// Set (to anything but `0`) to run as on a CPU without AMX: bf16 then falls back to f32 and
/// int8 runs on the AVX-512 VNNI kernels where the CPU has them. For benchmarks and for
/// checking the kernels other CPUs run; read once per process.
pub const NO_AMX_ENV: &str = "VIRNUCPRO_NO_AMX";

fn features() -> Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(|| {
        let mut f = detect();
        if std::env::var_os(NO_AMX_ENV).is_some_and(|v| v != "0") {
            (f.bf16, f.int8) = (false, false);
        }
        f
    })
}

/// Whether products in `matmul` run on this CPU's kernels: bf16 on AMX-BF16; int8 on
/// AMX-INT8, else on AVX-512 VNNI; never f32 (which takes the f32 matrix).
pub fn available(matmul: Matmul) -> bool {
    let f = features();
    match matmul {
        Matmul::F32 => false,
        Matmul::Bf16 => f.bf16,
        Matmul::Int8 => f.int8 || f.vnni,
    }
}

/// Which kernels run products in `matmul` here, as reports name them (`None` where none do).
pub fn kernels(matmul: Matmul) -> Option<&'static str> {
    let f = features();
    match matmul {
        Matmul::Bf16 if f.bf16 => Some("AMX"),
        Matmul::Int8 if f.int8 => Some("AMX"),
        Matmul::Int8 if f.vnni => Some("AVX-512 VNNI"),
        _ => None,
    }
}

/// CPUID's AMX-TILE, AMX-BF16 and AMX-INT8 bits, then Linux's permission for the tile data
/// state, without which the first tile instruction faults; and AVX-512 VNNI.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> Features {
    use std::arch::x86_64::__cpuid_count;
    let vnni = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni");
    // CPUID exists on every x86-64 CPU; leaf 7 is only read when leaf 0 lists it.
    if __cpuid_count(0, 0).eax < 7 {
        return Features::default();
    }
    let edx = __cpuid_count(7, 0).edx;
    let bit = |b: u32| (edx >> b) & 1 == 1;
    let (bf16, tile, int8) = (bit(22), bit(24), bit(25));
    if !(tile && (bf16 || int8)) {
        return Features {
            vnni,
            ..Features::default()
        };
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with two integer arguments; it only changes this process's permitted
    // XSAVE features (refused by kernels before 5.16 or hypervisors hiding the state).
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    };
    Features {
        bf16: bf16 && granted,
        int8: int8 && granted,
        vnni,
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> Features {
    Features::default()
}

/// A projection's weight packed for the tile unit, `[k, n]` (`x · w`), in the form its
/// products take.
#[derive(Debug)]
pub enum PackedWeight {
    Bf16(bf16::PackedWeight),
    Int8(int8::PackedWeight),
}

impl PackedWeight {
    /// The packing for products in `matmul` of the `[k, n]` matrix whose column `j` (a PyTorch
    /// `Linear`'s output feature `j`, row `j` of its `[out, in]` weight) `column(j, values)`
    /// writes into its `k` values. Panics for f32, which packs nothing.
    pub fn from_columns(
        matmul: Matmul,
        k: usize,
        n: usize,
        column: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Self {
        match matmul {
            Matmul::Bf16 => Self::Bf16(bf16::PackedWeight::from_columns(k, n, column)),
            Matmul::Int8 => Self::Int8(int8::PackedWeight::from_columns(k, n, column)),
            Matmul::F32 => panic!("f32 products take the f32 matrix, not a packing"),
        }
    }

    /// The packing of `w`, `[k, n]` row-major f32 (a model loaded in f32, switched to reduced
    /// products by [`crate::models::layers::Dense::for_matmul`]).
    pub fn new(matmul: Matmul, w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "packed weight shape");
        Self::from_columns(matmul, k, n, |j, values| {
            for (v, row) in values.iter_mut().zip(w.chunks_exact(n)) {
                *v = row[j];
            }
        })
    }

    /// What its products compute in.
    pub fn matmul(&self) -> Matmul {
        match self {
            Self::Bf16(_) => Matmul::Bf16,
            Self::Int8(_) => Matmul::Int8,
        }
    }

    /// `[k, n]`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Self::Bf16(w) => w.shape(),
            Self::Int8(w) => w.shape(),
        }
    }

    /// The values its products multiply by, as a `[k, n]` row-major f32 matrix (rounded, or
    /// quantised and scaled back): what the generic composition multiplies by where the tile
    /// kernels do not run.
    pub fn unpacked(&self) -> Vec<f32> {
        match self {
            Self::Bf16(w) => w.unpacked(),
            Self::Int8(w) => w.unpacked(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Bf16(w) => w.bytes(),
            Self::Int8(w) => w.bytes(),
        }
    }

    /// `dst [rows, n] += x [rows, k] · w` in this packing's arithmetic; `dst` holds what the
    /// product adds to (bias, residual). Needs [`available`] for [`Self::matmul`].
    pub fn gemm_add(&self, dst: &mut [f32], x: &[f32], rows: usize) {
        match self {
            Self::Bf16(w) => bf16::gemm_add(dst, x, rows, w),
            Self::Int8(w) => int8::gemm_add(dst, x, rows, w),
        }
    }
}

/// The packed-weight layout both kinds share, for elements of `E` (`tile_k = 64 /
/// size_of::<E>()` of them per tile row; `per = tile_k / 16` consecutive k of one column per
/// row: a bf16 pair, an int8 quad): for each 16-column tile, for each `tile_k`-deep k-tile,
/// 16 rows × 16 columns × `per` (1 KiB, contiguous); `n` padded to whole 32-column blocks and
/// `k` to whole k-tiles with zeros. `encode(values, out)` turns a column's `k` f32 values
/// into its `k` elements and returns what is kept of the column beside them (int8: its scale
/// and sum; `S::default()` for padding columns).
/// One column tile per task, in parallel: each reads its 16 columns once, in checkpoint order
/// (contiguous), and writes its own `k_tiles` KiB, a tile row (64 bytes) at a time.
fn pack_columns<E: Copy + Default + Send + Sync, S: Copy + Default + Send>(
    k: usize,
    n: usize,
    column: impl Fn(usize, &mut [f32]) + Sync,
    encode: impl Fn(&[f32], &mut [E]) -> S + Sync,
) -> Packing<E, S> {
    let tile_k = TILE_ROW_BYTES / std::mem::size_of::<E>();
    let per = tile_k / TILE_ROWS;
    let k_tiles = k.div_ceil(tile_k);
    let col_tiles = n.div_ceil(BLOCK) * 2;
    let tile = TILE_ROWS * tile_k;
    let mut data = vec![E::default(); col_tiles * k_tiles * tile];
    let mut columns = vec![S::default(); col_tiles * TILE_ROWS];
    crate::weights::host::advise_huge(&data[..]);
    // A column tile's 16 columns decoded and encoded side by side (`k_pad` apart; past `k`,
    // and columns past `n`, zero), then interleaved a tile row at a time.
    let k_pad = k_tiles * tile_k;
    let scratch = || (vec![0f32; k], vec![E::default(); TILE_ROWS * k_pad]);
    data.par_chunks_mut(k_tiles * tile)
        .zip(columns.par_chunks_mut(TILE_ROWS))
        .enumerate()
        .for_each_init(scratch, |(values, encoded), (ct, (out, kept))| {
            let n0 = ct * TILE_ROWS;
            let cols = n.saturating_sub(n0).min(TILE_ROWS);
            if cols == 0 {
                return; // a padding tile: zeros
            }
            for (c, row) in encoded.chunks_exact_mut(k_pad).enumerate() {
                if c < cols {
                    column(n0 + c, values);
                    kept[c] = encode(values, &mut row[..k]);
                    row[k..].fill(E::default());
                } else {
                    row.fill(E::default()); // a padding column (the scratch may hold an earlier tile's)
                }
            }
            // Tile row `q % 16` of k-tile `q / 16` holds k-group q (k = per·q .. per·q + per)
            // of the 16 columns.
            for (q, dst) in out.chunks_exact_mut(tile_k).enumerate() {
                for (c, group) in dst.chunks_exact_mut(per).enumerate() {
                    group.copy_from_slice(&encoded[c * k_pad + per * q..][..per]);
                }
            }
        });
    Packing {
        k,
        n,
        k_tiles,
        data,
        columns,
    }
}

/// A weight in [`pack_columns`]' layout.
struct Packing<E, S> {
    k: usize,
    n: usize,
    k_tiles: usize,
    data: Vec<E>,
    /// What is kept per column, padding included (`S::default()` there).
    columns: Vec<S>,
}

impl<E: Copy, S> Packing<E, S> {
    /// `[k, n]`.
    fn shape(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    fn tile_k() -> usize {
        TILE_ROW_BYTES / std::mem::size_of::<E>()
    }

    /// Element `(i, j)` of the `[k, n]` matrix.
    fn at(&self, i: usize, j: usize) -> E {
        let tile_k = Self::tile_k();
        let per = tile_k / TILE_ROWS;
        let (ct, c) = (j / TILE_ROWS, j % TILE_ROWS);
        let (kt, q, e) = (i / tile_k, (i % tile_k) / per, i % per);
        self.data[(ct * self.k_tiles + kt) * TILE_ROWS * tile_k + q * tile_k + c * per + e]
    }

    /// The first of column tile `ct`'s k-tiles.
    fn column_tile(&self, ct: usize) -> *const E {
        self.data[ct * self.k_tiles * TILE_ROWS * Self::tile_k()..].as_ptr()
    }
}

/// Where row `r`'s elements of k-tile `kt` start in the activations' tile layout (for each
/// 16-row block, for each k-tile, the tile's 16 rows × `tile_k` contiguous; 1 KiB). Row
/// strides that are multiples of 2 KiB (k = 1024, 2560, 5120) would put a tile's rows in the
/// same few L1 sets; contiguous tiles never do.
fn a_offset(r: usize, kt: usize, k_tiles: usize, tile_k: usize) -> usize {
    let tile = TILE_ROWS * tile_k;
    (r / TILE_ROWS) * k_tiles * tile + kt * tile + (r % TILE_ROWS) * tile_k
}

/// `x`'s rows in the activations' tile layout, into `a` (resized; its earlier contents are
/// overwritten), padded with zeros to whole 32-row blocks and k-tiles: `fill(r, src, dst)`
/// writes row `r`'s part `src` (up to `tile_k` values) into `dst` (as long as `src`).
fn tiled_rows<E: Copy + Default>(
    a: &mut Vec<E>,
    x: &[f32],
    rows: usize,
    k: usize,
    k_tiles: usize,
    mut fill: impl FnMut(usize, &[f32], &mut [E]),
) {
    let tile_k = TILE_ROW_BYTES / std::mem::size_of::<E>();
    let padded_rows = rows.div_ceil(BLOCK) * BLOCK;
    a.resize(padded_rows * k_tiles * tile_k, E::default());
    for (r, src) in x.chunks_exact(k).enumerate() {
        for (kt, part) in src.chunks(tile_k).enumerate() {
            let row = &mut a[a_offset(r, kt, k_tiles, tile_k)..][..tile_k];
            fill(r, part, &mut row[..part.len()]);
            row[part.len()..].fill(E::default()); // k's padding (none when k is a multiple)
        }
    }
    for r in rows..padded_rows {
        for kt in 0..k_tiles {
            a[a_offset(r, kt, k_tiles, tile_k)..][..tile_k].fill(E::default());
        }
    }
}

/// A 32 × 32 block's int32 sums, row-major, 64-byte aligned for the tile stores: what the int8
/// kernels (AMX and VNNI) leave for the block's scaling.
#[repr(C, align(64))]
struct Sums([i32; BLOCK * BLOCK]);

/// The f32 output: `rows × n`, row-major. Shared by the tasks of one product, each writing its
/// own columns.
struct Output {
    ptr: *mut f32,
    rows: usize,
    n: usize,
}

// SAFETY: tasks write disjoint column ranges (see `by_column_blocks`).
unsafe impl Sync for Output {}

/// Runs `task(out, column blocks)` over the output's 32-column blocks split evenly across the
/// calling rayon pool's threads, each with the tiles configured ([`with_tiles`]) when `tiles`.
///
/// # Safety
/// The instructions `task` runs are available (AMX when `tiles`); `task` writes only inside
/// `out` and only the columns of its blocks.
unsafe fn by_column_blocks(
    dst: &mut [f32],
    rows: usize,
    n: usize,
    tiles: bool,
    task: impl Fn(&Output, std::ops::Range<usize>) + Sync,
) {
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
        // SAFETY: the caller's promise.
        if tiles {
            unsafe { with_tiles(|| task(&out, cols)) }
        } else {
            task(&out, cols)
        }
    };
    if threads == 1 {
        run(0);
    } else {
        (0..threads).into_par_iter().for_each(run);
    }
}

/// `visit(row block, column block)` for every block of column blocks `cols`, in groups of
/// [`ROW_BLOCKS_PER_GROUP`] × [`COL_BLOCKS_PER_GROUP`] blocks.
fn in_groups(rows: usize, cols: std::ops::Range<usize>, mut visit: impl FnMut(usize, usize)) {
    let row_blocks = rows.div_ceil(BLOCK);
    for c0 in cols.clone().step_by(COL_BLOCKS_PER_GROUP) {
        let group_cols = c0..(c0 + COL_BLOCKS_PER_GROUP).min(cols.end);
        for r0 in (0..row_blocks).step_by(ROW_BLOCKS_PER_GROUP) {
            for rb in r0..(r0 + ROW_BLOCKS_PER_GROUP).min(row_blocks) {
                for cb in group_cols.clone() {
                    visit(rb, cb);
                }
            }
        }
    }
}

/// A packed tile's 16 lines (1 KiB, contiguous) into L1.
#[inline(always)]
unsafe fn prefetch_tile<E>(t: *const E) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for line in 0..TILE_ROWS {
        _mm_prefetch::<_MM_HINT_T0>(t.cast::<i8>().add(line * TILE_ROW_BYTES));
    }
}

/// Prefetches k-tile `kt + 1`'s four operand tiles (A's two row tiles at `a`, `k_tiles` tiles
/// apart, and B's two column tiles) into L1 while k-tile `kt`'s are multiplied: `tileloadd`
/// from L2 waits on every line, and the four products of a k-tile take about as long as four
/// loads from L1 (one core, 650M shapes, bf16: 620 → 700+ GFLOP/s).
#[inline(always)]
unsafe fn prefetch_next<E>(kt: usize, k_tiles: usize, a: *const E, b0: *const E, b1: *const E) {
    if kt + 1 < k_tiles {
        let tile = TILE_ROWS * TILE_ROW_BYTES / std::mem::size_of::<E>();
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
}

/// Runs `f` with all eight tiles configured as 16 rows × 64 bytes, then releases them (a
/// thread holding tile state makes every context switch save 8 KiB more).
///
/// # Safety
/// AMX is available (either kind: the configuration is the same).
unsafe fn with_tiles<R>(f: impl FnOnce() -> R) -> R {
    #[repr(C, align(64))]
    struct Config([u8; 64]);
    let mut cfg = Config([0; 64]);
    cfg.0[0] = 1; // palette 1
    for t in 0..8 {
        cfg.0[16 + 2 * t] = TILE_ROW_BYTES as u8; // bytes per row (u16 little-endian)
        cfg.0[48 + t] = TILE_ROWS as u8;
    }
    std::arch::asm!("ldtilecfg [{0}]", in(reg) cfg.0.as_ptr(), options(nostack));
    let r = f();
    std::arch::asm!("tilerelease", options(nostack, nomem));
    r
}

/// Deterministic values in [-1, 1) for the kernels' tests.
#[cfg(test)]
fn noise(i: usize) -> f32 {
    let x = (i as u32).wrapping_mul(2654435761) >> 8;
    (x as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
}
