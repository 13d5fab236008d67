//! Outputs under hostile conditions: a step's files appear together or not at all (a full disk,
//! simulated with a file-size limit; SIGTERM; `kill -9` and the re-run after it), and `predict`
//! refuses embeddings that are not finite numbers or do not fit the classifier. Each case checks
//! the exit code, exactly one `error:` line, and that nothing is left that looks finished.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_refused, fixtures, run, s, stderr};
use virnucpro::io::embeddings::{EmbeddingMeta, EmbeddingSet};

/// Every file under `dir` (relative path, contents), hidden ones included, sorted.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The names of the entries of `dir` (not recursive), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// Snapshot names only, for messages.
fn listing(snap: &[(String, Vec<u8>)]) -> Vec<&str> {
    snap.iter().map(|(n, _)| n.as_str()).collect()
}

/// Random G/C sequence records: no stop codon in any frame of either strand, so every chunk
/// keeps all six ORFs and the outputs are about six times the input.
fn gc_fasta(records: usize, len: usize, seed: u64) -> Vec<u8> {
    let mut rng = crate::common::parity::Lcg(seed.wrapping_mul(6364136223846793005) | 1);
    let mut out = Vec::with_capacity(records * (len + len / 60 + 20));
    for r in 0..records {
        out.extend_from_slice(format!(">gc{r}\n").as_bytes());
        for i in 0..len {
            let x = rng.next_u64();
            out.push(if (x >> 33) & 1 == 0 { b'G' } else { b'C' });
            if i % 60 == 59 {
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }
    out
}

/// Run the binary with the file-size limit (`ulimit -f`) set to `bytes`: every write past it
/// fails as on a full disk.
fn run_fsize(args: &[&str], bytes: u64) -> Output {
    Command::new("prlimit")
        .arg(format!("--fsize={bytes}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_virnucpro"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn prlimit virnucpro")
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "failed:\n{}", stderr(o));
}

fn translate(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["translate", s(input), "-o", s(out)];
    args.extend_from_slice(extra);
    run(&args, None)
}

// ---------------------------------------------------------------------------------------------
// translate: output sets

#[test]
fn translate_rerun_on_a_full_disk_keeps_the_complete_old_set() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.fa");
    fs::write(&input, gc_fasta(20, 50_000, 1)).unwrap();
    let out = tmp.path().join("t");
    assert_ok(&translate(&input, &out, &["-c", "500", "--write-chunks"]));
    let before = snapshot(&out);
    assert!(before.iter().any(|(n, _)| n == "translate.json"));
    // The new set (6 MB of ORFs) does not fit under 1 MiB per file.
    let o = run_fsize(
        &[
            "translate",
            s(&input),
            "-o",
            s(&out),
            "-c",
            "300",
            "--write-chunks",
        ],
        1 << 20,
    );
    assert_refused(&o, 1, &["File too large", "identified_"], &[]);
    assert_eq!(
        snapshot(&out),
        before,
        "the old set must stay whole: {:?}",
        listing(&snapshot(&out))
    );
}

#[test]
fn translate_on_a_full_disk_into_an_empty_directory_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.fa");
    fs::write(&input, gc_fasta(20, 50_000, 2)).unwrap();
    let out = tmp.path().join("t");
    // Unsharded, and in shards of 10000 ORFs (3 MB each).
    for extra in [&[][..], &["--shard-size", "10000"][..]] {
        let mut args = vec!["translate", s(&input), "-o", s(&out), "-c", "300"];
        args.extend_from_slice(extra);
        let o = run_fsize(&args, 1 << 20);
        assert_refused(
            &o,
            1,
            &["File too large"],
            &[&out.join("translate.json"), &out.join("shards")],
        );
        assert_eq!(names(&out), Vec::<String>::new(), "{extra:?}");
    }
}

#[test]
fn translate_rerun_replaces_the_whole_set_and_removes_what_it_no_longer_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixtures().join("e2e/input.fa");
    let out = tmp.path().join("t");
    // Many small shards and the chunks, then fewer shards without chunks: no old shard and no
    // old chunked.fa may survive beside the new set.
    assert_ok(&translate(
        &input,
        &out,
        &["-c", "300", "--shard-size", "2", "--write-chunks"],
    ));
    let many = names(&out.join("shards")).len();
    assert_ok(&translate(
        &input,
        &out,
        &["-c", "300", "--shard-size", "11"],
    ));
    let few = names(&out.join("shards"));
    assert!(few.len() < many, "{} shards, then {few:?}", many);
    assert_eq!(few.len(), 2 * 30usize.div_ceil(11), "{few:?}");
    assert_eq!(names(&out), ["shards", "translate.json"]);
    // Single files: the shards directory goes.
    assert_ok(&translate(&input, &out, &["-c", "500"]));
    assert_eq!(
        names(&out),
        [
            "identified_nucleotide.fa",
            "identified_protein.faa",
            "translate.json"
        ]
    );
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("translate.json")).unwrap()).unwrap();
    assert_eq!(summary["chunk_size"], 500);
}

