//! Where a process computes, decided once: the devices (after the test kernel), the precision
//! they compute in, and the GPUs leased for it. `run` hands one [`Placement`] to both embedding
//! steps and `train` takes one too, so a process never probes, leases or sets a device's dtype
//! twice.
//!
//! Why once: a GPU lease is an `flock` on an open file, and a second open of the same lock file
//! in the same process waits for the first (a `run --gpu-lease 1` on a one-GPU node waited for
//! itself for ever; on a bigger node it held two GPUs). And Burn 0.21 keeps one default float
//! dtype per device (keyed by device id and device *type*, so `Cuda<f16>` and `Cuda<f32>` share
//! it), fixed by the first tensor created there: whatever touches a device first decides what
//! every later upload computes in. [`claim_dtype`] sets it explicitly before anything else and
//! refuses a device already set to another dtype.

use std::cell::OnceCell;
use std::time::Duration;

use anyhow::{bail, Result};
use burn::tensor::DType;

pub use super::dtype::{claim_dtype, dtype_name, float_dtype};
use super::{effective_precision, resolve, DeviceSpec, Devices, Precision};

/// What the command line asked for: the inputs of [`Placement::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRequest {
    pub device: DeviceSpec,
    pub precision: Precision,
    /// CPU workers (default: all cores).
    pub threads: Option<usize>,
    /// Lease this many GPUs through lock files instead of using every visible one.
    pub gpu_lease: Option<usize>,
    pub gpu_lease_timeout: Option<Duration>,
    /// GPU kernel compilation and autotune caches (CubeCL reads this once, before any GPU use).
    pub kernel_cache: Option<std::path::PathBuf>,
}

/// The devices and precision of this process, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub devices: Devices,
    /// What the devices compute in (`auto` made concrete); checked against the weights and an
    /// activation after each model is loaded.
    pub precision: Precision,
}

impl Placement {
    /// Look at the machine: kernel caches set up, devices chosen and test-kernelled in the
    /// precision they will compute in, GPUs leased (held until the process exits).
    pub fn resolve(req: &PlacementRequest) -> Result<Self> {
        // Before anything touches a GPU (device checks included): CubeCL reads its cache
        // settings once.
        if req.device != DeviceSpec::Cpu {
            let gpu_asked = req.device != DeviceSpec::Auto;
            super::kernel_cache::setup(req.kernel_cache.as_deref(), gpu_asked)?;
        }
        let devices = resolve(
            &req.device,
            req.precision,
            req.threads,
            req.gpu_lease,
            req.gpu_lease_timeout,
        )?;
        let precision = effective_precision(&devices, req.precision)?;
        Ok(Self { devices, precision })
    }

    /// What the matrix products compute in, when it is not the precision itself: CubeCL's
    /// tensor-core matmuls read f32 inputs as TF32 (10-bit mantissa) on CUDA wherever the
    /// device supports it (cubek-matmul's `adjust_dtypes`), and Burn 0.21 has no switch to keep
    /// them in f32. Autotune picks the kernel per shape, so which products are TF32 depends on
    /// the shape. Said in the report and `--help` rather than hidden.
    pub fn matmul_note(&self) -> Option<&'static str> {
        match (&self.devices, self.precision) {
            (Devices::Cuda { .. }, Precision::F32) if super::gpu_probe().computes_on_cuda() => {
                Some("f32 with TF32 matmuls")
            }
            // `dtype::compute_plan`: f32 tensors, the projections' products in bf16.
            (Devices::Cpu { .. }, Precision::Bf16) => {
                Some("f32 with bf16 matmuls (AMX) in the projections")
            }
            (Devices::Cpu { .. }, Precision::Int8) => Some(
                match crate::models::reduced::kernels(crate::models::ops::Matmul::Int8) {
                    Some("AVX-512 VNNI") => {
                        "f32 with int8 matmuls (W8A8, AVX-512 VNNI) in the projections"
                    }
                    _ => "f32 with int8 matmuls (W8A8, AMX) in the projections",
                },
            ),
            _ => None,
        }
    }
}

