//! `virnucpro models` against a Hugging Face Hub lookalike on 127.0.0.1 (an ephemeral port,
//! started by each test, bounded in requests and time, stopped when the test ends): the tiny
//! fixture models served as Hub repositories with the revision API, LFS-style redirects for
//! weights, `X-Linked-Etag` sha256s and git blob ids, and injected faults. Then `run` with Hub
//! ids under `HF_HUB_OFFLINE=1` reproduces the e2e goldens.

mod common;

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

use common::{assert_error, fixtures, stderr};

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
}

struct Hub {
    repos: BTreeMap<String, Vec<(String, Vec<u8>)>>,
    /// URL path -> bytes, served as plain files (the classifiers' server).
    raw: BTreeMap<String, Vec<u8>>,
    faults: Mutex<Faults>,
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
        let hub = Arc::new(Hub {
            repos,
            raw,
            faults: Mutex::new(faults),
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
                        v
                    })
                    .collect();
                let body = serde_json::json!({"id": repo, "sha": COMMIT, "siblings": siblings})
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
        let mut h = vec![("X-Repo-Commit".to_string(), COMMIT.to_string())];
        if is_large(file) {
            let sha = sha256(&bytes);
            h.push(("X-Linked-Etag".into(), format!("\"{sha}\"")));
            let announced = hub.faults.lock().unwrap().announce_size;
            h.push((
                "X-Linked-Size".into(),
                announced.unwrap_or(bytes.len() as u64).to_string(),
            ));
            h.push(("Location".into(), format!("/lfs/{sha}")));
            h.push(("Content-Length".into(), "0".into()));
            respond(&mut stream, "302 Found", &h, b"");
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
    let bytes = if let Some(sha) = path.strip_prefix("/lfs/") {
        hub.repos
            .values()
            .flatten()
            .find(|(_, b)| sha256(b) == sha)
            .map(|x| x.1.clone())
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
    let mut c = common::bin();
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

fn fetch_esm(home: &Path, server: &Server) -> Output {
    out(cmd(
        home,
        Some(server),
        &["models", "fetch", "--esm", "test/esm2-tiny"],
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
    let again = ok(&out(cmd(
        &home,
        Some(&server),
        &["models", "fetch", "--esm", "test/esm2-tiny"],
    )));
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
        check_goldens(&outdir, chunk);
    }
}

/// The e2e goldens (as tests/pipeline_e2e.rs checks them): ids, labels exact, scores 1e-4.
fn check_goldens(out: &Path, chunk: &str) {
    let golden = fixtures().join(format!("e2e/chunk{chunk}"));
    let want = fs::read_to_string(golden.join("prediction_results.txt")).unwrap();
    let got = fs::read_to_string(out.join("prediction_results.txt")).unwrap();
    let (want, got): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    assert_eq!(want.len(), got.len(), "row count");
    for (w, g) in want.iter().zip(&got).skip(1) {
        let (w, g): (Vec<&str>, Vec<&str>) = (w.split('\t').collect(), g.split('\t').collect());
        assert_eq!(w[..2], g[..2], "id/label");
        for c in 2..4 {
            let (a, b): (f32, f32) = (w[c].parse().unwrap(), g[c].parse().unwrap());
            assert!((a - b).abs() <= 1e-4, "{}: score {c} {a} vs {b}", w[0]);
        }
    }
    assert_eq!(
        fs::read_to_string(golden.join("prediction_results_highestscore.csv")).unwrap(),
        fs::read_to_string(out.join("prediction_results_highestscore.csv")).unwrap()
    );
}

#[test]
fn a_dropped_connection_resumes_with_range_to_the_same_bytes() {
    let server = Server::start(Faults {
        drop_after: Some(100_000),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_esm(tmp.path(), &server);
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
    let server = Server::start(Faults {
        corrupt: true,
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_esm(tmp.path(), &server);
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
    let server = Server::start(Faults {
        slow: Some(Duration::from_millis(25)),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    // 344 kB in 4 KiB chunks, 25 ms apart: about 2 s, a line every 0.5 s.
    let o = fetch_esm(tmp.path(), &server);
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
        cmd(
            tmp.path(),
            Some(&server),
            &["models", "fetch", "--esm", "test/esm2-tiny"],
        )
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
        .filter(|o| stderr(o).contains("another process is downloading it; waiting"))
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
    let args = [
        "run",
        input.to_str().unwrap(),
        "--dnabert",
        "test/dnabert-s-tiny",
        "--esm",
        esm.to_str().unwrap(),
        "--classifier",
        mlp.to_str().unwrap(),
        "-c",
        "500",
        "-o",
        outdir.to_str().unwrap(),
    ];
    let o = out(cmd(tmp.path(), None, &args));
    assert_error(
        &o,
        &[
            "virnucpro models fetch --dnabert test/dnabert-s-tiny",
            "--download",
        ],
    );
    assert!(!outdir.exists(), "nothing started");
    // The defaults are the published models: after no fetch, they are not cached.
    let o = out(cmd(
        tmp.path(),
        None,
        &[
            "run",
            input.to_str().unwrap(),
            "-c",
            "500",
            "-o",
            outdir.to_str().unwrap(),
        ],
    ));
    assert_error(&o, &["zhihan1996/DNABERT-S", "virnucpro models fetch"]);
    let mut c = cmd(
        tmp.path(),
        None,
        &[
            "run",
            input.to_str().unwrap(),
            "-c",
            "500",
            "-o",
            outdir.to_str().unwrap(),
            "--dnabert",
            fixtures().join("dnabert_s_tiny").to_str().unwrap(),
            "--esm",
            fixtures().join("esm2_tiny").to_str().unwrap(),
        ],
    );
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
    check_goldens(&outdir, "500");
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
    let mut c = cmd(
        tmp.path(),
        None,
        &["models", "fetch", "--esm", "test/esm2-tiny"],
    );
    c.env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"));
    assert_error(&out(c), &["test/esm2-tiny", "cannot reach", "no network"]);
}

#[test]
fn a_file_larger_than_the_free_space_is_refused_before_downloading() {
    let server = Server::start(Faults {
        // 1 EB: more than any test machine's disk.
        announce_size: Some(1 << 60),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_esm(tmp.path(), &server);
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
