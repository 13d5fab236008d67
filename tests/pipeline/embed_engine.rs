//! The embedding engine's promises, on the CPU with the tiny reference models: the same bytes
//! whatever the number of workers; failed batches split and retried, failed records listed with
//! exit code 2; killed (`kill -9`) and stopped (SIGTERM) runs resumed to byte-identical output;
//! GPU lease files exclusive between processes; `virnucpro devices`.
//!
//! Faults are injected with the engine's test hooks (`VIRNUCPRO_TEST_*`, see
//! `src/embed/engine.rs` and `src/embed/checkpoint.rs`).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, fixtures, s, stderr};
use virnucpro::io::embeddings::EmbeddingSet;

/// translate the e2e input (chunk 500) into `dir`; returns (nucleotide .fa, protein .faa).
fn orfs(dir: &Path) -> (PathBuf, PathBuf) {
    let out = dir.join("translate");
    let o = crate::common::run(
        &[
            "translate",
            s(&fixtures().join("e2e/input.fa")),
            "-c",
            "500",
            "-o",
            s(&out),
            "-q",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    (
        out.join("identified_nucleotide.fa"),
        out.join("identified_protein.faa"),
    )
}

/// `embed-<kind> input -m model -o output` plus `extra`, with `env` set.
fn embed(kind: &str, input: &Path, output: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let model = fixtures().join(if kind == "dna" {
        "dnabert_s_tiny"
    } else {
        "esm2_tiny"
    });
    let mut cmd = bin();
    cmd.args([
        &format!("embed-{kind}"),
        s(input),
        "-m",
        s(&model),
        "-o",
        s(output),
    ])
    .args(extra)
    .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The reference for resume tests: the same input embedded in one go (budget 64 tokens).
fn uninterrupted(kind: &str, input: &Path, dir: &Path) -> PathBuf {
    let whole = dir.join(format!("whole.{kind}.safetensors"));
    let o = embed(kind, input, &whole, &["-b", "64"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    whole
}

fn parts_dir(output: &Path) -> PathBuf {
    output.with_file_name(format!(
        ".{}.parts",
        output.file_name().unwrap().to_string_lossy()
    ))
}

#[test]
fn any_number_of_workers_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (nt, aa) = orfs(tmp.path());
    for (kind, input) in [("dna", &nt), ("protein", &aa)] {
        let mut files = Vec::new();
        for workers in ["1", "2", "3"] {
            let out = tmp.path().join(format!("{kind}{workers}.safetensors"));
            // A small budget: many batches, so the workers really share the queue.
            let o = embed(kind, input, &out, &["-t", workers, "-b", "64"], &[]);
            assert!(o.status.success(), "{}", stderr(&o));
            assert!(!parts_dir(&out).exists(), "checkpoint left behind");
            files.push(fs::read(&out).unwrap());
        }
        assert!(
            files[0] == files[1] && files[1] == files[2],
            "{kind}: outputs differ by worker count"
        );
    }
}

#[test]
fn failed_records_are_listed_and_the_run_goes_on_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, aa) = orfs(tmp.path());
    let clean = tmp.path().join("clean.safetensors");
    assert!(embed("protein", &aa, &clean, &["-t", "2"], &[])
        .status
        .success());
    let clean = EmbeddingSet::read(&clean).unwrap();
    let bad = ["rev_orf_500_chunk_1R1", "long_mixed_chunk_2F3"];
    let bad = bad
        .iter()
        .copied()
        .filter(|b| clean.ids.iter().any(|i| i == b))
        .collect::<Vec<_>>();
    assert_eq!(bad.len(), 2, "fixture ids changed: {:?}", clean.ids);

    let out = tmp.path().join("faulty.safetensors");
    // One batch holding everything: it fails like an OOM, is split, and halves are retried
    // until each bad record fails alone.
    let o = embed(
        "protein",
        &aa,
        &out,
        &["-t", "2", "-b", "100000"],
        &[("VIRNUCPRO_TEST_FAIL_IDS", &bad.join(","))],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("retrying it as two halves"), "{err}");
    assert!(
        !err.contains("panicked"),
        "caught panics must not be printed as crashes:\n{err}"
    );
    let tsv = fs::read_to_string(tmp.path().join("faulty.safetensors.failed.tsv")).unwrap();
    let mut lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines.remove(0), "id\tstep\treason");
    lines.sort();
    let mut want: Vec<String> = bad
        .iter()
        .map(|b| format!("{b}\tembed-protein\tinjected failure for {b}"))
        .collect();
    want.sort();
    assert_eq!(lines, want);

    // Everything else is there, in input order, with the clean run's numbers.
    let got = EmbeddingSet::read(&out).unwrap();
    let kept: Vec<&String> = clean
        .ids
        .iter()
        .filter(|i| !bad.contains(&i.as_str()))
        .collect();
    assert_eq!(got.ids.iter().collect::<Vec<_>>(), kept);
    for (r, id) in got.ids.iter().enumerate() {
        let c = clean.ids.iter().position(|i| i == id).unwrap();
        for (a, b) in got.row(r).iter().zip(clean.row(c)) {
            assert!((a - b).abs() <= 1e-5, "{id}: {a} vs {b}");
        }
    }

    // A later clean run removes the stale list.
    let o = embed("protein", &aa, &out, &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!tmp.path().join("faulty.safetensors.failed.tsv").exists());
}

/// A device out of memory (injected where a batch enters the backend, with the text CubeCL's
/// allocator raises) splits the batch in halves until they fit, on CPU workers and on a GPU
/// worker (a fake GPU: the path that gives the failed batch's buffers back before the halves
/// run); nothing is reported failed and every row equals an unsplit run's.
#[test]
fn out_of_memory_batches_split_until_they_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, aa) = orfs(tmp.path());
    let whole = tmp.path().join("whole.safetensors");
    let o = embed("protein", &aa, &whole, &["-t", "2", "-b", "100000"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let whole = EmbeddingSet::read(&whole).unwrap();
    let n = whole.ids.len();
    assert!(n > 8, "the fixture has {n} ORFs");
    for (device, fake) in [("cpu", None), ("cuda", Some("GPU-aaaa"))] {
        let out = tmp.path().join(format!("split.{device}.safetensors"));
        let mut env = vec![("VIRNUCPRO_TEST_DEVICE_TOKENS", "400")];
        if let Some(gpu) = fake {
            env.push(("VIRNUCPRO_FAKE_GPUS", gpu));
        }
        let o = embed(
            "protein",
            &aa,
            &out,
            &["-t", "2", "-b", "100000", "--device", device],
            &env,
        );
        let log = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{device}: {log}");
        assert!(log.contains("out-of-memory error"), "{device}: {log}");
        assert!(log.contains("retrying it as two halves"), "{device}: {log}");
        assert!(!log.contains("panicked"), "{device}: {log}");
        assert!(!tmp
            .path()
            .join(format!("split.{device}.safetensors.failed.tsv"))
            .exists());
        let got = EmbeddingSet::read(&out).unwrap();
        assert_eq!(got.ids, whole.ids, "{device}");
        let worst = got
            .values
            .iter()
            .zip(&whole.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{device}: split rows differ by {worst}");
    }
}

#[test]
fn a_worker_failing_everything_stops_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, aa) = orfs(tmp.path());
    let ids: Vec<String> = fs::read_to_string(&aa)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix('>').map(str::to_string))
        .collect();
    let out = tmp.path().join("p.safetensors");
    let o = embed(
        "protein",
        &aa,
        &out,
        &["-t", "1", "-b", "1"],
        &[("VIRNUCPRO_TEST_FAIL_IDS", &ids.join(","))],
    );
    crate::common::assert_error(
        &o,
        &[
            "cpu#0 failed 16 sequences in a row",
            "the device or model is broken",
        ],
    );
    // Not an interruption: running again cannot help until the cause is fixed.
    assert!(!stderr(&o).contains("run the same command again"));
    assert!(!out.exists(), "no output that looks complete");
}

