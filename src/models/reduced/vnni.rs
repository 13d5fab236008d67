//! int8 products on AVX-512 VNNI, for `--precision int8` on CPUs without AMX-INT8 (Intel Xeon
//! from Cascade Lake to Ice Lake, AMD Zen 4 and later). The same packed weight and the same
//! quantised activations as the AMX kernels (`int8.rs`), the same exact int32 sums, so the same
//! bits: `VPDPBUSD` multiplies 4 unsigned by 4 signed bytes per 32-bit lane and adds them, so
//! the activations are stored plus 128 (`int8::gemm_add_on`) and 128 · Σ q_w is taken off
//! each sum when it is scaled.
//!
//! A packed weight's tile row is one k-quad of 16 columns, 64 bytes: one vector. A 32 × 32
//! block is four 8-row strips; each strip keeps its 8 × 2 vectors of sums in registers over the
//! whole depth, each row's quad broadcast to the 16 lanes.

use std::arch::x86_64::*;

use super::{Sums, BLOCK, TILE_ROWS, TILE_ROW_BYTES};

/// Rows of a strip: 8 × 2 accumulators, 2 weight vectors and a broadcast stay in registers.
const STRIP: usize = 8;

/// `sums = A[32 × k] · B[k × 32]` in int32, A offset by 128 (see the module): A's two 16-row
/// tile rows at `a` (each `k_tiles` packed 1 KiB tiles of 16 rows × 64 bytes), B as two packed
/// column tiles.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI; all pointers valid for the block.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn block(
    sums: &mut Sums,
    a: *const u8,
    k_tiles: usize,
    b0: *const i8,
    b1: *const i8,
) {
    let tile = TILE_ROWS * TILE_ROW_BYTES;
    for half in 0..2 {
        let a16 = a.add(half * k_tiles * tile);
        for strip in 0..TILE_ROWS / STRIP {
            let mut acc = [[_mm512_setzero_si512(); 2]; STRIP];
            for kt in 0..k_tiles {
                let at = a16.add(kt * tile + strip * STRIP * TILE_ROW_BYTES);
                let (w0, w1) = (b0.add(kt * tile), b1.add(kt * tile));
                for q in 0..TILE_ROWS {
                    let v0 = _mm512_loadu_si512(w0.add(q * TILE_ROW_BYTES).cast());
                    let v1 = _mm512_loadu_si512(w1.add(q * TILE_ROW_BYTES).cast());
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let quad = at.add(r * TILE_ROW_BYTES + 4 * q).cast::<i32>();
                        let x = _mm512_set1_epi32(quad.read_unaligned());
                        acc[0] = _mm512_dpbusd_epi32(acc[0], x, v0);
                        acc[1] = _mm512_dpbusd_epi32(acc[1], x, v1);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let row = (half * TILE_ROWS + strip * STRIP + r) * BLOCK;
                _mm512_storeu_si512(sums.0[row..].as_mut_ptr().cast(), acc[0]);
                _mm512_storeu_si512(sums.0[row + TILE_ROWS..].as_mut_ptr().cast(), acc[1]);
            }
        }
    }
}
