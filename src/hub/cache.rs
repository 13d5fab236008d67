//! The Hugging Face cache layout on disk, shared with Python's `huggingface_hub`:
//!
//! ```text
//! $HF_HUB_CACHE/models--org--name/blobs/<etag>                 the file's bytes, verified
//!                                 blobs/<etag>.incomplete      a download in progress (resumable)
//!                                 snapshots/<commit>/<file>    -> ../../blobs/<etag>
//!                                 refs/<revision>              the commit, one line
//! $HF_HUB_CACHE/.locks/models--org--name/<etag>.lock           locked while a blob is written
//! ```
//!
//! Only a blob that matched its checksum is ever renamed to `blobs/<etag>`, and a snapshot link
//! is made after its blob exists, so a reader sees a file complete or not at all.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::RepoId;

/// One model repository's folder in the cache.
pub struct RepoCache {
    pub root: PathBuf,
    pub locks: PathBuf,
}

impl RepoCache {
    pub fn new(hub_cache: &Path, id: &RepoId) -> RepoCache {
        RepoCache {
            root: hub_cache.join(id.folder()),
            locks: hub_cache.join(".locks").join(id.folder()),
        }
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    fn ref_path(&self, revision: &str) -> PathBuf {
        self.root.join("refs").join(revision)
    }

    /// The commit a revision points at here, if it was fetched (a commit points at itself).
    /// A ref file that is not a commit id is treated as absent (a fetch writes it again).
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        if super::is_commit(revision) {
            return Some(revision.to_ascii_lowercase());
        }
        read_ref(&self.ref_path(revision)).ok()
    }

    /// Record that `revision` is at `commit` (atomically: a reader sees the old or new commit).
    pub fn set_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(revision);
        let dir = path.parent().expect("refs/<revision>");
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::io::output::write_atomic(&path, commit.as_bytes())
    }

    /// Link `snapshots/<commit>/<file>` to `blobs/<etag>` (relative, as `huggingface_hub` does),
    /// replacing whatever link was there.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let rel = safe_relative(file)?;
        let link = self.snapshot(commit).join(rel);
        let dir = link.parent().expect("a file inside the snapshot");
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let depth = rel.components().count() + 1; // snapshots/<commit>/a/b -> ../../../blobs
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        // A fresh name then rename: the link appears whole even with a concurrent reader.
        let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), etag));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)
            .with_context(|| format!("creating link {}", tmp.display()))?;
        fs::rename(&tmp, &link).with_context(|| format!("creating link {}", link.display()))?;
        Ok(link)
    }
}

/// A file name from a repository listing as a path that stays inside the snapshot: no `..`,
/// no absolute path (the listing comes from a server).
pub fn safe_relative(file: &str) -> Result<&Path> {
    let p = Path::new(file);
    if file.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("refusing the file name {file:?} from the server (it leaves the model folder)");
    }
    if file.chars().any(char::is_control) {
        bail!("refusing the file name {file:?} from the server (control characters)");
    }
    Ok(p)
}

/// `refs/<revision>`: one commit id in a plain file, as `huggingface_hub` writes it (a link is
/// refused: nothing in `refs/` is followed elsewhere).
fn read_ref(path: &Path) -> Result<String> {
    let meta = fs::symlink_metadata(path)
        .with_context(|| format!("reading {}", super::shown_path(path)))?;
    if meta.file_type().is_symlink() {
        bail!("{} is a link, not a ref file", super::shown_path(path));
    }
    let text = super::read_small(path, 256)?;
    let commit = text.trim();
    if !super::is_commit(commit) {
        bail!(
            "{} holds {:?}, not a commit id",
            super::shown_path(path),
            super::shown(commit)
        );
    }
    Ok(commit.to_ascii_lowercase())
}

/// Bytes taken by the files under `dir` (links not followed: a blob counted once).
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Free bytes for an unprivileged user on the filesystem holding `dir` (`None` if unknown).
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct for a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// A cached model repository, for `models list`.
#[derive(Debug, serde::Serialize)]
pub struct CachedRepo {
    pub repo: String,
    /// `refs/<revision>` -> commit.
    pub refs: Vec<(String, String)>,
    /// Commits with a snapshot.
    pub snapshots: Vec<String>,
    /// Verified blobs' total size.
    pub bytes: u64,
    /// Bytes of downloads in progress (`*.incomplete`), resumable.
    pub partial_bytes: u64,
    pub path: PathBuf,
    /// Entries that could not be read (one line each); the rest is listed.
    pub problems: Vec<String>,
}

