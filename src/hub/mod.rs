//! The published models in one command: `virnucpro models fetch` downloads ESM-2, DNABERT-S and
//! the VirNucPro classifiers, `virnucpro models list` shows what is cached, and every model flag
//! (`--esm`, `--dnabert`, `--model`, `--classifier`, the TOML config) takes a local path or a
//! Hub id (`org/name`, `org/name@revision`; for classifiers `500`, `300` or a URL).
//!
//! Models live in the Hugging Face cache layout (`$HF_HUB_CACHE`, default `$HF_HOME/hub`,
//! default `~/.cache/huggingface/hub`): `models--{org}--{name}/blobs/<etag>`,
//! `snapshots/<commit>/<file>` (relative links into `blobs`) and `refs/<revision>` (the commit),
//! with `.locks/models--{org}--{name}/<etag>.lock` taken with `flock` as `huggingface_hub` does,
//! so that files Python tools downloaded are reused and ours are reused by them. Classifiers
//! are not on the Hub: they go to a cache of ours beside it (`$HF_HOME/virnucpro/classifiers`).
//!
//! Why a small client on `ureq` rather than the `hf-hub` crate: we need (1) the sha256 (or git
//! blob id) checked while the bytes arrive and the blob renamed into place only after it
//! matches, so a corrupt or partial file is never visible as cached; (2) `Range` resume of the
//! same `.incomplete` file after a dropped connection *or a killed process*; (3) progress as log
//! lines when stderr is no terminal (Nextflow, SLURM); (4) the error for each failure mode in one
//! line (gated/401/403: log in; 404: name the repo and file; no network; disk full, checked
//! before the download starts). `hf-hub`'s documented sync API offers none of these as hooks
//! (it owns the download loop and its progress bar), and it would bring its own HTTP stack
//! versions. The Hub protocol we need is three requests (the revision API, `HEAD` and `GET`
//! of `resolve/`), so ~a few hundred lines on `ureq` 2 (already in Cargo.lock, rustls so no
//! system OpenSSL in containers) are simpler to trust than adapting a crate around them.
//! Proxies: `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` with `NO_PROXY` ([`client`]).

pub mod cache;
pub mod classifier;
pub mod client;
pub mod command;
pub mod download;
pub mod resolve;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The ESM-2 model VirNucPro was trained with (`esm.pretrained.esm2_t36_3B_UR50D()`).
pub const DEFAULT_ESM: &str = "facebook/esm2_t36_3B_UR50D";
/// The DNABERT-S model VirNucPro was trained with (`AutoModel.from_pretrained(...)`).
pub const DEFAULT_DNABERT: &str = "zhihan1996/DNABERT-S";
/// What a Hub id without `@revision` means, as in `huggingface_hub`.
pub const DEFAULT_REVISION: &str = "main";

/// Which encoder a Hub repository holds: what its loaders need and which flag names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Dnabert,
    Esm,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Dnabert => "DNABERT-S",
            ModelKind::Esm => "ESM-2",
        }
    }

    /// The `models fetch` flag that fetches this kind.
    pub fn flag(self) -> &'static str {
        match self {
            ModelKind::Dnabert => "--dnabert",
            ModelKind::Esm => "--esm",
        }
    }
}

