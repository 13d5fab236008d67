//! The models against their reference implementations: ESM-2, DNABERT-S and the classifier
//! against fair-esm / transformers / PyTorch goldens, and every weight format the loaders read.
//!
//! One test binary per area (each links the whole crate and Burn once); the files are its
//! modules.

#[path = "../common/mod.rs"]
mod common;

mod classifier_parity;
mod dnabert_s_parity;
mod esm2_activations;
mod esm2_parity;
mod weights_formats;
