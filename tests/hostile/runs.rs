//! Runs that must never mix, with one writer per output, and errors that come early and say
//! what helps: a re-run of `run -` with other stdin content; two writers on one output or one
//! checkpoint; a model that does not load; usage errors; wrong inputs and outputs caught before
//! the first step; failed records retried by a re-run. Each refusal is checked for its exit
//! code, exactly one `error:` line, and no output that looks finished.
//!
//! All on the CPU with the tiny reference models; faults come from the engine's test hooks
//! (`VIRNUCPRO_TEST_*`, see `src/embed/engine.rs` and `src/embed/checkpoint.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_refused, bin, fixtures, run_bounded, run_env, s, stderr};
use virnucpro::io::embeddings::EmbeddingSet;

fn dnabert() -> PathBuf {
    fixtures().join("dnabert_s_tiny")
}

fn esm() -> PathBuf {
    fixtures().join("esm2_tiny")
}

fn input() -> PathBuf {
    fixtures().join("e2e/input.fa")
}

/// Generous: a refusal takes well under a second; the bound only catches a hang.
const REFUSAL_SECS: u64 = 60;

/// `run` arguments on the tiny models, chunk 500, into `out`, plus `extra`.
fn run_args(input: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into(), input.into()];
    for (flag, value) in [
        ("--dnabert", dnabert()),
        ("--esm", esm()),
        ("--classifier", fixtures().join("mlp_tiny.pth")),
        ("-o", out.to_path_buf()),
    ] {
        args.push(flag.into());
        args.push(value.display().to_string());
    }
    args.extend(["-c", "500", "-d", "cpu"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What a finished `run` leaves: none of it may exist after a refusal.
fn run_outputs(out: &Path) -> Vec<PathBuf> {
    [
        "translate",
        "embeddings",
        "steps",
        "run.json",
        "prediction_results.txt",
    ]
    .iter()
    .map(|f| out.join(f))
    .collect()
}

fn refs(v: &[PathBuf]) -> Vec<&Path> {
    v.iter().map(PathBuf::as_path).collect()
}

/// Waits until `path` exists (a slow child has reached the point that writes it).
fn wait_for(path: &Path, child: &mut Child) {
    let started = Instant::now();
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the first writer ended ({status}) before {} appeared",
                path.display()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ask a child to stop (SIGTERM) and reap it.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn a_slow_embedding(out: &Path, extra: &[&str]) -> Child {
    bin()
        .args(["embed-protein", s(&protein_orfs())])
        .args(["-m", s(&esm()), "-o", s(out), "-b", "64", "-t", "1"])
        .args(extra)
        .env("VIRNUCPRO_TEST_BATCH_DELAY_MS", "500")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn protein_orfs() -> PathBuf {
    fixtures().join("e2e/chunk500/identified_protein.faa")
}

// ---- item 6: `run -` is keyed by the content of stdin ----

#[test]
fn run_from_stdin_with_other_content_redoes_every_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let whole = fs::read(input()).unwrap();
    let o = run_env(&strs(&run_args("-", &out, &[])), &[], Some(&whole));
    assert!(o.status.success(), "{}", stderr(&o));
    let first_table = fs::read_to_string(out.join("prediction_results.txt")).unwrap();

    // Same content again: every step resumes.
    let o = run_env(&strs(&run_args("-", &out, &[])), &[], Some(&whole));
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert_eq!(
        log.matches("outputs complete from an earlier run").count(),
        4,
        "{log}"
    );

    // Other content (the first two records only): nothing is reused, and the tables are those
    // of a fresh run on that content.
    let text = String::from_utf8(whole).unwrap();
    let third = text.match_indices("\n>").nth(1).unwrap().0 + 1;
    let two = text[..third].to_string();
    assert_eq!(two.matches('>').count(), 2);
    let o = run_env(&strs(&run_args("-", &out, &[])), &[], Some(two.as_bytes()));
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(!log.contains("outputs complete"), "{log}");
    let fresh_in = tmp.path().join("two.fa");
    fs::write(&fresh_in, &two).unwrap();
    let fresh = tmp.path().join("fresh");
    let o = run_env(&strs(&run_args(s(&fresh_in), &fresh, &[])), &[], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = fs::read_to_string(out.join("prediction_results.txt")).unwrap();
    assert_eq!(
        table,
        fs::read_to_string(fresh.join("prediction_results.txt")).unwrap()
    );
    assert_ne!(table, first_table);
    assert_eq!(fs::read_to_string(out.join("stdin.fa")).unwrap(), two);
}

#[test]
fn run_from_a_pipe_is_keyed_by_content_too() {
    // `run <(zcat sample.fa.gz)`: a path whose size and time say nothing of its content.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let fifo = tmp.path().join("pipe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let text = fs::read_to_string(input()).unwrap();
    let third = text.match_indices("\n>").nth(1).unwrap().0 + 1;
    let (a, b) = (tmp.path().join("a.fa"), tmp.path().join("b.fa"));
    fs::write(&a, &text).unwrap();
    fs::write(&b, &text[..third]).unwrap();
    let run_fed = |content: &Path| {
        let mut writer = Command::new("sh")
            .args(["-c", "cat \"$1\" > \"$2\"", "sh", s(content), s(&fifo)])
            .spawn()
            .unwrap();
        let o = run_env(&strs(&run_args(s(&fifo), &out, &[])), &[], None);
        let _ = writer.kill();
        let _ = writer.wait();
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
            .matches("outputs complete from an earlier run")
            .count()
    };
    assert_eq!(run_fed(&a), 0);
    assert_eq!(
        run_fed(&b),
        0,
        "other content through the same pipe: every step redone"
    );
    assert_eq!(run_fed(&b), 4, "the same content: every step resumed");
    assert_eq!(
        fs::read_to_string(out.join("stdin.fa")).unwrap(),
        text[..third]
    );
}

// ---- item 9: one writer per output, checkpoints of other inputs never touched ----

#[test]
fn a_second_writer_on_one_output_is_refused_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p.safetensors");
    let mut first = a_slow_embedding(&out, &[]);
    let pid = first.id();
    wait_for(
        &tmp.path().join(".p.safetensors.parts/plan.json"),
        &mut first,
    );
    let o = run_bounded(
        &[
            "embed-protein",
            s(&protein_orfs()),
            "-m",
            s(&esm()),
            "-o",
            s(&out),
        ],
        None,
        0,
        REFUSAL_SECS,
    );
    let holder = format!("(pid {pid}, ");
    assert_refused(
        &o,
        1,
        &[
            s(&out),
            "is being written by another virnucpro process",
            &holder,
            "since ",
            "wait for it or choose another --output",
        ],
        &[&out],
    );
    // The first writer's checkpoint is intact.
    assert!(tmp.path().join(".p.safetensors.parts/plan.json").exists());
    stop(first);
}

#[test]
fn a_second_run_on_one_outdir_is_refused_before_any_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let args = run_args(s(&input()), &out, &["-b", "64", "-t", "1"]);
    let mut first = bin()
        .args(&args)
        .env("VIRNUCPRO_TEST_BATCH_DELAY_MS", "500")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&out.join(".virnucpro.lock"), &mut first);
    let o = run_bounded(&strs(&args), None, 0, REFUSAL_SECS);
    assert_refused(
        &o,
        1,
        &[
            "is being written by another virnucpro process",
            &format!("(pid {}, ", first.id()),
            "choose another --outdir",
        ],
        &[&out.join("run.json"), &out.join("prediction_results.txt")],
    );
    stop(first);
}

#[test]
fn runs_sharing_a_checkpoint_dir_keep_their_own_checkpoints() {
    // Two samples in two directories, one shared --checkpoint-dir, the same output name (as
    // `run` always names it): the second sample's run must not clear the first's parts.
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    let embed = |input: &Path, dir: &str, env: &[(&str, &str)]| {
        let d = tmp.path().join(dir);
        fs::create_dir_all(&d).unwrap();
        let out = d.join("protein.safetensors");
        let o = run_env(
            &[
                "embed-protein",
                s(input),
                "-m",
                s(&esm()),
                "-o",
                s(&out),
                "-b",
                "64",
                "--checkpoint-secs",
                "0",
                "--checkpoint-dir",
                s(&shared),
            ],
            env,
            None,
        );
        (o, out)
    };
    let (o, _) = embed(
        &protein_orfs(),
        "a",
        &[("VIRNUCPRO_TEST_ABORT_AFTER_CHECKPOINTS", "2")],
    );
    assert!(!o.status.success(), "the abort hook should end the run");

    let fewer = tmp.path().join("fewer.faa");
    let text = fs::read_to_string(protein_orfs()).unwrap();
    fs::write(
        &fewer,
        text.lines().take(6).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let (o, _) = embed(&fewer, "b", &[]);
    let log = stderr(&o);
    assert!(o.status.success() && !log.contains("resuming:"), "{log}");

    let (o, resumed) = embed(&protein_orfs(), "a", &[]);
    let log = stderr(&o);
    assert!(o.status.success() && log.contains("resuming:"), "{log}");
    let (o, direct) = embed(&protein_orfs(), "c", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(resumed).unwrap(), fs::read(direct).unwrap());
    assert_eq!(
        fs::read_dir(&shared).unwrap().count(),
        0,
        "finished checkpoints and their locks are gone"
    );
}

// ---- item 10: a setup error is not an interruption ----

#[test]
fn a_model_that_does_not_load_gives_its_cause_without_resume_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("d.safetensors");
    let nt = fixtures().join("e2e/chunk500/identified_nucleotide.fa");
    // Caught by the checks before the step: config.json is not JSON.
    let broken = tmp.path().join("broken");
    fs::create_dir(&broken).unwrap();
    for f in ["tokenizer.json", "model.safetensors"] {
        fs::copy(dnabert().join(f), broken.join(f)).unwrap();
    }
    fs::write(broken.join("config.json"), "{ not json").unwrap();
    let o = run_bounded(
        &["embed-dna", s(&nt), "-m", s(&broken), "-o", s(&out)],
        None,
        0,
        REFUSAL_SECS,
    );
    assert_refused(
        &o,
        1,
        &["config.json", "not a DNABERT-S config.json"],
        &[&out],
    );
    let err = stderr(&o);
    assert!(
        !err.contains("run the same command again") && !err.contains(" in ;"),
        "{err}"
    );

    // Caught only when the engine builds the model: readable weights of another model.
    let wrong = tmp.path().join("wrong");
    fs::create_dir(&wrong).unwrap();
    for f in ["tokenizer.json", "config.json"] {
        fs::copy(dnabert().join(f), wrong.join(f)).unwrap();
    }
    fs::copy(
        esm().join("model.safetensors"),
        wrong.join("model.safetensors"),
    )
    .unwrap();
    let o = run_bounded(
        &["embed-dna", s(&nt), "-m", s(&wrong), "-o", s(&out)],
        None,
        0,
        REFUSAL_SECS,
    );
    assert_refused(&o, 1, &["model.safetensors"], &[&out]);
    let err = stderr(&o);
    assert!(
        !err.contains("run the same command again") && !err.contains("sequences are saved"),
        "{err}"
    );
}

// ---- item 11: usage errors have their own exit code ----

#[test]
fn usage_errors_exit_64_and_help_and_version_exit_0() {
    for args in [
        &["run", "--no-such-flag"][..],
        &["translate", "x.fa"][..],
        &["embed-dna", "x.fa", "-m", "m", "-o", "o", "-b", "zero"][..],
    ] {
        let o = run_bounded(args, None, 0, REFUSAL_SECS);
        assert_refused(&o, 64, &[], &[]);
    }
    // No subcommand at all: the help, on stderr, as a usage error.
    let o = run_bounded(&[], None, 0, REFUSAL_SECS);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("Usage: virnucpro"));
    for args in [&["--help"][..], &["run", "--help"][..], &["--version"][..]] {
        let o = run_bounded(args, None, 0, REFUSAL_SECS);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!o.stdout.is_empty());
    }
}

