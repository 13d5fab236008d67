//! The whole pipeline on the tiny reference models, against the original's outputs: through the
//! separate subcommands (as Nextflow chains them) and through `run`, plus resume and bad input.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{
    assert_error, check_e2e_goldens, check_e2e_goldens_within, fixtures, records, run, run_env, s,
    stderr,
};

fn ok(args: &[&str]) {
    let o = run(args, None);
    assert!(
        o.status.success(),
        "virnucpro {args:?} failed:\n{}",
        stderr(&o)
    );
}

/// Compare a run's tables with the goldens ([`check_e2e_goldens`]: ids, labels and the chunk
/// table exact, scores 1e-4), and its summary and figures.
fn check_outputs(out: &Path, chunk: &str) {
    check_e2e_goldens(out, chunk);
    let summary = fs::read_to_string(out.join("sequence_summary.tsv")).unwrap();
    assert_eq!(
        summary.lines().count(),
        1 + 9,
        "one row per scored input sequence:\n{summary}"
    );
    for fig in ["prediction.svg", "prediction.png"] {
        assert!(fs::metadata(out.join(fig)).unwrap().len() > 1000, "{fig}");
    }
}

/// Per chunk id in a golden prediction_results.txt: (best others, best virus) over its ORFs.
fn golden_maxima(golden: &Path) -> HashMap<String, (f32, f32)> {
    let text = fs::read_to_string(golden.join("prediction_results.txt")).unwrap();
    let mut best: HashMap<String, (f32, f32)> = HashMap::new();
    for row in text.lines().skip(1) {
        let f: Vec<&str> = row.split('\t').collect();
        let (others, virus): (f32, f32) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        let e = best
            .entry(f[0][..f[0].len() - 2].to_string())
            .or_insert((0.0, 0.0));
        *e = (e.0.max(others), e.1.max(virus));
    }
    best
}

/// The golden chunk calls (prediction_results_highestscore.csv), in the table's order.
fn golden_calls(golden: &Path) -> Vec<(String, bool)> {
    let text = fs::read_to_string(golden.join("prediction_results_highestscore.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let (id, call) = l.split_once('\t').unwrap();
            (id.to_string(), call == "True")
        })
        .collect()
}

