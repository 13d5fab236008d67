//! VirNucPro's classifiers (`500_model.pth`, `300_model.pth`) are files in the original GitHub
//! repository, not on the Hub. They are fetched from one pinned commit and checked against
//! their git blob ids there (the only checksum the repository publishes; no sha256 is known
//! for them), into our cache beside the Hub's: `$HF_HOME/virnucpro/classifiers/<key>/<file>`,
//! with `<file>.source` recording the URL and the sha256 of what was downloaded.
//!
//! `--classifier URL` downloads any URL the same way, checked against a `#sha256=<hex>` suffix
//! when given, otherwise its sha256 is only recorded.
//!
//! A cached file is checked again every time it is used: against its pin (the git blob id of a
//! published one, the `#sha256=` of a URL), else against the sha256 recorded when it was
//! downloaded. A pinned URL has its own cache folder (the key covers the pin), so a file
//! fetched once without a pin is never taken for the pinned one.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sha2::Digest as _;

use super::client::{self, HttpError};
use super::download::{download, git_sha1, Checksum, Target};
use super::HubEnv;

/// The original repository at the commit the classifiers are taken from (the newest commit,
/// 2025-04-01; both files are unchanged since they were added on 2024-11-17).
pub const ORIGINAL_REPO: &str = "Li-Jing-1997/VirNucPro";
pub const ORIGINAL_COMMIT: &str = "0f93f2755a7ea1acd3ff1bcf182892f960ef3326";
/// Where the files are served; `VIRNUCPRO_CLASSIFIER_BASE_URL` replaces it (a mirror, or the
/// tests' local server). `{repo}` and `{commit}` are filled in.
pub const BASE_URL: &str = "https://raw.githubusercontent.com/{repo}/{commit}";

/// The published classifiers: (name on the command line, file, git blob id at the commit).
pub const PUBLISHED: [(&str, &str, &str); 2] = [
    (
        "500",
        "500_model.pth",
        "fc35d5ef9f1f4564eea7036f34f4f8ec6000d33d",
    ),
    (
        "300",
        "300_model.pth",
        "a0b5b85e7c1e44f00cde146d091beb82b2c8e855",
    ),
];

/// The published classifiers are MLPs of a few MB; a URL streaming more is not one.
pub const MAX_CLASSIFIER_BYTES: u64 = 1 << 30;

/// A classifier given on the command line: a published one or a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub url: String,
    /// The cache folder's name: `500`, `300`, or `url-<hash of the URL and its pin>`.
    pub key: String,
    pub file: String,
    pub checksum: Checksum,
}

