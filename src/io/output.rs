//! Writing outputs so that a killed or failed run never leaves a file, or a set of files, that
//! looks complete.
//!
//! - One file ([`AtomicFile`], [`write_atomic`]): written to a hidden temporary beside its final
//!   name and renamed into place when finished (rename is atomic on one filesystem). A temporary
//!   left by `kill -9` starts with a dot and ends in `.partial`, so nobody mistakes it for a
//!   result.
//! - A step's files together ([`OutputSet`]): staged in a hidden directory and moved into place
//!   at once, the step's completion marker (`translate.json`, `predict.json`) last. The marker is
//!   what says the files beside it are one finished run's.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tempfile::NamedTempFile;

/// A buffered writer that becomes `path` on [`AtomicFile::commit`], and vanishes if dropped.
pub struct AtomicFile {
    writer: BufWriter<NamedTempFile>,
    path: PathBuf,
}

/// A hidden temporary file beside `path` (`.<name>.<random><suffix>`), to be renamed onto
/// `path` when complete.
pub fn temp_beside(path: &Path, suffix: &str) -> Result<NamedTempFile> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(suffix)
        // Results are shared on HPC systems: readable by group and others (tempfile's default
        // is owner-only), as a plain `File::create` would make them under umask 022.
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "cannot write {} (is {} writable?)",
                path.display(),
                dir.display()
            )
        })
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self> {
        survive_file_size_limit();
        let tmp = temp_beside(path, ".partial")?;
        Ok(Self {
            writer: BufWriter::with_capacity(1 << 20, tmp),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flush and move into place.
    pub fn commit(self) -> Result<()> {
        let path = self.path;
        let tmp = self
            .writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", path.display()))?;
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("writing {}", path.display()))?;
        tmp.persist(&path)
            .with_context(|| format!("moving output into place at {}", path.display()))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// Write a whole small file atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.commit()
}

/// Create the output directory (and parents), with a message that says what to do on failure.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create output directory {} (check the path and permissions)",
            dir.display()
        )
    })?;
    // Probe writability now rather than after an hour of work.
    let probe = tempfile::Builder::new()
        .prefix(".virnucpro-write-test")
        .tempfile_in(dir)
        .with_context(|| format!("output directory {} is not writable", dir.display()))?;
    drop(probe);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output sets: all of a step's files, or none of them

/// The files of one step (translate, predict), which must appear together or not at all.
///
/// Every file is first written into a hidden staging directory inside the output directory
/// (`.<marker>.<random>.partial/`), under its final name. [`OutputSet::commit`] then writes the
/// step's *completion marker* (`translate.json`, `predict.json`) into the staging directory too,
/// and only then touches the outputs: it moves the old marker and every old output the step owns
/// aside, renames the new files into place, and renames the marker in last. Renames within one
/// directory need no disk space, so a full disk fails while staging, before any old output is
/// touched; and should a rename fail mid-commit, the new files are taken back out and the old set
/// (marker last) put back. The marker is therefore the proof that the files beside it belong
/// together; files without it are not a finished result.
///
/// Dropped without a commit (an error, a signal), the staging directory is removed and the old
/// outputs are left as they were.
pub struct OutputSet {
    dir: PathBuf,
    marker: String,
    /// Top-level names (files or directories) the step writes in `dir`, besides the marker:
    /// the old ones are replaced or, when this run does not write them, removed at commit.
    owned: Vec<String>,
    staging: tempfile::TempDir,
    /// Relative paths handed out for writing, and whether each was finished.
    files: std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>,
    started: std::time::SystemTime,
    /// Unit tests: fail the commit's n-th rename, to prove the rollback.
    #[cfg(test)]
    fail_rename: Option<usize>,
}

/// One staged file: buffered, and recorded as complete by [`StagedFile::finish`].
pub struct StagedFile {
    writer: BufWriter<fs::File>,
    /// The path it will have once committed, for messages.
    path: PathBuf,
    rel: String,
    files: std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>,
}

impl StagedFile {
    /// The path the file will have once the set is committed (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flush and sync; the set refuses to commit while a file is not finished.
    pub fn finish(self) -> Result<()> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| out_of_space_hint(e.into_error()))
            .with_context(|| format!("writing {}", self.path.display()))?;
        file.sync_all()
            .with_context(|| format!("writing {}", self.path.display()))?;
        mark_finished(&self.files, &self.rel);
        Ok(())
    }
}

impl Write for StagedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf).map_err(out_of_space_hint)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(buf).map_err(out_of_space_hint)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush().map_err(out_of_space_hint)
    }
}

