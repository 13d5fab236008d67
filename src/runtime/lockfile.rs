//! Lock files, one way for every lock of the house: an output's single writer
//! ([`crate::io::output_lock`]), a GPU lease ([`crate::device::lease`]) and a Hub download
//! ([`crate::hub::cache`]). Each is an exclusive `flock` (std's file locks) on a file that
//! lives as long as its holder wants it; the kernel drops the lock when the holder's process
//! ends, however it ends, so a killed process never leaves a lock behind.
//!
//! What they share, and is here once:
//! - opening a lock file without following a link planted at its name, and refusing anything
//!   that is not a regular file (a fifo would block the open, a device would be written);
//! - taking the lock at once ([`try_lock`]) or waiting for it with a word to the user
//!   ([`lock_waiting`]); filesystems without locks told apart from lock errors;
//! - the holder's note, one line (`pid=… uid=… user=… host=… since=…`), and its description
//!   for messages (`pid P, user U, uid N, host H, since T`). Notes come from files other users may
//!   write: they are read bounded and cleaned to printable ASCII.
//!
//! What differs stays with each lock: the output lock's header and removal on release, the GPU
//! lease's private directory opened by descriptor and its `/proc/locks` cross-check.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// The longest note kept from a file (notes are a line of ~100 characters).
pub const NOTE_MAX: usize = 200;

/// The outcome of trying a lock without waiting.
#[derive(Debug)]
pub enum Attempt {
    Locked,
    /// Another open file (another process, or this one) holds it.
    Busy,
    /// The filesystem has no locks (Lustre without `-o flock`, some NFS setups).
    Unsupported(std::io::Error),
}

/// Try the exclusive lock once.
pub fn try_lock(file: &File) -> std::io::Result<Attempt> {
    match file.try_lock() {
        Ok(()) => Ok(Attempt::Locked),
        Err(TryLockError::WouldBlock) => Ok(Attempt::Busy),
        Err(TryLockError::Error(e)) if locking_unsupported(&e) => Ok(Attempt::Unsupported(e)),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Errors that mean "no locks on this filesystem" rather than "cannot lock this file".
pub fn locking_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::ENOLCK | libc::EOPNOTSUPP)
    )
}

/// How often a waiting process tries again, and says again that it waits.
const POLL: Duration = Duration::from_millis(200);
const SAY_EVERY: Duration = Duration::from_secs(60);

/// Take the exclusive lock on `file`, waiting as long as another holder keeps it; `waiting` is
/// called when the wait starts and then every minute, with the holder's description, so a
/// long wait is never silent. A filesystem without locks is said once and not waited on.
pub fn lock_waiting(file: &File, path: &Path, mut waiting: impl FnMut(&str)) -> Result<()> {
    let mut said: Option<Instant> = None;
    loop {
        match try_lock(file).with_context(|| format!("cannot lock {}", path.display()))? {
            Attempt::Locked => return Ok(()),
            Attempt::Unsupported(e) => {
                tracing::warn!(
                    "{}: this filesystem does not support file locks ({e}); going on unprotected",
                    path.display()
                );
                return Ok(());
            }
            Attempt::Busy => {
                if said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
                    waiting(&describe(&read_note(file).unwrap_or_default()));
                    said = Some(Instant::now());
                }
                std::thread::sleep(POLL);
            }
        }
    }
}

/// A lock held until dropped; its file stays (as `huggingface_hub`'s `.lock` files do: removing
/// a lock file others may have open would let two holders lock two inodes of one name).
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// Take the lock at `path` (its folder created), waiting for another holder with a word to the
/// user ([`lock_waiting`]); the note says who holds it to whoever waits next.
pub fn wait_for(path: &Path, waiting: impl FnMut(&str)) -> Result<Held> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = open_no_follow(path)?;
    lock_waiting(&file, path, waiting)?;
    // Only informative: a full disk must not stop the holder.
    let _ = file
        .set_len(0)
        .and_then(|_| std::os::unix::fs::FileExt::write_all_at(&file, note().as_bytes(), 0));
    Ok(Held { _file: file })
}

/// Open `path` for locking: created if missing (mode 0644), never truncated, never through a
/// symbolic link, and only if it is a regular file. `O_NONBLOCK` so that a fifo planted at the
/// name cannot block the open itself.
pub fn open_no_follow(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
            "{} is a symbolic link; refusing to use it as a lock file (remove it)",
            path.display()
        ),
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

/// Whether `path` still names the open `file` (same device and inode): a lock file removed by
/// its holder between our open and our lock is a dead inode that excludes nobody.
pub fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// This process as a lock's holder: `pid=… uid=… user=… host=… since=…` (one line; `user` only
/// when known; `since` in UTC without spaces, so every field splits on whitespace).
pub fn note() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|u| printable(&u, 32).replace(' ', "_"))
        .unwrap_or_default();
    let mut note = format!("pid={} uid={uid}", std::process::id());
    if !user.is_empty() {
        note.push_str(&format!(" user={user}"));
    }
    note.push_str(&format!(
        " host={} since={}",
        hostname(),
        iso_utc(SystemTime::now())
    ));
    note
}

