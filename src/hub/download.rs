//! Downloads users can trust: one file at a time into `<blob>.incomplete`, resumed with `Range`
//! after a dropped connection (retried here) or a killed process (the next fetch), checked
//! against the server's sha256 (or git blob id) before it is renamed to its cached name, with a
//! progress bar on a terminal and log lines elsewhere. Then a model repository: the files the
//! loaders need, linked into a snapshot, the revision recorded last.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sha2::Digest as _;

use super::cache::{self, RepoCache};
use super::client::{Client, HttpError, Sibling, MIN_BYTES_PER_SEC};
use super::{shown, HubEnv, ModelKind, RepoId};
use crate::runtime::progress::{human_bytes, Progress};
use crate::weights::HF_WEIGHT_FILES;

/// Transport failures retried (with `Range`) before giving up on a file.
const RETRIES: u32 = 5;
/// Kept free beyond a download's own size, so a fetch never fills the disk to the last byte.
const DISK_MARGIN: u64 = 64 << 20;
/// Free space is checked again after every this many bytes written (another writer, or a size
/// the server did not announce, may use it up while the download runs).
const SPACE_CHECK_EVERY: u64 = 32 << 20;
/// The most a Hub file may be when the server announces no size: the small files the loaders
/// read (configs, tokenizers, shard indexes) are kilobytes to a few megabytes; weights are
/// bounded by the largest ESM-2 (15B parameters in f32, 60 GB) with room to spare.
pub const MAX_SIDE_FILE_BYTES: u64 = 64 << 20;
pub const MAX_WEIGHTS_BYTES: u64 = 200_000_000_000;

/// What a file's bytes must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Sha256(String),
    /// A git blob id: sha1 of `blob <len>\0<bytes>` (the Hub's small files, GitHub files).
    GitSha1(String),
    /// Nothing published: the sha256 is recorded, not checked.
    Unknown,
}

impl Checksum {
    /// From an etag: 64 hex digits are a sha256, 40 a git blob id.
    pub fn from_etag(etag: &str) -> Checksum {
        let hex = etag.bytes().all(|b| b.is_ascii_hexdigit());
        match etag.len() {
            64 if hex => Checksum::Sha256(etag.to_ascii_lowercase()),
            40 if hex => Checksum::GitSha1(etag.to_ascii_lowercase()),
            _ => Checksum::Unknown,
        }
    }
}

/// One file to download.
pub struct Target {
    pub url: String,
    /// `org/name: file` or the classifier's name, for messages.
    pub label: String,
    /// The verified file's final path; `<dest>.incomplete` holds the bytes until then.
    pub dest: PathBuf,
    pub size: Option<u64>,
    pub checksum: Checksum,
    /// Bytes accepted when the size is not announced (a server streaming for ever must not fill
    /// the disk).
    pub limit: u64,
}

impl Target {
    pub fn partial(&self) -> PathBuf {
        let mut name = self.dest.file_name().unwrap().to_os_string();
        name.push(".incomplete");
        self.dest.with_file_name(name)
    }
}

/// A write error in one line, disk full said plainly.
fn write_error(e: std::io::Error, path: &Path) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        anyhow!(
            "disk full (or over quota) writing {}: free space there or point HF_HOME / \
             HF_HUB_CACHE at a larger disk; the partial download is kept and resumes",
            path.display()
        )
    } else {
        anyhow!("writing {}: {e}", path.display())
    }
}

/// The sha256 of the first `len` bytes of `file`.
fn hash_prefix(file: &mut File, len: u64) -> Result<sha2::Sha256> {
    let mut h = sha2::Sha256::new();
    file.seek(SeekFrom::Start(0))?;
    let mut take = file.take(len);
    std::io::copy(&mut take, &mut h)?;
    Ok(h)
}

