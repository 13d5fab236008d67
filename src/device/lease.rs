//! GPU leasing for many processes on one node: Nextflow's local executor starts one task per
//! GPU but assigns none, so with `VIRNUCPRO_GPU_LEASE=N` (or `--gpu-lease N`) each process takes
//! an exclusive lock file per GPU and uses only the GPUs it holds.
//!
//! Locks are `flock`s on files keyed by the GPU's UUID (the same in every process whatever its
//! `CUDA_VISIBLE_DEVICES`); the kernel drops them when the process ends, however it ends, so a
//! crashed task never leaves a GPU reserved.
//!
//! Where: `VIRNUCPRO_GPU_LOCK_DIR` when set (a directory shared on purpose, e.g. by Nextflow's
//! `local_gpu` profile or a root-made one for several users), else a per-user directory:
//! `$XDG_RUNTIME_DIR/virnucpro-gpu-locks`, or `/tmp/virnucpro-gpu-locks-<uid>`.
//!
//! The directory may be one other users can write to, so nothing in it is trusted: the
//! directory must be ours or root's and, when others may write to it, sticky (like /tmp), or it
//! is refused; no symlink is followed (a planted `GPU-….lock -> ~victim/.bashrc` fails to open);
//! a FIFO, directory or device at a lock file's name is refused without blocking; and a lock
//! file is written to (the holder's note) only when we own it and it has no other hard link. A
//! file is never truncated or chmod'ed, so a lock file of another user is only read and locked.

use std::ffi::{CString, OsString};
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::runtime::lockfile::{self, read_note};

pub const LEASE_ENV: &str = "VIRNUCPRO_GPU_LEASE";
pub const LOCK_DIR_ENV: &str = "VIRNUCPRO_GPU_LOCK_DIR";
pub const TIMEOUT_ENV: &str = "VIRNUCPRO_GPU_LEASE_TIMEOUT";
/// Name of the per-user lock directory inside `$XDG_RUNTIME_DIR`.
pub const XDG_SUBDIR: &str = "virnucpro-gpu-locks";

/// The holder's note is written as one fixed-size record at the start of the file, so that a
/// newer note always covers an older one without truncating the file.
const NOTE_LEN: usize = 256;
/// How often a waiting process repeats who holds the GPUs.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(500);

/// Leases held for the life of the process (dropping a lock file releases its GPU).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The lock directory this process uses: `VIRNUCPRO_GPU_LOCK_DIR`, else the per-user default.
pub fn lock_dir() -> PathBuf {
    match std::env::var_os(LOCK_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => default_lock_dir(
            std::env::var_os("XDG_RUNTIME_DIR"),
            Path::new("/tmp"),
            euid(),
        ),
    }
}

/// The per-user default: inside `xdg` (`$XDG_RUNTIME_DIR`) when that is an absolute, real
/// directory owned by `uid` that nobody else may write to; else `<tmp>/virnucpro-gpu-locks-<uid>`
/// (made 0700 on first use and checked like any lock directory).
pub fn default_lock_dir(xdg: Option<OsString>, tmp: &Path, uid: u32) -> PathBuf {
    let private = |p: &Path| {
        p.is_absolute()
            && std::fs::symlink_metadata(p)
                .is_ok_and(|m| m.file_type().is_dir() && m.uid() == uid && m.mode() & 0o022 == 0)
    };
    match xdg.map(PathBuf::from).filter(|p| private(p)) {
        Some(runtime) => runtime.join(XDG_SUBDIR),
        None => tmp.join(format!("virnucpro-gpu-locks-{uid}")),
    }
}

/// File name of the lock of the GPU with this key (UUID): only `[A-Za-z0-9-]` survive.
pub fn lock_name(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.lock")
}

/// The lock file of the GPU with this key (UUID).
pub fn lock_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(lock_name(key))
}

/// GPUs held by this process: their device indices, and the lock files that hold them.
#[derive(Debug)]
pub struct Lease {
    pub indices: Vec<usize>,
    files: Vec<File>,
}

impl Lease {
    /// Keep the locks until the process exits.
    pub fn keep(self) -> Vec<usize> {
        HELD.lock().unwrap().extend(self.files);
        self.indices
    }
}

/// An opened lock directory that passed the checks; lock files are opened relative to it, so
/// the path cannot be swapped for another directory in between.
struct LockDir {
    dir: File,
    path: PathBuf,
}

