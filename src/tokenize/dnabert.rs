//! The DNABERT-S tokeniser: the model's own `tokenizer.json` (BPE), read with the `tokenizers`
//! crate so that ids match Hugging Face's exactly (docs/method.md, "DNABERT-S embedding").
//!
//! Encoding adds `[CLS]` … `[SEP]` as the file's post-processor says; characters outside the
//! BPE alphabet (`N`, IUPAC codes, lower case) become `[UNK]`. The sequence is used as given:
//! callers decide about case, as the original passes its chunks straight to the tokenizer.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::Tokenizer;

const TOKENIZER_FILE: &str = "tokenizer.json";
const PAD_TOKEN: &str = "[PAD]";

/// Maps DNA strings to DNABERT-S token ids.
#[derive(Clone)]
pub struct DnaTokenizer {
    inner: Tokenizer,
    pad_id: u32,
}

impl std::fmt::Debug for DnaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnaTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl DnaTokenizer {
    /// Read `tokenizer.json` from a model directory (or from the directory of a file in it,
    /// such as the weights file or `tokenizer.json` itself).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let dir = if dir.is_file() {
            dir.parent().unwrap_or(Path::new("."))
        } else {
            dir
        };
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            bail!(
                "{} not found: DNABERT-S needs the model's {TOKENIZER_FILE} (download it with \
                 config.json and the weights from zhihan1996/DNABERT-S into {})",
                path.display(),
                dir.display()
            );
        }
        Self::from_file(&path)
    }

    /// Read a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow!(e))
            .with_context(|| {
                format!(
                    "{}: not a valid Hugging Face tokenizer.json",
                    path.display()
                )
            })?;
        // Hugging Face's Python tokenizer switches off the file's padding and truncation when
        // called without those arguments, as the original does: ids must never be padded or cut.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| anyhow!(e))
            .context("disabling truncation")?;
        let pad_id = inner.token_to_id(PAD_TOKEN).with_context(|| {
            format!(
                "{}: no {PAD_TOKEN} token (is this a DNABERT tokenizer?)",
                path.display()
            )
        })?;
        Ok(Self { inner, pad_id })
    }

    /// Token ids of one sequence, `[CLS]` and `[SEP]` included.
    pub fn encode(&self, seq: &str) -> Result<Vec<u32>> {
        // `encode_fast` skips the offset bookkeeping we never read.
        let encoding = self
            .inner
            .encode_fast(seq, true)
            .map_err(|e| anyhow!(e))
            .context("tokenizing a DNA sequence")?;
        Ok(encoding.get_ids().to_vec())
    }

    /// [`encode`](Self::encode) for many sequences at once, on the tokenizers' thread pool.
    /// Each result has its own length: padding is disabled at load.
    pub fn encode_batch(&self, seqs: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .inner
            .encode_batch_fast(seqs.to_vec(), true)
            .map_err(|e| anyhow!(e))
            .context("tokenizing DNA sequences")?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// The id of `[PAD]`. Any id works for padding (padded positions are masked); this one is
    /// what the original would use.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of ids, added tokens included (must not exceed the model's `vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Whether `seq` looks like a protein rather than DNA: more than 10% of its letters are not
/// IUPAC nucleotide codes (`E F I J L O P Q Z`, plus `*` stops). Real DNA, ambiguity codes
/// included, never has these; proteins have ~35% of them (mostly `L`, `I`, `E`, `P`, `F`, `Q`).
/// `X` counts for neither: both alphabets use it for "unknown".
pub fn looks_like_protein(seq: &str) -> bool {
    let (mut residues, mut foreign) = (0usize, 0usize);
    for c in seq.bytes() {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_alphabetic() || c == b'*' {
            residues += 1;
            foreign += matches!(
                c,
                b'E' | b'F' | b'I' | b'J' | b'L' | b'O' | b'P' | b'Q' | b'Z' | b'*'
            ) as usize;
        }
    }
    foreign * 10 > residues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protein_detection() {
        assert!(!looks_like_protein("ACGTACGTNNNNacgtRYKMSWBDHV"));
        assert!(!looks_like_protein(""));
        assert!(!looks_like_protein("ACGTXXXX"));
        assert!(looks_like_protein("MKLVPEFIQ"));
        assert!(looks_like_protein(
            "MSKGEELFTGVVPILVELDGDVNGHKFSVSGEGEGDATYGKLTLKFICTTGKLPVPWPTLVTTFSYGVQCFSR"
        ));
        // One stray letter in 50 bases is still DNA.
        assert!(!looks_like_protein(
            "ACGTACGTACGTACGTACGTACGTLCGTACGTACGTACGTACGTACGTAC"
        ));
    }
}
