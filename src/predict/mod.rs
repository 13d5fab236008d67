//! `virnucpro predict`: join DNA and protein embeddings by ORF id, classify with the VirNucPro
//! MLP, and write the original's tables plus a per-sequence summary, a figure and, given the
//! FASTA files they came from, the viral sequences and chunks themselves.

pub mod fasta_out;
pub mod plot;
pub mod report;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::flex::FlexDevice;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use crate::io::embeddings::{EmbeddingKind, MappedSet};
use crate::io::output::OutputSet;
use crate::io::output_lock::OutputLock;
use crate::models::classifier::Classifier;
use crate::models::tensor_to_f32;
use crate::preflight;
use crate::subcommand::{Finished, Subcommand};
use fasta_out::{ViralFasta, VIRAL_CHUNKS_FILE, VIRAL_SEQUENCES_FILE};
use report::{OrfScore, SequenceSummary, HIGHEST_FILE, RESULTS_FILE, SUMMARY_FILE};

pub const PLOT_STEM: &str = "prediction";
pub const REPORT_FILE: &str = "predict.json";

#[derive(Debug, Clone)]
pub struct PredictOptions {
    pub dna: Vec<PathBuf>,
    pub protein: Vec<PathBuf>,
    pub classifier: PathBuf,
    pub outdir: PathBuf,
    /// Fraction of a sequence's scored chunks that must be viral to call the sequence viral.
    pub min_viral_fraction: f64,
    /// Sequences drawn in the figure.
    pub plot_top: usize,
    /// The sample's input FASTA: write the viral ones to viral_sequences.fa.
    pub sequences: Option<PathBuf>,
    /// translate's chunked.fa (one or more files): write the viral chunks to viral_chunks.fa.
    pub chunks: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PredictSummary {
    pub orfs_scored: usize,
    pub orfs_virus: usize,
    pub chunks: usize,
    pub chunks_virus: usize,
    pub sequences: usize,
    pub sequences_virus: usize,
    pub dna_only_ids: usize,
    pub protein_only_ids: usize,
    pub feature_dim: usize,
    pub dna_model: String,
    pub protein_model: String,
    /// The classifier's file name and the sha256 of its content: which classifier made the
    /// calls (a pipeline's summary table names it per sample).
    pub classifier: String,
    pub classifier_sha256: String,
    /// viral_sequences.fa, when --sequences was given (absent otherwise, so the report's keys
    /// are the same as before for those who do not ask).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viral_sequences_fasta: Option<ViralFasta>,
    /// viral_chunks.fa, when --chunks was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viral_chunks_fasta: Option<ViralFasta>,
    pub wall_seconds: f64,
}

/// Rows per classifier forward pass: bounds memory on samples with millions of ORFs.
const CLASSIFY_ROWS: usize = 16384;

/// Load every file of one side and check they agree with each other.
pub fn load_side(paths: &[PathBuf], kind: EmbeddingKind, flag: &str) -> Result<Vec<MappedSet>> {
    if paths.is_empty() {
        bail!("no {flag} embeddings files given");
    }
    let mut sets: Vec<MappedSet> = Vec::with_capacity(paths.len());
    for p in paths {
        let set = MappedSet::open(p)?;
        if set.meta.kind != kind {
            bail!(
                "{} holds {} embeddings but was given to {flag}; pass DNABERT-S files to --dna and ESM-2 files to --protein",
                p.display(),
                set.meta.kind
            );
        }
        if let Some(first) = sets.first() {
            if first.dim != set.dim
                || first.meta.model != set.meta.model
                || first.meta.pooling != set.meta.pooling
            {
                bail!(
                    "{} was made by model '{}' ({}-d) but {} by '{}' ({}-d); all {flag} shards must come from one model",
                    p.display(),
                    set.meta.model,
                    set.dim,
                    paths[0].display(),
                    first.meta.model,
                    first.dim
                );
            }
        }
        sets.push(set);
    }
    Ok(sets)
}

pub fn run(opts: &PredictOptions) -> Result<PredictSummary> {
    let started = Instant::now();
    let dna = load_side(&opts.dna, EmbeddingKind::Dna, "--dna")?;
    let protein = load_side(&opts.protein, EmbeddingKind::Protein, "--protein")?;
    let device = FlexDevice;
    let classifier = load_classifier(opts, &dna, &protein, &device)?;
    // Everything predict writes is staged and appears together with predict.json, or not at
    // all; created here so a bad input above leaves the output directory untouched.
    let set = begin_outputs(&opts.outdir)?;
    let join = join_by_id(&dna, &protein)?;
    let scores = classify(opts, &join.rows, &dna, &protein, &classifier, &device)?;

    report::write_results(&set, &scores)?;
    let maxima = report::chunk_maxima(&scores);
    report::write_highest(&set, &maxima)?;
    let sequences = report::summarise(&scores, &maxima, opts.min_viral_fraction);
    report::write_summary(&set, &sequences)?;
    plot::write_prediction_plots(
        &set,
        PLOT_STEM,
        &tracks(&sequences),
        &scores.iter().map(|s| s.virus).collect::<Vec<_>>(),
        opts.plot_top,
    )?;
    let viral_sequences_fasta = match &opts.sequences {
        Some(input) => Some(fasta_out::write_viral_sequences(&set, input, &sequences)?),
        None => None,
    };
    let viral_chunks_fasta = match opts.chunks.is_empty() {
        true => None,
        false => Some(fasta_out::write_viral_chunks(
            &set,
            &opts.chunks,
            &scores,
            &maxima,
        )?),
    };

    let summary = PredictSummary {
        orfs_scored: scores.len(),
        orfs_virus: scores.iter().filter(|s| s.is_virus()).count(),
        chunks: maxima.len(),
        chunks_virus: maxima.values().filter(|b| b.is_virus()).count(),
        sequences: sequences.len(),
        sequences_virus: sequences.iter().filter(|s| s.is_virus).count(),
        dna_only_ids: join.dna_only,
        protein_only_ids: join.protein_only,
        feature_dim: dna[0].dim + protein[0].dim,
        dna_model: dna[0].meta.model.clone(),
        protein_model: protein[0].meta.model.clone(),
        classifier: opts
            .classifier
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        classifier_sha256: crate::io::fingerprint::sha256_file(&opts.classifier)?,
        viral_sequences_fasta,
        viral_chunks_fasta,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    // predict.json completes the set: written last, it marks the tables and figures as one run's.
    set.commit(&serde_json::to_vec_pretty(&summary)?)?;
    Ok(summary)
}

/// The classifier, refused unless it takes DNA width + protein width features.
fn load_classifier(
    opts: &PredictOptions,
    dna: &[MappedSet],
    protein: &[MappedSet],
    device: &FlexDevice,
) -> Result<Classifier<Flex>> {
    let classifier = Classifier::<Flex>::load(&opts.classifier, device)
        .with_context(|| format!("loading classifier {}", opts.classifier.display()))?;
    let (dna_dim, prot_dim) = (dna[0].dim, protein[0].dim);
    classifier
        .check_input_dim(dna_dim + prot_dim)
        .with_context(|| {
            format!(
                "DNA embeddings in {} are {dna_dim}-d ({}) and protein embeddings in {} \
                 {prot_dim}-d ({})",
                opts.dna[0].display(),
                dna[0].meta.model,
                opts.protein[0].display(),
                protein[0].meta.model
            )
        })?;
    Ok(classifier)
}

/// predict's output set: every file it may write.
fn begin_outputs(outdir: &std::path::Path) -> Result<OutputSet> {
    let figures = plot::figure_names(PLOT_STEM);
    // The viral FASTA files are owned even when not asked for: a re-run without --sequences or
    // --chunks removes an earlier run's, which would no longer match the tables.
    let owned: Vec<&str> = [
        RESULTS_FILE,
        HIGHEST_FILE,
        SUMMARY_FILE,
        VIRAL_SEQUENCES_FILE,
        VIRAL_CHUNKS_FILE,
    ]
    .into_iter()
    .chain(figures.iter().map(String::as_str))
    .collect();
    OutputSet::begin(outdir, REPORT_FILE, &owned)
}

/// An ORF joined across the two sides: (id, (DNA file, row), (protein file, row)); rows are
/// read from the maps per block.
type JoinedRow<'a> = (&'a str, (usize, usize), (usize, usize));

/// The ORFs with both embeddings, in the DNA files' order (the original's row order), and how
/// many had only one.
struct Join<'a> {
    rows: Vec<JoinedRow<'a>>,
    dna_only: usize,
    protein_only: usize,
}

