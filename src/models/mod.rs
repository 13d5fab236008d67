//! The three networks of VirNucPro, one file each, generic over the Burn backend.

pub mod classifier;
pub mod dnabert_s;
pub mod esm2;
pub mod layers;
