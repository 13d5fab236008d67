//! Resumable embedding: finished batches are saved every `--checkpoint-secs` (and when the run
//! is stopped) as part files in a hidden directory beside the output, `.NAME.parts/`. A re-run
//! with the same input, model and settings loads them and embeds only what is missing; the
//! batch plan is kept (its token budget is recorded), so every batch is computed exactly as in
//! an uninterrupted run and the final file is byte-identical. The directory is removed once the
//! output is complete with every record; when some records failed it is kept, so the next run
//! retries only those.
//!
//! `--checkpoint-dir DIR` keeps them elsewhere, as `.NAME.<fingerprint>.parts`: a pipeline
//! whose retried task runs in a fresh directory (Nextflow) points it at a shared place so the
//! retry resumes. The fingerprint does not name paths, only content, so a re-staged input
//! resumes too; and being in the name, runs of other inputs that share the directory and the
//! output name never see (or clear) each other's parts. Beside the output, the output's lock
//! makes the run the only user of `.NAME.parts`, so parts of other inputs there are cleared.
//! Either way the parts directory is locked while in use ([`OutputLock`]): two runs of the
//! same work sharing a checkpoint directory are refused rather than mixed.
//!
//! Each part is written to a temporary name, fsync'ed and renamed, so a `kill -9` leaves either
//! a whole part or none.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::io::embeddings::{EmbeddingKind, EmbeddingMeta, EmbeddingSet};
use crate::io::output::{ensure_dir, write_atomic};
use crate::io::output_lock::OutputLock;

const PLAN_FILE: &str = "plan.json";
const FORMAT: &str = "virnucpro-embed-checkpoint/1";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PlanRecord {
    pub format: String,
    /// Input tokens, model files, precision, device kind.
    pub fingerprint: String,
    pub sequences: usize,
    pub dim: usize,
    pub batch_tokens: usize,
}

pub struct Checkpoint {
    dir: PathBuf,
    next_part: usize,
    written: usize,
    /// Injected fault (test builds only, [`crate::runtime::fault_injection`]): die like `kill -9`
    /// after this many parts.
    abort_after: Option<usize>,
    /// Held while the parts are in use; dropped after the directory is removed.
    _lock: OutputLock,
}

/// What an earlier run left: its plan and the rows it finished.
pub struct Resumed {
    pub batch_tokens: usize,
    /// (sequence index, row)
    pub rows: Vec<(usize, Vec<f32>)>,
}

/// `.NAME.parts` beside the output, or `.NAME.<fingerprint>.parts` in `base`
/// (`--checkpoint-dir`) when given.
pub fn dir_for(output: &Path, base: Option<&Path>, fingerprint: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "embeddings".into());
    match base {
        Some(base) => base.join(format!(".{name}.{fingerprint}.parts")),
        None => output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join(format!(".{name}.parts")),
    }
}

fn part_name(k: usize) -> String {
    format!("part-{k:06}.safetensors")
}

fn meta() -> EmbeddingMeta {
    EmbeddingMeta {
        kind: EmbeddingKind::Checkpoint,
        model: String::new(),
        pooling: String::new(),
        precision: String::new(),
    }
}

impl Checkpoint {
    /// Open the checkpoint of `output`. Parts from the same plan (fingerprint, size, dim) are
    /// returned for resuming; anything else there is from other inputs or settings and is
    /// discarded. `batch_tokens` is the budget this run would use when starting afresh; when
    /// resuming, the recorded one is kept unless `explicit` says the user asked for another.
    pub fn open(
        output: &Path,
        base: Option<&Path>,
        fingerprint: &str,
        sequences: usize,
        dim: usize,
        batch_tokens: usize,
        explicit: bool,
    ) -> Result<(Checkpoint, Option<Resumed>)> {
        let dir = dir_for(output, base, fingerprint);
        if let Some(base) = base {
            ensure_dir(base)?;
        }
        let lock = OutputLock::file(&dir, "--checkpoint-dir")?;
        let mut resumed = None;
        if let Ok(text) = std::fs::read_to_string(dir.join(PLAN_FILE)) {
            match serde_json::from_str::<PlanRecord>(&text) {
                Ok(plan)
                    if plan.format == FORMAT
                        && plan.fingerprint == fingerprint
                        && plan.sequences == sequences
                        && plan.dim == dim
                        && (!explicit || plan.batch_tokens == batch_tokens) =>
                {
                    resumed = Some(Resumed {
                        batch_tokens: plan.batch_tokens,
                        rows: read_parts(&dir, sequences, dim),
                    });
                }
                _ => tracing::warn!(
                    "{} holds a checkpoint of other inputs or settings; starting afresh",
                    dir.display()
                ),
            }
        }
        let next_part = if resumed.is_some() {
            part_numbers(&dir).into_iter().max().map_or(0, |k| k + 1)
        } else {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| {
                    format!("cannot clear the old checkpoint {}", dir.display())
                })?;
            }
            ensure_dir(&dir)?;
            let plan = PlanRecord {
                format: FORMAT.into(),
                fingerprint: fingerprint.into(),
                sequences,
                dim,
                batch_tokens,
            };
            write_atomic(&dir.join(PLAN_FILE), &serde_json::to_vec_pretty(&plan)?)?;
            0
        };
        let abort_after = crate::runtime::fault_injection::abort_after_checkpoints();
        Ok((
            Checkpoint {
                dir,
                next_part,
                written: 0,
                abort_after,
                _lock: lock,
            },
            resumed,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Save finished rows: (sequence indices, their rows `[len, dim]`).
    pub fn save(&mut self, batches: &[(Vec<usize>, Vec<f32>)], dim: usize) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let set = EmbeddingSet {
            ids: batches
                .iter()
                .flat_map(|(idx, _)| idx.iter().map(|i| i.to_string()))
                .collect(),
            dim,
            values: batches
                .iter()
                .flat_map(|(_, r)| r.iter().copied())
                .collect(),
            meta: meta(),
        };
        let path = self.dir.join(part_name(self.next_part));
        set.write(&path)
            .with_context(|| format!("writing checkpoint {}", path.display()))?;
        self.next_part += 1;
        self.written += 1;
        if self.abort_after == Some(self.written) {
            std::process::abort();
        }
        Ok(())
    }

    /// The output is complete: the checkpoint is no longer needed.
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(
                "cannot remove the finished checkpoint {}: {e}",
                self.dir.display()
            );
        }
    }
}

