//! What identifies inputs and settings for resume: a file by path, size and modification time;
//! stdin by its content (SHA-256, taken while copying it to a file, see [`spool`]); a model by
//! its files; token streams by a stable 64-bit FNV-1a hash (std's hasher may change between
//! Rust releases, and a checkpoint must outlive a rebuild).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Whether `path` is a stream read once (stdin as `-`, a pipe, `<(zcat x.gz)`, a device): its
/// path, size and time say nothing about its content.
pub fn is_stream(path: &Path) -> bool {
    path == Path::new("-") || std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// A file by path, size and modification time. A stream ([`is_stream`]) has no such identity:
/// its value never equals an earlier one, so a step keyed by it is always redone (use [`spool`]
/// to key a stream by content).
pub fn file(path: &Path) -> Value {
    if is_stream(path) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return json!({ "path": path.display().to_string(), "read_at": now, "pid": std::process::id() });
    }
    match std::fs::metadata(path) {
        Ok(m) => json!({
            "path": path.display().to_string(),
            "bytes": m.len(),
            "modified": m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos() as u64),
        }),
        Err(_) => json!({ "path": path.display().to_string() }),
    }
}

/// A model's files: the directory's regular files, sorted, or the file itself.
fn model_files(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A model directory's or file's fingerprint: its weight/config files with their paths.
pub fn model(path: &Path) -> Value {
    let files = model_files(path);
    if path.is_dir() {
        Value::Array(files.iter().map(|p| file(p)).collect())
    } else {
        file(path)
    }
}

/// A model by content only (file names, sizes, modification times; symlinks followed): the
/// same model staged at another path (a pipeline's work directory) has the same fingerprint.
pub fn model_contents(path: &Path) -> Value {
    let entry = |p: &PathBuf| {
        let m = std::fs::metadata(p).ok();
        json!({
            "name": p.file_name().map(|n| n.to_string_lossy().to_string()),
            "bytes": m.as_ref().map(|m| m.len()),
            "modified": m.and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos() as u64),
        })
    };
    Value::Array(model_files(path).iter().map(entry).collect())
}

/// The sha256 of a file's content, read in a stream (hex): what identifies a classifier in
/// reports and in the classifier cache.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    std::io::copy(&mut file, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", h.finalize()))
}

/// Copy `input` (a stream) into `dir` as `stdin.fa`, or `stdin.fa.gz` when it is gzip, hashing
/// it on the way through (bounded memory, whatever its size). Returns the file and the
/// content's fingerprint: a re-run fed other content gets another fingerprint and redoes its
/// steps; the same content resumes. The copy is moved into place only when complete.
pub fn spool(mut input: impl Read, dir: &Path) -> Result<(PathBuf, Value)> {
    let plain = dir.join("stdin.fa");
    let gzip = dir.join("stdin.fa.gz");
    let mut tmp = crate::io::output::temp_beside(&plain, ".partial")?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut head: Vec<u8> = Vec::with_capacity(2);
    let mut bytes = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading stdin"),
        };
        let chunk = &buf[..n];
        if head.len() < 2 {
            head.extend(chunk.iter().take(2 - head.len()));
        }
        hasher.update(chunk);
        tmp.write_all(chunk)
            .with_context(|| format!("copying stdin to {}", plain.display()))?;
        bytes += n as u64;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("copying stdin to {}", plain.display()))?;
    let (path, other) = if head == [0x1f, 0x8b] {
        (gzip, plain)
    } else {
        (plain, gzip)
    };
    tmp.persist(&path)
        .with_context(|| format!("moving the copy of stdin into place at {}", path.display()))?;
    // A copy of earlier content under the other name is stale.
    let _ = std::fs::remove_file(other);
    let sha256: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((
        path,
        json!({ "stdin": { "sha256": sha256, "bytes": bytes } }),
    ))
}

/// FNV-1a, 64 bit.
#[derive(Debug, Clone)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_vectors() {
        assert_eq!(Fnv64::default().hex(), "cbf29ce484222325");
        assert_eq!(Fnv64::default().bytes(b"a").hex(), "af63dc4c8601ec8c");
        assert_eq!(Fnv64::default().bytes(b"foobar").hex(), "85944171f73967e8");
    }

    #[test]
    fn stdin_is_keyed_by_content() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, a) = spool(&b">a\nACGT\n"[..], tmp.path()).unwrap();
        assert_eq!(path, tmp.path().join("stdin.fa"));
        assert_eq!(std::fs::read(&path).unwrap(), b">a\nACGT\n");
        // `printf '>a\nACGT\n' | sha256sum`
        assert_eq!(
            a["stdin"]["sha256"],
            "ec93753459551ffadb17f616d5e6bd45de641c045083fac84c4fa223987b232b"
        );
        assert_eq!(a["stdin"]["bytes"], 8);
        let (_, again) = spool(&b">a\nACGT\n"[..], tmp.path()).unwrap();
        assert_eq!(a, again);
        let (_, other) = spool(&b">a\nACGA\n"[..], tmp.path()).unwrap();
        assert_ne!(a, other);
        // Gzip keeps its nature in the name; the stale plain copy goes.
        let (gz, _) = spool(&[0x1f, 0x8b, 8, 0][..], tmp.path()).unwrap();
        assert_eq!(gz, tmp.path().join("stdin.fa.gz"));
        assert!(!tmp.path().join("stdin.fa").exists());
        assert_ne!(file(Path::new("-")), file(Path::new("-")));
    }
}
