//! The weight readers against the fixtures: PyTorch zip checkpoints (HF `pytorch_model.bin`,
//! fair-esm `.pt`, whole pickled modules) must give exactly the tensors of the safetensors
//! files made from the same models; hand-built checkpoints cover strided views, other dtypes,
//! compressed entries and the error messages.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use virnucpro::models::classifier::Classifier;
use virnucpro::models::dnabert_s::{DnabertConfig, DnabertS};
use virnucpro::models::esm2::{Esm2, Esm2Config};
use virnucpro::tokenize::dnabert::DnaTokenizer;
use virnucpro::weights::torch_file::{fair_esm_config, FairEsmArgs};
use virnucpro::weights::{self, TensorSource};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn sorted_names(s: &dyn TensorSource) -> Vec<String> {
    let mut n = s.names();
    n.sort();
    n
}

/// Every tensor of `a` equals the one of the same name in `b`, bit for bit.
fn assert_same_tensors(a: &dyn TensorSource, b: &dyn TensorSource) {
    assert_eq!(
        sorted_names(a),
        sorted_names(b),
        "{} vs {}",
        a.describe(),
        b.describe()
    );
    for name in a.names() {
        assert_eq!(a.shape(&name), b.shape(&name), "shape of {name}");
        assert_eq!(
            a.read_f32(&name).unwrap(),
            b.read_f32(&name).unwrap(),
            "values of {name}"
        );
    }
}

#[test]
fn esm2_bin_equals_safetensors() {
    let bin = weights::open(&fixture("esm2_tiny/pytorch_model.bin")).unwrap();
    let st = weights::open(&fixture("esm2_tiny/model.safetensors")).unwrap();
    assert!(bin.contains("esm.embeddings.word_embeddings.weight"));
    assert_same_tensors(bin.source(), st.source());
}

#[test]
fn dnabert_s_bin_equals_safetensors() {
    let bin = weights::open(&fixture("dnabert_s_tiny/pytorch_model.bin")).unwrap();
    let st = weights::open(&fixture("dnabert_s_tiny/model.safetensors")).unwrap();
    assert!(bin.contains("encoder.layer.0.attention.self.Wqkv.weight"));
    assert_same_tensors(bin.source(), st.source());
}

