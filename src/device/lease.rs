//! GPU leasing for many processes on one node: Nextflow's local executor starts one task per
//! GPU but assigns none, so with `VIRNUCPRO_GPU_LEASE=N` (or `--gpu-lease N`) each process takes
//! an exclusive lock file per GPU and uses only the GPUs it holds.
//!
//! Locks are `flock`s on files in a node-local directory (`VIRNUCPRO_GPU_LOCK_DIR`, default
//! `/tmp/virnucpro-gpu-locks`): the kernel drops them when the process ends, however it ends, so
//! a crashed task never leaves a GPU reserved. Files are keyed by the GPU's UUID, which is the
//! same in every process whatever its `CUDA_VISIBLE_DEVICES`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub const LEASE_ENV: &str = "VIRNUCPRO_GPU_LEASE";
pub const LOCK_DIR_ENV: &str = "VIRNUCPRO_GPU_LOCK_DIR";
pub const DEFAULT_LOCK_DIR: &str = "/tmp/virnucpro-gpu-locks";

/// Leases held for the life of the process (dropping a lock file releases its GPU).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

pub fn lock_dir() -> PathBuf {
    std::env::var_os(LOCK_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LOCK_DIR))
}

/// The lock file of the GPU with this key (UUID).
pub fn lock_path(dir: &Path, key: &str) -> PathBuf {
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
    dir.join(format!("{safe}.lock"))
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

fn ensure_lock_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the GPU lock directory {}", dir.display()))?;
        // Shared by every user's tasks on the node, like /tmp itself.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
        }
    }
    Ok(())
}

fn open_lock(path: &Path) -> Result<File> {
    // Another user may own the file: flock works on a read-only descriptor too.
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path);
    match rw {
        Ok(f) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = f.set_permissions(std::fs::Permissions::from_mode(0o666));
            }
            Ok(f)
        }
        Err(_) => File::open(path)
            .with_context(|| format!("cannot open GPU lock file {}", path.display())),
    }
}

/// Take, without waiting, up to `want` of the `candidates` (device index, key) that no other
/// process holds. Holding none is not an error here.
pub fn try_acquire(candidates: &[(usize, String)], want: usize, dir: &Path) -> Result<Lease> {
    ensure_lock_dir(dir)?;
    let mut lease = Lease {
        indices: Vec::new(),
        files: Vec::new(),
    };
    for (index, key) in candidates {
        if lease.indices.len() >= want {
            break;
        }
        let path = lock_path(dir, key);
        let mut file = open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for `virnucpro devices` and for people reading the file.
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let _ = file.set_len(0);
                let _ = file.rewind();
                let _ = writeln!(file, "pid={} host={}", std::process::id(), host.trim());
                lease.indices.push(*index);
                lease.files.push(file);
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
    Ok(lease)
}

/// Take up to `want` GPUs, waiting (up to `patience`, or for ever) until at least one is free.
pub fn acquire(
    candidates: &[(usize, String)],
    want: usize,
    dir: &Path,
    patience: Option<Duration>,
) -> Result<Lease> {
    let started = Instant::now();
    let mut last_log: Option<Instant> = None;
    loop {
        let lease = try_acquire(candidates, want, dir)?;
        if !lease.indices.is_empty() {
            return Ok(lease);
        }
        if patience.is_some_and(|p| started.elapsed() >= p) {
            anyhow::bail!(
                "all {} GPU(s) are leased by other processes (lock files in {}); wait for them, \
                 lower the number of concurrent GPU tasks, or unset {LEASE_ENV}",
                candidates.len(),
                dir.display()
            );
        }
        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            tracing::info!(
                "waiting for a free GPU: all {} are leased by other processes (lock files in {})",
                candidates.len(),
                dir.display()
            );
            last_log = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Who holds the lease on `key` now: `None` when free, else the holder's note.
pub fn holder(dir: &Path, key: &str) -> Option<String> {
    let path = lock_path(dir, key);
    let mut file = File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(_) => {
            let mut note = String::new();
            let _ = file.read_to_string(&mut note);
            Some(note.trim().to_string())
                .filter(|s| !s.is_empty())
                .or(Some("another process".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus(n: usize) -> Vec<(usize, String)> {
        (0..n).map(|i| (i, format!("GPU-test-{i}"))).collect()
    }

    #[test]
    fn two_leases_never_share_a_gpu() {
        let dir = tempfile::tempdir().unwrap();
        let a = try_acquire(&gpus(3), 2, dir.path()).unwrap();
        assert_eq!(a.indices, vec![0, 1]);
        let b = try_acquire(&gpus(3), 2, dir.path()).unwrap();
        assert_eq!(b.indices, vec![2]);
        assert!(holder(dir.path(), "GPU-test-0").unwrap().contains("pid="));
        let c = try_acquire(&gpus(3), 1, dir.path()).unwrap();
        assert!(c.indices.is_empty());
        assert!(acquire(&gpus(3), 1, dir.path(), Some(Duration::ZERO)).is_err());
        drop(a);
        assert_eq!(holder(dir.path(), "GPU-test-0"), None);
        let d = try_acquire(&gpus(3), 5, dir.path()).unwrap();
        assert_eq!(d.indices, vec![0, 1]);
    }

    #[test]
    fn keys_become_safe_file_names() {
        assert_eq!(
            lock_path(Path::new("/x"), "GPU-ab/c d"),
            PathBuf::from("/x/GPU-ab_c_d.lock")
        );
    }
}
