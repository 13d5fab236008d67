//! Safetensors weights, one file or a sharded set described by `model.safetensors.index.json`.
//! Files are memory-mapped; a tensor is converted to `f32` only when read.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::TensorSource;

pub struct SafetensorsSource {
    label: String,
    shards: Vec<Mmap>,
    /// tensor name -> (shard index, shape)
    index: HashMap<String, (usize, Vec<usize>)>,
}

impl SafetensorsSource {
    /// Open `model.safetensors` or a `*.safetensors.index.json` (sharded checkpoint).
    pub fn open(path: &Path) -> Result<Self> {
        let files: Vec<PathBuf> = if path.to_string_lossy().ends_with(".index.json") {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .with_context(|| format!("{} has no \"weight_map\"", path.display()))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut names: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            vec![path.to_path_buf()]
        };
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
            // SAFETY: the file is opened read-only and we never hand out references that outlive
            // the map; a concurrent writer could change the bytes, as with any mmap reader.
            let mmap = unsafe { Mmap::map(&f) }
                .with_context(|| format!("memory-mapping {}", file.display()))?;
            let st = SafeTensors::deserialize(&mmap)
                .with_context(|| format!("{} is not a valid safetensors file", file.display()))?;
            for (name, view) in st.tensors() {
                index.insert(name, (i, view.shape().to_vec()));
            }
            shards.push(mmap);
        }
        Ok(Self {
            label: path.display().to_string(),
            shards,
            index,
        })
    }
}

impl TensorSource for SafetensorsSource {
    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.index.get(name).map(|(_, s)| s.clone())
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (shard, _) = self
            .index
            .get(name)
            .with_context(|| format!("tensor {name} not in {}", self.label))?;
        let st = SafeTensors::deserialize(&self.shards[*shard])?;
        let view = st.tensor(name)?;
        let bytes = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            other => bail!(
                "tensor {name} in {} has dtype {other:?}, expected a float",
                self.label
            ),
        })
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}