#[test]
fn fair_esm_checkpoint_tensors_match_hf_names() {
    let fair = weights::open(&fixture("esm2_tiny/fair_esm_checkpoint.pt")).unwrap();
    let hf = weights::open(&fixture("esm2_tiny/model.safetensors")).unwrap();
    // The state dict is `model`; `cfg` holds no tensors and gives no names.
    assert!(
        fair.source()
            .names()
            .iter()
            .all(|n| n.starts_with("encoder.")),
        "{:?}",
        fair.source().names()
    );
    let pairs = [
        (
            "encoder.sentence_encoder.embed_tokens.weight",
            "esm.embeddings.word_embeddings.weight",
        ),
        (
            "encoder.sentence_encoder.layers.0.self_attn.q_proj.weight",
            "esm.encoder.layer.0.attention.self.query.weight",
        ),
        (
            "encoder.sentence_encoder.layers.1.self_attn.out_proj.bias",
            "esm.encoder.layer.1.attention.output.dense.bias",
        ),
        (
            "encoder.sentence_encoder.layers.0.self_attn_layer_norm.weight",
            "esm.encoder.layer.0.attention.LayerNorm.weight",
        ),
        (
            "encoder.sentence_encoder.layers.1.fc1.weight",
            "esm.encoder.layer.1.intermediate.dense.weight",
        ),
        (
            "encoder.sentence_encoder.layers.1.fc2.bias",
            "esm.encoder.layer.1.output.dense.bias",
        ),
        (
            "encoder.sentence_encoder.layers.1.final_layer_norm.bias",
            "esm.encoder.layer.1.LayerNorm.bias",
        ),
        (
            "encoder.sentence_encoder.emb_layer_norm_after.weight",
            "esm.encoder.emb_layer_norm_after.weight",
        ),
    ];
    for (f, h) in pairs {
        assert_eq!(fair.source().shape(f), hf.source().shape(h), "{f}");
        assert_eq!(
            fair.source().read_f32(f).unwrap(),
            hf.source().read_f32(h).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn fair_esm_config_is_read_from_the_namespace() {
    let cfg = fair_esm_config(&fixture("esm2_tiny/fair_esm_checkpoint.pt")).unwrap();
    assert_eq!(
        cfg,
        Some(FairEsmArgs {
            encoder_layers: 2,
            encoder_embed_dim: 40,
            encoder_attention_heads: 5,
            token_dropout: true
        })
    );
    // Checkpoints without a fair-esm cfg say so rather than fail.
    assert_eq!(
        fair_esm_config(&fixture("esm2_tiny/pytorch_model.bin")).unwrap(),
        None
    );
    assert_eq!(fair_esm_config(&fixture("mlp_tiny.pth")).unwrap(), None);
}

#[test]
fn whole_pickled_module_is_flattened_like_a_state_dict() {
    let w = weights::open(&fixture("mlp_tiny.pth")).unwrap();
    let s = w.source();
    // Pickle order: parameters, then buffers, module by module; dropout has none.
    assert_eq!(
        s.names(),
        [
            "hidden_layer.weight",
            "hidden_layer.bias",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked",
            "output_layer.weight",
            "output_layer.bias",
        ]
    );
    assert_eq!(s.shape("hidden_layer.weight"), Some(vec![16, 88]));
    assert_eq!(s.shape("output_layer.weight"), Some(vec![2, 16]));
    assert_eq!(s.shape("bn1.num_batches_tracked"), Some(vec![]));
    // int64 buffers read as f32 too.
    assert_eq!(s.read_f32("bn1.num_batches_tracked").unwrap().len(), 1);
    let var = s.read_f32("bn1.running_var").unwrap();
    assert!(var.iter().all(|&v| v > 0.0), "{var:?}");
}

#[test]
fn format_is_sniffed_when_the_extension_is_unknown_or_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let reference = weights::open(&fixture("esm2_tiny/model.safetensors")).unwrap();
    for (src, renamed) in [
        ("esm2_tiny/pytorch_model.bin", "weights.dat"),
        ("esm2_tiny/model.safetensors", "weights"),
        ("esm2_tiny/model.safetensors", "pytorch_model.bin"),
    ] {
        let renamed = dir.path().join(renamed);
        std::fs::copy(fixture(src), &renamed).unwrap();
        let w = weights::open(&renamed).unwrap();
        assert_same_tensors(w.source(), reference.source());
    }
}

#[test]
fn sharded_torch_index_is_merged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("mlp_tiny.pth"), dir.path().join("a.bin")).unwrap();
    std::fs::copy(
        fixture("esm2_tiny/pytorch_model.bin"),
        dir.path().join("b.bin"),
    )
    .unwrap();
    let index = dir.path().join("pytorch_model.bin.index.json");
    std::fs::write(
        &index,
        r#"{"metadata": {}, "weight_map": {"bn1.bias": "a.bin", "esm.embeddings.word_embeddings.weight": "b.bin"}}"#,
    )
    .unwrap();
    let w = weights::open(&index).unwrap();
    let direct = weights::open(&fixture("esm2_tiny/pytorch_model.bin")).unwrap();
    let name = "esm.embeddings.word_embeddings.weight";
    assert_eq!(
        w.source().read_f32(name).unwrap(),
        direct.source().read_f32(name).unwrap()
    );
    assert!(w.contains("bn1.bias"));
}

// ---- hand-built checkpoints ----

/// A protocol-2 pickle writer for the few opcodes the tests need.
#[derive(Default)]
struct Pk(Vec<u8>);