/// The value of `key=` in a note (any line, fields split on whitespace).
pub fn field<'a>(note: &'a str, key: &str) -> Option<&'a str> {
    note.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

/// A holder for messages: "pid P, user U, uid N, host H, since T", as much as the note says
/// (no parentheses: it is usually quoted inside some).
pub fn describe(note: &str) -> String {
    let Some(pid) = field(note, "pid") else {
        // The holder has locked but not yet written its note (or writes none).
        return "holder not recorded".into();
    };
    let mut who = format!("pid {pid}");
    for key in ["user", "uid", "host"] {
        if let Some(v) = field(note, key) {
            who.push_str(&format!(", {key} {v}"));
        }
    }
    if let Some(since) = field(note, "since") {
        // `2026-12-06T08:03:25Z` as `2026-12-06 08:03:25 UTC`; anything else as written.
        let shown = match since.strip_suffix('Z') {
            Some(t) => format!("{} UTC", t.replacen('T', " ", 1)),
            None => since.replacen('T', " ", 1),
        };
        who.push_str(&format!(", since {shown}"));
    }
    who
}

/// The first line of a lock file after `skip` lines (a header), bounded and cleaned; `None`
/// when there is none.
pub fn read_note_after(file: &File, skip: usize) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut reader = file;
    let _ = std::io::Seek::rewind(&mut reader);
    let _ = reader.take(4096).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let line = printable(text.lines().nth(skip).unwrap_or(""), NOTE_MAX);
    (!line.is_empty()).then_some(line)
}

/// [`read_note_after`] with no header.
pub fn read_note(file: &File) -> Option<String> {
    read_note_after(file, 0)
}

/// Printable ASCII only, at most `max` characters: notes come from files other users can write.
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// This machine's name, for notes (`unknown` when the kernel does not say).
pub fn hostname() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = printable(&host, 64).replace(' ', "_");
    if host.is_empty() {
        "unknown".into()
    } else {
        host
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (ISO 8601, one word for notes).
pub fn iso_utc(t: SystemTime) -> String {
    let text = utc_timestamp(t);
    format!("{}Z", text.trim_end_matches(" UTC").replacen(' ', "T", 1))
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_timestamp(t: SystemTime) -> String {
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
            utc_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)),
            "2000-02-29 01:01:01 UTC"
        );
        assert_eq!(
            iso_utc(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)),
            "2000-02-29T01:01:01Z"
        );
    }

    #[test]
    fn notes_are_one_line_and_describe_their_holder() {
        let n = note();
        assert!(!n.contains('\n'), "{n}");
        let pid = std::process::id().to_string();
        assert_eq!(field(&n, "pid"), Some(pid.as_str()));
        let d = describe(&n);
        assert!(d.starts_with(&format!("pid {pid}, ")), "{d}");
        assert!(
            d.contains(", host ") && d.contains(", since ") && d.ends_with(" UTC"),
            "{d}"
        );
        assert_eq!(
            describe("pid=7 uid=1000 host=node1 since=2026-01-02T03:04:05Z"),
            "pid 7, uid 1000, host node1, since 2026-01-02 03:04:05 UTC"
        );
        assert_eq!(describe("pid=7"), "pid 7");
        assert_eq!(describe(""), "holder not recorded");
    }

    #[test]
    fn a_second_open_file_finds_the_lock_busy_and_waits_until_it_is_free() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.lock");
        let first = open_no_follow(&path).unwrap();
        assert!(matches!(try_lock(&first).unwrap(), Attempt::Locked));
        std::fs::write(&path, format!("{}\n", note())).unwrap();
        let second = open_no_follow(&path).unwrap();
        assert!(matches!(try_lock(&second).unwrap(), Attempt::Busy));
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let mut heard = Vec::new();
        lock_waiting(&second, &path, |who| heard.push(who.to_string())).unwrap();
        release.join().unwrap();
        assert_eq!(heard.len(), 1, "{heard:?}");
        assert!(
            heard[0].starts_with(&format!("pid {}, ", std::process::id())),
            "{heard:?}"
        );
    }

    #[test]
    fn links_fifos_and_folders_are_never_opened_as_lock_files() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::write(&target, "keep\n").unwrap();
        let link = tmp.path().join("link.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = format!("{:#}", open_no_follow(&link).unwrap_err());
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
        let fifo = tmp.path().join("fifo.lock");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = format!("{:#}", open_no_follow(&fifo).unwrap_err());
        assert!(e.contains("not a regular file"), "{e}");
        let e = format!("{:#}", open_no_follow(tmp.path()).unwrap_err());
        assert!(e.contains("lock file"), "{e}");
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
}
