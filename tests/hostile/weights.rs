//! Hostile weight files against the binary, one test per case: each run is capped at
//! [`MEM_MIB`] of address space and [`SECS`] of wall time (`run_bounded`), and must be refused
//! with exit code 1, exactly one `error:` line saying what is wrong, no panic, no allocation
//! abort and no output file. The files are generated here (a raw zip writer that can lie about
//! sizes, a few pickle opcodes), so the corpus is readable next to its tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{assert_refused, fixtures, run_bounded, s};
use flate2::write::DeflateEncoder;
use flate2::Compression;

/// Address-space cap for every hostile run: far below what any bomb here would need.
const MEM_MIB: u64 = 2048;
/// Wall-time cap: every refusal here takes well under a second.
const SECS: u64 = 60;

// ---- generators ----

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `len` copies of `byte`, deflated, without holding `len` bytes in memory.
fn deflate_repeated(byte: u8, len: usize) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
    let block = vec![byte; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        e.write_all(&block[..n]).unwrap();
        left -= n;
    }
    e.finish().unwrap()
}

/// One zip entry: its name, its bytes as written (deflated when `deflated`), and the
/// uncompressed size and CRC the headers declare (free to lie).
struct Entry {
    name: String,
    raw: Vec<u8>,
    deflated: bool,
    declared: u64,
    crc: u32,
}

impl Entry {
    fn stored(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.into(),
            raw: data.to_vec(),
            deflated: false,
            declared: data.len() as u64,
            crc: crc32(data),
        }
    }

    fn deflated(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.into(),
            raw: deflate(data),
            deflated: true,
            declared: data.len() as u64,
            crc: crc32(data),
        }
    }

    /// Already-deflated bytes declaring `declared` uncompressed bytes.
    fn raw_deflated(name: &str, raw: Vec<u8>, declared: u64) -> Self {
        Self {
            name: name.into(),
            raw,
            deflated: true,
            declared,
            crc: 0,
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut h = flate2::Crc::new();
    h.update(data);
    h.sum()
}

/// A zip archive of `entries`, written field by field so the sizes can be anything (ZIP64
/// extra fields when they do not fit 32 bits).
fn zip_bytes(entries: &[Entry]) -> Vec<u8> {
    let (mut body, mut central) = (Vec::new(), Vec::new());
    for e in entries {
        let big = e.declared >= 0xFFFF_FFFF || e.raw.len() as u64 >= 0xFFFF_FFFF;
        let extra: Vec<u8> = if big {
            [
                1u16.to_le_bytes().as_slice(),
                &16u16.to_le_bytes(),
                &e.declared.to_le_bytes(),
                &(e.raw.len() as u64).to_le_bytes(),
            ]
            .concat()
        } else {
            Vec::new()
        };
        let (usize32, csize32) = if big {
            (0xFFFF_FFFF, 0xFFFF_FFFF)
        } else {
            (e.declared as u32, e.raw.len() as u32)
        };
        let method: u16 = if e.deflated { 8 } else { 0 };
        let offset = body.len() as u32;
        let name = e.name.as_bytes();
        // Local header.
        body.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        for v in [45u16, 0, method, 0, 0] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for v in [e.crc, csize32, usize32] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&(name.len() as u16).to_le_bytes());
        body.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        body.extend_from_slice(name);
        body.extend_from_slice(&extra);
        body.extend_from_slice(&e.raw);
        // Central directory record.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        for v in [45u16, 45, 0, method, 0, 0] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        for v in [e.crc, csize32, usize32] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        for v in [name.len() as u16, extra.len() as u16, 0, 0, 0] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        central.extend_from_slice(&0u32.to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
        central.extend_from_slice(&extra);
    }
    let mut out = body;
    let cd_start = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, entries.len() as u16, entries.len() as u16] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A protocol-2 pickle, opcode by opcode.
#[derive(Default)]
struct Pk(Vec<u8>);

impl Pk {
    fn new() -> Self {
        Self(b"\x80\x02".to_vec())
    }
    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(self, s: &str) -> Self {
        let n = (s.len() as u32).to_le_bytes();
        self.op(b"X").op(&n).op(s.as_bytes())
    }
    fn global(self, module: &str, name: &str) -> Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    /// A LONG1 int, any i64.
    fn int(self, v: i64) -> Self {
        self.op(b"\x8a\x08").op(&v.to_le_bytes())
    }
    fn ints(mut self, v: &[i64]) -> Self {
        self = self.op(b"(");
        for &x in v {
            self = self.int(x);
        }
        self.op(b"t")
    }
    /// `_rebuild_tensor_v2(storage("0", FloatStorage), 0, size, stride, False, OrderedDict())`
    fn tensor(self, size: &[i64], stride: &[i64]) -> Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .str("storage")
            .global("torch", "FloatStorage")
            .str("0")
            .str("cpu")
            .int(4)
            .op(b"tQ")
            .int(0)
            .ints(size)
            .ints(stride)
            .op(b"\x89")
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
    fn stop(self) -> Vec<u8> {
        self.op(b".").0
    }
}

