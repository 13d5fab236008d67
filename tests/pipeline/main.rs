//! The steps end to end on the tiny models: `translate`, the embedding engine (batches,
//! checkpoints, faults, devices) and `run`/`predict` against the goldens.
//!
//! One test binary per area (each links the whole crate and Burn once); the files are its
//! modules.

#[path = "../common/mod.rs"]
mod common;

mod e2e;
mod embed_engine;
mod translate;
