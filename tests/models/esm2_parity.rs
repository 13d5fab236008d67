//! ESM-2 against the fair-esm goldens (tests/fixtures/esm2_tiny, see docs/method.md, "ESM-2 embedding"): tokens
//! exact, mean embeddings within 1e-4, from every checkpoint format; batching, order and
//! padding must not change results; long sequences pool at most 1024 residues.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use virnucpro::models::esm2::{Esm2, MAX_POOLED_RESIDUES};
use virnucpro::models::ops::Matmul;
use virnucpro::models::reduced;
use virnucpro::tokenize::esm::EsmTokenizer;

use crate::common::parity::{self, batch_of, embed_one, max_abs_diff};
use crate::common::Case;

type B = burn::backend::Flex;

const TOL: f32 = 1e-4;
const BATCH_TOL: f32 = 1e-5;
/// Reduced products on two paths (see `parity::check_reduced_products`): bf16, and int8, whose
/// operands move by a whole quantisation step where the paths' f32 activations differ in the
/// last bit.
const BF16_TOL: f32 = 5e-3;
const INT8_TOL: f32 = 2e-2;

fn fixture_dir() -> PathBuf {
    crate::common::fixtures().join("esm2_tiny")
}

fn cases() -> Vec<Case> {
    crate::common::model_cases("esm2_tiny")
}

fn device() -> Device<B> {
    Default::default()
}

fn load(path: &Path) -> Esm2<B> {
    let (model, config) = Esm2::<B>::load(path, &device())
        .unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));
    assert_eq!(
        (config.num_layers, config.hidden, config.heads, config.ffn),
        (2, 40, 5, 160)
    );
    assert!(config.token_dropout);
    model
}

/// Every case, one sequence per forward, against its golden embedding.
fn check_goldens(model: &Esm2<B>, what: &str) {
    parity::check_goldens(model, &cases(), what, TOL);
}

#[test]
fn token_ids_match_goldens() {
    let tok = EsmTokenizer::new();
    for case in cases() {
        assert_eq!(tok.encode(&case.sequence), case.token_ids, "{}", case.id);
    }
}

#[test]
fn safetensors_dir_matches_goldens() {
    let model = load(&fixture_dir());
    assert_eq!(model.hidden_size(), 40);
    check_goldens(&model, "model.safetensors (dir)");
}

#[test]
fn safetensors_file_matches_goldens() {
    check_goldens(
        &load(&fixture_dir().join("model.safetensors")),
        "model.safetensors (file)",
    );
}

#[test]
fn pytorch_bin_matches_goldens() {
    check_goldens(
        &load(&fixture_dir().join("pytorch_model.bin")),
        "pytorch_model.bin",
    );
}

#[test]
fn fair_esm_checkpoint_matches_goldens() {
    check_goldens(
        &load(&fixture_dir().join("fair_esm_checkpoint.pt")),
        "fair_esm_checkpoint.pt",
    );
}

/// The CPU backend's fused kernels (`models::cpu_kernels`) against Burn's generic ops (the
/// path the GPU backends take) on the same model: both at the goldens, and equal to each other
/// on a padded batch.
#[test]
fn fused_cpu_kernels_equal_the_generic_path() {
    let fused = load(&fixture_dir());
    let generic = load(&fixture_dir()).without_cpu_kernels();
    check_goldens(&generic, "generic ops");
    parity::check_paths_agree(&fused, &generic, &cases(), "fused vs generic", BATCH_TOL);
}

/// `--precision bf16` and `int8` on the CPU: the projections' products with bf16 operands,
/// or W8A8 int8 ones (on AMX tiles where the CPU has them), stay within cosine 0.999 of the
/// f32 goldens (0.99998 and 0.9998 measured), and the AMX kernels compute what the
/// composition with reduced operands does.
#[test]
fn reduced_products_stay_near_the_goldens() {
    for (matmul, min_cosine, tol) in [
        (Matmul::Bf16, 0.999, BF16_TOL),
        (Matmul::Int8, 0.999, INT8_TOL),
    ] {
        let fused = load(&fixture_dir()).with_matmul(matmul);
        let generic = load(&fixture_dir())
            .without_cpu_kernels()
            .with_matmul(matmul);
        parity::check_reduced_products(&fused, &generic, &cases(), matmul, min_cosine, tol);
    }
}