/// `{"w": tensor}` with one 16-byte storage.
fn one_tensor_checkpoint(size: &[i64], stride: &[i64]) -> Vec<u8> {
    let pickle = Pk::new()
        .op(b"}")
        .str("w")
        .tensor(size, stride)
        .op(b"s")
        .stop();
    zip_bytes(&[
        Entry::stored("archive/data.pkl", &pickle),
        Entry::stored("archive/data/0", &[0u8; 16]),
    ])
}

// ---- running ----

/// A scratch directory with a FASTA of one protein and one ORF, and where outputs would go.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.faa"), ">orf1\nMKVLAAGIV\n").unwrap();
        std::fs::write(dir.path().join("n.fa"), ">orf1\nATGAAAGTTCTGGCAGCA\n").unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A model directory `name` with the tiny model's `config.json` (and tokenizer) and
    /// `files` as its weights.
    fn model_dir(&self, name: &str, model: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir(&dir).unwrap();
        for f in ["config.json", "tokenizer.json", "vocab.txt"] {
            let src = fixtures().join(model).join(f);
            if src.exists() {
                std::fs::copy(src, dir.join(f)).unwrap();
            }
        }
        for (f, bytes) in files {
            std::fs::write(dir.join(f), bytes).unwrap();
        }
        dir
    }

    /// An ESM-2 model directory whose weights are the checkpoint `bin` (`pytorch_model.bin`).
    fn esm_bin(&self, bin: &[u8]) -> PathBuf {
        self.model_dir("esm", "esm2_tiny", &[("pytorch_model.bin", bin)])
    }

    /// An ESM-2 model directory whose checkpoint holds only `pickle` as its `data.pkl`.
    fn esm_pickle(&self, pickle: &[u8]) -> PathBuf {
        self.esm_bin(&zip_bytes(&[Entry::stored("archive/data.pkl", pickle)]))
    }

    /// A DNABERT-S model directory with `bytes` as its weights file `file`.
    fn dna_model(&self, file: &str, bytes: &[u8]) -> PathBuf {
        self.model_dir("dna", "dnabert_s_tiny", &[(file, bytes)])
    }

    /// `embed-protein` with `model`, under the caps; asserts a clean refusal naming `needles`.
    fn refuse_protein(&self, model: &Path, needles: &[&str]) {
        self.refuse("embed-protein", "p.faa", model, needles);
    }

    fn refuse_dna(&self, model: &Path, needles: &[&str]) {
        self.refuse("embed-dna", "n.fa", model, needles);
    }

    fn refuse(&self, command: &str, input: &str, model: &Path, needles: &[&str]) {
        self.refuse_within(MEM_MIB, command, input, model, needles)
    }

    fn refuse_within(
        &self,
        mem_mib: u64,
        command: &str,
        input: &str,
        model: &Path,
        needles: &[&str],
    ) {
        let out = self.path("out.safetensors");
        let started = std::time::Instant::now();
        let o = run_bounded(
            &[
                command,
                s(&self.path(input)),
                "--model",
                s(model),
                "--output",
                s(&out),
            ],
            None,
            mem_mib,
            SECS,
        );
        eprintln!(
            "{command} {}: refused in {:.2?}: {}",
            model.display(),
            started.elapsed(),
            crate::common::stderr(&o)
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or("")
        );
        assert_refused(&o, 1, needles, &[&out]);
    }
}

// ---- PyTorch zip checkpoints ----

#[test]
fn pth_declaring_2_pow_60_bytes() {
    // The issue's 274-byte file: data.pkl deflated, its header declaring 2^60 bytes.
    let pickle = Pk::new().op(b"}").stop();
    let s = Scratch::new();
    let bytes = zip_bytes(&[Entry::raw_deflated(
        "archive/data.pkl",
        deflate(&pickle),
        1 << 60,
    )]);
    assert!(bytes.len() < 300);
    let p = s.write("declares.pth", &bytes);
    s.refuse_protein(&p, &["declares 1152921504606846976 bytes"]);
}

#[test]
fn storage_declaring_more_than_its_compressed_bytes_can_hold() {
    let pickle = Pk::new()
        .op(b"}")
        .str("w")
        .tensor(&[2, 2], &[2, 1])
        .op(b"s")
        .stop();
    let s = Scratch::new();
    let p = s.write(
        "storage.pth",
        &zip_bytes(&[
            Entry::stored("archive/data.pkl", &pickle),
            Entry::raw_deflated("archive/data/0", deflate(&[0u8; 16]), 1 << 40),
        ]),
    );
    s.refuse_protein(&p, &["archive/data/0", "declares 1099511627776 bytes"]);
}

