//! DNABERT-S (MosaicBERT / DNABERT-2 `bert_layers.BertModel`) nucleotide encoder and
//! VirNucPro's mean pooling. See docs/method.md, "DNABERT-S embedding".
//!
//! Inference only. The module is built straight from the checkpoint's tensors. The forward
//! follows the original's PyTorch attention path: word + token-type-0 embeddings and LayerNorm
//! (no position embeddings), post-LN layers with a fused `Wqkv`, ALiBi position bias, and a
//! gated-GELU MLP. The original runs unpadded; here a batch is padded and padded keys are
//! masked out of attention and padded rows out of the mean, which gives the same numbers.

use std::cell::OnceCell;
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData};
use serde::Deserialize;

use super::composed::{alibi_attention_composed, AlibiBatch};
use super::layers::{Dense, Norm};
use super::ops::{Kernels, Matmul, ModelOps};
use crate::weights::{self, loader::TensorLoader, Weights};

const CONFIG_FILE: &str = "config.json";

/// Checkpoints saved from a model with a head prefix every name with `bert.`.
const PREFIXES: [&str; 2] = ["", "bert."];

/// Tensors of DNABERT-S checkpoints that VirNucPro's embedding never used: the pooler (the
/// original averages the last hidden states), masked-LM / classification heads, and
/// position-id buffers (MosaicBERT has no position embeddings).
fn unused_by_dnabert_s(name: &str) -> bool {
    let name = name.strip_prefix("bert.").unwrap_or(name);
    ["pooler.", "cls.", "classifier.", "lm_head."]
        .iter()
        .any(|p| name.starts_with(p))
        || name.ends_with("position_ids")
}

/// The fields of the model's `config.json` that the forward uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DnabertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    pub vocab_size: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default)]
    pub pad_token_id: u32,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}

impl DnabertConfig {
    /// Read `config.json` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        if !path.is_file() {
            bail!(
                "{} not found: DNABERT-S needs the model's {CONFIG_FILE} next to its weights \
                 (download it with tokenizer.json and the weights from zhihan1996/DNABERT-S)",
                path.display()
            );
        }
        Self::from_file(&path)
    }

    /// Read a `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a DNABERT-S config.json", path.display()))?;
        config
            .validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(config)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn validate(&self) -> Result<()> {
        let heads = self.num_attention_heads;
        if heads == 0 || self.hidden_size == 0 || !self.hidden_size.is_multiple_of(heads) {
            bail!(
                "hidden_size {} does not split into {heads} attention heads",
                self.hidden_size
            );
        }
        if self.vocab_size == 0 || self.type_vocab_size == 0 {
            bail!("vocab_size and type_vocab_size must be positive");
        }
        if self.pad_token_id as usize >= self.vocab_size {
            bail!(
                "pad_token_id {} is outside the vocabulary of {}",
                self.pad_token_id,
                self.vocab_size
            );
        }
        Ok(())
    }
}

/// One post-LN MosaicBERT layer.
#[derive(Module, Debug)]
pub struct DnabertLayer<B: Backend> {
    wqkv: Dense<B>,
    attn_out: Dense<B>,
    attn_norm: Norm<B>,
    /// The checkpoint's `gated_layers` (`[2·intermediate, hidden]`, no bias) split on the host
    /// at load into its GELU half and its linear half, each uploaded contiguous: two GEMMs
    /// writing contiguous outputs, so the GELU and the product run on dense memory instead of
    /// strided halves of one wide output (the same dot products, so the same numbers), and no
    /// matmul ever sees a strided weight view (`TensorLoader::split_linear`).
    gate: Dense<B>,
    up: Dense<B>,
    wo: Dense<B>,
    mlp_norm: Norm<B>,
}

impl<B: Backend> DnabertLayer<B> {
    fn for_matmul(self, matmul: Matmul) -> Self {
        Self {
            wqkv: self.wqkv.for_matmul(matmul),
            attn_out: self.attn_out.for_matmul(matmul),
            gate: self.gate.for_matmul(matmul),
            up: self.up.for_matmul(matmul),
            wo: self.wo.for_matmul(matmul),
            ..self
        }
    }
}