/// Where models come from and go to, read from the environment `huggingface_hub` reads.
#[derive(Debug, Clone)]
pub struct HubEnv {
    /// `HF_ENDPOINT` (default `https://huggingface.co`), without a trailing `/`.
    pub endpoint: String,
    /// `HF_HOME` (default `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`).
    pub home: PathBuf,
    /// `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`), default `$HF_HOME/hub`.
    pub hub_cache: PathBuf,
    /// `HF_TOKEN`, else the file `HF_TOKEN_PATH` (default `$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1`: never touch the network.
    pub offline: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `huggingface_hub`'s reading of a boolean variable.
fn truthy(name: &str) -> bool {
    var(name).is_some_and(|v| {
        ["1", "on", "yes", "true"].contains(&v.trim().to_ascii_lowercase().as_str())
    })
}

impl HubEnv {
    pub fn from_env() -> Result<HubEnv> {
        let home = match var("HF_HOME") {
            Some(h) => PathBuf::from(h),
            None => {
                let cache = match var("XDG_CACHE_HOME") {
                    Some(x) => PathBuf::from(x),
                    None => match var("HOME") {
                        Some(h) => PathBuf::from(h).join(".cache"),
                        None => bail!(
                            "cannot find the Hugging Face cache: neither HF_HOME nor HOME is set"
                        ),
                    },
                };
                cache.join("huggingface")
            }
        };
        let hub_cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token = match var("HF_TOKEN") {
            Some(t) => Some(t.trim().to_string()),
            None => {
                let path = var("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home.join("token"));
                // Bounded, a regular file: a token "file" linked to /dev/zero must not hang.
                read_small(&path, 64 << 10)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            }
        };
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| "https://huggingface.co".into())
            .trim()
            .trim_end_matches('/')
            .to_string();
        Ok(HubEnv {
            endpoint,
            home,
            hub_cache,
            token,
            offline: truthy("HF_HUB_OFFLINE"),
        })
    }

    /// Our own cache beside the Hub's (the classifiers, which are not on the Hub).
    pub fn own_cache(&self) -> PathBuf {
        self.home.join("virnucpro")
    }
}

/// A Hub repository id with its revision: `org/name` or `org/name@revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub repo: String,
    pub revision: String,
}

impl RepoId {
    /// `org/name[@revision]` with the Hub's characters, or `None` for anything else (a path).
    pub fn parse(s: &str) -> Option<RepoId> {
        Self::parse_explained(s).ok().flatten()
    }

    /// As [`RepoId::parse`], but a value shaped like a Hub id (`org/name@…`, or `org/name`
    /// with the Hub's characters) that breaks the Hub's rules is an error saying which rule,
    /// rather than a path that then "does not exist". `Ok(None)`: not an id at all.
    pub fn parse_explained(s: &str) -> Result<Option<RepoId>> {
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) => (r, Some(rev)),
            None => (s, None),
        };
        let Some((org, name)) = repo.split_once('/') else {
            return Ok(None);
        };
        // `./x`, `../x`: relative paths, never ids.
        let hub_chars = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !hub_chars(org) || !hub_chars(name) {
            return Ok(None);
        }
        for part in [org, name] {
            if let Some(why) = name_problem(part) {
                bail!("{}: {:?} {why} (the Hub's rule for names)", shown(s), part);
            }
        }
        let revision = match revision {
            Some(r) => {
                if let Some(why) = revision_problem(r) {
                    bail!(
                        "{}: the revision {:?} {why}; give a branch, tag or commit id (e.g. \
                         {repo}@main)",
                        shown(s),
                        shown(r)
                    );
                }
                // Commit ids are lower-case hex on the Hub and in the cache's folder names.
                if is_commit(r) {
                    r.to_ascii_lowercase()
                } else {
                    r.to_string()
                }
            }
            None => DEFAULT_REVISION.to_string(),
        };
        Ok(Some(RepoId {
            repo: repo.to_string(),
            revision,
        }))
    }

    /// `models--org--name`, the repository's folder in the cache (one-to-one because the Hub
    /// forbids `--` inside names, and so do we: `a--b/c` and `a/b--c` would share a folder).
    pub fn folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }

    /// A 40-hex revision is a commit: no ref to follow.
    pub fn is_commit(&self) -> bool {
        is_commit(&self.revision)
    }
}

/// Why `part` (an organisation or a repository name of the Hub's characters) is not a name the
/// Hub allows (`huggingface_hub`'s `validate_repo_id`), or `None`.
fn name_problem(part: &str) -> Option<&'static str> {
    if part.len() > 96 {
        Some("is longer than 96 characters")
    } else if part.contains("--") || part.contains("..") {
        Some("contains '--' or '..'")
    } else if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        Some("starts or ends with '-' or '.'")
    } else {
        None
    }
}