#[test]
fn pickle_zip_bomb_is_stopped_by_the_object_budget() {
    // 24 MiB of EMPTY_DICT opcodes deflate to ~25 KB: under the 32 MiB data.pkl limit, so the
    // parser's object budget must stop it (unbounded, it needed ~100 bytes per opcode).
    let mut pickle = b"\x80\x02".to_vec();
    pickle.resize(24 << 20, b'}');
    pickle.push(b'.');
    let s = Scratch::new();
    let bytes = zip_bytes(&[Entry::deflated("archive/data.pkl", &pickle)]);
    assert!(bytes.len() < 64 << 10, "{} bytes", bytes.len());
    let p = s.write("bomb.pth", &bytes);
    s.refuse_protein(&p, &["more than 4194304 objects"]);
}

#[test]
fn pickle_zip_bomb_declaring_its_real_size_is_refused_unread() {
    // 1 GiB of opcodes in a 5 MB file, honestly declared: refused before inflating.
    let s = Scratch::new();
    let raw = deflate_repeated(b'}', 1 << 30);
    let bytes = zip_bytes(&[Entry::raw_deflated("archive/data.pkl", raw, 1 << 30)]);
    assert!(bytes.len() < 8 << 20, "{} bytes", bytes.len());
    let p = s.write("bomb1g.pth", &bytes);
    s.refuse_protein(&p, &["data.pkl declares 1073741824 bytes"]);
}

#[test]
fn pickle_zip_bomb_understating_its_size_is_read_only_as_far_as_declared() {
    // Declares 1 MiB but inflates to 256 MiB: reading stops at the declared size, and the
    // truncated pickle is refused.
    let s = Scratch::new();
    let raw = deflate_repeated(b'}', 1 << 28);
    let p = s.write(
        "liar.pth",
        &zip_bytes(&[Entry::raw_deflated("archive/data.pkl", raw, 1 << 20)]),
    );
    s.refuse_protein(&p, &["pickle ends without a STOP opcode"]);
}

#[test]
fn storage_zip_bomb_inflates_only_what_the_tensor_needs() {
    // A storage inflating to 1.5 GiB behind a 4-element tensor, under a 1 GiB cap: only 16
    // bytes are inflated, and the run fails later for an unrelated reason (the tensors the
    // model needs are missing), not from memory.
    let pickle = Pk::new()
        .op(b"}")
        .str("w")
        .tensor(&[2, 2], &[2, 1])
        .op(b"s")
        .stop();
    let s = Scratch::new();
    let raw = deflate_repeated(0, 3 << 29);
    let dir = s.esm_bin(&zip_bytes(&[
        Entry::stored("archive/data.pkl", &pickle),
        Entry::raw_deflated("archive/data/0", raw, 3 << 29),
    ]));
    s.refuse_within(
        1024,
        "embed-protein",
        "p.faa",
        &dir,
        &["embeddings.word_embeddings.weight", "missing"],
    );
}

#[test]
fn exponential_pickle_graph_is_walked_once() {
    // d0 = {}; d_k = {"a": d_{k-1}, "b": d_{k-1}} for 40 levels (memoised, ~1 KB): walking it
    // as a tree visits 2^40 dicts.
    let mut pk = Pk::new().op(b"}").op(b"q\x00");
    for k in 1..=40u8 {
        pk = pk
            .op(b"}")
            .op(b"(")
            .str("a")
            .op(&[b'h', k - 1])
            .str("b")
            .op(&[b'h', k - 1])
            .op(b"u")
            .op(&[b'q', k]);
    }
    let pickle = pk.stop();
    assert!(pickle.len() < 1200);
    let s = Scratch::new();
    let dir = s.esm_pickle(&pickle);
    s.refuse_protein(&dir, &["no tensors found"]);
}

#[test]
fn objects_sharing_one_huge_dict_scan_it_once() {
    // 150 000 objects all built with the same memoised 1 000 000-entry `__dict__`: scanning it
    // per object took 1.5 * 10^11 steps.
    let mut pk = Pk::new().global("__main__", "Thing").op(b"q\x01").op(b"}(");
    for _ in 0..1_000_000 {
        pk = pk.op(b"K\x01N");
    }
    pk = pk.op(b"uq\x00").op(b"0}(");
    for i in 0..150_000i32 {
        pk = pk.op(b"J").op(&i.to_le_bytes()).op(b"h\x01)\x81h\x00b");
    }
    let pickle = pk.op(b"u").stop();
    let s = Scratch::new();
    let dir = s.esm_pickle(&pickle);
    s.refuse_protein(&dir, &["no tensors found"]);
}

