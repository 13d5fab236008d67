//! Reading model weights from the files people actually have: Hugging Face safetensors
//! (single or sharded), PyTorch `pytorch_model.bin` / fair-esm `.pt` zip pickles, and whole
//! pickled modules (VirNucPro's classifier files).
//!
//! Every format is exposed through [`TensorSource`], which hands out one tensor at a time as
//! `f32`, so a 3B-parameter checkpoint is never held twice in memory: the file is memory-mapped
//! and each tensor is converted when the model asks for it.

pub mod pickle;
pub mod safetensors_file;
pub mod sharded;
pub mod torch_file;

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

/// Open a weights file by its format: `*.safetensors` and `*.index.json` by name, anything
/// else (`.bin`, `.pt`, `.pth`, no extension) by its first bytes, so a safetensors file named
/// `.bin` still opens.
pub fn open(path: &Path) -> Result<Weights> {
    Ok(Weights::new(open_source(path)?))
}

/// [`open`], without the [`Weights`] wrapper (shards of an index are opened with it).
pub fn open_source(path: &Path) -> Result<Box<dyn TensorSource>> {
    if !path.exists() {
        bail!("weights file {} does not exist", path.display());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if name.ends_with(".index.json") {
        return open_index(path);
    }
    let torch_extension = [".bin", ".pt", ".pth"].iter().any(|e| name.ends_with(e));
    let format = if name.ends_with(".safetensors") {
        Magic::Safetensors
    } else {
        match sniff(&read_head(path)?) {
            // The torch reader explains what is wrong with a `.bin`/`.pt`/`.pth` it cannot read.
            Magic::Unknown if torch_extension => Magic::Zip,
            magic => magic,
        }
    };
    Ok(match format {
        Magic::Safetensors => Box::new(safetensors_file::SafetensorsSource::open(path)?),
        Magic::Zip | Magic::Pickle => Box::new(torch_file::TorchSource::open(path)?),
        Magic::Unknown => bail!(
            "{}: unrecognised weights format (expected safetensors or a PyTorch zip checkpoint: \
             .safetensors, .safetensors.index.json, .bin, .pt or .pth)",
            path.display()
        ),
    })
}

/// A sharded checkpoint's index: safetensors shards have their own reader; other shards
/// (`pytorch_model-0000x-of-0000y.bin`) are opened one by one.
fn open_index(path: &Path) -> Result<Box<dyn TensorSource>> {
    let files = sharded::weight_map_files(path)?;
    if files.iter().all(|f| f.ends_with(".safetensors")) {
        return Ok(Box::new(safetensors_file::SafetensorsSource::open(path)?));
    }
    Ok(Box::new(sharded::ShardedSource::open(path, open_source)?))
}

/// The first 16 bytes of a file (fewer if it is shorter), enough for [`sniff`].
fn read_head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = Vec::with_capacity(16);
    file.take(16)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(head)
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic {
    /// A zip archive: PyTorch's checkpoint format since 1.6.
    Zip,
    /// A bare pickle: PyTorch's legacy (pre-1.6) format.
    Pickle,
    /// An 8-byte little-endian header length followed by a JSON header.
    Safetensors,
    Unknown,
}

pub fn sniff(head: &[u8]) -> Magic {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Magic::Zip
    } else if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        Magic::Pickle
    } else if head.len() >= 9 && head[8] == b'{' {
        Magic::Safetensors
    } else {
        Magic::Unknown
    }
}
