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
//! holds only who holds it (pid, host, start time) for the refusal message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

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

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn acquire(path: &Path, output: &Path, flag: &str) -> Result<Self> {
        // A lock file removed by its holder between our open and our lock is a dead inode:
        // locking it would exclude nobody, so the path is checked again after locking.
        for _ in 0..8 {
            let mut file = open_no_follow(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let mut note = String::new();
                    let _ = file.read_to_string(&mut note);
                    bail!(
                        "{} is being written by another virnucpro process ({}); wait for it or \
                         choose another {flag}",
                        output.display(),
                        describe_holder(&note)
                    );
                }
                Err(TryLockError::Error(e)) if locking_unsupported(&e) => {
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
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()))
                }
            }
            if !same_file(&file, path) {
                continue;
            }
            let mut old = String::new();
            file.read_to_string(&mut old)
                .with_context(|| format!("reading lock file {}", path.display()))?;
            if !old.is_empty() && !old.starts_with(HEADER) {
                bail!(
                    "{} exists and is not a virnucpro lock file; move it away or choose another {flag}",
                    path.display()
                );
            }
            let note = format!(
                "{HEADER}\npid={}\nhost={}\nsince={}\n",
                std::process::id(),
                hostname(),
                utc_timestamp(SystemTime::now())
            );
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

/// Errors that mean "no locks on this filesystem" rather than "cannot lock this file".
fn locking_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::ENOLCK | libc::EOPNOTSUPP)
    )
}

/// Open (creating if missing, never truncating) without following a symbolic link: a link
/// planted at the lock's name must not make us write through it.
fn open_no_follow(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!(
                "{} is a symbolic link; refusing to use it as a lock file (remove it)",
                path.display()
            )
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Err(e).with_context(|| {
                format!(
                    "cannot create lock file {} (is its directory writable?)",
                    path.display()
                )
            })
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open lock file {}", path.display()))
        }
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read lock file {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file; refusing to use it as a lock file",
            path.display()
        );
    }
    Ok(file)
}

/// Whether `path` still names the open `file` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// "pid P on host H, since T" from a lock file's text.
fn describe_holder(note: &str) -> String {
    let field = |key: &str| {
        note.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match (field("pid"), field("host"), field("since")) {
        (Some(pid), Some(host), Some(since)) => format!("pid {pid} on host {host}, since {since}"),
        (Some(pid), _, _) => format!("pid {pid}"),
        // The holder has locked but not yet written its note.
        _ => "holder not yet recorded".into(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_date(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01, by whole 400-year eras (each
/// exactly 146 097 days) counted from 0000-03-01, so leap days fall at the end of a year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(59), (1970, 3, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(19_722), (2023, 12, 31));
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(951_782_400 + 3661)),
            "2000-02-29 01:01:01 UTC"
        );
    }

    #[test]
    fn a_second_lock_names_the_first_holder_and_the_file_goes_with_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("x.safetensors");
        let first = OutputLock::file(&out, "--output").unwrap();
        assert_eq!(first.path(), tmp.path().join(".x.safetensors.lock"));
        let err = format!("{:#}", OutputLock::file(&out, "--output").unwrap_err());
        assert!(
            err.contains("being written by another virnucpro process")
                && err.contains(&format!("pid {} on host ", std::process::id()))
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
    fn filesystems_without_locks_are_told_from_lock_errors() {
        for code in [libc::ENOSYS, libc::ENOLCK, libc::EOPNOTSUPP] {
            assert!(locking_unsupported(&std::io::Error::from_raw_os_error(
                code
            )));
        }
        for code in [libc::EBADF, libc::EINTR, libc::EACCES] {
            assert!(!locking_unsupported(&std::io::Error::from_raw_os_error(
                code
            )));
        }
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
