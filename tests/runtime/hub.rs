//! `virnucpro models` against a Hugging Face Hub lookalike on 127.0.0.1 (an ephemeral port,
//! started by each test, bounded in requests and time, stopped when the test ends): the tiny
//! fixture models served as Hub repositories with the revision API, LFS-style redirects for
//! weights, `X-Linked-Etag` sha256s and git blob ids, and injected faults. Then `run` with Hub
//! ids under `HF_HUB_OFFLINE=1` reproduces the e2e goldens.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha1::Digest as _;

use crate::common::{assert_error, check_e2e_goldens, fixtures, s, stderr};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The server stops by itself after this long or this many requests.
const SERVER_LIFETIME: Duration = Duration::from_secs(300);
const MAX_REQUESTS: usize = 2000;

fn sha256(b: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(b))
}

fn git_sha1(b: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", b.len()).as_bytes());
    h.update(b);
    format!("{:x}", h.finalize())
}

fn is_large(name: &str) -> bool {
    [".safetensors", ".bin", ".pt", ".pth"]
        .iter()
        .any(|e| name.ends_with(e))
}

/// Faults the server injects.
#[derive(Default)]
struct Faults {
    /// Close the connection after this many body bytes of the next large-file GET (once).
    drop_after: Option<usize>,
    /// Serve large files with one byte changed (their announced sha256 stays the true one).
    corrupt: bool,
    /// Pause this long after every 4 KiB of a large file.
    slow: Option<Duration>,
    /// Announce this size for large files (X-Linked-Size) instead of theirs.
    announce_size: Option<u64>,
    /// Repositories answered 401 (gated) unless this token is sent.
    gated: Option<(String, String)>,
    /// This file's size is announced nowhere (listing, HEAD, body) and its body never ends
    /// (its bytes repeated until the client hangs up).
    no_size: Option<&'static str>,
    /// Large files' bodies arrive one byte per this long.
    drip: Option<Duration>,
    /// The commit is given in upper case (listing and `X-Repo-Commit`).
    upper_commit: bool,
}

/// A hostile server's own answer to a request (method, path): `true` when it answered.
type Script = Box<dyn Fn(&str, &str, &mut TcpStream) -> bool + Send + Sync>;

/// What a test's server holds beyond the fixture repositories.
#[derive(Default)]
struct Setup {
    faults: Faults,
    /// More repositories: (id, files).
    repos: Vec<(String, Vec<(String, Vec<u8>)>)>,
    /// More plain files: (URL path, bytes).
    raw: Vec<(String, Vec<u8>)>,
    script: Option<Script>,
}

struct Hub {
    repos: BTreeMap<String, Vec<(String, Vec<u8>)>>,
    /// URL path -> bytes, served as plain files (the classifiers' server).
    raw: BTreeMap<String, Vec<u8>>,
    faults: Mutex<Faults>,
    script: Option<Script>,
    /// "METHOD path range" of every request.
    log: Mutex<Vec<String>>,
    requests: AtomicUsize,
    stop: AtomicBool,
}

struct Server {
    hub: Arc<Hub>,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.hub.stop.store(true, Ordering::SeqCst);
    }
}

impl Server {
    fn start(faults: Faults) -> Server {
        Server::with(Setup {
            faults,
            ..Setup::default()
        })
    }