/// A model loaded for reduced products (each projection's weight packed into bf16 or int8
/// tiles as it is read, never held in f32) computes, bit for bit, what the f32 load switched to
/// those products computes; from each checkpoint format.
#[test]
fn loading_for_reduced_products_equals_switching_to_them() {
    for matmul in [Matmul::Bf16, Matmul::Int8] {
        let switched = load(&fixture_dir()).with_matmul(matmul);
        for path in [fixture_dir(), fixture_dir().join("fair_esm_checkpoint.pt")] {
            let (loaded, _) = Esm2::<B>::load_for(&path, &device(), matmul)
                .unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));
            let what = format!("{} ({matmul:?})", path.display());
            parity::check_same_bits(&loaded, &switched, &cases(), &what);
            if reduced::available(matmul) {
                // The projections' weights are tiles only: the module's f32 parameters are the
                // rest (2 layers × (q, k, v, out: 4 · 40² + fc1, fc2: 2 · 40 · 160)).
                let f32_params = load(&fixture_dir()).num_params();
                assert_eq!(
                    f32_params - loaded.num_params(),
                    2 * (4 * 40 * 40 + 2 * 40 * 160)
                );
            }
        }
    }
}

#[test]
fn batching_and_order_do_not_change_results() {
    let model = load(&fixture_dir());
    // A fixed shuffle, with a duplicate: each row follows its sequence.
    let order = [3usize, 0, 5, 2, 2, 4, 1];
    parity::check_batching_and_order(&model, &cases(), &order, TOL, BATCH_TOL);
}

#[test]
fn long_sequence_pools_first_1024_residues() {
    let model = load(&fixture_dir());
    // A random protein longer than the pooling cap (fixed-seed LCG over the 20 amino acids).
    let residues = parity::random_protein(1100, 0x2545_f491_4f6c_dd1d);
    let ids = EsmTokenizer::new().encode(&residues);
    assert_eq!(ids.len(), 1102);

    let got = embed_one(&model, &ids);
    assert!(got.iter().all(|v| v.is_finite()));

    let hidden = model.last_hidden(&[ids]);
    let mean = |n: usize| -> Vec<f32> {
        let [_, _, dim] = hidden.dims();
        let rows = hidden.clone().slice([0..1, 1..1 + n]).reshape([n, dim]);
        rows.mean_dim(0)
            .reshape([dim])
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let capped = mean(MAX_POOLED_RESIDUES);
    assert!(max_abs_diff(&got, &capped) <= BATCH_TOL);
    assert!(
        max_abs_diff(&got, &mean(1100)) > 1e-4,
        "residues past 1024 must not be pooled"
    );
}

/// A model directory holding `config.json` and the fixture's tensors, renamed or dropped by
/// `rename` (`None` drops a tensor), as `model.safetensors`.
fn rewritten_dir(rename: impl Fn(&str) -> Option<String>) -> tempfile::TempDir {
    use safetensors::SafeTensors;

    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter_map(|(name, view)| rename(&name).map(|n| (n, view)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_dir().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors::serialize(kept, &None).unwrap(),
    )
    .unwrap();
    dir
}

#[test]
fn bare_esm_model_names_load() {
    // An `EsmModel` checkpoint: no `esm.` prefix, no LM head.
    let dir = rewritten_dir(|name| name.strip_prefix("esm.").map(str::to_string));
    check_goldens(&load(dir.path()), "bare EsmModel safetensors");
}

#[test]
fn pytorch_bin_dir_loads() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "pytorch_model.bin"] {
        std::fs::copy(fixture_dir().join(f), dir.path().join(f)).unwrap();
    }
    check_goldens(&load(dir.path()), "pytorch_model.bin (dir)");
}

#[test]
fn missing_tensor_is_named() {
    let missing = "esm.encoder.layer.1.attention.self.key.weight";
    let dir = rewritten_dir(|name| (name != missing).then(|| name.to_string()));
    let err = Esm2::<B>::load(dir.path(), &device()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(missing),
        "error does not name the tensor: {msg}"
    );
}

#[test]
fn empty_batch_gives_no_rows() {
    let model = load(&fixture_dir());
    assert_eq!(model.embed(&[]).dims(), [0, 40]);
}

/// The forward must be dtype-generic (f16/bf16 on GPU). A device's default dtype can be set
/// only once per process, so this test re-runs itself in a child process with Flex at f16.
#[test]
fn half_precision_matches_f32() {
    const CHILD: &str = "ESM2_PARITY_F16_CHILD";
    if std::env::var_os(CHILD).is_none() {
        crate::common::run_test_in_child(
            module_path!(),
            "half_precision_matches_f32",
            (CHILD, "1"),
        );
        return;
    }
    use burn::tensor::{FloatDType, IntDType};
    burn::tensor::set_default_dtypes::<B>(&device(), FloatDType::F16, IntDType::I32).unwrap();
    let model = load(&fixture_dir());
    let cases = cases();
    let batch = batch_of(&cases);
    assert_eq!(
        model.last_hidden(&batch[..1]).dtype(),
        burn::tensor::DType::F16
    );
    parity::check_cosines(model.embed(&batch), &cases, "f16", 0.999);
}