/// `key=value` fields of a viral FASTA header after its id.
fn fields(header: &str) -> (String, HashMap<String, String>) {
    let mut words = header.split(' ');
    let id = words.next().unwrap().to_string();
    let kv = words
        .map(|w| {
            let (k, v) = w.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    (id, kv)
}

/// viral_sequences.fa and viral_chunks.fa against the golden tables, record by record: which
/// records (derived from the original's chunk calls with the default 0.5 rule, and agreeing with
/// our sequence_summary.tsv), their order (the input's), their sequences (the input's and the
/// original's chunked.fa, unchanged) and their headers (the summary's printed numbers; the
/// chunks' best scores within 1e-4 of the original's). Returns (sequences, chunks) written.
fn check_viral_fasta(out: &Path, chunk: &str) -> (usize, usize) {
    let golden = fixtures().join(format!("e2e/chunk{chunk}"));
    let calls = golden_calls(&golden);
    let maxima = golden_maxima(&golden);
    // Per sequence: (chunks viral, chunks scored), from the original's table.
    let mut per_seq: HashMap<&str, (usize, usize)> = HashMap::new();
    for (id, call) in &calls {
        let seq = &id[..id.rfind("_chunk_").unwrap()];
        let e = per_seq.entry(seq).or_default();
        *e = (e.0 + usize::from(*call), e.1 + 1);
    }
    let summary = fs::read_to_string(out.join("sequence_summary.tsv")).unwrap();
    let rows: HashMap<&str, Vec<&str>> = summary
        .lines()
        .skip(1)
        .map(|l| (l.split('\t').next().unwrap(), l.split('\t').collect()))
        .collect();
    let input = records(&fs::read_to_string(fixtures().join("e2e/input.fa")).unwrap());
    let mut want = Vec::new();
    for (header, seq) in &input {
        let id = header.split(' ').next().unwrap();
        let Some(&(v, n)) = per_seq.get(id) else {
            assert!(
                !rows.contains_key(id),
                "{id}: no golden chunk, yet a summary row"
            );
            continue;
        };
        let row = &rows[id];
        let viral = v * 2 >= n && v > 0;
        assert_eq!(row[6], if viral { "virus" } else { "others" }, "{id} call");
        assert_eq!(
            (row[1], row[2]),
            (n.to_string().as_str(), v.to_string().as_str())
        );
        if viral {
            let header = format!(
                "{id} call=virus viral_fraction={} chunks_viral={v}/{n} max_virus_score={}",
                row[3], row[4]
            );
            want.push((header, seq.clone()));
            let golden_max = maxima
                .iter()
                .filter(|(c, _)| c.rsplit_once("_chunk_").unwrap().0 == id)
                .map(|(_, m)| m.1)
                .fold(0.0f32, f32::max);
            let ours: f32 = row[4].parse().unwrap();
            assert!(
                (ours - golden_max).abs() <= 1e-4,
                "{id}: max {ours} vs {golden_max}"
            );
        }
    }
    let got = records(&fs::read_to_string(out.join("viral_sequences.fa")).unwrap());
    assert_eq!(got, want, "viral_sequences.fa (chunk {chunk})");
    assert!(!want.is_empty(), "the goldens call some sequence viral");

    let chunked = records(&fs::read_to_string(golden.join("chunked.fa")).unwrap());
    let viral: Vec<&str> = calls.iter().filter(|c| c.1).map(|c| c.0.as_str()).collect();
    let want: Vec<&(String, String)> = chunked
        .iter()
        .filter(|(id, _)| viral.contains(&id.as_str()))
        .collect();
    assert_eq!(
        want.len(),
        viral.len(),
        "every viral chunk is in chunked.fa"
    );
    let text = fs::read_to_string(out.join("viral_chunks.fa")).unwrap();
    assert!(
        text.lines().all(|l| l.len() <= 60 || l.starts_with('>')),
        "60-column lines"
    );
    let got = records(&text);
    assert_eq!(
        got.len(),
        want.len(),
        "viral_chunks.fa records (chunk {chunk})"
    );
    for ((header, seq), (id, golden_seq)) in got.iter().zip(want) {
        let (got_id, kv) = fields(header);
        assert_eq!(&got_id, id, "order");
        assert_eq!(seq, golden_seq, "{id}: the chunk as the original cut it");
        assert_eq!(kv["call"], "virus");
        let (others, virus) = maxima[id];
        let (v, o): (f32, f32) = (
            kv["max_virus_score"].parse().unwrap(),
            kv["max_others_score"].parse().unwrap(),
        );
        assert!(
            (v - virus).abs() <= 1e-4 && (o - others).abs() <= 1e-4,
            "{id}: {header}"
        );
        assert!(v >= o, "{id}: called viral, so best virus >= best others");
        assert_eq!(kv.len(), 3, "{header}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("predict.json")).unwrap()).unwrap();
    let n_seqs = records(&fs::read_to_string(out.join("viral_sequences.fa")).unwrap()).len();
    assert_eq!(report["viral_sequences_fasta"]["records"], n_seqs);
    assert_eq!(report["viral_chunks_fasta"]["records"], got.len());
    assert_eq!(
        report["viral_chunks_fasta"]["records"],
        report["chunks_virus"]
    );
    assert_eq!(
        report["viral_sequences_fasta"]["records"],
        report["sequences_virus"]
    );
    (n_seqs, got.len())
}

fn models() -> (PathBuf, PathBuf, PathBuf) {
    (
        fixtures().join("dnabert_s_tiny"),
        fixtures().join("esm2_tiny"),
        fixtures().join("mlp_tiny.pth"),
    )
}

fn subcommands(chunk: &str) {
    let (dnabert, esm, mlp) = models();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("translate");
    ok(&[
        "translate",
        s(&fixtures().join("e2e/input.fa")),
        "-c",
        chunk,
        "-o",
        s(&t),
        "--shard-size",
        "11",
        "--write-chunks",
    ]);
    let mut dna = Vec::new();
    let mut prot = Vec::new();
    let mut shards: Vec<PathBuf> = fs::read_dir(t.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    shards.sort();
    for shard in shards.iter().filter(|p| s(p).ends_with(".fa")) {
        let k = shard
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .to_string();
        let faa = shard.with_file_name(format!("{k}.identified_protein.faa"));
        let d = tmp.path().join(format!("{k}.dna.safetensors"));
        let p = tmp.path().join(format!("{k}.protein.safetensors"));
        ok(&[
            "embed-dna",
            s(shard),
            "-m",
            s(&dnabert),
            "-o",
            s(&d),
            "--device",
            "cpu",
        ]);
        ok(&[
            "embed-protein",
            s(&faa),
            "-m",
            s(&esm),
            "-o",
            s(&p),
            "--device",
            "cpu",
        ]);
        dna.push(d);
        prot.push(p);
    }
    assert!(dna.len() > 1, "the test should exercise several shards");
    let out = tmp.path().join("predict");
    let mut args = vec!["predict", "--classifier", s(&mlp), "-o", s(&out), "--dna"];
    args.extend(dna.iter().map(|p| s(p)));
    args.push("--protein");
    // Protein shards in reverse order: the join is by id, not by position.
    args.extend(prot.iter().rev().map(|p| s(p)));
    // Without --sequences/--chunks: no viral FASTA, and predict.json's keys as before.
    ok(&args);
    check_outputs(&out, chunk);
    let no_fasta = fs::read_to_string(out.join("predict.json")).unwrap();
    assert!(!no_fasta.contains("viral_"), "{no_fasta}");
    let input = fixtures().join("e2e/input.fa");
    let chunked = t.join("chunked.fa");
    let mut with = args.clone();
    with.extend(["--sequences", s(&input), "--chunks", s(&chunked)]);
    ok(&with);
    check_outputs(&out, chunk);
    check_viral_fasta(&out, chunk);
    // A re-run without them removes the earlier viral files, which no longer belong to the set.
    ok(&args);
    for f in ["viral_sequences.fa", "viral_chunks.fa"] {
        assert!(!out.join(f).exists(), "{f} left from the earlier run");
    }
}

#[test]
fn subcommands_reproduce_original_chunk300() {
    subcommands("300");
}

#[test]
fn subcommands_reproduce_original_chunk500() {
    subcommands("500");
}

fn run_cmd(out: &Path, chunk: &str, extra: &[&str]) -> std::process::Output {
    run_cmd_env(out, chunk, extra, &[])
}

fn run_cmd_env(
    out: &Path,
    chunk: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let (dnabert, esm, mlp) = models();
    let input = fixtures().join("e2e/input.fa");
    let mut args = vec!["run", s(&input), "--dnabert", s(&dnabert), "--esm", s(&esm)];
    args.extend(["--classifier", s(&mlp), "-c", chunk, "-o", s(out)]);
    args.extend_from_slice(extra);
    run_env(&args, env, None)
}

#[test]
fn run_on_a_sample_without_orfs_writes_empty_tables() {
    let (dnabert, esm, mlp) = models();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("tiny.fa");
    fs::write(&input, b">too_short\nAC\n").unwrap();
    let out = tmp.path().join("o");
    let mut args = vec!["run", s(&input), "--dnabert", s(&dnabert), "--esm", s(&esm)];
    args.extend([
        "--classifier",
        s(&mlp),
        "-c",
        "500",
        "-o",
        s(&out),
        "-d",
        "cpu",
    ]);
    let o = run(&args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("hold no ORF"), "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(out.join("prediction_results_highestscore.csv")).unwrap(),
        "Modified_ID\tIs_Virus\n"
    );
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(report["failed"], 0);
    // Nothing viral: the files are there, empty.
    for f in ["viral_sequences.fa", "viral_chunks.fa"] {
        assert_eq!(fs::read_to_string(out.join(f)).unwrap(), "", "{f}");
    }
}

#[test]
fn run_reproduces_original_both_chunk_sizes() {
    for chunk in ["300", "500"] {
        let tmp = tempfile::tempdir().unwrap();
        let o = run_cmd(tmp.path(), chunk, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        check_outputs(tmp.path(), chunk);
        // run passes its input and translate's chunked.fa to predict.
        check_viral_fasta(tmp.path(), chunk);
        // Every step's outputs are kept.
        for f in [
            "translate/identified_nucleotide.fa",
            "translate/chunked.fa",
            "embeddings/dna.safetensors",
            "embeddings/protein.safetensors",
            "run.json",
        ] {
            assert!(tmp.path().join(f).exists(), "{f}");
        }
    }
}

/// `--precision bf16` and `int8` on the CPU (the projections' products in bf16, or W8A8 int8,
/// on AMX tiles where the CPU has them; f32 elsewhere, with a warning): the original's calls
/// for every chunk and sequence, scores within 1e-2, and the report says what computed.
#[test]
fn run_with_reduced_products_on_the_cpu_makes_the_original_calls() {
    use virnucpro::models::{ops::Matmul, reduced};
    for (precision, matmul, note) in [
        ("bf16", Matmul::Bf16, "bf16 matmuls"),
        ("int8", Matmul::Int8, "int8 matmuls (W8A8"),
    ] {
        let amx = reduced::available(matmul);
        for chunk in ["300", "500"] {
            let tmp = tempfile::tempdir().unwrap();
            let o = run_cmd(tmp.path(), chunk, &["-d", "cpu", "--precision", precision]);
            assert!(o.status.success(), "{}", stderr(&o));
            let worst = check_e2e_goldens_within(tmp.path(), chunk, 1e-2);
            eprintln!(
                "chunk {chunk}: {precision} products (AMX: {amx}), scores max abs diff {worst:e}"
            );
            for report in embed_reports(tmp.path()) {
                let (got, got_note) = (&report["precision"], &report["matmul_note"]);
                if amx {
                    assert_eq!(got, precision, "{report}");
                    assert!(got_note.as_str().unwrap().contains(note), "{report}");
                } else {
                    assert_eq!(got, "f32", "{report}");
                }
            }
        }
    }
}

/// `VIRNUCPRO_NO_AMX` runs `--precision int8` as a CPU without AMX does, on the AVX-512 VNNI
/// kernels: the reports say so, and where this CPU also has AMX-INT8 the tables and embeddings
/// are the AMX run's, byte for byte (both kernels take the same exact integer sums).
#[test]
fn int8_without_amx_runs_on_vnni_to_the_same_bytes() {
    use virnucpro::models::{ops::Matmul, reduced};
    if !(std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni"))
    {
        eprintln!("this CPU has no AVX-512 VNNI: the VNNI int8 kernels are not run here");
        return;
    }
    let vnni = tempfile::tempdir().unwrap();
    let args = ["-d", "cpu", "--precision", "int8"];
    let o = run_cmd_env(vnni.path(), "300", &args, &[("VIRNUCPRO_NO_AMX", "1")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let notes: Vec<String> = embed_reports(vnni.path())
        .iter()
        .map(|r| r["matmul_note"].as_str().unwrap().to_string())
        .collect();
    assert!(
        notes.iter().all(|n| n.contains("AVX-512 VNNI")),
        "{notes:?}"
    );
    if reduced::kernels(Matmul::Int8) == Some("AMX") {
        let amx = tempfile::tempdir().unwrap();
        let o = run_cmd(amx.path(), "300", &args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            tables(vnni.path()) == tables(amx.path()),
            "VNNI and AMX int8 runs differ"
        );
    }
}

/// The reports of a `run`'s two embedding steps, from its `run.json` in `dir`.
fn embed_reports(dir: &Path) -> Vec<serde_json::Value> {
    let run: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    let embeds: Vec<serde_json::Value> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"].as_str().unwrap().starts_with("embed"))
        .map(|s| s["report"].clone())
        .collect();
    assert_eq!(embeds.len(), 2, "{run}");
    embeds
}

fn tables(dir: &Path) -> Vec<Vec<u8>> {
    [
        "prediction_results.txt",
        "prediction_results_highestscore.csv",
        "sequence_summary.tsv",
        "embeddings/dna.safetensors",
        "embeddings/protein.safetensors",
    ]
    .iter()
    .map(|f| fs::read(dir.join(f)).unwrap())
    .collect()
}

#[test]
fn killed_run_resumes_to_identical_outputs() {
    let full = tempfile::tempdir().unwrap();
    assert!(run_cmd(full.path(), "500", &[]).status.success());

    let tmp = tempfile::tempdir().unwrap();
    let (dnabert, esm, mlp) = models();
    let killed = crate::common::bin()
        .args([
            "run",
            s(&fixtures().join("e2e/input.fa")),
            "--dnabert",
            s(&dnabert),
            "--esm",
            s(&esm),
        ])
        .args(["--classifier", s(&mlp), "-c", "500", "-o", s(tmp.path())])
        .env("VIRNUCPRO_TEST_ABORT_AFTER", "embed-dna")
        .output()
        .unwrap();
    assert!(
        !killed.status.success(),
        "the abort hook should kill the run"
    );
    assert!(tmp.path().join("embeddings/dna.safetensors").exists());
    assert!(!tmp.path().join("embeddings/protein.safetensors").exists());
    assert!(!tmp.path().join("prediction_results.txt").exists());

    let resumed = run_cmd(tmp.path(), "500", &[]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let log = stderr(&resumed);
    assert!(log.contains("translate: outputs complete"), "{log}");
    assert!(log.contains("embed-dna: outputs complete"), "{log}");
    assert!(!log.contains("embed-protein: outputs complete"), "{log}");
    assert_eq!(tables(tmp.path()), tables(full.path()));

    // --force redoes everything, with the same result.
    let forced = run_cmd(tmp.path(), "500", &["--force"]);
    assert!(!stderr(&forced).contains("outputs complete"));
    assert_eq!(tables(tmp.path()), tables(full.path()));
}

/// The fixture input translated at chunk 500 into `dir/t`: (nucleotide ORFs, protein ORFs).
fn translate_e2e_input(dir: &Path) -> (PathBuf, PathBuf) {
    let t = dir.join("t");
    let input = fixtures().join("e2e/input.fa");
    ok(&[
        "translate",
        s(&input),
        "-c",
        "500",
        "-o",
        s(&t),
        "--write-chunks",
    ]);
    (
        t.join("identified_nucleotide.fa"),
        t.join("identified_protein.faa"),
    )
}

#[test]
fn predict_refuses_bad_inputs_with_one_line() {
    let (dnabert, esm, mlp) = models();
    let tmp = tempfile::tempdir().unwrap();
    let (nt, aa) = translate_e2e_input(tmp.path());
    let (d, p) = (
        tmp.path().join("d.safetensors"),
        tmp.path().join("p.safetensors"),
    );
    ok(&[
        "embed-dna",
        s(&nt),
        "-m",
        s(&dnabert),
        "-o",
        s(&d),
        "-d",
        "cpu",
    ]);
    ok(&[
        "embed-protein",
        s(&aa),
        "-m",
        s(&esm),
        "-o",
        s(&p),
        "-d",
        "cpu",
    ]);
    let predict = |dna: &Path, prot: &Path, clf: &Path| {
        run(
            &[
                "predict",
                "--dna",
                s(dna),
                "--protein",
                s(prot),
                "--classifier",
                s(clf),
                "-o",
                s(&tmp.path().join("o")),
            ],
            None,
        )
    };
    // Sides swapped.
    assert_error(
        &predict(&p, &d, &mlp),
        &["p.safetensors", "protein embeddings", "--dna"],
    );
    // Classifier of another width (the real 3328-d shape against tiny 88-d features).
    assert_error(
        &predict(&d, &p, &fixtures().join("mlp_3328x512.pth")),
        &["3328", "88"],
    );
    // Not a classifier at all.
    let junk = tmp.path().join("junk.pth");
    fs::write(&junk, b"this is not a model").unwrap();
    assert_error(&predict(&d, &p, &junk), &["junk.pth"]);
    // Not an embeddings file.
    assert_error(&predict(&nt, &p, &mlp), &["identified_nucleotide.fa"]);
    // Shards of two different models on one side.
    let other_model = tmp.path().join("other_dnabert");
    fs::create_dir(&other_model).unwrap();
    for e in fs::read_dir(&dnabert).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), other_model.join(e.file_name())).unwrap();
    }
    let d2 = tmp.path().join("d2.safetensors");
    ok(&[
        "embed-dna",
        s(&nt),
        "-m",
        s(&other_model),
        "-o",
        s(&d2),
        "-d",
        "cpu",
    ]);
    let o = run(
        &[
            "predict",
            "--dna",
            s(&d),
            s(&d2),
            "--protein",
            s(&p),
            "--classifier",
            s(&mlp),
            "-o",
            s(&tmp.path().join("o")),
        ],
        None,
    );
    assert_error(&o, &["one model"]);
    // Empty inputs: embedding an empty file works (empty output), predicting nothing is an error.
    let empty = tmp.path().join("empty.faa");
    fs::write(&empty, b"").unwrap();
    let (de, pe) = (
        tmp.path().join("de.safetensors"),
        tmp.path().join("pe.safetensors"),
    );
    let o = run(
        &[
            "embed-protein",
            s(&empty),
            "-m",
            s(&esm),
            "-o",
            s(&pe),
            "-d",
            "cpu",
        ],
        None,
    );
    assert!(
        o.status.success() && stderr(&o).contains("empty"),
        "{}",
        stderr(&o)
    );
    ok(&[
        "embed-dna",
        s(&empty),
        "-m",
        s(&dnabert),
        "-o",
        s(&de),
        "-d",
        "cpu",
    ]);
    // ORFs on one side only (files of different samples) is an error, and writes nothing.
    assert_error(&predict(&d, &pe, &mlp), &["nothing to classify"]);
    assert!(!tmp.path().join("o/prediction_results.txt").exists());
    // No ORF at all (a sample whose sequences gave none) is a result: empty tables, a warning.
    let o = predict(&de, &pe, &mlp);
    assert!(
        o.status.success() && stderr(&o).contains("hold no ORF"),
        "{}",
        stderr(&o)
    );
    let out = tmp.path().join("o");
    for (file, header) in [
        (
            "prediction_results.txt",
            "Sequence_ID\tPrediction\tscore1\tscore2\n",
        ),
        (
            "prediction_results_highestscore.csv",
            "Modified_ID\tIs_Virus\n",
        ),
    ] {
        assert_eq!(
            fs::read_to_string(out.join(file)).unwrap(),
            header,
            "{file}"
        );
    }
    let summary = fs::read_to_string(out.join("sequence_summary.tsv")).unwrap();
    assert_eq!(summary.lines().count(), 1, "header only: {summary}");
    assert!(out.join("prediction.svg").is_file() && out.join("prediction.png").is_file());
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("predict.json")).unwrap()).unwrap();
    assert_eq!(report["orfs_scored"], 0);
}

#[test]
fn embed_refuses_the_wrong_kind_of_sequence_and_model() {
    let (dnabert, esm, _) = models();
    let tmp = tempfile::tempdir().unwrap();
    let (nt, aa) = translate_e2e_input(tmp.path());
    let out = tmp.path().join("x.safetensors");
    assert_error(
        &run(
            &[
                "embed-dna",
                s(&aa),
                "-m",
                s(&dnabert),
                "-o",
                s(&out),
                "-d",
                "cpu",
            ],
            None,
        ),
        &["looks like a protein"],
    );
    assert!(!out.exists());
    // A DNABERT-S directory without its tokenizer.
    let bare = tmp.path().join("bare");
    fs::create_dir(&bare).unwrap();
    fs::copy(dnabert.join("config.json"), bare.join("config.json")).unwrap();
    assert_error(
        &run(
            &[
                "embed-dna",
                s(&nt),
                "-m",
                s(&bare),
                "-o",
                s(&out),
                "-d",
                "cpu",
            ],
            None,
        ),
        &["tokenizer.json"],
    );
    // Nucleotides given to embed-protein: refused, naming the first record (issue #26: they
    // used to be embedded as proteins of Ala, Cys, Gly and Thr with a warning).
    let o = run(
        &[
            "embed-protein",
            s(&nt),
            "-m",
            s(&esm),
            "-o",
            s(&out),
            "-d",
            "cpu",
        ],
        None,
    );
    assert_error(&o, &["record #1", "looks like nucleotides, not a protein"]);
    assert!(!out.exists());
}

/// predict's --sequences and --chunks: a compressed input gives the same file; a FASTA that
/// lacks a predicted sequence, ORFs given as chunks, or chunks of another chunk size are one-line
/// errors naming the file, and write nothing.
#[test]
fn predict_checks_the_fasta_it_copies_viral_records_from() {
    use std::io::Write;
    let (dnabert, esm, mlp) = models();
    let tmp = tempfile::tempdir().unwrap();
    let (nt, aa) = translate_e2e_input(tmp.path());
    let chunked = tmp.path().join("t/chunked.fa");
    let (d, p) = (tmp.path().join("d.st"), tmp.path().join("p.st"));
    ok(&[
        "embed-dna",
        s(&nt),
        "-m",
        s(&dnabert),
        "-o",
        s(&d),
        "-d",
        "cpu",
    ]);
    ok(&[
        "embed-protein",
        s(&aa),
        "-m",
        s(&esm),
        "-o",
        s(&p),
        "-d",
        "cpu",
    ]);
    let input = fixtures().join("e2e/input.fa");
    let predict = |out: &Path, extra: &[&str]| {
        let mut args = vec!["predict", "--dna", s(&d), "--protein", s(&p)];
        args.extend(["--classifier", s(&mlp), "-o", s(out)]);
        args.extend_from_slice(extra);
        run(&args, None)
    };
    let plain = tmp.path().join("plain");
    let o = predict(&plain, &["--sequences", s(&input), "--chunks", s(&chunked)]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_viral_fasta(&plain, "500");

    let gz = tmp.path().join("input.fa.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&fs::read(&input).unwrap()).unwrap();
    fs::write(&gz, enc.finish().unwrap()).unwrap();
    let zipped = tmp.path().join("gz");
    let o = predict(&zipped, &["--sequences", s(&gz)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(zipped.join("viral_sequences.fa")).unwrap(),
        fs::read(plain.join("viral_sequences.fa")).unwrap()
    );
    assert!(!zipped.join("viral_chunks.fa").exists());

    let refused = tmp.path().join("refused");
    let mut no_contig = String::new();
    for (header, seq) in records(&fs::read_to_string(&input).unwrap()) {
        if !header.starts_with("contig_multi") {
            no_contig.push_str(&format!(">{header}\n{seq}\n"));
        }
    }
    let partial = tmp.path().join("partial.fa");
    fs::write(&partial, no_contig).unwrap();
    for (extra, needles) in [
        (
            vec!["--sequences", s(&partial)],
            vec!["partial.fa lacks 1 of the 9 sequences", "'contig_multi'"],
        ),
        (
            vec!["--chunks", s(&nt)],
            vec!["identified_nucleotide.fa holds ORFs", "chunked.fa"],
        ),
        (
            vec!["--chunks", s(&fixtures().join("e2e/chunk300/chunked.fa"))],
            vec!["chunk300/chunked.fa", "another --chunk-size"],
        ),
        (
            vec!["--sequences", s(&tmp.path().join("absent.fa"))],
            vec!["--sequences", "absent.fa"],
        ),
    ] {
        let o = predict(&refused, &extra);
        assert_error(&o, &needles);
        assert!(
            !refused.join("predict.json").exists(),
            "{extra:?} wrote predict.json"
        );
    }
}