pub fn git_sha1(path: &Path) -> Result<String> {
    use sha1::Digest as _;
    let len = fs::metadata(path)?.len();
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {len}\0").as_bytes());
    std::io::copy(&mut File::open(path)?, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

/// Download `t` (resuming its `.incomplete`), verify it, and rename it to `t.dest`. Returns the
/// file's sha256. `explain` turns an HTTP failure into the user's one-line error.
pub fn download(
    client: &Client,
    t: &Target,
    quiet: bool,
    explain: &dyn Fn(HttpError) -> anyhow::Error,
) -> Result<String> {
    let dir = t.dest.parent().expect("a file in a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    check_space_before(t, dir)?;
    let mut part = Partial::open(t)?;
    let mut meter = Progress::bytes(format!("download: {}", t.label), t.size, part.have, quiet);
    let mut watch = SpaceWatch::new(part.have);
    let mut failures = 0u32;
    while t.size != Some(part.have) {
        let most = t.size.unwrap_or(t.limit);
        let mut body = match client.get(&t.url, part.have, most.saturating_sub(part.have)) {
            Ok(b) => b,
            Err(e) if e.is_transport() && failures < RETRIES => {
                failures += 1;
                retry_pause(&t.label, failures, &format!("{e:?}"));
                continue;
            }
            // A range past the end: what is on disk is not a prefix of this file.
            Err(HttpError::Status { code: 416, .. }) if part.have > 0 => {
                part.restart()?;
                continue;
            }
            Err(e) => {
                meter.finish();
                return Err(explain(e));
            }
        };
        if body.start != part.have {
            // A full answer to a range request: start over.
            part.restart()?;
        }
        let expected_end = body.len.map(|l| part.have + l);
        let dropped = receive(client, t, &mut body, &mut part, &mut meter, &mut watch)?;
        let short =
            expected_end.is_some_and(|e| part.have < e) || t.size.is_some_and(|s| part.have < s);
        if dropped.is_none() && !short {
            break;
        }
        part.flush()?;
        let why = dropped.unwrap_or_else(|| "connection closed early".into());
        if failures >= RETRIES {
            meter.finish();
            bail!(
                "{}: the connection kept dropping ({} tries, {} of {} received; {why}); run the \
                 same command again to resume",
                t.label,
                RETRIES + 1,
                human_bytes(part.have),
                t.size.map(human_bytes).unwrap_or_else(|| "?".into()),
            );
        }
        failures += 1;
        retry_pause(&t.label, failures, &why);
    }
    meter.finish();
    part.verify_and_place(t)
}

/// Before anything is created, so that a refused download leaves nothing behind: room for what
/// is still to come plus the margin (only the margin when the size is not announced; the rest is
/// checked as data arrives).
fn check_space_before(t: &Target, dir: &Path) -> Result<()> {
    let on_disk = fs::metadata(t.partial()).map(|m| m.len()).unwrap_or(0);
    let need = t
        .size
        .map(|size| size.saturating_sub(if on_disk > size { 0 } else { on_disk }))
        .unwrap_or(0);
    if let Some(free) = free_now(dir, 0) {
        if free < need.saturating_add(DISK_MARGIN) {
            bail!(
                "not enough disk space for {} in {}: it needs {} more (and {} kept free), {} \
                 free; free space there or point HF_HOME / HF_HUB_CACHE at a larger disk",
                t.label,
                dir.display(),
                human_bytes(need),
                human_bytes(DISK_MARGIN),
                human_bytes(free)
            );
        }
    }
    Ok(())
}

/// The `.incomplete` file of a download: its bytes so far and their running sha256.
struct Partial {
    file: File,
    path: PathBuf,
    have: u64,
    hasher: sha2::Sha256,
}

impl Partial {
    /// Open (or resume) `t`'s partial file; one longer than the announced size starts over.
    fn open(t: &Target) -> Result<Partial> {
        let path = t.partial();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut have = file.metadata()?.len();
        if t.size.is_some_and(|s| have > s) {
            have = 0;
            file.set_len(0)?;
        }
        if have > 0 {
            tracing::info!("download: {}: resuming at {}", t.label, human_bytes(have));
        }
        let hasher = hash_prefix(&mut file, have)?;
        file.seek(SeekFrom::Start(have))?;
        Ok(Partial {
            file,
            path,
            have,
            hasher,
        })
    }

    fn restart(&mut self) -> Result<()> {
        self.have = 0;
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.hasher = sha2::Sha256::new();
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| write_error(e, &self.path))?;
        self.hasher.update(bytes);
        self.have += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| write_error(e, &self.path))
    }

    /// Nothing of it is kept (it cannot be a prefix of the file).
    fn discard(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.path);
    }

    /// Check the whole file against `t`'s checksum and rename it to its cached name; a mismatch
    /// discards it. Returns its sha256.
    fn verify_and_place(self, t: &Target) -> Result<String> {
        self.file
            .sync_all()
            .map_err(|e| write_error(e, &self.path))?;
        let sha256 = format!("{:x}", self.hasher.clone().finalize());
        let bad = match &t.checksum {
            Checksum::Sha256(want) if *want != sha256 => {
                Some(("sha256", want.clone(), sha256.clone()))
            }
            Checksum::GitSha1(want) => {
                let got = git_sha1(&self.path)?;
                (*want != got).then(|| ("git blob id", want.clone(), got))
            }
            _ => None,
        };
        if let Some((kind, want, got)) = bad {
            self.discard();
            bail!(
                "{}: {kind} mismatch (expected {want}, got {got}): the download was corrupted or \
                 the server changed the file; discarded, nothing cached; run again",
                t.label
            );
        }
        let path = self.path.clone();
        drop(self.file);
        fs::rename(&path, &t.dest)
            .with_context(|| format!("moving {} into place", path.display()))?;
        Ok(sha256)
    }
}