fn part_numbers(dir: &Path) -> Vec<usize> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.strip_prefix("part-")?
                        .strip_suffix(".safetensors")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every readable part's rows; a part that does not fit the plan is skipped with a warning
/// (its rows are simply embedded again).
fn read_parts(dir: &Path, sequences: usize, dim: usize) -> Vec<(usize, Vec<f32>)> {
    let mut numbers = part_numbers(dir);
    numbers.sort_unstable();
    let mut rows = Vec::new();
    for k in numbers {
        let path = dir.join(part_name(k));
        let set = match EmbeddingSet::read(&path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("ignoring checkpoint part {}: {e:#}", path.display());
                continue;
            }
        };
        let idx: Option<Vec<usize>> = set
            .ids
            .iter()
            .map(|s| s.parse().ok().filter(|&i: &usize| i < sequences))
            .collect();
        match idx {
            Some(idx) if set.dim == dim && set.meta.kind == EmbeddingKind::Checkpoint => {
                for (r, i) in idx.into_iter().enumerate() {
                    rows.push((i, set.row(r).to_vec()));
                }
            }
            _ => tracing::warn!(
                "ignoring checkpoint part {}: it does not fit this run",
                path.display()
            ),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_come_back_for_the_same_plan_only() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("x.safetensors");
        let (mut cp, resumed) = Checkpoint::open(&out, None, "fp", 4, 2, 100, false).unwrap();
        assert!(resumed.is_none());
        cp.save(&[(vec![2, 0], vec![1.0, 2.0, 3.0, 4.0])], 2)
            .unwrap();
        cp.save(&[(vec![3], vec![5.0, 6.0])], 2).unwrap();
        drop(cp);
        // Same plan: rows back, the recorded budget kept over this run's default.
        let (mut cp, resumed) = Checkpoint::open(&out, None, "fp", 4, 2, 999, false).unwrap();
        let r = resumed.unwrap();
        assert_eq!(r.batch_tokens, 100);
        assert_eq!(
            r.rows,
            vec![
                (2, vec![1.0, 2.0]),
                (0, vec![3.0, 4.0]),
                (3, vec![5.0, 6.0])
            ]
        );
        // New parts continue the numbering.
        cp.save(&[(vec![1], vec![7.0, 8.0])], 2).unwrap();
        assert_eq!(part_numbers(cp.dir()).len(), 3);
        drop(cp);
        // Another fingerprint, or another explicit budget: start afresh.
        let (_, resumed) = Checkpoint::open(&out, None, "fp", 4, 2, 50, true).unwrap();
        assert!(resumed.is_none());
        let (cp, resumed) = Checkpoint::open(&out, None, "fp", 4, 2, 50, true).unwrap();
        assert_eq!(resumed.unwrap().rows.len(), 0);
        cp.remove();
        assert!(!dir_for(&out, None, "fp").exists());
    }

    #[test]
    fn a_shared_checkpoint_dir_keeps_each_inputs_parts_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        let out = tmp.path().join("dna.safetensors");
        let (mut a, _) = Checkpoint::open(&out, Some(&shared), "aaaa", 2, 1, 10, false).unwrap();
        a.save(&[(vec![0], vec![1.0])], 1).unwrap();
        // Another input, same output name, same directory, at the same time: its own parts.
        let (b, resumed) = Checkpoint::open(&out, Some(&shared), "bbbb", 3, 1, 10, false).unwrap();
        assert!(resumed.is_none());
        assert_ne!(a.dir(), b.dir());
        b.remove();
        // The same work twice at once is refused, not mixed.
        let e = Checkpoint::open(&out, Some(&shared), "aaaa", 2, 1, 10, false).err();
        let e = format!("{:#}", e.expect("a second user of the same parts"));
        assert!(
            e.contains("being written by another virnucpro process"),
            "{e}"
        );
        drop(a);
        let (_, resumed) = Checkpoint::open(&out, Some(&shared), "aaaa", 2, 1, 10, false).unwrap();
        assert_eq!(resumed.unwrap().rows, vec![(0, vec![1.0])]);
    }
}
