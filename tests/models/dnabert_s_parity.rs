//! DNABERT-S against the goldens of the original `bert_layers.BertModel`
//! (tests/fixtures/dnabert_s_tiny, see docs/method.md, "DNABERT-S embedding"): token ids exact, mean embeddings
//! within 1e-4, from both checkpoint formats; batching, order and padding must not change
//! results; ALiBi extrapolates past 512 tokens; missing or broken files give errors that name
//! them.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use virnucpro::models::dnabert_s::{alibi_slopes, DnabertS};
use virnucpro::models::ops::{Matmul, ModelOps};
use virnucpro::tokenize::dnabert::DnaTokenizer;

use crate::common::parity::{self, batch_of, embed_one, max_abs_diff, random_dna, rows};
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
    crate::common::fixtures().join("dnabert_s_tiny")
}

fn cases() -> Vec<Case> {
    crate::common::model_cases("dnabert_s_tiny")
}

fn device() -> Device<B> {
    Default::default()
}

fn load(path: &Path) -> DnabertS<B> {
    load_on::<B>(path, &device())
}

fn load_on<Bk: ModelOps>(path: &Path, device: &Bk::Device) -> DnabertS<Bk> {
    let (model, config) = DnabertS::<Bk>::load(path, device)
        .unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));
    assert_eq!(
        (
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads,
            config.intermediate_size,
            config.vocab_size
        ),
        (48, 2, 12, 80, 96)
    );
    assert_eq!(model.hidden_size(), 48);
    model
}

fn tokenizer() -> DnaTokenizer {
    DnaTokenizer::from_dir(&fixture_dir()).unwrap()
}

/// Every case, one sequence per forward, against its golden embedding.
fn check_goldens<Bk: ModelOps>(model: &DnabertS<Bk>, what: &str) {
    parity::check_goldens(model, &cases(), what, TOL);
}

#[test]
fn token_ids_match_goldens() {
    let tok = tokenizer();
    let cases = cases();
    for case in &cases {
        assert_eq!(
            tok.encode(&case.sequence).unwrap(),
            case.token_ids,
            "{}",
            case.id
        );
    }
    // The batch encoder gives the same ids and does not pad.
    let seqs: Vec<&str> = cases.iter().map(|c| c.sequence.as_str()).collect();
    let batch = tok.encode_batch(&seqs).unwrap();
    for (case, ids) in cases.iter().zip(&batch) {
        assert_eq!(ids, &case.token_ids, "batch {}", case.id);
    }
    assert_eq!(tok.pad_id(), 3);
    assert_eq!(tok.vocab_size(), 96);
    // Characters outside the BPE alphabet are [UNK] (id 0), framed by [CLS]/[SEP].
    assert_eq!(tok.encode("N").unwrap(), vec![1, 0, 2]);
    assert_eq!(tok.encode("").unwrap(), vec![1, 2]);
}

#[test]
fn goldens_from_safetensors() {
    // A directory prefers model.safetensors.
    check_goldens(&load(&fixture_dir()), "model.safetensors");
}

#[test]
fn goldens_from_pytorch_bin() {
    check_goldens(
        &load(&fixture_dir().join("pytorch_model.bin")),
        "pytorch_model.bin",
    );
}

/// The CPU backend's fused attention (`models::cpu_kernels`) against Burn's generic ops (the
/// path the GPU backends take) on the same model: both at the goldens, and equal to each other
/// on a padded batch.
#[test]
fn fused_cpu_attention_equals_the_generic_path() {
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
        for path in [fixture_dir(), fixture_dir().join("pytorch_model.bin")] {
            let (loaded, _) = DnabertS::<B>::load_for(&path, &device(), matmul)
                .unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));
            let what = format!("{} ({matmul:?})", path.display());
            parity::check_same_bits(&loaded, &switched, &cases(), &what);
        }
    }
}

#[test]
fn batched_and_shuffled_match_single() {
    let model = load(&fixture_dir());
    // A fixed permutation (and a duplicate): each row still belongs to its sequence.
    let order = [3usize, 0, 5, 2, 4, 1, 3];
    parity::check_batching_and_order(&model, &cases(), &order, TOL, BATCH_TOL);
    assert_eq!(model.embed(&[]).dims(), [0, 48]);
}