/// A full disk, quota or file-size limit, said in words with what to do (a staged write never
/// touches the previous outputs, so the message can say they are unchanged).
fn out_of_space_hint(e: std::io::Error) -> std::io::Error {
    // ENOSPC, EFBIG, EDQUOT (Linux numbers).
    match e.raw_os_error() {
        Some(28 | 27 | 122) => std::io::Error::new(
            e.kind(),
            format!(
                "{e}: out of disk space, quota or file-size limit; free space or choose another \
                 output directory (earlier outputs there are unchanged)"
            ),
        ),
        _ => e,
    }
}

fn mark_finished(files: &std::sync::Mutex<Vec<(String, bool)>>, rel: &str) {
    let mut files = files.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = files.iter_mut().find(|f| f.0 == rel) {
        f.1 = true;
    }
}

/// The first component of a relative path: what is renamed into place at commit.
fn top_level(rel: &str) -> &str {
    rel.split('/').next().unwrap_or(rel)
}

impl OutputSet {
    /// Start a set in `dir` (created if missing) whose completion marker is `marker` and whose
    /// outputs are the top-level names `owned` (a directory such as `shards` counts as one).
    pub fn begin(dir: &Path, marker: &str, owned: &[&str]) -> Result<Self> {
        survive_file_size_limit();
        ensure_dir(dir)?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{marker}."))
            .suffix(".partial")
            .tempdir_in(dir)
            .with_context(|| format!("cannot write in output directory {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            marker: marker.to_string(),
            owned: owned.iter().map(|s| s.to_string()).collect(),
            staging,
            files: Default::default(),
            started: std::time::SystemTime::now(),
            #[cfg(test)]
            fail_rename: None,
        })
    }

    /// Where `rel` will be once committed.
    pub fn final_path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Register `rel` (one of the owned names, or a path below one) and return its staging path.
    fn stage(&self, rel: &str) -> Result<PathBuf> {
        let top = top_level(rel);
        assert!(
            self.owned.iter().any(|o| o == top) && top != self.marker,
            "{rel} is not one of this step's outputs"
        );
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        assert!(!files.iter().any(|f| f.0 == rel), "{rel} staged twice");
        files.push((rel.to_string(), false));
        let path = self.staging.path().join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot write in {}", self.dir.display()))?;
        }
        Ok(path)
    }

    /// A new file of the set, written through a buffer; call [`StagedFile::finish`] when done.
    pub fn create(&self, rel: &str) -> Result<StagedFile> {
        let staged = self.stage(rel)?;
        let path = self.final_path(rel);
        let file = fs::File::create(&staged).with_context(|| {
            format!(
                "cannot write {} (is {} writable?)",
                path.display(),
                self.dir.display()
            )
        })?;
        Ok(StagedFile {
            writer: BufWriter::with_capacity(1 << 20, file),
            path,
            rel: rel.to_string(),
            files: self.files.clone(),
        })
    }

    /// A whole small file of the set.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let mut f = self.create(rel)?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", f.path().display()))?;
        f.finish()
    }

    /// Write the marker and move the whole set into place (see the type's docs); then remove
    /// stale temporaries of this step that earlier killed runs left.
    pub fn commit(self, marker: &[u8]) -> Result<()> {
        let files = std::mem::take(&mut *self.files.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some((rel, _)) = files.iter().find(|f| !f.1) {
            bail!(
                "internal error: {} was not finished before the outputs were committed",
                self.final_path(rel).display()
            );
        }
        let mut tops: Vec<&str> = Vec::new();
        for (rel, _) in &files {
            let top = top_level(rel);
            if !tops.contains(&top) {
                tops.push(top);
            }
        }
        // The marker is written (the only step that needs disk space) before anything moves.
        let marker_path = self.final_path(&self.marker);
        fs::File::create(self.staging.path().join(&self.marker))
            .and_then(|mut f| f.write_all(marker).and_then(|_| f.sync_all()))
            .with_context(|| format!("writing {}", marker_path.display()))?;
        let previous = self.staging.path().join(".previous");
        fs::create_dir(&previous)
            .with_context(|| format!("cannot write in {}", self.dir.display()))?;

        // Every rename done so far, as (from, to), to undo in reverse on failure.
        let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut renames = 0usize;
        let result = (|| -> Result<()> {
            // 1. The old set stops looking complete (marker first), then its files step aside.
            let old: Vec<&str> = std::iter::once(self.marker.as_str())
                .chain(self.owned.iter().map(String::as_str))
                .collect();
            for name in old {
                let from = self.dir.join(name);
                if fs::symlink_metadata(&from).is_err() {
                    continue;
                }
                let to = previous.join(name);
                self.rename(&from, &to, &mut renames)
                    .with_context(|| format!("moving the previous {} aside", from.display()))?;
                done.push((from, to));
            }
            // 2. The new files, then 3. the marker last.
            for name in tops
                .iter()
                .copied()
                .chain(std::iter::once(self.marker.as_str()))
            {
                let (from, to) = (self.staging.path().join(name), self.dir.join(name));
                self.rename(&from, &to, &mut renames)
                    .with_context(|| format!("moving output into place at {}", to.display()))?;
                done.push((from, to));
            }
            sync_dir(&self.dir);
            Ok(())
        })();
        if let Err(e) = result {
            // Undo in reverse: the new files back out, then the old ones back in; the old marker
            // (moved first, so restored last) only if every old file is back beside it.
            let mut restored = true;
            for (from, to) in done.iter().rev() {
                if *from == marker_path && !restored {
                    continue;
                }
                if fs::rename(to, from).is_err() {
                    restored = false;
                    // A new file that cannot go back to staging must not stay beside old ones.
                    if to.starts_with(&self.dir) && !to.starts_with(self.staging.path()) {
                        let _ = fs::remove_dir_all(to).or_else(|_| fs::remove_file(to));
                    }
                }
            }
            sync_dir(&self.dir);
            let what = if restored {
                "the previous outputs, if any, are unchanged"
            } else {
                "the previous outputs could not all be restored, and no completion marker is left"
            };
            return Err(e.context(format!(
                "{} was not written ({what})",
                marker_path.display()
            )));
        }
        remove_stale_partials(&self.dir, &self.marker, &self.owned, self.started);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path, count: &mut usize) -> std::io::Result<()> {
        *count += 1;
        #[cfg(test)]
        if self.fail_rename == Some(*count) {
            return Err(std::io::Error::other("injected failure"));
        }
        fs::rename(from, to)
    }
}