impl<B: ModelOps> DnabertLayer<B> {
    /// `kernels`: the backend's own [`ModelOps`] or the generic composition, and the products'
    /// precision.
    fn forward(&self, x: Tensor<B, 3>, batch: &AlibiBatch<B>, kernels: Kernels) -> Tensor<B, 3> {
        let qkv = self.wqkv.forward_fused(x.clone(), None, false, kernels);
        let attn = if kernels.backend_ops {
            B::alibi_attention(qkv, batch)
        } else {
            alibi_attention_composed(qkv, batch)
        };
        let x = self.attn_norm.forward(
            self.attn_out.forward_fused(attn, Some(&x), false, kernels),
            kernels.backend_ops,
        );

        // The gated MLP: GELU(x·gate) ⊙ (x·up), each projection through the backend.
        let h = self.gate.forward_fused(x.clone(), None, true, kernels)
            * self.up.forward_fused(x.clone(), None, false, kernels);
        self.mlp_norm.forward(
            self.wo.forward_fused(h, Some(&x), false, kernels),
            kernels.backend_ops,
        )
    }
}

/// The DNABERT-S encoder.
#[derive(Module, Debug)]
pub struct DnabertS<B: Backend> {
    /// `word_embeddings + token_type_embeddings[0]`, summed at load: every token has type 0,
    /// and the sum is the same f32 addition the original does per token.
    embeddings: Param<Tensor<B, 2>>,
    emb_norm: Norm<B>,
    layers: Vec<DnabertLayer<B>>,
    /// ALiBi slopes negated, as f32 like the original's table.
    #[module(skip)]
    neg_slopes: Vec<f32>,
    #[module(skip)]
    config: DnabertConfig,
    /// Whether the backend's own ops run ([`ModelOps`]: the fused CPU kernels; always, except
    /// to compare them with the generic composition) and what the projections multiply in.
    #[module(skip)]
    kernels: Kernels,
}

/// The layers of a DNABERT-S checkpoint, read through the shared [`TensorLoader`].
struct LayerReader<'a, B: Backend> {
    tensors: TensorLoader<'a, B>,
    config: &'a DnabertConfig,
    /// What the projections will multiply in (bf16 products load packed weights).
    matmul: Matmul,
}

impl<B: Backend> LayerReader<'_, B> {
    fn dense(&self, module: &str, out: usize, inp: usize, bias: bool) -> Result<Dense<B>> {
        Dense::load(&self.tensors, module, out, inp, bias, self.matmul)
    }

    fn norm(&self, module: &str) -> Result<Norm<B>> {
        let c = self.config;
        Norm::load(&self.tensors, module, c.hidden_size, c.layer_norm_eps)
    }

    fn layer(&self, i: usize) -> Result<DnabertLayer<B>> {
        let (d, inter) = (self.config.hidden_size, self.config.intermediate_size);
        let at = |m: &str| format!("encoder.layer.{i}.{m}");
        let [gate, up] = Dense::load_split(
            &self.tensors,
            &at("mlp.gated_layers"),
            2 * inter,
            d,
            [0..inter, inter..2 * inter],
            self.matmul,
        )?;
        Ok(DnabertLayer {
            wqkv: self.dense(&at("attention.self.Wqkv"), 3 * d, d, true)?,
            attn_out: self.dense(&at("attention.output.dense"), d, d, true)?,
            attn_norm: self.norm(&at("attention.output.LayerNorm"))?,
            gate,
            up,
            wo: self.dense(&at("mlp.wo"), d, inter, true)?,
            mlp_norm: self.norm(&at("mlp.layernorm"))?,
        })
    }
}

