//! Where the models run: `--device auto|cpu|cuda|cuda:N|cuda:0,2,3` and `--precision`.
//!
//! One binary serves GPU and CPU machines: with the `cuda` feature the CUDA driver is loaded at
//! run time, and when it is missing `auto` falls back to the CPU with one log line instead of
//! crashing (Burn's CUDA runtime would panic).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    /// `cuda` (all visible devices) or `cuda:0,2`.
    Cuda(Option<Vec<usize>>),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(None)),
            other => {
                let list = other.strip_prefix("cuda:").ok_or_else(|| {
                    format!("unknown device '{s}': use auto, cpu, cuda, cuda:N or cuda:0,2,3")
                })?;
                let ids = list
                    .split(',')
                    .map(|x| x.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        format!("bad CUDA device list in '{s}': expected e.g. cuda:0 or cuda:0,2,3")
                    })?;
                if ids.is_empty() {
                    return Err(format!("no CUDA device ids in '{s}'"));
                }
                Ok(Self::Cuda(Some(ids)))
            }
        }
    }
}

/// Floating-point precision of the model on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 on CPU (exact to the goldens), f16 on CUDA.
    Auto,
    F32,
    F16,
    Bf16,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(format!(
                "unknown precision '{s}': use auto, f32, f16 or bf16"
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
    }
}

/// The devices a run will use, after looking at the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    /// CPU workers, each with its own model copy and single-threaded kernels.
    Cpu {
        workers: usize,
    },
    Cuda {
        ids: Vec<usize>,
    },
}

impl fmt::Display for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Devices::Cpu { workers } => write!(f, "cpu ({workers} workers)"),
            Devices::Cuda { ids } => {
                let names: Vec<String> = ids.iter().map(|i| format!("cuda:{i}")).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

/// Number of CUDA devices the driver reports, or why there are none.
pub fn cuda_device_count() -> Result<usize, String> {
    #[cfg(feature = "cuda")]
    {
        // cudarc panics when libcuda cannot be loaded; keep that panic quiet and turn it into
        // a reason.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let probe = std::panic::catch_unwind(|| -> Result<usize, String> {
            cudarc::driver::result::init()
                .map_err(|e| format!("CUDA driver init failed: {e:?}"))?;
            let n = cudarc::driver::result::device::get_count()
                .map_err(|e| format!("cannot count CUDA devices: {e:?}"))?;
            Ok(n.max(0) as usize)
        });
        std::panic::set_hook(hook);
        match probe {
            Ok(r) => r,
            Err(_) => Err("no CUDA driver (libcuda.so) found".to_string()),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this binary was built without the `cuda` feature".to_string())
    }
}

/// Turn the user's choice into devices. `cpu_threads` = CPU workers (default: all cores).
pub fn resolve(spec: &DeviceSpec, cpu_threads: Option<usize>) -> Result<Devices> {
    let cpu = || Devices::Cpu {
        workers: cpu_threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1),
    };
    match spec {
        DeviceSpec::Cpu => Ok(cpu()),
        DeviceSpec::Auto => match cuda_device_count() {
            Ok(n) if n > 0 => Ok(Devices::Cuda {
                ids: (0..n).collect(),
            }),
            Ok(_) => {
                tracing::info!("no CUDA device visible; running on the CPU");
                Ok(cpu())
            }
            Err(why) => {
                tracing::info!("{why}; running on the CPU");
                Ok(cpu())
            }
        },
        DeviceSpec::Cuda(ids) => {
            let n = match cuda_device_count() {
                Ok(n) => n,
                Err(why) => bail!("--device cuda requested but {why}; use --device cpu or auto"),
            };
            if n == 0 {
                bail!("--device cuda requested but no CUDA device is visible (check CUDA_VISIBLE_DEVICES)");
            }
            let ids = ids.clone().unwrap_or_else(|| (0..n).collect());
            if let Some(bad) = ids.iter().find(|&&i| i >= n) {
                bail!(
                    "CUDA device {bad} does not exist: {n} device(s) visible (0..{})",
                    n - 1
                );
            }
            Ok(Devices::Cuda { ids })
        }
    }
}

/// The precision actually used on these devices.
pub fn effective_precision(devices: &Devices, asked: Precision) -> Precision {
    match (devices, asked) {
        (Devices::Cpu { .. }, Precision::Auto | Precision::F32) => Precision::F32,
        (Devices::Cpu { .. }, other) => {
            tracing::warn!("--precision {other} is not available on the CPU backend; using f32");
            Precision::F32
        }
        (Devices::Cuda { .. }, Precision::Auto) => Precision::F16,
        (Devices::Cuda { .. }, p) => p,
    }
}

/// Work that runs on whichever backend the devices and precision select.
pub trait BackendTask {
    type Output;
    /// `devices`: one entry per worker. `cpu`: whether these are CPU workers (so each should
    /// keep its kernels on one thread).
    fn run<B: Backend>(self, devices: Vec<B::Device>, cpu: bool) -> Result<Self::Output>;
}

/// Run `task` on the backend for `devices` at `precision` (already made effective).
pub fn dispatch<T: BackendTask>(
    devices: &Devices,
    precision: Precision,
    task: T,
) -> Result<T::Output> {
    match devices {
        Devices::Cpu { workers } => {
            let devs = vec![burn::backend::flex::FlexDevice; *workers];
            task.run::<burn::backend::Flex>(devs, true)
        }
        #[cfg(feature = "cuda")]
        Devices::Cuda { ids } => {
            use burn::backend::cuda::{Cuda, CudaDevice};
            let devs: Vec<CudaDevice> = ids.iter().map(|&i| CudaDevice::new(i)).collect();
            match precision {
                Precision::F32 | Precision::Auto => task.run::<Cuda<f32, i32>>(devs, false),
                Precision::F16 => task.run::<Cuda<half::f16, i32>>(devs, false),
                Precision::Bf16 => task.run::<Cuda<half::bf16, i32>>(devs, false),
            }
        }
        #[cfg(not(feature = "cuda"))]
        Devices::Cuda { .. } => {
            let _ = precision;
            bail!("this binary was built without the `cuda` feature")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_specs() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(None)
        );
        assert_eq!(
            "cuda:1".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(Some(vec![1]))
        );
        assert_eq!(
            "cuda:0,2,3".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(Some(vec![0, 2, 3]))
        );
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn cpu_precision_is_f32() {
        let cpu = Devices::Cpu { workers: 1 };
        assert_eq!(effective_precision(&cpu, Precision::Auto), Precision::F32);
        assert_eq!(effective_precision(&cpu, Precision::Bf16), Precision::F32);
    }

    #[test]
    fn auto_without_cuda_runs_on_cpu() {
        if cuda_device_count().unwrap_or(0) == 0 {
            assert_eq!(
                resolve(&DeviceSpec::Auto, Some(2)).unwrap(),
                Devices::Cpu { workers: 2 }
            );
            assert!(resolve(&DeviceSpec::Cuda(None), None).is_err());
        }
    }
}