#[test]
fn killed_run_resumes_to_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (nt, _) = orfs(tmp.path());
    let whole = uninterrupted("dna", &nt, tmp.path());

    let out = tmp.path().join("dna.safetensors");
    // Dies like kill -9 right after the second checkpoint part is written.
    let o = embed(
        "dna",
        &nt,
        &out,
        &["-t", "2", "-b", "64", "--checkpoint-secs", "0"],
        &[("VIRNUCPRO_TEST_ABORT_AFTER_CHECKPOINTS", "2")],
    );
    assert!(!o.status.success());
    assert!(
        !out.exists(),
        "a killed run must not leave an output that looks complete"
    );
    let parts = fs::read_dir(parts_dir(&out)).unwrap().count();
    assert_eq!(parts, 3, "plan.json + 2 parts");

    // Same arguments but another worker count: resumes, embeds only the rest, same bytes.
    let o = embed("dna", &nt, &out, &["-t", "1", "-b", "64"], &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming:"), "{err}");
    assert_eq!(fs::read(&out).unwrap(), fs::read(&whole).unwrap());
    assert!(!parts_dir(&out).exists());
}

#[test]
fn checkpoint_of_other_inputs_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let (nt, _) = orfs(tmp.path());
    let out = tmp.path().join("dna.safetensors");
    let env = [("VIRNUCPRO_TEST_ABORT_AFTER_CHECKPOINTS", "1")];
    assert!(!embed(
        "dna",
        &nt,
        &out,
        &["-b", "64", "--checkpoint-secs", "0"],
        &env
    )
    .status
    .success());
    // A different input with the same output name: the old parts must not leak in.
    let fewer = tmp.path().join("fewer.fa");
    let text = fs::read_to_string(&nt).unwrap();
    fs::write(
        &fewer,
        text.lines().take(10).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let o = embed("dna", &fewer, &out, &["-b", "64"], &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("starting afresh") && !err.contains("resuming:"),
        "{err}"
    );
    let direct = tmp.path().join("direct.safetensors");
    assert!(embed("dna", &fewer, &direct, &["-b", "64"], &[])
        .status
        .success());
    assert_eq!(fs::read(&out).unwrap(), fs::read(&direct).unwrap());
}

