//! The Hub's HTTP API as `huggingface_hub` speaks it:
//! - `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true`: the commit (`sha`) and the
//!   file list (`siblings`, with sizes and, for LFS files, their sha256);
//! - `HEAD {endpoint}/{repo}/resolve/{commit}/{file}` without following redirects: the file's
//!   `X-Repo-Commit`, its `X-Linked-Etag` (sha256 of a large file, whose `Location` points at
//!   the storage server) or `ETag` (git blob id of a small one) and its size;
//! - `GET` of the same URL (redirects followed, the token only sent to the endpoint's host),
//!   with `Range: bytes=N-` to resume.
//!
//! Every failure is one line naming the repository or file and what to do.

use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::HubEnv;

/// Redirects followed for one file (the Hub uses one, to its storage server).
const MAX_REDIRECTS: usize = 5;
/// The API answer is a small JSON document; more is not a Hub.
const MAX_API_BYTES: u64 = 16 << 20;
/// The slowest transfer accepted, in bytes per second over a stall window: a server dripping
/// a byte a second (each read arriving before the read timeout) would otherwise never end.
pub const MIN_BYTES_PER_SEC: u64 = 4096;

pub struct Client {
    agent: ureq::Agent,
    pub endpoint: String,
    token: Option<String>,
    /// The read timeout, and the window over which [`MIN_BYTES_PER_SEC`] is measured.
    pub window: Duration,
}