/// Start `translate` reading FASTA from a pipe that is kept open: feed `input`, then wait until
/// its staged nucleotide file has data, so the signal lands mid-run.
fn translate_mid_run(out: &Path, input: &[u8]) -> (Child, std::process::ChildStdin) {
    let mut child = crate::common::bin()
        .args(["translate", "-", "-c", "300", "-o", s(out)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let started = Instant::now();
    loop {
        let staged = fs::read_dir(out).ok().and_then(|entries| {
            entries.flatten().find_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                (n.starts_with(".translate.json.") && n.ends_with(".partial"))
                    .then(|| e.path().join("identified_nucleotide.fa"))
            })
        });
        if staged.is_some_and(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "translate never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, stdin)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

#[test]
fn translate_stopped_by_sigterm_exits_143_and_leaves_the_old_set_and_no_temporaries() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t");
    assert_ok(&translate(
        &fixtures().join("e2e/input.fa"),
        &out,
        &["-c", "300"],
    ));
    let before = snapshot(&out);
    // Ten 1 Mbp records: the first batch (nine records, reaching 8 MiB) is translated and
    // staged once the tenth header ends the ninth record; then the input stalls (the pipe stays
    // open) until the signal.
    let (child, stdin) = translate_mid_run(&out, &gc_fasta(10, 1_000_000, 3));
    signal(&child, "-TERM");
    let started = Instant::now();
    let o = child.wait_with_output().unwrap();
    drop(stdin);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        started.elapsed()
    );
    assert_refused(&o, 143, &["SIGTERM", "run the same command again"], &[]);
    assert_eq!(
        snapshot(&out),
        before,
        "after SIGTERM: {:?}",
        listing(&snapshot(&out))
    );
}

#[test]
fn after_kill_9_nothing_looks_finished_and_the_next_run_removes_the_temporaries() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t");
    let (child, stdin) = translate_mid_run(&out, &gc_fasta(10, 1_000_000, 4));
    signal(&child, "-KILL");
    let o = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(o.status.code(), None, "killed by a signal");
    // The output lock's file stays too (hidden; the next run takes it over and removes it).
    let left = names(&out);
    assert!(
        left.iter().any(|n| n.ends_with(".partial"))
            && left
                .iter()
                .all(|n| n.starts_with('.') && (n.ends_with(".partial") || n == ".virnucpro.lock")),
        "only hidden temporaries and the lock file may remain: {left:?}"
    );
    // A temporary of some other program's file is not ours to remove.
    fs::write(out.join(".notes.txt.abc123.partial"), b"x").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_ok(&translate(
        &fixtures().join("e2e/input.fa"),
        &out,
        &["-c", "300"],
    ));
    assert_eq!(
        names(&out),
        [
            ".notes.txt.abc123.partial",
            "identified_nucleotide.fa",
            "identified_protein.faa",
            "translate.json"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// predict: output sets and embeddings it must refuse

/// The tiny classifier takes 88-d features: DNABERT-S tiny (48) + ESM-2 tiny (40).
const DNA_DIM: usize = 48;
const PROT_DIM: usize = 40;

fn orf_ids() -> Vec<String> {
    let mut ids = Vec::new();
    for seq in ["contigA", "contigB"] {
        for chunk in 1..=3 {
            for frame in ["F1", "R2"] {
                ids.push(format!("{seq}_chunk_{chunk}{frame}"));
            }
        }
    }
    ids
}

/// An embeddings file as `embed-dna` / `embed-protein` write it, with deterministic values,
/// and `poison` (row, column, value) written over them.
fn embeddings(path: &Path, kind: &str, dim: usize, poison: &[(usize, usize, f32)]) -> PathBuf {
    let ids = orf_ids();
    let mut values: Vec<f32> = (0..ids.len() * dim)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    for &(row, col, v) in poison {
        values[row * dim + col] = v;
    }
    EmbeddingSet {
        ids,
        dim,
        values,
        meta: EmbeddingMeta {
            kind: kind.into(),
            model: format!("{kind}_tiny"),
            pooling: "mean".into(),
            precision: "f32".into(),
        },
    }
    .write(path)
    .unwrap();
    path.to_path_buf()
}

fn predict_args(dna: &Path, prot: &Path, out: &Path) -> Vec<String> {
    let classifier = fixtures().join("mlp_tiny.pth");
    [
        "predict",
        "--dna",
        s(dna),
        "--protein",
        s(prot),
        "--classifier",
        s(&classifier),
        "-o",
        s(out),
    ]
    .map(str::to_string)
    .to_vec()
}

fn predict(args: &[String]) -> Output {
    run(&args.iter().map(String::as_str).collect::<Vec<_>>(), None)
}

fn predict_fsize(args: &[String], bytes: u64) -> Output {
    run_fsize(&args.iter().map(String::as_str).collect::<Vec<_>>(), bytes)
}

const PREDICT_OUTPUTS: [&str; 6] = [
    "prediction_results.txt",
    "prediction_results_highestscore.csv",
    "sequence_summary.tsv",
    "prediction.svg",
    "prediction.png",
    "predict.json",
];

/// Refused with one error line, and not one of predict's outputs written.
fn assert_predict_refused(o: &Output, out: &Path, needles: &[&str]) {
    let outputs: Vec<PathBuf> = PREDICT_OUTPUTS.iter().map(|n| out.join(n)).collect();
    let outputs: Vec<&Path> = outputs.iter().map(PathBuf::as_path).collect();
    assert_refused(o, 1, needles, &outputs);
    if out.exists() {
        assert_eq!(names(out), Vec::<String>::new(), "nothing, hidden or not");
    }
}

#[test]
fn predict_refuses_an_embeddings_file_of_nan() {
    let tmp = tempfile::tempdir().unwrap();
    let poison: Vec<(usize, usize, f32)> = (0..orf_ids().len())
        .flat_map(|r| (0..DNA_DIM).map(move |c| (r, c, f32::NAN)))
        .collect();
    let d = embeddings(&tmp.path().join("nan.safetensors"), "dna", DNA_DIM, &poison);
    let p = embeddings(&tmp.path().join("p.safetensors"), "protein", PROT_DIM, &[]);
    let out = tmp.path().join("o");
    let o = predict(&predict_args(&d, &p, &out));
    assert_predict_refused(
        &o,
        &out,
        &["nan.safetensors", "'contigA_chunk_1F1'", "row 1", "NaN"],
    );
}

#[test]
fn predict_refuses_one_infinite_value_naming_its_orf() {
    let tmp = tempfile::tempdir().unwrap();
    let d = embeddings(&tmp.path().join("d.safetensors"), "dna", DNA_DIM, &[]);
    // Row 8 (contigB_chunk_1R2), column 7.
    let p = embeddings(
        &tmp.path().join("inf.safetensors"),
        "protein",
        PROT_DIM,
        &[(7, 6, f32::NEG_INFINITY)],
    );
    let out = tmp.path().join("o");
    let o = predict(&predict_args(&d, &p, &out));
    assert_predict_refused(
        &o,
        &out,
        &[
            "inf.safetensors",
            "'contigB_chunk_1R2'",
            "row 8",
            "-inf",
            "column 7",
        ],
    );
}

#[test]
fn predict_refuses_widths_that_do_not_fit_the_classifier_naming_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = embeddings(&tmp.path().join("d.safetensors"), "dna", DNA_DIM, &[]);
    let p = embeddings(&tmp.path().join("wide.safetensors"), "protein", 64, &[]);
    let out = tmp.path().join("o");
    let o = predict(&predict_args(&d, &p, &out));
    assert_predict_refused(
        &o,
        &out,
        &["d.safetensors", "wide.safetensors", "88", "112"],
    );
}

#[test]
fn predict_refuses_a_file_whose_metadata_width_disagrees_with_its_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let d = embeddings(&tmp.path().join("d.safetensors"), "dna", DNA_DIM, &[]);
    let p = embeddings(&tmp.path().join("p.safetensors"), "protein", PROT_DIM, &[]);
    // Claim 48-d in the metadata of the 40-d protein file (same length, so the header parses).
    let mut bytes = fs::read(&p).unwrap();
    let at = bytes
        .windows(10)
        .position(|w| w == b"\"dim\":\"40\"")
        .expect("dim in the header");
    bytes[at + 7..at + 9].copy_from_slice(b"48");
    fs::write(&p, bytes).unwrap();
    let out = tmp.path().join("o");
    let o = predict(&predict_args(&d, &p, &out));
    assert_predict_refused(&o, &out, &["p.safetensors", "48-d", "40-d"]);
}

#[test]
fn predict_rerun_on_a_full_disk_keeps_the_complete_old_set() {
    let tmp = tempfile::tempdir().unwrap();
    let d = embeddings(&tmp.path().join("d.safetensors"), "dna", DNA_DIM, &[]);
    let p = embeddings(&tmp.path().join("p.safetensors"), "protein", PROT_DIM, &[]);
    let out = tmp.path().join("o");
    assert_ok(&predict(&predict_args(&d, &p, &out)));
    let before = snapshot(&out);
    assert_eq!(
        listing(&before),
        {
            let mut v = PREDICT_OUTPUTS.to_vec();
            v.sort();
            v
        },
        "a complete set"
    );
    // The figures are larger than 8 kB: the re-run fails while staging the first of them; with
    // room for the SVG, at the PNG (the tables are staged before either).
    let svg = fs::metadata(out.join("prediction.svg")).unwrap().len();
    assert!(fs::metadata(out.join("prediction.png")).unwrap().len() > svg + 16);
    for (limit, file) in [(8192, "prediction.svg"), (svg + 16, "prediction.png")] {
        let o = predict_fsize(&predict_args(&d, &p, &out), limit);
        assert_refused(
            &o,
            1,
            &[
                "File too large",
                file,
                "earlier outputs there are unchanged",
            ],
            &[],
        );
        assert_eq!(snapshot(&out), before, "{:?}", listing(&snapshot(&out)));
    }
    // Into an empty directory: nothing at all.
    let fresh = tmp.path().join("fresh");
    let o = predict_fsize(&predict_args(&d, &p, &fresh), 8192);
    assert_predict_refused(&o, &fresh, &["File too large"]);
}
