//! Embedding files, the format between `embed-dna`/`embed-protein` (which write them) and
//! `predict` (which joins them): one safetensors file per input (or shard) holding tensor
//! `embeddings` (F32 `[N, D]`, rows in input order) and, in its metadata, `ids` (newline-joined
//! record ids), `model`, `dim`, `pooling`, `kind` and `precision`. Python reads it in one call:
//! `safetensors.numpy.load_file(path)["embeddings"]`, and the metadata with `safe_open(...).metadata()`.
//! The embedding checkpoints' part files use the same format (kind `checkpoint`).

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};

use crate::io::output::write_atomic;

pub const TENSOR_NAME: &str = "embeddings";
pub const FORMAT: &str = "virnucpro-embeddings/1";

/// Embeddings of one file, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingSet {
    pub ids: Vec<String>,
    pub dim: usize,
    /// Row-major `[ids.len(), dim]`.
    pub values: Vec<f32>,
    pub meta: EmbeddingMeta,
}

/// What produced the embeddings; `predict` refuses to mix files whose metadata disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingMeta {
    pub kind: EmbeddingKind,
    /// The model's name (its directory or file name) and shape.
    pub model: String,
    pub pooling: String,
    pub precision: String,
}

/// Which side of the classifier's input a file holds, as its `kind` metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingKind {
    /// `dna`: DNABERT-S embeddings of nucleotide ORFs (`embed-dna`).
    Dna,
    /// `protein`: ESM-2 embeddings of protein ORFs (`embed-protein`).
    Protein,
    /// `checkpoint`: a part of an unfinished embedding step, rows keyed by sequence index.
    Checkpoint,
    /// Anything else a file may say (not written by this program); kept for messages.
    Other(String),
}

impl EmbeddingKind {
    /// The word in the file's metadata.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Dna => "dna",
            Self::Protein => "protein",
            Self::Checkpoint => "checkpoint",
            Self::Other(s) => s,
        }
    }
}