/// A file of the repository listing.
#[derive(Debug, Clone, Deserialize)]
pub struct Sibling {
    pub rfilename: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default, rename = "blobId")]
    pub blob_id: Option<String>,
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Lfs {
    pub sha256: String,
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct RepoInfo {
    pub sha: String,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

/// What the server says about a file before its bytes are read.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// sha256 (64 hex, large files) or git blob id (40 hex); the blob's name in the cache.
    pub etag: String,
    pub size: Option<u64>,
    pub commit: Option<String>,
}

/// An open download: the response body and what it covers.
pub struct Body {
    pub reader: Box<dyn Read + Send + Sync>,
    /// Where the body starts in the file (the `Range` start the server honoured; 0 for a full
    /// answer to a range request, which then restarts the file).
    pub start: u64,
    /// Bytes the body holds, when the server says.
    pub len: Option<u64>,
}

/// Why a request failed, so callers can retry transport errors and report the rest.
#[derive(Debug)]
pub enum HttpError {
    Status {
        code: u16,
        hub_error: Option<String>,
        message: Option<String>,
    },
    Transport(String),
    /// The server answered, but with something not to follow or retry (a redirect loop, a
    /// redirect to another scheme): said as it is, never as "no network".
    Refused(String),
}

impl HttpError {
    pub fn is_transport(&self) -> bool {
        matches!(self, HttpError::Transport(_))
    }
}

fn percent_path(s: &str) -> String {
    // Revisions such as refs/pr/1 go in one path segment of the API URL.
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The proxy for `url`'s host from `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` (either case),
/// unless `NO_PROXY` names the host (suffix match, `*` for all).
fn proxy_for(url: &str) -> Option<String> {
    let env = |n: &str| {
        std::env::var(n)
            .or_else(|_| std::env::var(n.to_ascii_lowercase()))
            .ok()
            .filter(|v| !v.trim().is_empty())
    };
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?.to_ascii_lowercase();
    if let Some(no) = env("NO_PROXY") {
        for pat in no.split(',').map(|p| p.trim().to_ascii_lowercase()) {
            let pat = pat.trim_start_matches('.');
            let pat = pat.split(':').next().unwrap_or("");
            if pat == "*"
                || (!pat.is_empty() && (host == pat || host.ends_with(&format!(".{pat}"))))
            {
                return None;
            }
        }
    }
    let scheme_var = if parsed.scheme() == "https" {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    };
    env(scheme_var).or_else(|| env("ALL_PROXY"))
}

fn header_str(resp: &ureq::Response, name: &str) -> Option<String> {
    resp.header(name).map(|v| v.trim().to_string())
}

/// `"abc"` or `W/"abc"` -> `abc`.
fn strip_etag(v: &str) -> String {
    v.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase()
}

impl Client {
    pub fn new(env: &HubEnv) -> Result<Client> {
        if env.offline {
            bail!("HF_HUB_OFFLINE is set: not downloading (unset it, or use models already in the cache: virnucpro models list)");
        }
        url::Url::parse(&env.endpoint)
            .with_context(|| format!("HF_ENDPOINT {:?} is not a URL", env.endpoint))?;
        let (agent, window) = Self::agent(&env.endpoint)?;
        Ok(Client {
            agent,
            endpoint: env.endpoint.clone(),
            token: env.token.clone(),
            window,
        })
    }

    fn agent(url: &str) -> Result<(ureq::Agent, Duration)> {
        let read_secs = std::env::var("VIRNUCPRO_HTTP_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| (1..=3600).contains(s))
            .unwrap_or(60);
        let window = Duration::from_secs(read_secs);
        let mut b = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(window)
            .user_agent(&format!("virnucpro/{}", env!("CARGO_PKG_VERSION")));
        if let Some(p) = proxy_for(url) {
            let proxy = ureq::Proxy::new(&p)
                .map_err(|e| anyhow!("proxy {p:?} (from HTTPS_PROXY/HTTP_PROXY): {e}"))?;
            b = b.proxy(proxy);
        }
        Ok((b.build(), window))
    }

    /// The whole-request deadline for `bytes` expected: a stall window plus the time those
    /// bytes take at the slowest rate accepted. ureq applies it to the headers and the body,
    /// so a server dripping its headers ends too.
    pub fn deadline(&self, bytes: u64) -> Duration {
        self.window + Duration::from_secs(bytes / MIN_BYTES_PER_SEC)
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let mut req = self.agent.request(method, url);
        // The token goes to the Hub only, never to the storage server a file redirects to.
        if let Some(t) = &self.token {
            if same_host(url, &self.endpoint) {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
        }
        req
    }

    fn call(&self, req: ureq::Request) -> std::result::Result<ureq::Response, HttpError> {
        match req.call() {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, resp)) => {
                let hub_error = header_str(&resp, "X-Error-Code");
                let message = header_str(&resp, "X-Error-Message");
                Err(HttpError::Status {
                    code,
                    hub_error,
                    message,
                })
            }
            Err(ureq::Error::Transport(t)) => Err(HttpError::Transport(t.to_string())),
        }
    }

    /// The commit and file list of `repo` at `revision`.
    pub fn repo_info(&self, repo: &str, revision: &str) -> Result<RepoInfo> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}?blobs=true",
            self.endpoint,
            percent_path(revision)
        );
        let req = self
            .request("GET", &url)
            .timeout(self.deadline(MAX_API_BYTES));
        let resp = self
            .call(req)
            .map_err(|e| self.explain(e, repo, revision, None))?;
        if (300..400).contains(&resp.status()) {
            return Err(self.moved(&resp, repo, revision));
        }
        let mut text = String::new();
        resp.into_reader()
            .take(MAX_API_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| self.explain(HttpError::Transport(e.to_string()), repo, revision, None))?;
        let info: RepoInfo = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} did not answer like a Hugging Face Hub for {repo} (is HF_ENDPOINT right?)",
                self.endpoint
            )
        })?;
        let mut info = info;
        if !super::is_commit(&info.sha) {
            bail!(
                "{} gave {repo}@{revision} the commit {:?}, which is not a commit id",
                self.endpoint,
                super::shown(&info.sha)
            );
        }
        // The cache's snapshot folders are lower-case, as the Hub's commit ids.
        info.sha = info.sha.to_ascii_lowercase();
        Ok(info)
    }

    /// The API redirected: a renamed or moved repository (the Hub answers 307 to the new
    /// name's API URL). Not followed: the cache folder is named after the id, so the user
    /// should use the new id.
    fn moved(&self, resp: &ureq::Response, repo: &str, revision: &str) -> anyhow::Error {
        let code = resp.status();
        let loc = header_str(resp, "Location").unwrap_or_default();
        let new_repo = url::Url::parse(&self.endpoint)
            .and_then(|base| base.join(&loc))
            .ok()
            .and_then(|u| {
                let rest = u.path().strip_prefix("/api/models/")?.to_string();
                let (new, _) = rest.split_once("/revision/").unwrap_or((&rest, ""));
                super::RepoId::parse(new).map(|id| id.repo)
            });
        match new_repo {
            Some(new) if new != repo => anyhow!(
                "{repo} (revision {revision}): the repository was renamed or moved to {new} \
                 (HTTP {code} from {}); use {new} instead",
                self.endpoint
            ),
            _ => anyhow!(
                "{repo} (revision {revision}): {} answered the repository API with a redirect \
                 (HTTP {code}) to {:?}, which is not a model repository; is HF_ENDPOINT right?",
                self.endpoint,
                super::shown(&loc)
            ),
        }
    }

    pub fn resolve_url(&self, repo: &str, commit: &str, file: &str) -> String {
        format!("{}/{repo}/resolve/{commit}/{file}", self.endpoint)
    }

    /// The file's etag, size and commit, from a `HEAD` that does not follow the redirect (the
    /// Hub puts a large file's sha256 and size on the redirect itself).
    pub fn file_meta(&self, url: &str) -> std::result::Result<FileMeta, HttpError> {
        let resp = self.call(self.request("HEAD", url).timeout(self.deadline(0) * 2))?;
        let etag = header_str(&resp, "X-Linked-Etag")
            .or_else(|| header_str(&resp, "ETag"))
            .map(|e| strip_etag(&e))
            .unwrap_or_default();
        let size = header_str(&resp, "X-Linked-Size")
            .or_else(|| {
                (!(300..400).contains(&resp.status()))
                    .then(|| header_str(&resp, "Content-Length"))
                    .flatten()
            })
            .and_then(|s| s.parse().ok());
        Ok(FileMeta {
            etag,
            size,
            commit: header_str(&resp, "X-Repo-Commit").map(|c| c.to_ascii_lowercase()),
        })
    }

    /// `GET url` from byte `from` on, following redirects (http(s) only, never from https to
    /// http, no loops), the whole answer due within [`Client::deadline`] of `expect` bytes.
    pub fn get(&self, url: &str, from: u64, expect: u64) -> std::result::Result<Body, HttpError> {
        let mut url = url.to_string();
        let mut seen = vec![url.clone()];
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.request("GET", &url).timeout(self.deadline(expect));
            if from > 0 {
                req = req.set("Range", &format!("bytes={from}-"));
            }
            let resp = self.call(req)?;
            if (300..400).contains(&resp.status()) {
                url = next_hop(&url, header_str(&resp, "Location"), resp.status())?;
                if seen.contains(&url) {
                    return Err(HttpError::Refused(format!(
                        "the server redirects in a loop (back to {})",
                        super::shown(&url)
                    )));
                }
                seen.push(url.clone());
                continue;
            }
            let len: Option<u64> = header_str(&resp, "Content-Length").and_then(|s| s.parse().ok());
            let start = if resp.status() == 206 {
                // bytes START-END/TOTAL
                let range = header_str(&resp, "Content-Range").unwrap_or_default();
                let start = range
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.trim().parse().ok());
                match start {
                    Some(s) if s == from => s,
                    _ => {
                        return Err(HttpError::Transport(format!(
                            "the server answered the range request for byte {from} with {range:?}"
                        )))
                    }
                }
            } else {
                0
            };
            return Ok(Body {
                reader: resp.into_reader(),
                start,
                len,
            });
        }
        Err(HttpError::Refused(format!(
            "more than {MAX_REDIRECTS} redirects (last to {})",
            super::shown(&url)
        )))
    }

    /// One line for the user: what failed for `repo` (and `file`), and what to do.
    pub fn explain(
        &self,
        e: HttpError,
        repo: &str,
        revision: &str,
        file: Option<&str>,
    ) -> anyhow::Error {
        let what = match file {
            Some(f) => format!("{repo}: file {f} (revision {revision})"),
            None => format!("{repo} (revision {revision})"),
        };
        match e {
            HttpError::Transport(msg) => anyhow!(
                "{what}: cannot reach {} ({msg}); no network here? Fetch on a machine with \
                 internet (virnucpro models fetch) and copy its HF_HOME, or set HTTPS_PROXY / \
                 HF_ENDPOINT",
                self.endpoint
            ),
            HttpError::Refused(msg) => anyhow!(
                "{what}: {} answered, but {msg}; not followed, nothing downloaded; is \
                 HF_ENDPOINT a Hugging Face Hub (or a proxy rewriting its answers)?",
                self.endpoint
            ),
            HttpError::Status {
                code,
                hub_error,
                message,
            } => {
                let detail = message
                    .map(|m| format!(": {}", super::shown(&m)))
                    .unwrap_or_default();
                let kind = match hub_error.as_deref() {
                    Some("GatedRepo") => "gated (its terms must be accepted on its Hub page)",
                    _ => "gated or private",
                };
                match code {
                    401 | 403 if self.token.is_none() => anyhow!(
                        "{what}: access denied (HTTP {code}{detail}): the repository is {kind}; \
                         log in (`huggingface-cli login`, or set HF_TOKEN to a token of an account \
                         with access)"
                    ),
                    401 | 403 => anyhow!(
                        "{what}: access denied (HTTP {code}{detail}): the repository is {kind} and \
                         your token (HF_TOKEN or $HF_HOME/token) does not give access; accept its \
                         terms on the Hub page with the token's account, or use another token"
                    ),
                    404 if file.is_some() && hub_error.as_deref() == Some("EntryNotFound") => {
                        anyhow!("{what}: not in the repository (HTTP 404)")
                    }
                    404 if file.is_some() => {
                        anyhow!("{what}: not found (HTTP 404{detail}) at {}", self.endpoint)
                    }
                    404 => anyhow!(
                        "{what}: no such model repository or revision at {} (HTTP 404{detail}); \
                         check the id (org/name) and --revision",
                        self.endpoint
                    ),
                    _ => anyhow!(
                        "{what}: {} answered HTTP {code}{detail}; try again later",
                        self.endpoint
                    ),
                }
            }
        }
    }
}