#[test]
fn negative_and_out_of_range_numbers_are_refused_by_the_flags_own_check() {
    // Before, clap read `-1` as a short flag ("unexpected argument '-1'"), and a NaN or 5 as
    // --min-viral-fraction was accepted (every sequence called one way, silently).
    let emb = ["--dna", "d.safetensors", "--protein", "p.safetensors"];
    let predict = |flag: &'static str, v: &'static str| {
        let mut a = vec!["predict"];
        a.extend(emb);
        a.extend(["--classifier", "c.pth", "-o", "out", flag, v]);
        a
    };
    let embed = |flag: &'static str, v: &'static str| {
        vec![
            "embed-dna",
            "x.fa",
            "-m",
            "m",
            "-o",
            "o.safetensors",
            flag,
            v,
        ]
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["translate", "x.fa", "-o", "out", "-c", "-1"],
            "the chunk length",
        ),
        (
            vec![
                "translate",
                "x.fa",
                "-o",
                "out",
                "-c",
                "500",
                "--threads",
                "-2",
            ],
            "the number of threads",
        ),
        (
            vec![
                "translate",
                "x.fa",
                "-o",
                "out",
                "-c",
                "500",
                "--shard-size",
                "0",
            ],
            "the ORFs per shard",
        ),
        (embed("--batch-tokens", "-1"), "the batch size in tokens"),
        (embed("--checkpoint-secs", "-5"), "the checkpoint interval"),
        (embed("--gpu-lease", "0"), "the number of GPUs to lease"),
        (embed("--gpu-lease-timeout", "-1"), "the lease timeout"),
        (
            predict("--min-viral-fraction", "-0.5"),
            "the viral fraction",
        ),
        (predict("--min-viral-fraction", "NaN"), "the viral fraction"),
        (predict("--min-viral-fraction", "5"), "the viral fraction"),
        (predict("--plot-top", "-1"), "the number of sequences drawn"),
        (
            vec![
                "dataset", "--viral", "v.fa", "--others", "o.fa", "-c", "500", "-o", "d", "--seed",
                "-1",
            ],
            "the seed",
        ),
    ];
    for (args, needle) in cases {
        let o = run_bounded(&args, None, 0, REFUSAL_SECS);
        assert_refused(&o, 64, &[needle], &[]);
        assert!(
            !stderr(&o).contains("unexpected argument"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

// ---- item 12: everything a command needs is checked before its first step ----

/// `run` with one argument replaced, refused before any step: exit 1, one error line with
/// `needles`, none of a run's outputs.
fn run_refused(out: &Path, input: &str, replace: (&str, &str), needles: &[&str]) {
    let mut args = run_args(input, out, &[]);
    if let Some(i) = args.iter().position(|a| a == replace.0) {
        args[i + 1] = replace.1.to_string();
    }
    let started = Instant::now();
    let o = run_bounded(&strs(&args), None, 0, REFUSAL_SECS);
    assert_refused(&o, 1, needles, &refs(&run_outputs(out)));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the refusal took {:?}",
        started.elapsed()
    );
}

#[test]
fn run_with_a_missing_classifier_is_refused_before_translating() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("300_model.pth");
    run_refused(
        &tmp.path().join("o"),
        s(&input()),
        ("--classifier", s(&missing)),
        &["--classifier", "300_model.pth"],
    );
}

#[test]
fn run_with_a_classifier_of_another_width_is_refused_before_translating() {
    let tmp = tempfile::tempdir().unwrap();
    let real_width = fixtures().join("mlp_3328x512.pth");
    run_refused(
        &tmp.path().join("o"),
        s(&input()),
        ("--classifier", s(&real_width)),
        &[
            "expects 3328-d features",
            "mlp_3328x512.pth does not fit --dnabert (48-d) + --esm (40-d)",
        ],
    );
}

#[test]
fn run_with_an_outdir_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("results");
    fs::write(&file, "not a directory").unwrap();
    run_refused(
        &file,
        s(&input()),
        ("-c", "500"),
        &["--outdir", "existing file"],
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a directory");
    // Below a file: cannot be created either.
    run_refused(
        &file.join("sub"),
        s(&input()),
        ("-c", "500"),
        &["is a file"],
    );
}

#[test]
fn run_with_a_dnabert_model_without_tokenizer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("bare");
    fs::create_dir(&bare).unwrap();
    for f in ["config.json", "model.safetensors"] {
        fs::copy(dnabert().join(f), bare.join(f)).unwrap();
    }
    run_refused(
        &tmp.path().join("o"),
        s(&input()),
        ("--dnabert", s(&bare)),
        &["--dnabert", "tokenizer.json"],
    );
}

