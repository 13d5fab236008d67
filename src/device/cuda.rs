//! What the CUDA driver says about this machine, asked through cudarc before Burn touches the
//! GPU (Burn's CUDA runtime panics without a driver; one binary must serve CPU-only nodes too).
//! Every call is wrapped so that a missing libcuda becomes a reason, never a crash.

use serde::Serialize;

/// One visible CUDA device.
#[derive(Debug, Clone, Serialize)]
pub struct CudaDeviceInfo {
    /// Index under the current `CUDA_VISIBLE_DEVICES` (what `--device cuda:N` means).
    pub index: usize,
    pub name: String,
    /// Stable across processes and `CUDA_VISIBLE_DEVICES` remappings: the GPU lease key.
    pub uuid: String,
    pub total_bytes: u64,
    pub free_bytes: Option<u64>,
}

/// Run a driver query with cudarc's "library not found" panic turned into an error.
#[cfg(feature = "cuda")]
fn quietly<T>(f: impl FnOnce() -> Result<T, String> + std::panic::UnwindSafe) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(f);
    std::panic::set_hook(hook);
    match probe {
        Ok(r) => r,
        Err(_) => Err("no CUDA driver (libcuda.so) found".to_string()),
    }
}

/// Number of CUDA devices the driver reports, or why there are none.
pub fn device_count() -> Result<usize, String> {
    #[cfg(feature = "cuda")]
    {
        quietly(|| {
            cudarc::driver::result::init()
                .map_err(|e| format!("CUDA driver init failed: {e:?}"))?;
            let n = cudarc::driver::result::device::get_count()
                .map_err(|e| format!("cannot count CUDA devices: {e:?}"))?;
            Ok(n.max(0) as usize)
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this binary was built without the `cuda` feature".to_string())
    }
}

/// Every visible device with its name, UUID and total memory. Read without creating a context
/// (`cuInit` and `cuDeviceGet*` need none): a context on a GPU that another process holds under
/// an exclusive compute mode could lock that process out. `free_bytes` is left unknown.
pub fn devices() -> Result<Vec<CudaDeviceInfo>, String> {
    let n = device_count()?;
    (0..n).map(info).collect()
}

#[cfg(feature = "cuda")]
fn info(index: usize) -> Result<CudaDeviceInfo, String> {
    use cudarc::driver::result::device;
    quietly(move || {
        let dev = device::get(index as i32).map_err(|e| format!("cuda:{index}: {e:?}"))?;
        let name = device::get_name(dev).unwrap_or_else(|_| "unknown".into());
        let uuid = device::get_uuid(dev)
            .map(|u| {
                let hex: String = u
                    .bytes
                    .iter()
                    .map(|b| format!("{:02x}", *b as u8))
                    .collect();
                format!(
                    "GPU-{}-{}-{}-{}-{}",
                    &hex[0..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..32]
                )
            })
            .unwrap_or_else(|_| format!("index-{index}"));
        // SAFETY: `dev` came from device::get.
        let total_bytes = unsafe { device::total_mem(dev) }.unwrap_or(0) as u64;
        Ok(CudaDeviceInfo {
            index,
            name,
            uuid,
            total_bytes,
            free_bytes: None,
        })
    })
}

#[cfg(not(feature = "cuda"))]
fn info(_index: usize) -> Result<CudaDeviceInfo, String> {
    Err("this binary was built without the `cuda` feature".to_string())
}

/// Whether device `index` is in the default (shared) compute mode, asked without a context: only
/// then may a process look at it (e.g. its free memory) while another one may be using it.
pub fn shared_compute_mode(index: usize) -> bool {
    #[cfg(feature = "cuda")]
    {
        use cudarc::driver::result::device;
        use cudarc::driver::sys::CUdevice_attribute;
        quietly(move || {
            let dev = device::get(index as i32).map_err(|e| format!("{e:?}"))?;
            // SAFETY: `dev` came from device::get; the attribute is a plain integer.
            unsafe {
                device::get_attribute(dev, CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_MODE)
            }
            .map_err(|e| format!("{e:?}"))
        })
        .is_ok_and(|mode| mode == 0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = index;
        false
    }
}

/// Free memory on device `index` now, through its primary context (the one Burn also uses).
pub fn free_memory(index: usize) -> Option<u64> {
    #[cfg(feature = "cuda")]
    {
        use cudarc::driver::result::{ctx, device, mem_get_info, primary_ctx};
        quietly(move || {
            let dev = device::get(index as i32).map_err(|e| format!("{e:?}"))?;
            // SAFETY: `dev` came from device::get; the context is released again below.
            unsafe {
                let c = primary_ctx::retain(dev).map_err(|e| format!("{e:?}"))?;
                let free = ctx::set_current(c)
                    .map_err(|e| format!("{e:?}"))
                    .and_then(|_| mem_get_info().map_err(|e| format!("{e:?}")));
                let _ = primary_ctx::release(dev);
                free.map(|(free, _total)| free as u64)
            }
        })
        .ok()
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = index;
        None
    }
}

/// One kernel on device `index` through Burn's CUDA backend: compiled by NVRTC against the
/// toolkit's headers, loaded by the driver, run, and read back, with any panic of CubeCL's
/// runtime (no headers, PTX newer than the driver, no NVRTC) caught and turned into a reason.
///
/// `precision`: the one the process will compute in on this device. Its default dtype is set
/// to it first ([`super::dtype::claim_dtype`]) and the kernel runs in it, so the test
/// proves that dtype's kernels compile and cannot fix another default (Burn keeps one per
/// device, shared by `Cuda<f16>` and `Cuda<f32>`, set by the first tensor created there).
/// `None` (`virnucpro devices`, which computes nothing after): f32 with an explicit dtype,
/// the device's default left alone.
pub fn smoke_test(index: usize, precision: Option<super::Precision>) -> Result<(), String> {
    #[cfg(feature = "cuda")]
    {
        use super::Precision;
        use burn::backend::cuda::{Cuda, CudaDevice};
        use burn::tensor::backend::Backend;
        use burn::tensor::{Tensor, TensorData};

        fn probe<B: Backend>(
            device: &B::Device,
            precision: Option<Precision>,
        ) -> Result<Vec<f32>, String> {
            let dtype = super::dtype::float_dtype(precision.unwrap_or(Precision::F32));
            if let Some(p) = precision {
                super::dtype::claim_dtype::<B>(device, p).map_err(|e| format!("{e:#}"))?;
            }
            let x = Tensor::<B, 1>::from_data(
                TensorData::new(vec![1f32, 2.0, 3.0], [3]),
                (device, dtype.into()),
            );
            (x * 2.0 + 1.0)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| format!("a test kernel's result could not be read: {e:?}"))
        }

        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let probe = std::panic::catch_unwind(move || {
            let device = CudaDevice::new(index);
            match precision {
                None | Some(Precision::F32 | Precision::Auto) => {
                    probe::<Cuda<f32, i32>>(&device, precision)
                }
                Some(Precision::F16) => probe::<Cuda<half::f16, i32>>(&device, precision),
                Some(Precision::Bf16) => probe::<Cuda<half::bf16, i32>>(&device, precision),
                Some(Precision::Int8) => Err("--precision int8 runs on the CPU only".into()),
            }
        });
        std::panic::set_hook(hook);
        match probe {
            Ok(Ok(v)) if v == [3.0, 5.0, 7.0] => Ok(()),
            Ok(Ok(v)) => Err(format!("a test kernel computed {v:?} instead of [3, 5, 7]")),
            Ok(Err(e)) => Err(e),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                // CubeCL's messages span lines (compiler logs); the first says what failed.
                let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                Err(format!(
                    "a test kernel failed to compile or run ({}); check the toolkit headers, \
                     NVRTC and a driver >= 550",
                    first.trim()
                ))
            }
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (index, precision);
        Err("this binary was built without the `cuda` feature".to_string())
    }
}
