//! `train` and `evaluate` on bad inputs: one test per case, each a one-line error (exit 1, no
//! finished output) or a finished run with counted warnings, as `predict` treats them; a bad
//! flag value (or one at odds with the checkpoint) is a usage error, exit 64.

use std::path::{Path, PathBuf};

use crate::common::{assert_refused, fixtures, run_bounded, s, stderr};
use virnucpro::io::embeddings::{EmbeddingMeta, EmbeddingSet};

/// A tiny separable data set: `n` ORFs, DNA `dd`-d and protein `pd`-d embeddings, labels
/// alternating virus / others with the first column carrying the class.
struct Data {
    dir: tempfile::TempDir,
    ids: Vec<String>,
}

impl Data {
    fn new(n: usize) -> Self {
        Data {
            dir: tempfile::tempdir().unwrap(),
            ids: (0..n).map(|i| format!("r{i}_chunk_1F1")).collect(),
        }
    }
    /// [`Data::new`] with the embeddings of every ORF written: DNA 3-d as `d.safetensors`,
    /// protein 5-d as `p.safetensors`.
    fn embedded(n: usize) -> (Self, PathBuf, PathBuf) {
        let d = Data::new(n);
        let dna = d.embeddings("d.safetensors", "dna", 3, &d.ids);
        let prot = d.embeddings("p.safetensors", "protein", 5, &d.ids);
        (d, dna, prot)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn class(i: usize) -> usize {
        i % 2
    }
    fn embeddings(&self, name: &str, kind: &str, dim: usize, ids: &[String]) -> PathBuf {
        let mut values = Vec::new();
        for id in ids {
            let i: usize = id[1..id.find('_').unwrap()].parse().unwrap();
            for c in 0..dim {
                let noise = ((i * 31 + c * 17) % 13) as f32 / 13.0 - 0.5;
                values.push(
                    if c == 0 {
                        Self::class(i) as f32 * 2.0 - 1.0
                    } else {
                        0.0
                    } + noise,
                );
            }
        }
        let p = self.path(name);
        EmbeddingSet {
            ids: ids.to_vec(),
            dim,
            values,
            meta: EmbeddingMeta {
                kind: kind.into(),
                model: format!("m-{kind}-{dim}"),
                pooling: "mean".into(),
                precision: "f32".into(),
            },
        }
        .write(&p)
        .unwrap();
        p
    }
    fn labels(&self, rows: &[(&str, &str)]) -> PathBuf {
        let p = self.path("labels.tsv");
        let mut t = String::from("id\tlabel\n");
        for (id, l) in rows {
            t.push_str(&format!("{id}\t{l}\n"));
        }
        std::fs::write(&p, t).unwrap();
        p
    }
    fn default_labels(&self) -> PathBuf {
        let rows: Vec<(&str, &str)> = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                (
                    id.as_str(),
                    if Self::class(i) == 1 {
                        "virus"
                    } else {
                        "others"
                    },
                )
            })
            .collect();
        self.labels(&rows)
    }
}

/// `train`'s arguments: the inputs, `--epochs 3 --hidden 8` unless `extra` gives them, then
/// `extra`.
fn train_args<'a>(
    dna: &[&'a Path],
    protein: &[&'a Path],
    labels: &'a Path,
    out: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["train", "--dna"];
    args.extend(dna.iter().map(|p| s(p)));
    args.push("--protein");
    args.extend(protein.iter().map(|p| s(p)));
    args.extend(["--labels", s(labels), "--outdir", s(out)]);
    for (flag, value) in [("--epochs", "3"), ("--hidden", "8")] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    args
}

fn train(
    dna: &[&Path],
    protein: &[&Path],
    labels: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    run_bounded(&train_args(dna, protein, labels, out, extra), None, 0, 120)
}

/// A finished run whose log says `warning`.
fn assert_finished_with(o: &std::process::Output, warning: &str) {
    assert!(o.status.success(), "{}", stderr(o));
    assert!(stderr(o).contains(warning), "{}", stderr(o));
}

/// The `train.json` a finished run wrote in `out`.
fn train_report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap()
}

