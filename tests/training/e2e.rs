//! Training end to end on the tiny models: `dataset` → `embed-dna` / `embed-protein` →
//! `train` → `evaluate` → `predict`; and a training run killed with SIGKILL after a
//! checkpoint, re-run, giving the same outputs as an uninterrupted run.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::{fixtures, run, s, stderr};

fn ok(args: &[&str]) -> String {
    let o = run(args, None);
    assert!(
        o.status.success(),
        "virnucpro {args:?} failed:\n{}",
        stderr(&o)
    );
    stderr(&o)
}

/// `n` records of 300 bases (one chunk at `-c 300`) of random sense codons (a fixed LCG), so
/// frame F1 of every chunk is an ORF; ids `prefix<k>`.
fn fasta(path: &Path, prefix: &str, n: usize, seed: u64) {
    let mut rng = crate::common::parity::Lcg(seed);
    let mut text = String::new();
    for k in 0..n {
        text.push_str(&format!(">{prefix}{k}\n"));
        let mut codons = 0;
        while codons < 100 {
            let codon = rng.dna(3);
            if !["TAA", "TAG", "TGA"].contains(&codon.as_str()) {
                text.push_str(&codon);
                codons += 1;
            }
        }
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn dataset_embed_train_evaluate_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (viral, others) = (d.join("viral.fa"), d.join("others.fa"));
    fasta(&viral, "vir", 30, 1);
    fasta(&others, "host", 60, 2);
    let ds = d.join("dataset");
    ok(&[
        "dataset",
        "--viral",
        s(&viral),
        "--others",
        s(&others),
        "-c",
        "300",
        "-o",
        s(&ds),
        "--seed",
        "7",
    ]);
    let report = read_json(&ds.join("dataset.json"));
    let viral_orfs = report["viral_orfs"].as_u64().unwrap();
    assert!(viral_orfs >= 30, "{report}");
    assert_eq!(
        report["other_orfs_kept"].as_u64().unwrap(),
        viral_orfs,
        "balanced classes"
    );
    let labels = fs::read_to_string(ds.join("labels.tsv")).unwrap();
    let virus = labels.lines().filter(|l| l.ends_with("\tvirus")).count() as u64;
    let others_n = labels.lines().filter(|l| l.ends_with("\tothers")).count() as u64;
    assert_eq!((virus, others_n), (viral_orfs, viral_orfs));
    // Every labelled ORF is in the FASTAs, in the same order.
    let nt = fs::read_to_string(ds.join("identified_nucleotide.fa")).unwrap();
    let nt_ids: Vec<&str> = nt.lines().filter_map(|l| l.strip_prefix('>')).collect();
    let label_ids: Vec<&str> = labels
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(nt_ids, label_ids);

    // The same seed draws the same ORFs; sharded output holds the same records.
    let sharded = d.join("sharded");
    ok(&[
        "dataset",
        "--viral",
        s(&viral),
        "--others",
        s(&others),
        "-c",
        "300",
        "-o",
        s(&sharded),
        "--seed",
        "7",
        "--shard-size",
        "10",
    ]);
    assert_eq!(
        fs::read_to_string(sharded.join("labels.tsv")).unwrap(),
        labels
    );
    let mut shards: Vec<PathBuf> = fs::read_dir(sharded.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| s(p).ends_with(".fa"))
        .collect();
    shards.sort();
    let joined: String = shards
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(joined, nt);

    let (dna, prot) = (d.join("dna.safetensors"), d.join("protein.safetensors"));
    ok(&[
        "embed-dna",
        s(&ds.join("identified_nucleotide.fa")),
        "-m",
        s(&fixtures().join("dnabert_s_tiny")),
        "-o",
        s(&dna),
        "--device",
        "cpu",
    ]);
    ok(&[
        "embed-protein",
        s(&ds.join("identified_protein.faa")),
        "-m",
        s(&fixtures().join("esm2_tiny")),
        "-o",
        s(&prot),
        "--device",
        "cpu",
    ]);
    let tr = d.join("train");
    let log = ok(&[
        "train",
        "--dna",
        s(&dna),
        "--protein",
        s(&prot),
        "--labels",
        s(&ds.join("labels.tsv")),
        "-o",
        s(&tr),
        "--epochs",
        "6",
        "--hidden",
        "16",
        "--batch-size",
        "8",
        "--validation-fraction",
        "0.25",
        "--lr",
        "0.01",
    ]);
    assert!(log.contains("train: epoch 1/6"), "{log}");
    let summary = read_json(&tr.join("train.json"));
    assert_eq!(summary["feature_dim"], 88);
    for f in [
        "classifier.safetensors",
        "last.safetensors",
        "train_log.tsv",
        "training.svg",
        "training.png",
    ] {
        assert!(fs::metadata(tr.join(f)).unwrap().len() > 0, "{f}");
    }

    // evaluate on the validation rows reproduces train's metrics of the best epoch.
    let val = fs::read_to_string(tr.join("validation_predictions.tsv")).unwrap();
    let val_labels = d.join("val_labels.tsv");
    let mut text = String::from("id\tlabel\n");
    for l in val.lines().skip(1) {
        let c: Vec<&str> = l.split('\t').collect();
        text.push_str(&format!("{}\t{}\n", c[0], c[1]));
    }
    fs::write(&val_labels, text).unwrap();
    let ev = d.join("evaluate");
    ok(&[
        "evaluate",
        "--dna",
        s(&dna),
        "--protein",
        s(&prot),
        "--labels",
        s(&val_labels),
        "--classifier",
        s(&tr.join("classifier.safetensors")),
        "-o",
        s(&ev),
    ]);
    let e = read_json(&ev.join("evaluation.json"));
    let best = &summary["best"];
    for k in ["accuracy", "precision", "recall", "f1", "auroc"] {
        assert_eq!(
            e["metrics"][k], best[k],
            "{k}: evaluate {e} vs train {best}"
        );
    }
    let vl = (e["loss"].as_f64().unwrap() - best["val_loss"].as_f64().unwrap()).abs();
    assert!(vl < 1e-6, "validation loss differs by {vl}");
    let c = &e["confusion"];
    let total: u64 = ["true_virus", "false_virus", "true_others", "false_others"]
        .iter()
        .map(|k| c[k].as_u64().unwrap())
        .sum();
    assert_eq!(total, e["orfs"].as_u64().unwrap());
    for f in [
        "confusion.tsv",
        "scores.tsv",
        "evaluation.svg",
        "evaluation.png",
    ] {
        assert!(fs::metadata(ev.join(f)).unwrap().len() > 0, "{f}");
    }

    // predict reads the trained classifier.
    let pr = d.join("predict");
    ok(&[
        "predict",
        "--dna",
        s(&dna),
        "--protein",
        s(&prot),
        "--classifier",
        s(&tr.join("classifier.safetensors")),
        "-o",
        s(&pr),
    ]);
    let rows = fs::read_to_string(pr.join("prediction_results.txt"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(rows as u64, 1 + 2 * viral_orfs);
}

/// The golden data's first 288 rows as small embeddings files (DNA 768-d, protein the rest).
fn inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use virnucpro::io::embeddings::{EmbeddingMeta, EmbeddingSet};
    let bytes = fs::read(fixtures().join("train/data.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let x = st.tensor("x").unwrap();
    let (n, dim) = (x.shape()[0], x.shape()[1]);
    let xs: Vec<f32> = x
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let ys: Vec<u8> = st
        .tensor("y")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| b[0])
        .collect();
    let ids: Vec<String> = (0..n).map(|i| format!("s{i}_chunk_1F1")).collect();
    let write = |kind: &str, cols: std::ops::Range<usize>| {
        let p = dir.join(format!("{kind}.safetensors"));
        let mut values = Vec::new();
        for r in 0..n {
            values.extend_from_slice(&xs[r * dim + cols.start..r * dim + cols.end]);
        }
        EmbeddingSet {
            ids: ids.clone(),
            dim: cols.len(),
            values,
            meta: EmbeddingMeta {
                kind: kind.into(),
                model: kind.into(),
                pooling: "mean".into(),
                precision: "f32".into(),
            },
        }
        .write(&p)
        .unwrap();
        p
    };
    let labels = dir.join("labels.tsv");
    let mut t = String::from("id\tlabel\n");
    for (id, y) in ids.iter().zip(&ys) {
        t.push_str(&format!(
            "{id}\t{}\n",
            if *y == 1 { "virus" } else { "others" }
        ));
    }
    fs::write(&labels, t).unwrap();
    (write("dna", 0..768), write("protein", 768..dim), labels)
}

/// Every value of every tensor of a safetensors file, in name order.
fn weights(path: &Path) -> Vec<f32> {
    let bytes = fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            st.tensor(n)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn train_args<'a>(dna: &'a Path, prot: &'a Path, labels: &'a Path, out: &'a Path) -> Vec<&'a str> {
    // Shuffling, dropout and the random split all on: the resumed run must re-derive them.
    vec![
        "train",
        "--dna",
        s(dna),
        "--protein",
        s(prot),
        "--labels",
        s(labels),
        "-o",
        s(out),
        "--epochs",
        "25",
        "--patience",
        "100",
        "--seed",
        "3",
    ]
}

#[test]
fn killed_training_resumes_to_the_same_weights_and_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (dna, prot, labels) = inputs(tmp.path());
    let full = tmp.path().join("full");
    ok(&train_args(&dna, &prot, &labels, &full));

    let out = tmp.path().join("killed");
    let mut child = crate::common::bin()
        .args(train_args(&dna, &prot, &labels, &out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill (SIGKILL, no chance to clean up) once epoch 3 is logged: its checkpoint is on disk.
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("train: epoch 3/25") {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert!(seen.contains("epoch 3/25"), "{seen}");
    assert!(out.join("train.checkpoint.safetensors").exists());
    assert!(
        !out.join("train.json").exists(),
        "a killed run must not look finished"
    );

    let log = ok(&train_args(&dna, &prot, &labels, &out));
    let resumed_at: usize = log
        .split("resuming after epoch ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume in:\n{log}"));
    assert!((3..25).contains(&resumed_at), "{log}");
    assert!(
        !log.contains("train: epoch 1/25"),
        "resumed runs skip finished epochs:\n{log}"
    );
    // The same run to float rounding: the CPU backend's parallel sums are not bit-reproducible
    // from run to run (rayon splits work adaptively), so two uninterrupted runs differ in the
    // last bits too; a resume that lost or repeated an epoch, or re-drew the shuffle or dropout
    // streams, would differ by far more.
    let table = |dir: &Path| -> Vec<Vec<f64>> {
        fs::read_to_string(dir.join("train_log.tsv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split('\t').map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let (got, want) = (table(&out), table(&full));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        for (a, b) in g.iter().zip(w) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1e-3),
                "epoch {}: {a} vs {b}",
                w[0]
            );
        }
    }
    for f in ["last.safetensors", "classifier.safetensors"] {
        let (a, b) = (weights(&out.join(f)), weights(&full.join(f)));
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "{f}: max |diff| {worst} from the uninterrupted run"
        );
    }
    assert_eq!(
        read_json(&out.join("train.json"))["resumed_after_epoch"],
        resumed_at
    );
    assert!(!out.join("train.checkpoint.safetensors").exists());
}

#[test]
fn changed_flags_restart_instead_of_resuming() {
    let tmp = tempfile::tempdir().unwrap();
    let (dna, prot, labels) = inputs(tmp.path());
    let out = tmp.path().join("out");
    // A run with another learning rate, killed after its first checkpoint...
    let mut other = train_args(&dna, &prot, &labels, &out);
    other.extend(["--lr", "0.001"]);
    let mut child = crate::common::bin()
        .args(&other)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        if line.contains("train: epoch 1/25") {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert!(out.join("train.checkpoint.safetensors").exists(), "{seen}");
    // ...is not resumed by a run with the default one.
    let mut args = train_args(&dna, &prot, &labels, &out);
    assert_eq!(args[9], "--epochs");
    args[10] = "2";
    let log = ok(&args);
    assert!(
        log.contains("other inputs or flags; starting over"),
        "{log}"
    );
    assert!(log.contains("train: epoch 1/2"), "{log}");
    assert_eq!(
        read_json(&out.join("train.json"))["resumed_after_epoch"],
        serde_json::Value::Null
    );
}
