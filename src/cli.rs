//! Command-line definitions (clap derive) and their conversion into each step's options; each
//! subcommand's work lives in its own module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use anyhow::Result;

use crate::device::{DeviceSpec, LazyPlacement, Precision};
use crate::embed::{EmbedCommand, EmbedInput, EmbedKind};
use crate::hub::{self, ModelKind};

use crate::flag_values::{
    batch_tokens, checkpoint_secs, chunk_size, gpu_lease, gpu_lease_timeout, min_viral_fraction,
    plot_top, shard_size, threads,
};

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
    /// Defaults from a TOML file (see conf/virnucpro.toml); flags given here win.
    #[arg(long, global = true, value_name = "FILE", env = "VIRNUCPRO_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Chunk sequences and keep the stop-free six-frame ORFs (nucleotide .fa + protein .faa).
    Translate(TranslateArgs),
    /// Embed nucleotide ORFs with DNABERT-S (mean over tokens) into a safetensors file.
    EmbedDna(EmbedArgs),
    /// Embed protein ORFs with ESM-2 (mean over residues) into a safetensors file.
    EmbedProtein(EmbedArgs),
    /// Classify ORFs from their DNA + protein embeddings; write the original's tables, a
    /// per-sequence summary, a figure and (with --sequences / --chunks) the viral sequences and
    /// chunks as FASTA.
    Predict(PredictArgs),
    /// The whole pipeline on one machine: translate, embed-dna, embed-protein, predict
    /// (resumes from completed steps).
    Run(RunArgs),
    /// List the devices `--device auto` would use (CUDA devices with memory and lease state,
    /// wgpu adapters with their kind, and the CPU workers).
    Devices(DevicesArgs),
    /// Download, verify and list the published models (Hugging Face cache layout, shared with
    /// Python tools; HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE apply).
    Models(ModelsArgs),
    // --- Training (src/train): dataset, train, evaluate ---
    /// Build a labelled training set: chunks and six-frame ORFs of viral and other sequences,
    /// class-balanced as the original, with labels.tsv.
    Dataset(crate::train::cli::DatasetArgs),
    /// Train the classifier on labelled DNA + protein embeddings (the original's train.py).
    Train(crate::train::cli::TrainArgs),
    /// Measure a classifier on labelled embeddings: metrics, confusion table, ROC/PR figures.
    Evaluate(crate::train::cli::EvaluateArgs),
}

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TranslateArgs {
    /// Input FASTA (plain or compressed with gzip, bzip2, xz or zstd; `-` reads stdin).
    pub input: PathBuf,
    /// Chunk length in bp: 300 or 500 to match the published classifiers.
    #[arg(short = 'c', long, value_name = "N", allow_hyphen_values = true, value_parser = chunk_size)]
    pub chunk_size: u64,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(short, long, value_name = "N", allow_hyphen_values = true, value_parser = threads)]
    pub threads: Option<usize>,
    /// Write ORFs as shards of at most N ORFs each (DIR/shards/<k>.identified_*.fa[a]) for fan-out.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = shard_size)]
    pub shard_size: Option<u64>,
    /// Also write the chunks themselves to DIR/chunked.fa.
    #[arg(long)]
    pub write_chunks: bool,
    /// Continue when two records share an id (later steps join by id, so results may mix).
    #[arg(long)]
    pub allow_duplicate_ids: bool,
}

impl TranslateArgs {
    pub fn options(self, quiet: bool) -> crate::translate::TranslateOptions {
        crate::translate::TranslateOptions {
            input: self.input,
            chunk_size: self.chunk_size as usize,
            outdir: self.outdir,
            threads: self.threads,
            shard_size: self.shard_size.map(|n| n as usize),
            write_chunks: self.write_chunks,
            allow_duplicate_ids: self.allow_duplicate_ids,
            quiet,
        }
    }
}

