//! Writing outputs so that a killed run never leaves a file that looks complete: everything is
//! written to a hidden temporary file beside its final name and renamed into place only when
//! finished (rename is atomic on one filesystem). A temporary left by `kill -9` starts with a
//! dot and ends in `.partial`, so nobody mistakes it for a result.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
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
}