/// `/a/./b/` → `/a/b`: a trailing slash would make the kernel follow a final symlink even with
/// `O_NOFOLLOW`.
fn normalized(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Open and check the lock directory; `create`: make it (0700) when absent, else `None`.
fn open_dir(path: &Path, create: bool) -> Result<Option<LockDir>> {
    let path = normalized(path);
    if !path.is_absolute() {
        bail!(
            "GPU lock directory '{}' is not an absolute path; set {LOCK_DIR_ENV} to one",
            path.display()
        );
    }
    if create {
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot create the GPU lock directory {} (does its parent exist and \
                         can you write to it?)",
                        path.display()
                    )
                })
            }
        }
    }
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path);
    let dir = match opened {
        Ok(d) => d,
        Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR on Linux, ELOOP elsewhere.
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
                && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            bail!(
            "GPU lock directory {} is a symbolic link: refusing to follow it (another user may \
             have planted it); give the real directory in {LOCK_DIR_ENV}",
                path.display()
            )
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => bail!(
            "GPU lock directory {} exists but is not a directory; remove it or set {LOCK_DIR_ENV}",
            path.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open the GPU lock directory {}", path.display()))
        }
    };
    let meta = dir
        .metadata()
        .with_context(|| format!("cannot stat the GPU lock directory {}", path.display()))?;
    check_dir(&path, meta.uid(), meta.mode(), euid())?;
    Ok(Some(LockDir { dir, path }))
}

/// A lock directory must belong to us or root (a directory another user made could be emptied
/// and refilled by them at will), and when others may write to it, it must be sticky so that
/// they cannot remove or replace our lock files.
fn check_dir(path: &Path, owner: u32, mode: u32, me: u32) -> Result<()> {
    if owner != me && owner != 0 {
        bail!(
            "GPU lock directory {} belongs to uid {owner}, not to you (uid {me}) or root: \
             refusing it, as another user could swap its lock files; remove it or choose another \
             with {LOCK_DIR_ENV}",
            path.display()
        );
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        bail!(
            "GPU lock directory {} is writable by other users but not sticky (mode {:04o}): \
             anyone could replace its lock files; `chmod +t` it (like /tmp) or `chmod go-w` it",
            path.display(),
            mode & 0o7777
        );
    }
    Ok(())
}

/// `openat` relative to the checked directory, never following a symlink and never blocking
/// (a FIFO planted at the name would otherwise hang the open).
fn open_at(dir: &LockDir, name: &str, flags: libc::c_int) -> io::Result<File> {
    let cname = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    let flags = flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: a valid directory descriptor and a NUL-terminated name; the mode argument is read
    // only with O_CREAT.
    let fd = unsafe {
        libc::openat(
            dir.dir.as_raw_fd(),
            cname.as_ptr(),
            flags,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and belongs to nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A lock file, opened safely.
struct LockFile {
    file: File,
    path: PathBuf,
    /// We own it, it has no other hard link and it is open for writing: the note may go in.
    writable: bool,
}

fn refuse_open(path: &Path, e: io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => anyhow::anyhow!(
            "GPU lock file {} is a symbolic link: refusing to follow it (it may have been planted \
             to make you overwrite another file); remove it",
            path.display()
        ),
        Some(libc::EISDIR) => anyhow::anyhow!(
            "GPU lock file {} is a directory, not a lock file; remove it",
            path.display()
        ),
        _ => anyhow::Error::new(e)
            .context(format!("cannot open the GPU lock file {}", path.display())),
    }
}

fn open_lock(dir: &LockDir, name: &str) -> Result<LockFile> {
    let path = dir.path.join(name);
    // A file's owner may remove it between our two opens: then create it again.
    for _ in 0..5 {
        match open_at(dir, name, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) {
            Ok(file) => {
                return Ok(LockFile {
                    file,
                    path,
                    writable: true,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(refuse_open(&path, e)),
        }
        // It exists: open it as it is. Another user's file may not be writable by us, and
        // flock works on a read-only descriptor too.
        let opened = match open_at(dir, name, libc::O_RDWR) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                open_at(dir, name, libc::O_RDONLY).map(|f| (f, false))
            }
            other => other.map(|f| (f, true)),
        };
        let (file, rw) = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(refuse_open(&path, e)),
        };
        let meta = file
            .metadata()
            .with_context(|| format!("cannot stat the GPU lock file {}", path.display()))?;
        if !meta.file_type().is_file() {
            bail!(
                "GPU lock file {} is not a regular file (a FIFO, socket or device?): refusing \
                 it; remove it",
                path.display()
            );
        }
        let writable = rw && meta.uid() == euid() && meta.nlink() == 1;
        return Ok(LockFile {
            file,
            path,
            writable,
        });
    }
    bail!(
        "GPU lock file {} keeps disappearing; is another program cleaning {}?",
        path.display(),
        dir.path.display()
    )
}

/// The house's holder note ([`lockfile::note`]), padded to a fixed length and written in place:
/// the file is never truncated (it may be another user's, hard-linked, ...).
fn write_note(file: &File) {
    let mut record = lockfile::note().into_bytes();
    record.truncate(NOTE_LEN - 1);
    record.resize(NOTE_LEN - 1, b' ');
    record.push(b'\n');
    // Only informative: a full disk must not stop the run.
    let _ = file.write_all_at(&record, 0);
}

/// The pid holding an flock on this inode, as `/proc/locks` says (Linux, and only for holders in
/// our pid namespace); `None` when it does not say.
fn lock_pid(dev: u64, ino: u64) -> Option<u32> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| parse_lock_line(line, &want))
}