/// When free space is next checked while data arrives, and from where this process counts.
struct SpaceWatch {
    started_at: u64,
    next: u64,
}

impl SpaceWatch {
    fn new(have: u64) -> SpaceWatch {
        SpaceWatch {
            started_at: have,
            next: have.saturating_add(SPACE_CHECK_EVERY),
        }
    }

    fn check(&mut self, t: &Target, have: u64) -> Result<()> {
        if have < self.next {
            return Ok(());
        }
        self.next = have.saturating_add(SPACE_CHECK_EVERY);
        let dir = t.dest.parent().expect("a file in a directory");
        check_space_left(t, dir, have, have.saturating_sub(self.started_at))
    }
}

/// Read one response body into the partial file until it ends; `Some(why)` when the connection
/// dropped (retried by the caller). Bounded: more than the announced (or largest possible) size
/// is refused and discarded, too slow a transfer stops with the part received kept, and the
/// disk is watched as data arrives.
fn receive(
    client: &Client,
    t: &Target,
    body: &mut super::client::Body,
    part: &mut Partial,
    meter: &mut Progress,
    watch: &mut SpaceWatch,
) -> Result<Option<String>> {
    let most = t.size.unwrap_or(t.limit);
    let mut buf = vec![0u8; 1 << 20];
    let mut rate = RateFloor::new(client.window, part.have);
    loop {
        watch.check(t, part.have)?;
        let n = match body.reader.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Some(e.to_string())),
        };
        part.append(&buf[..n])?;
        if part.have > most {
            let whose = if t.size.is_some() {
                "its announced size"
            } else {
                "the most such a file can be"
            };
            // What is on disk cannot be this file: gone (the open handle closes with the error).
            let _ = fs::remove_file(&part.path);
            bail!(
                "{}: the server sent more than {most} bytes ({whose}); discarded, nothing cached",
                t.label
            );
        }
        meter.set(part.have);
        if let Err(e) = rate.check(part.have) {
            meter.finish();
            part.flush()?;
            bail!(
                "{}: {e}; the server is stalled or far too slow; the {} received so far are \
                 kept: run the same command again to resume (later, or from another mirror \
                 via HF_ENDPOINT)",
                t.label,
                human_bytes(part.have)
            );
        }
    }
}

/// A floor under the transfer rate: over each window (the read timeout) at least
/// [`MIN_BYTES_PER_SEC`] must arrive. The read timeout alone never fires for a server that
/// sends one byte just before it would.
struct RateFloor {
    window: Duration,
    since: Instant,
    at: u64,
}

impl RateFloor {
    fn new(window: Duration, have: u64) -> RateFloor {
        RateFloor {
            window,
            since: Instant::now(),
            at: have,
        }
    }

    fn check(&mut self, have: u64) -> Result<()> {
        let spent = self.since.elapsed();
        if spent < self.window {
            return Ok(());
        }
        let got = have - self.at;
        if (got as f64) < MIN_BYTES_PER_SEC as f64 * spent.as_secs_f64() {
            bail!(
                "only {got} bytes arrived in the last {:.0} s (the least accepted is {}/s)",
                spent.as_secs_f64(),
                human_bytes(MIN_BYTES_PER_SEC)
            );
        }
        *self = RateFloor::new(self.window, have);
        Ok(())
    }
}

/// Stop before the disk fills while bytes arrive (the check before the download covers only
/// an announced size; another process may be writing too). The partial file is kept.
fn check_space_left(t: &Target, dir: &Path, have: u64, written: u64) -> Result<()> {
    let Some(free) = free_now(dir, written) else {
        return Ok(());
    };
    let left = t.size.map(|s| s.saturating_sub(have)).unwrap_or(0);
    if free < left.saturating_add(DISK_MARGIN) {
        bail!(
            "{}: the disk under {} is nearly full ({} free, {} kept free{}) after {} \
             downloaded; free space there or point HF_HOME / HF_HUB_CACHE at a larger disk; \
             the partial download is kept and resumes",
            t.label,
            dir.display(),
            human_bytes(free),
            human_bytes(DISK_MARGIN),
            if left > 0 {
                format!(", {} still to come", human_bytes(left))
            } else {
                String::new()
            },
            human_bytes(have)
        );
    }
    Ok(())
}