    fn with(setup: Setup) -> Server {
        let mut repos = BTreeMap::new();
        for (id, dir) in [
            ("test/esm2-tiny", "esm2_tiny"),
            ("test/dnabert-s-tiny", "dnabert_s_tiny"),
            ("gated/esm2-tiny", "esm2_tiny"),
        ] {
            let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(fixtures().join(dir))
                .unwrap()
                .map(|e| {
                    let p = e.unwrap().path();
                    (
                        p.file_name().unwrap().to_str().unwrap().to_string(),
                        fs::read(&p).unwrap(),
                    )
                })
                .collect();
            files.sort();
            repos.insert(id.to_string(), files);
        }
        let mut raw = BTreeMap::new();
        raw.insert(
            "/raw/mlp_tiny.pth".to_string(),
            fs::read(fixtures().join("mlp_tiny.pth")).unwrap(),
        );
        repos.extend(setup.repos);
        raw.extend(setup.raw);
        let hub = Arc::new(Hub {
            repos,
            raw,
            faults: Mutex::new(setup.faults),
            script: setup.script,
            log: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let h = hub.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while !h.stop.load(Ordering::SeqCst)
                && started.elapsed() < SERVER_LIFETIME
                && h.requests.load(Ordering::SeqCst) < MAX_REQUESTS
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        h.requests.fetch_add(1, Ordering::SeqCst);
                        let h = h.clone();
                        std::thread::spawn(move || {
                            let _ = serve(&h, stream);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { hub, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> Vec<String> {
        self.hub.log.lock().unwrap().clone()
    }

    /// GETs of the storage path of a large file (its bytes).
    fn body_gets(&self, sha: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.starts_with(&format!("GET /lfs/{sha}")))
            .collect()
    }
}

fn respond(s: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

fn serve(hub: &Hub, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned().unwrap_or_default();
    hub.log
        .lock()
        .unwrap()
        .push(format!("{method} {target} {range}").trim().to_string());
    let head_only = method == "HEAD";
    let path = target.split('?').next().unwrap().to_string();
    if let Some(script) = &hub.script {
        if script(&method, &path, &mut stream) {
            return Ok(());
        }
    }
    let (no_size, drip, upper) = {
        let f = hub.faults.lock().unwrap();
        (f.no_size, f.drip, f.upper_commit)
    };
    let commit = if upper {
        COMMIT.to_ascii_uppercase()
    } else {
        COMMIT.to_string()
    };

    // The revision API.
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let (repo, _rev) = rest.rsplit_once("/revision/").unwrap_or((rest, ""));
        return match hub.repos.get(repo) {
            Some(files) => {
                if let Some(deny) = gate(hub, repo, &headers) {
                    return deny(&mut stream);
                }
                let siblings: Vec<serde_json::Value> = files
                    .iter()
                    .map(|(name, bytes)| {
                        let mut v = serde_json::json!({"rfilename": name, "size": bytes.len(), "blobId": git_sha1(bytes)});
                        if is_large(name) {
                            v["lfs"] = serde_json::json!({"sha256": sha256(bytes), "size": bytes.len()});
                        }
                        if no_size == Some(name.as_str()) {
                            v.as_object_mut().unwrap().remove("size");
                            if let Some(l) = v.get_mut("lfs") {
                                l.as_object_mut().unwrap().remove("size");
                            }
                        }
                        v
                    })
                    .collect();
                let body = serde_json::json!({"id": repo, "sha": commit, "siblings": siblings})
                    .to_string();
                respond(
                    &mut stream,
                    "200 OK",
                    &[("Content-Length".into(), body.len().to_string())],
                    body.as_bytes(),
                );
                Ok(())
            }
            None => {
                respond(
                    &mut stream,
                    "404 Not Found",
                    &[
                        ("X-Error-Code".into(), "RepoNotFound".into()),
                        ("Content-Length".into(), "0".into()),
                    ],
                    b"",
                );
                Ok(())
            }
        };
    }
    // resolve/<rev>/<file>: small files here, large ones redirected to /lfs/<sha256>.
    if let Some((repo, rest)) = path[1..].split_once("/resolve/") {
        let file = rest.split_once('/').map(|x| x.1).unwrap_or("");
        let Some(bytes) = hub
            .repos
            .get(repo)
            .and_then(|f| f.iter().find(|(n, _)| n == file))
            .map(|x| x.1.clone())
        else {
            respond(
                &mut stream,
                "404 Not Found",
                &[
                    ("X-Error-Code".into(), "EntryNotFound".into()),
                    ("Content-Length".into(), "0".into()),
                ],
                b"",
            );
            return Ok(());
        };
        if let Some(deny) = gate(hub, repo, &headers) {
            return deny(&mut stream);
        }
        let mut h = vec![("X-Repo-Commit".to_string(), commit)];
        if is_large(file) {
            let sha = sha256(&bytes);
            h.push(("X-Linked-Etag".into(), format!("\"{sha}\"")));
            let announced = hub.faults.lock().unwrap().announce_size;
            if no_size != Some(file) {
                h.push((
                    "X-Linked-Size".into(),
                    announced.unwrap_or(bytes.len() as u64).to_string(),
                ));
            }
            h.push(("Location".into(), format!("/lfs/{sha}")));
            h.push(("Content-Length".into(), "0".into()));
            respond(&mut stream, "302 Found", &h, b"");
        } else if no_size == Some(file) {
            h.push(("ETag".into(), format!("\"{}\"", git_sha1(&bytes))));
            respond(&mut stream, "200 OK", &h, b"");
            if !head_only {
                endless(&mut stream, &bytes);
            }
        } else {
            h.push(("ETag".into(), format!("\"{}\"", git_sha1(&bytes))));
            h.push(("Content-Length".into(), bytes.len().to_string()));
            respond(
                &mut stream,
                "200 OK",
                &h,
                if head_only { b"" } else { &bytes },
            );
        }
        return Ok(());
    }
    // Storage: /lfs/<sha256> and /raw/<file>, with Range and the faults.
    let mut name = String::new();
    let bytes = if let Some(sha) = path.strip_prefix("/lfs/") {
        hub.repos
            .values()
            .flatten()
            .find(|(_, b)| sha256(b) == sha)
            .map(|x| {
                name = x.0.clone();
                x.1.clone()
            })
    } else {
        hub.raw.get(&path).cloned()
    };
    let Some(mut bytes) = bytes else {
        respond(
            &mut stream,
            "404 Not Found",
            &[("Content-Length".into(), "0".into())],
            b"",
        );
        return Ok(());
    };
    let (drop_after, slow) = {
        let mut f = hub.faults.lock().unwrap();
        if f.corrupt {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x55;
        }
        (f.drop_after.take(), f.slow)
    };
    let start: usize = range
        .strip_prefix("bytes=")
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    if no_size == Some(name.as_str()) {
        respond(&mut stream, "200 OK", &[], b"");
        endless(&mut stream, &bytes);
        return Ok(());
    }
    let body = &bytes[start.min(bytes.len())..];
    let mut h = vec![("Content-Length".to_string(), body.len().to_string())];
    let status = if start > 0 {
        h.push((
            "Content-Range".into(),
            format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len()),
        ));
        "206 Partial Content"
    } else {
        "200 OK"
    };
    respond(&mut stream, status, &h, b"");
    let end = drop_after.map(|d| d.min(body.len())).unwrap_or(body.len());
    if let Some(d) = drip {
        for b in &body[..end] {
            stream.write_all(std::slice::from_ref(b))?;
            std::thread::sleep(d);
        }
    }
    for chunk in body[..end].chunks(4096) {
        stream.write_all(chunk)?;
        if let Some(d) = slow {
            std::thread::sleep(d);
        }
    }
    // A dropped connection: the socket closes with the body short.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// `bytes` over and over, until the client hangs up (or 4 GiB, to bound a broken test).
fn endless(stream: &mut TcpStream, bytes: &[u8]) {
    let mut sent = 0usize;
    while sent < 4 << 30 {
        if stream.write_all(bytes).is_err() {
            return;
        }
        sent += bytes.len();
    }
}

type Deny = Box<dyn FnOnce(&mut TcpStream) -> std::io::Result<()>>;

fn gate(hub: &Hub, repo: &str, headers: &BTreeMap<String, String>) -> Option<Deny> {
    let f = hub.faults.lock().unwrap();
    let (gated, token) = f.gated.clone()?;
    if gated != repo {
        return None;
    }
    let sent = headers.get("authorization").cloned();
    if sent.as_deref() == Some(&format!("Bearer {token}")) {
        return None;
    }
    let code = if sent.is_some() {
        "403 Forbidden"
    } else {
        "401 Unauthorized"
    };
    Some(Box::new(move |s: &mut TcpStream| {
        respond(
            s,
            code,
            &[
                ("X-Error-Code".into(), "GatedRepo".into()),
                ("Content-Length".into(), "0".into()),
            ],
            b"",
        );
        Ok(())
    }))
}

/// The binary with a clean Hub environment: HF_HOME in `home`, the endpoint `server`.
fn cmd(home: &Path, server: Option<&Server>, args: &[&str]) -> std::process::Command {
    hub_env(crate::common::bin(), home, server, args)
}

/// [`cmd`] under `timeout` and `prlimit --as`: a regression that loops or allocates without
/// bound ends as a failed test, not a stuck or swapping machine.
fn bounded(home: &Path, server: Option<&Server>, args: &[&str], secs: u64, mem_mib: u64) -> Output {
    let mut c = std::process::Command::new("timeout");
    c.args(["--kill-after=5", &secs.to_string(), "prlimit"])
        .arg(format!("--as={}", mem_mib << 20))
        .args(["--", env!("CARGO_BIN_EXE_virnucpro")]);
    let o = out(hub_env(c, home, server, args));
    assert!(
        !matches!(o.status.code(), Some(124) | Some(137)),
        "not done in {secs} s: {args:?}\n{}",
        stderr(&o)
    );
    o
}

fn hub_env(
    mut c: std::process::Command,
    home: &Path,
    server: Option<&Server>,
    args: &[&str],
) -> std::process::Command {
    c.args(args)
        .env("HF_HOME", home)
        .env("VIRNUCPRO_PROGRESS_SECS", "0.5")
        .env("VIRNUCPRO_HTTP_TIMEOUT_SECS", "20")
        .stdin(std::process::Stdio::null());
    for v in [
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HF_ENDPOINT",
        "VIRNUCPRO_CONFIG",
        "VIRNUCPRO_CLASSIFIER_BASE_URL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        c.env_remove(v);
    }
    if let Some(s) = server {
        c.env("HF_ENDPOINT", s.url());
    }
    c
}

fn out(mut c: std::process::Command) -> Output {
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed:\n{}", stderr(o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn repo_dir(home: &Path, repo: &str) -> PathBuf {
    home.join("hub")
        .join(format!("models--{}", repo.replace('/', "--")))
}

fn fixture(rel: &str) -> Vec<u8> {
    fs::read(fixtures().join(rel)).unwrap()
}

/// `models fetch --esm <repo>` from `server` (or the environment's endpoint), into `home`.
fn fetch_esm_cmd(home: &Path, server: Option<&Server>, repo: &str) -> std::process::Command {
    cmd(home, server, &["models", "fetch", "--esm", repo])
}

/// [`fetch_esm_cmd`] of `repo`, [`bounded`].
fn fetch_esm_bounded(home: &Path, server: &Server, repo: &str, secs: u64, mem_mib: u64) -> Output {
    bounded(
        home,
        Some(server),
        &["models", "fetch", "--esm", repo],
        secs,
        mem_mib,
    )
}

/// The tiny ESM-2 (`test/esm2-tiny`) fetched from `server` into `home`.
fn fetch_esm(home: &Path, server: &Server) -> Output {
    out(fetch_esm_cmd(home, Some(server), "test/esm2-tiny"))
}

/// The tiny ESM-2 fetched into a new home from a new server with `faults`.
fn fetch_esm_with(faults: Faults) -> (Server, tempfile::TempDir, Output) {
    let server = Server::start(faults);
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_esm(tmp.path(), &server);
    (server, tmp, o)
}

/// `models fetch --classifier <what>` from `server` (or the environment's endpoint).
fn fetch_classifier(home: &Path, server: Option<&Server>, what: &str) -> Output {
    out(cmd(
        home,
        server,
        &["models", "fetch", "--classifier", what],
    ))
}

fn no_partial_or_blob(home: &Path, repo: &str) {
    let blobs = repo_dir(home, repo).join("blobs");
    let weights = sha256(&fixture("esm2_tiny/model.safetensors"));
    assert!(!blobs.join(&weights).exists(), "a bad blob was cached");
    let snap = repo_dir(home, repo).join("snapshots").join(COMMIT);
    assert!(
        !snap.join("model.safetensors").exists(),
        "the snapshot shows the file"
    );
}

#[test]
fn fetch_writes_the_hf_cache_layout_and_offline_run_reproduces_the_goldens() {
    let server = Server::start(Faults::default());
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let mlp = fixture("mlp_tiny.pth");
    let classifier = format!("{}/raw/mlp_tiny.pth#sha256={}", server.url(), sha256(&mlp));
    let o = out(cmd(
        &home,
        Some(&server),
        &[
            "models",
            "fetch",
            "--esm",
            "test/esm2-tiny",
            "--dnabert",
            "test/dnabert-s-tiny",
            "--classifier",
            &classifier,
        ],
    ));
    let printed = ok(&o);
    assert!(printed.contains("test/esm2-tiny"), "{printed}");

    // huggingface_hub's layout: refs, snapshot links into blobs named by their etags.
    for (repo, dir) in [
        ("test/esm2-tiny", "esm2_tiny"),
        ("test/dnabert-s-tiny", "dnabert_s_tiny"),
    ] {
        let root = repo_dir(&home, repo);
        assert_eq!(
            fs::read_to_string(root.join("refs/main")).unwrap().trim(),
            COMMIT
        );
        let snap = root.join("snapshots").join(COMMIT);
        let weights = fixture(&format!("{dir}/model.safetensors"));
        let link = fs::read_link(snap.join("model.safetensors")).unwrap();
        assert_eq!(
            link,
            PathBuf::from(format!("../../blobs/{}", sha256(&weights)))
        );
        assert_eq!(fs::read(snap.join("model.safetensors")).unwrap(), weights);
        let config = fixture(&format!("{dir}/config.json"));
        assert_eq!(
            fs::read_link(snap.join("config.json")).unwrap(),
            PathBuf::from(format!("../../blobs/{}", git_sha1(&config)))
        );
        // Only what the loaders need: the best weights format, no test goldens.
        for skipped in ["pytorch_model.bin", "cases.json", "fair_esm_checkpoint.pt"] {
            assert!(!snap.join(skipped).exists(), "{repo}: {skipped} fetched");
        }
        assert!(
            fs::read_dir(root.join("blobs")).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".incomplete")),
            "no partial file left"
        );
    }

    // A second fetch downloads nothing.
    let gets = server.log().len();
    let again = ok(&fetch_esm(&home, &server));
    assert!(again.contains("already cached"), "{again}");
    assert!(
        server.log()[gets..]
            .iter()
            .all(|l| !l.starts_with("GET /lfs/")),
        "{:?}",
        &server.log()[gets..]
    );

    let listed = ok(&out(cmd(&home, None, &["models", "list"])));
    for needle in [
        "test/esm2-tiny",
        "test/dnabert-s-tiny",
        "mlp_tiny.pth",
        &sha256(&mlp),
    ] {
        assert!(listed.contains(needle), "{needle} in:\n{listed}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&out(cmd(&home, None, &["models", "list", "--json"])))).unwrap();
    assert_eq!(json["models"].as_array().unwrap().len(), 2);

    // `run` with Hub ids, offline, from the cache: the e2e goldens.
    drop(server);
    for chunk in ["300", "500"] {
        let outdir = tmp.path().join(format!("out{chunk}"));
        let mut c = cmd(
            &home,
            None,
            &[
                "run",
                fixtures().join("e2e/input.fa").to_str().unwrap(),
                "--dnabert",
                "test/dnabert-s-tiny",
                "--esm",
                "test/esm2-tiny",
                "--classifier",
                &classifier,
                "-c",
                chunk,
                "-o",
                outdir.to_str().unwrap(),
                "-d",
                "cpu",
            ],
        );
        c.env("HF_HUB_OFFLINE", "1");
        ok(&out(c));
        check_e2e_goldens(&outdir, chunk);
    }
}

#[test]
fn a_dropped_connection_resumes_with_range_to_the_same_bytes() {
    let (server, tmp, o) = fetch_esm_with(Faults {
        drop_after: Some(100_000),
        ..Faults::default()
    });
    ok(&o);
    let weights = fixture("esm2_tiny/model.safetensors");
    let gets = server.body_gets(&sha256(&weights));
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(gets[1].ends_with("bytes=100000-"), "{gets:?}");
    let snap = repo_dir(tmp.path(), "test/esm2-tiny")
        .join("snapshots")
        .join(COMMIT);
    assert_eq!(fs::read(snap.join("model.safetensors")).unwrap(), weights);
}

#[test]
fn a_killed_download_resumes_from_its_partial_file() {
    let server = Server::start(Faults::default());
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixture("esm2_tiny/model.safetensors");
    let sha = sha256(&weights);
    // What a process killed mid-file leaves behind.
    let blobs = repo_dir(tmp.path(), "test/esm2-tiny").join("blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(format!("{sha}.incomplete")), &weights[..123_456]).unwrap();
    ok(&fetch_esm(tmp.path(), &server));
    assert_eq!(
        server.body_gets(&sha),
        vec![format!("GET /lfs/{sha} bytes=123456-")]
    );
    assert_eq!(fs::read(blobs.join(&sha)).unwrap(), weights);
    assert!(!blobs.join(format!("{sha}.incomplete")).exists());
}

#[test]
fn a_wrong_sha256_is_an_error_and_nothing_is_cached() {
    let (_server, tmp, o) = fetch_esm_with(Faults {
        corrupt: true,
        ..Faults::default()
    });
    assert_error(
        &o,
        &[
            "test/esm2-tiny",
            "model.safetensors",
            "sha256 mismatch",
            "nothing cached",
        ],
    );
    no_partial_or_blob(tmp.path(), "test/esm2-tiny");
    let blobs = repo_dir(tmp.path(), "test/esm2-tiny").join("blobs");
    assert!(
        fs::read_dir(&blobs).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".incomplete")),
        "the corrupt bytes are not kept for a resume"
    );
    // Nothing resolvable either: the id is still "not cached".
    let mut c = cmd(
        tmp.path(),
        None,
        &[
            "embed-protein",
            "x.faa",
            "-m",
            "test/esm2-tiny",
            "-o",
            "x.safetensors",
        ],
    );
    c.env("HF_HUB_OFFLINE", "1");
    assert_error(
        &out(c),
        &["test/esm2-tiny", "not in the Hugging Face cache"],
    );
}

#[test]
fn a_missing_repository_is_a_404_naming_it() {
    let server = Server::start(Faults::default());
    let tmp = tempfile::tempdir().unwrap();
    let o = out(cmd(
        tmp.path(),
        Some(&server),
        &["models", "fetch", "--dnabert", "nobody/no-such-model"],
    ));
    assert_error(&o, &["nobody/no-such-model", "HTTP 404", "check the id"]);
    let o = out(cmd(
        tmp.path(),
        Some(&server),
        &[
            "models",
            "fetch",
            "--classifier",
            &format!("{}/raw/missing.pth", server.url()),
        ],
    ));
    assert_error(&o, &["missing.pth", "HTTP 404"]);
    assert!(!tmp
        .path()
        .join("hub/models--nobody--no-such-model/snapshots")
        .exists());
}

#[test]
fn a_gated_repository_says_to_log_in_and_a_refused_token_says_so() {
    let server = Server::start(Faults {
        gated: Some(("gated/esm2-tiny".into(), "hf_good".into())),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let fetch = ["models", "fetch", "--esm", "gated/esm2-tiny"];
    let o = out(cmd(tmp.path(), Some(&server), &fetch));
    assert_error(&o, &["gated/esm2-tiny", "HTTP 401", "log in", "HF_TOKEN"]);
    let mut c = cmd(tmp.path(), Some(&server), &fetch);
    c.env("HF_TOKEN", "hf_wrong");
    assert_error(&out(c), &["gated/esm2-tiny", "HTTP 403", "token"]);
    // The token file of `huggingface-cli login` is read, and sent to the Hub only.
    fs::write(tmp.path().join("token"), "hf_good\n").unwrap();
    ok(&out(cmd(tmp.path(), Some(&server), &fetch)));
}

#[test]
fn a_slow_server_shows_progress_lines_without_a_terminal() {
    // 344 kB in 4 KiB chunks, 25 ms apart: about 2 s, a line every 0.5 s.
    let (_server, _tmp, o) = fetch_esm_with(Faults {
        slow: Some(Duration::from_millis(25)),
        ..Faults::default()
    });
    ok(&o);
    let err = stderr(&o);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| {
            l.contains("download: test/esm2-tiny: model.safetensors:") && l.contains(" of ")
        })
        .collect();
    assert!(lines.len() >= 2, "progress lines:\n{err}");
    assert!(
        lines.iter().all(|l| l.contains("/s") && l.contains("ETA")),
        "{lines:?}"
    );
}

#[test]
fn two_concurrent_fetches_both_succeed_with_one_download() {
    let server = Server::start(Faults {
        // The weights take ~1.7 s: the second process finds the first one's lock.
        slow: Some(Duration::from_millis(20)),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let spawn = || {
        fetch_esm_cmd(tmp.path(), Some(&server), "test/esm2-tiny")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(&a);
    ok(&b);
    let waited = [&a, &b]
        .iter()
        .filter(|o| stderr(o).contains("is downloading it; waiting"))
        .count();
    assert!(waited >= 1, "{}\n{}", stderr(&a), stderr(&b));
    let weights = fixture("esm2_tiny/model.safetensors");
    assert_eq!(
        server.body_gets(&sha256(&weights)).len(),
        1,
        "{:?}",
        server.log()
    );
    // Each small file fetched once too.
    let config_gets = server
        .log()
        .iter()
        .filter(|l| l.starts_with("GET /test/esm2-tiny/resolve/") && l.contains("config.json"))
        .count();
    assert_eq!(config_gets, 1, "{:?}", server.log());
    let snap = repo_dir(tmp.path(), "test/esm2-tiny")
        .join("snapshots")
        .join(COMMIT);
    assert_eq!(fs::read(snap.join("model.safetensors")).unwrap(), weights);
}

#[test]
fn an_uncached_id_says_which_command_fetches_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixtures().join("e2e/input.fa");
    let outdir = tmp.path().join("o");
    let (esm, mlp) = (
        fixtures().join("esm2_tiny"),
        fixtures().join("mlp_tiny.pth"),
    );
    // `run` on the e2e input at chunk 500 into `outdir`, then `extra`.
    let run = |extra: &[&str]| {
        let mut args = vec!["run", s(&input), "-c", "500", "-o", s(&outdir)];
        args.extend_from_slice(extra);
        cmd(tmp.path(), None, &args)
    };
    let o = out(run(&[
        "--dnabert",
        "test/dnabert-s-tiny",
        "--esm",
        s(&esm),
        "--classifier",
        s(&mlp),
    ]));
    assert_error(
        &o,
        &[
            "virnucpro models fetch --dnabert test/dnabert-s-tiny",
            "--download",
        ],
    );
    assert!(!outdir.exists(), "nothing started");
    // The defaults are the published models: after no fetch, they are not cached.
    let o = out(run(&[]));
    assert_error(&o, &["zhihan1996/DNABERT-S", "virnucpro models fetch"]);
    let dnabert = fixtures().join("dnabert_s_tiny");
    let mut c = run(&["--dnabert", s(&dnabert), "--esm", s(&esm)]);
    c.env("HF_HUB_OFFLINE", "1");
    assert_error(
        &out(c),
        &[
            "classifier 500",
            "HF_HUB_OFFLINE",
            "models fetch --classifier 500",
        ],
    );
    let mut c = cmd(tmp.path(), None, &["models", "fetch"]);
    c.env("HF_HUB_OFFLINE", "1");
    assert_error(&out(c), &["HF_HUB_OFFLINE"]);
}

#[test]
fn run_with_download_fetches_what_is_missing() {
    let server = Server::start(Faults::default());
    let tmp = tempfile::tempdir().unwrap();
    let outdir = tmp.path().join("o");
    let mlp = fixture("mlp_tiny.pth");
    let o = out(cmd(
        tmp.path(),
        Some(&server),
        &[
            "run",
            fixtures().join("e2e/input.fa").to_str().unwrap(),
            "--dnabert",
            "test/dnabert-s-tiny",
            "--esm",
            "test/esm2-tiny",
            "--classifier",
            &format!("{}/raw/mlp_tiny.pth", server.url()),
            "--download",
            "-c",
            "500",
            "-o",
            outdir.to_str().unwrap(),
            "-d",
            "cpu",
        ],
    ));
    ok(&o);
    check_e2e_goldens(&outdir, "500");
    // No checksum given with the URL: the sha256 is recorded, and said to be unverified.
    let listed = ok(&out(cmd(tmp.path(), None, &["models", "list"])));
    assert!(listed.contains(&sha256(&mlp)), "{listed}");
    assert!(stderr(&o).contains("not verified"), "{}", stderr(&o));
}

#[test]
fn an_unreachable_endpoint_is_one_line_about_the_network() {
    // A port nobody listens on (bound, then closed).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let mut c = fetch_esm_cmd(tmp.path(), None, "test/esm2-tiny");
    c.env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"));
    assert_error(&out(c), &["test/esm2-tiny", "cannot reach", "no network"]);
}

#[test]
fn a_file_larger_than_the_free_space_is_refused_before_downloading() {
    let (server, tmp, o) = fetch_esm_with(Faults {
        // 1 EB: more than any test machine's disk.
        announce_size: Some(1 << 60),
        ..Faults::default()
    });
    assert_error(
        &o,
        &[
            "test/esm2-tiny: model.safetensors",
            "not enough disk space",
            "HF_HOME",
        ],
    );
    let weights = fixture("esm2_tiny/model.safetensors");
    assert!(
        server.body_gets(&sha256(&weights)).is_empty(),
        "{:?}",
        server.log()
    );
    no_partial_or_blob(tmp.path(), "test/esm2-tiny");
    let partial = repo_dir(tmp.path(), "test/esm2-tiny")
        .join("blobs")
        .join(format!("{}.incomplete", sha256(&weights)));
    assert!(!partial.exists(), "nothing created for the refused file");
}

// ---- The hostile Hub: servers and caches that misbehave on purpose (issue: hardening, round
// two). Every run is bounded in time and memory; the server in requests. ----

/// A repository of the tiny ESM-2's config with these extra files.
fn esm_config_with(files: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let mut all = vec![("config.json".to_string(), fixture("esm2_tiny/config.json"))];
    all.extend(files);
    all
}

fn index(map: &[(&str, &str)]) -> Vec<u8> {
    let m: serde_json::Map<String, serde_json::Value> = map
        .iter()
        .map(|(t, f)| (t.to_string(), serde_json::Value::from(*f)))
        .collect();
    serde_json::json!({"metadata": {}, "weight_map": m})
        .to_string()
        .into_bytes()
}

#[test]
fn a_shard_index_naming_an_index_is_refused_in_a_few_requests() {
    // Before: the index naming itself was fetched again and again (16,000 requests in 15 s).
    let idx = "model.safetensors.index.json";
    let server = Server::with(Setup {
        repos: vec![
            (
                "evil/self-index".into(),
                esm_config_with(vec![(idx.into(), index(&[("a.weight", idx)]))]),
            ),
            (
                "evil/other-index".into(),
                esm_config_with(vec![
                    (
                        idx.into(),
                        index(&[("a.weight", "pytorch_model.bin.index.json")]),
                    ),
                    (
                        "pytorch_model.bin.index.json".into(),
                        index(&[("a.weight", idx)]),
                    ),
                ]),
            ),
        ],
        ..Setup::default()
    });
    for repo in ["evil/self-index", "evil/other-index"] {
        let tmp = tempfile::tempdir().unwrap();
        let before = server.log().len();
        let o = fetch_esm_bounded(tmp.path(), &server, repo, 60, 2048);
        assert_error(&o, &[repo, "as a shard", "not weights"]);
        let requests = server.log().len() - before;
        assert!(requests <= 8, "{repo}: {requests} requests");
        assert!(!repo_dir(tmp.path(), repo).join("refs/main").exists());
    }
}

#[test]
fn an_index_naming_thousands_of_shards_is_refused_before_downloading_them() {
    let shards: Vec<String> = (1..=5000)
        .map(|i| format!("model-{i:05}-of-05000.safetensors"))
        .collect();
    let map: Vec<(String, String)> = shards
        .iter()
        .map(|s| (format!("{s}.w"), s.clone()))
        .collect();
    let map_ref: Vec<(&str, &str)> = map.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut files = vec![("model.safetensors.index.json".to_string(), index(&map_ref))];
    // Each shard listed in the repository (distinct bytes, so distinct sha256s).
    files.extend(shards.iter().map(|s| (s.clone(), s.as_bytes().to_vec())));
    let server = Server::with(Setup {
        repos: vec![("evil/many-shards".into(), esm_config_with(files))],
        ..Setup::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_esm_bounded(tmp.path(), &server, "evil/many-shards", 120, 2048);
    assert_error(&o, &["evil/many-shards", "more than 256 files"]);
    assert!(
        server.log().iter().all(|l| !l.starts_with("GET /lfs/")),
        "no shard was downloaded"
    );
}

#[test]
fn a_body_without_a_size_is_bounded_by_what_such_a_file_can_be() {
    // config.json announced nowhere and streamed for ever: refused at 64 MiB, nothing kept.
    let server = Server::start(Faults {
        no_size: Some("config.json"),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_esm_bounded(tmp.path(), &server, "test/esm2-tiny", 120, 2048);
    assert_error(
        &o,
        &[
            "config.json",
            &format!("more than {} bytes", 64u64 << 20),
            "the most such a file can be",
            "nothing cached",
        ],
    );
    let blobs = repo_dir(tmp.path(), "test/esm2-tiny").join("blobs");
    let left: Vec<_> = fs::read_dir(&blobs)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn free_space_is_checked_while_a_body_of_unknown_size_arrives() {
    // The weights' size is announced nowhere; the disk (the test hook) has the margin kept
    // free plus 1 MiB: the download stops at the first check after that is used, keeping what
    // it has for a resume.
    let server = Server::start(Faults {
        no_size: Some("model.safetensors"),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut c = fetch_esm_cmd(tmp.path(), Some(&server), "test/esm2-tiny");
    c.env("VIRNUCPRO_TEST_FREE_BYTES", ((65u64) << 20).to_string());
    let o = out(c);
    assert_error(
        &o,
        &["model.safetensors", "nearly full", "HF_HOME", "resumes"],
    );
    no_partial_or_blob(tmp.path(), "test/esm2-tiny");
}

#[test]
fn a_server_dripping_bytes_is_given_up_with_a_clear_error() {
    // One byte every 100 ms arrives before any read timeout; the rate floor (4 kB/s over the
    // 2 s window) ends it.
    let server = Server::start(Faults {
        drip: Some(Duration::from_millis(100)),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut c = fetch_esm_cmd(tmp.path(), Some(&server), "test/esm2-tiny");
    c.env("VIRNUCPRO_HTTP_TIMEOUT_SECS", "2");
    let mut c2 = std::process::Command::new("timeout");
    c2.args(["--kill-after=5", "60"])
        .arg(c.get_program())
        .args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => c2.env(k, v),
            None => c2.env_remove(k),
        };
    }
    let o = out(c2);
    assert_error(
        &o,
        &[
            "model.safetensors",
            "bytes arrived in the last",
            "stalled or far too slow",
            "resume",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_pinned_classifier_url_is_checked_every_time_not_taken_from_an_unpinned_fetch() {
    let genuine = fixture("mlp_tiny.pth");
    let mut tampered = genuine.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 1;
    let server = Server::with(Setup {
        raw: vec![("/raw/tampered.pth".into(), tampered)],
        ..Setup::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("{}/raw/tampered.pth", server.url());
    let pinned = format!("{url}#sha256={}", sha256(&genuine));
    // An unpinned fetch caches the tampered file (nothing says it is wrong)...
    ok(&fetch_classifier(tmp.path(), Some(&server), &url));
    // ...which the pinned URL never uses: it downloads, and the pin refuses the bytes.
    let o = fetch_classifier(tmp.path(), Some(&server), &pinned);
    assert_error(&o, &["tampered.pth", "sha256 mismatch", "nothing cached"]);
    let o = out(cmd(
        tmp.path(),
        Some(&server),
        &[
            "predict",
            "--dna",
            "d.safetensors",
            "--protein",
            "p.safetensors",
            "--classifier",
            &pinned,
            "--download",
            "-o",
            tmp.path().join("pred").to_str().unwrap(),
        ],
    ));
    assert_error(&o, &["tampered.pth", "sha256 mismatch"]);
    assert!(!tmp.path().join("pred").exists());

    // A genuine pinned file, changed in the cache afterwards: refused at its next use.
    let good = format!(
        "{}/raw/mlp_tiny.pth#sha256={}",
        server.url(),
        sha256(&genuine)
    );
    let listed = ok(&fetch_classifier(tmp.path(), Some(&server), &good));
    let cached = PathBuf::from(listed.trim().split('\t').nth(2).unwrap());
    assert_eq!(fs::read(&cached).unwrap(), genuine);
    let mut changed = genuine.clone();
    changed[mid] ^= 1;
    fs::write(&cached, &changed).unwrap();
    let o = fetch_classifier(tmp.path(), None, &good);
    assert_error(
        &o,
        &["does not match its sha256", "delete", "fetch it again"],
    );
    // An unpinned cached file is held to the sha256 recorded when it was downloaded.
    let unpinned = cached_classifier(tmp.path(), &url);
    fs::write(&unpinned, &genuine).unwrap();
    let o = fetch_classifier(tmp.path(), None, &url);
    assert_error(&o, &["sha256 recorded at download"]);
}

/// Where `models fetch --classifier url` put its file (from `models list --json`).
fn cached_classifier(home: &Path, url: &str) -> PathBuf {
    let listed = ok(&out(cmd(home, None, &["models", "list", "--json"])));
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let c = v["classifiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["url"] == url)
        .unwrap_or_else(|| panic!("{url} not in {listed}"));
    PathBuf::from(c["path"].as_str().unwrap())
}

#[test]
fn models_list_reads_hostile_refs_bounded_and_lists_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    let commit = COMMIT;
    let repo = |name: &str| {
        let d = hub.join(format!("models--org--{name}"));
        fs::create_dir_all(d.join("refs")).unwrap();
        d
    };
    fs::write(repo("good").join("refs/main"), commit).unwrap();
    // A multi-byte character across the 12th byte (the listing's short commit).
    fs::write(repo("accented").join("refs/main"), "é".repeat(30)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", repo("zero").join("refs/main")).unwrap();
    let looped = repo("loop");
    std::os::unix::fs::symlink("b", looped.join("refs/a")).unwrap();
    std::os::unix::fs::symlink("a", looped.join("refs/b")).unwrap();
    std::os::unix::fs::symlink(".", looped.join("refs/dir")).unwrap();
    fs::write(looped.join("refs/main"), commit).unwrap();
    // A fifo: a plain read would wait for a writer for ever.
    let fifo = repo("fifo").join("refs/main");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    fs::create_dir_all(hub.join("models--org--new\nline/refs")).unwrap();
    // The token file is read by every Hub command: a link to /dev/zero must not hang either.
    std::os::unix::fs::symlink("/dev/zero", tmp.path().join("token")).unwrap();
    let o = bounded(tmp.path(), None, &["models", "list"], 30, 1024);
    let listed = ok(&o);
    for needle in [
        "org/good",
        "main=0123456789ab",
        "org/accented",
        "org/zero",
        "org/loop",
        "org/new\\nline",
        "org/fifo",
        "not a commit id",
        "not a regular file",
        "is a link",
    ] {
        assert!(listed.contains(needle), "{needle:?} in:\n{listed}");
    }
    assert!(!listed.contains("org/new\n"), "{listed}");
    // The loop's own good ref is still listed.
    let loop_line = listed.lines().find(|l| l.contains("org/loop")).unwrap();
    assert!(loop_line.contains("main=0123456789ab"), "{loop_line}");
    let json = bounded(tmp.path(), None, &["models", "list", "--json"], 30, 1024);
    let v: serde_json::Value = serde_json::from_str(&ok(&json)).unwrap();
    assert_eq!(v["models"].as_array().unwrap().len(), 6);
    // A run resolving the id with the /dev/zero ref treats it as not cached, bounded.
    let o = bounded(
        tmp.path(),
        None,
        &[
            "embed-protein",
            "x.faa",
            "-m",
            "org/zero",
            "-o",
            "x.safetensors",
        ],
        30,
        1024,
    );
    assert_error(&o, &["org/zero", "nor in the Hugging Face cache"]);
}

#[test]
fn a_renamed_repository_says_its_new_name() {
    let server = Server::with(Setup {
        script: Some(Box::new(|_, path, s| {
            if !path.starts_with("/api/models/old-org/esm") {
                return false;
            }
            respond(
                s,
                "307 Temporary Redirect",
                &[
                    (
                        "Location".into(),
                        "/api/models/test/esm2-tiny/revision/main".into(),
                    ),
                    ("Content-Length".into(), "0".into()),
                ],
                b"",
            );
            true
        })),
        ..Setup::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_esm_bounded(tmp.path(), &server, "old-org/esm", 30, 1024);
    assert_error(
        &o,
        &[
            "old-org/esm",
            "renamed or moved to test/esm2-tiny",
            "HTTP 307",
            "use test/esm2-tiny",
        ],
    );
}

#[test]
fn redirect_loops_and_other_schemes_are_said_and_not_retried() {
    for (what, needle) in [
        ("loop", "redirects in a loop"),
        ("file", "file: URL"),
        ("gopher", "gopher: URL"),
    ] {
        let server = Server::with(Setup {
            script: Some(Box::new(move |_, path, s| {
                let to = match (what, path) {
                    (_, p) if !p.starts_with("/lfs/") => return false,
                    ("loop", p) if p.ends_with("/again") => {
                        p.trim_end_matches("/again").to_string()
                    }
                    ("loop", p) => format!("{p}/again"),
                    ("file", _) => "file:///etc/passwd".to_string(),
                    _ => "gopher://127.0.0.1:70/1".to_string(),
                };
                respond(
                    s,
                    "302 Found",
                    &[
                        ("Location".into(), to),
                        ("Content-Length".into(), "0".into()),
                    ],
                    b"",
                );
                true
            })),
            ..Setup::default()
        });
        let tmp = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let o = fetch_esm_bounded(tmp.path(), &server, "test/esm2-tiny", 60, 1024);
        assert_error(&o, &["model.safetensors", needle, "not followed"]);
        assert!(!stderr(&o).contains("no network"), "{}", stderr(&o));
        assert!(
            !stderr(&o).contains("retrying"),
            "not retried: {}",
            stderr(&o)
        );
        let lfs = server
            .log()
            .iter()
            .filter(|l| l.starts_with("GET /lfs/"))
            .count();
        assert!(lfs <= 2, "{what}: {lfs} storage requests");
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
    }
}

#[test]
fn ids_and_revisions_the_hub_forbids_are_refused_before_any_request() {
    let server = Server::start(Faults::default());
    let tmp = tempfile::tempdir().unwrap();
    for (args, needles) in [
        (
            vec!["models", "fetch", "--esm", "test/esm2-tiny@."],
            vec!["revision \".\"", "starts with '.'", "branch, tag or commit"],
        ),
        (
            vec!["models", "fetch", "--esm", "test/esm2-tiny@main/"],
            vec!["revision \"main/\"", "empty part"],
        ),
        (
            vec![
                "models",
                "fetch",
                "--esm",
                "test/esm2-tiny",
                "--revision",
                ".",
            ],
            vec!["--revision", "starts with '.'"],
        ),
        (
            vec!["models", "fetch", "--esm", "a--b/c"],
            vec!["\"a--b\"", "'--'"],
        ),
        (
            vec!["models", "fetch", "--dnabert", "a/b--c"],
            vec!["\"b--c\"", "'--'"],
        ),
        (
            vec![
                "embed-protein",
                "x.faa",
                "-m",
                "a/b@main/",
                "-o",
                "x.safetensors",
            ],
            vec!["ESM-2 model", "empty part"],
        ),
    ] {
        let o = bounded(tmp.path(), Some(&server), &args, 30, 1024);
        assert_error(&o, &needles);
    }
    assert!(server.log().is_empty(), "{:?}", server.log());
    assert!(!tmp.path().join("hub").exists());
}

#[test]
fn an_upper_case_commit_from_the_server_is_cached_in_lower_case() {
    let server = Server::start(Faults {
        upper_commit: true,
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    ok(&fetch_esm(tmp.path(), &server));
    let dir = repo_dir(tmp.path(), "test/esm2-tiny");
    let snaps: Vec<String> = fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(snaps, vec![COMMIT.to_string()]);
    assert_eq!(fs::read_to_string(dir.join("refs/main")).unwrap(), COMMIT);
}

#[test]
fn names_from_the_server_are_printed_escaped_in_one_line() {
    let shard = "x\nerror: all good\u{1b}[2J.safetensors";
    let server = Server::with(Setup {
        repos: vec![(
            "evil/names".into(),
            esm_config_with(vec![(
                "model.safetensors.index.json".into(),
                index(&[("a.weight", shard)]),
            )]),
        )],
        ..Setup::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_esm_bounded(tmp.path(), &server, "evil/names", 30, 1024);
    assert_error(
        &o,
        &["evil/names", "x\\nerror: all good\\u{1b}[2J.safetensors"],
    );
    assert!(!stderr(&o).contains('\u{1b}'), "{}", stderr(&o));
}
