//! ESM-2 (fair-esm `ESM2`, HF `EsmModel`) protein encoder and VirNucPro's mean pooling.
//!
//! Inference only. The module is built straight from the checkpoint's tensors (no random
//! initialisation to overwrite), and the forward follows fair-esm exactly: token-dropout
//! rescaling of the embeddings, pre-LN layers with rotary attention over non-padded keys,
//! exact-erf GELU, and `emb_layer_norm_after`. See docs/method.md, "ESM-2 embedding".

use std::cell::OnceCell;
use std::path::Path;
use std::time::Instant;

use super::composed::{rotary_attention_composed, RotaryBatch};
use super::layers::{Dense, Norm};
use super::ops::{Kernels, Matmul, ModelOps};
use anyhow::{bail, Context, Result};
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData};
use serde::Deserialize;

use crate::weights::{self, loader::TensorLoader, Weights};

/// Residues pooled per sequence: VirNucPro averages positions `1..=min(L, 1024)`.
pub const MAX_POOLED_RESIDUES: usize = 1024;

/// Architecture hyper-parameters, from an HF `config.json` or a fair-esm checkpoint's `cfg`.
#[derive(Debug, Clone, PartialEq)]
pub struct Esm2Config {
    pub num_layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub ffn: usize,
    pub token_dropout: bool,
    pub layer_norm_eps: f64,
    pub vocab_size: usize,
    pub mask_token_id: u32,
    pub pad_token_id: u32,
}

/// The fields of an HF `EsmConfig` that matter here.
#[derive(Deserialize)]
struct HfConfig {
    num_hidden_layers: usize,
    hidden_size: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default)]
    token_dropout: bool,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    vocab_size: usize,
    #[serde(default = "default_mask")]
    mask_token_id: u32,
    #[serde(default = "default_pad")]
    pad_token_id: u32,
    #[serde(default = "default_rotary")]
    position_embedding_type: String,
    #[serde(default)]
    emb_layer_norm_before: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_mask() -> u32 {
    32
}
fn default_pad() -> u32 {
    1
}
fn default_rotary() -> String {
    "rotary".into()
}

