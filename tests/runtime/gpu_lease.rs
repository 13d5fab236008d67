//! The GPU lease without a GPU: `VIRNUCPRO_FAKE_GPUS` gives the binary (a test build) a device
//! list, and a run that leased one computes on the CPU under that GPU's name. Proves that a
//! process resolves its devices once (`run` takes one lease for both embedding steps), that two processes never share a GPU,
//! that a waiting process says who holds the GPUs and gives up after `--gpu-lease-timeout`, and
//! that a hostile lock directory (symlinks, FIFOs, another user's directory or files) is refused
//! or left untouched. The two-user cases need root (to create files as other uids and run the
//! victim as another uid); without it they print a note and check nothing.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_error, s, stderr};
use virnucpro::device::lease;

/// The other user of the two-user tests (`nobody` on most systems).
const ATTACKER: u32 = 65534;
/// A second, unprivileged victim.
const VICTIM: u32 = 4242;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a two-user test can run here; prints why not. `REQUIRE_TWO_USER_TESTS=1` (for CI,
/// which runs as root) makes not being root a failure instead.
fn two_users(test: &str) -> bool {
    if !is_root() {
        assert!(
            std::env::var("REQUIRE_TWO_USER_TESTS").map_or(true, |v| v != "1"),
            "{test} needs root (REQUIRE_TWO_USER_TESTS=1)"
        );
        eprintln!("note: {test} skipped: it needs root to act as two users");
    }
    is_root()
}

/// A small protein FASTA for the runs (they stop right after taking the lease).
fn faa(dir: &Path) -> PathBuf {
    let p = dir.join("in.faa");
    fs::write(&p, ">p1\nMKVLAAGIVGLLLA\n").unwrap();
    chmod(&p, 0o644);
    p
}

/// The binary, runnable by another user: copied into a world-readable directory (the checkout
/// itself may not be).
fn exe_for_all(from: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(from.file_name().unwrap());
    fs::copy(from, &to).unwrap();
    chmod(&to, 0o755);
    to
}

struct Run {
    exe: PathBuf,
    uid: Option<u32>,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl Run {
    /// `embed-protein` on fake GPUs `gpus`, leasing one, with the lock directory from `env`.
    fn lease(input: &Path, out: &Path, gpus: &str, extra: &[&str]) -> Run {
        let esm = crate::common::fixtures().join("esm2_tiny");
        let args = ["embed-protein", s(input), "-m", s(&esm), "-o", s(out)];
        Run::leasing(gpus, &[&args[..], extra].concat())
    }

    /// The binary with `args` then `--device cuda --gpu-lease 1`, on fake GPUs `gpus`.
    fn leasing(gpus: &str, args: &[&str]) -> Run {
        let lease = ["--device", "cuda", "--gpu-lease", "1"];
        Run::on(
            gpus,
            args.iter().chain(&lease).map(|a| a.to_string()).collect(),
        )
    }

    /// [`Run::lease`] of a small FASTA written in `dir` to `dir/o.safetensors`.
    fn lease_in(dir: &Path, gpus: &str) -> Run {
        Run::lease(&faa(dir), &dir.join("o.safetensors"), gpus, &[])
    }

    fn devices(gpus: &str) -> Run {
        Run::on(gpus, vec!["devices".into(), "--json".into()])
    }

    /// The binary with `args` on fake GPUs `gpus`, as this user.
    fn on(gpus: &str, args: Vec<String>) -> Run {
        Run {
            exe: env!("CARGO_BIN_EXE_virnucpro").into(),
            uid: None,
            env: vec![("VIRNUCPRO_FAKE_GPUS".into(), gpus.into())],
            args,
        }
    }

    fn env(mut self, k: &str, v: &str) -> Run {
        self.env.push((k.into(), v.into()));
        self
    }

    fn lock_dir(self, dir: &Path) -> Run {
        self.env("VIRNUCPRO_GPU_LOCK_DIR", s(dir))
    }

    fn run_as(mut self, uid: u32, exe_dir: &Path) -> Run {
        self.exe = exe_for_all(&self.exe, exe_dir);
        self.uid = Some(uid);
        self
    }

    /// Under `timeout`, so that a blocking open fails the test instead of hanging it.
    fn command(&self, secs: u64) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", &secs.to_string()])
            .arg(&self.exe)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in [
            "VIRNUCPRO_GPU_LEASE",
            "VIRNUCPRO_GPU_LEASE_TIMEOUT",
            "VIRNUCPRO_GPU_LOCK_DIR",
            "VIRNUCPRO_LOG",
            "XDG_RUNTIME_DIR",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(uid) = self.uid {
            cmd.uid(uid).gid(uid).env("USER", format!("uid{uid}"));
        }
        cmd
    }

    fn output(&self, secs: u64) -> Output {
        let out = self.command(secs).output().unwrap();
        assert!(
            !matches!(out.status.code(), Some(124 | 137)),
            "timed out after {secs} s; stderr:\n{}",
            stderr(&out)
        );
        out
    }
}

/// The run succeeded on the GPU it leased (a fake GPU computes on the CPU), naming it once.
fn assert_leased(out: &Output, needle: &str) {
    let log = stderr(out);
    assert!(out.status.success(), "expected success; stderr:\n{log}");
    assert_eq!(log.matches(needle).count(), 1, "{needle:?} once in:\n{log}");
    assert_eq!(
        log.matches("leased 1 of").count(),
        1,
        "one lease in:\n{log}"
    );
}

/// A lease held by this process on these fake GPUs, in `dir`.
fn hold(dir: &Path, keys: &[&str]) -> lease::Lease {
    let gpus: Vec<(usize, String)> = keys.iter().map(|k| k.to_string()).enumerate().collect();
    let held = lease::try_acquire(&gpus, keys.len(), dir).unwrap();
    assert_eq!(held.indices.len(), keys.len(), "could not take {keys:?}");
    held
}

fn unchanged(path: &Path, text: &str, mode: u32, uid: u32) {
    let m = fs::symlink_metadata(path).unwrap();
    assert_eq!(
        fs::read_to_string(path).unwrap(),
        text,
        "{}",
        path.display()
    );
    assert_eq!(m.mode() & 0o7777, mode, "{}", path.display());
    assert_eq!(m.uid(), uid, "{}", path.display());
}

/// A world-traversable scratch directory (tempfile makes them 0700), for other users' files.
fn open_tempdir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    chmod(t.path(), 0o755);
    t
}

/// A directory like /tmp: root's, sticky, writable by all.
fn shared_dir(parent: &Path) -> PathBuf {
    let d = parent.join("shared");
    fs::create_dir(&d).unwrap();
    chmod(&d, 0o1777);
    d
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn devices_shows_the_per_user_lock_dir_and_who_holds_each_gpu() {
    let run_dir = tempfile::tempdir().unwrap();
    let dir = run_dir.path().join(lease::XDG_SUBDIR);
    // Nothing leased yet, and listing creates nothing.
    let doc = json(
        &Run::devices("GPU-aaaa,GPU-bbbb")
            .env("XDG_RUNTIME_DIR", s(run_dir.path()))
            .output(30),
    );
    assert_eq!(doc["lock_dir"], s(&dir));
    assert!(!dir.exists(), "devices made the lock directory");
    let _held = hold(&dir, &["GPU-aaaa"]);
    let doc = json(
        &Run::devices("GPU-aaaa,GPU-bbbb")
            .env("XDG_RUNTIME_DIR", s(run_dir.path()))
            .output(30),
    );
    assert_eq!(doc["fake_gpus"], true);
    assert_eq!(doc["lock_dir_problem"], serde_json::Value::Null);
    let gpus = doc["cuda_devices"].as_array().unwrap();
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[0]["uuid"], "GPU-aaaa");
    let who = gpus[0]["leased_by"].as_str().unwrap();
    assert!(
        who.starts_with(&format!("pid {}, ", std::process::id())),
        "{who}"
    );
    assert_eq!(gpus[1]["leased_by"], serde_json::Value::Null);
    assert_eq!(doc["auto"], "cuda:0,cuda:1");
}

#[test]
fn a_run_leases_the_gpu_nobody_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("locks");
    let _held = hold(&dir, &["GPU-aaaa"]);
    let out = Run::lease_in(tmp.path(), "GPU-aaaa,GPU-bbbb")
        .lock_dir(&dir)
        .output(60);
    assert_leased(&out, "leased cuda:1 (GPU-bbbb)");
}

