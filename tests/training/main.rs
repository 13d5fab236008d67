//! `dataset`, `train` and `evaluate`: the PyTorch training run matched, resume, and every bad
//! input refused.
//!
//! One test binary per area (each links the whole crate and Burn once); the files are its
//! modules.

#[path = "../common/mod.rs"]
mod common;

mod e2e;
mod inputs;
mod parity;