impl From<&str> for EmbeddingKind {
    fn from(s: &str) -> Self {
        match s {
            "dna" => Self::Dna,
            "protein" => Self::Protein,
            "checkpoint" => Self::Checkpoint,
            other => Self::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for EmbeddingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EmbeddingSet {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        assert_eq!(self.values.len(), self.ids.len() * self.dim);
        if let Some(bad) = self.ids.iter().find(|id| id.contains('\n')) {
            bail!("record id {bad:?} contains a newline");
        }
        // Written by hand rather than with `safetensors::serialize`, whose metadata map is a
        // HashMap: its random order would make two runs' files differ byte for byte, and resumed
        // runs must be byte-identical. BTreeMap keys are sorted; the layout is the standard one
        // (u64 LE header size, JSON header padded to 8 bytes, little-endian data).
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("format", FORMAT.to_string());
        meta.insert("ids", self.ids.join("\n"));
        meta.insert("dim", self.dim.to_string());
        meta.insert("kind", self.meta.kind.to_string());
        meta.insert("model", self.meta.model.clone());
        meta.insert("pooling", self.meta.pooling.clone());
        meta.insert("precision", self.meta.precision.clone());
        let n_bytes = self.values.len() * 4;
        let header = serde_json::json!({
            "__metadata__": meta,
            TENSOR_NAME: { "dtype": "F32", "shape": [self.ids.len(), self.dim], "data_offsets": [0, n_bytes] },
        });
        let mut header = serde_json::to_vec(&header)?;
        header.resize(header.len().div_ceil(8) * 8, b' ');
        let mut data = Vec::with_capacity(8 + header.len() + n_bytes);
        data.extend_from_slice(&(header.len() as u64).to_le_bytes());
        data.extend_from_slice(&header);
        for v in &self.values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        write_atomic(path, &data)
    }

    /// Read a whole file into memory.
    pub fn read(path: &Path) -> Result<Self> {
        let mapped = MappedSet::open(path)?;
        let mut values = Vec::new();
        extend_f32(mapped.data(), &mut values);
        Ok(Self {
            ids: mapped.ids,
            dim: mapped.dim,
            values,
            meta: mapped.meta,
        })
    }
}

/// An embeddings file mapped rather than read: ids and metadata in memory, rows read from the
/// map on demand. `predict` joins samples of millions of ORFs (≈ 13 kB of embeddings each)
/// this way: the rows stay in the page cache, which the kernel can drop and re-read, instead
/// of in the process's own memory.
pub struct MappedSet {
    /// The file, for messages.
    pub label: String,
    pub ids: Vec<String>,
    pub dim: usize,
    pub meta: EmbeddingMeta,
    map: memmap2::Mmap,
    /// Byte range of the `embeddings` tensor in `map`.
    data: std::ops::Range<usize>,
}

impl MappedSet {
    pub fn open(path: &Path) -> Result<Self> {
        let label = path.display();
        let file =
            File::open(path).with_context(|| format!("cannot open embeddings file {label}"))?;
        // SAFETY: read-only map of a file we only read; see weights::safetensors_file.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot read {label}"))?;
        let (_, header) = SafeTensors::read_metadata(&map)
            .with_context(|| format!("{label} is not a safetensors embeddings file"))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            bail!("{label} was not written by virnucpro embed-dna/embed-protein (no '{FORMAT}' metadata)");
        }
        let st = SafeTensors::deserialize(&map).with_context(|| format!("{label} is corrupt"))?;
        let view = st
            .tensor(TENSOR_NAME)
            .with_context(|| format!("{label} has no '{TENSOR_NAME}' tensor"))?;
        if view.dtype() != Dtype::F32 || view.shape().len() != 2 {
            bail!(
                "{label}: '{TENSOR_NAME}' must be F32 [N, D], found {:?} {:?}",
                view.dtype(),
                view.shape()
            );
        }
        let (n, dim) = (view.shape()[0], view.shape()[1]);
        let ids: Vec<String> = match meta.get("ids").map(String::as_str) {
            Some("") | None => Vec::new(),
            Some(s) => s.split('\n').map(str::to_string).collect(),
        };
        if ids.len() != n {
            bail!(
                "{label}: {} ids in the metadata but {n} embedding rows",
                ids.len()
            );
        }
        // The metadata's width must be the tensor's: a file edited or assembled by hand that
        // disagrees would be split wrongly between the DNA and protein halves of a feature row.
        if let Some(stated) = meta.get("dim") {
            if stated.parse::<usize>().ok() != Some(dim) {
                bail!(
                    "{label}: its metadata says the embeddings are {stated}-d but the \
                     '{TENSOR_NAME}' tensor is {dim}-d; the file is corrupt, embed again"
                );
            }
        }
        // Where the tensor's bytes lie in the map (deserialize checked them against the file).
        let start = view.data().as_ptr() as usize - map.as_ptr() as usize;
        let data = start..start + view.data().len();
        let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
        Ok(Self {
            label: label.to_string(),
            ids,
            dim,
            meta: EmbeddingMeta {
                kind: get("kind").as_str().into(),
                model: get("model"),
                pooling: get("pooling"),
                precision: get("precision"),
            },
            map,
            data,
        })
    }

    fn data(&self) -> &[u8] {
        &self.map[self.data.clone()]
    }

    /// Append row `i` to `out`, refusing a row with a NaN or infinite value (a model that
    /// overflowed, or a damaged file): classified, it would give a meaningless score.
    pub fn extend_row(&self, i: usize, out: &mut Vec<f32>) -> Result<()> {
        let start = out.len();
        extend_f32(&self.data()[i * self.dim * 4..(i + 1) * self.dim * 4], out);
        if let Some(col) = out[start..].iter().position(|v| !v.is_finite()) {
            let v = out[start + col];
            out.truncate(start);
            bail!(
                "{}: the embedding of ORF '{}' (row {}) holds {v} at column {}; embeddings must be \
                 finite numbers: embed this file again (with --precision f32 if it was made in f16)",
                self.label,
                self.ids[i],
                i + 1,
                col + 1
            );
        }
        Ok(())
    }
}

/// Append the little-endian f32 values in `bytes` to `out`.
fn extend_f32(bytes: &[u8], out: &mut Vec<f32>) {
    out.reserve(bytes.len() / 4);
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let set = EmbeddingSet {
            ids: vec!["a_chunk_1F1".into(), "b_chunk_2R3".into()],
            dim: 3,
            values: vec![1.0, 2.0, 3.0, -1.5, 0.25, 1e-7],
            meta: EmbeddingMeta {
                kind: "protein".into(),
                model: "esm2_tiny".into(),
                pooling: "mean".into(),
                precision: "f32".into(),
            },
        };
        let p = dir.path().join("e.safetensors");
        set.write(&p).unwrap();
        assert_eq!(EmbeddingSet::read(&p).unwrap(), set);
    }

