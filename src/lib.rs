//! virnucpro: VirNucPro viral sequence identification in Rust.
//!
//! Data flow (docs/architecture.md): `translate` (chunks + six-frame ORFs) -> `embed-dna` (DNABERT-S)
//! and `embed-protein` (ESM-2) -> `predict` (MLP classifier, per-chunk and per-sequence calls).

pub mod cli;
pub mod config;
pub mod device;
pub mod embed;
pub mod embeddings;
pub mod fasta;
pub mod fault_injection;
pub mod fingerprint;
pub mod hub;
pub mod interrupt;
pub mod models;
pub mod output;
pub mod output_lock;
pub mod pipeline;
pub mod plot;
pub mod predict;
pub mod preflight;
pub mod progress;
pub mod resources;
pub mod seq;
pub mod tokenize;
pub mod train;
pub mod translate;
pub mod weights;