/// One `/proc/locks` line, e.g. `1: FLOCK  ADVISORY  WRITE 2263 00:19:1190 0 EOF`; waiters
/// (`1: -> FLOCK …`) do not hold the lock.
fn parse_lock_line(line: &str, want: &str) -> Option<u32> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        [_, "FLOCK", _, _, pid, file, ..] if *file == want => {
            pid.parse::<i64>().ok().filter(|&p| p > 0).map(|p| p as u32)
        }
        _ => None,
    }
}

/// Who holds this (locked) file, described as every lock's holder is ([`lockfile::describe`]).
/// The note is the holder's own word, but may be stale when the file belongs to another user
/// (only its owner writes notes): `/proc/locks` settles it.
fn describe_holder(file: &File) -> String {
    let note = read_note(file);
    let note_pid = |n: &str| lockfile::field(n, "pid").and_then(|p| p.parse::<u32>().ok());
    let pid = file
        .metadata()
        .ok()
        .and_then(|m| lock_pid(m.dev(), m.ino()));
    match (note, pid) {
        (Some(note), Some(pid)) if note_pid(&note) == Some(pid) => lockfile::describe(&note),
        (_, Some(pid)) => match std::fs::metadata(format!("/proc/{pid}")) {
            Ok(m) => lockfile::describe(&format!("pid={pid} uid={}", m.uid())),
            Err(_) => lockfile::describe(&format!("pid={pid}")),
        },
        (Some(note), None) => lockfile::describe(&note),
        (None, None) => "another process".into(),
    }
}

/// Take, without waiting, up to `want` of the `candidates` (device index, key) that no other
/// process holds. Holding none is not an error here; an unsafe directory or lock file is.
pub fn try_acquire(candidates: &[(usize, String)], want: usize, dir: &Path) -> Result<Lease> {
    let dir = open_dir(dir, true)?.context("the GPU lock directory vanished")?;
    let mut lease = Lease {
        indices: Vec::new(),
        files: Vec::new(),
    };
    for (index, key) in candidates {
        if lease.indices.len() >= want {
            break;
        }
        let lock = open_lock(&dir, &lock_name(key))?;
        match lockfile::try_lock(&lock.file)
            .with_context(|| format!("cannot lock {}", lock.path.display()))?
        {
            lockfile::Attempt::Locked => {
                if lock.writable {
                    write_note(&lock.file);
                }
                lease.indices.push(*index);
                lease.files.push(lock.file);
            }
            lockfile::Attempt::Busy => {}
            // A lease nothing enforces would let two tasks share a GPU: not a lease.
            lockfile::Attempt::Unsupported(e) => bail!(
                "cannot lock {}: its filesystem has no file locks ({e}); put the GPU lock \
                 directory on a local filesystem ({LOCK_DIR_ENV})",
                lock.path.display()
            ),
        }
    }
    Ok(lease)
}