/// Where and how the models run; shared by the embedding steps and `run`.
#[derive(Args, Debug, Clone)]
pub struct ComputeArgs {
    /// auto (all CUDA devices, else every hardware wgpu adapter, else CPU), cpu, cuda, cuda:N,
    /// cuda:0,2,3, wgpu (Vulkan; Metal on macOS) or wgpu:N (as `virnucpro devices` lists them).
    #[arg(short, long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// auto (f32 on CPU and software adapters, f16 on CUDA and GPUs with f16 shaders), f32,
    /// f16 (GPUs), bf16 (CUDA; on CPUs with AMX-BF16, the projections' products in bf16 and
    /// everything else f32) or int8 (CPUs with AMX-INT8 or AVX-512 VNNI: the projections' products W8A8, the
    /// rest f32); the reduced CPU paths are opt-in: f32 is the reference's arithmetic. f32 on CUDA is f32 with
    /// TF32 matmuls (CubeCL's tensor-core kernels). The report says what computed; the precision
    /// is read back from the loaded model: a mismatch stops the step.
    #[arg(short, long, default_value = "auto", value_name = "P")]
    pub precision: Precision,
    /// Padded tokens per batch (default on CPU: up to 2048, fewer to keep a batch's activations
    /// in the CPU cache or every worker busy; larger on GPUs). Results do not depend on it.
    #[arg(short, long, value_name = "N", allow_hyphen_values = true, value_parser = batch_tokens)]
    pub batch_tokens: Option<u64>,
    /// CPU workers, each with its own batches (default: all cores).
    #[arg(short, long, value_name = "N", allow_hyphen_values = true, value_parser = threads)]
    pub threads: Option<usize>,
    /// Save finished batches at least every N seconds (0 = after every batch); a killed run
    /// re-run with the same arguments resumes from them.
    #[arg(long, default_value_t = 60, value_name = "N", allow_hyphen_values = true, value_parser = checkpoint_secs)]
    pub checkpoint_secs: u64,
    /// Keep checkpoints in DIR instead of beside the output: a shared directory lets a retried
    /// pipeline task, which runs in a fresh directory, resume.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Take N GPUs through exclusive lock files (one process per GPU on a node, e.g. under
    /// Nextflow's local executor) instead of using every visible GPU.
    #[arg(
        long,
        value_name = "N",
        env = "VIRNUCPRO_GPU_LEASE",
        hide_env_values = true,
        allow_hyphen_values = true,
        value_parser = gpu_lease
    )]
    pub gpu_lease: Option<usize>,
    /// With --gpu-lease: give up after waiting SECS for a free GPU (default: wait for ever).
    #[arg(long, value_name = "SECS", env = "VIRNUCPRO_GPU_LEASE_TIMEOUT", allow_hyphen_values = true, value_parser = gpu_lease_timeout)]
    pub gpu_lease_timeout: Option<u64>,
    /// Keep the GPU backends' compiled kernels and autotune results in DIR, shared across runs
    /// and tasks (default: $XDG_CACHE_HOME/virnucpro/cubecl, else ~/.cache/virnucpro/cubecl).
    #[arg(long, value_name = "DIR", env = "VIRNUCPRO_KERNEL_CACHE")]
    pub kernel_cache: Option<PathBuf>,
}

