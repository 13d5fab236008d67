//! What the runtime asks of the GPUs it may run on: which are visible, whether their kernels
//! can be compiled and run, whether another process may be using one, and what they compute
//! on. One [`GpuProbe`] answers for the whole process ([`gpu_probe`]): the CUDA driver, or, in
//! test builds only, GPUs a test names that compute on the CPU backend ([`FakeGpus`]), so the
//! GPU paths (device selection, the lease, `virnucpro devices`, GPU workers) run in CI without
//! a GPU. The callers ask for capabilities, never which probe they have.

use std::sync::OnceLock;

use super::cuda::{self, CudaDeviceInfo};
use super::cuda_toolkit::{self, ToolkitInfo};
use super::Precision;

/// The questions device selection and `virnucpro devices` put to the GPU layer.
pub trait GpuProbe: Send + Sync {
    /// The visible GPUs with name, UUID and total memory, read without creating a context, or
    /// why none can be listed.
    fn list(&self) -> Result<Vec<CudaDeviceInfo>, String>;

    /// How many GPUs are visible, or why none are.
    fn count(&self) -> Result<usize, String>;

    /// Whether the GPUs compute on Burn's CUDA backend (so kernels compile for them, their
    /// matmuls may be TF32 and their free memory can be read). `false`: they compute on the
    /// CPU backend, in f32 only.
    fn computes_on_cuda(&self) -> bool;

    /// The CUDA toolkit the kernels compile with, checked on files only (no GPU touched);
    /// `None` where nothing is compiled.
    fn toolkit(&self) -> Option<Result<ToolkitInfo, String>>;

    /// Whether GPU `index` may be looked at (a context opened on it) while another process may
    /// be using it: only in the default (shared) compute mode.
    fn shared_compute_mode(&self, index: usize) -> bool;

    /// Free memory on GPU `index` now, when it can be read.
    fn free_memory(&self, index: usize) -> Option<u64>;

    /// One test kernel compiled, run and read back on GPU `index` in `precision` (`None`: f32
    /// without touching the device's default dtype); see [`cuda::smoke_test`].
    fn smoke_test(&self, index: usize, precision: Option<Precision>) -> Result<(), String>;
}

/// The probe of this process, chosen on first use: the CUDA driver, unless a test build was
/// given fake GPUs.
pub fn gpu_probe() -> &'static dyn GpuProbe {
    static PROBE: OnceLock<Box<dyn GpuProbe>> = OnceLock::new();
    PROBE.get_or_init(choose).as_ref()
}

#[cfg(feature = "fault-injection")]
fn choose() -> Box<dyn GpuProbe> {
    match FakeGpus::from_env() {
        Some(fake) => Box::new(fake),
        None => Box::new(CudaDriver),
    }
}

#[cfg(not(feature = "fault-injection"))]
fn choose() -> Box<dyn GpuProbe> {
    Box::new(CudaDriver)
}

/// The GPUs as the CUDA driver reports them (nothing when the binary has no `cuda` feature or
/// the machine no driver: `list` and `count` then say why).
struct CudaDriver;

impl GpuProbe for CudaDriver {
    fn list(&self) -> Result<Vec<CudaDeviceInfo>, String> {
        cuda::devices()
    }

    fn count(&self) -> Result<usize, String> {
        cuda::device_count()
    }

    fn computes_on_cuda(&self) -> bool {
        true
    }

    fn toolkit(&self) -> Option<Result<ToolkitInfo, String>> {
        Some(cuda_toolkit::check_here())
    }

    fn shared_compute_mode(&self, index: usize) -> bool {
        cuda::shared_compute_mode(index)
    }

    fn free_memory(&self, index: usize) -> Option<u64> {
        cuda::free_memory(index)
    }

    fn smoke_test(&self, index: usize, precision: Option<Precision>) -> Result<(), String> {
        cuda::smoke_test(index, precision)
    }
}

#[cfg(feature = "fault-injection")]
pub use fake::{FakeGpus, FAKE_GPUS_ENV};

/// Test builds only (the `fault-injection` feature, see `src/runtime/fault_injection.rs`: a shipped
/// binary has no such probe and never reads the variable).
#[cfg(feature = "fault-injection")]
mod fake {
    use super::*;

    /// `VIRNUCPRO_FAKE_GPUS=GPU-aaaa,GPU-bbbb`: device selection, the GPU lease and
    /// `virnucpro devices` see these GPUs (by UUID) instead of asking the driver, so a test can
    /// follow a whole run through the lease and both embedding steps.
    pub const FAKE_GPUS_ENV: &str = "VIRNUCPRO_FAKE_GPUS";

    /// GPUs that compute on the CPU backend in f32: nothing to compile, so no toolkit and no
    /// test kernel; no memory or compute mode to read.
    pub struct FakeGpus(Vec<CudaDeviceInfo>);

    impl FakeGpus {
        /// The GPUs [`FAKE_GPUS_ENV`] names, or `None` when it is unset or names none.
        pub fn from_env() -> Option<FakeGpus> {
            Self::parse(&std::env::var(FAKE_GPUS_ENV).ok()?)
        }

        fn parse(list: &str) -> Option<FakeGpus> {
            let gpus: Vec<CudaDeviceInfo> = list
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .enumerate()
                .map(|(index, uuid)| CudaDeviceInfo {
                    index,
                    name: format!("fake GPU ({FAKE_GPUS_ENV})"),
                    uuid: uuid.to_string(),
                    total_bytes: 0,
                    free_bytes: None,
                })
                .collect();
            (!gpus.is_empty()).then_some(FakeGpus(gpus))
        }
    }

    impl GpuProbe for FakeGpus {
        fn list(&self) -> Result<Vec<CudaDeviceInfo>, String> {
            Ok(self.0.clone())
        }

        fn count(&self) -> Result<usize, String> {
            Ok(self.0.len())
        }

        fn computes_on_cuda(&self) -> bool {
            false
        }

        fn toolkit(&self) -> Option<Result<ToolkitInfo, String>> {
            None
        }

        fn shared_compute_mode(&self, _index: usize) -> bool {
            false
        }

        fn free_memory(&self, _index: usize) -> Option<u64> {
            None
        }

        fn smoke_test(&self, _index: usize, _precision: Option<Precision>) -> Result<(), String> {
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fake_gpus_are_listed_by_uuid_in_order_and_compute_on_the_cpu() {
            let fake = FakeGpus::parse(" GPU-aaaa, ,GPU-bbbb,").unwrap();
            let uuids: Vec<(usize, String)> = fake
                .list()
                .unwrap()
                .into_iter()
                .map(|g| (g.index, g.uuid))
                .collect();
            assert_eq!(
                uuids,
                [(0, "GPU-aaaa".to_string()), (1, "GPU-bbbb".to_string())]
            );
            assert_eq!(fake.count(), Ok(2));
            assert!(!fake.computes_on_cuda());
            assert!(fake.toolkit().is_none() && !fake.shared_compute_mode(0));
            assert!(
                FakeGpus::parse(" , ").is_none(),
                "no GPU named: the driver answers"
            );
        }
    }
}
