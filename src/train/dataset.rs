//! `virnucpro dataset`: a labelled training set from viral and other sequences, as the
//! original's `make_train_dataset_*.py` + `features_extract.py` make one. Every record is
//! chunked and its six-frame ORFs kept exactly as `translate` does (the same chunker and ORF
//! code); every viral ORF is kept and, as the original balances its classes, as many ORFs
//! are drawn from the other sequences (uniformly over all of them, seeded; all of them when
//! there are fewer, with a warning). Written: the ORF FASTAs (or shards, as
//! `translate --shard-size`), ready for `embed-dna` / `embed-protein`, and `labels.tsv`.
//!
//! Two passes over the inputs (count, then write) keep memory flat whatever their size: the
//! draw is Knuth's selection sampling, which picks exactly k of n items in one pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::data::{LABEL_OTHERS, LABEL_VIRUS};
use super::rng::{self, Stream};
use crate::io::fasta::FastaReader;
use crate::io::output::{OutputSet, StagedFile};
use crate::io::output_lock::OutputLock;
use crate::preflight;
use crate::seq::batch::IdSet;
use crate::seq::chunk::{chunk_id, chunk_ranges};
use crate::seq::orf::{six_frame_orfs, Orf, OrfScratch, FRAMES};
use crate::seq::validate::{first_invalid_nucleotide, show_byte};
use crate::subcommand::{Finished, Subcommand};
use crate::translate::{shard_name, NUCLEOTIDE_FILE, PROTEIN_FILE, SHARD_DIR};

pub const LABELS_FILE: &str = "labels.tsv";
pub const REPORT_FILE: &str = "dataset.json";

#[derive(Debug, Clone)]
pub struct DatasetOptions {
    pub viral: Vec<PathBuf>,
    pub others: Vec<PathBuf>,
    pub chunk_size: usize,
    pub outdir: PathBuf,
    pub seed: u64,
    pub shard_size: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub chunk_size: usize,
    pub seed: u64,
    pub viral_records: u64,
    pub other_records: u64,
    pub records_skipped: u64,
    pub viral_orfs: u64,
    pub other_orfs_found: u64,
    pub other_orfs_kept: u64,
    pub shards: Option<usize>,
    pub wall_seconds: f64,
}

/// Call `each(class, orf id, orf)` for every ORF of `files`, in input order; records are
/// checked as `translate` checks them (characters, unique ids across every file).
fn for_each_orf(
    files: &[PathBuf],
    chunk_size: usize,
    seen: &mut IdSet,
    records: &mut u64,
    skipped: &mut u64,
    mut each: impl FnMut(&str, &Orf) -> Result<()>,
) -> Result<()> {
    let mut scratch = OrfScratch::default();
    let mut orfs = Vec::with_capacity(6);
    for path in files {
        let mut reader = FastaReader::open(path)?;
        let label = reader.label().to_string();
        for rec in &mut reader {
            let rec = rec?;
            if !seen.insert(&rec.id) {
                bail!(
                    "{label}: record id '{}' appears twice among the --viral and --others files; \
                     ORF ids are made from record ids, so they must be unique",
                    rec.id
                );
            }
            *records += 1;
            if rec.seq.is_empty() {
                *skipped += 1;
                continue;
            }
            if let Some((pos, byte)) = first_invalid_nucleotide(&rec.seq) {
                bail!(
                    "{label}: record '{}' has {} at position {}, which is not an IUPAC nucleotide \
                     code; is this a protein file? fix or remove the record",
                    rec.id,
                    show_byte(byte),
                    pos + 1
                );
            }
            for (j, range) in chunk_ranges(rec.seq.len(), chunk_size)
                .into_iter()
                .enumerate()
            {
                orfs.clear();
                six_frame_orfs(&rec.seq[range], &mut scratch, &mut orfs);
                let id = chunk_id(&rec.id, j);
                for orf in &orfs {
                    each(&format!("{id}{}", FRAMES[orf.frame]), orf)?;
                }
            }
        }
    }
    Ok(())
}

/// ORF FASTAs, single or sharded, staged in the set.
struct Writer<'a> {
    set: &'a OutputSet,
    shard_size: Option<usize>,
    current: Option<(StagedFile, StagedFile)>,
    in_current: usize,
    shards: usize,
}

impl Writer<'_> {
    fn write(&mut self, id: &str, orf: &Orf) -> Result<()> {
        let full = self.shard_size.is_some_and(|n| self.in_current == n);
        if self.current.is_none() || full {
            self.next()?;
        }
        let (nt, aa) = self.current.as_mut().expect("opened above");
        for (f, body) in [(nt, &orf.nucleotide), (aa, &orf.protein)] {
            let path = f.path().to_path_buf();
            (|| {
                f.write_all(b">")?;
                f.write_all(id.as_bytes())?;
                f.write_all(b"\n")?;
                f.write_all(body)?;
                f.write_all(b"\n")
            })()
            .with_context(|| format!("writing {}", path.display()))?;
        }
        self.in_current += 1;
        Ok(())
    }

    fn next(&mut self) -> Result<()> {
        self.finish_current()?;
        let (nt, aa) = match self.shard_size {
            None => (NUCLEOTIDE_FILE.to_string(), PROTEIN_FILE.to_string()),
            Some(_) => (
                format!("{SHARD_DIR}/{}", shard_name(self.shards, NUCLEOTIDE_FILE)),
                format!("{SHARD_DIR}/{}", shard_name(self.shards, PROTEIN_FILE)),
            ),
        };
        self.current = Some((self.set.create(&nt)?, self.set.create(&aa)?));
        self.shards += 1;
        self.in_current = 0;
        Ok(())
    }

    fn finish_current(&mut self) -> Result<()> {
        if let Some((nt, aa)) = self.current.take() {
            nt.finish()?;
            aa.finish()?;
        }
        Ok(())
    }
}