fn finished(out: &Path) -> [PathBuf; 3] {
    [
        out.join("train.json"),
        out.join("classifier.safetensors"),
        out.join("last.safetensors"),
    ]
}

fn refused(o: &std::process::Output, needles: &[&str], out: &Path) {
    let f = finished(out);
    assert_refused(o, 1, needles, &[&f[0], &f[1], &f[2]]);
}

#[test]
fn labelled_ids_without_embeddings_are_counted_and_skipped() {
    let d = Data::new(40);
    let dna = d.embeddings("d.safetensors", "dna", 3, &d.ids[..36]);
    let prot = d.embeddings("p.safetensors", "protein", 5, &d.ids);
    let out = d.path("out");
    let o = train(&[&dna], &[&prot], &d.default_labels(), &out, &[]);
    assert_finished_with(&o, "4 of 40 labelled ORFs lack a DNA or protein embedding");
    let report = train_report(&out);
    assert_eq!(report["join"]["labelled_without_embeddings"], 4);
    assert_eq!(report["samples"], 36);
}

#[test]
fn embedded_ids_without_labels_are_counted_and_skipped() {
    let (d, dna, prot) = Data::embedded(40);
    let rows: Vec<(&str, &str)> = d.ids[..30]
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), if i % 2 == 1 { "virus" } else { "others" }))
        .collect();
    let out = d.path("out");
    let o = train(&[&dna], &[&prot], &d.labels(&rows), &out, &[]);
    assert_finished_with(&o, "10 embedded ORFs have no label");
    let report = train_report(&out);
    assert_eq!(report["join"]["embedded_without_label"], 10);
}

#[test]
fn one_class_only_is_refused() {
    let (d, dna, prot) = Data::embedded(20);
    let rows: Vec<(&str, &str)> = d.ids.iter().map(|id| (id.as_str(), "virus")).collect();
    let out = d.path("out");
    let o = train(&[&dna], &[&prot], &d.labels(&rows), &out, &[]);
    refused(&o, &["only 'virus' ORFs", "both"], &out);
}

#[test]
fn unknown_label_is_refused_naming_the_line() {
    let (d, dna, prot) = Data::embedded(20);
    let mut rows: Vec<(&str, &str)> = d.ids.iter().map(|id| (id.as_str(), "others")).collect();
    rows[3].1 = "phage";
    let out = d.path("out");
    let o = train(&[&dna], &[&prot], &d.labels(&rows), &out, &[]);
    refused(&o, &["labels.tsv line 5", "unknown label \"phage\""], &out);
}

#[test]
fn shards_of_different_widths_are_refused() {
    let d = Data::new(20);
    let dna1 = d.embeddings("d1.safetensors", "dna", 3, &d.ids[..10]);
    let dna2 = d.embeddings("d2.safetensors", "dna", 4, &d.ids[10..]);
    let prot = d.embeddings("p.safetensors", "protein", 5, &d.ids);
    let out = d.path("out");
    let o = train(&[&dna1, &dna2], &[&prot], &d.default_labels(), &out, &[]);
    refused(&o, &["d2.safetensors", "4-d", "3-d", "one model"], &out);
}

#[test]
fn init_weights_of_another_width_are_refused() {
    let (d, dna, prot) = Data::embedded(20);
    let init = fixtures().join("mlp_tiny.pth");
    let out = d.path("out");
    let o = train(
        &[&dna],
        &[&prot],
        &d.default_labels(),
        &out,
        &["--init", s(&init)],
    );
    refused(&o, &["--init", "88-d", "8-d"], &out);
}

#[test]
fn evaluate_refuses_a_classifier_of_another_width() {
    let (d, dna, prot) = Data::embedded(20);
    let clf = fixtures().join("mlp_tiny.pth");
    let out = d.path("out");
    let o = run_bounded(
        &[
            "evaluate",
            "--dna",
            s(&dna),
            "--protein",
            s(&prot),
            "--labels",
            s(&d.default_labels()),
            "--classifier",
            s(&clf),
            "--outdir",
            s(&out),
        ],
        None,
        0,
        60,
    );
    assert_refused(
        &o,
        1,
        &["expects 88-d", "8-d"],
        &[&out.join("evaluation.json")],
    );
}

