//! Reading model weights from the files people actually have: Hugging Face safetensors
//! (single or sharded), PyTorch `pytorch_model.bin` / fair-esm `.pt` zip pickles, and whole
//! pickled modules (VirNucPro's classifier files).
//!
//! Every format is exposed through [`TensorSource`], which hands out one tensor at a time as
//! `f32`, so a 3B-parameter checkpoint is never held twice in memory: the file is memory-mapped
//! and each tensor is converted when the model asks for it.
//!
//! Every reader treats the file as hostile: declared sizes are checked against the file before
//! anything is allocated for them, decompression stops at what a tensor needs, the pickle
//! parser's memory is bounded by its input and by [`pickle::MAX_VALUES`], and shared pickle
//! references are walked once.
//!
//! Why our own pickle/zip reader rather than the `pytorch-reader` crate (tracel-ai, 0.22.1,
//! evaluated against this project's fixtures and hostile corpus): it reads the HF and
//! classifier checkpoints, refuses a zip declaring 2^60 bytes, a huge `BINUNICODE` length and
//! 100 000-deep nesting, and walks the exponential dict graph quickly; but
//! - a fair-esm checkpoint's `cfg.model` (an `argparse.Namespace`) comes back as
//!   `Unsupported("argparse.Namespace")`, so the ESM-2 config of `esm2_t36_3B_UR50D.pt` cannot
//!   be read and our pickle parser would have to stay anyway;
//! - a 65 KB zip whose `data.pkl` inflates to 64 MiB of `EMPTY_DICT` opcodes aborts the process
//!   under a 2 GiB address-space limit (`memory allocation of 2952790016 bytes failed`): its
//!   pickle machine keeps ~45 bytes per opcode with no object budget;
//! - it brings a fourth `zip` version (9.x, with zlib-rs) into the build.
//!
//! So the readers here were hardened instead.

pub mod host;
pub mod loader;
mod locate;
pub mod pickle;
pub mod safetensors_file;
pub mod sharded;
pub mod torch_file;

pub use locate::{find_in_dir, locate, model_dir, HF_WEIGHT_FILES};

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// A named collection of tensors, read lazily.
pub trait TensorSource: Send + Sync {
    /// All tensor names in the source (order unspecified).
    fn names(&self) -> Vec<String>;
    /// The shape of a tensor, or `None` when absent.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor's values as `f32` in row-major order, whatever its stored dtype.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>>;
    /// The tensor's bytes as stored, when they are one contiguous row-major run of a float
    /// type in the file's map: [`Weights`] then decodes (and transposes) them in one parallel
    /// pass into their final place. `None` (a strided or compressed view, an integer type)
    /// makes it take [`Self::read_f32`]. Its length is checked against the shape before use.
    fn stored(&self, _name: &str) -> Option<host::Stored<'_>> {
        None
    }
    /// Where the tensors come from, for error messages.
    fn describe(&self) -> String;
}

/// A tensor source plus the helpers models use: name fallbacks, shape checks, conversion to
/// Burn tensors with errors that name the tensor and the file.
pub struct Weights {
    source: Box<dyn TensorSource>,
    /// Tensors read so far, for [`Weights::check_all_used`].
    used: Mutex<HashSet<String>>,
    /// Time spent turning stored bytes into model values, and how many bytes, for the
    /// loaders' timing line (where a load's time goes).
    converting: Mutex<(Duration, u64)>,
}

/// How many unused tensor names an error lists before giving only the count.
const UNUSED_LISTED: usize = 3;

impl Weights {
    pub fn new(source: Box<dyn TensorSource>) -> Self {
        Self {
            source,
            used: Mutex::new(HashSet::new()),
            converting: Mutex::new((Duration::ZERO, 0)),
        }
    }