#[test]
fn modules_sharing_one_huge_buffer_set_exhaust_the_walk_budget() {
    // 100 000 modules, each with its own small `__dict__` naming the same memoised
    // 1 000 000-member `_non_persistent_buffers_set`.
    let mut pk = Pk::new()
        .global("__main__", "Net")
        .op(b"q\x01")
        .op(b"\x8f(");
    for i in 0..1_000_000i32 {
        pk = pk.op(b"J").op(&i.to_le_bytes());
    }
    pk = pk.op(b"\x90q\x00").op(b"0}(");
    for i in 0..100_000i32 {
        pk = pk
            .op(b"J")
            .op(&i.to_le_bytes())
            .op(b"h\x01)\x81}(")
            .str("_parameters")
            .op(b"}")
            .str("_non_persistent_buffers_set")
            .op(b"h\x00ub");
    }
    let pickle = pk.op(b"u").stop();
    let s = Scratch::new();
    let dir = s.esm_pickle(&pickle);
    s.refuse_protein(&dir, &["too large or too interlinked"]);
}

#[test]
fn huge_binunicode_length_is_unsigned_and_checked() {
    let s = Scratch::new();
    let p = s.write(
        "binunicode.pth",
        &zip_bytes(&[Entry::stored(
            "archive/data.pkl",
            b"\x80\x02X\xff\xff\xff\xffabc.",
        )]),
    );
    s.refuse_protein(&p, &["4294967295 bytes wanted"]);
}

#[test]
fn deeply_nested_dicts_are_refused() {
    // 100 000 dicts, each the only value of the previous one.
    let n = 100_000;
    let mut pickle = b"\x80\x02".to_vec();
    for _ in 0..n {
        pickle.extend_from_slice(b"}X\x01\x00\x00\x00k");
    }
    pickle.push(b'N');
    pickle.extend(std::iter::repeat_n(b's', n));
    pickle.push(b'.');
    let s = Scratch::new();
    let dir = s.esm_pickle(&pickle);
    s.refuse_protein(&dir, &["nested more than 256 deep"]);
}

#[test]
fn tensor_shape_whose_size_overflows() {
    let s = Scratch::new();
    let dir = s.esm_bin(&one_tensor_checkpoint(&[1 << 62, 16], &[16, 1]));
    s.refuse_protein(&dir, &["tensor w", "too large"]);
}

#[test]
fn expanded_view_larger_than_its_storage() {
    // Stride 0: 2^40 elements from a 4-element storage would materialise 4 TiB.
    let s = Scratch::new();
    let dir = s.esm_bin(&one_tensor_checkpoint(&[1 << 20, 1 << 20], &[0, 0]));
    s.refuse_protein(&dir, &["tensor w", "expanded view"]);
}

#[test]
fn stored_entry_running_past_the_end_of_the_file() {
    let pickle = Pk::new().op(b"}").stop();
    let mut entry = Entry::stored("archive/data.pkl", &pickle);
    entry.declared = 1 << 30;
    let s = Scratch::new();
    let p = s.write("short.pth", &zip_bytes(&[entry]));
    s.refuse_protein(&p, &["declares 1073741824 bytes", "corrupt or truncated"]);
}

#[test]
fn zip64_directory_claiming_2_pow_40_entries() {
    // One real entry, then a ZIP64 end record claiming 2^40 entries in a 1 MiB directory.
    let pickle = Pk::new().op(b"}").stop();
    let mut bytes = zip_bytes(&[Entry::stored("archive/data.pkl", &pickle)]);
    let end = bytes.len() - 22; // drop the plain end record, keep the entry and directory
    bytes.truncate(end);
    let z64_at = bytes.len() as u64;
    bytes.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
    bytes.extend_from_slice(&44u64.to_le_bytes());
    bytes.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for v in [1u64 << 40, 1 << 40, 1 << 20, 0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&z64_at.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    bytes.extend_from_slice(&[0xff; 8]);
    bytes.extend_from_slice(&[0, 0]);
    let s = Scratch::new();
    let p = s.write("zip64.pth", &bytes);
    s.refuse_protein(&p, &["not a valid zip archive"]);
}

// ---- safetensors ----

/// A safetensors file: `header` as its JSON header, then `data`; `declared` overrides the
/// 8-byte header length.
fn safetensors_bytes(header: &str, data: &[u8], declared: Option<u64>) -> Vec<u8> {
    let n = declared.unwrap_or(header.len() as u64);
    [&n.to_le_bytes(), header.as_bytes(), data].concat()
}

#[test]
fn safetensors_header_length_bomb() {
    let s = Scratch::new();
    let dir = s.dna_model(
        "model.safetensors",
        &safetensors_bytes("{}", &[], Some(1 << 60)),
    );
    s.refuse_dna(&dir, &["header claims 1152921504606846976 bytes"]);
}

#[test]
fn safetensors_offsets_beyond_the_file() {
    let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,1073741824]}}"#;
    let s = Scratch::new();
    let dir = s.dna_model(
        "model.safetensors",
        &safetensors_bytes(header, &[0; 16], None),
    );
    s.refuse_dna(&dir, &["not a valid safetensors file", "byte range"]);
}