impl Pk {
    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(mut self, s: &str) -> Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn global(self, module: &str, name: &str) -> Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn int(self, v: u8) -> Self {
        self.op(&[b'K', v])
    }
    /// `BININT`: a signed 32-bit int.
    fn int32(self, v: i32) -> Self {
        self.op(b"J").op(&v.to_le_bytes())
    }
    fn ints(mut self, v: &[u8]) -> Self {
        self = self.op(b"(");
        for &x in v {
            self = self.int(x);
        }
        self.op(b"t")
    }
    /// `_rebuild_tensor_v2(storage(key, class), offset, size, stride, False, OrderedDict())`
    fn tensor(
        self,
        class: &str,
        key: &str,
        numel: u8,
        offset: u8,
        size: &[u8],
        stride: &[u8],
    ) -> Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .str("storage")
            .global("torch", class)
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"tQ")
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(b"\x89")
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
}

/// Write a torch-style zip: `archive/data.pkl` plus storages `archive/data/<key>`.
fn write_checkpoint(
    path: &Path,
    pickle: &[u8],
    storages: &[(&str, Vec<u8>)],
    method: CompressionMethod,
) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = SimpleFileOptions::default().compression_method(method);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/byteorder", opts).unwrap();
    zip.write_all(b"little").unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn strided_views_dtypes_and_compressed_entries() {
    let pickle = Pk::default()
        .op(b"\x80\x02}(")
        // The transpose of a contiguous [3, 2] matrix, saved as is: shape [2, 3], stride [1, 2].
        .str("transposed")
        .tensor("FloatStorage", "0", 6, 0, &[2, 3], &[1, 2])
        // Column 1 of the same storage: offset 1, stride 2.
        .str("column")
        .tensor("FloatStorage", "0", 6, 1, &[3], &[2])
        .str("half")
        .tensor("HalfStorage", "1", 2, 0, &[2], &[1])
        .str("bf16")
        .tensor("BFloat16Storage", "2", 1, 0, &[1, 1], &[7, 7])
        .str("long")
        .tensor("LongStorage", "3", 1, 0, &[], &[])
        .op(b"u.")
        .0;
    let half: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let storages = [
        ("0", f32_bytes(&[0., 1., 2., 3., 4., 5.])),
        ("1", half),
        ("2", half::bf16::from_f32(0.25).to_le_bytes().to_vec()),
        ("3", 42i64.to_le_bytes().to_vec()),
    ];
    let dir = tempfile::tempdir().unwrap();
    for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
        let path = dir.path().join("views.pt");
        write_checkpoint(&path, &pickle, &storages, method);
        let w = weights::open(&path).unwrap();
        let s = w.source();
        assert_eq!(s.shape("transposed"), Some(vec![2, 3]));
        assert_eq!(s.read_f32("transposed").unwrap(), [0., 2., 4., 1., 3., 5.]);
        assert_eq!(s.read_f32("column").unwrap(), [1., 3., 5.]);
        assert_eq!(s.read_f32("half").unwrap(), [1.5, -2.0]);
        assert_eq!(s.read_f32("bf16").unwrap(), [0.25]);
        assert_eq!(s.read_f32("long").unwrap(), [42.0]);
    }
}

#[test]
fn view_past_the_storage_is_an_error() {
    let pickle = Pk::default()
        .op(b"\x80\x02}(")
        .str("w")
        .tensor("FloatStorage", "0", 4, 2, &[2, 2], &[2, 1])
        .op(b"u.")
        .0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pt");
    write_checkpoint(
        &path,
        &pickle,
        &[("0", f32_bytes(&[0.; 4]))],
        CompressionMethod::Stored,
    );
    // Checked at open, before any tensor is read: elements 2..=5 are 24 bytes of a 16-byte
    // storage.
    let err = open_err(&path);
    assert!(
        err.contains("tensor w") && err.contains("needs 24 bytes") && err.contains("holds 16"),
        "{err}"
    );
}

