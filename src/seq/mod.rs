//! Sequence work of the original pipeline: chunking records and six-frame ORF selection, and
//! the batching that keeps its memory bounded.

pub mod batch;
pub mod chunk;
pub mod orf;
pub mod validate;