/// A plain client for any URL (the classifiers): no token, proxies as for the Hub.
pub fn plain(url: &str) -> Result<Client> {
    let (agent, window) = Client::agent(url)?;
    Ok(Client {
        agent,
        endpoint: url.to_string(),
        token: None,
        window,
    })
}

/// Where a redirect from `from` leads, if it may be followed: an http(s) URL (a `file://` or
/// `gopher://` Location is refused, as is a downgrade from https to http).
fn next_hop(from: &str, location: Option<String>, code: u16) -> Result<String, HttpError> {
    let loc = location.ok_or_else(|| {
        HttpError::Refused(format!("redirected (HTTP {code}) without saying where"))
    })?;
    let base = url::Url::parse(from).map_err(|e| HttpError::Refused(e.to_string()))?;
    let next = base.join(&loc).map_err(|e| {
        HttpError::Refused(format!(
            "redirected to {:?}, which is not a URL ({e})",
            super::shown(&loc)
        ))
    })?;
    match (base.scheme(), next.scheme()) {
        ("https", "https") | ("http", "http") | ("http", "https") => Ok(next.to_string()),
        ("https", "http") => Err(HttpError::Refused(format!(
            "redirected from https to plain http ({})",
            super::shown(next.as_str())
        ))),
        (_, other) => Err(HttpError::Refused(format!(
            "redirected to a {other}: URL ({}), which is never followed",
            super::shown(next.as_str())
        ))),
    }
}

