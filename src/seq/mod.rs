//! Sequence work of the original pipeline: chunking records and six-frame ORF selection, and
//! the batching that keeps its memory bounded; and what counts as a nucleotide
//! (`validate.rs`) or a protein (`protein.rs`) record.

pub mod batch;
pub mod chunk;
pub mod orf;
pub mod protein;
pub mod validate;