fn join_by_id<'a>(dna: &'a [MappedSet], protein: &'a [MappedSet]) -> Result<Join<'a>> {
    let mut prot_index: HashMap<&str, (usize, usize)> = HashMap::new();
    for (s, set) in protein.iter().enumerate() {
        for (r, id) in set.ids.iter().enumerate() {
            if prot_index.insert(id.as_str(), (s, r)).is_some() {
                bail!("ORF id '{id}' appears twice in the --protein files; each ORF must be embedded once");
            }
        }
    }
    let mut seen_dna: HashSet<&str> = HashSet::new();
    let mut rows: Vec<JoinedRow> = Vec::new();
    let mut dna_only = 0usize;
    for (ds, set) in dna.iter().enumerate() {
        for (r, id) in set.ids.iter().enumerate() {
            if !seen_dna.insert(id.as_str()) {
                bail!("ORF id '{id}' appears twice in the --dna files; each ORF must be embedded once");
            }
            match prot_index.get(id.as_str()) {
                Some(&at) => rows.push((id, (ds, r), at)),
                None => dna_only += 1,
            }
        }
    }
    let protein_only = prot_index.len() - rows.len();
    if dna_only + protein_only > 0 {
        tracing::warn!(
            "{dna_only} ORF ids have only a DNA embedding and {protein_only} only a protein embedding; \
             they are skipped, as the original does (were the shards paired correctly?)"
        );
    }
    let no_orfs = dna.iter().chain(protein).all(|set| set.ids.is_empty());
    if no_orfs {
        // A sample whose sequences gave no ORF (all too short, or empty) is a result, not an
        // error: write the tables with their headers only, so that a run over many samples
        // finishes and this one reads as "nothing to call".
        tracing::warn!(
            "the embeddings files hold no ORF (the sample had no sequence with an ORF): \
             writing empty tables"
        );
    } else if rows.is_empty() {
        bail!(
            "no ORF id is present in both the --dna and --protein files: nothing to classify \
             (empty inputs, or files from different samples?)"
        );
    }
    Ok(Join {
        rows,
        dna_only,
        protein_only,
    })
}