fn same_host(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_revisions_are_normalised() {
        assert_eq!(strip_etag("W/\"ABC\""), "abc");
        assert_eq!(strip_etag("\"0123\""), "0123");
        assert_eq!(percent_path("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(percent_path("main"), "main");
    }

    #[test]
    fn redirects_stay_on_http_and_never_downgrade() {
        let hop = |from: &str, to: &str| next_hop(from, Some(to.to_string()), 302);
        assert_eq!(
            hop("https://hub/a/b", "/lfs/x").unwrap(),
            "https://hub/lfs/x"
        );
        assert_eq!(
            hop("http://127.0.0.1:9/a", "https://cdn/x").unwrap(),
            "https://cdn/x"
        );
        for (to, needle) in [
            ("file:///etc/passwd", "file: URL"),
            ("gopher://x/1", "gopher: URL"),
            ("http://cdn/x", "https to plain http"),
        ] {
            match hop("https://hub/a", to) {
                Err(HttpError::Refused(m)) => assert!(m.contains(needle), "{to}: {m}"),
                other => panic!("{to}: {:?}", other.map(|_| ())),
            }
        }
        assert!(matches!(
            next_hop("https://hub/a", None, 307),
            Err(HttpError::Refused(_))
        ));
    }

    #[test]
    fn the_token_stays_on_the_hub() {
        assert!(same_host(
            "https://huggingface.co/a/b/resolve/x/f",
            "https://huggingface.co"
        ));
        assert!(!same_host(
            "https://cdn-lfs.hf.co/x",
            "https://huggingface.co"
        ));
        assert!(!same_host("http://127.0.0.1:81/x", "http://127.0.0.1:80"));
    }
}