#[test]
fn sigterm_saves_finished_batches_and_the_rerun_completes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, aa) = orfs(tmp.path());
    let whole = uninterrupted("protein", &aa, tmp.path());

    let out = tmp.path().join("p.safetensors");
    let model = fixtures().join("esm2_tiny");
    let mut child = bin()
        .args([
            "embed-protein",
            s(&aa),
            "-m",
            s(&model),
            "-o",
            s(&out),
            "-b",
            "64",
            "-t",
            "2",
        ])
        .args(["--checkpoint-secs", "0"])
        .env("VIRNUCPRO_TEST_BATCH_DELAY_MS", "250")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first saved part, then ask the process to stop.
    let started = Instant::now();
    while fs::read_dir(parts_dir(&out)).map_or(true, |d| d.count() < 2) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut err = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        err.push_str(&line.unwrap());
        err.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(
        err.contains("error: stopped by SIGTERM")
            && err.contains("run the same command again to resume"),
        "{err}"
    );
    assert!(!out.exists());

    let o = embed("protein", &aa, &out, &["-b", "64", "-t", "2"], &[]);
    let err = stderr(&o);
    assert!(o.status.success() && err.contains("resuming:"), "{err}");
    assert_eq!(fs::read(&out).unwrap(), fs::read(&whole).unwrap());
}

#[test]
fn run_finishes_without_failed_records_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut cmd = bin();
    cmd.args([
        "run",
        s(&fixtures().join("e2e/input.fa")),
        "-c",
        "500",
        "-o",
        s(&out),
    ])
    .args(["--dnabert", s(&fixtures().join("dnabert_s_tiny"))])
    .args(["--esm", s(&fixtures().join("esm2_tiny"))])
    .args(["--classifier", s(&fixtures().join("mlp_tiny.pth"))])
    .env("VIRNUCPRO_TEST_FAIL_IDS", "rev_orf_500_chunk_1R1")
    .stdin(Stdio::null());
    let o = cmd.output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(
        report["failed"], 2,
        "the ORF fails in both embedding steps: {report}"
    );
    assert_eq!(report["failed_files"].as_array().unwrap().len(), 2);
    assert!(report["peak_rss_mb"].as_f64().unwrap() > 1.0);
    let steps = report["steps"].as_array().unwrap();
    let dna = steps.iter().find(|s| s["step"] == "embed-dna").unwrap();
    assert!(dna["report"]["per_device"]
        .as_array()
        .is_some_and(|d| !d.is_empty()));
    for f in [
        "embeddings/dna.safetensors.failed.tsv",
        "embeddings/protein.safetensors.failed.tsv",
    ] {
        assert!(
            fs::read_to_string(out.join(f))
                .unwrap()
                .contains("rev_orf_500_chunk_1R1"),
            "{f}"
        );
    }
    // The tables are complete without that ORF.
    let table = fs::read_to_string(out.join("prediction_results.txt")).unwrap();
    assert!(!table.contains("rev_orf_500_chunk_1R1") && table.contains("fwd_orf_500_chunk_1F1"));
}

