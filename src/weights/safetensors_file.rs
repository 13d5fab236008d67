//! Safetensors weights, one file (a sharded set, `model.safetensors.index.json`, is one of
//! these per shard under [`super::sharded`]). The file is memory-mapped; a tensor is converted
//! to `f32` only when read.
//!
//! The header is validated once at open (by the `safetensors` crate: offsets inside the file,
//! contiguous, shape × dtype matching each byte range, no arithmetic overflow), after our own
//! check that its declared length is plausible; each tensor's byte range is kept, so a read
//! slices the map without parsing the header again.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::Path;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::{host, TensorSource};

/// The largest header accepted. A header is one JSON line per tensor (ESM-2 3B's is ~100 KB);
/// the `safetensors` crate would parse up to 100 MB, which JSON parsing multiplies in memory.
const MAX_HEADER_BYTES: u64 = 16 << 20;

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Range<usize>,
}

pub struct SafetensorsSource {
    label: String,
    map: Mmap,
    index: HashMap<String, Entry>,
}

impl SafetensorsSource {
    /// Open a `.safetensors` file.
    pub fn open(path: &Path) -> Result<Self> {
        let map = map_checked(path)?;
        let st = SafeTensors::deserialize(&map).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid safetensors file: {}",
                path.display(),
                explain(&e)
            )
        })?;
        let base = map.as_ptr() as usize;
        let index = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                // The view borrows the map: its offset in the map is where its bytes are.
                let start = view.data().as_ptr() as usize - base;
                let entry = Entry {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    bytes: start..start + view.data().len(),
                };
                (name, entry)
            })
            .collect();
        Ok(Self {
            label: path.display().to_string(),
            map,
            index,
        })
    }
}

/// Map a safetensors file after checking that its 8-byte header length fits the file and
/// [`MAX_HEADER_BYTES`].
fn map_checked(file: &Path) -> Result<Mmap> {
    let label = file.display();
    let f = File::open(file).with_context(|| format!("opening {label}"))?;
    // SAFETY: the file is opened read-only and we never hand out references that outlive
    // the map; a concurrent writer could change the bytes, as with any mmap reader.
    let mmap = unsafe { Mmap::map(&f) }.with_context(|| format!("memory-mapping {label}"))?;
    let Some(head) = mmap.get(..8) else {
        bail!(
            "{label} is not a valid safetensors file: {} bytes, shorter than the 8-byte header length",
            mmap.len()
        );
    };
    let n = u64::from_le_bytes(head.try_into().expect("8 bytes"));
    let room = mmap.len() as u64 - 8;
    if n > room || n > MAX_HEADER_BYTES {
        bail!(
            "{label} is not a valid safetensors file: its header claims {n} bytes but {}",
            if n > room {
                format!("the file has only {room} after the length")
            } else {
                format!("headers over {MAX_HEADER_BYTES} bytes are refused")
            }
        );
    }
    Ok(mmap)
}

/// A safetensors error in words (the crate's `Display` prints the variant's name).
fn explain(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::InvalidHeader => "its header is not UTF-8 text".into(),
        SafeTensorError::InvalidHeaderStart => "its header does not start with '{'".into(),
        SafeTensorError::InvalidHeaderDeserialization => "its header is not valid JSON".into(),
        SafeTensorError::HeaderTooLarge => "its header is too large".into(),
        SafeTensorError::HeaderTooSmall => "it is too short to hold a header".into(),
        SafeTensorError::InvalidHeaderLength => {
            "its header length runs past the end of the file".into()
        }
        SafeTensorError::TensorNotFound(name) => format!("tensor {name} is not in it"),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte range does not match its shape and dtype".into()
        }
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor {name}'s byte range is out of order, overlaps another or runs past the end \
             of the file"
        ),
        SafeTensorError::IoError(e) => format!("read error: {e}"),
        SafeTensorError::JsonError(e) => format!("its header is not a tensor table: {e}"),
        SafeTensorError::InvalidTensorView(dtype, shape, len) => {
            format!("a {dtype:?} tensor of shape {shape:?} cannot be made of {len} bytes")
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "its tensors do not cover the data that follows the header (truncated or padded \
             file)"
                .into()
        }
        SafeTensorError::ValidationOverflow => {
            "a tensor's shape is too large (its size overflows)".into()
        }
    }
}

impl TensorSource for SafetensorsSource {
    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.index.get(name).map(|e| e.shape.clone())
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let e = self
            .index
            .get(name)
            .with_context(|| format!("tensor {name} not in {}", self.label))?;
        match self.stored(name) {
            Some(stored) => Ok(host::decode_all(&stored)),
            None => bail!(
                "tensor {name} in {} has dtype {:?}, expected a float",
                self.label,
                e.dtype
            ),
        }
    }

    fn stored(&self, name: &str) -> Option<host::Stored<'_>> {
        let e = self.index.get(name)?;
        let dtype = match e.dtype {
            Dtype::F32 => host::Float::F32,
            Dtype::F16 => host::Float::F16,
            Dtype::BF16 => host::Float::BF16,
            Dtype::F64 => host::Float::F64,
            _ => return None,
        };
        // In bounds: the crate checked every range against the file at open.
        Some(host::Stored {
            bytes: &self.map[e.bytes.clone()],
            dtype,
            big_endian: false,
        })
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}