fn base_url() -> String {
    std::env::var("VIRNUCPRO_CLASSIFIER_BASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| BASE_URL.to_string())
        .replace("{repo}", ORIGINAL_REPO)
        .replace("{commit}", ORIGINAL_COMMIT)
        .trim_end_matches('/')
        .to_string()
}

impl Remote {
    /// `500`, `300`, or an `http(s)://` URL (with an optional `#sha256=<hex>`); `None` for
    /// anything else (a path).
    pub fn parse(spec: &str) -> Result<Option<Remote>> {
        if let Some((name, file, blob)) = PUBLISHED.iter().find(|p| p.0 == spec) {
            return Ok(Some(Remote {
                url: format!("{}/{file}", base_url()),
                key: name.to_string(),
                file: file.to_string(),
                checksum: Checksum::GitSha1(blob.to_string()),
            }));
        }
        if !(spec.starts_with("https://") || spec.starts_with("http://")) {
            return Ok(None);
        }
        let (url, fragment) = match spec.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (spec, None),
        };
        let checksum = match fragment {
            None => Checksum::Unknown,
            Some(f) => match f.strip_prefix("sha256=") {
                Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    Checksum::Sha256(h.to_ascii_lowercase())
                }
                _ => {
                    bail!("--classifier {spec}: the part after '#' must be sha256=<64 hex digits>")
                }
            },
        };
        let parsed =
            url::Url::parse(url).with_context(|| format!("--classifier {spec} is not a URL"))?;
        let file = parsed
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|f| {
                !f.is_empty()
                    && f.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && !f.starts_with('.')
            })
            .unwrap_or("classifier.pth")
            .to_string();
        // The pin is part of the key: an unpinned fetch of the same URL (perhaps of a tampered
        // file) must not stand in for the pinned one.
        let keyed = match &checksum {
            Checksum::Sha256(h) => format!("{url}#sha256={h}"),
            _ => url.to_string(),
        };
        let digest = sha2::Sha256::digest(keyed.as_bytes());
        let key = format!("url-{}", &format!("{digest:x}")[..16]);
        Ok(Some(Remote {
            url: url.to_string(),
            key,
            file,
            checksum,
        }))
    }

    /// Where the verified file is (or will be) cached.
    pub fn path(&self, env: &HubEnv) -> PathBuf {
        env.own_cache()
            .join("classifiers")
            .join(&self.key)
            .join(&self.file)
    }

    /// The cached file, checked against its pin (or the sha256 recorded when it was fetched)
    /// every time; `None` when not cached. A mismatch is an error: the file changed on disk.
    pub fn cached(&self, env: &HubEnv) -> Result<Option<PathBuf>> {
        let dest = self.path(env);
        if !dest.is_file() {
            return Ok(None);
        }
        let recorded = read_source(&dest)?;
        let (kind, want, got) = match &self.checksum {
            Checksum::Sha256(want) => (
                "sha256",
                want.clone(),
                crate::io::fingerprint::sha256_file(&dest)?,
            ),
            Checksum::GitSha1(want) => ("git blob id", want.clone(), git_sha1(&dest)?),
            Checksum::Unknown => match recorded.sha256 {
                Some(want) => (
                    "sha256 recorded at download",
                    want,
                    crate::io::fingerprint::sha256_file(&dest)?,
                ),
                None => bail!(
                    "classifier {}: the cached {} has no record of what was downloaded ({} \
                     missing); delete {} and fetch it again",
                    self.url,
                    dest.display(),
                    source_path(&dest).display(),
                    dest.parent().unwrap().display()
                ),
            },
        };
        if want != got {
            bail!(
                "classifier {}: the cached {} does not match its {kind} (expected {want}, got \
                 {got}): it changed after it was fetched; delete {} and fetch it again (virnucpro \
                 models fetch --classifier ...)",
                self.url,
                dest.display(),
                dest.parent().unwrap().display()
            );
        }
        Ok(Some(dest))
    }

    /// Download into the cache unless already there; returns the cached file.
    pub fn fetch(&self, env: &HubEnv, quiet: bool) -> Result<PathBuf> {
        if let Some(dest) = self.cached(env)? {
            return Ok(dest);
        }
        let dest = self.path(env);
        if env.offline {
            bail!(
                "classifier {} is not cached and HF_HUB_OFFLINE is set: fetch it where there is \
                 network (virnucpro models fetch --classifier {})",
                self.url,
                self.key
            );
        }
        let dir = dest.parent().unwrap();
        let _lock = crate::runtime::lockfile::wait_for(&dir.join(".lock"), |who| {
            tracing::info!(
                "download: {}: another process ({who}) is downloading it; waiting",
                self.file
            )
        })?;
        if let Some(dest) = self.cached(env)? {
            return Ok(dest);
        }
        let client = client::plain(&self.url)?;
        let explain = |e: HttpError| match e {
            HttpError::Status { code: 404, .. } => anyhow::anyhow!(
                "classifier {}: not found (HTTP 404); check the URL",
                self.url
            ),
            HttpError::Status { code, .. } => {
                anyhow::anyhow!("classifier {}: the server answered HTTP {code}", self.url)
            }
            HttpError::Refused(m) => anyhow::anyhow!(
                "classifier {}: the server answered, but {m}; not followed, nothing downloaded",
                self.url
            ),
            HttpError::Transport(m) => anyhow::anyhow!(
                "classifier {}: cannot download ({m}); no network here? Fetch it on a machine \
                 with internet (virnucpro models fetch) and copy its HF_HOME",
                self.url
            ),
        };
        let target = Target {
            url: self.url.clone(),
            label: format!("classifier {}", self.file),
            dest: dest.clone(),
            size: None,
            checksum: self.checksum.clone(),
            limit: MAX_CLASSIFIER_BYTES,
        };
        let sha256 = download(&client, &target, quiet, &explain)?;
        let verified = match &self.checksum {
            Checksum::Sha256(_) => "sha256 verified",
            Checksum::GitSha1(_) => "git blob id verified",
            Checksum::Unknown => "not verified: no checksum given (add #sha256=<hex> to the URL)",
        };
        crate::io::output::write_atomic(
            &source_path(&dest),
            format!("url\t{}\nsha256\t{sha256}\ncheck\t{verified}\n", self.url).as_bytes(),
        )?;
        tracing::info!(
            "download: classifier {}: sha256 {sha256} ({verified})",
            self.file
        );
        Ok(dest)
    }
}

