//! `virnucpro run`: translate -> embed-dna -> embed-protein -> predict in one process, for one
//! machine. Every step's outputs stay under the output directory; a step whose outputs are
//! complete and were made with the same inputs and settings is skipped on a re-run (resume after
//! a crash or a kill), `--force` redoes everything.
//!
//! Completion is recorded per step in `DIR/steps/<step>.json`, written only after the step's
//! outputs were atomically moved into place, holding the step's fingerprint (inputs with their
//! sizes and modification times, models, settings that change results). An embedding step
//! that finished with failed sequences is not complete: a re-run retries those (and only
//! those, from the step's checkpoint).
//!
//! Before the first step everything the run needs is checked ([`crate::preflight`]), and the
//! output directory is locked for the whole run ([`OutputLock`]). Stdin (`run -`, or a pipe such
//! as `<(zcat x.gz)`) is copied to `DIR/stdin.fa` while its content is hashed, so a re-run with
//! other content redoes the steps.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::device::LazyPlacement;
use crate::embed::{self, ComputeSettings, EmbedOptions, EmbedSummary};
use crate::io::output::{ensure_dir, write_atomic};
use crate::io::output_lock::OutputLock;
use crate::predict::{self, PredictOptions};
use crate::preflight;
use crate::subcommand::{Finished, Subcommand};
use crate::translate::{self, TranslateOptions, NUCLEOTIDE_FILE, PROTEIN_FILE};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub input: PathBuf,
    pub dnabert: PathBuf,
    pub esm: PathBuf,
    pub classifier: PathBuf,
    pub chunk_size: usize,
    pub outdir: PathBuf,
    pub compute: ComputeSettings,
    pub force: bool,
    pub min_viral_fraction: f64,
    pub quiet: bool,
}

/// A step's entry in run.json: its own report (the step's summary, as its marker keeps it).
/// Fields in the order the file has always had them (alphabetical).
#[derive(Debug, Serialize)]
struct StepReport {
    report: Value,
    skipped: bool,
    step: &'static str,
    wall_seconds: f64,
    /// The sequences the step left out, for the run's exit code and warning.
    #[serde(skip)]
    failures: Failures,
}

/// Sequences an embedding step finished without (listed in its failed.tsv); none for the other
/// steps. Read back from an earlier run's marker too, where they are fields of its report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
struct Failures {
    #[serde(default)]
    failed: usize,
    #[serde(default)]
    failed_file: Option<String>,
}

/// What a step's work hands back: its summary for the marker and run.json, and its failures.
struct StepOutcome {
    report: Value,
    failures: Failures,
}

impl StepOutcome {
    /// A step that leaves no sequence out (translate, predict).
    fn complete(summary: &impl Serialize) -> Result<Self> {
        Ok(Self {
            report: serde_json::to_value(summary)?,
            failures: Failures::default(),
        })
    }

    fn embedded(summary: &EmbedSummary) -> Result<Self> {
        Ok(Self {
            report: serde_json::to_value(summary)?,
            failures: Failures {
                failed: summary.failed,
                failed_file: summary.failed_file.clone(),
            },
        })
    }
}

/// `steps/<step>.json`: the step completed with this fingerprint and this report (fields in
/// the order the file has always had them: alphabetical).
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    fingerprint: Value,
    report: Value,
    step: String,
}

struct Steps {
    dir: PathBuf,
    force: bool,
    reports: Vec<StepReport>,
}

impl Steps {
    fn marker(&self, step: &str) -> PathBuf {
        self.dir.join(format!("{step}.json"))
    }

    /// An earlier run's record of `step` with this fingerprint, when its outputs still exist.
    fn earlier(&self, step: &str, fingerprint: &Value, outputs: &[PathBuf]) -> Option<Marker> {
        if self.force || !outputs.iter().all(|p| p.exists()) {
            return None;
        }
        let text = std::fs::read_to_string(self.marker(step)).ok()?;
        let done: Marker = serde_json::from_str(&text).ok()?;
        (done.fingerprint == *fingerprint).then_some(done)
    }