/// `run --gpu-lease 1` on a one-GPU node: the devices are resolved once per process, so one
/// lease is taken once and both embedding steps run on it. Before, the second step opened the
/// lock file again while the first step's was held by the same process (flock is per open
/// file) and waited for itself for ever.
#[test]
fn run_takes_one_lease_once_for_both_embedding_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("locks");
    let out = tmp.path().join("out");
    let f = crate::common::fixtures();
    let (input, dnabert, esm, mlp) = (
        f.join("e2e/input.fa"),
        f.join("dnabert_s_tiny"),
        f.join("esm2_tiny"),
        f.join("mlp_tiny.pth"),
    );
    let args = [
        "run",
        s(&input),
        "-c",
        "500",
        "-o",
        s(&out),
        "--dnabert",
        s(&dnabert),
        "--esm",
        s(&esm),
        "--classifier",
        s(&mlp),
    ];
    let run = Run::leasing("GPU-aaaa", &args).lock_dir(&dir);
    let o = run.output(120);
    assert_leased(&o, "leased cuda:0 (GPU-aaaa)");
    let report = fs::read_to_string(out.join("run.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&report).unwrap();
    let steps = doc["steps"].as_array().expect("run.json lists its steps");
    let embedded: Vec<&serde_json::Value> = steps
        .iter()
        .filter(|st| st["step"].as_str().is_some_and(|n| n.starts_with("embed-")))
        .collect();
    assert_eq!(embedded.len(), 2, "{report}");
    for st in embedded {
        assert_eq!(st["report"]["devices"], "cuda:0", "{report}");
        assert_eq!(
            st["report"]["dtype_read_back"]["weights"], "f32",
            "{report}"
        );
    }
    // The same calls as on the CPU: a fake GPU is the CPU backend.
    assert_eq!(
        fs::read_to_string(f.join("e2e/chunk500/prediction_results_highestscore.csv")).unwrap(),
        fs::read_to_string(out.join("prediction_results_highestscore.csv")).unwrap()
    );
}

#[test]
fn a_waiting_run_names_the_holders_and_gives_up_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("locks");
    let _held = hold(&dir, &["GPU-aaaa", "GPU-bbbb"]);
    let input = faa(tmp.path());
    let out_file = tmp.path().join("o.safetensors");
    let me = format!("pid {}, ", std::process::id());
    for (flag, env) in [(Some("2"), None), (None, Some("2"))] {
        let mut run = Run::lease(
            &input,
            &out_file,
            "GPU-aaaa,GPU-bbbb",
            &flag.map_or(vec![], |f| vec!["--gpu-lease-timeout", f]),
        )
        .lock_dir(&dir);
        if let Some(e) = env {
            run = run.env("VIRNUCPRO_GPU_LEASE_TIMEOUT", e);
        }
        let t = Instant::now();
        let out = run.output(60);
        let waited = t.elapsed();
        assert_error(
            &out,
            &[
                "leased by other processes",
                "within 2 s",
                &format!("cuda:0 (GPU-aaaa) held by {me}"),
                &format!("cuda:1 (GPU-bbbb) held by {me}"),
            ],
        );
        assert!(waited >= Duration::from_secs(2), "{waited:?}");
        assert!(waited < Duration::from_secs(30), "{waited:?}");
        let log = stderr(&out);
        let waiting: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("waiting for a free GPU"))
            .collect();
        assert_eq!(waiting.len(), 1, "logged once:\n{log}");
        assert!(
            waiting[0].contains(&format!("cuda:0 (GPU-aaaa) held by {me}")),
            "{log}"
        );
        assert!(!out_file.exists());
    }
}

