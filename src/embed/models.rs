//! The two encoders plugged into the shared engine: how each is loaded and tokenised.

use std::path::PathBuf;

use anyhow::{bail, Result};
use burn::tensor::{backend::Backend, Tensor};

use super::engine::{EncoderLoader, ModelShape, PooledEncoder};
use super::store::EmbeddingMeta;
use super::{claim_output, embed_tokens, model_name, read_input, EmbedOptions, EmbedSummary};
use crate::models::dnabert_s::DnabertS;
use crate::models::esm2::{Esm2, MAX_POOLED_RESIDUES};
use crate::preflight;
use crate::tokenize::dnabert::{looks_like_protein, DnaTokenizer};
use crate::tokenize::esm::{looks_like_nucleotide, EsmTokenizer};

pub const ESM_POOLING: &str =
    "mean of the final layer (after emb_layer_norm_after) over residues 1..=min(L,1024)";

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
}

struct EsmLoader(PathBuf);

impl EncoderLoader for EsmLoader {
    type Model<B: Backend> = Esm2<B>;
    fn load<B: Backend>(&self, device: &B::Device) -> Result<Esm2<B>> {
        Ok(Esm2::<B>::load(&self.0, device)?.0)
    }
}

/// `virnucpro embed-protein`.
pub fn embed_protein(opts: &EmbedOptions) -> Result<EmbedSummary> {
    preflight::esm(&opts.model)?;
    let _lock = claim_output(opts)?;
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
    let meta = EmbeddingMeta {
        kind: "protein".into(),
        model: model_name(&opts.model),
        pooling: ESM_POOLING.into(),
        precision: String::new(),
    };
    embed_tokens(
        opts,
        ids,
        tokens,
        &EsmLoader(opts.model.clone()),
        meta,
        32 * 1024,
    )
}

pub const DNABERT_POOLING: &str =
    "mean of the last hidden state over all tokens, [CLS] and [SEP] included";

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
}

struct DnabertLoader(PathBuf);

impl EncoderLoader for DnabertLoader {
    type Model<B: Backend> = DnabertS<B>;
    fn load<B: Backend>(&self, device: &B::Device) -> Result<DnabertS<B>> {
        Ok(DnabertS::<B>::load(&self.0, device)?.0)
    }
}

/// `virnucpro embed-dna`.
pub fn embed_dna(opts: &EmbedOptions) -> Result<EmbedSummary> {
    // The model (config, tokenizer, weights) is checked before reading any sequence: a wrong
    // --model fails at once with the missing file's name.
    preflight::dnabert(&opts.model)?;
    let _lock = claim_output(opts)?;
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
    let meta = EmbeddingMeta {
        kind: "dna".into(),
        model: model_name(&opts.model),
        pooling: DNABERT_POOLING.into(),
        precision: String::new(),
    };
    embed_tokens(
        opts,
        ids,
        tokens,
        &DnabertLoader(opts.model.clone()),
        meta,
        64 * 1024,
    )
}