#[test]
fn safetensors_shape_whose_size_overflows() {
    let header = r#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,16]}}"#;
    let s = Scratch::new();
    let dir = s.dna_model(
        "model.safetensors",
        &safetensors_bytes(header, &[0; 16], None),
    );
    let o = {
        let out = s.path("out.safetensors");
        run_bounded(
            &[
                "embed-dna",
                s.path("n.fa").to_str().unwrap(),
                "--model",
                dir.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
            None,
            MEM_MIB,
            SECS,
        )
    };
    assert_refused(&o, 1, &["not a valid safetensors file"], &[]);
    // In words, not the crate's variant names.
    let err = crate::common::stderr(&o);
    assert!(
        err.contains("shape") && !err.contains("ValidationOverflow") && !err.contains("Invalid"),
        "{err}"
    );
}

// ---- sharded indexes ----

#[test]
fn index_naming_a_shard_outside_its_directory() {
    let s = Scratch::new();
    let index = r#"{"weight_map": {"w": "../../etc/passwd"}}"#;
    let dir = s.dna_model("pytorch_model.bin.index.json", index.as_bytes());
    s.refuse_dna(&dir, &["not a file name in the index's directory"]);
}

#[test]
fn index_naming_itself_as_a_shard() {
    let s = Scratch::new();
    let index = r#"{"weight_map": {"w": "pytorch_model.bin.index.json"}}"#;
    let dir = s.dna_model("pytorch_model.bin.index.json", index.as_bytes());
    s.refuse_dna(&dir, &["is itself an index file"]);
}

#[test]
fn index_listing_a_missing_shard() {
    let s = Scratch::new();
    let index = r#"{"weight_map": {"w": "pytorch_model-00002-of-00002.bin"}}"#;
    let dir = s.dna_model("pytorch_model.bin.index.json", index.as_bytes());
    s.refuse_dna(&dir, &["shard pytorch_model-00002-of-00002.bin is missing"]);
}

// ---- classifier (predict) ----

#[test]
fn classifier_declaring_2_pow_60_bytes() {
    // `predict` reads its embeddings first; a classifier file is refused before any output.
    let s = Scratch::new();
    let dna = s.path("dna.safetensors");
    let protein = s.path("protein.safetensors");
    for (cmd, input, model, out) in [
        ("embed-dna", "n.fa", "dnabert_s_tiny", &dna),
        ("embed-protein", "p.faa", "esm2_tiny", &protein),
    ] {
        let o = crate::common::run(
            &[
                cmd,
                s.path(input).to_str().unwrap(),
                "--model",
                fixtures().join(model).to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
            None,
        );
        assert!(o.status.success(), "{cmd}: {}", crate::common::stderr(&o));
    }
    let pickle = Pk::new().op(b"}").stop();
    let classifier = s.write(
        "classifier.pth",
        &zip_bytes(&[Entry::raw_deflated(
            "archive/data.pkl",
            deflate(&pickle),
            1 << 60,
        )]),
    );
    let outdir = s.path("predicted");
    let o = run_bounded(
        &[
            "predict",
            "--dna",
            dna.to_str().unwrap(),
            "--protein",
            protein.to_str().unwrap(),
            "--classifier",
            classifier.to_str().unwrap(),
            "--outdir",
            outdir.to_str().unwrap(),
        ],
        None,
        MEM_MIB,
        SECS,
    );
    assert_refused(
        &o,
        1,
        &["declares 1152921504606846976 bytes"],
        &[&outdir.join("prediction_results.txt")],
    );
}

// ---- classifier values (predict, evaluate, train --init) ----
//
// Files that are well formed but hold numbers no classifier can: NaN or infinite weights, a
// negative BatchNorm running variance. Loaded, they gave exit 0 with constant or NaN scores
// (and `train --init` trained into a classifier full of NaN).

/// Inputs for the classifier commands: 20 ORFs with 3-d DNA and 5-d protein embeddings,
/// labels alternating virus / others, and 8 → 4 → 2 classifiers written on demand.
struct ClassifierInputs {
    dir: tempfile::TempDir,
}

impl ClassifierInputs {
    const ORFS: usize = 20;

    fn new() -> Self {
        use virnucpro::io::embeddings::{EmbeddingMeta, EmbeddingSet};
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..Self::ORFS).map(|i| format!("r{i}_chunk_1F1")).collect();
        for (kind, dim) in [("dna", 3usize), ("protein", 5)] {
            let values = (0..Self::ORFS * dim)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
                .collect();
            EmbeddingSet {
                ids: ids.clone(),
                dim,
                values,
                meta: EmbeddingMeta {
                    kind: kind.into(),
                    model: format!("m-{kind}"),
                    pooling: "mean".into(),
                    precision: "f32".into(),
                },
            }
            .write(&dir.path().join(format!("{kind}.safetensors")))
            .unwrap();
        }
        let mut labels = String::from("id\tlabel\n");
        for (i, id) in ids.iter().enumerate() {
            let label = if i % 2 == 1 { "virus" } else { "others" };
            labels.push_str(&format!("{id}\t{label}\n"));
        }
        std::fs::write(dir.path().join("labels.tsv"), labels).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// A valid 8 → 4 → 2 classifier as safetensors `name`, after `edit(tensor, values)`.
    fn classifier(&self, name: &str, edit: impl Fn(&str, &mut [f32])) -> PathBuf {
        let (input, hidden) = (8usize, 4usize);
        let tensors: Vec<(&str, Vec<usize>)> = vec![
            ("hidden_layer.weight", vec![hidden, input]),
            ("hidden_layer.bias", vec![hidden]),
            ("bn1.weight", vec![hidden]),
            ("bn1.bias", vec![hidden]),
            ("bn1.running_mean", vec![hidden]),
            ("bn1.running_var", vec![hidden]),
            ("output_layer.weight", vec![2, hidden]),
            ("output_layer.bias", vec![2]),
        ];
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(n, shape)| {
                let len: usize = shape.iter().product();
                let mut values: Vec<f32> = (0..len)
                    .map(|i| {
                        let v = ((i * 5 % 7) as f32 - 3.0) / 4.0;
                        // Variances and scales positive, as trained ones are.
                        if n == "bn1.running_var" || n == "bn1.weight" {
                            1.0 + v.abs()
                        } else {
                            v
                        }
                    })
                    .collect();
                edit(n, &mut values);
                let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (n.to_string(), shape, raw)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(n, shape, raw)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    raw,
                )
                .unwrap();
                (n.clone(), view)
            })
            .collect();
        let p = self.path(name);
        std::fs::write(&p, safetensors::serialize(views, &None).unwrap()).unwrap();
        p
    }

    /// `virnucpro <command> --dna … --protein … <args> --outdir <scratch>/<outdir>` under the
    /// caps; returns the run and the output directory.
    fn run(&self, command: &str, args: &[&str], outdir: &str) -> (Output, PathBuf) {
        let out = self.path(outdir);
        let (dna, protein) = (self.arg("dna.safetensors"), self.arg("protein.safetensors"));
        let mut all = vec![command, "--dna", &dna, "--protein", &protein];
        all.extend_from_slice(args);
        all.extend(["--outdir", s(&out)]);
        (run_bounded(&all, None, MEM_MIB, SECS), out)
    }

    fn predict(&self, classifier: &Path) -> (Output, PathBuf) {
        let (o, out) = self.run("predict", &["--classifier", s(classifier)], "predicted");
        (o, out.join("prediction_results.txt"))
    }

    fn evaluate(&self, classifier: &Path) -> (Output, PathBuf) {
        let labels = self.arg("labels.tsv");
        let args = ["--labels", &labels, "--classifier", s(classifier)];
        let (o, out) = self.run("evaluate", &args, "evaluated");
        (o, out.join("evaluation.json"))
    }

    fn train_init(&self, init: &Path) -> (Output, PathBuf) {
        let labels = self.arg("labels.tsv");
        let args = [
            "--labels",
            &labels,
            "--epochs",
            "2",
            "--hidden",
            "4",
            "--init",
            s(init),
        ];
        let (o, out) = self.run("train", &args, "trained");
        (o, out.join("classifier.safetensors"))
    }
}