/// Make a directory's renames durable (best effort: not every filesystem syncs directories).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Remove hidden temporaries of this step's outputs (`.<name>.<random>.partial`, files or
/// staging directories, and `.partial.png` figures) that a killed run left behind. Only those
/// last modified before `started` go: a temporary touched since belongs to a writer that is
/// still running, and is not ours to remove.
pub fn remove_stale_partials(
    dir: &Path,
    marker: &str,
    owned: &[String],
    started: std::time::SystemTime,
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut removed = 0usize;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix('.') else {
            continue;
        };
        if !(rest.ends_with(".partial") || rest.ends_with(".partial.png")) {
            continue;
        }
        let ours = std::iter::once(marker)
            .chain(owned.iter().map(String::as_str))
            .any(|o| rest.starts_with(&format!("{o}.")));
        if !ours {
            continue;
        }
        let path = entry.path();
        if last_modified(&path).is_none_or(|t| t >= started) {
            continue;
        }
        let gone = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match gone {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!("could not remove stale temporary {}: {e}", path.display()),
        }
    }
    if removed > 0 {
        tracing::info!(
            "removed {removed} stale temporary output(s) left in {} by an interrupted run",
            dir.display()
        );
    }
}

/// The newest modification time of `path` and, for a directory, of everything below it.
fn last_modified(path: &Path) -> Option<std::time::SystemTime> {
    let meta = fs::symlink_metadata(path).ok()?;
    let mut newest = meta.modified().ok()?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).ok()?.flatten() {
            newest = newest.max(last_modified(&entry.path())?);
        }
    }
    Some(newest)
}