fn open_err(path: &Path) -> String {
    match weights::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn clear_errors_for_files_that_are_not_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);

    std::fs::write(p("garbage.pt"), b"this is not a checkpoint at all").unwrap();
    assert!(open_err(&p("garbage.pt")).contains("not a PyTorch checkpoint (not a zip archive)"));

    std::fs::write(p("garbage.dat"), b"this is not a checkpoint at all").unwrap();
    assert!(open_err(&p("garbage.dat")).contains("unrecognised weights format"));

    // torch < 1.6: a bare pickle starting with the pickled magic number.
    std::fs::write(
        p("legacy.pth"),
        b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.",
    )
    .unwrap();
    let err = open_err(&p("legacy.pth"));
    assert!(err.contains("legacy") && err.contains("re-save"), "{err}");

    write_checkpoint(
        &p("nopickle.pt"),
        b"\xff\x00",
        &[],
        CompressionMethod::Stored,
    );
    let err = open_err(&p("nopickle.pt"));
    assert!(
        err.contains("unknown pickle opcode 0xff at offset 0"),
        "{err}"
    );

    write_checkpoint(
        &p("ext.pt"),
        b"\x80\x02\x82\x05.",
        &[],
        CompressionMethod::Stored,
    );
    let err = open_err(&p("ext.pt"));
    assert!(
        err.contains("unsupported pickle opcode EXT1") && err.contains("offset 2"),
        "{err}"
    );

    let mut zip = zip::ZipWriter::new(std::fs::File::create(p("plain.zip")).unwrap());
    zip.start_file("hello.txt", SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"hi").unwrap();
    zip.finish().unwrap();
    std::fs::rename(p("plain.zip"), p("plain.bin")).unwrap();
    assert!(open_err(&p("plain.bin")).contains("without data.pkl"));

    assert!(open_err(&p("missing.pt")).contains("does not exist"));
}

// ---- every Hugging Face layout, for both encoders ----

type B = burn::backend::Flex;

/// The tensors of a fixture's `model.safetensors`: name, shape, values.
type Named = Vec<(String, Vec<usize>, Vec<f32>)>;

fn fixture_tensors(model: &str) -> Named {
    let w = weights::open(&fixture(&format!("{model}/model.safetensors"))).unwrap();
    sorted_names(w.source())
        .into_iter()
        .map(|n| {
            let shape = w.source().shape(&n).unwrap();
            let values = w.source().read_f32(&n).unwrap();
            (n, shape, values)
        })
        .collect()
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| f32_bytes(v)).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, shape, _), b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .unwrap();
            (n.clone(), view)
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

/// A `torch.save(state_dict)`-style zip: one float storage per tensor.
fn write_torch_state_dict(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut pk = Pk::default().op(b"\x80\x02}(");
    let mut storages = Vec::new();
    for (i, (name, shape, values)) in tensors.iter().enumerate() {
        let key = i.to_string();
        let mut stride = vec![1i32; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1] as i32;
        }
        pk = pk
            .str(name)
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .str("storage")
            .global("torch", "FloatStorage")
            .str(&key)
            .str("cpu")
            .int32(values.len() as i32)
            .op(b"tQ")
            .int(0)
            .op(b"(");
        for &n in shape {
            pk = pk.int32(n as i32);
        }
        pk = pk.op(b"t(");
        for &st in &stride {
            pk = pk.int32(st);
        }
        pk = pk
            .op(b"t\x89")
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR");
        storages.push((key, f32_bytes(values)));
    }
    let pickle = pk.op(b"u.").0;
    let storages: Vec<(&str, Vec<u8>)> = storages
        .iter()
        .map(|(k, b)| (k.as_str(), b.clone()))
        .collect();
    write_checkpoint(path, &pickle, &storages, CompressionMethod::Stored);
}