    /// Run `work` unless the step is recorded complete with this fingerprint and `outputs` exist.
    fn step(
        &mut self,
        step: &'static str,
        fingerprint: Value,
        outputs: &[PathBuf],
        work: impl FnOnce() -> Result<StepOutcome>,
    ) -> Result<()> {
        let marker = self.marker(step);
        if let Some(done) = self.earlier(step, &fingerprint, outputs) {
            // A marker this program did not write (no such fields) counts as no failures.
            let failures: Failures =
                serde_json::from_value(done.report.clone()).unwrap_or_default();
            if failures.failed > 0 {
                tracing::info!(
                    "{step}: retrying the {} sequences that failed in an earlier run",
                    failures.failed
                );
            } else {
                tracing::info!(
                    "{step}: outputs complete from an earlier run, skipping (--force redoes it)"
                );
                self.reports.push(StepReport {
                    step,
                    skipped: true,
                    wall_seconds: 0.0,
                    report: done.report,
                    failures,
                });
                return Ok(());
            }
        }
        // Invalidate before redoing, so a crash mid-step never leaves a stale "done".
        let _ = std::fs::remove_file(&marker);
        let started = Instant::now();
        let outcome = work().with_context(|| format!("step {step}"))?;
        let wall = started.elapsed().as_secs_f64();
        let done = Marker {
            fingerprint,
            report: outcome.report,
            step: step.to_string(),
        };
        write_atomic(&marker, &serde_json::to_vec_pretty(&done)?)?;
        self.reports.push(StepReport {
            step,
            skipped: false,
            wall_seconds: wall,
            report: done.report,
            failures: outcome.failures,
        });
        // Injected fault (test builds only): die like `kill -9` right after a step completes,
        // to prove resume.
        crate::runtime::fault_injection::abort_after_step(step);
        Ok(())
    }
}

/// run.json (fields in the order the file has always had them: alphabetical).
#[derive(Debug, Serialize)]
struct RunReport<'a> {
    chunk_size: usize,
    failed: usize,
    failed_files: Vec<&'a str>,
    input: String,
    peak_rss_mb: Option<f64>,
    steps: &'a [StepReport],
    version: &'static str,
    wall_seconds: f64,
}

impl Subcommand for RunOptions {
    /// Everything the steps will need, checked once before the first: a missing classifier or
    /// a file where the output directory should be is an error in a second, not after the
    /// embeddings. The steps inside run bare (no checks of their own, no locks of their own).
    fn check(&self) -> Result<()> {
        preflight::input_file(&self.input, "input")?;
        preflight::output_dir(&self.outdir, "--outdir")?;
        if let Some(dir) = &self.compute.checkpoint_dir {
            preflight::output_dir(dir, "--checkpoint-dir")?;
        }
        let dna_dim = preflight::dnabert(&self.dnabert).context("--dnabert")?;
        let protein_dim = preflight::esm(&self.esm).context("--esm")?;
        preflight::classifier(&self.classifier, dna_dim, protein_dim)
    }

    /// The whole output directory, held to the end: a second run on it is refused, not mixed in.
    fn claim(&self) -> Result<Option<OutputLock>> {
        OutputLock::outdir(&self.outdir).map(Some)
    }

    fn execute(&self) -> Result<Finished> {
        run(self)
    }
}

/// The steps, in order, each skipped when its outputs are complete for these inputs (checked
/// and claimed first by [`crate::subcommand::run`]).
fn run(opts: &RunOptions) -> Result<Finished> {
    let started = Instant::now();
    let files = Layout::of(&opts.outdir);
    ensure_dir(&files.steps_dir)?;
    ensure_dir(&files.emb_dir)?;
    let mut steps = Steps {
        dir: files.steps_dir.clone(),
        force: opts.force,
        reports: Vec::new(),
    };
    let (input, input_fp) = read_input(opts)?;
    let translate_fp = translate_step(&mut steps, opts, &files, &input, input_fp)?;
    let (dna_fp, prot_fp) = embed_steps(&mut steps, opts, &files, &translate_fp)?;
    predict_step(&mut steps, opts, &files, &input, dna_fp, prot_fp)?;
    finish(opts, &steps, started)
}

/// Where `run` keeps each step's files under `--outdir`.
struct Layout {
    translate_dir: PathBuf,
    emb_dir: PathBuf,
    steps_dir: PathBuf,
    /// translate's ORFs, the embedding steps' inputs.
    nt: PathBuf,
    aa: PathBuf,
    /// translate's chunks, from which predict copies the viral ones.
    chunked: PathBuf,
    dna_out: PathBuf,
    prot_out: PathBuf,
}