#[test]
fn longer_than_512_tokens_embeds() {
    let model = load(&fixture_dir());
    let tok = tokenizer();
    // Two sequences past the original's 512-token ALiBi table, of different lengths so that
    // the shorter one is padded in the batch.
    let long = tok.encode(&random_dna(2000, 7)).unwrap();
    let longer = tok.encode(&random_dna(2300, 11)).unwrap();
    assert!(
        long.len() > 600 && longer.len() > long.len(),
        "{} / {} tokens",
        long.len(),
        longer.len()
    );
    let short = cases()[0].token_ids.clone();

    let alone: Vec<Vec<f32>> = [&long, &longer]
        .iter()
        .map(|ids| embed_one(&model, ids))
        .collect();
    assert!(alone.iter().flatten().all(|v| v.is_finite()));
    let batched = rows(model.embed(&[short.clone(), long.clone(), longer.clone(), short]));
    let diff = max_abs_diff(&alone[0], &batched[1]).max(max_abs_diff(&alone[1], &batched[2]));
    assert!(diff <= BATCH_TOL, "long batched vs single: {diff}");
    assert!(max_abs_diff(&batched[0], &cases()[0].embedding) <= TOL);
    assert!(max_abs_diff(&batched[3], &cases()[0].embedding) <= TOL);
    eprintln!(
        "{}- and {}-token sequences: batched vs single max abs diff {diff:e}",
        long.len(),
        longer.len()
    );
    if let Ok(path) = std::env::var("DUMP_LONG") {
        let json = serde_json::json!({"ids": long, "embedding": alone[0]});
        std::fs::write(path, json.to_string()).unwrap();
    }
}

fn copy_fixture_files(dir: &Path, files: &[&str]) {
    for f in files {
        std::fs::copy(fixture_dir().join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn missing_tokenizer_or_config_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture_files(dir.path(), &["model.safetensors"]);

    let err = DnaTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(format!("{err:#}").contains("tokenizer.json"), "{err:#}");

    let err = DnabertS::<B>::load(dir.path(), &device()).unwrap_err();
    assert!(format!("{err:#}").contains("config.json"), "{err:#}");
    // Also when pointed at the weights file.
    let err = DnabertS::<B>::load(&dir.path().join("model.safetensors"), &device()).unwrap_err();
    assert!(format!("{err:#}").contains("config.json"), "{err:#}");

    // A directory without weights says which files it looked for.
    let empty = tempfile::tempdir().unwrap();
    copy_fixture_files(empty.path(), &["config.json"]);
    let err = DnabertS::<B>::load(empty.path(), &device()).unwrap_err();
    assert!(format!("{err:#}").contains("model.safetensors"), "{err:#}");
}

/// Rewrite the fixture's safetensors through `edit` (name, shape, bytes) into `dir`.
fn write_edited(dir: &Path, edit: impl Fn(&str, &[usize], &[u8]) -> (String, Vec<usize>, Vec<u8>)) {
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let edited: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .iter()
        .map(|(name, view)| edit(name, view.shape(), view.data()))
        .collect();
    let views: Vec<(String, TensorView)> = edited
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
    copy_fixture_files(dir, &["config.json"]);
}

#[test]
fn mis_shaped_tensor_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let broken = "encoder.layer.1.attention.self.Wqkv.bias";
    write_edited(dir.path(), |name, shape, data| {
        if name == broken {
            (
                name.into(),
                vec![shape[0] - 1],
                data[..data.len() - 4].to_vec(),
            )
        } else {
            (name.into(), shape.to_vec(), data.to_vec())
        }
    });
    let err = DnabertS::<B>::load(dir.path(), &device()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(broken) && msg.contains("143"), "{msg}");
}

#[test]
fn bert_prefix_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    write_edited(dir.path(), |name, shape, data| {
        (format!("bert.{name}"), shape.to_vec(), data.to_vec())
    });
    check_goldens(&load(dir.path()), "bert.-prefixed");
}