/// A write past the file-size limit (`ulimit -f`) raises SIGXFSZ, whose default action kills
/// the process before it can clean up or say why. With the signal caught the write fails with
/// EFBIG instead, which ends the step with one error line and no half-written output.
pub fn survive_file_size_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGXFSZ, flag) {
            tracing::debug!("could not catch SIGXFSZ: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert!(!p.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn committed_file_appears_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        write_atomic(&p, b"done\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"done\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Every file under `dir` (relative path, contents), hidden ones included.
    fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).unwrap().display().to_string();
                    out.push((rel, fs::read(&p).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    const OWNED: &[&str] = &["a.txt", "extra.txt", "shards"];

    /// A complete earlier set: marker, two files and three shards.
    fn old_set(dir: &Path) {
        let set = OutputSet::begin(dir, "done.json", OWNED).unwrap();
        set.write("a.txt", b"old a").unwrap();
        set.write("extra.txt", b"old extra").unwrap();
        for k in 0..3 {
            set.write(&format!("shards/{k}"), b"old shard").unwrap();
        }
        set.commit(b"old marker").unwrap();
    }

    /// A new set that replaces `a.txt`, writes one shard and no `extra.txt`.
    fn new_set(dir: &Path) -> OutputSet {
        let set = OutputSet::begin(dir, "done.json", OWNED).unwrap();
        let mut f = set.create("a.txt").unwrap();
        f.write_all(b"new a").unwrap();
        f.finish().unwrap();
        set.write("shards/0", b"new shard").unwrap();
        set
    }

    #[test]
    fn commit_replaces_the_whole_set_and_drops_old_outputs_it_does_not_write() {
        let dir = tempfile::tempdir().unwrap();
        old_set(dir.path());
        new_set(dir.path()).commit(b"new marker").unwrap();
        let files = |v: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
            v.iter()
                .map(|(n, b)| (n.to_string(), b.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(
            snapshot(dir.path()),
            files(&[
                ("a.txt", "new a"),
                ("done.json", "new marker"),
                ("shards/0", "new shard")
            ])
        );
    }

    #[test]
    fn a_failure_at_any_rename_of_the_commit_leaves_the_old_set_whole() {
        // Renames: 4 old entries aside (marker, a.txt, extra.txt, shards), then a.txt, shards
        // and the marker into place.
        for n in 1..=7 {
            let dir = tempfile::tempdir().unwrap();
            old_set(dir.path());
            let before = snapshot(dir.path());
            let mut set = new_set(dir.path());
            set.fail_rename = Some(n);
            let err = set.commit(b"new marker").unwrap_err();
            assert!(
                format!("{err:#}").contains("previous outputs, if any, are unchanged"),
                "rename {n}: {err:#}"
            );
            assert_eq!(
                snapshot(dir.path()),
                before,
                "after a failure at rename {n}"
            );
        }
        // Those were all the renames: one more is never reached.
        let dir = tempfile::tempdir().unwrap();
        old_set(dir.path());
        let mut set = new_set(dir.path());
        set.fail_rename = Some(8);
        set.commit(b"new marker").unwrap();
    }

    #[test]
    fn a_failure_into_an_empty_directory_leaves_nothing_that_looks_finished() {
        for n in 1..=3 {
            let dir = tempfile::tempdir().unwrap();
            let mut set = new_set(dir.path());
            set.fail_rename = Some(n);
            set.commit(b"new marker").unwrap_err();
            assert_eq!(
                snapshot(dir.path()),
                vec![],
                "after a failure at rename {n}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let mut set = new_set(dir.path());
        set.fail_rename = Some(4);
        set.commit(b"new marker").unwrap();
    }

    #[test]
    fn a_set_dropped_before_commit_leaves_the_old_outputs_and_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        old_set(dir.path());
        let before = snapshot(dir.path());
        drop(new_set(dir.path()));
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn an_unfinished_file_is_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let set = OutputSet::begin(dir.path(), "done.json", OWNED).unwrap();
        let mut f = set.create("a.txt").unwrap();
        f.write_all(b"half").unwrap();
        let err = set.commit(b"marker").unwrap_err();
        assert!(
            format!("{err:#}").contains("a.txt was not finished"),
            "{err:#}"
        );
        drop(f);
        assert_eq!(snapshot(dir.path()), vec![]);
    }

    #[test]
    fn commit_removes_stale_temporaries_of_its_own_outputs_only() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let make = |name: &str, modified| {
            let f = fs::File::create(dir.path().join(name)).unwrap();
            f.set_modified(modified).unwrap();
        };
        // Left by killed runs of this step: a file, a figure, a staging directory.
        make(".a.txt.Xy12ab.partial", old);
        make(".extra.txt.Zz99zz.partial.png", old);
        let staging = dir.path().join(".done.json.Q1w2e3.partial");
        fs::create_dir(&staging).unwrap();
        fs::File::create(staging.join("a.txt"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        fs::File::open(&staging).unwrap().set_modified(old).unwrap();
        // Not this step's, or still being written by someone: kept.
        make(".other.txt.Aa11aa.partial", old);
        make(
            ".a.txt.Live00.partial",
            std::time::SystemTime::now() + std::time::Duration::from_secs(60),
        );
        new_set(dir.path()).commit(b"m").unwrap();
        let mut hidden: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with('.'))
            .collect();
        hidden.sort();
        assert_eq!(
            hidden,
            [".a.txt.Live00.partial", ".other.txt.Aa11aa.partial"]
        );
    }
}
