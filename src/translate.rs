//! `virnucpro translate`: FASTA -> chunks -> six-frame ORFs, streaming with bounded memory.
//!
//! A reader thread parses and validates records into batches of about [`BATCH_BYTES`] bytes;
//! each batch's chunks are translated and formatted in parallel (rayon, order kept by
//! `collect`) a window of [`WINDOW_BASES`](crate::seq::batch::WINDOW_BASES) bases at a time,
//! then written in input order. Memory is bounded by two batches (the one being translated and
//! the next one, handed over only when this one is done), one window of output, and a 16-byte
//! hash per record for duplicate-id detection (20–40 bytes a record in its hash table). A
//! record longer than a batch is a batch of its own, so the bound is about twice the largest
//! record: the chunker needs a record's length before its first chunk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::io::fasta::{FastaReader, FastaRecord};
use crate::io::output::{OutputSet, StagedFile};
use crate::io::output_lock::OutputLock;
use crate::preflight;
use crate::runtime::interrupt::{Interrupted, StopOnSignal};
use crate::runtime::progress::Progress;
use crate::seq::batch::{chunk_work, windows, IdSet, Work};
use crate::seq::chunk::chunk_id;
use crate::seq::orf::{six_frame_orfs, Orf, OrfScratch, FRAMES};
use crate::seq::validate::{first_invalid_nucleotide, show_byte};
use crate::subcommand::{Finished, Subcommand};

/// Bytes of records per batch, counting [`RECORD_OVERHEAD`] per record so that millions of
/// short records make small batches too: large enough to keep every thread busy, small enough
/// that memory stays flat on a 10 GB input.
pub const BATCH_BYTES: usize = 8 << 20;

/// What a record costs besides its bases and id: its allocations, its chunk list and its
/// share of the formatted output.
const RECORD_OVERHEAD: usize = 256;

pub const NUCLEOTIDE_FILE: &str = "identified_nucleotide.fa";
pub const PROTEIN_FILE: &str = "identified_protein.faa";
pub const CHUNKS_FILE: &str = "chunked.fa";
pub const SUMMARY_FILE: &str = "translate.json";
pub const SHARD_DIR: &str = "shards";

#[derive(Debug, Clone)]
pub struct TranslateOptions {
    pub input: PathBuf,
    pub chunk_size: usize,
    pub outdir: PathBuf,
    pub threads: Option<usize>,
    pub shard_size: Option<usize>,
    pub write_chunks: bool,
    pub allow_duplicate_ids: bool,
    pub quiet: bool,
}

/// A record left out of the outputs, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub id: String,
    pub reason: String,
}

/// What `translate` did: printed at the end and written as `translate.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TranslateSummary {
    pub input: String,
    pub chunk_size: usize,
    pub records: u64,
    pub bases: u64,
    pub chunks: u64,
    pub orfs: u64,
    pub records_skipped: u64,
    pub skipped: Vec<Skipped>,
    pub outputs: Vec<String>,
    pub shards: Option<usize>,
    pub threads: usize,
    pub wall_seconds: f64,
    pub mbp_per_second: f64,
}

/// At most this many skipped records are listed by id in the summary (all are counted).
const MAX_LISTED_SKIPS: usize = 1000;

type Batch = Vec<FastaRecord>;

/// Everything written for one chunk, formatted in the worker that translated it.
#[derive(Default)]
struct ChunkOut {
    chunk_fasta: Vec<u8>,
    nucleotide: Vec<u8>,
    protein: Vec<u8>,
    /// End offsets of each ORF's records in `nucleotide` / `protein`, for shard boundaries.
    orf_ends: Vec<(usize, usize)>,
}