    /// After a model is built: every tensor of the checkpoint must have been read, except
    /// those `ignorable` accepts (heads and buffers the original never used either). Anything
    /// else means the config describes a smaller model than the weights (say
    /// `num_hidden_layers` below the checkpoint's layer count), which would otherwise run a
    /// truncated model without a word. `hint` says what to check, for the error.
    pub fn check_all_used(&self, ignorable: impl Fn(&str) -> bool, hint: &str) -> Result<()> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut unused: Vec<String> = self
            .source
            .names()
            .into_iter()
            .filter(|n| !used.contains(n) && !ignorable(n))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        // Natural order reads better (layer.2 before layer.10) and keeps the message stable.
        unused.sort_by_cached_key(|n| natural_key(n));
        let listed = unused[..unused.len().min(UNUSED_LISTED)].join(", ");
        let more = if unused.len() > UNUSED_LISTED {
            ", …"
        } else {
            ""
        };
        bail!(
            "{} holds {} tensor{} this config does not use: {listed}{more}; {hint}",
            self.source.describe(),
            unused.len(),
            if unused.len() == 1 { "" } else { "s" },
        )
    }

    /// Time spent decoding and transposing the tensors read so far, and their stored bytes.
    pub fn converting(&self) -> (Duration, u64) {
        *self.converting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `convert` (turning `bytes` stored bytes into values, in whatever layout: the
    /// loaders' bf16 tiles too), adding to [`Self::converting`].
    fn timed<T>(&self, bytes: usize, convert: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = convert();
        let mut c = self.converting.lock().unwrap_or_else(|e| e.into_inner());
        c.0 += started.elapsed();
        c.1 += bytes as u64;
        out
    }

    pub fn source(&self) -> &dyn TensorSource {
        self.source.as_ref()
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.source.shape(name).is_some()
    }

    /// The first of `candidates` that exists (checkpoints name the same tensor with or without
    /// a `bert.` / `esm.` prefix), or an error listing them all.
    pub fn resolve<'a>(&self, candidates: &[&'a str]) -> Result<&'a str> {
        for c in candidates {
            if self.contains(c) {
                return Ok(c);
            }
        }
        bail!(
            "tensor {} is missing from {} (is this the right model file?)",
            candidates.join(" / "),
            self.source.describe()
        )
    }

    /// Start reading tensor `name`'s bytes from disk, if it is stored in a map (see
    /// [`host::will_need`]); nothing for a missing tensor, whose read reports it.
    pub fn prefetch(&self, name: &str) {
        if let Some(stored) = self.source.stored(name) {
            host::will_need(stored.bytes);
        }
    }

    /// Read a tensor, checking its shape exactly.
    pub fn read(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        Ok(match self.checked(name, expected)? {
            Some(stored) => {
                let values = self.timed(stored.bytes.len(), || host::decode_all(&stored));
                host::done_with(stored.bytes);
                values
            }
            None => self.read_f32(name)?,
        })
    }

    /// `name`'s shape checked against `expected`, and the tensor marked used: its stored
    /// bytes when they can be read in place (their length checked against the shape), else
    /// `None` for [`Self::read_f32`].
    fn checked(&self, name: &str, expected: &[usize]) -> Result<Option<host::Stored<'_>>> {
        self.check_shape(name, expected)?;
        let stored = self.source.stored(name);
        if let Some(s) = &stored {
            // The readers check byte ranges against the file at open; this keeps a reader's
            // slip from turning into a panic or a tensor of the wrong size.
            let numel = expected.iter().product::<usize>();
            if Some(s.bytes.len()) != numel.checked_mul(s.dtype.size()) {
                bail!(
                    "tensor {name} in {}: {} bytes stored for {numel} {:?} values",
                    self.source.describe(),
                    s.bytes.len(),
                    s.dtype
                );
            }
        }
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        Ok(stored)
    }

    /// That `name` exists with exactly the shape `expected`: checked before anything is
    /// allocated for it, so a config's sizes never allocate more than the file holds.
    pub fn check_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        let shape = self.source.shape(name).with_context(|| {
            format!(
                "tensor {name} is missing from {} (is this the right model file?)",
                self.source.describe()
            )
        })?;
        if shape != expected {
            bail!(
                "tensor {name} in {} has shape {:?} but the model config expects {:?}",
                self.source.describe(),
                shape,
                expected
            );
        }
        Ok(())
    }

    /// [`TensorSource::read_f32`], with the tensor and the file named in its error.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.source
            .read_f32(name)
            .with_context(|| format!("reading tensor {name} from {}", self.source.describe()))
    }

    /// Read a tensor as a Burn tensor of rank `D` with the given shape.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let values = self.read(name, &expected)?;
        Ok(upload(values, expected, device))
    }

    /// A PyTorch `Linear` weight (`[out, in]` on disk) as the `[in, out]` matrix Burn multiplies by,
    /// transposed on the host so that the device holds it contiguous. Not as a transposed view:
    /// with the right-hand side a transposed view, CubeCL's autotune may pick the fused
    /// `fused_double_buffering_unit` matmul, which on wgpu/lavapipe gave ESM-2 rows 1.2 off at
    /// four 128-token sequences (m = 512, k = 40 and 160, n = 40: the `Linear`s after attention
    /// and in the feed-forward), while the contiguous weight's kernels are right to 1e-6.
    pub fn linear_weight<B: Backend>(
        &self,
        name: &str,
        out_features: usize,
        in_features: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        let transposed = self.linear_weight_host(name, out_features, in_features)?;
        Ok(upload(transposed, [in_features, out_features], device))
    }

    /// [`Self::linear_weight`]'s `[in, out]` values on the host, row-major.
    pub fn linear_weight_host(
        &self,
        name: &str,
        out_features: usize,
        in_features: usize,
    ) -> Result<Vec<f32>> {
        self.check_shape(name, &[out_features, in_features])?;
        let mut values = host::buffer(out_features * in_features);
        let dst = host::Dest {
            values: &mut values,
            stride: out_features,
            col: 0,
        };
        self.linear_weight_into(name, out_features, in_features, 0..out_features, dst)?;
        Ok(values)
    }

    /// The PyTorch `Linear` weight `name` (`[out_features, in_features]` on disk) to be read
    /// by output feature, for a layout the model builds itself (bf16 tiles): its stored bytes
    /// in place when they can be read there (each feature's values decoded as asked for),
    /// else its values read once. Its pages in the file's map are let go when it is dropped.
    pub fn linear_rows(
        &self,
        name: &str,
        out_features: usize,
        in_features: usize,
    ) -> Result<LinearRows<'_>> {
        let values = match self.checked(name, &[out_features, in_features])? {
            Some(stored) => RowValues::Stored(stored),
            None => RowValues::Read(self.read_f32(name)?),
        };
        Ok(LinearRows {
            values,
            in_features,
            out_features,
        })
    }

    /// Output features `rows` of the `out_features × in_features` PyTorch `Linear` weight
    /// `name`, transposed into `dst`: input feature `i` becomes row `i` of `dst`, at its
    /// columns `dst.col..dst.col + rows.len()` (a fused weight's share, a split weight's
    /// part), in one parallel pass from the file's bytes when they can be read in place.
    pub fn linear_weight_into(
        &self,
        name: &str,
        out_features: usize,
        in_features: usize,
        rows: std::ops::Range<usize>,
        dst: host::Dest<'_>,
    ) -> Result<()> {
        let fits = rows.start <= rows.end
            && rows.end <= out_features
            && dst
                .col
                .checked_add(rows.len())
                .is_some_and(|end| end <= dst.stride)
            && in_features.checked_mul(dst.stride) == Some(dst.values.len());
        if !fits {
            bail!(
                "{name}: output features {rows:?} of {out_features} do not fit a [{in_features}, \
                 {}] weight at column {}",
                dst.stride,
                dst.col
            );
        }
        let (start, len) = (rows.start, rows.len());
        match self.checked(name, &[out_features, in_features])? {
            Some(stored) => {
                let bytes = len * in_features * stored.dtype.size();
                self.timed(bytes, || {
                    host::transpose_into(&stored, start, len, in_features, dst)
                });
                // A split weight's parts are read one call each: only after the last.
                if rows.end == out_features {
                    host::done_with(stored.bytes);
                }
            }
            None => {
                let values = self.read_f32(name)?;
                host::transpose_into(values.as_slice(), start, len, in_features, dst)
            }
        }
        Ok(())
    }
}