#[test]
fn run_with_an_esm_model_without_weights_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("esm");
    fs::create_dir(&bare).unwrap();
    fs::copy(esm().join("config.json"), bare.join("config.json")).unwrap();
    run_refused(
        &tmp.path().join("o"),
        s(&input()),
        ("--esm", s(&bare)),
        &["--esm", "no ESM-2 weights found"],
    );
}

#[test]
fn run_with_a_missing_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("sample.fa");
    run_refused(
        &tmp.path().join("o"),
        s(&missing),
        ("-c", "500"),
        &["cannot open input", "sample.fa"],
    );
}

#[test]
fn embed_with_an_output_that_is_a_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_bounded(
        &[
            "embed-protein",
            s(&protein_orfs()),
            "-m",
            s(&esm()),
            "-o",
            s(tmp.path()),
        ],
        None,
        0,
        REFUSAL_SECS,
    );
    assert_refused(&o, 1, &["--output", "existing directory"], &[]);
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn embed_with_an_unwritable_report_is_refused_before_embedding() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p.safetensors");
    let file = tmp.path().join("a-file");
    fs::write(&file, "x").unwrap();
    // Tests may run as root, for whom permission bits do not bar writing: a report whose
    // directory is a file, or does not exist, cannot be written by anyone.
    for report in [file.join("r.json"), tmp.path().join("no/such/dir/r.json")] {
        let o = run_bounded(
            &[
                "embed-protein",
                s(&protein_orfs()),
                "-m",
                s(&esm()),
                "-o",
                s(&out),
                "--report",
                s(&report),
            ],
            None,
            0,
            REFUSAL_SECS,
        );
        assert_refused(&o, 1, &["--report", "not an existing directory"], &[&out]);
        assert!(!tmp.path().join(".p.safetensors.parts").exists());
    }
}

