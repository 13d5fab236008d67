//! `embed-* --manifest`, the binary's side of the pipeline's shared embedding tasks: one
//! process, one model load, several inputs each written as if alone; a record that fails exits
//! 2 beside every report; a second writer of any output, or a manifest that would mix outputs,
//! is refused before any work.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;
use virnucpro::io::embeddings::EmbeddingSet;
use virnucpro::io::output_lock::OutputLock;

use crate::common::fixtures;

/// The fixture's 20 protein ORFs cut into two inputs of 10, with their ids.
fn two_inputs(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let text = fs::read_to_string(fixtures().join("e2e/chunk500/identified_protein.faa")).unwrap();
    let records: Vec<String> = text
        .split('>')
        .filter(|r| !r.is_empty())
        .map(|r| format!(">{r}"))
        .collect();
    assert_eq!(records.len(), 20);
    records
        .chunks(10)
        .enumerate()
        .map(|(i, part)| {
            let path = dir.join(format!("in{i}.faa"));
            fs::write(&path, part.concat()).unwrap();
            let ids = part
                .iter()
                .map(|r| r[1..].split_whitespace().next().unwrap().to_string())
                .collect();
            (path, ids)
        })
        .collect()
}

fn embed(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let model = fixtures().join("esm2_tiny");
    Command::new(env!("CARGO_BIN_EXE_virnucpro"))
        .current_dir(dir)
        .args(["embed-protein", "--threads", "2", "--model"])
        .arg(&model)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn json(path: &Path) -> Json {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Each output holds its own input's ids only, in its order, with the bytes a run of that input
/// alone writes; the model is loaded once; a record that fails alone is listed beside its own
/// output and the run exits 2 with every report written.
#[test]
fn a_manifest_writes_each_input_as_if_alone_with_one_model_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let inputs = two_inputs(dir);
    let manifest = "in0.faa\ta.st\ta.json\n# a comment\n\nin1.faa\tb.st\tb.json\n";
    fs::write(dir.join("m.tsv"), manifest).unwrap();
    let o = embed(dir, &["--manifest", "m.tsv", "--report", "all.json"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for ((_, ids), name) in inputs.iter().zip(["a", "b"]) {
        let set = EmbeddingSet::read(&dir.join(format!("{name}.st"))).unwrap();
        assert_eq!(&set.ids, ids, "{name}: its own ids only");
    }
    let reports = [json(&dir.join("a.json")), json(&dir.join("b.json"))];
    assert_eq!(
        (
            reports[0]["model_loads"].as_u64(),
            reports[1]["model_loads"].as_u64()
        ),
        (Some(1), Some(0))
    );
    let all = json(&dir.join("all.json"));
    assert_eq!(all["model_loads"], 1);
    assert_eq!(all["inputs"], 2);
    assert_eq!(all["per_input"].as_array().unwrap().len(), 2);
    assert!(
        all["compute_seconds"].as_f64().unwrap() > 0.0
            && all["model_load_seconds"].as_f64().unwrap() > 0.0
    );
    // Alone: the same bytes.
    let o = embed(dir, &["-o", "alone.st", "in1.faa"], &[]);
    assert!(o.status.success());
    assert_eq!(
        fs::read(dir.join("alone.st")).unwrap(),
        fs::read(dir.join("b.st")).unwrap()
    );

    // A record of the second input fails alone: exit 2, listed beside its output only.
    let bad = inputs[1].1[3].clone();
    let o = embed(
        dir,
        &["--manifest", "m.tsv"],
        &[("VIRNUCPRO_TEST_FAIL_IDS", &bad)],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!dir.join("a.st.failed.tsv").exists());
    let failed = fs::read_to_string(dir.join("b.st.failed.tsv")).unwrap();
    assert!(failed.contains(&bad), "{failed}");
    assert_eq!(json(&dir.join("b.json"))["failed"], 1);
    let set = EmbeddingSet::read(&dir.join("b.st")).unwrap();
    assert!(!set.ids.contains(&bad) && set.ids.len() == 9);
}

/// A second writer of any output, or outputs that would mix, stop the run before any output is
/// written, with one error line naming the manifest's line.
#[test]
fn a_manifest_that_would_mix_or_race_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    two_inputs(dir);
    let cases = [
        (
            "in0.faa\ta.st\nin1.faa\ta.st\n",
            "line 2: its output a.st is also the output of line 1",
        ),
        (
            "in0.faa\ta.st\nin1.faa\tin0.faa\n",
            "line 2: its output in0.faa is also the input of line 1",
        ),
        (
            "in0.faa\ta.st\nmissing.faa\tb.st\n",
            "--manifest line 2: input missing.faa",
        ),
        ("in0.faa a.st\n", "line 1: expected INPUT<TAB>OUTPUT"),
    ];
    for (manifest, want) in cases {
        fs::write(dir.join("m.tsv"), manifest).unwrap();
        let o = embed(dir, &["--manifest", "m.tsv"], &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{manifest:?}: {err}");
        assert!(err.contains(want), "{manifest:?}: {err}");
        assert!(!dir.join("a.st").exists(), "{manifest:?}: nothing written");
    }
    // The second output is being written by another run: refused, the first not started.
    fs::write(dir.join("m.tsv"), "in0.faa\ta.st\nin1.faa\tb.st\n").unwrap();
    let held = OutputLock::file(&dir.join("b.st"), "--output").unwrap();
    let o = embed(dir, &["--manifest", "m.tsv"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("b.st"), "{err}");
    assert!(!dir.join("a.st").exists(), "{err}");
    drop(held);
    // INPUT and --manifest together: a usage error.
    let o = embed(dir, &["--manifest", "m.tsv", "in0.faa"], &[]);
    assert_eq!(o.status.code(), Some(64));
}
