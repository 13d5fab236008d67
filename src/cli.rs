//! Command-line definitions (clap derive) and nothing else: each subcommand's work lives in its
//! own module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "virnucpro",
    version,
    about = "Identify viral sequences with DNABERT-S + ESM-2 embeddings and the VirNucPro classifier",
    long_about = "Identify viral sequences with DNABERT-S + ESM-2 embeddings and the VirNucPro classifier.\n\n\
Each step reads files and writes files, so a pipeline (Nextflow) or a person can run any step alone \
and resume from what exists. Outputs reproduce the original VirNucPro exactly."
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Chunk sequences and keep the stop-free six-frame ORFs (nucleotide .fa + protein .faa).
    Translate(TranslateArgs),
}

#[derive(Args, Debug)]
pub struct TranslateArgs {
    /// Input FASTA (plain or gzip-compressed; `-` reads stdin).
    pub input: PathBuf,
    /// Chunk length in bp: 300 or 500 to match the published classifiers.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(3..))]
    pub chunk_size: u64,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(short, long, value_name = "N")]
    pub threads: Option<usize>,
    /// Write ORFs as shards of at most N ORFs each (DIR/shards/<k>.identified_*.fa[a]) for fan-out.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_size: Option<u64>,
    /// Also write the chunks themselves to DIR/chunked.fa.
    #[arg(long)]
    pub write_chunks: bool,
    /// Continue when two records share an id (later steps join by id, so results may mix).
    #[arg(long)]
    pub allow_duplicate_ids: bool,
}