fn set(name: &'static str, index: usize, value: f32) -> impl Fn(&str, &mut [f32]) {
    move |n, values| {
        if n == name {
            values[index] = value;
        }
    }
}

#[test]
fn a_valid_tiny_classifier_is_accepted_by_predict_evaluate_and_train() {
    // The control for the refusals below: the same files, unedited, are fine.
    let c = ClassifierInputs::new();
    let clf = c.classifier("ok.safetensors", |_, _| {});
    for (what, (o, output)) in [
        ("predict", c.predict(&clf)),
        ("evaluate", c.evaluate(&clf)),
        ("train --init", c.train_init(&clf)),
    ] {
        assert!(o.status.success(), "{what}: {}", crate::common::stderr(&o));
        assert!(output.is_file(), "{what}: no {}", output.display());
    }
}

#[test]
fn classifier_with_a_nan_weight_is_refused_by_predict() {
    let c = ClassifierInputs::new();
    let clf = c.classifier("nan.safetensors", set("hidden_layer.weight", 5, f32::NAN));
    let (o, output) = c.predict(&clf);
    assert_refused(
        &o,
        1,
        &[
            "tensor hidden_layer.weight",
            "nan.safetensors",
            "holds NaN",
            "not finite",
        ],
        &[&output],
    );
}

#[test]
fn classifier_with_a_negative_running_var_is_refused_by_predict() {
    let c = ClassifierInputs::new();
    let clf = c.classifier("negvar.safetensors", set("bn1.running_var", 2, -0.5));
    let (o, output) = c.predict(&clf);
    assert_refused(
        &o,
        1,
        &[
            "tensor bn1.running_var",
            "negvar.safetensors",
            "holds -0.5",
            "never negative",
        ],
        &[&output],
    );
}

