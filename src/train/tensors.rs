//! Named f32 tensors to and from safetensors bytes: the classifier files `train` writes
//! (`predict` reads them with its own loader) and the training checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};

use super::model::HostTensor;

/// The safetensors bytes of `tensors` (in the given order) with string `metadata`. Written by
/// hand like the embeddings files: sorted metadata keys, so equal contents give equal bytes.
pub fn to_bytes(tensors: &[HostTensor], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    }
    let mut offset = 0usize;
    for t in tensors {
        assert_eq!(t.values.len(), t.shape.iter().product::<usize>());
        let end = offset + t.values.len() * 4;
        header.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&header)?;
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for t in tensors {
        for v in &t.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

/// Every F32 tensor of a safetensors file, by name, and its metadata.
pub fn read(path: &Path) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!(
                "{}: tensor {name} is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(
            name.clone(),
            HostTensor {
                name,
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let tensors = vec![
            HostTensor {
                name: "b".into(),
                shape: vec![2, 3],
                values: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5],
            },
            HostTensor {
                name: "a".into(),
                shape: vec![1],
                values: vec![0.25],
            },
        ];
        let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
        std::fs::write(&p, to_bytes(&tensors, &meta).unwrap()).unwrap();
        let (back, m) = read(&p).unwrap();
        assert_eq!(m, meta);
        assert_eq!(back["b"], tensors[0]);
        assert_eq!(back["a"], tensors[1]);
    }
}