#[test]
fn validation_ids_not_labelled_are_refused() {
    let (d, dna, prot) = Data::embedded(20);
    let val = d.path("val.txt");
    std::fs::write(&val, "r1_chunk_1F1\nnope_chunk_1F1\n").unwrap();
    let out = d.path("out");
    let o = train(
        &[&dna],
        &[&prot],
        &d.default_labels(),
        &out,
        &["--validation-ids", s(&val)],
    );
    refused(&o, &["val.txt", "'nope_chunk_1F1'"], &out);
}

#[test]
fn out_of_range_hyperparameters_are_refused_before_any_work() {
    let (d, dna, prot) = Data::embedded(20);
    let out = d.path("out");
    let o = train(
        &[&dna],
        &[&prot],
        &d.default_labels(),
        &out,
        &["--dropout", "1"],
    );
    // A usage error (64), as clap's own refusals.
    let f = finished(&out);
    assert_refused(&o, 64, &["--dropout"], &[&f[0], &f[1], &f[2]]);
    assert!(!out.exists(), "nothing is created for a refused run");
}

/// A refused flag value: exit 64 (usage error), one `error:` line with every needle, none of
/// a run's outputs (nor a checkpoint), and nothing from clap's flag lookup.
fn refused_flag(o: &std::process::Output, needles: &[&str], out: &Path) {
    let f = finished(out);
    let ckpt = out.join("train.checkpoint.safetensors");
    assert_refused(o, 64, needles, &[&f[0], &f[1], &f[2], &ckpt]);
    assert!(!stderr(o).contains("unexpected argument"), "{}", stderr(o));
    assert!(!stderr(o).contains("backtrace"), "{}", stderr(o));
}

/// Address space for the runs that must be refused before allocating: a regression that
/// allocates fails inside it instead of taking the machine.
const REFUSAL_MIB: u64 = 4096;

#[test]
fn widths_and_batches_too_large_for_memory_are_refused_before_allocating() {
    let (d, dna, prot) = Data::embedded(200);
    let labels = d.default_labels();
    let out = d.path("out");
    let run = |extra: &[&str]| {
        let args = train_args(&[&dna], &[&prot], &labels, &out, extra);
        run_bounded(&args, None, REFUSAL_MIB, 60)
    };
    // 10^11 hidden units on 8-d embeddings: terabytes of weights.
    let o = run(&["--hidden", "100000000000"]);
    refused_flag(
        &o,
        &["--hidden 100000000000", "8-d", "GiB", "give --hidden"],
        &out,
    );
    // A million hidden units fit (tens of MB of weights), but not a step over all 180
    // training rows, which a batch size far above the data takes.
    let o = run(&["--hidden", "1000000", "--batch-size", "1000000000000"]);
    refused_flag(
        &o,
        &[
            "--batch-size 1000000000000",
            "180 ORFs (every training row)",
            "GiB",
            "give --batch-size",
        ],
        &out,
    );
    // Epochs do not allocate, but each one's log line is kept in the checkpoint.
    let o = run(&["--epochs", "1000000"]);
    refused_flag(&o, &["'1000000'", "--epochs", "from 1 to 100000"], &out);
    let o = run(&["--epochs", "99999999999999999999999"]);
    refused_flag(&o, &["--epochs", "from 1 to 100000"], &out);
}