#[test]
fn classifier_with_an_infinite_bias_is_refused_by_evaluate() {
    let c = ClassifierInputs::new();
    let clf = c.classifier(
        "inf.safetensors",
        set("output_layer.bias", 1, f32::INFINITY),
    );
    let (o, output) = c.evaluate(&clf);
    assert_refused(
        &o,
        1,
        &["tensor output_layer.bias", "inf.safetensors", "holds inf"],
        &[&output],
    );
}

#[test]
fn classifier_with_a_negative_running_var_is_refused_by_evaluate() {
    let c = ClassifierInputs::new();
    let clf = c.classifier("negvar.safetensors", set("bn1.running_var", 0, -2.0));
    let (o, output) = c.evaluate(&clf);
    assert_refused(
        &o,
        1,
        &["tensor bn1.running_var", "negvar.safetensors", "holds -2"],
        &[&output],
    );
}

#[test]
fn train_init_with_nan_weights_is_refused() {
    // Before: trained and wrote a classifier full of NaN.
    let c = ClassifierInputs::new();
    let init = c.classifier("nan_init.safetensors", set("bn1.weight", 3, f32::NAN));
    let (o, output) = c.train_init(&init);
    assert_refused(
        &o,
        1,
        &[
            "--init",
            "tensor bn1.weight",
            "nan_init.safetensors",
            "holds NaN",
        ],
        &[&output],
    );
}

#[test]
fn train_init_with_a_negative_running_var_is_refused() {
    let c = ClassifierInputs::new();
    let init = c.classifier("negvar_init.safetensors", set("bn1.running_var", 1, -1.0));
    let (o, output) = c.train_init(&init);
    assert_refused(
        &o,
        1,
        &["--init", "tensor bn1.running_var", "holds -1"],
        &[&output],
    );
}

// ---- property tests: mutated valid inputs ----
//
// Each property runs in a child process of this test binary capped at `MEM_MIB` of address
// space and a wall time (the `*_bounded` tests), so a mutation that found a memory or time
// bomb fails the test instead of the machine. 32 cases each by default; `PROPTEST_CASES=N`
// runs more (the time cap grows with it).

mod properties {
    use std::io::{Read, Write};
    use std::path::Path;
    use std::process::Command;

    use proptest::prelude::*;
    use virnucpro::models::dnabert_s::{DnabertConfig, DnabertS};
    use virnucpro::models::esm2::{Esm2, Esm2Config};
    use virnucpro::weights::{self, torch_file};

    use super::MEM_MIB;
    use crate::common::fixtures;