impl Layout {
    fn of(outdir: &Path) -> Layout {
        let translate_dir = outdir.join("translate");
        let emb_dir = outdir.join("embeddings");
        Layout {
            nt: translate_dir.join(NUCLEOTIDE_FILE),
            aa: translate_dir.join(PROTEIN_FILE),
            chunked: translate_dir.join(translate::CHUNKS_FILE),
            dna_out: emb_dir.join("dna.safetensors"),
            prot_out: emb_dir.join("protein.safetensors"),
            steps_dir: outdir.join("steps"),
            translate_dir,
            emb_dir,
        }
    }
}

/// The input to read and its fingerprint. A stream (stdin, a pipe) is copied while hashed: its
/// content is its only identity.
fn read_input(opts: &RunOptions) -> Result<(PathBuf, Value)> {
    if opts.input == Path::new("-") {
        crate::io::fingerprint::spool(std::io::stdin().lock(), &opts.outdir)
    } else if crate::io::fingerprint::is_stream(&opts.input) {
        let stream = std::fs::File::open(&opts.input)
            .with_context(|| format!("cannot open input {}", opts.input.display()))?;
        crate::io::fingerprint::spool(stream, &opts.outdir)
    } else {
        Ok((
            opts.input.clone(),
            crate::io::fingerprint::file(&opts.input),
        ))
    }
}

/// `translate` (skipped when done with this input and chunk size); returns its fingerprint.
fn translate_step(
    steps: &mut Steps,
    opts: &RunOptions,
    files: &Layout,
    input: &Path,
    input_fp: Value,
) -> Result<Value> {
    let translate_fp = json!({ "input": input_fp, "chunk_size": opts.chunk_size });
    steps.step(
        "translate",
        translate_fp.clone(),
        // translate.json is the step's completion marker, written after its outputs.
        &[
            files.translate_dir.join(translate::SUMMARY_FILE),
            files.nt.clone(),
            files.aa.clone(),
            files.chunked.clone(),
        ],
        || {
            let summary = translate::run(&TranslateOptions {
                input: input.to_path_buf(),
                chunk_size: opts.chunk_size,
                outdir: files.translate_dir.clone(),
                threads: opts.compute.threads,
                shard_size: None,
                write_chunks: true,
                allow_duplicate_ids: false,
                quiet: opts.quiet,
            })?;
            translate::log_summary(&summary, &files.translate_dir);
            StepOutcome::complete(&summary)
        },
    )?;
    Ok(translate_fp)
}

/// Both embedding steps; returns their fingerprints (DNA, protein).
fn embed_steps(
    steps: &mut Steps,
    opts: &RunOptions,
    files: &Layout,
    translate_fp: &Value,
) -> Result<(Value, Value)> {
    // Devices, precision and GPU leases: resolved at the first embedding step that runs, then
    // the same for the second (one test kernel, one lease, one dtype per device).
    let placement = LazyPlacement::new(opts.compute.placement_request());
    let embed_opts = |input: &Path, model: &Path, output: PathBuf| EmbedOptions {
        input: input.to_path_buf(),
        model: model.to_path_buf(),
        output,
        compute: opts.compute.clone(),
        quiet: opts.quiet,
    };
    let dna_fp = json!({ "after": translate_fp, "model": crate::io::fingerprint::model(&opts.dnabert), "precision": opts.compute.precision });
    steps.step(
        "embed-dna",
        dna_fp.clone(),
        std::slice::from_ref(&files.dna_out),
        || {
            let o = embed_opts(&files.nt, &opts.dnabert, files.dna_out.clone());
            let s = embed::embed_dna(&o, &placement)?;
            embed::log_summary(&s);
            StepOutcome::embedded(&s)
        },
    )?;
    let prot_fp = json!({ "after": translate_fp, "model": crate::io::fingerprint::model(&opts.esm), "precision": opts.compute.precision });
    steps.step(
        "embed-protein",
        prot_fp.clone(),
        std::slice::from_ref(&files.prot_out),
        || {
            let o = embed_opts(&files.aa, &opts.esm, files.prot_out.clone());
            let s = embed::embed_protein(&o, &placement)?;
            embed::log_summary(&s);
            StepOutcome::embedded(&s)
        },
    )?;
    Ok((dna_fp, prot_fp))
}