#[test]
fn translate_and_predict_with_an_outdir_that_is_a_file_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("out");
    fs::write(&file, "x").unwrap();
    let o = run_bounded(
        &["translate", s(&input()), "-c", "500", "-o", s(&file)],
        None,
        0,
        REFUSAL_SECS,
    );
    assert_refused(&o, 1, &["--outdir", "existing file"], &[]);
    let mlp = fixtures().join("mlp_tiny.pth");
    let o = run_bounded(
        &[
            "predict",
            "--dna",
            s(&mlp),
            "--protein",
            s(&mlp),
            "--classifier",
            s(&mlp),
            "-o",
            s(&file),
        ],
        None,
        0,
        REFUSAL_SECS,
    );
    assert_refused(&o, 1, &["--outdir", "existing file"], &[]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
}

// ---- item 16: a re-run retries what failed ----

#[test]
fn a_rerun_of_run_retries_the_sequences_that_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let args = run_args(s(&input()), &out, &[]);
    let bad = "rev_orf_500_chunk_1R1";
    let o = run_env(&strs(&args), &[("VIRNUCPRO_TEST_FAIL_IDS", bad)], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!fs::read_to_string(out.join("prediction_results.txt"))
        .unwrap()
        .contains(bad));

    // The fault was transient: the same command, without it, embeds just that ORF.
    let o = run_env(&strs(&args), &[], None);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(log.contains("translate: outputs complete"), "{log}");
    for step in ["embed-dna", "embed-protein"] {
        assert!(
            log.contains(&format!("{step}: retrying the 1 sequences that failed")),
            "{log}"
        );
    }
    assert_eq!(log.matches("resuming:").count(), 2, "{log}");
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    for f in ["dna", "protein"] {
        assert!(!out
            .join(format!("embeddings/{f}.safetensors.failed.tsv"))
            .exists());
        assert!(!out
            .join(format!("embeddings/.{f}.safetensors.parts"))
            .exists());
    }
    // The same calls as a run that never failed. (The ORFs that shared a batch with the
    // failing one were embedded in smaller batches: equal to float rounding, not bit for bit.)
    let clean = tmp.path().join("clean");
    let o = run_env(&strs(&run_args(s(&input()), &clean, &[])), &[], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = |dir: &Path| -> Vec<Vec<String>> {
        fs::read_to_string(dir.join("prediction_results.txt"))
            .unwrap()
            .lines()
            .map(|l| l.split('\t').map(String::from).collect())
            .collect()
    };
    let (got, want) = (rows(&out), rows(&clean));
    assert_eq!(got.len(), want.len());
    assert!(got.iter().any(|r| r[0] == bad), "the retried ORF is scored");
    for (g, w) in got.iter().zip(&want).skip(1) {
        assert_eq!(g[..2], w[..2], "id and call");
        for c in 2..4 {
            let (a, b): (f64, f64) = (g[c].parse().unwrap(), w[c].parse().unwrap());
            assert!((a - b).abs() <= 1e-4, "{}: {a} vs {b}", g[0]);
        }
    }
    assert_eq!(
        fs::read(out.join("prediction_results_highestscore.csv")).unwrap(),
        fs::read(clean.join("prediction_results_highestscore.csv")).unwrap()
    );
}

