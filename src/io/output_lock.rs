//! One writer per output. Two processes writing one output (or one checkpoint) would read and
//! delete each other's parts; so before a step reads or writes anything of its output it takes
//! an exclusive `flock` on a lock file, holds it to the end, and a second writer is refused at
//! once with one line naming the holder.
//!
//! - a file output `DIR/NAME` is locked through `DIR/.NAME.lock`;
//! - a directory output (`--outdir`) through `.virnucpro.lock` inside it.
//!
//! The kernel drops a `flock` when its process ends, however it ends, so a killed run never
//! leaves its output locked: the lock file it leaves behind is simply taken over. The file
//! holds only who holds it (the house's holder note, [`crate::runtime::lockfile`]) for the refusal
//! message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::runtime::lockfile::{self, open_no_follow, same_file, Attempt};

/// The lock file of a directory output, inside it.
pub const DIR_LOCK_FILE: &str = ".virnucpro.lock";

/// First line of every lock file: a file without it is not ours and is never overwritten.
const HEADER: &str = "virnucpro output lock";

/// An exclusive claim on an output; released (and its lock file removed) when dropped.
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
    /// False on a filesystem without `flock` (Lustre mounted without `-o flock`): the run goes
    /// on unprotected, with a warning, rather than not at all.
    held: bool,
}

/// `DIR/.NAME.lock` for the file output `DIR/NAME` (a leading dot of NAME is not doubled).
pub fn lock_path_for_file(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "output".into());
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!(".{}.lock", name.trim_start_matches('.')))
}

impl OutputLock {
    /// Lock the file output `output`; `flag` is the option that named it, for the message
    /// (`--output`, `--checkpoint-dir`).
    pub fn file(output: &Path, flag: &str) -> Result<Self> {
        Self::acquire(&lock_path_for_file(output), output, flag)
    }

    /// Lock the directory output `dir`, which must exist.
    pub fn dir(dir: &Path, flag: &str) -> Result<Self> {
        Self::acquire(&dir.join(DIR_LOCK_FILE), dir, flag)
    }

    /// A command's output directory (`--outdir`), created when missing, then locked.
    pub fn outdir(dir: &Path) -> Result<Self> {
        crate::io::output::ensure_dir(dir)?;
        Self::dir(dir, "--outdir")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn acquire(path: &Path, output: &Path, flag: &str) -> Result<Self> {
        // A lock file removed by its holder between our open and our lock is a dead inode:
        // locking it would exclude nobody, so the path is checked again after locking.
        for _ in 0..8 {
            let mut file = open_no_follow(path)?;
            match lockfile::try_lock(&file)
                .with_context(|| format!("cannot lock {}", path.display()))?
            {
                Attempt::Locked => {}
                Attempt::Busy => {
                    let note = lockfile::read_note_after(&file, 1).unwrap_or_default();
                    bail!(
                        "{} is being written by another virnucpro process ({}); wait for it or \
                         choose another {flag}",
                        output.display(),
                        lockfile::describe(&note)
                    );
                }
                Attempt::Unsupported(e) => {
                    tracing::warn!(
                        "{}: this filesystem does not support file locks ({e}); nothing stops \
                         another process from writing {} at the same time",
                        path.display(),
                        output.display()
                    );
                    return Ok(Self {
                        file,
                        path: path.to_path_buf(),
                        held: false,
                    });
                }
            }
            if !same_file(&file, path) {
                continue;
            }
            // Only its start says whose it is (a large foreign file is not read whole).
            let mut old = Vec::new();
            (&file)
                .take(HEADER.len() as u64)
                .read_to_end(&mut old)
                .with_context(|| format!("reading lock file {}", path.display()))?;
            if !old.is_empty() && old != HEADER.as_bytes() {
                bail!(
                    "{} exists and is not a virnucpro lock file; move it away or choose another {flag}",
                    path.display()
                );
            }
            let note = format!("{HEADER}\n{}\n", lockfile::note());
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| file.write_all(note.as_bytes()))
                .with_context(|| format!("writing lock file {}", path.display()))?;
            return Ok(Self {
                file,
                path: path.to_path_buf(),
                held: true,
            });
        }
        bail!(
            "cannot take the lock {}: it keeps being replaced by another process",
            path.display()
        )
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock (and only if it is still ours), so a
        // process that opened it meanwhile finds its inode gone and opens the path afresh.
        // Unheld, it may be another process's: left alone.
        if self.held && same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder_and_the_file_goes_with_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("x.safetensors");
        let first = OutputLock::file(&out, "--output").unwrap();
        assert_eq!(first.path(), tmp.path().join(".x.safetensors.lock"));
        let err = format!("{:#}", OutputLock::file(&out, "--output").unwrap_err());
        assert!(
            err.contains("being written by another virnucpro process")
                && err.contains(&format!("pid {}, ", std::process::id()))
                && err.contains(", host ")
                && err.contains("choose another --output"),
            "{err}"
        );
        drop(first);
        assert!(!lock_path_for_file(&out).exists());
        // Free again; a lock file left by a killed holder is taken over.
        std::fs::write(lock_path_for_file(&out), format!("{HEADER}\npid=1\n")).unwrap();
        let again = OutputLock::file(&out, "--output").unwrap();
        drop(again);
    }

    #[test]
    fn foreign_files_and_links_are_never_written() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("y");
        let lock = lock_path_for_file(&out);
        std::fs::write(&lock, "precious\n").unwrap();
        let err = format!("{:#}", OutputLock::file(&out, "--output").unwrap_err());
        assert!(err.contains("not a virnucpro lock file"), "{err}");
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), "precious\n");

        let target = tmp.path().join("target");
        std::fs::write(&target, "keep\n").unwrap();
        std::fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        let err = format!("{:#}", OutputLock::file(&out, "--output").unwrap_err());
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
    }

    #[test]
    fn directory_outputs_lock_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let lock = OutputLock::dir(tmp.path(), "--outdir").unwrap();
        assert_eq!(lock.path(), tmp.path().join(DIR_LOCK_FILE));
        let err = format!("{:#}", OutputLock::dir(tmp.path(), "--outdir").unwrap_err());
        assert!(err.contains("choose another --outdir"), "{err}");
    }
}