impl<B: ModelOps> DnabertS<B> {
    /// Load from an HF model directory (`config.json` + any layout transformers reads:
    /// `model.safetensors`, `pytorch_model.bin`, or either's `.index.json` with its shards) or
    /// from a weights file beside its `config.json`, for f32 products.
    pub fn load(path: &Path, device: &B::Device) -> Result<(Self, DnabertConfig)> {
        Self::load_for(path, device, Matmul::F32)
    }

    /// [`Self::load`] for products in `matmul`: bf16 products on a CPU with AMX load every
    /// projection's weight straight into bf16 tiles.
    pub fn load_for(
        path: &Path,
        device: &B::Device,
        matmul: Matmul,
    ) -> Result<(Self, DnabertConfig)> {
        let weights_path = weights::locate(path, "DNABERT-S")?;
        let config = DnabertConfig::from_dir(&weights::model_dir(path))?;
        let started = std::time::Instant::now();
        let weights = weights::open(&weights_path)?;
        let opened = started.elapsed();
        let model = Self::from_weights(&weights, config.clone(), device, matmul)?;
        weights.check_all_used(
            unused_by_dnabert_s,
            "is num_hidden_layers in config.json right?",
        )?;
        weights::log_load("DNABERT-S", &weights, opened, started.elapsed());
        Ok((model, config))
    }