#[test]
fn a_rerun_of_an_embedding_retries_only_the_failed_sequences() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p.safetensors");
    let (orfs, model) = (protein_orfs(), esm());
    let args = [
        "embed-protein",
        s(&orfs),
        "-m",
        s(&model),
        "-o",
        s(&out),
        "-b",
        "64",
    ];
    let o = run_env(
        &args,
        &[("VIRNUCPRO_TEST_FAIL_IDS", "rev_orf_500_chunk_1R1")],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let failed_tsv = tmp.path().join("p.safetensors.failed.tsv");
    assert!(failed_tsv.exists());

    let o = run_env(&args, &[], None);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(
        log.contains("(1 to embed)"),
        "only the failed one is embedded again: {log}"
    );
    assert!(!failed_tsv.exists());
    let direct = tmp.path().join("direct.safetensors");
    let mut clean = args;
    clean[5] = s(&direct);
    assert!(run_env(&clean, &[], None).status.success());
    let (got, want) = (
        EmbeddingSet::read(&out).unwrap(),
        EmbeddingSet::read(&direct).unwrap(),
    );
    assert_eq!(got.ids, want.ids, "every sequence, in input order");
    // Rows once batched with the failing sequence went through smaller batches: float
    // rounding apart, the same numbers.
    for (a, b) in got.values.iter().zip(&want.values) {
        assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
    }
}
