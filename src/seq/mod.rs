//! Sequence work of the original pipeline: chunking records and six-frame ORF selection.

pub mod chunk;
pub mod orf;
pub mod validate;