impl Esm2Config {
    /// Read an HF `config.json` (`EsmForMaskedLM` / `EsmModel`).
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let hf: HfConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an ESM config.json", path.display()))?;
        // ESM-1/1b variants (learned positions, LN before the layers) are a different model.
        if hf.position_embedding_type != "rotary" || hf.emb_layer_norm_before {
            bail!(
                "{}: not an ESM-2 model (position_embedding_type {:?}, emb_layer_norm_before {})",
                path.display(),
                hf.position_embedding_type,
                hf.emb_layer_norm_before
            );
        }
        let config = Self {
            num_layers: hf.num_hidden_layers,
            hidden: hf.hidden_size,
            heads: hf.num_attention_heads,
            ffn: hf.intermediate_size,
            token_dropout: hf.token_dropout,
            layer_norm_eps: hf.layer_norm_eps,
            vocab_size: hf.vocab_size,
            mask_token_id: hf.mask_token_id,
            pad_token_id: hf.pad_token_id,
        };
        config
            .validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(config)
    }

    /// From a fair-esm checkpoint's `cfg.model` (`encoder_layers`, `encoder_embed_dim`,
    /// `encoder_attention_heads`, `token_dropout`); the rest is fixed by fair-esm's `ESM2`.
    pub fn from_fair_esm(
        layers: usize,
        embed_dim: usize,
        heads: usize,
        token_dropout: bool,
    ) -> Result<Self> {
        let config = Self {
            num_layers: layers,
            hidden: embed_dim,
            heads,
            // A corrupt cfg could make this overflow; it then fails the shape checks.
            ffn: embed_dim.saturating_mul(4),
            token_dropout,
            // fair-esm's ESM1bLayerNorm is torch.nn.LayerNorm (default eps) without apex.
            layer_norm_eps: 1e-5,
            vocab_size: 33,
            mask_token_id: 32,
            pad_token_id: 1,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    fn validate(&self) -> Result<()> {
        if self.heads == 0
            || !self.hidden.is_multiple_of(self.heads)
            || !self.head_dim().is_multiple_of(2)
        {
            bail!(
                "hidden size {} does not split into {} heads of even size (rotary needs pairs)",
                self.hidden,
                self.heads
            );
        }
        if self.mask_token_id as usize >= self.vocab_size
            || self.pad_token_id as usize >= self.vocab_size
        {
            bail!(
                "mask/pad token ids outside the vocabulary of {}",
                self.vocab_size
            );
        }
        Ok(())
    }
}

/// One pre-LN transformer layer. q/k/v are fused into one `[dim, 3·dim]` projection at load
/// time, so a layer runs one input matmul instead of three.
#[derive(Module, Debug)]
pub struct Esm2Layer<B: Backend> {
    attn_norm: Norm<B>,
    qkv: Dense<B>,
    out: Dense<B>,
    ffn_norm: Norm<B>,
    fc1: Dense<B>,
    fc2: Dense<B>,
}

impl<B: Backend> Esm2Layer<B> {
    fn for_matmul(self, matmul: Matmul) -> Self {
        Self {
            qkv: self.qkv.for_matmul(matmul),
            out: self.out.for_matmul(matmul),
            fc1: self.fc1.for_matmul(matmul),
            fc2: self.fc2.for_matmul(matmul),
            ..self
        }
    }
}

impl<B: ModelOps> Esm2Layer<B> {
    /// `kernels`: the backend's own [`ModelOps`] or the generic composition, and the products'
    /// precision.
    fn forward(&self, x: Tensor<B, 3>, batch: &RotaryBatch<B>, kernels: Kernels) -> Tensor<B, 3> {
        let qkv = self.qkv.forward_fused(
            self.attn_norm.forward(x.clone(), kernels.backend_ops),
            None,
            false,
            kernels,
        );
        let attn = if kernels.backend_ops {
            B::rotary_attention(qkv, batch)
        } else {
            rotary_attention_composed(qkv, batch)
        };
        let x = self.out.forward_fused(attn, Some(&x), false, kernels);

        let h = self.fc1.forward_fused(
            self.ffn_norm.forward(x.clone(), kernels.backend_ops),
            None,
            true,
            kernels,
        );
        self.fc2.forward_fused(h, Some(&x), false, kernels)
    }
}

/// The ESM-2 encoder.
#[derive(Module, Debug)]
pub struct Esm2<B: Backend> {
    embed_tokens: Param<Tensor<B, 2>>,
    layers: Vec<Esm2Layer<B>>,
    emb_layer_norm_after: Norm<B>,
    #[module(skip)]
    config: Esm2Config,
    /// Whether the backend's own ops run ([`ModelOps`]: the fused CPU kernels; always, except
    /// to compare them with the generic composition) and what the projections multiply in.
    #[module(skip)]
    kernels: Kernels,
}

/// Where a checkpoint's tensors live and what they are called.
struct Names {
    /// Tried in order before every name (`esm.` or none for HF; fair-esm's hub loader strips
    /// `encoder.sentence_encoder.` or `encoder.` the same way).
    prefixes: &'static [&'static str],
    embed: &'static str,
    final_norm: &'static str,
    layer: &'static str,
    q: &'static str,
    k: &'static str,
    v: &'static str,
    out: &'static str,
    attn_norm: &'static str,
    fc1: &'static str,
    fc2: &'static str,
    ffn_norm: &'static str,
}

const HF_NAMES: Names = Names {
    prefixes: &["esm.", ""],
    embed: "embeddings.word_embeddings",
    final_norm: "encoder.emb_layer_norm_after",
    layer: "encoder.layer.",
    q: "attention.self.query",
    k: "attention.self.key",
    v: "attention.self.value",
    out: "attention.output.dense",
    attn_norm: "attention.LayerNorm",
    fc1: "intermediate.dense",
    fc2: "output.dense",
    ffn_norm: "LayerNorm",
};

const FAIR_ESM_NAMES: Names = Names {
    prefixes: &["encoder.sentence_encoder.", "encoder.", ""],
    embed: "embed_tokens",
    final_norm: "emb_layer_norm_after",
    layer: "layers.",
    q: "self_attn.q_proj",
    k: "self_attn.k_proj",
    v: "self_attn.v_proj",
    out: "self_attn.out_proj",
    attn_norm: "self_attn_layer_norm",
    fc1: "fc1",
    fc2: "fc2",
    ffn_norm: "final_layer_norm",
};

/// The layers of an ESM-2 checkpoint, read through the shared [`TensorLoader`].
struct LayerReader<'a, B: Backend> {
    tensors: TensorLoader<'a, B>,
    names: &'a Names,
    config: &'a Esm2Config,
    /// What the projections will multiply in (bf16 products load packed weights).
    matmul: Matmul,
}

