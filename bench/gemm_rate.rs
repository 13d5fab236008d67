//! The f32 GEMM rate the CPU backend's own matrix product reaches on this machine: the `gemm`
//! crate with the kernels burn-flex builds it with (AVX-512 where the CPU has it), `n × n` times
//! `n × n`, best of 5 rounds of at least a second each, on `threads` threads (rayon). Printed
//! in GFLOP/s (2n³ per product). bench/esm_cpu.sh prints it beside PyTorch's `torch.mm` rate.
//!
//! Usage: `cargo run --release --example gemm_rate -- [N] [THREADS]` (default 2560 and 2);
//! `-- --dispatch` prints instead which of its f32 kernels the `gemm` crate runs on this CPU
//! (bench/cpu_info.sh prints it with every CPU benchmark).

use std::time::Instant;

/// The kernel family gemm 0.19 picks for f32 at run time (`gemm-common`'s `init_gemm_fn`):
/// AVX-512 where the CPU has avx512f and the crate was built with `x86-v4` (ours is, through
/// burn-flex's `x86-v4` in Cargo.toml), else FMA (AVX2), else scalar; NEON on aarch64. The
/// crate does not report its choice, so this applies the same rule.
fn dispatch() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "avx512f (512-bit f32 FMA kernels, gemm's x86-v4 build)"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "fma (AVX2, 256-bit f32 FMA kernels)"
        } else {
            "scalar"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar or another SIMD family (not x86_64 or aarch64)"
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--dispatch") {
        println!("{}", dispatch());
        return;
    }
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(2560, |a| a.parse().expect("N"));
    let threads: usize = args.next().map_or(2, |a| a.parse().expect("THREADS"));
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i % 89) as f32 - 44.0) / 89.0)
        .collect();
    let mut c = vec![0f32; n * n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let product = |c: &mut [f32]| unsafe {
        // SAFETY: a, b and c are n × n, row-major, and outlive the call.
        gemm::gemm(
            n,
            n,
            n,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            n as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    };
    let best = pool.install(|| {
        product(&mut c); // warm-up: page faults, thread start
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let (mut reps, start) = (0u32, Instant::now());
            while reps < 2 || start.elapsed().as_secs_f64() < 1.0 {
                product(&mut c);
                reps += 1;
            }
            best = best.min(start.elapsed().as_secs_f64() / reps as f64);
        }
        best
    });
    println!("{:.1}", 2.0 * (n as f64).powi(3) / best / 1e9);
}