/// Spawned, with stderr read line by line until `needle` appears.
fn wait_for_line(
    child: &mut Child,
    needle: &str,
    secs: u64,
) -> (String, BufReader<std::process::ChildStderr>) {
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "ended before {needle:?}:\n{seen}"
        );
        seen.push_str(&line);
        if line.contains(needle) {
            return (line, err);
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "no {needle:?}:\n{seen}"
        );
    }
}

#[test]
fn a_waiting_run_takes_the_gpu_once_it_is_released() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("locks");
    let held = hold(&dir, &["GPU-aaaa"]);
    let run = Run::lease_in(tmp.path(), "GPU-aaaa").lock_dir(&dir);
    let mut child = run.command(60).spawn().unwrap();
    let (line, mut rest) = wait_for_line(&mut child, "waiting for a free GPU", 30);
    assert!(
        line.contains(&format!("held by pid {}, ", std::process::id())),
        "{line}"
    );
    drop(held);
    let status = child.wait().unwrap();
    let mut tail = String::new();
    std::io::Read::read_to_string(&mut rest, &mut tail).unwrap();
    assert_eq!(status.code(), Some(0), "{tail}");
    assert!(tail.contains("leased cuda:0 (GPU-aaaa)"), "{tail}");
}

#[test]
fn a_symlinked_lock_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = Run::lease_in(tmp.path(), "GPU-aaaa")
        .lock_dir(&link)
        .output(30);
    assert_error(&out, &["is a symbolic link", s(&link)]);
    assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
}