/// `predict` on both embeddings files, writing the viral FASTA files from the run's own input
/// and translate's chunks.
fn predict_step(
    steps: &mut Steps,
    opts: &RunOptions,
    files: &Layout,
    input: &Path,
    dna_fp: Value,
    prot_fp: Value,
) -> Result<()> {
    // The embeddings files themselves, too: a retry of failed sequences rewrites them.
    let predict_fp = json!({
        "dna": dna_fp, "protein": prot_fp,
        "embeddings": [crate::io::fingerprint::file(&files.dna_out), crate::io::fingerprint::file(&files.prot_out)],
        "classifier": crate::io::fingerprint::file(&opts.classifier),
        "min_viral_fraction": opts.min_viral_fraction,
    });
    // predict.json is the step's completion marker, written after its tables and figures; the
    // viral FASTA files too: a directory from before they existed gets them on a re-run.
    let outputs = [
        opts.outdir.join(predict::report::RESULTS_FILE),
        opts.outdir.join(predict::REPORT_FILE),
        opts.outdir.join(predict::fasta_out::VIRAL_SEQUENCES_FILE),
        opts.outdir.join(predict::fasta_out::VIRAL_CHUNKS_FILE),
    ];
    steps.step("predict", predict_fp, &outputs, || {
        let s = predict::run(&PredictOptions {
            dna: vec![files.dna_out.clone()],
            protein: vec![files.prot_out.clone()],
            classifier: opts.classifier.clone(),
            outdir: opts.outdir.clone(),
            min_viral_fraction: opts.min_viral_fraction,
            plot_top: 20,
            sequences: Some(input.to_path_buf()),
            chunks: vec![files.chunked.clone()],
        })?;
        predict::log_summary(&s, &opts.outdir);
        StepOutcome::complete(&s)
    })
}

/// `run.json`, and the failures recorded by the embedding steps (this run's or a resumed
/// earlier one's).
fn finish(opts: &RunOptions, steps: &Steps, started: Instant) -> Result<Finished> {
    let failed: usize = steps.reports.iter().map(|r| r.failures.failed).sum();
    let failed_files: Vec<&str> = steps
        .reports
        .iter()
        .filter_map(|r| r.failures.failed_file.as_deref())
        .collect();
    let report = RunReport {
        chunk_size: opts.chunk_size,
        failed,
        failed_files: failed_files.clone(),
        input: opts.input.display().to_string(),
        peak_rss_mb: crate::runtime::resources::peak_rss_bytes().map(|b| b as f64 / 1048576.0),
        steps: &steps.reports,
        version: env!("CARGO_PKG_VERSION"),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    write_atomic(
        &opts.outdir.join("run.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    if failed > 0 {
        tracing::warn!(
            "finished with {failed} sequences that failed to embed (see {}); their ORFs are not scored",
            failed_files.join(", ")
        );
    }
    Ok(Finished { failed })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed reports write the same bytes as the JSON maps they replaced (whose keys
    /// serde_json sorts): a struct serialised directly must equal itself re-serialised through
    /// a map.
    fn same_as_a_map(value: &impl Serialize) {
        let direct = serde_json::to_string_pretty(value).unwrap();
        let through_map = serde_json::to_string_pretty(&serde_json::to_value(value).unwrap());
        assert_eq!(direct, through_map.unwrap());
    }

    #[test]
    fn markers_and_run_reports_keep_their_field_order() {
        let step = StepReport {
            report: json!({ "failed": 1, "failed_file": "x.failed.tsv" }),
            skipped: false,
            step: "embed-dna",
            wall_seconds: 1.5,
            failures: Failures {
                failed: 1,
                failed_file: Some("x.failed.tsv".into()),
            },
        };
        same_as_a_map(&step);
        same_as_a_map(&Marker {
            fingerprint: json!({ "input": "a.fa" }),
            report: step.report.clone(),
            step: "embed-dna".into(),
        });
        let steps = [step];
        same_as_a_map(&RunReport {
            chunk_size: 300,
            failed: 1,
            failed_files: vec!["x.failed.tsv"],
            input: "a.fa".into(),
            peak_rss_mb: Some(12.5),
            steps: &steps,
            version: "0",
            wall_seconds: 2.0,
        });
    }

    #[test]
    fn failures_are_read_back_from_an_embedding_report_only() {
        let embed = json!({ "failed": 3, "failed_file": "p.failed.tsv", "sequences": 9 });
        let failures: Failures = serde_json::from_value(embed).unwrap();
        assert_eq!(failures.failed, 3);
        assert_eq!(failures.failed_file.as_deref(), Some("p.failed.tsv"));
        let translate = json!({ "records": 4, "orfs": 10 });
        let none: Failures = serde_json::from_value(translate).unwrap();
        assert_eq!(none, Failures::default());
    }
}