pub fn run(opts: &DatasetOptions) -> Result<DatasetSummary> {
    let started = Instant::now();
    if opts.chunk_size < 3 {
        bail!("--chunk-size must be at least 3 (one codon)");
    }
    for p in opts.viral.iter().chain(&opts.others) {
        if crate::io::fingerprint::is_stream(p) {
            bail!(
                "{}: dataset reads its inputs twice (to count, then to write), so they must be \
                 regular files, not stdin or a pipe",
                p.display()
            );
        }
    }
    // Pass 1: count the ORFs of each class.
    let (mut viral_records, mut other_records, mut skipped) = (0u64, 0u64, 0u64);
    let (mut viral_orfs, mut other_orfs) = (0u64, 0u64);
    let mut seen = IdSet::default();
    for_each_orf(
        &opts.viral,
        opts.chunk_size,
        &mut seen,
        &mut viral_records,
        &mut skipped,
        |_, _| {
            viral_orfs += 1;
            Ok(())
        },
    )?;
    for_each_orf(
        &opts.others,
        opts.chunk_size,
        &mut seen,
        &mut other_records,
        &mut skipped,
        |_, _| {
            other_orfs += 1;
            Ok(())
        },
    )?;
    if viral_orfs == 0 {
        bail!(
            "the --viral files give no ORF (every chunk has a stop codon in all six frames, or \
             the sequences are shorter than a codon): no training set can be made"
        );
    }
    if other_orfs == 0 {
        bail!("the --others files give no ORF: no training set can be made");
    }
    let keep = viral_orfs.min(other_orfs);
    if other_orfs < viral_orfs {
        tracing::warn!(
            "the --others files give {other_orfs} ORFs, fewer than the {viral_orfs} viral ones: \
             all are kept and the classes are unbalanced"
        );
    }

    // Pass 2: write every viral ORF and the drawn others.
    // Every name either layout may write, so a re-run with the other layout leaves no stale files.
    let owned_all = [LABELS_FILE, SHARD_DIR, NUCLEOTIDE_FILE, PROTEIN_FILE];
    let set = OutputSet::begin(&opts.outdir, REPORT_FILE, &owned_all)?;
    let mut writer = Writer {
        set: &set,
        shard_size: opts.shard_size,
        current: None,
        in_current: 0,
        shards: 0,
    };
    let mut labels = set.create(LABELS_FILE)?;
    let labels_path = labels.path().to_path_buf();
    labels
        .write_all(b"id\tlabel\n")
        .with_context(|| format!("writing {}", labels_path.display()))?;
    let mut seen = IdSet::default();
    let (mut n1, mut n2, mut s) = (0u64, 0u64, 0u64);
    for_each_orf(
        &opts.viral,
        opts.chunk_size,
        &mut seen,
        &mut n1,
        &mut s,
        |id, orf| {
            writer.write(id, orf)?;
            writeln!(labels, "{id}\t{LABEL_VIRUS}")
                .with_context(|| format!("writing {}", labels_path.display()))
        },
    )?;
    let mut draw = rng::rng(opts.seed, Stream::Balance);
    let (mut seen_others, mut kept) = (0u64, 0u64);
    for_each_orf(
        &opts.others,
        opts.chunk_size,
        &mut seen,
        &mut n2,
        &mut s,
        |id, orf| {
            // Selection sampling: keep this one with probability (still needed) / (still to come).
            let take = rng::below(&mut draw, other_orfs - seen_others) < keep - kept;
            seen_others += 1;
            if take {
                kept += 1;
                writer.write(id, orf)?;
                writeln!(labels, "{id}\t{LABEL_OTHERS}")
                    .with_context(|| format!("writing {}", labels_path.display()))?;
            }
            Ok(())
        },
    )?;
    if n1 != viral_records || n2 != other_records || seen_others != other_orfs {
        bail!("the input files changed while dataset was reading them; run it again");
    }
    writer.finish_current()?;
    labels.finish()?;
    let summary = DatasetSummary {
        chunk_size: opts.chunk_size,
        seed: opts.seed,
        viral_records,
        other_records,
        records_skipped: skipped,
        viral_orfs,
        other_orfs_found: other_orfs,
        other_orfs_kept: kept,
        shards: opts.shard_size.map(|_| writer.shards),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    set.commit(&serde_json::to_vec_pretty(&summary)?)?;
    Ok(summary)
}

impl Subcommand for DatasetOptions {
    fn check(&self) -> Result<()> {
        for f in self.viral.iter().chain(&self.others) {
            preflight::input_file(f, "input")?;
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

pub fn log_summary(s: &DatasetSummary, outdir: &Path) {
    tracing::info!(
        "dataset: {} viral records -> {} ORFs; {} other records -> {} ORFs, {} kept; -> {}",
        s.viral_records,
        s.viral_orfs,
        s.other_records,
        s.other_orfs_found,
        s.other_orfs_kept,
        outdir.display()
    );
}
