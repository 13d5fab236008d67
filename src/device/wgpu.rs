//! The adapters Burn's wgpu backend can use (Vulkan on Linux, Metal on macOS), listed through
//! wgpu before Burn opens one: Burn's wgpu runtime panics when the adapter it is asked for does
//! not exist, and `--device auto` must know an adapter's kind (a software rasteriser such as
//! Mesa's lavapipe is slower than the CPU backend) and whether it has f16 arithmetic.

use std::fmt;

use serde::Serialize;

/// What wgpu says an adapter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    Discrete,
    Integrated,
    Virtual,
    /// A software implementation on the CPU (Mesa's lavapipe/llvmpipe, SwiftShader).
    Cpu,
    Other,
}

impl AdapterKind {
    /// A real GPU (what `--device auto` may choose over the CPU backend).
    pub fn is_hardware(self) -> bool {
        matches!(self, Self::Discrete | Self::Integrated | Self::Virtual)
    }
}

impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Discrete => "discrete",
            Self::Integrated => "integrated",
            Self::Virtual => "virtual",
            Self::Cpu => "cpu (software)",
            Self::Other => "other",
        })
    }
}

/// One adapter of the graphics API Burn uses on this platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdapterInfo {
    /// Position in wgpu's list: what `--device wgpu:N` means.
    pub index: usize,
    pub name: String,
    pub kind: AdapterKind,
    /// Driver name and version, as the driver reports them.
    pub driver: String,
    /// Position among the adapters of the same kind: how Burn's `WgpuDevice` names it.
    pub index_in_kind: usize,
    /// Whether shaders may compute in f16 (`--precision f16`).
    pub shader_f16: bool,
    /// The largest buffer one kernel may bind: no tensor may be larger (batches are sized so).
    pub max_binding_bytes: u64,
}

impl AdapterInfo {
    /// `wgpu:N`, for logs and reports.
    pub fn label(&self) -> String {
        format!("wgpu:{}", self.index)
    }
}

/// Every adapter of the platform's graphics API, in wgpu's order, or why there are none.
pub fn adapters() -> Result<Vec<AdapterInfo>, String> {
    #[cfg(any(feature = "wgpu", feature = "wgpu-metal"))]
    {
        use std::collections::HashMap;
        // The backend Burn's wgpu runtime picks by itself (AutoGraphicsApi).
        let backend = if cfg!(target_os = "macos") {
            wgpu::Backend::Metal
        } else {
            wgpu::Backend::Vulkan
        };
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: backend.into(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let found = futures_lite::future::block_on(instance.enumerate_adapters(backend.into()));
        let mut per_kind: HashMap<AdapterKind, usize> = HashMap::new();
        let list: Vec<AdapterInfo> = found
            .iter()
            .enumerate()
            .map(|(index, a)| {
                let info = a.get_info();
                let kind = match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
                    wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
                    wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
                    wgpu::DeviceType::Cpu => AdapterKind::Cpu,
                    wgpu::DeviceType::Other => AdapterKind::Other,
                };
                let slot = per_kind.entry(kind).or_insert(0);
                let index_in_kind = *slot;
                *slot += 1;
                AdapterInfo {
                    index,
                    name: info.name.clone(),
                    kind,
                    driver: format!("{} {}", info.driver, info.driver_info)
                        .trim()
                        .to_string(),
                    index_in_kind,
                    shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
                    max_binding_bytes: a.limits().max_storage_buffer_binding_size,
                }
            })
            .collect();
        if list.is_empty() {
            return Err(format!(
                "no {backend:?} adapter found (on Linux install a Vulkan driver, e.g. Debian's \
                 mesa-vulkan-drivers and libvulkan1)"
            ));
        }
        Ok(list)
    }
    #[cfg(not(any(feature = "wgpu", feature = "wgpu-metal")))]
    {
        Err("this binary was built without the `wgpu` feature".to_string())
    }
}

/// Burn's name for an adapter. Burn picks the `n`th adapter of a kind from the same list.
#[cfg(any(feature = "wgpu", feature = "wgpu-metal"))]
pub fn burn_device(a: &AdapterInfo) -> burn::backend::wgpu::WgpuDevice {
    use burn::backend::wgpu::WgpuDevice;
    match a.kind {
        AdapterKind::Discrete => WgpuDevice::DiscreteGpu(a.index_in_kind),
        AdapterKind::Integrated => WgpuDevice::IntegratedGpu(a.index_in_kind),
        AdapterKind::Virtual => WgpuDevice::VirtualGpu(a.index_in_kind),
        AdapterKind::Cpu => WgpuDevice::Cpu,
        AdapterKind::Other => WgpuDevice::DefaultDevice,
    }
}

/// The adapters `--device wgpu` (no index) uses: every hardware one; without any, the first
/// software one (so the GPU code path can run on a machine without a GPU, as in CI).
pub fn default_choice(all: &[AdapterInfo]) -> Vec<AdapterInfo> {
    let hardware: Vec<AdapterInfo> = all
        .iter()
        .filter(|a| a.kind.is_hardware())
        .cloned()
        .collect();
    if !hardware.is_empty() {
        return hardware;
    }
    // Burn can open only the first software adapter (it names them all `Cpu`).
    all.iter()
        .find(|a| a.kind == AdapterKind::Cpu)
        .or_else(|| all.first())
        .cloned()
        .into_iter()
        .collect()
}

/// Whether Burn can open each of `chosen` as a distinct device: it opens only the first
/// software adapter, and cannot tell "other" adapters apart.
pub fn check_openable(chosen: &[AdapterInfo]) -> Result<(), String> {
    for a in chosen {
        if a.kind == AdapterKind::Cpu && a.index_in_kind > 0 {
            return Err(format!(
                "{} ({}) is a second software adapter; Burn's wgpu backend opens only the first",
                a.label(),
                a.name
            ));
        }
        if a.kind == AdapterKind::Other && chosen.len() > 1 {
            return Err(format!(
                "{} ({}) is of an unknown kind and can only be used alone",
                a.label(),
                a.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(index: usize, kind: AdapterKind, index_in_kind: usize) -> AdapterInfo {
        AdapterInfo {
            index,
            name: format!("adapter {index}"),
            kind,
            driver: String::new(),
            index_in_kind,
            shader_f16: true,
            max_binding_bytes: 1 << 30,
        }
    }

    #[test]
    fn plain_wgpu_prefers_hardware_adapters() {
        let all = [
            adapter(0, AdapterKind::Cpu, 0),
            adapter(1, AdapterKind::Discrete, 0),
            adapter(2, AdapterKind::Integrated, 0),
        ];
        let chosen: Vec<usize> = default_choice(&all).iter().map(|a| a.index).collect();
        assert_eq!(chosen, vec![1, 2]);
    }

    #[test]
    fn plain_wgpu_falls_back_to_the_first_software_adapter() {
        let all = [
            adapter(0, AdapterKind::Cpu, 0),
            adapter(1, AdapterKind::Cpu, 1),
        ];
        let chosen: Vec<usize> = default_choice(&all).iter().map(|a| a.index).collect();
        assert_eq!(chosen, vec![0]);
    }

    #[test]
    fn second_software_adapter_is_refused() {
        let all = [
            adapter(0, AdapterKind::Cpu, 0),
            adapter(1, AdapterKind::Cpu, 1),
        ];
        assert!(check_openable(&all[..1]).is_ok());
        let err = check_openable(&all[1..]).unwrap_err();
        assert!(err.contains("wgpu:1"), "{err}");
    }
}