#[test]
fn devices_lists_what_auto_uses() {
    let o = crate::common::run(&["devices"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("--device auto uses:"), "{text}");
    let o = crate::common::run(&["devices", "--json"], None);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(doc["cpu_cores"].as_u64().unwrap() >= 1);
    if doc["cuda_devices"].as_array().unwrap().is_empty() {
        assert!(doc["auto"].as_str().unwrap().starts_with("cpu"), "{doc}");
    }
}

/// The child half of the lease test: hold a lease and wait to be killed.
#[test]
#[ignore = "run by lease_files_exclude_a_second_process"]
fn lease_holder_child() {
    let Ok(dir) = std::env::var("LEASE_TEST_DIR") else {
        return;
    };
    let gpus: Vec<(usize, String)> = (0..2).map(|i| (i, format!("GPU-test-{i}"))).collect();
    let lease = virnucpro::device::lease::try_acquire(&gpus, 2, Path::new(&dir)).unwrap();
    println!("held {:?}", lease.indices);
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn lease_files_exclude_a_second_process() {
    use virnucpro::device::lease;
    let tmp = tempfile::tempdir().unwrap();
    let gpus: Vec<(usize, String)> = (0..2).map(|i| (i, format!("GPU-test-{i}"))).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &crate::common::test_name(module_path!(), "lease_holder_child"),
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LEASE_TEST_DIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // libtest may print "test lease_holder_child ... " on the same line.
    while !line.contains("held [") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child ended without a lease"
        );
    }
    assert!(line.trim_end().ends_with("held [0, 1]"), "{line}");
    // Both GPUs are held by the other process: nothing for us.
    let none = lease::try_acquire(&gpus, 1, tmp.path()).unwrap();
    assert!(none.indices.is_empty());
    let err = lease::acquire(&gpus, 1, tmp.path(), Some(Duration::from_millis(100))).unwrap_err();
    assert!(format!("{err:#}").contains("leased by other processes"));
    assert!(lease::holder(tmp.path(), "GPU-test-1")
        .unwrap()
        .starts_with(&format!("pid {}, ", child.id())));
    // Killed with -9, it cannot clean up: the kernel releases its locks anyway.
    child.kill().unwrap();
    child.wait().unwrap();
    let got = lease::acquire(&gpus, 1, tmp.path(), Some(Duration::from_secs(10))).unwrap();
    assert_eq!(got.indices, vec![0]);
}

#[test]
fn config_file_sets_defaults_and_flags_override() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("v.toml");
    fs::write(&cfg, "[translate]\nchunk_size = 300\n").unwrap();
    let input = fixtures().join("e2e/input.fa");
    for (extra, golden) in [(vec![], "chunk300"), (vec!["-c", "500"], "chunk500")] {
        let out = tmp.path().join(golden);
        let mut args = vec![
            "--config",
            s(&cfg),
            "translate",
            s(&input),
            "-o",
            s(&out),
            "-q",
        ];
        args.extend(extra);
        let o = crate::common::run(&args, None);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            fs::read(out.join("identified_protein.faa")).unwrap(),
            fs::read(
                fixtures()
                    .join("e2e")
                    .join(golden)
                    .join("identified_protein.faa")
            )
            .unwrap(),
            "{golden}"
        );
    }
    fs::write(&cfg, "[translate]\nchunksize = 300\n").unwrap();
    let o = crate::common::run(
        &[
            "--config",
            s(&cfg),
            "translate",
            s(&input),
            "-o",
            s(tmp.path()),
        ],
        None,
    );
    crate::common::assert_error(&o, &["v.toml", "chunksize"]);
}

#[test]
fn a_retry_in_a_fresh_directory_resumes_from_a_shared_checkpoint_dir() {
    // What a Nextflow retry looks like: a new work directory, the input and model staged
    // there again (symlinks), the same output name, and --checkpoint-dir on shared storage.
    let tmp = tempfile::tempdir().unwrap();
    let (_, aa) = orfs(tmp.path());
    let whole = uninterrupted("protein", &aa, tmp.path());
    let shared = tmp.path().join("shared");
    let stage = |dir: &str| {
        let d = tmp.path().join(dir);
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(&aa, d.join("shard.faa")).unwrap();
        std::os::unix::fs::symlink(fixtures().join("esm2_tiny"), d.join("esm2_tiny")).unwrap();
        d
    };
    let run_in = |d: &Path, env: &[(&str, &str)]| {
        let mut cmd = bin();
        cmd.current_dir(d)
            .args([
                "embed-protein",
                "shard.faa",
                "-m",
                "esm2_tiny",
                "-o",
                "s1.protein.safetensors",
            ])
            .args([
                "-b",
                "64",
                "--checkpoint-secs",
                "0",
                "--checkpoint-dir",
                s(&shared),
            ])
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let first = stage("work1");
    let o = run_in(&first, &[("VIRNUCPRO_TEST_ABORT_AFTER_CHECKPOINTS", "2")]);
    assert!(!o.status.success());
    assert!(
        !parts_dir(&first.join("s1.protein.safetensors")).exists(),
        "nothing beside the output"
    );
    // In a shared directory the parts are keyed by the work's fingerprint as well as the name.
    let keyed: Vec<_> = fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".s1.protein.safetensors.") && n.ends_with(".parts"))
        .collect();
    assert_eq!(keyed.len(), 1, "{keyed:?}");
    assert!(shared.join(&keyed[0]).join("plan.json").exists());

    let retry = stage("work2");
    let o = run_in(&retry, &[]);
    let err = stderr(&o);
    assert!(o.status.success() && err.contains("resuming:"), "{err}");
    assert!(
        fs::read(retry.join("s1.protein.safetensors")).unwrap() == fs::read(&whole).unwrap(),
        "the resumed output differs from an uninterrupted run"
    );
    assert!(!shared.join(&keyed[0]).exists());
}