/// What `<file>.source` says about a cached classifier.
struct Source {
    url: Option<String>,
    sha256: Option<String>,
}

fn source_path(file: &std::path::Path) -> PathBuf {
    let mut name = file.file_name().unwrap().to_os_string();
    name.push(".source");
    file.with_file_name(name)
}

/// `<file>.source`, read as an untrusted file (bounded, a regular file); missing is empty.
fn read_source(file: &std::path::Path) -> Result<Source> {
    let path = source_path(file);
    let text = match super::read_small(&path, 64 << 10) {
        Ok(t) => t,
        Err(_) if !path.exists() && path.symlink_metadata().is_err() => String::new(),
        Err(e) => return Err(e),
    };
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}\t")))
            .map(str::to_string)
    };
    Ok(Source {
        url: field("url"),
        sha256: field("sha256").filter(|h| h.len() == 64),
    })
}

/// A cached classifier, for `models list`.
pub struct Listed {
    pub key: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// The sha256 recorded at download ("" if unknown).
    pub sha256: String,
    pub url: String,
    /// What is wrong with the entry, if anything (one line).
    pub problem: Option<String>,
}

/// The cached classifiers, for `models list`.
pub fn list(env: &HubEnv) -> Vec<Listed> {
    let mut out = Vec::new();
    let root = env.own_cache().join("classifiers");
    for dir in fs::read_dir(&root).into_iter().flatten().flatten() {
        if !dir.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for f in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name.ends_with(".source") || name.ends_with(".incomplete") {
                continue;
            }
            let (source, problem) = match read_source(&f.path()) {
                Ok(s) => (s, None),
                Err(e) => (
                    Source {
                        url: None,
                        sha256: None,
                    },
                    Some(format!("{e:#}")),
                ),
            };
            out.push(Listed {
                key: super::shown(&dir.file_name().to_string_lossy()),
                path: f.path(),
                bytes: f.metadata().map(|m| m.len()).unwrap_or(0),
                sha256: super::shown(&source.sha256.unwrap_or_default()),
                url: super::shown(&source.url.unwrap_or_default()),
                problem,
            });
        }
    }
    out.sort_by(|a, b| (&a.key, &a.path).cmp(&(&b.key, &b.path)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_specs() {
        let r = Remote::parse("500").unwrap().unwrap();
        assert_eq!(r.file, "500_model.pth");
        assert!(
            r.url.ends_with(&format!("{ORIGINAL_COMMIT}/500_model.pth"))
                || std::env::var_os("VIRNUCPRO_CLASSIFIER_BASE_URL").is_some()
        );
        assert_eq!(r.key, "500");
        let sha = "ab".repeat(32);
        let r = Remote::parse(&format!("https://example.org/m/my_model.pth#sha256={sha}"))
            .unwrap()
            .unwrap();
        assert_eq!(r.file, "my_model.pth");
        assert_eq!(r.checksum, Checksum::Sha256(sha));
        assert_eq!(r.url, "https://example.org/m/my_model.pth");
        assert!(r.key.starts_with("url-"));
        assert!(Remote::parse("https://example.org/x#md5=1").is_err());
        assert_eq!(Remote::parse("models/500_model.pth").unwrap(), None);
        assert_eq!(Remote::parse("400").unwrap(), None);
    }
}
