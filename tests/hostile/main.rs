//! Hostile input of every kind (FASTA, outputs and runs, weight files), refused cleanly or
//! survived: one `error:` line, the right exit code, bounded time and memory, nothing that looks
//! finished.
//!
//! One test binary per area (each links the whole crate and Burn once); the files are its
//! modules.

#[path = "../common/mod.rs"]
mod common;

mod fasta;
mod outputs;
mod runs;
mod weights;