pub fn run(opts: &TranslateOptions) -> Result<TranslateSummary> {
    if opts.chunk_size < 3 {
        bail!(
            "--chunk-size must be at least 3 (one codon); got {}",
            opts.chunk_size
        );
    }
    if opts.shard_size == Some(0) {
        bail!("--shard-size must be at least 1");
    }
    let reader = FastaReader::open(&opts.input)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .context("starting worker threads")?;
    let threads = pool.current_num_threads();
    let started = Instant::now();

    // From here a first SIGTERM/SIGINT stops the run between batches: the staged outputs are
    // removed (dropping the sink) and the previous outputs, if any, stay as they were.
    let signals = StopOnSignal::install()?;
    let mut sink = Sink::create(opts)?;
    let mut summary = TranslateSummary {
        input: reader.label().to_string(),
        chunk_size: opts.chunk_size,
        records: 0,
        bases: 0,
        chunks: 0,
        orfs: 0,
        records_skipped: 0,
        skipped: Vec::new(),
        outputs: Vec::new(),
        shards: None,
        threads,
        wall_seconds: 0.0,
        mbp_per_second: 0.0,
    };
    let mut progress = Progress::new("translate", "bp", None, opts.quiet);

    let (rx, reader_thread) = spawn_reader(reader, opts.allow_duplicate_ids);
    loop {
        if let Some(signal) = signals.requested() {
            return Err(stopped(signal, opts));
        }
        // Waits in short slices, so a signal is noticed even while the input is slow (a pipe).
        let message = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let (batch, skipped) = message?;
        let batch_bases = translate_one(&batch, skipped, &pool, opts, &mut summary, &mut sink)?;
        progress.inc(batch_bases);
    }
    reader_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the FASTA reader thread panicked"))?;
    progress.finish();

    if summary.records == 0 {
        bail!("{}: no FASTA records found", summary.input);
    }
    let (set, outputs, shards) = sink.finish()?;
    if let Some(signal) = signals.requested() {
        return Err(stopped(signal, opts));
    }
    summary.outputs = outputs;
    summary.shards = shards;
    summary.wall_seconds = started.elapsed().as_secs_f64();
    summary.mbp_per_second = summary.bases as f64 / 1e6 / summary.wall_seconds.max(1e-9);
    let json = serde_json::to_vec_pretty(&summary)?;
    // The outputs and translate.json appear together, the summary last (see OutputSet).
    set.commit(&json)?;
    Ok(summary)
}

/// Parsing and validation on their own thread, one batch ahead of translation: the channel
/// holds none, so the reader waits with the next batch until this one is done. Each message is
/// a batch of records of about [`BATCH_BYTES`] and the empty ones skipped in it, or the error
/// that ends the input.
#[allow(clippy::type_complexity)]
fn spawn_reader(
    mut reader: FastaReader,
    allow_dups: bool,
) -> (
    mpsc::Receiver<Result<(Batch, Vec<Skipped>)>>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::sync_channel::<Result<(Batch, Vec<Skipped>)>>(0);
    let thread = std::thread::spawn(move || {
        let mut seen = IdSet::default();
        let mut batch = Vec::new();
        let mut skipped = Vec::new();
        let mut bytes = 0usize;
        let label = reader.label().to_string();
        for rec in &mut reader {
            let rec = match rec.and_then(|r| check_record(r, &label, &mut seen, allow_dups)) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            // Skipped records count too: a file of millions of empty records makes batches.
            bytes += rec.seq.len() + rec.id.len() + RECORD_OVERHEAD;
            if rec.seq.is_empty() {
                skipped.push(Skipped {
                    id: rec.id,
                    reason: "empty sequence".into(),
                });
            } else {
                batch.push(rec);
            }
            if bytes >= BATCH_BYTES {
                if tx
                    .send(Ok((
                        std::mem::take(&mut batch),
                        std::mem::take(&mut skipped),
                    )))
                    .is_err()
                {
                    return;
                }
                bytes = 0;
            }
        }
        let _ = tx.send(Ok((batch, skipped)));
    });
    (rx, thread)
}

/// One batch from the reader: its skipped records counted (and listed, up to
/// [`MAX_LISTED_SKIPS`]), its characters checked, its chunks translated in parallel a window
/// at a time and written in input order. Returns the batch's bases, for the progress line.
fn translate_one(
    batch: &Batch,
    skipped: Vec<Skipped>,
    pool: &rayon::ThreadPool,
    opts: &TranslateOptions,
    summary: &mut TranslateSummary,
    sink: &mut Sink,
) -> Result<u64> {
    for s in skipped {
        tracing::warn!("{}: record '{}' skipped: {}", summary.input, s.id, s.reason);
        summary.records += 1;
        summary.records_skipped += 1;
        if summary.skipped.len() < MAX_LISTED_SKIPS {
            summary.skipped.push(s);
        }
    }
    pool.install(|| check_characters(batch, &summary.input))?;
    let batch_bases: u64 = batch.iter().map(|r| r.seq.len() as u64).sum();
    summary.records += batch.len() as u64;
    summary.bases += batch_bases;
    let work = chunk_work(batch, opts.chunk_size);
    for window in windows(&work) {
        let outs = pool.install(|| translate_batch(batch, window, opts.write_chunks));
        summary.chunks += outs.len() as u64;
        for out in &outs {
            summary.orfs += out.orf_ends.len() as u64;
            sink.write(out)?;
        }
    }
    Ok(batch_bases)
}

/// The error for a run stopped by a signal; its staged outputs are removed as it unwinds.
fn stopped(signal: i32, opts: &TranslateOptions) -> anyhow::Error {
    Interrupted {
        signal,
        detail: format!(
            "translate wrote nothing to {} (earlier outputs there, if any, are unchanged); \
             run the same command again",
            opts.outdir.display()
        ),
    }
    .into()
}

