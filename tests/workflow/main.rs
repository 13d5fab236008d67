//! The Nextflow pipeline (static checks and its module scripts run with the real binary), the
//! binary's `embed-* --manifest` its shared embedding tasks rely on, and the container recipes.
//!
//! One test binary per area (each links the whole crate and Burn once); the files are its
//! modules.

#[path = "../common/mod.rs"]
mod common;

mod containers;
mod groovy;
mod manifest;
mod nextflow_modules;