    /// Build from already-opened weights (HF names, with or without `bert.`), for products
    /// in `matmul`.
    pub fn from_weights(
        weights: &Weights,
        config: DnabertConfig,
        device: &B::Device,
        matmul: Matmul,
    ) -> Result<Self> {
        config.validate()?;
        let reader = LayerReader::<B> {
            tensors: TensorLoader::new(weights, &PREFIXES, device),
            config: &config,
            matmul,
        };
        let d = config.hidden_size;
        let word = reader
            .tensors
            .tensor("embeddings.word_embeddings.weight", [config.vocab_size, d])?;
        let token_type = reader.tensors.tensor(
            "embeddings.token_type_embeddings.weight",
            [config.type_vocab_size, d],
        )?;
        let embeddings = word + token_type.slice_dim(0, 0..1);
        let emb_norm = reader.norm("embeddings.LayerNorm")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| reader.layer(i))
            .collect::<Result<Vec<_>>>()?;
        let neg_slopes = alibi_slopes(config.num_attention_heads)
            .into_iter()
            .map(|s| -(s as f32))
            .collect();
        Ok(Self {
            embeddings: Param::from_tensor(embeddings),
            emb_norm,
            layers,
            neg_slopes,
            config,
            kernels: Kernels {
                matmul,
                ..Kernels::default()
            },
        })
    }

    /// The same model on Burn's generic ops only, also on the CPU backend: the path the GPU
    /// backends take, for tests and benchmarks that compare it with the fused CPU attention.
    pub fn without_cpu_kernels(mut self) -> Self {
        self.kernels.backend_ops = false;
        self
    }

    /// The same model with its projections' products in `matmul` (bf16 products of f32
    /// activations: `--precision bf16` on the CPU; the weights packed into bf16 tiles where
    /// the AMX kernels run, see [`Dense::for_matmul`]). A run loads with [`Self::load_for`].
    pub fn with_matmul(mut self, matmul: Matmul) -> Self {
        self.kernels.matmul = matmul;
        self.layers = std::mem::take(&mut self.layers)
            .into_iter()
            .map(|l| l.for_matmul(matmul))
            .collect();
        self
    }

    pub fn config(&self) -> &DnabertConfig {
        &self.config
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The last layer `[batch, max_len, hidden]` for token-id sequences (with `[CLS]`/`[SEP]`),
    /// padded to the longest. Rows past a sequence's length are meaningless.
    ///
    /// Panics on an empty batch, an empty sequence or an id outside the vocabulary (the
    /// tokenizer never produces those).
    pub fn last_hidden(&self, batch: &[Vec<u32>]) -> Tensor<B, 3> {
        let device = self.embeddings.device();
        let cfg = &self.config;
        let (n, len) = (batch.len(), batch.iter().map(Vec::len).max().unwrap_or(0));
        assert!(
            n > 0 && batch.iter().all(|s| !s.is_empty()),
            "DNABERT-S needs at least one sequence and no empty ones"
        );

        let mut ids = vec![cfg.pad_token_id as i64; n * len];
        // Additive key bias: 0 for real tokens, -inf for padding (the attention weight of a
        // padded key is then exactly 0, as if the sequence ran alone).
        let mut key_bias = vec![0f32; n * len];
        for (b, seq) in batch.iter().enumerate() {
            for (i, &t) in seq.iter().enumerate() {
                assert!(
                    (t as usize) < cfg.vocab_size,
                    "token id {t} is outside the DNABERT-S vocabulary of {}",
                    cfg.vocab_size
                );
                ids[b * len + i] = t as i64;
            }
            key_bias[b * len + seq.len()..(b + 1) * len].fill(f32::NEG_INFINITY);
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, len]), &device);
        let mut x = self.emb_norm.forward(
            embedding(self.embeddings.val(), ids),
            self.kernels.backend_ops,
        );

        let alibi = AlibiBatch {
            heads: cfg.num_attention_heads,
            neg_slopes: self.neg_slopes.clone(),
            lengths: batch.iter().map(Vec::len).collect(),
            key_bias,
            device,
            bias: OnceCell::new(),
        };
        for layer in &self.layers {
            x = layer.forward(x, &alibi, self.kernels);
        }
        x
    }

    /// What this model computes in, read back: the dtype of the token embedding table (an
    /// uploaded weight) and of the last layer's output on a three-token input (an
    /// activation). See `Esm2::computed_dtypes`.
    pub fn computed_dtypes(&self) -> (DType, DType) {
        let weights = self.embeddings.val().dtype();
        let id = (self.config.pad_token_id as usize + 1) % self.config.vocab_size.max(1);
        let activation = self.last_hidden(&[vec![id as u32; 3]]).dtype();
        (weights, activation)
    }

    /// VirNucPro's DNA embedding: per sequence, the mean of the last layer over all its tokens,
    /// `[CLS]` and `[SEP]` included. One batched forward; the masked sum is a
    /// `[b, 1, len] × [b, len, hidden]` matmul. Returns `[batch, hidden]` in f32 whatever the
    /// model's dtype (averaging half-precision rows loses digits; callers read f32).
    pub fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2> {
        let device = self.embeddings.device();
        if batch.is_empty() {
            return Tensor::zeros([0, self.config.hidden_size], (&device, DType::F32));
        }
        let hidden = self.last_hidden(batch);
        let [n, len, dim] = hidden.dims();

        let mut real = vec![0f32; n * len];
        for (b, seq) in batch.iter().enumerate() {
            real[b * len..b * len + seq.len()].fill(1.0);
        }
        let counts: Vec<f32> = batch.iter().map(|s| s.len() as f32).collect();
        let real =
            Tensor::<B, 3>::from_data(TensorData::new(real, [n, 1, len]), (&device, DType::F32));
        let counts =
            Tensor::<B, 2>::from_data(TensorData::new(counts, [n, 1]), (&device, DType::F32));
        // Sum then divide, as torch.mean does.
        real.matmul(hidden.cast(FloatDType::F32)).reshape([n, dim]) / counts
    }
}

/// ALiBi slopes for `heads` heads, in f64 as the original computes them in Python: for a
/// power of two `n`, `start = 2^(-2^-(log2 n - 3))` and `slope_i = start·start^i`; otherwise
/// the slopes for the largest power of two below, then every other slope of twice that.
pub fn alibi_slopes(heads: usize) -> Vec<f64> {
    fn power_of_two(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| start * start.powf(i as f64)).collect()
    }
    if heads == 0 {
        return Vec::new();
    }
    if heads.is_power_of_two() {
        return power_of_two(heads);
    }
    let closest = 1usize << heads.ilog2();
    let mut slopes = power_of_two(closest);
    slopes.extend(
        alibi_slopes(2 * closest)
            .into_iter()
            .step_by(2)
            .take(heads - closest),
    );
    slopes
}