/// A `Linear` weight read by output feature ([`Weights::linear_rows`]).
pub struct LinearRows<'a> {
    values: RowValues<'a>,
    in_features: usize,
    out_features: usize,
}

enum RowValues<'a> {
    Stored(host::Stored<'a>),
    Read(Vec<f32>),
}

impl LinearRows<'_> {
    /// Output feature `j`'s `in_features` values, as `f32`, into `out`.
    ///
    /// Panics unless `j < out_features` and `out` holds `in_features` values.
    pub fn row(&self, j: usize, out: &mut [f32]) {
        use host::Values;
        assert!(
            j < self.out_features && out.len() == self.in_features,
            "row {j} of a [{}, {}] weight into {} values",
            self.out_features,
            self.in_features,
            out.len()
        );
        let start = j * self.in_features;
        match &self.values {
            RowValues::Stored(stored) => stored.decode(start, out),
            RowValues::Read(values) => values.as_slice().decode(start, out),
        }
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// The weight's stored bytes (what reading it converts).
    pub fn stored_bytes(&self) -> usize {
        match &self.values {
            RowValues::Stored(stored) => stored.bytes.len(),
            RowValues::Read(values) => values.len() * 4,
        }
    }
}

impl Drop for LinearRows<'_> {
    /// Converted: the file's pages leave this process ([`host::done_with`]).
    fn drop(&mut self) {
        if let RowValues::Stored(stored) = &self.values {
            host::done_with(stored.bytes);
        }
    }
}

