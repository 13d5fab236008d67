//! Turning sequences into model token ids.

pub mod dnabert;
pub mod esm;
