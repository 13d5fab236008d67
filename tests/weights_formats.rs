//! The weight readers against the fixtures: PyTorch zip checkpoints (HF `pytorch_model.bin`,
//! fair-esm `.pt`, whole pickled modules) must give exactly the tensors of the safetensors
//! files made from the same models; hand-built checkpoints cover strided views, other dtypes,
//! compressed entries and the error messages.

use std::io::Write;
use std::path::{Path, PathBuf};

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
    let err = format!(
        "{:#}",
        weights::open(&path)
            .unwrap()
            .source()
            .read_f32("w")
            .unwrap_err()
    );
    assert!(
        err.contains("needs element 5") && err.contains("holds 4"),
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