impl ComputeArgs {
    pub fn settings(&self) -> crate::embed::ComputeSettings {
        crate::embed::ComputeSettings {
            device: self.device.clone(),
            precision: self.precision,
            batch_tokens: self.batch_tokens.map(|n| n as usize),
            threads: self.threads,
            checkpoint_secs: self.checkpoint_secs,
            checkpoint_dir: self.checkpoint_dir.clone(),
            // VIRNUCPRO_GPU_LEASE=0 means no leasing.
            gpu_lease: self.gpu_lease.filter(|&n| n > 0),
            gpu_lease_timeout: self.gpu_lease_timeout.map(std::time::Duration::from_secs),
            kernel_cache: self.kernel_cache.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Input FASTA of ORFs (translate's identified_nucleotide.fa / identified_protein.faa or a shard).
    #[arg(required_unless_present = "manifest", conflicts_with = "manifest")]
    pub input: Option<PathBuf>,
    /// Model: a Hugging Face directory (config.json + model.safetensors / pytorch_model.bin),
    /// for ESM-2 also a fair-esm checkpoint file (esm2_t36_3B_UR50D.pt), or a Hub id
    /// (org/name[@revision]) from the cache (`virnucpro models fetch`).
    #[arg(short, long, value_name = "DIR|FILE|ID")]
    pub model: PathBuf,
    /// Download a Hub id that is not cached yet (otherwise it is an error).
    #[arg(long)]
    pub download: bool,
    /// Output embeddings file (.safetensors: tensor `embeddings` [N, D], ids in metadata).
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    pub output: Option<PathBuf>,
    /// Several inputs in one process, the model loaded once: a TSV file with one
    /// INPUT<TAB>OUTPUT[<TAB>REPORT] line per input, each embedded as if given alone (its own
    /// output, failed list, checkpoint and report). `--report` then gets the loads and every
    /// input's figures together.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Also write the run's figures (sequences, tokens, devices, wall time, rates, model
    /// loading vs embedding seconds) as JSON here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

impl EmbedArgs {
    /// `kind`: which of the two subcommands these arguments are for. A Hub id as `--model` is
    /// resolved to its cached snapshot here (fetched first with `--download`).
    pub fn command(self, kind: EmbedKind, quiet: bool) -> Result<EmbedCommand> {
        let model_kind = match kind {
            EmbedKind::Dna => ModelKind::Dnabert,
            EmbedKind::Protein => ModelKind::Esm,
        };
        let compute = self.compute.settings();
        let placement = LazyPlacement::new(compute.placement_request());
        let model = hub::resolve::model(&self.model, model_kind, self.download, quiet)?;
        let opts = |input: PathBuf, output: PathBuf| crate::embed::EmbedOptions {
            model: model.clone(),
            input,
            output,
            compute: compute.clone(),
            quiet,
        };
        // clap makes sure of one form or the other.
        let (inputs, manifest_report) = match (self.manifest, self.input, self.output) {
            (Some(manifest), _, _) => {
                let entries = crate::embed::manifest::read(&manifest)?;
                let inputs = entries
                    .into_iter()
                    .map(|e| EmbedInput {
                        opts: opts(e.input, e.output),
                        report: e.report,
                        manifest_line: Some(e.line),
                    })
                    .collect();
                (inputs, self.report)
            }
            (None, Some(input), Some(output)) => {
                let one = EmbedInput {
                    opts: opts(input, output),
                    report: self.report,
                    manifest_line: None,
                };
                (vec![one], None)
            }
            _ => anyhow::bail!("give INPUT and --output, or --manifest"),
        };
        Ok(EmbedCommand::new(kind, inputs, manifest_report, placement))
    }
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// DNABERT-S embeddings files (from embed-dna; several shards allowed).
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub dna: Vec<PathBuf>,
    /// ESM-2 embeddings files (from embed-protein; several shards allowed).
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub protein: Vec<PathBuf>,
    /// Classifier: VirNucPro's 300_model.pth / 500_model.pth (whole pickled module), or a
    /// safetensors file with the same tensor names; or 500 / 300 (the published ones) or a URL
    /// (optionally ending in #sha256=<hex>), from the cache (`virnucpro models fetch`).
    #[arg(long, value_name = "FILE|500|300|URL")]
    pub classifier: PathBuf,
    /// Download a classifier given as 500/300/URL that is not cached yet.
    #[arg(long)]
    pub download: bool,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
    /// Call a sequence viral when at least this fraction of its scored chunks are viral.
    #[arg(long, default_value_t = 0.5, value_name = "F", allow_hyphen_values = true, value_parser = min_viral_fraction)]
    pub min_viral_fraction: f64,
    /// Sequences drawn in prediction.svg/.png (highest virus score first).
    #[arg(long, default_value_t = 20, value_name = "N", allow_hyphen_values = true, value_parser = plot_top)]
    pub plot_top: usize,
    /// The sample's input FASTA (plain or compressed): also write viral_sequences.fa, each
    /// sequence called virus in sequence_summary.tsv, unchanged, in input order. Every
    /// sequence in the predictions must be in it.
    #[arg(long, value_name = "FILE")]
    pub sequences: Option<PathBuf>,
    /// translate's chunked.fa (translate --write-chunks; run writes it): also write
    /// viral_chunks.fa, each chunk called viral (True in prediction_results_highestscore.csv).
    /// Every chunk in the predictions must be in these files.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub chunks: Vec<PathBuf>,
}

impl PredictArgs {
    /// A published classifier or URL as `--classifier` is resolved to its cached file here.
    pub fn options(self, quiet: bool) -> Result<crate::predict::PredictOptions> {
        Ok(crate::predict::PredictOptions {
            classifier: hub::resolve::classifier(&self.classifier, self.download, quiet)?,
            dna: self.dna,
            protein: self.protein,
            outdir: self.outdir,
            min_viral_fraction: self.min_viral_fraction,
            plot_top: self.plot_top,
            sequences: self.sequences,
            chunks: self.chunks,
        })
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Input FASTA (plain or compressed with gzip, bzip2, xz or zstd).
    pub input: PathBuf,
    /// DNABERT-S model: a directory (config.json, tokenizer.json, model.safetensors or
    /// pytorch_model.bin) or a Hub id from the cache (`virnucpro models fetch`).
    #[arg(long, value_name = "DIR|ID", default_value = crate::hub::DEFAULT_DNABERT)]
    pub dnabert: PathBuf,
    /// ESM-2 model: a Hugging Face directory, a fair-esm .pt file, or a Hub id from the cache.
    #[arg(long, value_name = "DIR|FILE|ID", default_value = crate::hub::DEFAULT_ESM)]
    pub esm: PathBuf,
    /// Classifier: a file (300_model.pth / 500_model.pth, matching --chunk-size), 500 / 300
    /// (the published ones, from the cache) or a URL [default: the published one for
    /// --chunk-size].
    #[arg(long, value_name = "FILE|500|300|URL")]
    pub classifier: Option<PathBuf>,
    /// Download models given as Hub ids / 500 / 300 / URLs that are not cached yet.
    #[arg(long)]
    pub download: bool,
    /// Chunk length in bp (300 or 500, matching the classifier).
    #[arg(short = 'c', long, value_name = "N", allow_hyphen_values = true, value_parser = chunk_size)]
    pub chunk_size: u64,
    /// Output directory: every step's outputs are kept here.
    #[arg(short, long, value_name = "DIR")]
    pub outdir: PathBuf,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Redo every step even when its outputs are complete.
    #[arg(long)]
    pub force: bool,
    /// Call a sequence viral when at least this fraction of its scored chunks are viral.
    #[arg(long, default_value_t = 0.5, value_name = "F", allow_hyphen_values = true, value_parser = min_viral_fraction)]
    pub min_viral_fraction: f64,
}

impl RunArgs {
    /// Hub ids and published classifiers are resolved to cached paths here (fetched with
    /// `--download`); no `--classifier` means the published one for `--chunk-size`.
    pub fn options(self, quiet: bool) -> Result<crate::pipeline::RunOptions> {
        let classifier = match self.classifier {
            Some(c) => c,
            None => hub::resolve::default_classifier(self.chunk_size)?,
        };
        Ok(crate::pipeline::RunOptions {
            compute: self.compute.settings(),
            dnabert: hub::resolve::model(&self.dnabert, ModelKind::Dnabert, self.download, quiet)?,
            esm: hub::resolve::model(&self.esm, ModelKind::Esm, self.download, quiet)?,
            classifier: hub::resolve::classifier(&classifier, self.download, quiet)?,
            input: self.input,
            chunk_size: self.chunk_size as usize,
            outdir: self.outdir,
            force: self.force,
            min_viral_fraction: self.min_viral_fraction,
            quiet,
        })
    }
}

// ---- `virnucpro models` (src/hub) ----

#[derive(Args, Debug)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Download the models into the Hugging Face cache (only the files the loaders need),
    /// verified. With no model flag: ESM-2 3B, DNABERT-S and the 500 and 300 classifiers; with
    /// some, only those. Files already cached (by us or by Python tools) are not downloaded
    /// again; an interrupted download resumes.
    Fetch(ModelsFetchArgs),
    /// Show the cached models and classifiers, with sizes and where they are.
    List(ModelsListArgs),
}

#[derive(Args, Debug)]
pub struct ModelsFetchArgs {
    /// ESM-2 repository on the Hub (org/name[@revision]), e.g. facebook/esm2_t36_3B_UR50D.
    #[arg(long, value_name = "ID")]
    pub esm: Option<String>,
    /// DNABERT-S repository on the Hub (org/name[@revision]), e.g. zhihan1996/DNABERT-S.
    #[arg(long, value_name = "ID")]
    pub dnabert: Option<String>,
    /// A classifier: 500 or 300 (the published ones) or a URL, optionally ending in
    /// #sha256=<hex> (checked); repeatable.
    #[arg(long, value_name = "500|300|URL")]
    pub classifier: Vec<String>,
    /// Branch, tag or commit of the Hub repositories (default: main).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
}

impl ModelsFetchArgs {
    pub fn request(self, quiet: bool) -> crate::hub::command::FetchRequest {
        crate::hub::command::FetchRequest {
            quiet,
            esm: self.esm,
            dnabert: self.dnabert,
            classifiers: self.classifier,
            revision: self.revision,
        }
    }
}

#[derive(Args, Debug)]
pub struct ModelsListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