/// Why `r` cannot be a branch, tag or commit (git's rules for ref names, restricted to the
/// characters the cache's `refs/` files can hold), or `None`. `@.` or `@main/` would otherwise
/// reach the server and the cache's file names.
pub fn revision_problem(r: &str) -> Option<&'static str> {
    if r.is_empty() {
        Some("is empty")
    } else if r.len() > 256 {
        Some("is longer than 256 characters")
    } else if !r
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        Some("has characters no branch, tag or commit has")
    } else if r.split('/').any(str::is_empty) {
        Some("has an empty part (a leading, trailing or doubled '/')")
    } else if r
        .split('/')
        .any(|p| p.starts_with('.') || p.ends_with(".lock"))
    {
        Some("has a part that starts with '.' or ends with '.lock'")
    } else if r.ends_with('.') || r.contains("..") {
        Some("ends with '.' or contains '..'")
    } else {
        None
    }
}

/// A small text file (of the cache, the token) read as untrusted: a regular file (a link to `/dev/zero`, a
/// fifo or a link loop is an error, not a hang), at most `max` bytes, UTF-8.
pub fn read_small(path: &std::path::Path, max: u64) -> Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", shown_path(path)))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", shown_path(path));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", shown_path(path)))?;
    if bytes.len() as u64 > max {
        bail!("{} is larger than {max} bytes", shown_path(path));
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not text", shown_path(path)))
}

/// [`shown`] for a path.
pub fn shown_path(p: &std::path::Path) -> String {
    shown(&p.display().to_string())
}

/// A name that came from a server or from disk (file names, etags, error messages, cache
/// folders), made safe to print in a one-line message: control characters (newlines, terminal
/// escapes) and bidirectional-formatting characters are written as escapes.
pub fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.revision == DEFAULT_REVISION {
            write!(f, "{}", self.repo)
        } else {
            write!(f, "{}@{}", self.repo, self.revision)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        let id = RepoId::parse("facebook/esm2_t36_3B_UR50D").unwrap();
        assert_eq!(id.revision, "main");
        assert_eq!(id.folder(), "models--facebook--esm2_t36_3B_UR50D");
        let id = RepoId::parse("zhihan1996/DNABERT-S@refs/pr/3").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("zhihan1996/DNABERT-S", "refs/pr/3")
        );
        assert_eq!(id.to_string(), "zhihan1996/DNABERT-S@refs/pr/3");
        for path in [
            "/models/esm",
            "./esm/x",
            "../esm/x",
            "a/b/c",
            "esm",
            "a/",
            "/b",
            "a/b@",
            "a/b@../x",
            "a b/c",
            "../x",
        ] {
            assert_eq!(RepoId::parse(path), None, "{path}");
        }
        assert!(
            RepoId::parse("a/b@0123456789abcdef0123456789abcdef01234567")
                .unwrap()
                .is_commit()
        );
    }

    #[test]
    fn ids_that_break_the_hubs_rules_say_which_rule() {
        for (bad, why) in [
            ("a--b/c", "'--'"),
            ("a/b--c", "'--'"),
            ("a/b-", "ends with"),
            ("a/b@.", "starts with '.'"),
            ("a/b@main/", "empty part"),
            ("a/b@refs//pr", "empty part"),
            ("a/b@v1.lock", ".lock"),
            ("a/b@v1.", "ends with '.'"),
            ("a/b@", "is empty"),
            ("a/b@x\ny", "characters"),
        ] {
            let e = RepoId::parse_explained(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: {e}");
            assert_eq!(RepoId::parse(bad), None, "{bad}");
        }
        // Paths are not ids, and not errors.
        for path in ["/models/esm", "./esm/x", "esm", "a b/c", "dir/my model@2"] {
            assert!(RepoId::parse_explained(path).unwrap().is_none(), "{path}");
        }
        let upper = RepoId::parse("a/b@0123456789ABCDEF0123456789ABCDEF01234567").unwrap();
        assert_eq!(upper.revision, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(shown("x\n\u{1b}[2Jy\u{202e}"), "x\\n\\u{1b}[2Jy\\u{202e}");
    }
}
