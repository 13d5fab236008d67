//! A device's float dtype: the dtype a `--precision` computes in, its name as users write it,
//! and [`claim_dtype`], which makes it a device's default before any tensor is created there
//! (Burn 0.21 keeps one default float dtype per device, fixed by the first tensor: see
//! `placement.rs`). Used by the placement and by CUDA's test kernel, which runs in the dtype
//! the models will.

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType};

use super::Precision;
use crate::models::ops::Matmul;

/// How `precision` runs on CPU workers (`cpu`) or on GPUs: the precision of the model's tensors
/// (the dtype [`claim_dtype`] sets) and what its projections multiply in. On the CPU, bf16 and
/// int8 are f32 tensors whose projections multiply in bf16 or W8A8 int8 on AMX tiles
/// (`effective_precision` grants them only where AMX-BF16, or AMX-INT8 / AVX-512 VNNI, runs), the residual
/// stream, norms and attention staying f32; elsewhere the tensors are in the precision and
/// the products follow them.
pub fn compute_plan(precision: Precision, cpu: bool) -> (Precision, Matmul) {
    match (cpu, precision) {
        (true, Precision::Bf16) => (Precision::F32, Matmul::Bf16),
        (true, Precision::Int8) => (Precision::F32, Matmul::Int8),
        _ => (precision, Matmul::F32),
    }
}

/// The float dtype a precision computes in.
pub fn float_dtype(precision: Precision) -> FloatDType {
    match precision {
        // int8 is f32 tensors whose products are quantised (CPU only).
        Precision::F32 | Precision::Auto | Precision::Int8 => FloatDType::F32,
        Precision::F16 => FloatDType::F16,
        Precision::Bf16 => FloatDType::BF16,
    }
}

/// The name a dtype is reported by (`f32`, `f16`, `bf16`), matching `--precision`.
pub fn dtype_name(dtype: DType) -> String {
    match dtype {
        DType::F32 => "f32".into(),
        DType::F16 => "f16".into(),
        DType::BF16 => "bf16".into(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// Make `precision` the default float dtype of `device` for this process, before any tensor is
/// created there. Setting it again to the same dtype is fine; a device already computing in
/// another dtype (something created a tensor there first, or an earlier step asked for another
/// precision) is refused: every later upload would silently compute in that other dtype.
pub fn claim_dtype<B: Backend>(device: &B::Device, precision: Precision) -> Result<()> {
    let want = float_dtype(precision);
    match burn::tensor::backend::set_default_float_dtype::<B>(device, want) {
        Ok(()) => Ok(()),
        Err(burn::tensor::backend::DeviceError::AlreadyInitialized { .. }) => {
            let have = burn::tensor::backend::get_device_settings::<B>(device).float_dtype;
            if have == want {
                return Ok(());
            }
            bail!(
                "{device:?} already computes in {} in this process, not the {precision} asked for \
                 (a tensor was created there before the precision was set); run the steps with \
                 different precisions as separate processes",
                dtype_name(have.into())
            )
        }
        Err(e) => bail!("{device:?} cannot compute in {precision}: {e}"),
    }
}