/// Every `models--*` repository of a Hub cache. Names come from disk (perhaps written by
/// another tool, or another user): shown escaped, and bad entries reported, never followed.
pub fn list(hub_cache: &Path) -> Vec<CachedRepo> {
    let Ok(entries) = fs::read_dir(hub_cache) else {
        return Vec::new();
    };
    let mut out: Vec<CachedRepo> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let repo = super::shown(&name.strip_prefix("models--")?.replacen("--", "/", 1));
            let path = e.path();
            let mut problems = Vec::new();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                problems.push(format!("{} is not a folder", path.display()));
            }
            let mut refs = Vec::new();
            collect_refs(&path.join("refs"), "", 0, &mut refs, &mut problems);
            refs.sort();
            let mut snapshots: Vec<String> = fs::read_dir(path.join("snapshots"))
                .map(|d| {
                    d.flatten()
                        .map(|e| super::shown(&e.file_name().to_string_lossy()))
                        .collect()
                })
                .unwrap_or_default();
            snapshots.sort();
            let (mut bytes, mut partial_bytes) = (0, 0);
            for blob in fs::read_dir(path.join("blobs"))
                .into_iter()
                .flatten()
                .flatten()
            {
                // DirEntry::metadata does not follow links: a link's own size, never its target's.
                let len = blob.metadata().map(|m| m.len()).unwrap_or(0);
                if blob.file_name().to_string_lossy().ends_with(".incomplete") {
                    partial_bytes += len;
                } else {
                    bytes += len;
                }
            }
            Some(CachedRepo {
                repo,
                refs,
                snapshots,
                bytes,
                partial_bytes,
                path,
                problems,
            })
        })
        .collect();
    out.sort_by(|a, b| a.repo.cmp(&b.repo));
    out
}

/// Refs nest (`refs/pr/1`) but never deeply; a deeper tree is not the Hub's.
const MAX_REF_DEPTH: usize = 8;

fn collect_refs(
    dir: &Path,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, String)>,
    problems: &mut Vec<String>,
) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = format!("{prefix}{}", super::shown(&e.file_name().to_string_lossy()));
        // The entry's own type: a link to a folder is not descended into (no loops).
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && depth < MAX_REF_DEPTH {
            collect_refs(&e.path(), &format!("{name}/"), depth + 1, out, problems);
        } else if is_dir {
            problems.push(format!(
                "refs/{name}: nested deeper than {MAX_REF_DEPTH} levels"
            ));
        } else {
            match read_ref(&e.path()) {
                Ok(c) => out.push((name, c)),
                Err(err) => problems.push(format!("{err:#}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_links_point_into_blobs_and_refs_are_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let id = RepoId::parse("org/model").unwrap();
        let c = RepoCache::new(tmp.path(), &id);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        fs::create_dir_all(c.root.join("blobs")).unwrap();
        fs::write(c.blob("abc"), b"hello").unwrap();
        let link = c.link(commit, "sub/config.json", "abc").unwrap();
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from("../../../blobs/abc")
        );
        assert_eq!(fs::read(&link).unwrap(), b"hello");
        // Linking again (a second fetch) replaces the link.
        c.link(commit, "sub/config.json", "abc").unwrap();
        assert_eq!(c.commit_of("main"), None);
        c.set_ref("main", commit).unwrap();
        assert_eq!(c.commit_of("main").as_deref(), Some(commit));
        assert_eq!(c.commit_of(commit).as_deref(), Some(commit));
        let listed = list(tmp.path());
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].repo, "org/model");
        assert_eq!(listed[0].bytes, 5);
        assert_eq!(listed[0].refs, vec![("main".into(), commit.into())]);
    }

    #[test]
    fn file_names_from_the_server_stay_inside_the_snapshot() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "./a"] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        assert!(safe_relative("onnx/model.onnx").is_ok());
    }
}