/// A model tensor onto `device` as a persistent allocation: on the CubeCL backends weights
/// then live outside the pools that per-batch activations cycle through, so a cleanup after an
/// out-of-memory split (engine.rs) frees activations without fragmenting around the weights.
/// Every weight is uploaded once, in its final layout (fused and transposed on the host):
/// a persistent tensor that is dropped after a device-side concatenation would waste its
/// pool slot. On the CPU backend this is a plain `from_data`.
pub fn upload<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    B::memory_persistent_allocations(device, TensorData::new(values, shape), |data| {
        Tensor::from_data(data, device)
    })
}

/// The debug line that says where a model's load went: opening the file (parsing its header
/// or pickle and checking every tensor's place), converting the stored values (decoding and
/// transposing them), and the rest (building the model's tensors, the checks).
pub fn log_load(model: &str, weights: &Weights, opened: Duration, total: Duration) {
    let (converting, bytes) = weights.converting();
    tracing::debug!(
        "{model} loaded from {} in {:.2} s: opening {:.2} s, converting {:.2} GB of weights \
         {:.2} s ({:.1} GB/s), the rest {:.2} s",
        weights.source.describe(),
        total.as_secs_f64(),
        opened.as_secs_f64(),
        bytes as f64 / 1e9,
        converting.as_secs_f64(),
        bytes as f64 / 1e9 / converting.as_secs_f64().max(1e-9),
        total.saturating_sub(opened + converting).as_secs_f64(),
    );
}

/// A name split into text and numbers, so `layer.2` sorts before `layer.10`.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                out.push((
                    std::mem::take(&mut text),
                    digits.parse().unwrap_or(u64::MAX),
                ));
                digits.clear();
            }
            text.push(c);
        }
    }
    out.push((text, digits.parse().unwrap_or(0)));
    out
}

/// Open a weights file by its format: `*.safetensors` and `*.index.json` by name, anything
/// else (`.bin`, `.pt`, `.pth`, no extension) by its first bytes, so a safetensors file named
/// `.bin` still opens.
pub fn open(path: &Path) -> Result<Weights> {
    Ok(Weights::new(open_source(path)?))
}

