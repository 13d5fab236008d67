//! Helpers shared by the integration tests: the built binary and the fixture paths.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod parity;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A path as the `&str` an argument list takes (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_virnucpro"))
}

/// Run the binary with `args`, optional stdin bytes; returns the output.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    run_env(args, &[], stdin)
}

/// [`run`] with `env` set.
pub fn run_env(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = bin();
    cmd.args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn virnucpro");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Assert a failed run with exactly one `error:` line mentioning every `needle`.
pub fn assert_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr:\n{err}"
    );
    assert_one_error_line(o, 1, needles);
}

/// Exit code `code`, exactly one `error:` line containing every needle, and no panic; returns
/// the stderr.
fn assert_one_error_line(o: &Output, code: i32, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, stderr:\n{err}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "error line {:?} lacks {n:?}",
            lines[0]
        );
    }
    assert!(!err.contains("panicked"), "panic in stderr:\n{err}");
    err
}

/// Compare a run's prediction tables in `out` with the end-to-end goldens of chunk size `chunk`
/// (tests/fixtures/e2e/chunk<chunk>): ids, labels and the highest-score table exact, scores
/// within 1e-4. Returns the largest score difference.
pub fn check_e2e_goldens(out: &Path, chunk: &str) -> f32 {
    check_e2e_goldens_within(out, chunk, 1e-4)
}

/// [`check_e2e_goldens`] with the scores within `score_tol` (reduced precision: the calls
/// must still be the same); returns the largest score difference.
pub fn check_e2e_goldens_within(out: &Path, chunk: &str, score_tol: f32) -> f32 {
    let golden = fixtures().join(format!("e2e/chunk{chunk}"));
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let want = read(golden.join("prediction_results.txt"));
    let got = read(out.join("prediction_results.txt"));
    let (want, got): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    assert_eq!(want.len(), got.len(), "row count");
    assert_eq!(want[0], got[0], "header");
    let mut worst = 0f32;
    for (w, g) in want.iter().zip(&got).skip(1) {
        let (w, g): (Vec<&str>, Vec<&str>) = (w.split('\t').collect(), g.split('\t').collect());
        assert_eq!(w[..2], g[..2], "id/label");
        for c in 2..4 {
            let (a, b): (f32, f32) = (w[c].parse().unwrap(), g[c].parse().unwrap());
            assert!((a - b).abs() <= score_tol, "{}: score {c} {a} vs {b}", w[0]);
            worst = worst.max((a - b).abs());
        }
    }
    assert_eq!(
        read(golden.join("prediction_results_highestscore.csv")),
        read(out.join("prediction_results_highestscore.csv")),
        "prediction_results_highestscore.csv (chunk {chunk})"
    );
    worst
}

/// FASTA records as (id line, sequence) pairs, for record-by-record comparison messages.
pub fn records(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix('>') {
            out.push((h.to_string(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line);
        }
    }
    out
}

/// One golden case of a model fixture's `cases.json` (see tests/fixtures/README.md).
pub struct Case {
    pub id: String,
    pub sequence: String,
    pub token_ids: Vec<u32>,
    pub embedding: Vec<f32>,
}

/// The cases of `tests/fixtures/<model>/cases.json`.
pub fn model_cases(model: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join(model).join("cases.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            id: c["id"].as_str().unwrap().to_string(),
            sequence: c["sequence"].as_str().unwrap().to_string(),
            token_ids: serde_json::from_value(c["token_ids"].clone()).unwrap(),
            embedding: serde_json::from_value(c["embedding"].clone()).unwrap(),
        })
        .collect()
}

/// Cosine similarity of two embeddings, in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The full name libtest gives the test `name` of the module `module` (`module_path!()` of the
/// caller): tests are grouped one binary per area, so a test's name carries its module.
pub fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    }
}

/// Re-runs the test `name` of the module `module` (`module_path!()`) of the current test binary
/// in a child process with `env` set, and fails unless it ran there and passed; returns its
/// stderr. For checks that need process-wide state (a backend's default dtype can be set only
/// once per process).
pub fn run_test_in_child(module: &str, name: &str, env: (&str, &str)) -> String {
    let name = &test_name(module, name);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture"])
        .env(env.0, env.1)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{log}");
    assert!(
        out.status.success(),
        "{name} with {}={} failed:\n{stdout}{log}",
        env.0,
        env.1,
    );
    // A name that matches no test runs nothing and succeeds: that must not pass for a check.
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run in the child:\n{stdout}{log}"
    );
    log
}

/// Run shellcheck on `scripts` and fail on any finding. Without shellcheck installed the check
/// is skipped with a note, unless REQUIRE_SHELLCHECK=1 (as .ci/run sets) makes that a failure.
pub fn shellcheck(scripts: &[PathBuf]) {
    let required = std::env::var("REQUIRE_SHELLCHECK").is_ok_and(|v| v == "1");
    let o = match Command::new("shellcheck").arg("--version").output() {
        Ok(o) if o.status.success() => o,
        _ => {
            assert!(
                !required,
                "shellcheck is not installed (REQUIRE_SHELLCHECK=1)"
            );
            eprintln!(
                "note: shellcheck not installed; {} script(s) not checked",
                scripts.len()
            );
            return;
        }
    };
    drop(o);
    let out = Command::new("shellcheck").args(scripts).output().unwrap();
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A run of the binary under hard limits, for hostile inputs: address space capped with
/// `prlimit --as` and wall time with `timeout`, so a memory or time bomb fails the test
/// instead of the machine. `mem_mib = 0` leaves memory unlimited.
pub fn run_bounded(args: &[&str], stdin: Option<&[u8]>, mem_mib: u64, secs: u64) -> Output {
    use std::io::Write;
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=5", &format!("{secs}")]);
    if mem_mib > 0 {
        cmd.args(["prlimit", &format!("--as={}", mem_mib << 20), "--"]);
    }
    cmd.arg(env!("CARGO_BIN_EXE_virnucpro"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawn timeout/prlimit/virnucpro");
    if let Some(bytes) = stdin {
        // The child may refuse early and close stdin: a broken pipe here is not the test's
        // concern.
        let _ = child.stdin.take().unwrap().write_all(bytes);
    }
    let out = child.wait_with_output().unwrap();
    assert_ne!(
        out.status.code(),
        Some(124),
        "timed out after {secs} s: {args:?}\nstderr:\n{}",
        stderr(&out)
    );
    assert_ne!(
        out.status.code(),
        Some(137),
        "killed after {secs} s: {args:?}\nstderr:\n{}",
        stderr(&out)
    );
    out
}

/// Assert a hostile input was refused cleanly: exit code `code`, exactly one `error:` line
/// containing every needle, no panic, no allocation abort, and none of `outputs` present
/// (temporary `.partial` files are hidden and do not count as outputs).
pub fn assert_refused(o: &Output, code: i32, needles: &[&str], outputs: &[&Path]) {
    let err = assert_one_error_line(o, code, needles);
    assert!(
        !err.contains("memory allocation"),
        "allocation abort:\n{err}"
    );
    for p in outputs {
        assert!(!p.exists(), "{} exists after a refused run", p.display());
    }
}