/// Characters of a batch's records, checked in parallel; the error names the first bad record
/// in input order.
fn check_characters(batch: &[FastaRecord], label: &str) -> Result<()> {
    let bad = batch
        .par_iter()
        .map(|rec| first_invalid_nucleotide(&rec.seq).map(|hit| (rec, hit)))
        .find_first(Option::is_some)
        .flatten();
    if let Some((rec, (pos, byte))) = bad {
        bail!(
            "{label}: record '{}' has {} at position {}, which is not an IUPAC nucleotide code; \
             is this a protein file? fix or remove the record",
            rec.id,
            show_byte(byte),
            pos + 1
        );
    }
    Ok(())
}

/// Per-record check in input order: duplicate ids (characters are checked per batch, in
/// parallel, by [`check_characters`]).
fn check_record(
    rec: FastaRecord,
    label: &str,
    seen: &mut IdSet,
    allow_dups: bool,
) -> Result<FastaRecord> {
    if !allow_dups && !seen.insert(&rec.id) {
        bail!(
            "{label}: duplicate record id '{}'; ids must be unique because later steps join by id \
             (rename it, or pass --allow-duplicate-ids to continue anyway)",
            rec.id
        );
    }
    Ok(rec)
}

fn translate_batch(batch: &[FastaRecord], work: &[Work], write_chunks: bool) -> Vec<ChunkOut> {
    work.par_iter()
        .map_init(
            || (OrfScratch::default(), Vec::<Orf>::with_capacity(6)),
            |(scratch, orfs), (r, j, range)| {
                let rec = &batch[*r];
                let chunk = &rec.seq[range.clone()];
                let id = chunk_id(&rec.id, *j);
                // Sized for the common case (a couple of kept frames) to avoid regrowth.
                let mut out = ChunkOut {
                    nucleotide: Vec::with_capacity(2 * (range.len() + id.len() + 8)),
                    protein: Vec::with_capacity(2 * (range.len() / 3 + id.len() + 8)),
                    ..Default::default()
                };
                if write_chunks {
                    out.chunk_fasta
                        .reserve(range.len() + range.len() / 60 + id.len() + 4);
                    write_wrapped(&mut out.chunk_fasta, &id, chunk);
                }
                orfs.clear();
                six_frame_orfs(chunk, scratch, orfs);
                for orf in orfs.iter() {
                    let frame = FRAMES[orf.frame];
                    for (buf, body) in [
                        (&mut out.nucleotide, &orf.nucleotide),
                        (&mut out.protein, &orf.protein),
                    ] {
                        buf.push(b'>');
                        buf.extend_from_slice(id.as_bytes());
                        buf.extend_from_slice(frame.as_bytes());
                        buf.push(b'\n');
                        buf.extend_from_slice(body);
                        buf.push(b'\n');
                    }
                    out.orf_ends.push((out.nucleotide.len(), out.protein.len()));
                }
                out
            },
        )
        .collect()
}

/// FASTA with 60-column lines, as Biopython's `SeqIO.write` (the original's chunked file).
fn write_wrapped(buf: &mut Vec<u8>, id: &str, seq: &[u8]) {
    buf.push(b'>');
    buf.extend_from_slice(id.as_bytes());
    buf.push(b'\n');
    for line in seq.chunks(60) {
        buf.extend_from_slice(line);
        buf.push(b'\n');
    }
}

/// Where ORFs go: one pair of files, or numbered shard pairs of at most `shard_size` ORFs; all
/// of them staged in one [`OutputSet`] that `translate.json` completes.
struct Sink {
    set: OutputSet,
    chunks: Option<StagedFile>,
    pair: Option<(StagedFile, StagedFile)>,
    shards: Option<Shards>,
}

struct Shards {
    size: usize,
    current: Option<(StagedFile, StagedFile)>,
    in_current: usize,
    count: usize,
}

/// Every top-level name translate may write: a re-run replaces or removes all of them, so
/// switching between `--shard-size` and single files, or dropping `--write-chunks`, never
/// leaves the previous run's files beside the new ones.
const OUTPUT_NAMES: &[&str] = &[NUCLEOTIDE_FILE, PROTEIN_FILE, CHUNKS_FILE, SHARD_DIR];

