//! Several weight files seen as one: Hugging Face's sharded `pytorch_model.bin.index.json`
//! (`{"weight_map": {tensor: shard file}}`). Sharded safetensors are handled by
//! [`super::safetensors_file`] itself.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

use super::TensorSource;

pub struct ShardedSource {
    label: String,
    shards: Vec<Box<dyn TensorSource>>,
    /// tensor name -> shard index
    index: HashMap<String, usize>,
}

impl ShardedSource {
    /// Open every shard named in an index file's `weight_map` with `open_shard`.
    pub fn open(
        index_path: &Path,
        open_shard: impl Fn(&Path) -> Result<Box<dyn TensorSource>>,
    ) -> Result<Self> {
        let files = weight_map_files(index_path)?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for file in files {
            let shard = open_shard(&dir.join(&file))
                .with_context(|| format!("shard {file} of {}", index_path.display()))?;
            for name in shard.names() {
                index.entry(name).or_insert(shards.len());
            }
            shards.push(shard);
        }
        Ok(Self {
            label: index_path.display().to_string(),
            shards,
            index,
        })
    }

    fn shard(&self, name: &str) -> Option<&dyn TensorSource> {
        self.index.get(name).map(|&i| self.shards[i].as_ref())
    }
}

/// The distinct shard file names of an index file, sorted.
pub fn weight_map_files(index_path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index_path)
        .with_context(|| format!("reading {}", index_path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index_path.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{} has no \"weight_map\"", index_path.display()))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

impl TensorSource for ShardedSource {
    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.shard(name)?.shape(name)
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.shard(name)
            .with_context(|| format!("tensor {name} not in {}", self.label))?
            .read_f32(name)
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}
