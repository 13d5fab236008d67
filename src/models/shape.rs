//! A model's size as the code that sizes its batches sees it ([`ModelShape`]), read from each
//! encoder's config: what per-token memory a batch costs depends on these numbers alone.

use super::dnabert_s::DnabertConfig;
use super::esm2::Esm2Config;

/// The sizes that decide a model's memory use per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub hidden: usize,
    /// Width of the feed-forward activations (both halves of a gated MLP).
    pub intermediate: usize,
    pub heads: usize,
    pub layers: usize,
}

impl From<&Esm2Config> for ModelShape {
    fn from(c: &Esm2Config) -> Self {
        ModelShape {
            hidden: c.hidden,
            intermediate: c.ffn,
            heads: c.heads,
            layers: c.num_layers,
        }
    }
}

impl From<&DnabertConfig> for ModelShape {
    fn from(c: &DnabertConfig) -> Self {
        ModelShape {
            hidden: c.hidden_size,
            // The gated MLP's up-projection is twice the intermediate size.
            intermediate: 2 * c.intermediate_size,
            heads: c.num_attention_heads,
            layers: c.num_hidden_layers,
        }
    }
}