impl<B: Backend> LayerReader<'_, B> {
    fn dense(&self, module: &str, out: usize, inp: usize) -> Result<Dense<B>> {
        Dense::load(&self.tensors, module, out, inp, true, self.matmul)
    }

    fn layer_norm(&self, module: &str) -> Result<Norm<B>> {
        Norm::load(
            &self.tensors,
            module,
            self.config.hidden,
            self.config.layer_norm_eps,
        )
    }

    /// Layer `i`'s `Linear` modules, 99.9% of its bytes.
    fn linear_modules(&self, i: usize) -> Vec<String> {
        let n = self.names;
        [n.q, n.k, n.v, n.out, n.fc1, n.fc2]
            .iter()
            .map(|m| format!("{}{i}.{m}", n.layer))
            .collect()
    }

    fn layer(&self, i: usize) -> Result<Esm2Layer<B>> {
        // From a cold page cache the next layer's bytes arrive while this one is converted.
        if i == 0 {
            self.tensors.prefetch(&self.linear_modules(0));
        }
        if i + 1 < self.config.num_layers {
            self.tensors.prefetch(&self.linear_modules(i + 1));
        }
        let n = self.names;
        let d = self.config.hidden;
        let at = |m: &str| format!("{}{i}.{m}", n.layer);
        // q, k and v fused into one projection: weights side by side, biases end to end.
        let qkv = Dense::load_fused(
            &self.tensors,
            &[at(n.q), at(n.k), at(n.v)],
            d,
            d,
            self.matmul,
        )?;
        Ok(Esm2Layer {
            attn_norm: self.layer_norm(&at(n.attn_norm))?,
            qkv,
            out: self.dense(&at(n.out), d, d)?,
            ffn_norm: self.layer_norm(&at(n.ffn_norm))?,
            fc1: self.dense(&at(n.fc1), self.config.ffn, d)?,
            fc2: self.dense(&at(n.fc2), d, self.config.ffn)?,
        })
    }
}

fn is_torch_pickle(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pt" | "pth")
    )
}

/// Tensors of ESM-2 checkpoints that VirNucPro's embedding never used: the masked-LM and
/// contact heads, HF's position embeddings (ESM-2 is rotary; transformers keeps the unused
/// table), the rotary frequency buffers (recomputed), and a pooler.
fn unused_by_esm2(name: &str) -> bool {
    let name = ["esm.", "encoder.sentence_encoder.", "encoder.", "model."]
        .iter()
        .fold(name, |n, p| n.strip_prefix(p).unwrap_or(n));
    ["lm_head.", "contact_head.", "pooler.", "embed_positions."]
        .iter()
        .any(|p| name.starts_with(p))
        || name == "embeddings.position_embeddings.weight"
        || name == "embeddings.position_ids"
        || name.ends_with(".inv_freq")
}

/// The config of a fair-esm checkpoint, or `None` when the file has no fair-esm `cfg`.
fn fair_esm_config(path: &Path) -> Result<Option<Esm2Config>> {
    weights::torch_file::fair_esm_config(path)?
        .map(|a| {
            Esm2Config::from_fair_esm(
                a.encoder_layers,
                a.encoder_embed_dim,
                a.encoder_attention_heads,
                a.token_dropout,
            )
            .with_context(|| format!("{}", path.display()))
        })
        .transpose()
}

impl<B: ModelOps> Esm2<B> {
    /// Load from an HF model directory (`config.json` + any layout transformers reads:
    /// `model.safetensors`, `pytorch_model.bin`, or either's `.index.json` with its shards), a
    /// weights file inside such a directory, or a fair-esm hub checkpoint
    /// (`esm2_t36_3B_UR50D.pt`), for f32 products.
    pub fn load(path: &Path, device: &B::Device) -> Result<(Self, Esm2Config)> {
        Self::load_for(path, device, Matmul::F32)
    }