#[test]
fn negative_values_reach_each_flags_own_check() {
    let (d, dna, prot) = Data::embedded(20);
    let labels = d.default_labels();
    let out = d.path("out");
    for (flag, value, says) in [
        (
            "--epochs",
            "-1",
            "the number of epochs must be a whole number from 1",
        ),
        (
            "--batch-size",
            "-32",
            "the batch size must be a whole number of at least 2",
        ),
        (
            "--lr",
            "-1",
            "the learning rate must be a positive finite number",
        ),
        (
            "--lr",
            "-1e-3",
            "the learning rate must be a positive finite number",
        ),
        (
            "--lr",
            "-inf",
            "the learning rate must be a positive finite number",
        ),
        ("--momentum", "-0.5", "the momentum must be in [0, 1)"),
        (
            "--lr-step",
            "-10",
            "the StepLR period must be a whole number of at least 1",
        ),
        (
            "--lr-gamma",
            "-0.85",
            "StepLR's factor must be a positive finite number",
        ),
        (
            "--dropout",
            "-0.1",
            "the dropout probability must be in [0, 1)",
        ),
        (
            "--patience",
            "-5",
            "the patience must be a whole number of at least 1",
        ),
        (
            "--hidden",
            "-8",
            "the hidden width must be a whole number of at least 1",
        ),
        (
            "--validation-fraction",
            "-0.1",
            "the validation fraction must be between 0 and 1",
        ),
        (
            "--seed",
            "-1",
            "the seed must be a whole number, not negative",
        ),
    ] {
        let o = train(&[&dna], &[&prot], &labels, &out, &[flag, value]);
        refused_flag(&o, &[&format!("'{value}'"), flag, says], &out);
        assert!(
            !out.exists(),
            "{flag} {value}: nothing is created for a refused run"
        );
    }
}

#[test]
fn dataset_refuses_a_record_id_in_both_classes() {
    let d = Data::new(0);
    let seq = "ATG".repeat(100);
    let (viral, others) = (d.path("viral.fa"), d.path("others.fa"));
    std::fs::write(&viral, format!(">shared\n{seq}\n>v2\n{seq}\n")).unwrap();
    std::fs::write(&others, format!(">h1\n{seq}\n>shared\n{seq}\n")).unwrap();
    let out = d.path("ds");
    let o = run_bounded(
        &[
            "dataset",
            "--viral",
            s(&viral),
            "--others",
            s(&others),
            "-c",
            "300",
            "-o",
            s(&out),
        ],
        None,
        0,
        60,
    );
    assert_refused(
        &o,
        1,
        &["others.fa", "'shared'", "appears twice"],
        &[&out.join("dataset.json"), &out.join("labels.tsv")],
    );
}

/// A training run killed (SIGKILL) once epoch `epoch` is logged: its checkpoint is on disk.
fn killed_after_epoch(args: &[&str], epoch: usize) {
    use std::io::{BufRead, BufReader};
    let mut child = crate::common::bin()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(&format!("train: epoch {epoch}/")) {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert!(seen.contains(&format!("train: epoch {epoch}/")), "{seen}");
}

#[test]
fn fewer_epochs_than_the_checkpoint_holds_are_refused_and_keep_it() {
    let (d, dna, prot) = Data::embedded(40);
    let labels = d.default_labels();
    let out = d.path("out");
    let ckpt = out.join("train.checkpoint.safetensors");
    // Far more epochs than the kill lets run, without early stopping.
    let long = ["--epochs", "100000", "--patience", "100000"];
    killed_after_epoch(&train_args(&[&dna], &[&prot], &labels, &out, &long), 3);
    let held = std::fs::read(&ckpt).expect("the killed run's checkpoint");

    let short = ["--epochs", "2", "--patience", "100000"];
    let o = train(&[&dna], &[&prot], &labels, &out, &short);
    let f = finished(&out);
    let needles = [
        "--epochs 2",
        "train.checkpoint.safetensors",
        "already holds",
        "--force",
    ];
    assert_refused(&o, 64, &needles, &[&f[0], &f[1], &f[2]]);
    // Everything trained so far is still there, byte for byte.
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        held,
        "the checkpoint changed"
    );

    // --force trains the 2 epochs from scratch.
    let o = train(
        &[&dna],
        &[&prot],
        &labels,
        &out,
        &[&short[..], &["--force"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report = train_report(&out);
    assert_eq!(report["epochs_run"], 2);
    assert_eq!(report["resumed_after_epoch"], serde_json::Value::Null);
}
