//! What surrounds a run: models from a (mock) Hugging Face Hub, and GPU leases between
//! processes (fake GPUs).
//!
//! One test binary per area (each links the whole crate and Burn once); the files are its
//! modules.

#[path = "../common/mod.rs"]
mod common;

mod gpu_lease;
mod hub;
