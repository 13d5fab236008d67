//! The two encoders plugged into the shared engine: how each model is loaded and pooled
//! ([`PooledEncoder`], [`EncoderLoader`]), and how each step's input is read and tokenised.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use burn::tensor::{backend::Backend, Tensor};

use super::engine::{EncoderLoader, ModelShape, PooledEncoder};
use super::EmbedOptions;
use crate::device::placement::DtypeReadBack;
use crate::embeddings::{EmbeddingKind, EmbeddingMeta};
use crate::fasta::{input_label, read_unique, FastaRecord};
use crate::models::dnabert_s::DnabertS;
use crate::models::esm2::{Esm2, MAX_POOLED_RESIDUES};
use crate::tokenize::dnabert::{looks_like_protein, DnaTokenizer};
use crate::tokenize::esm::{looks_like_nucleotide, EsmTokenizer};

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

impl<B: Backend> PooledEncoder<B> for Esm2<B> {
    fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2> {
        Esm2::embed(self, batch)
    }
    fn dim(&self) -> usize {
        self.hidden_size()
    }
    fn shape(&self) -> ModelShape {
        let c = self.config();
        ModelShape {
            hidden: c.hidden,
            intermediate: c.ffn,
            heads: c.heads,
            layers: c.num_layers,
        }
    }
    fn dtypes(&self) -> DtypeReadBack {
        let (w, a) = self.computed_dtypes();
        DtypeReadBack::new(w, a)
    }
}

/// ESM-2 from a Hugging Face directory or a fair-esm checkpoint.
pub(crate) struct EsmLoader(pub PathBuf);

impl EncoderLoader for EsmLoader {
    type Model<B: Backend> = Esm2<B>;
    const GPU_BATCH_TOKENS: usize = 32 * 1024;
    fn load<B: Backend>(&self, device: &B::Device) -> Result<Esm2<B>> {
        Ok(Esm2::<B>::load(&self.0, device)?.0)
    }
}

impl<B: Backend> PooledEncoder<B> for DnabertS<B> {
    fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2> {
        DnabertS::embed(self, batch)
    }
    fn dim(&self) -> usize {
        self.hidden_size()
    }
    fn shape(&self) -> ModelShape {
        let c = self.config();
        ModelShape {
            hidden: c.hidden_size,
            // The gated MLP's up-projection is twice the intermediate size.
            intermediate: 2 * c.intermediate_size,
            heads: c.num_attention_heads,
            layers: c.num_hidden_layers,
        }
    }
    fn dtypes(&self) -> DtypeReadBack {
        let (w, a) = self.computed_dtypes();
        DtypeReadBack::new(w, a)
    }
}

/// DNABERT-S from a Hugging Face directory (or a weights file in one).
pub(crate) struct DnabertLoader(pub PathBuf);

impl EncoderLoader for DnabertLoader {
    type Model<B: Backend> = DnabertS<B>;
    const GPU_BATCH_TOKENS: usize = 64 * 1024;
    fn load<B: Backend>(&self, device: &B::Device) -> Result<DnabertS<B>> {
        Ok(DnabertS::<B>::load(&self.0, device)?.0)
    }
}

/// embed-protein's input: ESM-2 tokens of every record, with warnings for inputs that look
/// like nucleotides and for sequences pooled over their first residues only.
pub(crate) fn protein_input(opts: &EmbedOptions) -> Result<Tokenized> {
    let records = read_input(&opts.input)?;
    let tokenizer = EsmTokenizer::new();
    let mut nucleotide_like = 0usize;
    let mut long = 0usize;
    let mut ids = Vec::with_capacity(records.len());
    let mut tokens = Vec::with_capacity(records.len());
    for rec in records {
        let seq = String::from_utf8_lossy(&rec.seq);
        nucleotide_like += looks_like_nucleotide(&seq) as usize;
        long += (rec.seq.len() > MAX_POOLED_RESIDUES) as usize;
        tokens.push(tokenizer.encode(&seq));
        ids.push(rec.id);
    }
    if nucleotide_like * 2 > ids.len() && !ids.is_empty() {
        tracing::warn!(
            "{}: {nucleotide_like} of {} sequences look like nucleotides, not proteins; embed-protein expects \
             translate's identified_protein.faa (did you pass the .fa instead?)",
            opts.input.display(),
            ids.len()
        );
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
/// refusing an input that looks like proteins.
pub(crate) fn dna_input(opts: &EmbedOptions) -> Result<Tokenized> {
    let tokenizer = DnaTokenizer::from_dir(&crate::weights::model_dir(&opts.model))?;
    let records = read_input(&opts.input)?;
    if let Some(rec) = records
        .iter()
        .take(1000)
        .find(|r| looks_like_protein(&String::from_utf8_lossy(&r.seq)))
    {
        bail!(
            "{}: record '{}' looks like a protein, not DNA; embed-dna expects translate's identified_nucleotide.fa \
             (the .faa goes to embed-protein)",
            opts.input.display(),
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

/// Records of an embedding input; an empty file gives no records and a warning.
fn read_input(input: &Path) -> Result<Vec<FastaRecord>> {
    match read_unique(input)? {
        Some(recs) => Ok(recs),
        None => {
            tracing::warn!(
                "{} is empty: writing an empty embeddings file",
                input_label(input)
            );
            Ok(Vec::new())
        }
    }
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
