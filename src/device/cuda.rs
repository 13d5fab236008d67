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