impl Sink {
    fn create(opts: &TranslateOptions) -> Result<Self> {
        let set = OutputSet::begin(&opts.outdir, SUMMARY_FILE, OUTPUT_NAMES)?;
        let chunks = if opts.write_chunks {
            Some(set.create(CHUNKS_FILE)?)
        } else {
            None
        };
        let (pair, shards) = match opts.shard_size {
            None => (
                Some((set.create(NUCLEOTIDE_FILE)?, set.create(PROTEIN_FILE)?)),
                None,
            ),
            Some(size) => (
                None,
                Some(Shards {
                    size,
                    current: None,
                    in_current: 0,
                    count: 0,
                }),
            ),
        };
        Ok(Self {
            set,
            chunks,
            pair,
            shards,
        })
    }

    fn write(&mut self, out: &ChunkOut) -> Result<()> {
        if let Some(f) = &mut self.chunks {
            f.write_all(&out.chunk_fasta)
                .with_context(|| format!("writing {}", f.path().display()))?;
        }
        if let Some((nt, aa)) = &mut self.pair {
            nt.write_all(&out.nucleotide)
                .with_context(|| format!("writing {}", nt.path().display()))?;
            aa.write_all(&out.protein)
                .with_context(|| format!("writing {}", aa.path().display()))?;
        }
        if let Some(shards) = &mut self.shards {
            let mut start = (0, 0);
            for &end in &out.orf_ends {
                let (nt, aa) = shards.file_for_next_orf(&self.set)?;
                nt.write_all(&out.nucleotide[start.0..end.0])
                    .with_context(|| format!("writing {}", nt.path().display()))?;
                aa.write_all(&out.protein[start.1..end.1])
                    .with_context(|| format!("writing {}", aa.path().display()))?;
                start = end;
            }
        }
        Ok(())
    }

    /// Finish every file; returns the set (to commit with the summary), the output paths and
    /// the shard count.
    fn finish(self) -> Result<(OutputSet, Vec<String>, Option<usize>)> {
        let mut outputs = Vec::new();
        if let Some(f) = self.chunks {
            outputs.push(f.path().display().to_string());
            f.finish()?;
        }
        if let Some((nt, aa)) = self.pair {
            outputs.push(nt.path().display().to_string());
            outputs.push(aa.path().display().to_string());
            nt.finish()?;
            aa.finish()?;
        }
        let mut shard_count = None;
        if let Some(mut shards) = self.shards {
            // A sample without any ORF still gets one shard pair, empty: a workflow that fans
            // out over shards then carries it through to empty result tables instead of
            // silently dropping the sample.
            if shards.count == 0 {
                shards.open_next(&self.set)?;
            }
            if let Some((nt, aa)) = shards.current.take() {
                nt.finish()?;
                aa.finish()?;
            }
            outputs.push(self.set.final_path(SHARD_DIR).display().to_string());
            shard_count = Some(shards.count);
        }
        Ok((self.set, outputs, shard_count))
    }
}

impl Shards {
    fn file_for_next_orf(&mut self, set: &OutputSet) -> Result<&mut (StagedFile, StagedFile)> {
        if self.current.is_none() || self.in_current == self.size {
            self.open_next(set)?;
        }
        self.in_current += 1;
        Ok(self.current.as_mut().expect("just opened"))
    }

    /// Finish the current shard pair, if any, and start the next one.
    fn open_next(&mut self, set: &OutputSet) -> Result<()> {
        if let Some((nt, aa)) = self.current.take() {
            nt.finish()?;
            aa.finish()?;
        }
        let k = self.count;
        self.current = Some((
            set.create(&format!("{SHARD_DIR}/{}", shard_name(k, NUCLEOTIDE_FILE)))?,
            set.create(&format!("{SHARD_DIR}/{}", shard_name(k, PROTEIN_FILE)))?,
        ));
        self.count += 1;
        self.in_current = 0;
        Ok(())
    }
}

/// `shards/<k>.identified_nucleotide.fa`, zero-padded so a glob lists shards in order.
pub fn shard_name(k: usize, file: &str) -> String {
    format!("{k:05}.{file}")
}

impl Subcommand for TranslateOptions {
    fn check(&self) -> Result<()> {
        preflight::input_file(&self.input, "input")?;
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

/// Print the summary for people (stderr, through the log).
pub fn log_summary(s: &TranslateSummary, outdir: &Path) {
    tracing::info!(
        "translate: {} records ({} skipped), {:.2} Mbp, {} chunks of {} bp, {} ORFs kept; {:.1} s ({:.1} Mbp/s, {} threads) -> {}",
        s.records,
        s.records_skipped,
        s.bases as f64 / 1e6,
        s.chunks,
        s.chunk_size,
        s.orfs,
        s.wall_seconds,
        s.mbp_per_second,
        s.threads,
        outdir.display()
    );
    if let Some(n) = s.shards {
        tracing::info!(
            "translate: {n} shard pairs in {}",
            outdir.join(SHARD_DIR).display()
        );
    }
}