#[test]
fn alibi_slopes_power_of_two() {
    let expected: Vec<f64> = (1..=8).map(|i| 0.5f64.powi(i)).collect();
    assert_eq!(alibi_slopes(8), expected);
    // 16 heads: start 2^-0.5.
    let s16 = alibi_slopes(16);
    assert_eq!(s16.len(), 16);
    for (i, s) in s16.iter().enumerate() {
        assert!(
            (s - 2f64.powf(-0.5 * (i + 1) as f64)).abs() < 1e-15,
            "{i}: {s}"
        );
    }
}

#[test]
fn alibi_slopes_twelve_heads() {
    let s12 = alibi_slopes(12);
    assert_eq!(s12.len(), 12);
    assert_eq!(s12[..8], alibi_slopes(8)[..]);
    let s16 = alibi_slopes(16);
    assert_eq!(s12[8..], [s16[0], s16[2], s16[4], s16[6]]);
    // 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5
    for (k, s) in s12[8..].iter().enumerate() {
        assert!((s - 2f64.powf(-0.5 - k as f64)).abs() < 1e-15);
    }
}

/// The forward in half precision (what `--precision f16|bf16` runs on a GPU), here on the CPU
/// backend: every golden within cosine 0.999, padding and ALiBi included (one padded batch).
/// A device's default dtype can be set only once per process, so each precision runs in a
/// child process of this test binary.
#[test]
fn half_precision_matches_f32_goldens() {
    const CHILD: &str = "DNABERT_PARITY_HALF_CHILD";
    let Some(which) = std::env::var_os(CHILD) else {
        for which in ["f16", "bf16"] {
            let log = crate::common::run_test_in_child(
                module_path!(),
                "half_precision_matches_f32_goldens",
                (CHILD, which),
            );
            assert!(
                log.contains("min cosine"),
                "{which} child ran no check:\n{log}"
            );
        }
        return;
    };
    use burn::tensor::{DType, FloatDType, IntDType};
    let (dtype, float) = match which.to_str().unwrap() {
        "f16" => (DType::F16, FloatDType::F16),
        _ => (DType::BF16, FloatDType::BF16),
    };
    burn::tensor::set_default_dtypes::<B>(&device(), float, IntDType::I32).unwrap();
    let model = load(&fixture_dir());
    let cases = cases();
    let batch = batch_of(&cases);
    assert_eq!(model.last_hidden(&batch[..1]).dtype(), dtype);
    parity::check_cosines(model.embed(&batch), &cases, &format!("{dtype:?}"), 0.999);
}

/// The same checks on the CUDA backend, in f32 and half precision (`--features cuda`; skipped
/// without a CUDA device).
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use burn::backend::cuda::{Cuda, CudaDevice};

    fn device_or_skip() -> Option<CudaDevice> {
        match virnucpro::device::cuda_device_count() {
            Ok(n) if n > 0 => Some(CudaDevice::new(0)),
            other => {
                eprintln!("skipping CUDA test: {other:?}");
                None
            }
        }
    }

    /// Goldens one by one and in one padded batch, plus a > 512-token sequence against Flex.
    fn check<Bk: ModelOps>(device: &Bk::Device, what: &str, tol: f32) {
        let model = load_on::<Bk>(&fixture_dir(), device);
        let cases = cases();
        parity::check_goldens(&model, &cases, what, tol);
        parity::check_batched_goldens(&model, &cases, what, tol);

        let long = tokenizer().encode(&random_dna(2000, 7)).unwrap();
        let expected = embed_one(&load(&fixture_dir()), &long);
        let got = rows(model.embed(&[cases[0].token_ids.clone(), long]));
        let diff = max_abs_diff(&got[1], &expected);
        assert!(diff <= tol, "{what} long vs Flex: {diff}");
        eprintln!("{what}: long sequence vs Flex f32 max abs diff {diff:e}");
    }

    #[test]
    fn goldens_on_cuda_f32() {
        if let Some(device) = device_or_skip() {
            check::<Cuda<f32, i32>>(&device, "cuda f32", TOL);
        }
    }

    #[test]
    fn goldens_on_cuda_half() {
        if let Some(device) = device_or_skip() {
            check::<Cuda<half::f16, i32>>(&device, "cuda f16", 5e-2);
            check::<Cuda<half::bf16, i32>>(&device, "cuda bf16", 2e-1);
        }
    }
}
