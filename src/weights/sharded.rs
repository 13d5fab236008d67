//! Several weight files seen as one: Hugging Face's sharded checkpoints, an index file
//! (`pytorch_model.bin.index.json`, `model.safetensors.index.json`:
//! `{"weight_map": {tensor: shard file}}`) beside its shards
//! (`pytorch_model-00001-of-00002.bin`, `model-00001-of-00002.safetensors`, …). Each shard is
//! opened as a file of its own (by its format) and tensors are looked up in the shard that
//! holds them: the one sharded path for every format.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::TensorSource;

/// The most an index file may weigh: ESM-2 3B's is ~60 KB (one line per tensor).
const MAX_INDEX_BYTES: u64 = 16 << 20;

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
        let map = read_weight_map(index_path)?;
        let files = shard_files(index_path, &map)?;
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for file in &files {
            let shard = open_shard(file).with_context(|| {
                format!(
                    "shard {} of {}",
                    file.file_name().unwrap_or_default().to_string_lossy(),
                    index_path.display()
                )
            })?;
            for name in shard.names() {
                index.entry(name).or_insert(shards.len());
            }
            shards.push(shard);
        }
        let source = Self {
            label: index_path.display().to_string(),
            shards,
            index,
        };
        check_listed_tensors(index_path, &map, |name| source.index.contains_key(name))?;
        Ok(source)
    }

    fn shard(&self, name: &str) -> Option<&dyn TensorSource> {
        self.index.get(name).map(|&i| self.shards[i].as_ref())
    }
}

/// An index file's `weight_map`: tensor name -> shard file name (also what `models fetch`
/// downloads for a sharded checkpoint).
pub fn read_weight_map(index_path: &Path) -> Result<Vec<(String, String)>> {
    let label = index_path.display();
    let size = std::fs::metadata(index_path)
        .with_context(|| format!("reading {label}"))?
        .len();
    if size > MAX_INDEX_BYTES {
        bail!("{label} is {size} bytes, too large for a sharded checkpoint's index");
    }
    let text = std::fs::read_to_string(index_path).with_context(|| format!("reading {label}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{label} is not valid JSON"))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{label} has no \"weight_map\" object"))?;
    map.iter()
        .map(|(tensor, file)| {
            let file = file.as_str().with_context(|| {
                format!("{label}: weight_map entry {tensor:?} is not a file name")
            })?;
            Ok((tensor.clone(), file.to_string()))
        })
        .collect()
}

/// The distinct shard files of a weight map, as paths beside the index, in name order.
/// A shard must be a plain file name in the index's own directory (no paths, so an index
/// cannot point elsewhere on the machine) and not itself an index (which would recurse).
fn shard_files(index_path: &Path, map: &[(String, String)]) -> Result<Vec<PathBuf>> {
    let label = index_path.display();
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut names: Vec<&str> = map.iter().map(|(_, f)| f.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        bail!("{label}: the weight_map lists no tensors");
    }
    names
        .into_iter()
        .map(|name| {
            let plain = !name.is_empty()
                && name != "."
                && name != ".."
                && !name.contains(['/', '\\', '\0']);
            if !plain {
                bail!(
                    "{label}: shard {name:?} is not a file name in the index's directory \
                     (shards must sit beside their index)"
                );
            }
            if name.ends_with(".index.json") {
                bail!("{label}: shard {name:?} is itself an index file");
            }
            let path = dir.join(name);
            if !path.is_file() {
                bail!(
                    "{label}: shard {name} is missing (download every shard the index lists \
                     into {})",
                    dir.display()
                );
            }
            Ok(path)
        })
        .collect()
}

/// Every tensor the index lists must be in some shard: a shard from another download, or a
/// truncated one, is then reported by name rather than as a missing tensor later.
fn check_listed_tensors(
    index_path: &Path,
    map: &[(String, String)],
    present: impl Fn(&str) -> bool,
) -> Result<()> {
    let missing: Vec<&(String, String)> = map.iter().filter(|(t, _)| !present(t)).collect();
    if let Some((tensor, file)) = missing.first() {
        bail!(
            "{}: lists {} tensor{} its shards do not hold, e.g. {tensor} in {file} (are the \
             shards from the same download as the index?)",
            index_path.display(),
            missing.len(),
            if missing.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
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

    fn stored(&self, name: &str) -> Option<super::host::Stored<'_>> {
        self.shard(name)?.stored(name)
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}
