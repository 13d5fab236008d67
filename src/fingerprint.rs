//! What identifies inputs and settings for resume: a file by path, size and modification time;
//! a model by its files; token streams by a stable 64-bit FNV-1a hash (std's hasher may change
//! between Rust releases, and a checkpoint must outlive a rebuild).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

pub fn file(path: &Path) -> Value {
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
}
