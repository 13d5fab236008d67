//! The MLP classifier against the goldens made by the original PyTorch module (eval mode):
//! whole pickled `MLPClassifier` files, the same weights as safetensors, and error messages.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use virnucpro::models::classifier::Classifier;
use virnucpro::weights;

use crate::common::parity::{max_abs_diff_rows, rows};

type B = burn::backend::Flex;

const TOLERANCE: f32 = 1e-5;

fn fixture(rel: &str) -> PathBuf {
    crate::common::fixtures().join(rel)
}

fn device() -> Device<B> {
    Default::default()
}

struct Cases {
    input_dim: usize,
    inputs: Vec<Vec<f32>>,
    logits: Vec<Vec<f32>>,
    probabilities: Vec<Vec<f32>>,
}

fn cases(name: &str) -> Cases {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let matrix = |key: &str| -> Vec<Vec<f32>> {
        serde_json::from_value(json[key].clone()).unwrap_or_else(|e| panic!("{name}: {key}: {e}"))
    };
    Cases {
        input_dim: json["input_dim"].as_u64().unwrap() as usize,
        inputs: matrix("inputs"),
        logits: matrix("logits"),
        probabilities: matrix("probabilities"),
    }
}

/// Run `model` on the cases' inputs and compare logits and probabilities with the goldens.
fn check(model: &Classifier<B>, cases: &Cases, label: &str) {
    assert_eq!(model.input_dim(), cases.input_dim, "{label}");
    model.check_input_dim(cases.input_dim).unwrap();
    let flat: Vec<f32> = cases.inputs.iter().flatten().copied().collect();
    let x = Tensor::<B, 2>::from_data(
        TensorData::new(flat, [cases.inputs.len(), cases.input_dim]),
        &device(),
    );
    let logits = rows(model.forward_logits(x.clone()));
    let probs = rows(model.forward_probs(x));
    let dl = max_abs_diff_rows(&logits, &cases.logits);
    let dp = max_abs_diff_rows(&probs, &cases.probabilities);
    assert!(dl <= TOLERANCE, "{label}: logits differ by {dl}");
    assert!(dp <= TOLERANCE, "{label}: probabilities differ by {dp}");
}

#[test]
fn tiny_pickled_module_matches_goldens() {
    let model = Classifier::<B>::load(&fixture("mlp_tiny.pth"), &device()).unwrap();
    assert_eq!(model.hidden_dim(), 16);
    check(&model, &cases("mlp_tiny_cases.json"), "mlp_tiny.pth");
}

#[test]
fn real_shape_pickled_module_matches_goldens() {
    let model = Classifier::<B>::load(&fixture("mlp_3328x512.pth"), &device()).unwrap();
    assert_eq!((model.input_dim(), model.hidden_dim()), (3328, 512));
    check(
        &model,
        &cases("mlp_3328x512_cases.json"),
        "mlp_3328x512.pth",
    );
}

/// The same weights written as safetensors (PyTorch layout and names) load to the same model.
#[test]
fn safetensors_round_trip() {
    let pth = weights::open(&fixture("mlp_tiny.pth")).unwrap();
    let source = pth.source();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in source.names() {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let bytes = source
            .read_f32(&name)
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        tensors.push((name.clone(), source.shape(&name).unwrap(), bytes));
    }
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("classifier.safetensors");
    safetensors::serialize_to_file(&views, &None, &path).unwrap();

    let model = Classifier::<B>::load(&path, &device()).unwrap();
    check(
        &model,
        &cases("mlp_tiny_cases.json"),
        "classifier.safetensors",
    );
}

#[test]
fn wrong_feature_width_is_explained() {
    let model = Classifier::<B>::load(&fixture("mlp_3328x512.pth"), &device()).unwrap();
    let err = model.check_input_dim(808).unwrap_err().to_string();
    assert!(
        err.contains("mlp_3328x512.pth")
            && err.contains("expects 3328-d features (DNABERT-S 768 + ESM-2 2560)")
            && err.contains("the embeddings are 808-d"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    let tiny = Classifier::<B>::load(&fixture("mlp_tiny.pth"), &device()).unwrap();
    let err = tiny.check_input_dim(3328).unwrap_err().to_string();
    assert!(
        err.contains("expects 88-d features but the embeddings are 3328-d"),
        "{err}"
    );
}

#[test]
fn garbage_and_foreign_files_are_rejected_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("500_model.pth");
    std::fs::write(&garbage, b"definitely not a model\n").unwrap();
    let err = format!(
        "{:#}",
        Classifier::<B>::load(&garbage, &device()).unwrap_err()
    );
    assert!(err.contains("not a PyTorch checkpoint"), "{err}");
    assert!(!err.contains('\n'), "{err}");

    // A valid weights file of another model.
    let esm = fixture("esm2_tiny/model.safetensors");
    let err = format!("{:#}", Classifier::<B>::load(&esm, &device()).unwrap_err());
    assert!(err.contains("not a VirNucPro classifier"), "{err}");
}
