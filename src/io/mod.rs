//! What the tool reads and writes, and how: FASTA input ([`fasta`]), embeddings files
//! ([`embeddings`]), outputs written so that a killed or failed run never leaves a file that
//! looks complete ([`output`]), one writer per output ([`output_lock`]), and what identifies an
//! input or a model for resuming ([`fingerprint`]).

pub mod embeddings;
pub mod fasta;
pub mod fingerprint;
pub mod output;
pub mod output_lock;
