//! Reading model weights from the files people actually have: Hugging Face safetensors
//! (single or sharded), PyTorch `pytorch_model.bin` / fair-esm `.pt` zip pickles, and whole
//! pickled modules (VirNucPro's classifier files).
//!
//! Every format is exposed through [`TensorSource`], which hands out one tensor at a time as
//! `f32`, so a 3B-parameter checkpoint is never held twice in memory: the file is memory-mapped
//! and each tensor is converted when the model asks for it.

pub mod safetensors_file;

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// A named collection of tensors, read lazily.
pub trait TensorSource: Send + Sync {
    /// All tensor names in the source (order unspecified).
    fn names(&self) -> Vec<String>;
    /// The shape of a tensor, or `None` when absent.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor's values as `f32` in row-major order, whatever its stored dtype.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>>;
    /// Where the tensors come from, for error messages.
    fn describe(&self) -> String;
}

/// A tensor source plus the helpers models use: name fallbacks, shape checks, conversion to
/// Burn tensors with errors that name the tensor and the file.
pub struct Weights {
    source: Box<dyn TensorSource>,
}

impl Weights {
    pub fn new(source: Box<dyn TensorSource>) -> Self {
        Self { source }
    }

    pub fn source(&self) -> &dyn TensorSource {
        self.source.as_ref()
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.source.shape(name).is_some()
    }

    /// The first of `candidates` that exists (checkpoints name the same tensor with or without
    /// a `bert.` / `esm.` prefix), or an error listing them all.
    pub fn resolve<'a>(&self, candidates: &[&'a str]) -> Result<&'a str> {
        for c in candidates {
            if self.contains(c) {
                return Ok(c);
            }
        }
        bail!(
            "tensor {} is missing from {} (is this the right model file?)",
            candidates.join(" / "),
            self.source.describe()
        )
    }

    /// Read a tensor, checking its shape exactly.
    pub fn read(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let shape = self.source.shape(name).with_context(|| {
            format!(
                "tensor {name} is missing from {} (is this the right model file?)",
                self.source.describe()
            )
        })?;
        if shape != expected {
            bail!(
                "tensor {name} in {} has shape {:?} but the model config expects {:?}",
                self.source.describe(),
                shape,
                expected
            );
        }
        self.source
            .read_f32(name)
            .with_context(|| format!("reading tensor {name} from {}", self.source.describe()))
    }

    /// Read a tensor as a Burn tensor of rank `D` with the given shape.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let values = self.read(name, &expected)?;
        Ok(Tensor::from_data(TensorData::new(values, expected), device))
    }

    /// A PyTorch `Linear` weight (`[out, in]` on disk) as the `[in, out]` matrix Burn multiplies by.
    pub fn linear_weight<B: Backend>(
        &self,
        name: &str,
        out_features: usize,
        in_features: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        Ok(self
            .tensor::<B, 2>(name, [out_features, in_features], device)?
            .transpose())
    }
}

/// Open a weights file by its format (extension, then magic bytes).
pub fn open(path: &Path) -> Result<Weights> {
    if !path.exists() {
        bail!("weights file {} does not exist", path.display());
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json") {
        return Ok(Weights::new(Box::new(safetensors_file::SafetensorsSource::open(path)?)));
    }
    bail!(
        "{}: unsupported weights format (expected .safetensors, .safetensors.index.json, .bin, .pt or .pth)",
        path.display()
    )
}