    type B = burn::backend::Flex;

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32)
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: cases(),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Run the ignored test `name` of this binary under the memory cap and a time cap.
    fn bounded(name: &str) {
        let secs = 60 + u64::from(cases()) * 2;
        let out = Command::new("timeout")
            .args([
                "--kill-after=5",
                &secs.to_string(),
                "prlimit",
                &format!("--as={}", MEM_MIB << 20),
                "--",
            ])
            .arg(std::env::current_exe().unwrap())
            .args([
                &crate::common::test_name(module_path!(), name),
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{name} failed (status {:?}) under {MEM_MIB} MiB / {secs} s:\n{log}",
            out.status.code()
        );
        assert!(log.contains("1 passed"), "{name} did not run:\n{log}");
    }

    /// Byte edits: `(where, value)` with `where` a fraction of the target region, inserts of
    /// short runs, and an optional truncation.
    #[derive(Debug, Clone)]
    struct Mutation {
        edits: Vec<(f64, u8)>,
        inserts: Vec<(f64, Vec<u8>)>,
        truncate: Option<f64>,
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        (
            prop::collection::vec((0.0..1.0f64, any::<u8>()), 0..8),
            prop::collection::vec(
                (0.0..1.0f64, prop::collection::vec(any::<u8>(), 1..9)),
                0..3,
            ),
            prop::option::weighted(0.2, 0.0..1.0f64),
        )
            .prop_map(|(edits, inserts, truncate)| Mutation {
                edits,
                inserts,
                truncate,
            })
    }

    /// Apply `m` to `data`, aiming edits and inserts at `region`.
    fn mutate(data: &[u8], region: std::ops::Range<usize>, m: &Mutation) -> Vec<u8> {
        let mut out = data.to_vec();
        let at = |f: f64, len: usize| region.start + ((len as f64) * f) as usize;
        for &(f, b) in &m.edits {
            let i = at(f, region.len()).min(out.len().saturating_sub(1));
            if let Some(x) = out.get_mut(i) {
                *x = b;
            }
        }
        for (f, bytes) in &m.inserts {
            let i = at(*f, region.len()).min(out.len());
            out.splice(i..i, bytes.iter().copied());
        }
        if let Some(f) = m.truncate {
            out.truncate((out.len() as f64 * f) as usize);
        }
        out
    }

    /// Open `path` as weights and read every tensor; errors are fine, panics are not.
    fn open_and_read_all(path: &Path) {
        if let Ok(w) = weights::open(path) {
            for name in w.source().names() {
                let _ = w.source().read_f32(&name);
            }
        }
        let _ = torch_file::fair_esm_config(path);
    }

    fn safetensors_header_len(bytes: &[u8]) -> usize {
        8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
    }

    /// The entries of a zip file, in order: (name, bytes).
    fn unzip(path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
        (0..zip.len())
            .map(|i| {
                let mut f = zip.by_index(i).unwrap();
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).unwrap();
                (f.name().to_string(), bytes)
            })
            .collect()
    }

    fn rezip(path: &Path, entries: &[(String, Vec<u8>)], method: zip::CompressionMethod) {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, bytes) in entries {
            zip.start_file(name.as_str(), opts).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        #[ignore = "run by safetensors_mutations_bounded under a memory cap"]
        fn safetensors_mutations(m in mutation(), header in prop::bool::weighted(0.75)) {
            let bytes = std::fs::read(fixtures().join("dnabert_s_tiny/model.safetensors")).unwrap();
            let region = if header { 0..safetensors_header_len(&bytes) } else { 0..bytes.len() };
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("model.safetensors");
            std::fs::write(&path, mutate(&bytes, region, &m)).unwrap();
            open_and_read_all(&path);
        }

        #[test]
        #[ignore = "run by torch_zip_mutations_bounded under a memory cap"]
        fn torch_zip_mutations(m in mutation(), file in 0..2usize) {
            let src = ["mlp_tiny.pth", "esm2_tiny/fair_esm_checkpoint.pt"][file];
            let bytes = std::fs::read(fixtures().join(src)).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("model.pt");
            std::fs::write(&path, mutate(&bytes, 0..bytes.len(), &m)).unwrap();
            open_and_read_all(&path);
        }

        #[test]
        #[ignore = "run by pickle_mutations_bounded under a memory cap"]
        fn pickle_mutations(m in mutation(), file in 0..2usize, deflated in any::<bool>()) {
            // Mutate data.pkl only and re-zip validly, so the pickle parser and the tensor
            // walk see the damage rather than the zip reader.
            let src = ["mlp_tiny.pth", "esm2_tiny/fair_esm_checkpoint.pt"][file];
            let mut entries = unzip(&fixtures().join(src));
            let pkl = entries.iter_mut().find(|(n, _)| n.ends_with("data.pkl")).unwrap();
            pkl.1 = mutate(&pkl.1, 0..pkl.1.len(), &m);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("model.pth");
            let method = if deflated {
                zip::CompressionMethod::Deflated
            } else {
                zip::CompressionMethod::Stored
            };
            rezip(&path, &entries, method);
            open_and_read_all(&path);
        }

        #[test]
        #[ignore = "run by config_mutations_bounded under a memory cap"]
        fn config_mutations(
            field in 0..6usize,
            value in prop_oneof![
                Just(serde_json::json!(0)),
                Just(serde_json::json!(1)),
                Just(serde_json::json!(-1)),
                Just(serde_json::json!(u64::MAX)),
                Just(serde_json::json!(1u64 << 40)),
                Just(serde_json::json!(1.5)),
                Just(serde_json::json!("12")),
                Just(serde_json::json!(null)),
                (0u64..200).prop_map(|v| serde_json::json!(v)),
            ],
            model in 0..2usize,
            m in mutation(),
            raw in prop::bool::weighted(0.25),
        ) {
            // A field set to an odd value (or the text mutated at random), then the config
            // parsed and the model loaded from the tiny weights.
            let name = ["esm2_tiny", "dnabert_s_tiny"][model];
            let src = fixtures().join(name);
            let dir = tempfile::tempdir().unwrap();
            for f in ["model.safetensors", "tokenizer.json"] {
                if src.join(f).exists() {
                    std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
                }
            }
            let text = std::fs::read_to_string(src.join("config.json")).unwrap();
            let out = if raw {
                mutate(text.as_bytes(), 0..text.len(), &m)
            } else {
                let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
                let key = [
                    "num_hidden_layers",
                    "hidden_size",
                    "num_attention_heads",
                    "intermediate_size",
                    "vocab_size",
                    "pad_token_id",
                ][field];
                json[key] = value;
                json.to_string().into_bytes()
            };
            let config = dir.path().join("config.json");
            std::fs::write(&config, out).unwrap();
            let device = Default::default();
            if model == 0 {
                let _ = Esm2Config::from_hf_config(&config);
                let _ = Esm2::<B>::load(dir.path(), &device);
            } else {
                let _ = DnabertConfig::from_file(&config);
                let _ = DnabertS::<B>::load(dir.path(), &device);
            }
        }
    }

    #[test]
    fn safetensors_mutations_bounded() {
        bounded("safetensors_mutations");
    }

    #[test]
    fn torch_zip_mutations_bounded() {
        bounded("torch_zip_mutations");
    }

    #[test]
    fn pickle_mutations_bounded() {
        bounded("pickle_mutations");
    }

    #[test]
    fn config_mutations_bounded() {
        bounded("config_mutations");
    }
}