/// `shards` files named by `shard_name(i, n)`, the tensors split between them, and the index
/// `index` mapping each tensor to its shard, as transformers writes them.
fn write_sharded(
    dir: &Path,
    tensors: &Named,
    index: &str,
    shard_name: impl Fn(usize, usize) -> String,
    write: impl Fn(&Path, &[(String, Vec<usize>, Vec<f32>)]),
) {
    let n = 2;
    let half = tensors.len().div_ceil(n);
    let mut map = serde_json::Map::new();
    for (i, part) in tensors.chunks(half).enumerate() {
        let file = shard_name(i + 1, n);
        write(&dir.join(&file), part);
        for (name, _, _) in part {
            map.insert(name.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join(index), json.to_string()).unwrap();
}

/// Model directories in every layout transformers reads, each with the fixture's config and
/// tokenizer files: `(what, dir)`.
fn layout_dirs(model: &str) -> Vec<(&'static str, tempfile::TempDir)> {
    let tensors = fixture_tensors(model);
    let new_dir = || {
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "tokenizer.json", "vocab.txt"] {
            let src = fixture(&format!("{model}/{f}"));
            if src.exists() {
                std::fs::copy(src, dir.path().join(f)).unwrap();
            }
        }
        dir
    };
    let mut out = Vec::new();

    let d = new_dir();
    write_safetensors(&d.path().join("model.safetensors"), &tensors);
    out.push(("model.safetensors", d));

    let d = new_dir();
    write_sharded(
        d.path(),
        &tensors,
        "model.safetensors.index.json",
        |i, n| format!("model-{i:05}-of-{n:05}.safetensors"),
        write_safetensors,
    );
    out.push(("sharded safetensors", d));

    let d = new_dir();
    write_torch_state_dict(&d.path().join("pytorch_model.bin"), &tensors);
    out.push(("pytorch_model.bin", d));

    let d = new_dir();
    write_sharded(
        d.path(),
        &tensors,
        "pytorch_model.bin.index.json",
        |i, n| format!("pytorch_model-{i:05}-of-{n:05}.bin"),
        write_torch_state_dict,
    );
    out.push(("sharded pytorch_model.bin", d));

    // Both formats: transformers takes the safetensors; the .bin here would not even open.
    let d = new_dir();
    write_safetensors(&d.path().join("model.safetensors"), &tensors);
    std::fs::write(d.path().join("pytorch_model.bin"), b"not a checkpoint").unwrap();
    out.push(("safetensors beside pytorch_model.bin", d));
    out
}

fn max_diff_vs_goldens(model: &str, embed: impl Fn(&[u32]) -> Tensor<B, 2>) -> f32 {
    let mut worst = 0f32;
    for case in crate::common::model_cases(model) {
        let got = embed(&case.token_ids).into_data().to_vec::<f32>().unwrap();
        assert_eq!(got.len(), case.embedding.len());
        for (a, b) in got.iter().zip(&case.embedding) {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

#[test]
fn every_hf_layout_loads_esm2() {
    let device = Default::default();
    for (what, dir) in layout_dirs("esm2_tiny") {
        let (model, _) =
            Esm2::<B>::load(dir.path(), &device).unwrap_or_else(|e| panic!("ESM-2 {what}: {e:#}"));
        let diff = max_diff_vs_goldens("esm2_tiny", |ids| model.embed(&[ids.to_vec()]));
        assert!(diff <= 1e-4, "ESM-2 {what}: max abs diff {diff}");
    }
}

#[test]
fn every_hf_layout_loads_dnabert_s() {
    let device = Default::default();
    for (what, dir) in layout_dirs("dnabert_s_tiny") {
        let (model, _) = DnabertS::<B>::load(dir.path(), &device)
            .unwrap_or_else(|e| panic!("DNABERT-S {what}: {e:#}"));
        let diff = max_diff_vs_goldens("dnabert_s_tiny", |ids| model.embed(&[ids.to_vec()]));
        assert!(diff <= 1e-4, "DNABERT-S {what}: max abs diff {diff}");
    }
}

#[test]
fn sharded_index_missing_a_listed_tensor_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = fixture_tensors("dnabert_s_tiny");
    write_sharded(
        dir.path(),
        &tensors,
        "pytorch_model.bin.index.json",
        |i, n| format!("pytorch_model-{i:05}-of-{n:05}.bin"),
        write_torch_state_dict,
    );
    // Replace shard 2 by a shard from "another download" holding only the first tensor.
    write_torch_state_dict(
        &dir.path().join("pytorch_model-00002-of-00002.bin"),
        &tensors[..1],
    );
    let err = open_err(&dir.path().join("pytorch_model.bin.index.json"));
    assert!(
        err.contains("tensors its shards do not hold") && err.contains("pytorch_model-00002"),
        "{err}"
    );
}

// ---- a config smaller than its checkpoint ----

/// A copy of a fixture model directory (safetensors) whose config.json sets
/// `num_hidden_layers` to `layers`.
fn dir_with_layers(model: &str, layers: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        let src = fixture(&format!("{model}/{f}"));
        if src.exists() {
            std::fs::copy(src, dir.path().join(f)).unwrap();
        }
    }
    let text = std::fs::read_to_string(fixture(&format!("{model}/config.json"))).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["num_hidden_layers"] = layers.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn esm2_config_with_fewer_layers_than_the_checkpoint_is_refused() {
    let dir = dir_with_layers("esm2_tiny", 1);
    let err = format!(
        "{:#}",
        Esm2::<B>::load(dir.path(), &Default::default()).unwrap_err()
    );
    // Layer 1's 16 encoder tensors; its rotary buffer is recomputed and never counted.
    assert!(
        err.contains("holds 16 tensors this config does not use")
            && err.contains("esm.encoder.layer.1.")
            && err.contains("num_hidden_layers"),
        "{err}"
    );
    // The heads the original never used (lm_head, position embeddings) are not reported.
    assert!(
        !err.contains("lm_head") && !err.contains("position_embeddings"),
        "{err}"
    );
}

#[test]
fn dnabert_s_config_with_fewer_layers_than_the_checkpoint_is_refused() {
    let dir = dir_with_layers("dnabert_s_tiny", 1);
    let err = format!(
        "{:#}",
        DnabertS::<B>::load(dir.path(), &Default::default()).unwrap_err()
    );
    assert!(
        err.contains("tensors this config does not use: encoder.layer.1.")
            && err.contains("num_hidden_layers")
            && !err.contains("pooler"),
        "{err}"
    );
}

#[test]
fn fixture_models_use_every_encoder_tensor() {
    // The full configs load (the check passes with every allow-listed head present), from
    // every file format the fixtures hold.
    let device = Default::default();
    for f in ["", "pytorch_model.bin", "fair_esm_checkpoint.pt"] {
        Esm2::<B>::load(&fixture(&format!("esm2_tiny/{f}")), &device)
            .unwrap_or_else(|e| panic!("esm2_tiny/{f}: {e:#}"));
    }
    for f in ["", "pytorch_model.bin"] {
        DnabertS::<B>::load(&fixture(&format!("dnabert_s_tiny/{f}")), &device)
            .unwrap_or_else(|e| panic!("dnabert_s_tiny/{f}: {e:#}"));
    }
    for f in ["mlp_tiny.pth", "mlp_3328x512.pth"] {
        Classifier::<B>::load(&fixture(f), &device).unwrap_or_else(|e| panic!("{f}: {e:#}"));
    }
}

#[test]
fn classifier_with_an_extra_layer_is_refused() {
    let w = weights::open(&fixture("mlp_tiny.pth")).unwrap();
    let mut tensors: Named = sorted_names(w.source())
        .into_iter()
        .filter(|n| w.source().read_f32(n).is_ok())
        .map(|n| {
            let shape = w.source().shape(&n).unwrap();
            let v = w.source().read_f32(&n).unwrap();
            (n, shape, v)
        })
        .collect();
    tensors.push(("hidden_layer2.weight".into(), vec![2, 2], vec![0.0; 4]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deeper.safetensors");
    write_safetensors(&path, &tensors);
    let err = format!(
        "{:#}",
        Classifier::<B>::load(&path, &Default::default()).unwrap_err()
    );
    assert!(
        err.contains("holds 1 tensor this config does not use: hidden_layer2.weight")
            && err.contains("MLPClassifier"),
        "{err}"
    );
}

// ---- the real models' published config and tokenizer files ----

fn real(name: &str) -> PathBuf {
    fixture(&format!("real_model_files/{name}"))
}

#[test]
fn real_esm2_configs_parse() {
    let small = Esm2Config::from_hf_config(&real("esm2_t6_8M_UR50D.config.json")).unwrap();
    assert_eq!(
        (small.num_layers, small.hidden, small.heads, small.ffn),
        (6, 320, 20, 1280)
    );
    assert!(small.token_dropout);
    assert_eq!(
        (small.vocab_size, small.mask_token_id, small.pad_token_id),
        (33, 32, 1)
    );
    let medium = Esm2Config::from_hf_config(&real("esm2_t12_35M_UR50D.config.json")).unwrap();
    assert_eq!(
        (medium.num_layers, medium.hidden, medium.heads, medium.ffn),
        (12, 480, 20, 1920)
    );
}

#[test]
fn real_dnabert_s_config_parses() {
    let c = DnabertConfig::from_file(&real("dnabert_s.config.json")).unwrap();
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.num_attention_heads),
        (768, 12, 12)
    );
    assert_eq!(
        (c.intermediate_size, c.vocab_size, c.pad_token_id),
        (3072, 4096, 0)
    );
}

#[test]
fn real_dnabert_s_tokenizer_is_not_padded_to_2000() {
    // The published tokenizer.json carries padding and truncation to 2000; like transformers
    // called without those arguments, ours must switch both off.
    let text = std::fs::read_to_string(real("dnabert_s.tokenizer.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json["padding"]["strategy"]["Fixed"], 2000,
        "fixture changed"
    );
    assert_eq!(json["truncation"]["max_length"], 2000, "fixture changed");

    let tok = DnaTokenizer::from_file(&real("dnabert_s.tokenizer.json")).unwrap();
    let short = tok.encode("ACGTACGTAC").unwrap();
    assert!(
        (3..=12).contains(&short.len()),
        "10 bases gave {} tokens",
        short.len()
    );
    let long: String = "ACGTTGCAAGCT".repeat(1000);
    let ids = tok.encode(&long).unwrap();
    assert!(
        ids.len() > 2000,
        "12 000 bases truncated to {} tokens",
        ids.len()
    );
    let batch = tok.encode_batch(&["ACGT", "ACGTACGTACGTACGTACGT"]).unwrap();
    assert!(
        batch[0].len() < batch[1].len() && batch[1].len() < 20,
        "{batch:?}"
    );
    assert!(!batch[0].contains(&tok.pad_id()), "{batch:?}");
}

#[test]
fn ordered_dict_with_metadata_is_still_a_state_dict() {
    // `Module.state_dict()` returns an OrderedDict with a `_metadata` attribute, pickled as a
    // BUILD after its items: its entries, not its `__dict__`, are the tensors.
    let pickle = Pk::default()
        .op(b"\x80\x02")
        .global("collections", "OrderedDict")
        .op(b")R(")
        .str("w")
        .tensor("FloatStorage", "0", 2, 0, &[2], &[1])
        .op(b"u}(")
        .str("_metadata")
        .op(b"}u")
        .op(b"b.")
        .0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.pt");
    write_checkpoint(
        &path,
        &pickle,
        &[("0", f32_bytes(&[1.0, 2.0]))],
        CompressionMethod::Stored,
    );
    let w = weights::open(&path).unwrap();
    assert_eq!(w.source().names(), ["w"]);
    assert_eq!(w.source().read_f32("w").unwrap(), [1.0, 2.0]);
}