    /// [`Self::load`] for products in `matmul`: bf16 products on a CPU with AMX load every
    /// projection's weight straight into bf16 tiles (no f32 copy is ever made).
    pub fn load_for(path: &Path, device: &B::Device, matmul: Matmul) -> Result<(Self, Esm2Config)> {
        let (config, weights_path, names) = if path.is_dir() {
            let weights = weights::locate(path, "ESM-2")?;
            let config = Esm2Config::from_hf_config(&path.join("config.json"))?;
            (config, weights, &HF_NAMES)
        } else {
            let fair = if is_torch_pickle(path) {
                fair_esm_config(path)?
            } else {
                None
            };
            match fair {
                Some(config) => (config, path.to_path_buf(), &FAIR_ESM_NAMES),
                None => {
                    let config_path = weights::model_dir(path).join("config.json");
                    if !config_path.exists() {
                        bail!(
                            "{}: neither a fair-esm checkpoint nor beside an HF config.json",
                            path.display()
                        );
                    }
                    let config = Esm2Config::from_hf_config(&config_path)?;
                    (config, path.to_path_buf(), &HF_NAMES)
                }
            }
        };
        let started = Instant::now();
        let weights = weights::open(&weights_path)?;
        let opened = started.elapsed();
        let model = Self::from_weights(&weights, names, config.clone(), device, matmul)?;
        let hint = if std::ptr::eq(names, &FAIR_ESM_NAMES) {
            "does the checkpoint's cfg.model.encoder_layers match the layers it holds?"
        } else {
            "is num_hidden_layers in config.json right?"
        };
        weights.check_all_used(unused_by_esm2, hint)?;
        weights::log_load("ESM-2", &weights, opened, started.elapsed());
        Ok((model, config))
    }

    fn from_weights(
        weights: &Weights,
        names: &Names,
        config: Esm2Config,
        device: &B::Device,
        matmul: Matmul,
    ) -> Result<Self> {
        let reader = LayerReader::<B> {
            tensors: TensorLoader::new(weights, names.prefixes, device),
            names,
            config: &config,
            matmul,
        };
        let embed_tokens = reader.tensors.tensor(
            &format!("{}.weight", names.embed),
            [config.vocab_size, config.hidden],
        )?;
        let layers = (0..config.num_layers)
            .map(|i| reader.layer(i))
            .collect::<Result<Vec<_>>>()?;
        let emb_layer_norm_after = reader.layer_norm(names.final_norm)?;
        Ok(Self {
            embed_tokens: Param::from_tensor(embed_tokens),
            layers,
            emb_layer_norm_after,
            config,
            kernels: Kernels {
                matmul,
                ..Kernels::default()
            },
        })
    }

    /// The same model on Burn's generic ops only, also on the CPU backend: the path the GPU
    /// backends take, for tests and benchmarks that compare it with the fused CPU kernels.
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

    pub fn config(&self) -> &Esm2Config {
        &self.config
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden
    }

    /// The final normalised layer `[batch, max_len, hidden]` for token-id sequences (with
    /// `<cls>`/`<eos>`), padded to the longest with `<pad>`. Padded rows are meaningless.
    pub fn last_hidden(&self, batch: &[Vec<u32>]) -> Tensor<B, 3> {
        let (mut x, rotary) = self.embedded(batch);
        for layer in &self.layers {
            x = layer.forward(x, &rotary, self.kernels);
        }
        self.emb_layer_norm_after
            .forward(x, self.kernels.backend_ops)
    }

    /// What this model computes in, read back: the dtype of the token embedding table (an
    /// uploaded weight) and of the first layer's output on a three-token input (an
    /// activation). Burn decides both from the device's default dtype at upload; the engine
    /// refuses a model whose dtypes are not the precision asked for.
    pub fn computed_dtypes(&self) -> (DType, DType) {
        let weights = self.embed_tokens.val().dtype();
        let ids = (self.config.pad_token_id + 1) % self.config.vocab_size.max(1) as u32;
        let (x, rotary) = self.embedded(&[vec![ids; 3]]);
        let activation = match self.layers.first() {
            Some(layer) => layer.forward(x, &rotary, self.kernels).dtype(),
            None => x.dtype(),
        };
        (weights, activation)
    }

    /// The hidden state entering each layer (the input of its first LayerNorm) and the last
    /// layer's output, `num_layers + 1` tensors `[batch, max_len, hidden]`: for diagnostics
    /// (a layer-by-layer comparison of two backends, the activation ranges the norms see).
    pub fn layer_states(&self, batch: &[Vec<u32>]) -> Vec<Tensor<B, 3>> {
        let (mut x, rotary) = self.embedded(batch);
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        for layer in &self.layers {
            states.push(x.clone());
            x = layer.forward(x, &rotary, self.kernels);
        }
        states.push(x);
        states
    }