/// Every joined ORF's two probabilities, [`CLASSIFY_ROWS`] rows per forward pass.
fn classify(
    opts: &PredictOptions,
    joined: &[JoinedRow],
    dna: &[MappedSet],
    protein: &[MappedSet],
    classifier: &Classifier<Flex>,
    device: &FlexDevice,
) -> Result<Vec<OrfScore>> {
    let dim = dna[0].dim + protein[0].dim;
    let mut scores: Vec<OrfScore> = Vec::with_capacity(joined.len());
    for block in joined.chunks(CLASSIFY_ROWS) {
        let mut features = Vec::with_capacity(block.len() * dim);
        for &(_, (ds, dr), (ps, pr)) in block {
            // Each row is checked for NaN/inf as it is read: one would turn into a confident
            // but meaningless score (NaN compares false, so every such ORF reads `others`).
            dna[ds].extend_row(dr, &mut features)?;
            protein[ps].extend_row(pr, &mut features)?;
        }
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(features, [block.len(), dim]), device);
        let probs = tensor_to_f32(classifier.forward_probs(x))?;
        if let Some(bad) = probs.iter().position(|p| !p.is_finite()) {
            // Finite but huge embeddings can still overflow the classifier.
            let (id, (ds, _), (ps, _)) = block[bad / 2];
            bail!(
                "ORF '{id}' gets a non-finite classifier score from its embeddings in {} and {} \
                 (values too large to be real embeddings?); re-embed them",
                opts.dna[ds].display(),
                opts.protein[ps].display()
            );
        }
        for (i, (id, _, _)) in block.iter().enumerate() {
            scores.push(OrfScore {
                id: id.to_string(),
                others: probs[2 * i],
                virus: probs[2 * i + 1],
            });
        }
    }
    Ok(scores)
}

/// The figure's input: each sequence's chunks with their best scores.
pub(crate) fn tracks(seqs: &[SequenceSummary]) -> Vec<plot::SequenceTrack> {
    seqs.iter()
        .map(|s| plot::SequenceTrack {
            id: s.id.clone(),
            chunks: s
                .chunks
                .iter()
                .map(|&(chunk, best)| plot::ChunkPoint { chunk, best })
                .collect(),
            is_virus: s.is_virus,
            max_virus_score: s.max_virus_score,
        })
        .collect()
}

impl Subcommand for PredictOptions {
    fn check(&self) -> Result<()> {
        for f in self.dna.iter().chain(&self.protein) {
            preflight::input_file(f, "embeddings file")?;
        }
        preflight::input_file(&self.classifier, "--classifier")?;
        if let Some(f) = &self.sequences {
            preflight::input_file(f, "--sequences")?;
        }
        for f in &self.chunks {
            preflight::input_file(f, "--chunks")?;
        }
        preflight::output_dir(&self.outdir, "--outdir")
    }

    fn claim(&self) -> Result<Option<OutputLock>> {
        OutputLock::outdir(&self.outdir).map(Some)
    }

    fn execute(&self) -> Result<Finished> {
        log_summary(&run(self)?, &self.outdir);
        Ok(Finished::COMPLETE)
    }
}

pub fn log_summary(s: &PredictSummary, outdir: &std::path::Path) {
    tracing::info!(
        "predict: {} ORFs ({} virus), {} chunks ({} virus), {} sequences ({} virus) -> {}",
        s.orfs_scored,
        s.orfs_virus,
        s.chunks,
        s.chunks_virus,
        s.sequences,
        s.sequences_virus,
        outdir.display()
    );
}