/// `cuda:0 (GPU-…) held by pid P, user U, uid N, host H, since T; …` for every candidate.
fn holders(candidates: &[(usize, String)], dir: &Path) -> String {
    candidates
        .iter()
        .map(|(index, key)| {
            let who = holder(dir, key).unwrap_or_else(|| "nobody (free now)".into());
            format!("cuda:{index} ({key}) held by {who}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Take up to `want` GPUs, waiting until at least one is free: for ever, or up to `patience`
/// (then an error naming the holders). While waiting, logs who holds them, once and then every
/// minute.
pub fn acquire(
    candidates: &[(usize, String)],
    want: usize,
    dir: &Path,
    patience: Option<Duration>,
) -> Result<Lease> {
    // A second lease in the same process would wait for the first (flock is per open file):
    // devices are resolved once per process (`device::Placement`), so this is a bug guard.
    if !HELD.lock().unwrap().is_empty() {
        bail!(
            "this process already holds a GPU lease; a second one would wait for itself \
             (devices are resolved once per process)"
        );
    }
    let started = Instant::now();
    let mut last_log: Option<Instant> = None;
    loop {
        let lease = try_acquire(candidates, want, dir)?;
        if !lease.indices.is_empty() {
            return Ok(lease);
        }
        if let Some(p) = patience.filter(|&p| started.elapsed() >= p) {
            bail!(
                "all {} GPU(s) are leased by other processes and none came free within {} s \
                 ({}; lock files in {}): raise --gpu-lease-timeout ({TIMEOUT_ENV}), run fewer GPU \
                 tasks at once, or unset {LEASE_ENV}",
                candidates.len(),
                p.as_secs(),
                holders(candidates, dir),
                dir.display()
            );
        }
        if last_log.is_none_or(|t| t.elapsed() >= WAIT_LOG_EVERY) {
            tracing::info!(
                "waiting for a free GPU: {} (lock files in {})",
                holders(candidates, dir),
                dir.display()
            );
            last_log = Some(Instant::now());
        }
        let left = patience.map_or(POLL, |p| p.saturating_sub(started.elapsed()));
        std::thread::sleep(POLL.min(left));
    }
}

/// Who holds the lease on `key` now: `None` when free (or never used), else the holder's note
/// described ([`lockfile::describe`]). Creates nothing.
pub fn holder(dir: &Path, key: &str) -> Option<String> {
    let dir = open_dir(dir, false).ok()??;
    let file = open_at(&dir, &lock_name(key), libc::O_RDONLY).ok()?;
    if !file.metadata().ok()?.file_type().is_file() {
        return Some(
            "nobody, but something that is not a file sits at its lock file's name".into(),
        );
    }
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => Some(describe_holder(&file)),
        Err(TryLockError::Error(_)) => None,
    }
}

/// Why this lock directory would be refused, if it would (for `virnucpro devices`). A directory
/// that does not exist yet is fine: it will be made.
pub fn dir_problem(dir: &Path) -> Option<String> {
    open_dir(dir, false).err().map(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn gpus(n: usize) -> Vec<(usize, String)> {
        (0..n).map(|i| (i, format!("GPU-test-{i}"))).collect()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn two_leases_never_share_a_gpu() {
        let dir = tempfile::tempdir().unwrap();
        let a = try_acquire(&gpus(3), 2, dir.path()).unwrap();
        assert_eq!(a.indices, vec![0, 1]);
        let b = try_acquire(&gpus(3), 2, dir.path()).unwrap();
        assert_eq!(b.indices, vec![2]);
        let note = holder(dir.path(), "GPU-test-0").unwrap();
        assert!(
            note.starts_with(&format!("pid {}, ", std::process::id())),
            "{note}"
        );
        assert!(note.contains(&format!(", uid {},", euid())), "{note}");
        let c = try_acquire(&gpus(3), 1, dir.path()).unwrap();
        assert!(c.indices.is_empty());
        let err = acquire(&gpus(3), 1, dir.path(), Some(Duration::ZERO)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("leased by other processes"), "{msg}");
        assert!(msg.contains("cuda:2 (GPU-test-2) held by pid "), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        drop(a);
        assert_eq!(holder(dir.path(), "GPU-test-0"), None);
        let d = try_acquire(&gpus(3), 5, dir.path()).unwrap();
        assert_eq!(d.indices, vec![0, 1]);
    }

    #[test]
    fn a_timeout_gives_up_after_about_that_long() {
        let dir = tempfile::tempdir().unwrap();
        let _held = try_acquire(&gpus(1), 1, dir.path()).unwrap();
        let t = Instant::now();
        let err = acquire(&gpus(1), 1, dir.path(), Some(Duration::from_secs(1))).unwrap_err();
        let waited = t.elapsed();
        assert!(waited >= Duration::from_secs(1), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(format!("{err:#}").contains("within 1 s"), "{err:#}");
    }

    #[test]
    fn keys_become_safe_file_names() {
        assert_eq!(
            lock_path(Path::new("/x"), "GPU-ab/c d"),
            PathBuf::from("/x/GPU-ab_c_d.lock")
        );
        assert_eq!(lock_name("../../etc/passwd"), "______etc_passwd.lock");
    }

    #[test]
    fn default_dir_is_per_user() {
        let run = tempfile::tempdir().unwrap();
        let me = euid();
        std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(
            default_lock_dir(Some(run.path().into()), Path::new("/tmp"), me),
            run.path().join(XDG_SUBDIR)
        );
        // Not private, not ours, relative, unset: the uid-named directory in /tmp.
        let fallback = PathBuf::from(format!("/tmp/virnucpro-gpu-locks-{me}"));
        std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            default_lock_dir(Some(run.path().into()), Path::new("/tmp"), me),
            fallback
        );
        std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_ne!(
            default_lock_dir(Some(run.path().into()), Path::new("/tmp"), me + 1),
            run.path().join(XDG_SUBDIR)
        );
        assert_eq!(
            default_lock_dir(Some("run/user".into()), Path::new("/tmp"), me),
            fallback
        );
        assert_eq!(default_lock_dir(None, Path::new("/tmp"), me), fallback);
    }

    #[test]
    fn new_lock_directory_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("locks");
        try_acquire(&gpus(1), 1, &dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn directory_ownership_and_mode_rules() {
        let p = Path::new("/locks");
        let me = 1000;
        assert!(check_dir(p, me, 0o700, me).is_ok());
        assert!(
            check_dir(p, 0, 0o1777, me).is_ok(),
            "root's sticky /tmp-like dir"
        );
        assert!(check_dir(p, me, 0o1777, me).is_ok());
        assert!(check_dir(p, 0, 0o755, me).is_ok());
        let other = check_dir(p, 1001, 0o700, me).unwrap_err().to_string();
        assert!(other.contains("belongs to uid 1001"), "{other}");
        let open = check_dir(p, me, 0o777, me).unwrap_err().to_string();
        assert!(open.contains("not sticky (mode 0777)"), "{open}");
        assert!(
            check_dir(p, 0, 0o770, me).is_err(),
            "group-writable, not sticky"
        );
    }

    #[test]
    fn world_writable_dir_without_sticky_bit_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = try_acquire(&gpus(1), 1, tmp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("not sticky"), "{err:#}");
        assert!(
            !lock_path(tmp.path(), "GPU-test-0").exists(),
            "refused before any file"
        );
    }

    #[test]
    fn symlinked_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        for given in [link.clone(), link.join(""), link.join(".")] {
            let err = try_acquire(&gpus(1), 1, &given).unwrap_err();
            assert!(
                format!("{err:#}").contains("symbolic link"),
                "{given:?}: {err:#}"
            );
        }
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    }

    #[test]
    fn relative_directory_is_refused() {
        let err = try_acquire(&gpus(1), 1, Path::new("locks")).unwrap_err();
        assert!(
            format!("{err:#}").contains("not an absolute path"),
            "{err:#}"
        );
    }

    #[test]
    fn planted_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("bashrc");
        std::fs::write(&victim, "export PATH\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let dir = tmp.path().join("locks");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, lock_path(&dir, "GPU-test-0")).unwrap();
        let err = try_acquire(&gpus(1), 1, &dir).unwrap_err();
        assert!(format!("{err:#}").contains("is a symbolic link"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "export PATH\n");
        assert_eq!(mode(&victim), 0o600);
        // A dangling one (the target not created either).
        let ghost = tmp.path().join("ghost");
        std::os::unix::fs::symlink(&ghost, lock_path(&dir, "GPU-test-1")).unwrap();
        assert!(try_acquire(&gpus(2)[1..], 1, &dir).is_err());
        assert!(!ghost.exists());
    }

    #[test]
    fn planted_fifo_or_directory_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = CString::new(lock_path(tmp.path(), "GPU-test-0").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
        std::fs::create_dir(lock_path(tmp.path(), "GPU-test-1")).unwrap();
        let t = Instant::now();
        let err = try_acquire(&gpus(1), 1, tmp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
        let err = try_acquire(&gpus(2)[1..], 1, tmp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("is a directory"), "{err:#}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(holder(tmp.path(), "GPU-test-0")
            .unwrap()
            .contains("not a file"));
    }

    #[test]
    fn hard_linked_file_is_locked_but_never_written() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("notes.txt");
        std::fs::write(&victim, "keep me\n").unwrap();
        let dir = tmp.path().join("locks");
        std::fs::create_dir(&dir).unwrap();
        std::fs::hard_link(&victim, lock_path(&dir, "GPU-test-0")).unwrap();
        let lease = try_acquire(&gpus(1), 1, &dir).unwrap();
        assert_eq!(lease.indices, vec![0]);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    }

    #[test]
    fn own_existing_lock_file_gets_a_fresh_note_and_keeps_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = lock_path(tmp.path(), "GPU-test-0");
        std::fs::write(&path, "pid=1 host=old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let lease = try_acquire(&gpus(1), 1, tmp.path()).unwrap();
        assert_eq!(lease.indices, vec![0]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), NOTE_LEN);
        assert!(
            text.starts_with(&format!("pid={} ", std::process::id())),
            "{text}"
        );
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn holder_of_a_file_with_a_stale_note_comes_from_proc_locks() {
        let tmp = tempfile::tempdir().unwrap();
        let path = lock_path(tmp.path(), "GPU-test-0");
        // A note left by someone else, then the lock taken without writing a note.
        std::fs::write(&path, "pid=999999999 user=mallory host=elsewhere\n").unwrap();
        let f = File::open(&path).unwrap();
        f.try_lock().unwrap();
        let who = holder(tmp.path(), "GPU-test-0").unwrap();
        if std::fs::read_to_string("/proc/locks").is_ok() {
            assert_eq!(who, format!("pid {}, uid {}", std::process::id(), euid()));
        } else {
            assert!(who.contains("mallory"), "{who}");
        }
    }

    #[test]
    fn notes_from_files_are_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, "pid=1 \x1b[31mred\x07\nsecond line\n").unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(read_note(&f).unwrap(), "pid=1 [31mred");
    }

    #[test]
    fn proc_locks_lines() {
        let want = "00:19:1190";
        assert_eq!(
            parse_lock_line("1: FLOCK  ADVISORY  WRITE 2263 00:19:1190 0 EOF", want),
            Some(2263)
        );
        assert_eq!(
            parse_lock_line("1: -> FLOCK  ADVISORY  WRITE 2264 00:19:1190 0 EOF", want),
            None
        );
        assert_eq!(
            parse_lock_line("2: POSIX  ADVISORY  WRITE 2263 00:19:1190 0 EOF", want),
            None
        );
        assert_eq!(
            parse_lock_line("3: FLOCK  ADVISORY  WRITE 2263 00:19:1191 0 EOF", want),
            None
        );
    }

    /// 64 cases by default, `PROPTEST_CASES` for a longer run.
    fn cases() -> proptest::test_runner::Config {
        let n = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        proptest::test_runner::Config::with_cases(n)
    }

    proptest::proptest! {
        #![proptest_config(cases())]

        /// Whatever the key (it comes from the driver, or from a user), the lock is one plain
        /// file name inside the directory.
        #[test]
        fn any_key_is_one_plain_file_name(key in "\\PC*") {
            let name = lock_name(&key);
            let stem = name.strip_suffix(".lock").unwrap();
            proptest::prop_assert!(stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            let path = lock_path(Path::new("/d"), &key);
            proptest::prop_assert_eq!(path.parent(), Some(Path::new("/d")));
        }

        /// Another user's lock file can hold anything: what we log from it is one short line of
        /// printable ASCII.
        #[test]
        fn any_note_is_logged_as_one_clean_line(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("f");
            std::fs::write(&path, &bytes).unwrap();
            if let Some(note) = read_note(&File::open(&path).unwrap()) {
                proptest::prop_assert!(note.len() <= 200);
                proptest::prop_assert!(note.chars().all(|c| c.is_ascii_graphic() || c == ' '));
            }
        }

        /// A `/proc/locks` line of any shape is parsed without panicking, and a pid comes only
        /// from an FLOCK line on the wanted inode.
        #[test]
        fn any_proc_locks_line_is_safe(line in "\\PC{0,80}", pid in 1u32..4_000_000) {
            let want = "00:19:1190";
            if let Some(p) = parse_lock_line(&line, want) {
                proptest::prop_assert!(line.contains(want) && line.contains("FLOCK") && p > 0);
            }
            let real = format!("7: FLOCK  ADVISORY  WRITE {pid} {want} 0 EOF");
            proptest::prop_assert_eq!(parse_lock_line(&real, want), Some(pid));
        }
    }

    #[test]
    fn dir_problem_names_the_refusal() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(dir_problem(&tmp.path().join("not-yet")), None);
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(dir_problem(tmp.path()).unwrap().contains("not sticky"));
    }
}