#[test]
fn a_world_writable_lock_directory_without_sticky_bit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("open");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let out = Run::lease_in(tmp.path(), "GPU-aaaa")
        .lock_dir(&dir)
        .output(30);
    assert_error(&out, &["not sticky (mode 0777)", "chmod +t"]);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    let doc = json(&Run::devices("GPU-aaaa").lock_dir(&dir).output(30));
    assert!(doc["lock_dir_problem"]
        .as_str()
        .unwrap()
        .contains("not sticky"));
}

#[test]
fn a_planted_symlink_lock_file_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let bashrc = tmp.path().join("bashrc");
    fs::write(&bashrc, "export PATH\n").unwrap();
    chmod(&bashrc, 0o600);
    let dir = tmp.path().join("locks");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&bashrc, lease::lock_path(&dir, "GPU-aaaa")).unwrap();
    let out = Run::lease_in(tmp.path(), "GPU-aaaa")
        .lock_dir(&dir)
        .output(30);
    assert_error(&out, &["GPU-aaaa.lock is a symbolic link", "remove it"]);
    unchanged(
        &bashrc,
        "export PATH\n",
        0o600,
        fs::metadata(&bashrc).unwrap().uid(),
    );
}

#[test]
fn a_planted_fifo_lock_file_is_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("locks");
    fs::create_dir(&dir).unwrap();
    let fifo = std::ffi::CString::new(s(&lease::lock_path(&dir, "GPU-aaaa"))).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    let t = Instant::now();
    let out = Run::lease_in(tmp.path(), "GPU-aaaa")
        .lock_dir(&dir)
        .output(20);
    assert_error(&out, &["GPU-aaaa.lock is not a regular file"]);
    assert!(t.elapsed() < Duration::from_secs(15));
}

