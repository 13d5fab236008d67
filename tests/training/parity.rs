//! `virnucpro train` against PyTorch: the original train.py loop made deterministic (dropout 0,
//! no shuffle, fixed init, the last 32 rows validating), run by PyTorch in
//! tests/fixtures/train/. The weights after epochs 1 and 12 must match within 1e-4 and every
//! logged figure must match golden.json (losses 1e-5 relative, learning rate and metrics
//! exactly); `predict` with the trained classifier must reproduce the validation predictions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common::{fixtures, run, s, stderr};
use safetensors::SafeTensors;
use virnucpro::io::embeddings::{EmbeddingMeta, EmbeddingSet};

const DNA_DIM: usize = 768;

/// Every F32 tensor of a safetensors file.
fn tensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(n, v)| {
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (n, (v.shape().to_vec(), vals))
        })
        .collect()
}

/// The golden data as the files train reads: DNA (first 768 columns) and protein (the rest)
/// embeddings, labels.tsv, and the validation ids (the last 32 rows).
struct Inputs {
    dna: PathBuf,
    protein: PathBuf,
    labels: PathBuf,
    val_ids: PathBuf,
    ids: Vec<String>,
}

fn golden_inputs(dir: &Path) -> Inputs {
    let bytes = std::fs::read(fixtures().join("train/data.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let x = st.tensor("x").unwrap();
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let xs: Vec<f32> = x
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let ys: Vec<i64> = st
        .tensor("y")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let ids: Vec<String> = (0..n).map(|i| format!("seq{i:03}_chunk_1F1")).collect();
    let side = |kind: &str, cols: std::ops::Range<usize>, path: &Path| {
        let dim = cols.len();
        let mut values = Vec::with_capacity(n * dim);
        for r in 0..n {
            values.extend_from_slice(&xs[r * d + cols.start..r * d + cols.end]);
        }
        EmbeddingSet {
            ids: ids.clone(),
            dim,
            values,
            meta: EmbeddingMeta {
                kind: kind.into(),
                model: format!("golden-{kind}"),
                pooling: "mean".into(),
                precision: "f32".into(),
            },
        }
        .write(path)
        .unwrap();
    };
    let dna = dir.join("dna.safetensors");
    let protein = dir.join("protein.safetensors");
    side("dna", 0..DNA_DIM, &dna);
    side("protein", DNA_DIM..d, &protein);
    let labels = dir.join("labels.tsv");
    let mut text = String::from("id\tlabel\n");
    for (id, y) in ids.iter().zip(&ys) {
        text.push_str(&format!(
            "{id}\t{}\n",
            if *y == 1 { "virus" } else { "others" }
        ));
    }
    std::fs::write(&labels, text).unwrap();
    let val_ids = dir.join("validation_ids.txt");
    std::fs::write(&val_ids, ids[n - 32..].join("\n") + "\n").unwrap();
    Inputs {
        dna,
        protein,
        labels,
        val_ids,
        ids,
    }
}

fn train_golden(inputs: &Inputs, out: &Path, epochs: &str) {
    let init = fixtures().join("train/init.safetensors");
    let o = run(
        &[
            "train",
            "--dna",
            s(&inputs.dna),
            "--protein",
            s(&inputs.protein),
            "--labels",
            s(&inputs.labels),
            "--outdir",
            s(out),
            "--init",
            s(&init),
            "--dropout",
            "0",
            "--no-shuffle",
            "--validation-ids",
            s(&inputs.val_ids),
            "--epochs",
            epochs,
            "--device",
            "cpu",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

fn assert_weights_match(ours: &Path, golden: &str) {
    let ours = tensors(ours);
    let golden = tensors(&fixtures().join("train").join(golden));
    assert_eq!(ours.len(), golden.len(), "tensor names: {:?}", ours.keys());
    for (name, (shape, want)) in &golden {
        let (our_shape, got) = ours.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(our_shape, shape, "{name}");
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{golden:?} {name}: max |diff| {worst}");
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn twelve_epochs_match_pytorch_weights_and_every_logged_figure() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = golden_inputs(dir.path());
    let out = dir.path().join("out12");
    train_golden(&inputs, &out, "12");
    assert_weights_match(&out.join("last.safetensors"), "after_epoch_12.safetensors");

    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("train/golden.json")).unwrap(),
    )
    .unwrap();
    let golden = golden["epochs"].as_array().unwrap();
    let log = std::fs::read_to_string(out.join("train_log.tsv")).unwrap();
    let mut lines = log.lines();
    assert_eq!(
        lines.next().unwrap(),
        "epoch\ttrain_loss\tval_loss\tlr\taccuracy\tprecision\trecall\tf1\tauroc"
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split('\t').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), golden.len());
    for (row, g) in rows.iter().zip(golden) {
        let e = g["epoch"].as_f64().unwrap();
        assert_eq!(row[0], e);
        for (k, name) in [(1, "train_loss"), (2, "val_loss")] {
            let want = g[name].as_f64().unwrap();
            assert!(
                rel(row[k], want) <= 1e-5,
                "epoch {e} {name}: {} vs {want}",
                row[k]
            );
        }
        for (k, name) in [
            (3, "lr"),
            (4, "accuracy"),
            (5, "precision"),
            (6, "recall"),
            (7, "f1"),
            (8, "auroc"),
        ] {
            assert_eq!(row[k], g[name].as_f64().unwrap(), "epoch {e} {name}");
        }
    }

    // The best epoch's weights are the classifier; predict reads it and reproduces the
    // validation predictions train wrote for it.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap();
    let best_epoch = report["best_epoch"].as_u64().unwrap() as usize;
    let best_val = rows.iter().map(|r| r[2]).fold(f64::INFINITY, f64::min);
    assert_eq!(rows[best_epoch - 1][2], best_val);
    let pred_out = dir.path().join("predict");
    let o = run(
        &[
            "predict",
            "--dna",
            s(&inputs.dna),
            "--protein",
            s(&inputs.protein),
            "--classifier",
            s(&out.join("classifier.safetensors")),
            "--outdir",
            s(&pred_out),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let predicted: HashMap<String, (String, f32)> =
        std::fs::read_to_string(pred_out.join("prediction_results.txt"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                (c[0].to_string(), (c[1].to_string(), c[3].parse().unwrap()))
            })
            .collect();
    assert_eq!(predicted.len(), inputs.ids.len());
    let val = std::fs::read_to_string(out.join("validation_predictions.tsv")).unwrap();
    let mut n = 0;
    for l in val.lines().skip(1) {
        let c: Vec<&str> = l.split('\t').collect();
        let (call, virus) = &predicted[c[0]];
        assert_eq!(call, c[2], "{}", c[0]);
        let ours: f32 = c[4].parse().unwrap();
        assert!((ours - virus).abs() <= 1e-5, "{}: {ours} vs {virus}", c[0]);
        n += 1;
    }
    assert_eq!(n, 32);
}

#[test]
fn first_epoch_matches_pytorch_weights() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = golden_inputs(dir.path());
    let out = dir.path().join("out1");
    train_golden(&inputs, &out, "1");
    assert_weights_match(&out.join("last.safetensors"), "after_epoch_1.safetensors");
    // One epoch: the best weights are the last ones.
    assert_eq!(
        tensors(&out.join("last.safetensors")),
        tensors(&out.join("classifier.safetensors"))
    );
    for f in [
        "train.json",
        "train_log.tsv",
        "training.svg",
        "training.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(
        !out.join("train.checkpoint.safetensors").exists(),
        "the checkpoint is removed once the outputs are complete"
    );
}