    /// The scaled token embeddings and the attention inputs every layer shares.
    fn embedded(&self, batch: &[Vec<u32>]) -> (Tensor<B, 3>, RotaryBatch<B>) {
        let device = self.embed_tokens.device();
        let cfg = &self.config;
        let (n, len) = (batch.len(), batch.iter().map(Vec::len).max().unwrap_or(0));
        assert!(
            n > 0 && len > 0,
            "ESM-2 needs at least one non-empty sequence"
        );

        // Host-side per-token tables: ids (padded), and the embedding row factor that folds
        // fair-esm's token-dropout rescale, the zeroing of <mask> rows and of padding.
        let mut ids = vec![cfg.pad_token_id as i64; n * len];
        let mut row_scale = vec![0f32; n * len];
        let mut key_bias = vec![f32::NEG_INFINITY; n * len];
        for (b, seq) in batch.iter().enumerate() {
            let masked = seq.iter().filter(|&&t| t == cfg.mask_token_id).count();
            let real = seq.iter().filter(|&&t| t != cfg.pad_token_id).count();
            let scale = if cfg.token_dropout && real > 0 {
                // x * (1 - 0.15*0.8) / (1 - masked/real), per sequence.
                (0.88 / (1.0 - masked as f64 / real as f64)) as f32
            } else {
                1.0
            };
            for (i, &t) in seq.iter().enumerate() {
                let at = b * len + i;
                ids[at] = t as i64;
                let is_pad = t == cfg.pad_token_id;
                if !is_pad {
                    key_bias[at] = 0.0;
                }
                let zeroed = is_pad || (cfg.token_dropout && t == cfg.mask_token_id);
                row_scale[at] = if zeroed { 0.0 } else { scale };
            }
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, len]), &device);
        let row_scale = Tensor::<B, 3>::from_data(TensorData::new(row_scale, [n, len, 1]), &device);
        let x = embedding(self.embed_tokens.val(), ids) * row_scale;

        let (cos, sin_signed) = rotary_tables(len, cfg.head_dim());
        let rotary = RotaryBatch {
            heads: cfg.heads,
            lengths: batch.iter().map(Vec::len).collect(),
            key_bias,
            cos,
            sin_signed,
            device,
            tensors: OnceCell::new(),
        };
        (x, rotary)
    }

    /// VirNucPro's protein embedding: per sequence, the mean of the final normalised layer
    /// over residue positions `1..=min(L, 1024)` (`L` residues, `<cls>`/`<eos>` excluded).
    /// One batched forward; the sum is a `[b, 1, len] × [b, len, hidden]` matmul with 0/1
    /// weights, divided by the residue count after (weights of 1/count would go through the
    /// matmul at the tensor cores' reduced mantissa on CUDA, where "f32" is TF32). Returns
    /// `[batch, hidden]` in f32; a sequence without residues gives zeros.
    pub fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2> {
        let device = self.embed_tokens.device();
        if batch.is_empty() {
            return Tensor::zeros([0, self.config.hidden], (&device, DType::F32));
        }
        let hidden = self.last_hidden(batch);
        let [n, len, dim] = hidden.dims();

        let mut weights = vec![0f32; n * len];
        let mut counts = vec![1f32; n];
        for (b, seq) in batch.iter().enumerate() {
            let residues = seq.len().saturating_sub(2).min(MAX_POOLED_RESIDUES);
            weights[b * len + 1..b * len + 1 + residues].fill(1.0);
            counts[b] = residues.max(1) as f32;
        }
        // Pooled in f32 whatever the model's dtype: averaging 1024 half-precision rows loses
        // digits, and callers read the result as f32.
        let weights =
            Tensor::<B, 3>::from_data(TensorData::new(weights, [n, 1, len]), (&device, DType::F32));
        let counts =
            Tensor::<B, 2>::from_data(TensorData::new(counts, [n, 1]), (&device, DType::F32));
        weights
            .matmul(hidden.cast(FloatDType::F32))
            .reshape([n, dim])
            / counts
    }
}

/// Rotary tables for positions `0..len` (fair-esm `RotaryEmbedding`: `inv_freq_j =
/// 10000^(-2j/d)`, angles duplicated as `[f, f]`), computed in f32 like PyTorch, with the
/// trigonometry in f64 so the only rounding is PyTorch's own. `[len, head_dim]` each.
fn rotary_tables(len: usize, head_dim: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|j| 1.0 / 10000f32.powf((2 * j) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(len * head_dim);
    let mut sin = Vec::with_capacity(len * head_dim);
    for pos in 0..len {
        for j in 0..head_dim {
            let angle = (pos as f32 * inv_freq[j % half]) as f64;
            cos.push(angle.cos() as f32);
            let s = angle.sin() as f32;
            sin.push(if j < half { -s } else { s });
        }
    }
    (cos, sin)
}