#[test]
fn another_users_lock_directory_is_refused() {
    if !two_users("another_users_lock_directory_is_refused") {
        return;
    }
    let tmp = open_tempdir();
    let dir = tmp.path().join("theirs");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o1777);
    chown(&dir, ATTACKER);
    // Root is refused too: that user could swap the lock files under it.
    let out = Run::lease_in(tmp.path(), "GPU-aaaa")
        .lock_dir(&dir)
        .output(30);
    assert_error(
        &out,
        &[&format!("belongs to uid {ATTACKER}"), "not to you (uid 0)"],
    );
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn a_squatted_per_user_default_directory_is_refused() {
    if !two_users("a_squatted_per_user_default_directory_is_refused") {
        return;
    }
    // The attacker makes the victim's fallback directory in /tmp before the victim's first run.
    let squat = PathBuf::from(format!("/tmp/virnucpro-gpu-locks-{VICTIM}"));
    if squat.exists() {
        eprintln!("note: {} exists; squatting test skipped", squat.display());
        return;
    }
    fs::create_dir(&squat).unwrap();
    chmod(&squat, 0o777);
    chown(&squat, ATTACKER);
    let tmp = open_tempdir();
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    chown(&out_dir, VICTIM);
    let out = Run::lease(
        &faa(tmp.path()),
        &out_dir.join("o.safetensors"),
        "GPU-aaaa",
        &[],
    )
    .run_as(VICTIM, tmp.path())
    .output(30);
    let entries = fs::read_dir(&squat).unwrap().count();
    fs::remove_dir(&squat).unwrap();
    assert_error(
        &out,
        &[&format!("{} belongs to uid {ATTACKER}", squat.display())],
    );
    assert_eq!(entries, 0);
}

#[test]
fn another_users_symlink_in_a_shared_dir_never_damages_the_victim() {
    if !two_users("another_users_symlink_in_a_shared_dir_never_damages_the_victim") {
        return;
    }
    let tmp = open_tempdir();
    let shared = shared_dir(tmp.path());
    // The victim's ~/.bashrc, and the attacker's link to it at a GPU's lock file name.
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    chown(&home, VICTIM);
    let bashrc = home.join(".bashrc");
    fs::write(&bashrc, "export PATH\n").unwrap();
    chmod(&bashrc, 0o600);
    chown(&bashrc, VICTIM);
    let link = lease::lock_path(&shared, "GPU-aaaa");
    std::os::unix::fs::symlink(&bashrc, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(ATTACKER), Some(ATTACKER)).unwrap();
    let input = faa(tmp.path());
    // The victim as root, then as an ordinary user.
    for uid in [None, Some(VICTIM)] {
        let mut run = Run::lease(&input, &home.join("o.safetensors"), "GPU-aaaa", &[])
            .lock_dir(&shared)
            .env("USER", "victim");
        if let Some(uid) = uid {
            run = run.run_as(uid, tmp.path());
        }
        let out = run.output(30);
        assert_error(&out, &["GPU-aaaa.lock is a symbolic link"]);
        unchanged(&bashrc, "export PATH\n", 0o600, VICTIM);
    }
}

#[test]
fn another_users_lock_file_is_locked_but_never_changed() {
    if !two_users("another_users_lock_file_is_locked_but_never_changed") {
        return;
    }
    let tmp = open_tempdir();
    let shared = shared_dir(tmp.path());
    let theirs = lease::lock_path(&shared, "GPU-aaaa");
    fs::write(&theirs, "pid=1 user=mallory\n").unwrap();
    chmod(&theirs, 0o666);
    chown(&theirs, ATTACKER);
    let out = Run::lease_in(tmp.path(), "GPU-aaaa")
        .lock_dir(&shared)
        .output(30);
    assert_leased(&out, "leased cuda:0 (GPU-aaaa)");
    unchanged(&theirs, "pid=1 user=mallory\n", 0o666, ATTACKER);
    // A file we made ourselves in the same directory does get our note.
    let ours = lease::lock_path(&shared, "GPU-bbbb");
    let out = Run::lease_in(tmp.path(), "GPU-bbbb")
        .lock_dir(&shared)
        .output(30);
    assert_leased(&out, "leased cuda:0 (GPU-bbbb)");
    let m = fs::metadata(&ours).unwrap();
    assert_eq!(m.uid(), 0);
    assert_eq!(m.mode() & 0o022, 0, "not writable by others");
    assert!(fs::read_to_string(&ours).unwrap().starts_with("pid="));
}

