//! How fast one core runs the multiply-add instructions the CPU kernels are built from, in
//! multiply-adds per nanosecond: f32 FMA on 512-bit and on 256-bit vectors (the `gemm` crate's
//! AVX-512 and AVX2 kernels), int8 `VPDPBUSD` (AVX-512 VNNI: `--precision int8` without AMX) and
//! bf16 `VDPBF16PS` (AVX512_BF16). The CPU flags say which instructions exist, not how fast they
//! run: the 512-bit/256-bit FMA ratio is ~2 where AVX-512 runs at full width (Intel Xeon) and ~1
//! where it is split into two 256-bit halves (AMD Zen 4), and a dot-product instruction may run
//! at a fraction of the FMA's rate. bench/cpu_info.sh prints this line with every CPU benchmark.
//!
//! Each rate is the best of 5 rounds of a loop of 12 independent accumulator chains (more than
//! any core's latency × issue width), one thread, no memory traffic; an instruction the CPU
//! lacks prints `-`. Rates are per core and move with the clock (turbo, other tenants): compare
//! ratios within one line.
//!
//! Usage: `cargo run --release --example vector_rates`.

use std::time::Instant;

/// Accumulator chains per loop iteration: more than latency × issue width on any core (4 × 2
/// for FMA), and with the two operands within the 16 registers AVX2 code has.
const CHAINS: usize = 12;
/// Loop iterations per timed round.
const ITERATIONS: usize = 16_000_000;

/// One instruction kind: its name, multiply-adds per instruction, and the timed loop (which
/// returns a value computed from every chain, so none is dropped as dead code).
struct Probe {
    name: &'static str,
    macs: usize,
    run: Option<fn(usize) -> f32>,
}

fn main() {
    let probes = probes();
    let mut parts = Vec::new();
    for p in &probes {
        let rate = p.run.map(|run| {
            run(ITERATIONS / 10); // warm-up: the vector unit's power-up, the clock ramp
            let best = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    std::hint::black_box(run(ITERATIONS));
                    start.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min);
            (ITERATIONS * CHAINS * p.macs) as f64 / best / 1e9
        });
        parts.push(match rate {
            Some(r) => format!("{} {r:.1}", p.name),
            None => format!("{} -", p.name),
        });
    }
    println!("{}", parts.join(", "));
}

#[cfg(target_arch = "x86_64")]
fn probes() -> Vec<Probe> {
    use std::arch::is_x86_feature_detected as has;
    let when = |ok: bool, run: fn(usize) -> f32| ok.then_some(run);
    vec![
        Probe {
            name: "f32 FMA 512-bit",
            macs: 16,
            run: when(has!("avx512f"), |n| unsafe { x86::fma512(n) }),
        },
        Probe {
            name: "f32 FMA 256-bit",
            macs: 8,
            run: when(has!("avx2") && has!("fma"), |n| unsafe { x86::fma256(n) }),
        },
        Probe {
            name: "int8 VPDPBUSD 512-bit",
            macs: 64,
            run: when(has!("avx512f") && has!("avx512vnni"), |n| unsafe {
                x86::dpbusd512(n)
            }),
        },
        Probe {
            name: "bf16 VDPBF16PS 512-bit",
            macs: 32,
            run: when(has!("avx512f") && has!("avx512bf16"), |n| unsafe {
                x86::dpbf16512(n)
            }),
        },
    ]
}

#[cfg(not(target_arch = "x86_64"))]
fn probes() -> Vec<Probe> {
    vec![Probe {
        name: "x86-64 vector instructions (not this architecture)",
        macs: 0,
        run: None,
    }]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The timed loops. Inputs go through `black_box` so nothing is folded at compile time;
    //! the chains are independent, so only the issue rate bounds the loop.
    use super::CHAINS;
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(n: usize) -> f32 {
        let (a, b) = (
            _mm512_set1_ps(black_box(0.999_9)),
            _mm512_set1_ps(black_box(1e-6)),
        );
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..n {
            for c in &mut acc {
                *c = _mm512_fmadd_ps(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_ps(c)).sum()
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(n: usize) -> f32 {
        let (a, b) = (
            _mm256_set1_ps(black_box(0.999_9)),
            _mm256_set1_ps(black_box(1e-6)),
        );
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..n {
            for c in &mut acc {
                *c = _mm256_fmadd_ps(*c, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        let mut total = 0.0;
        for c in acc {
            _mm256_storeu_ps(lanes.as_mut_ptr(), c);
            total += lanes.iter().sum::<f32>();
        }
        total
    }

    /// # Safety
    /// The CPU has AVX-512F and AVX-512 VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn dpbusd512(n: usize) -> f32 {
        let (a, b) = (
            _mm512_set1_epi32(black_box(0x0102_0304)),
            _mm512_set1_epi32(black_box(-0x0102_0304)),
        );
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for _ in 0..n {
            for c in &mut acc {
                *c = _mm512_dpbusd_epi32(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_epi32(c) as f32).sum()
    }

    /// # Safety
    /// The CPU has AVX-512F and AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16512(n: usize) -> f32 {
        // bf16 pairs (1.0, 1.0) and (~0.0001, ~0.0001): the sums stay finite.
        let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(black_box(0x3f80_3f80)));
        let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(black_box(0x38d1_38d1)));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..n {
            for c in &mut acc {
                *c = _mm512_dpbf16_ps(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_ps(c)).sum()
    }
}