    #[test]
    fn kinds_read_back_as_written() {
        for word in ["dna", "protein", "checkpoint", "something-else", ""] {
            let kind = EmbeddingKind::from(word);
            assert_eq!(kind.as_str(), word);
            assert_eq!(kind.to_string(), word);
        }
        assert_eq!(EmbeddingKind::from("dna"), EmbeddingKind::Dna);
        assert_eq!(EmbeddingKind::from("protein"), EmbeddingKind::Protein);
    }

    #[test]
    fn empty_set_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let set = EmbeddingSet {
            ids: vec![],
            dim: 8,
            values: vec![],
            meta: EmbeddingMeta {
                kind: "dna".into(),
                model: "m".into(),
                pooling: "p".into(),
                precision: "f32".into(),
            },
        };
        let p = dir.path().join("e.safetensors");
        set.write(&p).unwrap();
        assert_eq!(EmbeddingSet::read(&p).unwrap(), set);
    }

    fn three_rows(values: Vec<f32>) -> EmbeddingSet {
        EmbeddingSet {
            ids: vec![
                "a_chunk_1F1".into(),
                "a_chunk_1R2".into(),
                "b_chunk_1F3".into(),
            ],
            dim: 2,
            values,
            meta: EmbeddingMeta {
                kind: "dna".into(),
                model: "m".into(),
                pooling: "mean".into(),
                precision: "f32".into(),
            },
        }
    }

    #[test]
    fn non_finite_rows_are_refused_naming_file_orf_and_row() {
        let dir = tempfile::tempdir().unwrap();
        for (bad, shown) in [
            (f32::NAN, "NaN"),
            (f32::INFINITY, "inf"),
            (f32::NEG_INFINITY, "-inf"),
        ] {
            let p = dir.path().join("bad.safetensors");
            three_rows(vec![0.5, 1.0, 2.0, bad, 3.0, 4.0])
                .write(&p)
                .unwrap();
            let set = MappedSet::open(&p).unwrap();
            let mut out = Vec::new();
            set.extend_row(0, &mut out).unwrap();
            set.extend_row(2, &mut out).unwrap();
            assert_eq!(out, [0.5, 1.0, 3.0, 4.0]);
            let err = format!("{:#}", set.extend_row(1, &mut out).unwrap_err());
            for needle in [
                "bad.safetensors",
                "'a_chunk_1R2'",
                "row 2",
                shown,
                "column 2",
            ] {
                assert!(err.contains(needle), "{needle:?} not in {err}");
            }
            assert_eq!(out.len(), 4, "a refused row is not appended");
        }
    }

    #[test]
    fn metadata_width_must_match_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.safetensors");
        three_rows(vec![0.0; 6]).write(&p).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes
            .windows(9)
            .position(|w| w == b"\"dim\":\"2\"")
            .expect("dim in the header");
        bytes[at + 7] = b'3';
        std::fs::write(&p, bytes).unwrap();
        let err = format!("{:#}", MappedSet::open(&p).err().unwrap());
        assert!(
            err.contains("e.safetensors") && err.contains("3-d") && err.contains("2-d"),
            "{err}"
        );
    }
}