/// The child half of the two-user test: hold the leases named in `LEASE_TEST_KEYS` in
/// `LEASE_TEST_DIR` until killed.
#[test]
#[ignore = "run by two_users_share_a_root_owned_sticky_dir"]
fn lease_holder_child() {
    let (Ok(dir), Ok(keys)) = (
        std::env::var("LEASE_TEST_DIR"),
        std::env::var("LEASE_TEST_KEYS"),
    ) else {
        return;
    };
    let keys: Vec<&str> = keys.split(',').collect();
    let _held = hold(Path::new(&dir), &keys);
    println!("held {keys:?}");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn two_users_share_a_root_owned_sticky_dir() {
    if !two_users("two_users_share_a_root_owned_sticky_dir") {
        return;
    }
    let tmp = open_tempdir();
    let shared = shared_dir(tmp.path());
    // The other user's process, running this test binary's lease code, holds GPU-aaaa.
    let exe = exe_for_all(&std::env::current_exe().unwrap(), tmp.path());
    let mut child = Command::new(&exe)
        .args([
            "--exact",
            &crate::common::test_name(module_path!(), "lease_holder_child"),
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LEASE_TEST_DIR", &shared)
        .env("LEASE_TEST_KEYS", "GPU-aaaa")
        .env("USER", "other")
        .uid(ATTACKER)
        .gid(ATTACKER)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("held [") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the other user's process got no lease"
        );
    }
    let theirs = lease::lock_path(&shared, "GPU-aaaa");
    let their_mode = fs::metadata(&theirs).unwrap().mode() & 0o7777;
    assert_eq!(fs::metadata(&theirs).unwrap().uid(), ATTACKER);
    let their_note = fs::read_to_string(&theirs).unwrap();
    assert!(
        their_note.starts_with(&format!("pid={} uid={ATTACKER} user=other", child.id())),
        "{their_note}"
    );

    let input = faa(tmp.path());
    let o = tmp.path().join("o.safetensors");
    let doc = json(
        &Run::devices("GPU-aaaa,GPU-bbbb")
            .lock_dir(&shared)
            .output(30),
    );
    let who = doc["cuda_devices"][0]["leased_by"].as_str().unwrap();
    assert!(
        who.starts_with(&format!("pid {}, user other, uid {ATTACKER}", child.id())),
        "{who}"
    );
    // Root takes the GPU the other user does not hold...
    let out = Run::lease(&input, &o, "GPU-aaaa,GPU-bbbb", &[])
        .lock_dir(&shared)
        .output(30);
    assert_leased(&out, "leased cuda:1 (GPU-bbbb)");
    // ...and with both held, gives up naming both holders.
    let _mine = hold(&shared, &["GPU-bbbb"]);
    let out = Run::lease(
        &input,
        &o,
        "GPU-aaaa,GPU-bbbb",
        &["--gpu-lease-timeout", "1"],
    )
    .lock_dir(&shared)
    .output(30);
    assert_error(
        &out,
        &[
            &format!(
                "cuda:0 (GPU-aaaa) held by pid {}, user other, uid {ATTACKER}",
                child.id()
            ),
            &format!("cuda:1 (GPU-bbbb) held by pid {}, ", std::process::id()),
        ],
    );
    // Killed, the other process cannot clean up: the kernel frees its GPU, whose file root
    // then locks without touching it.
    child.kill().unwrap();
    child.wait().unwrap();
    let out = Run::lease(&input, &o, "GPU-aaaa,GPU-bbbb", &[])
        .lock_dir(&shared)
        .output(30);
    assert_leased(&out, "leased cuda:0 (GPU-aaaa)");
    unchanged(&theirs, &their_note, their_mode, ATTACKER);
}