/// Free bytes on the download's disk, `written` bytes into this download (the test hook
/// `VIRNUCPRO_TEST_FREE_BYTES` stands for a disk that each byte written uses up).
fn free_now(dir: &Path, written: u64) -> Option<u64> {
    match crate::runtime::fault_injection::free_bytes() {
        Some(n) => Some(n.saturating_sub(written)),
        None => cache::free_space(dir),
    }
}

fn retry_pause(label: &str, n: u32, why: &str) {
    let wait = Duration::from_millis(250 << n.min(6));
    tracing::warn!(
        "download: {label}: {why}; retrying ({n} of {RETRIES}) in {:.1}s",
        wait.as_secs_f64()
    );
    std::thread::sleep(wait);
}

/// A fetched model: its snapshot directory (what the loaders read) and commit.
pub struct Fetched {
    pub snapshot: PathBuf,
    pub commit: String,
    pub downloaded: u64,
}

/// The small files a loader may read, fetched when the repository has them.
const SIDE_FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

/// The files to fetch: the side files present and the weights in the loaders' preferred format.
fn choose(id: &RepoId, files: &[Sibling], kind: ModelKind) -> Result<Vec<Sibling>> {
    let has = |name: &str| files.iter().find(|s| s.rfilename == name).cloned();
    let mut out = Vec::new();
    for f in SIDE_FILES {
        if let Some(s) = has(f) {
            out.push(s);
        }
    }
    let required: &[&str] = match kind {
        ModelKind::Dnabert => &["config.json", "tokenizer.json"],
        ModelKind::Esm => &["config.json"],
    };
    for r in required {
        if has(r).is_none() {
            bail!(
                "{id}: the repository has no {r}, so it is not a {} model our loaders read",
                kind.name()
            );
        }
    }
    let weights = HF_WEIGHT_FILES
        .iter()
        .find_map(|w| has(w))
        .with_context(|| {
            format!(
                "{id}: no weights in a format we read (expected one of {})",
                HF_WEIGHT_FILES.join(", ")
            )
        })?;
    out.push(weights);
    Ok(out)
}

/// The most files one fetch takes from a repository: the side files, an index and its shards
/// (ESM-2 15B has a handful). A listing or an index naming more is not a model we read.
pub const MAX_REPO_FILES: usize = 256;

/// Fetch a model repository (only the files the loaders need) into the cache; returns its
/// snapshot. Files already cached are not downloaded again.
pub fn fetch_repo(env: &HubEnv, id: &RepoId, kind: ModelKind, quiet: bool) -> Result<Fetched> {
    let client = Client::new(env)?;
    let info = client.repo_info(&id.repo, &id.revision)?;
    let commit = info.sha.clone();
    let cache = RepoCache::new(&env.hub_cache, id);
    let mut files = choose(id, &info.siblings, kind)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| f.size.or(f.lfs.as_ref().and_then(|l| l.size)))
        .sum();
    tracing::info!(
        "fetch: {id} at {} ({} files{})",
        &commit[..12],
        files.len(),
        if total > 0 {
            format!(", {}", human_bytes(total))
        } else {
            String::new()
        }
    );
    // Each name once across the whole fetch, and an index's entries must be shards: an index
    // naming itself or another index would otherwise be followed for ever.
    let mut taken: std::collections::HashSet<String> =
        files.iter().map(|f| f.rfilename.clone()).collect();
    let mut downloaded = 0;
    let mut i = 0;
    while i < files.len() {
        let f = files[i].clone();
        i += 1;
        downloaded += fetch_file(&client, &cache, id, &commit, &f, quiet)?;
        if !f.rfilename.ends_with(".index.json") {
            continue;
        }
        let index = cache.snapshot(&commit).join(&f.rfilename);
        let index_name = shown(&f.rfilename);
        for (_, shard) in crate::weights::sharded::read_weight_map(&index)? {
            if shard.ends_with(".json") {
                bail!(
                    "{id}: {index_name} names {} as a shard, which is an index or a config, not \
                     weights; the repository is broken (nothing more downloaded)",
                    shown(&shard)
                );
            }
            if !taken.insert(shard.clone()) {
                continue;
            }
            if files.len() >= MAX_REPO_FILES {
                bail!(
                    "{id}: {index_name} names more than {MAX_REPO_FILES} files; no model we read \
                     has that many shards (nothing more downloaded)"
                );
            }
            let sib = info
                .siblings
                .iter()
                .find(|x| x.rfilename == shard)
                .cloned()
                .with_context(|| {
                    format!(
                        "{id}: {index_name} names the shard {}, which is not in the repository",
                        shown(&shard)
                    )
                })?;
            files.push(sib);
        }
    }
    cache.set_ref(&id.revision, &commit)?;
    Ok(Fetched {
        snapshot: cache.snapshot(&commit),
        commit,
        downloaded,
    })
}