/// A [`Placement`] resolved when first needed (so a `run` that only translates or resumes past
/// the embeddings never probes or leases a GPU), then the same for every step of the process.
#[derive(Debug)]
pub struct LazyPlacement {
    request: PlacementRequest,
    resolved: OnceCell<Placement>,
}

impl LazyPlacement {
    pub fn new(request: PlacementRequest) -> Self {
        Self {
            request,
            resolved: OnceCell::new(),
        }
    }

    /// One that is already resolved (`train`, tests).
    pub fn from(placement: Placement, request: PlacementRequest) -> Self {
        let resolved = OnceCell::new();
        let _ = resolved.set(placement);
        Self { request, resolved }
    }

    pub fn request(&self) -> &PlacementRequest {
        &self.request
    }

    /// The placement, resolved on the first call only.
    pub fn get(&self) -> Result<&Placement> {
        if let Some(p) = self.resolved.get() {
            return Ok(p);
        }
        let p = Placement::resolve(&self.request)?;
        Ok(self.resolved.get_or_init(|| p))
    }
}

/// The dtypes read back from a loaded model: one uploaded weight and one activation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DtypeReadBack {
    pub weights: String,
    pub activation: String,
}

impl DtypeReadBack {
    pub fn new(weights: DType, activation: DType) -> Self {
        Self {
            weights: dtype_name(weights),
            activation: dtype_name(activation),
        }
    }

    /// An error unless both are what `precision` computes in: a model that silently runs in
    /// another dtype than asked is a wrong answer (or a wrong speed), never a fallback.
    pub fn check(&self, precision: Precision, device: &str) -> Result<()> {
        let want = dtype_name(float_dtype(precision).into());
        if self.weights != want || self.activation != want {
            bail!(
                "{device}: --precision {precision} was asked but the model computes in {} \
                 (weights {}, activations {}): the device's default dtype was set before the \
                 model was loaded",
                if self.weights == self.activation {
                    &self.weights
                } else {
                    "mixed dtypes"
                },
                self.weights,
                self.activation
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_must_match_the_precision() {
        let ok = DtypeReadBack::new(DType::F16, DType::F16);
        ok.check(Precision::F16, "cuda:0").unwrap();
        let f32 = DtypeReadBack::new(DType::F32, DType::F32);
        let err = f32.check(Precision::F16, "cuda:0").unwrap_err().to_string();
        assert!(err.contains("--precision f16 was asked"), "{err}");
        assert!(err.contains("computes in f32"), "{err}");
        let mixed = DtypeReadBack::new(DType::F16, DType::F32);
        assert!(mixed.check(Precision::F16, "x").is_err());
        DtypeReadBack::new(DType::BF16, DType::BF16)
            .check(Precision::Bf16, "x")
            .unwrap();
    }

    #[test]
    fn claiming_the_cpu_twice_in_the_same_dtype_is_fine() {
        let dev = burn::backend::flex::FlexDevice;
        claim_dtype::<burn::backend::Flex>(&dev, Precision::F32).unwrap();
        claim_dtype::<burn::backend::Flex>(&dev, Precision::F32).unwrap();
    }

    #[test]
    fn cuda_f32_is_said_to_be_tf32() {
        let p = Placement {
            devices: Devices::Cuda { ids: vec![0] },
            precision: Precision::F32,
        };
        assert!(p.matmul_note().unwrap().contains("TF32"));
        let h = Placement {
            precision: Precision::F16,
            ..p.clone()
        };
        assert!(h.matmul_note().is_none());
        let cpu = Placement {
            devices: Devices::Cpu { workers: 1 },
            precision: Precision::F32,
        };
        assert!(cpu.matmul_note().is_none());
    }
}
