//! The two encoders plugged into the shared engine: how each model is loaded and pooled
//! ([`PooledEncoder`], [`EncoderLoader`]), and how each step's input is read and tokenised.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use burn::tensor::Tensor;

use super::engine::{EncoderLoader, PooledEncoder};
use super::EmbedOptions;
use crate::device::placement::DtypeReadBack;
use crate::io::embeddings::{EmbeddingKind, EmbeddingMeta};
use crate::io::fasta::{input_label, read_unique, FastaReader, FastaRecord, SeqKind};
use crate::models::dnabert_s::DnabertS;
use crate::models::esm2::{Esm2, MAX_POOLED_RESIDUES};
use crate::models::ops::{Matmul, ModelOps};
use crate::models::shape::ModelShape;
use crate::seq::protein::read_proteins;
use crate::tokenize::dnabert::{looks_like_protein, DnaTokenizer};
use crate::tokenize::esm::EsmTokenizer;

pub const ESM_POOLING: &str =
    "mean of the final layer (after emb_layer_norm_after) over residues 1..=min(L,1024)";

pub const DNABERT_POOLING: &str =
    "mean of the last hidden state over all tokens, [CLS] and [SEP] included";

/// An input ready for the engine: record ids, their token ids, and what the output file will
/// say about them.
pub(crate) struct Tokenized {
    pub ids: Vec<String>,
    pub tokens: Vec<Vec<u32>>,
    pub meta: EmbeddingMeta,
}

impl<B: ModelOps> PooledEncoder<B> for Esm2<B> {
    fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2> {
        Esm2::embed(self, batch)
    }
    fn dim(&self) -> usize {
        self.hidden_size()
    }
    fn shape(&self) -> ModelShape {
        self.config().into()
    }
    fn dtypes(&self) -> DtypeReadBack {
        let (w, a) = self.computed_dtypes();
        DtypeReadBack::new(w, a)
    }
}

/// ESM-2 from a Hugging Face directory or a fair-esm checkpoint.
pub(crate) struct EsmLoader(pub PathBuf);

impl EncoderLoader for EsmLoader {
    type Model<B: ModelOps> = Esm2<B>;
    const GPU_BATCH_TOKENS: usize = 32 * 1024;
    fn load<B: ModelOps>(&self, device: &B::Device, matmul: Matmul) -> Result<Esm2<B>> {
        Ok(Esm2::<B>::load_for(&self.0, device, matmul)?.0)
    }
}

impl<B: ModelOps> PooledEncoder<B> for DnabertS<B> {
    fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2> {
        DnabertS::embed(self, batch)
    }
    fn dim(&self) -> usize {
        self.hidden_size()
    }
    fn shape(&self) -> ModelShape {
        self.config().into()
    }
    fn dtypes(&self) -> DtypeReadBack {
        let (w, a) = self.computed_dtypes();
        DtypeReadBack::new(w, a)
    }
}

/// DNABERT-S from a Hugging Face directory (or a weights file in one).
pub(crate) struct DnabertLoader(pub PathBuf);

impl EncoderLoader for DnabertLoader {
    type Model<B: ModelOps> = DnabertS<B>;
    const GPU_BATCH_TOKENS: usize = 64 * 1024;
    fn load<B: ModelOps>(&self, device: &B::Device, matmul: Matmul) -> Result<DnabertS<B>> {
        Ok(DnabertS::<B>::load_for(&self.0, device, matmul)?.0)
    }
}

/// embed-protein's input: ESM-2 tokens of every record, read as proteins
/// ([`crate::seq::protein`]: a record that cannot be read as one, or that looks like
/// nucleotides, is refused by name), with a warning for sequences pooled over their first
/// residues only.
pub(crate) fn protein_input(opts: &EmbedOptions) -> Result<Tokenized> {
    let records = match FastaReader::open_allow_empty(&opts.input)? {
        Some(reader) => read_proteins(reader)?,
        None => empty_input(&opts.input),
    };
    let tokenizer = EsmTokenizer::new();
    let mut long = 0usize;
    let mut ids = Vec::with_capacity(records.len());
    let mut tokens = Vec::with_capacity(records.len());
    for rec in records {
        long += (rec.seq.len() > MAX_POOLED_RESIDUES) as usize;
        tokens.push(tokenizer.encode(&String::from_utf8_lossy(&rec.seq)));
        ids.push(rec.id);
    }
    if long > 0 {
        tracing::warn!(
            "{long} sequences are longer than {MAX_POOLED_RESIDUES} residues: embedded whole (as the original), \
             pooled over the first {MAX_POOLED_RESIDUES}"
        );
    }
    Ok(Tokenized {
        ids,
        tokens,
        meta: meta(EmbeddingKind::Protein, &opts.model, ESM_POOLING),
    })
}

/// embed-dna's input: DNABERT-S tokens of every record (upper-cased, as the original), after
/// refusing any record that looks like a protein (every record is checked: one protein in a
/// mixed file would otherwise be embedded as DNA).
pub(crate) fn dna_input(opts: &EmbedOptions) -> Result<Tokenized> {
    let tokenizer = DnaTokenizer::from_dir(&crate::weights::model_dir(&opts.model))?;
    let records = match read_unique(&opts.input, SeqKind::Nucleotide)? {
        Some(recs) => recs,
        None => empty_input(&opts.input),
    };
    if let Some((i, rec)) = records
        .iter()
        .enumerate()
        .find(|(_, r)| looks_like_protein(&String::from_utf8_lossy(&r.seq)))
    {
        bail!(
            "{}: record #{} ('{}') looks like a protein, not DNA (more than 10% of its letters \
             are E, F, I, J, L, O, P, Q, Z or '*', which no nucleotide code uses); embed-dna \
             expects translate's identified_nucleotide.fa (the .faa goes to embed-protein)",
            input_label(&opts.input),
            i + 1,
            rec.id
        );
    }
    let seqs: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.seq).to_ascii_uppercase())
        .collect();
    let refs: Vec<&str> = seqs.iter().map(String::as_str).collect();
    let tokens = tokenizer.encode_batch(&refs)?;
    let ids: Vec<String> = records.into_iter().map(|r| r.id).collect();
    Ok(Tokenized {
        ids,
        tokens,
        meta: meta(EmbeddingKind::Dna, &opts.model, DNABERT_POOLING),
    })
}

/// The output file's metadata (the precision is filled in once the devices are known).
fn meta(kind: EmbeddingKind, model: &Path, pooling: &str) -> EmbeddingMeta {
    EmbeddingMeta {
        kind,
        model: model_name(model),
        pooling: pooling.into(),
        precision: String::new(),
    }
}

/// An empty input gives no records and a warning (the step writes an empty file).
fn empty_input(input: &Path) -> Vec<FastaRecord> {
    tracing::warn!(
        "{} is empty: writing an empty embeddings file",
        input_label(input)
    );
    Vec::new()
}

/// A short name for a model path: its directory or file name.
fn model_name(path: &Path) -> String {
    let p = if path.is_file()
        && path
            .file_name()
            .is_some_and(|n| !n.to_string_lossy().ends_with(".pt"))
    {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| p.display().to_string())
}