/// One file of a repository into the cache (blob + snapshot link); returns bytes downloaded.
fn fetch_file(
    client: &Client,
    cache: &RepoCache,
    id: &RepoId,
    commit: &str,
    file: &Sibling,
    quiet: bool,
) -> Result<u64> {
    cache::safe_relative(&file.rfilename)?;
    let name = &shown(&file.rfilename);
    let explain = |e: HttpError| client.explain(e, &id.repo, &id.revision, Some(name));
    let url = client.resolve_url(&id.repo, commit, &file.rfilename);
    let mut tries = 0;
    let meta = loop {
        match client.file_meta(&url) {
            Ok(m) => break m,
            Err(e) if e.is_transport() && tries < RETRIES => {
                tries += 1;
                retry_pause(&format!("{id}: {name}"), tries, &format!("{e:?}"));
            }
            Err(e) => return Err(explain(e)),
        }
    };
    if let Some(c) = &meta.commit {
        if c != commit {
            bail!(
                "{id}: the repository moved from {commit} to {} during the fetch; run it again",
                shown(c)
            );
        }
    }
    let listed = file
        .lfs
        .as_ref()
        .map(|l| l.sha256.to_ascii_lowercase())
        .or_else(|| file.blob_id.clone());
    let etag = if meta.etag.is_empty() {
        listed.clone().unwrap_or_default()
    } else {
        meta.etag.clone()
    };
    if let Some(l) = &listed {
        if !meta.etag.is_empty() && *l != meta.etag {
            bail!(
                "{id}: {name}: the file list says {} but the file says {}; the server is \
                 inconsistent, nothing cached; run again later",
                shown(l),
                shown(&meta.etag)
            );
        }
    }
    let checksum = Checksum::from_etag(&etag);
    if checksum == Checksum::Unknown {
        bail!(
            "{id}: {name}: the server gave no usable checksum (etag {:?}), so the file cannot \
             be verified; is HF_ENDPOINT a Hugging Face Hub?",
            etag
        );
    }
    let size = meta
        .size
        .or(file.size)
        .or(file.lfs.as_ref().and_then(|l| l.size));
    let blob = cache.blob(&etag);
    if blob.is_file() {
        cache.link(commit, &file.rfilename, &etag)?;
        return Ok(0);
    }
    let label = format!("{id}: {name}");
    let _lock =
        crate::runtime::lockfile::wait_for(&cache.locks.join(format!("{etag}.lock")), |who| {
            tracing::info!("download: {label}: another process ({who}) is downloading it; waiting")
        })?;
    // The other process may have finished it while we waited.
    if blob.is_file() {
        cache.link(commit, &file.rfilename, &etag)?;
        return Ok(0);
    }
    let target = Target {
        url,
        label: label.clone(),
        dest: blob,
        size,
        checksum,
        // Bounds a body whose size nobody announced.
        limit: if file.rfilename.ends_with(".safetensors") || file.rfilename.ends_with(".bin") {
            MAX_WEIGHTS_BYTES
        } else {
            MAX_SIDE_FILE_BYTES
        },
    };
    download(client, &target, quiet, &explain)?;
    cache.link(commit, &file.rfilename, &etag)?;
    let bytes = fs::metadata(&target.dest).map(|m| m.len()).unwrap_or(0);
    tracing::info!("download: {label}: {} verified", human_bytes(bytes));
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_come_from_etags() {
        assert_eq!(
            Checksum::from_etag(&"a".repeat(64)),
            Checksum::Sha256("a".repeat(64))
        );
        assert_eq!(
            Checksum::from_etag(&"B".repeat(40)),
            Checksum::GitSha1("b".repeat(40))
        );
        assert_eq!(Checksum::from_etag("xyz"), Checksum::Unknown);
    }

    #[test]
    fn git_blob_ids_match_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        fs::write(&p, b"hello\n").unwrap();
        assert_eq!(
            git_sha1(&p).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