/// [`open`], without the [`Weights`] wrapper (shards of an index are opened with it).
pub fn open_source(path: &Path) -> Result<Box<dyn TensorSource>> {
    if !path.exists() {
        bail!("weights file {} does not exist", path.display());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if name.ends_with(".index.json") {
        return open_index(path);
    }
    let torch_extension = [".bin", ".pt", ".pth"].iter().any(|e| name.ends_with(e));
    let format = if name.ends_with(".safetensors") {
        Magic::Safetensors
    } else {
        match sniff(&read_head(path)?) {
            // The torch reader explains what is wrong with a `.bin`/`.pt`/`.pth` it cannot read.
            Magic::Unknown if torch_extension => Magic::Zip,
            magic => magic,
        }
    };
    Ok(match format {
        Magic::Safetensors => Box::new(safetensors_file::SafetensorsSource::open(path)?),
        Magic::Zip | Magic::Pickle => Box::new(torch_file::TorchSource::open(path)?),
        Magic::Unknown => bail!(
            "{}: unrecognised weights format (expected safetensors or a PyTorch zip checkpoint: \
             .safetensors, .safetensors.index.json, .bin, .pt or .pth)",
            path.display()
        ),
    })
}

/// A sharded checkpoint's index: every shard (safetensors or PyTorch) is opened as a file of
/// its own by [`open_source`].
fn open_index(path: &Path) -> Result<Box<dyn TensorSource>> {
    Ok(Box::new(sharded::ShardedSource::open(path, open_source)?))
}

/// The first 16 bytes of a file (fewer if it is shorter), enough for [`sniff`].
fn read_head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = Vec::with_capacity(16);
    file.take(16)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(head)
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic {
    /// A zip archive: PyTorch's checkpoint format since 1.6.
    Zip,
    /// A bare pickle: PyTorch's legacy (pre-1.6) format.
    Pickle,
    /// An 8-byte little-endian header length followed by a JSON header.
    Safetensors,
    Unknown,
}

pub fn sniff(head: &[u8]) -> Magic {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Magic::Zip
    } else if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        Magic::Pickle
    } else if head.len() >= 9 && head[8] == b'{' {
        Magic::Safetensors
    } else {
        Magic::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `[3, 4]` weight in memory: its bytes in place (big-endian f16, under a page, so
    /// letting them go touches nothing) when `in_place`, else only through `read_f32`.
    struct OneWeight {
        in_place: bool,
        bytes: Vec<u8>,
    }

    const VALUES: [f32; 12] = [
        0.5, -1.0, 2.0, 0.25, 3.0, -0.5, 1.5, 8.0, -2.0, 0.125, 4.0, -3.0,
    ];

    impl TensorSource for OneWeight {
        fn names(&self) -> Vec<String> {
            vec!["w".into()]
        }
        fn shape(&self, name: &str) -> Option<Vec<usize>> {
            (name == "w").then(|| vec![3, 4])
        }
        fn read_f32(&self, _name: &str) -> Result<Vec<f32>> {
            Ok(VALUES.to_vec())
        }
        fn stored(&self, _name: &str) -> Option<host::Stored<'_>> {
            self.in_place.then(|| host::Stored {
                bytes: &self.bytes,
                dtype: host::Float::F16,
                big_endian: true,
            })
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    #[test]
    fn a_linear_weight_reads_by_output_feature_in_place_or_not() {
        let bytes = VALUES
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_be_bytes())
            .collect::<Vec<u8>>();
        for in_place in [true, false] {
            let weights = Weights::new(Box::new(OneWeight {
                in_place,
                bytes: bytes.clone(),
            }));
            let rows = weights.linear_rows("w", 3, 4).unwrap();
            assert_eq!(rows.out_features(), 3);
            assert_eq!(rows.stored_bytes(), if in_place { 24 } else { 48 });
            let mut row = [0f32; 4];
            for j in [2, 0, 1] {
                rows.row(j, &mut row);
                assert_eq!(
                    row,
                    VALUES[j * 4..j * 4 + 4],
                    "row {j}, in place {in_place}"
                );
            }
            drop(rows);
            assert!(weights.check_all_used(|_| false, "").is_ok(), "marked used");
            let e = weights.linear_rows("w", 4, 3).err().unwrap().to_string();
            assert!(e.contains("tensor w in memory has shape [3, 4]"), "{e}");
        }
    }
}
