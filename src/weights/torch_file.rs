//! PyTorch checkpoints in the zip format `torch.save` has written since 1.6: `pytorch_model.bin`
//! (a flat state dict), fair-esm hub `.pt` files (`{"cfg": …, "model": state_dict}`) and whole
//! pickled `nn.Module`s such as VirNucPro's `500_model.pth`.
//!
//! Layout of such a zip: `<prefix>/data.pkl` (the object graph, see [`super::pickle`]),
//! `<prefix>/data/<key>` (one raw storage per key, stored uncompressed), `<prefix>/byteorder`.
//! Opening a file parses only `data.pkl` and records, per tensor, which storage it views and
//! how (dtype, offset, shape, stride). The file is memory-mapped and a tensor's bytes are
//! sliced out of the map when it is read, so a multi-GB checkpoint is never loaded whole.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use zip::{CompressionMethod, ZipArchive};

use super::pickle::{Id, Pickle, Value};
use super::{host, sniff, Magic, TensorSource};

/// Element types of torch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// From a typed-storage class name (`FloatStorage`, …) as `torch.save` writes in the
    /// storage's persistent id.
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => DType::F64,
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" | "UntypedStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    /// From a `torch.<dtype>` global (`_rebuild_tensor_v3` passes the dtype explicitly).
    fn from_torch_name(name: &str) -> Option<Self> {
        Some(match name {
            "float64" | "double" => DType::F64,
            "float32" | "float" => DType::F32,
            "float16" | "half" => DType::F16,
            "bfloat16" => DType::BF16,
            "int64" | "long" => DType::I64,
            "int32" | "int" => DType::I32,
            "int16" | "short" => DType::I16,
            "int8" => DType::I8,
            "uint8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

/// Where one tensor's values are: a view into a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The storage key (`<prefix>/data/<key>` in the zip).
    pub storage: String,
    pub dtype: DType,
    /// In elements, not bytes.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// `cfg.model` of a fair-esm hub checkpoint (an `argparse.Namespace`): the fields that fix
/// the ESM-2 architecture; everything else is fair-esm's `ESM2` defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FairEsmArgs {
    pub encoder_layers: usize,
    pub encoder_embed_dim: usize,
    pub encoder_attention_heads: usize,
    pub token_dropout: bool,
}

/// A torch zip checkpoint as a [`TensorSource`].
pub struct TorchSource {
    archive: Archive,
    tensors: HashMap<String, TensorInfo>,
    /// Tensor names in pickle order (state dicts are ordered; keep it for listings).
    order: Vec<String>,
}

impl TorchSource {
    pub fn open(path: &Path) -> Result<Self> {
        let archive = Archive::open(path)?;
        let pickle = archive.pickle()?;
        let named = state_dict(&pickle)
            .with_context(|| format!("{}: reading the checkpoint's tensors", archive.label))?;
        let mut tensors = HashMap::new();
        let mut order = Vec::new();
        for (name, info) in named {
            archive
                .check_view(&info)
                .with_context(|| format!("{}: tensor {name}", archive.label))?;
            // State-dict names are unique; should flattening yield one twice, keep the first.
            if let std::collections::hash_map::Entry::Vacant(slot) = tensors.entry(name) {
                order.push(slot.key().clone());
                slot.insert(info);
            }
        }
        if tensors.is_empty() {
            bail!(
                "{}: no tensors found (root object is a {})",
                archive.label,
                pickle.kind(pickle.root())
            );
        }
        Ok(Self {
            archive,
            tensors,
            order,
        })
    }

    /// How a tensor is stored (dtype, storage view), or `None` when absent.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }
}

impl TensorSource for TorchSource {
    fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape.clone())
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self
            .tensors
            .get(name)
            .with_context(|| format!("tensor {name} not in {}", self.archive.label))?;
        // Only the bytes the view reaches (checked against the entry at open).
        let needed = view_extent(info)?.1;
        let storage = self.archive.storage(&info.storage, needed)?;
        gather_f32(&storage, info, self.archive.big_endian)
            .with_context(|| format!("tensor {name} in {}", self.archive.label))
    }

    fn stored(&self, name: &str) -> Option<host::Stored<'_>> {
        let info = self.tensors.get(name)?;
        let dtype = match info.dtype {
            DType::F32 => host::Float::F32,
            DType::F16 => host::Float::F16,
            DType::BF16 => host::Float::BF16,
            DType::F64 => host::Float::F64,
            _ => return None,
        };
        // A strided view is gathered by `read_f32`; a contiguous one is a run of its storage.
        if !is_contiguous(&info.shape, &info.stride) {
            return None;
        }
        let (numel, _) = view_extent(info).ok()?;
        let size = dtype.size();
        let start = info.offset.checked_mul(size)?;
        let end = numel.checked_mul(size)?.checked_add(start)?;
        let bytes = self.archive.stored_entry(&info.storage)?.get(start..end)?;
        Some(host::Stored {
            bytes,
            dtype,
            big_endian: self.archive.big_endian,
        })
    }

    fn describe(&self) -> String {
        self.archive.label.clone()
    }
}

/// The fair-esm `cfg.model` of a torch checkpoint, or `None` when it has no such entry (an HF
/// `pytorch_model.bin`, a classifier, …).
pub fn fair_esm_config(path: &Path) -> Result<Option<FairEsmArgs>> {
    let archive = Archive::open(path)?;
    let pk = archive.pickle()?;
    let Some(cfg) = pk.dict_get(pk.root(), "cfg") else {
        return Ok(None);
    };
    let Some(model) = pk.dict_get(cfg, "model") else {
        return Ok(None);
    };
    let fields = namespace_fields(&pk, model).with_context(|| {
        format!(
            "{}: cfg.model is a {}, expected an argparse.Namespace",
            archive.label,
            pk.kind(model)
        )
    })?;
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| pk.as_str(*k) == Some(key))
            .map(|(_, v)| *v)
    };
    let usize_field = |key: &str| -> Result<usize> {
        let id = get(key).with_context(|| format!("{}: cfg.model has no {key}", archive.label))?;
        pk.as_int(id)
            .and_then(|v| usize::try_from(v).ok())
            .with_context(|| {
                format!(
                    "{}: cfg.model.{key} is a {}, expected a count",
                    archive.label,
                    pk.kind(id)
                )
            })
    };
    Ok(Some(FairEsmArgs {
        encoder_layers: usize_field("encoder_layers")?,
        encoder_embed_dim: usize_field("encoder_embed_dim")?,
        encoder_attention_heads: usize_field("encoder_attention_heads")?,
        // fair-esm's ESM2 defaults to token dropout on; every released ESM-2 sets it.
        token_dropout: get("token_dropout")
            .and_then(|id| pk.as_bool(id))
            .unwrap_or(true),
    }))
}

/// The attributes of a pickled plain object (`argparse.Namespace` is `NEWOBJ` + `BUILD` with
/// its `__dict__`), or the entries of a dict standing in for one.
fn namespace_fields(pk: &Pickle, id: Id) -> Option<Vec<(Id, Id)>> {
    if let Some(items) = pk.as_dict(id) {
        return Some(items.to_vec());
    }
    let state = object_dict(pk, id)?;
    pk.as_dict(state).map(<[(Id, Id)]>::to_vec)
}

/// The `__dict__` an object was built with: `BUILD`'s state, or the first half of a
/// `(dict, slots)` state tuple.
fn object_dict(pk: &Pickle, id: Id) -> Option<Id> {
    let state = pk.as_object(id)?.state?;
    match pk.get(state) {
        Value::Tuple(parts) => parts.first().copied().filter(|&d| pk.as_dict(d).is_some()),
        _ => pk.as_dict(state).map(|_| state),
    }
}

/// The zip archive: the memory map and where each entry's bytes are.
struct Archive {
    label: String,
    mmap: Mmap,
    /// The directory every entry sits in: the file's stem, or `archive/` when saved to a buffer.
    prefix: String,
    entries: HashMap<String, Entry>,
    big_endian: bool,
}

struct Entry {
    index: usize,
    /// Where a stored entry's bytes start in the file.
    start: usize,
    /// The uncompressed size the archive declares: for a stored entry checked against the
    /// file at open, for a compressed one against what its compressed bytes could inflate to.
    size: usize,
    stored: bool,
}

/// Deflate cannot expand data more than about 1032 times (a 258-byte match per 2 bits); a
/// compressed entry declaring more than this times its compressed size plus a block's worth
/// is lying, and is refused before anything is allocated for it.
const MAX_DEFLATE_RATIO: usize = 1100;

/// The largest `data.pkl` read. It holds only the object graph (tensor metadata, module
/// attributes), about 200 bytes per tensor: ESM-2 3B's is well under 1 MiB. The limit keeps a
/// compressed bomb from inflating without bound; [`super::pickle::MAX_VALUES`] then bounds
/// what parsing it may allocate.
pub const MAX_PICKLE_BYTES: usize = 32 << 20;

impl Archive {
    fn open(path: &Path) -> Result<Self> {
        let label = path.display().to_string();
        let file = File::open(path).with_context(|| format!("opening {label}"))?;
        // SAFETY: read-only map of a file we do not modify; as with any mmap reader, another
        // process truncating it underneath would be undefined behaviour.
        let mmap =
            unsafe { Mmap::map(&file) }.with_context(|| format!("memory-mapping {label}"))?;
        match sniff(&mmap) {
            Magic::Zip => {}
            Magic::Pickle => bail!(
                "{label}: legacy (non-zip) PyTorch checkpoint format, written by torch < 1.6 or \
                 with _use_new_zipfile_serialization=False; re-save it with a recent PyTorch \
                 (torch.save(torch.load(path), new_path))"
            ),
            Magic::Safetensors => bail!(
                "{label}: this is a safetensors file, not a PyTorch checkpoint; name it *.safetensors"
            ),
            Magic::Unknown => bail!("{label}: not a PyTorch checkpoint (not a zip archive)"),
        }

        let mut zip = ZipArchive::new(Cursor::new(&mmap[..]))
            .with_context(|| format!("{label}: not a valid zip archive"))?;
        let mut entries = HashMap::new();
        for index in 0..zip.len() {
            let f = zip
                .by_index_raw(index)
                .with_context(|| format!("{label}: zip entry {index}"))?;
            let name = f.name().to_string();
            let too_big = || format!("{label}: zip entry {name} declares an impossible size");
            let start = usize::try_from(f.data_start()).with_context(too_big)?;
            let size = usize::try_from(f.size()).with_context(too_big)?;
            let compressed = usize::try_from(f.compressed_size()).with_context(too_big)?;
            let stored = f.compression() == CompressionMethod::Stored;
            // Check every declared size against the file now, so nothing later allocates
            // or slices by a size the archive cannot back.
            let fits = if stored {
                size == compressed && start.checked_add(size).is_some_and(|end| end <= mmap.len())
            } else {
                start
                    .checked_add(compressed)
                    .is_some_and(|end| end <= mmap.len())
                    && size
                        <= compressed
                            .saturating_mul(MAX_DEFLATE_RATIO)
                            .saturating_add(1 << 16)
            };
            if !fits {
                bail!(
                    "{label}: zip entry {name} declares {size} bytes, more than the archive \
                     holds for it ({compressed} bytes {}); the file is corrupt or truncated",
                    if stored { "stored" } else { "compressed" }
                );
            }
            let entry = Entry {
                index,
                start,
                size,
                stored,
            };
            entries.insert(name, entry);
        }
        drop(zip);

        if entries
            .keys()
            .any(|n| n.ends_with("/constants.pkl") || n.contains("/code/"))
        {
            bail!(
                "{label}: a TorchScript archive (torch.jit.save) is not supported; save the \
                 model's state_dict with torch.save instead"
            );
        }
        // `<prefix>/data.pkl`; the prefix is the archive name torch chose (file stem, or
        // `archive`). Take the shallowest, in case someone zipped a directory of them.
        let pkl = entries
            .keys()
            .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
            .min_by_key(|n| (n.matches('/').count(), n.len()))
            .cloned()
            .with_context(|| {
                format!("{label}: a zip archive without data.pkl, not a PyTorch checkpoint")
            })?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();

        let mut archive = Self {
            label,
            mmap,
            prefix,
            entries,
            big_endian: false,
        };
        let order_name = format!("{}byteorder", archive.prefix);
        if archive.entries.contains_key(&order_name) {
            let big_endian = match archive.entry(&order_name, 16)?.trim_ascii() {
                b"little" => false,
                b"big" => true,
                other => bail!(
                    "{}: unknown byteorder {:?}",
                    archive.label,
                    String::from_utf8_lossy(other)
                ),
            };
            archive.big_endian = big_endian;
        }
        Ok(archive)
    }

    fn pickle(&self) -> Result<Pickle> {
        let name = format!("{}data.pkl", self.prefix);
        let declared = self.entry_size(&name)?;
        if declared > MAX_PICKLE_BYTES {
            bail!(
                "{}: {name} declares {declared} bytes; a checkpoint's object graph is far \
                 smaller (at most {MAX_PICKLE_BYTES} bytes are read), so this file is not a \
                 model checkpoint or is corrupt",
                self.label
            );
        }
        let bytes = self.entry(&name, declared)?;
        Pickle::parse(&bytes).with_context(|| format!("{}: parsing {name}", self.label))
    }

    fn storage_name(&self, key: &str) -> String {
        format!("{}data/{key}", self.prefix)
    }

    /// The first `needed` bytes of storage `key` (a view never reaches further; see
    /// [`Self::check_view`]).
    fn storage(&self, key: &str, needed: usize) -> Result<Cow<'_, [u8]>> {
        self.entry(&self.storage_name(key), needed)
    }

    /// Storage `key`'s bytes in the map, when stored uncompressed (as torch always does).
    fn stored_entry(&self, key: &str) -> Option<&[u8]> {
        let e = self.entries.get(&self.storage_name(key))?;
        // In bounds: checked against the file at open.
        e.stored.then(|| &self.mmap[e.start..e.start + e.size])
    }

    /// An entry's declared (and checked) uncompressed size.
    fn entry_size(&self, name: &str) -> Result<usize> {
        self.entries
            .get(name)
            .map(|e| e.size)
            .with_context(|| format!("{}: zip entry {name} is missing", self.label))
    }

    /// Check, before any tensor is read, that a view lies inside its storage entry and does
    /// not materialise more elements than the storage holds (a stride-0 "expanded" view of a
    /// few bytes could otherwise demand any amount of memory).
    fn check_view(&self, t: &TensorInfo) -> Result<()> {
        let name = self.storage_name(&t.storage);
        let size = self.entry_size(&name)?;
        let (numel, needed) = view_extent(t)?;
        if needed > size {
            bail!(
                "its view (offset {}, shape {:?}, stride {:?}) needs {needed} bytes of storage \
                 {name}, which holds {size}",
                t.offset,
                t.shape,
                t.stride
            );
        }
        let held = size / t.dtype.size();
        if numel > held {
            bail!(
                "shape {:?} has {numel} elements but its storage {name} holds only {held} \
                 (an expanded view; save the tensor with .contiguous())",
                t.shape
            );
        }
        Ok(())
    }

    /// The first `limit` bytes of an entry (all of it when shorter): a slice of the map when
    /// stored (torch always stores), else inflated, never past `limit` nor its declared size.
    fn entry(&self, name: &str, limit: usize) -> Result<Cow<'_, [u8]>> {
        let e = self
            .entries
            .get(name)
            .with_context(|| format!("{}: zip entry {name} is missing", self.label))?;
        let want = limit.min(e.size);
        if e.stored {
            // In bounds: checked against the file at open.
            return Ok(Cow::Borrowed(&self.mmap[e.start..e.start + want]));
        }
        let mut zip = ZipArchive::new(Cursor::new(&self.mmap[..]))
            .with_context(|| format!("{}: not a valid zip archive", self.label))?;
        let f = zip
            .by_index(e.index)
            .map_err(|err| anyhow::anyhow!("{err}"))
            .with_context(|| format!("{}: cannot decompress zip entry {name}", self.label))?;
        // Grow as the data arrives rather than trusting the declared size up front.
        let mut out = Vec::new();
        f.take(want as u64)
            .read_to_end(&mut out)
            .with_context(|| format!("{}: decompressing zip entry {name}", self.label))?;
        if out.len() < want {
            bail!(
                "{}: zip entry {name} inflates to {} bytes but declares {}; the file is corrupt",
                self.label,
                out.len(),
                e.size
            );
        }
        Ok(Cow::Owned(out))
    }
}

/// All tensors of a checkpoint, named as in its state dict.
///
/// A dict whose values are tensors is the state dict itself (`pytorch_model.bin`). A dict
/// without tensors of its own that holds one under a usual key is a training checkpoint
/// (`{"cfg", "model"}` for fair-esm, `{"state_dict", ...}` elsewhere): use that entry, without
/// its key as prefix. Anything else (a whole module, nested dicts) is flattened with dotted
/// names, as `Module.state_dict()` would name them.
fn state_dict(pk: &Pickle) -> Result<Vec<(String, TensorInfo)>> {
    let root = pk.root();
    if let Some(items) = pk.as_dict(root) {
        let mut direct = false;
        for &(_, v) in items {
            direct |= tensor_info(pk, v)?.is_some();
        }
        if !direct {
            for key in ["model", "state_dict", "model_state_dict", "module", "net"] {
                if let Some(v) = pk.dict_get(root, key) {
                    let out = Walk::new(pk).run(v)?;
                    if !out.is_empty() {
                        return Ok(out);
                    }
                }
            }
        }
    }
    Walk::new(pk).run(root)
}

/// Nesting deeper than this is a reference cycle, not a model.
const MAX_DEPTH: usize = 256;

/// The most work one walk of the object graph may do, in bytes of names and shapes made plus
/// entries scanned. ESM-2 3B's ~600 tensors with ~60-byte names need ~100 000; a pickle
/// that shares one huge dict, set or key string among many objects could otherwise make the
/// walk quadratic in time or its names quadratic in memory.
const MAX_WALK_WORK: usize = 1 << 26;

/// The most tensors a checkpoint may name (ESM-2 3B has ~600).
const MAX_TENSORS: usize = 1 << 20;

/// One walk of the object graph for tensors, with what bounds it.
///
/// Containers are entered once each (`seen`): a pickle shares objects through its memo, and a
/// graph of dicts that each hold the previous one twice would otherwise take time exponential
/// in its size. A tensor reached under several names (tied weights) is a leaf and keeps every
/// name. Everything else is charged to [`MAX_WALK_WORK`].
struct Walk<'a> {
    pk: &'a Pickle,
    seen: HashSet<Id>,
    /// Object `__dict__`s scanned so far: whether each is an `nn.Module`'s.
    module_dicts: HashMap<Id, bool>,
    work: usize,
    out: Vec<(String, TensorInfo)>,
}

impl<'a> Walk<'a> {
    fn new(pk: &'a Pickle) -> Self {
        Self {
            pk,
            seen: HashSet::new(),
            module_dicts: HashMap::new(),
            work: 0,
            out: Vec::new(),
        }
    }

    fn run(mut self, id: Id) -> Result<Vec<(String, TensorInfo)>> {
        self.collect(id, String::new(), 0)?;
        Ok(self.out)
    }

    fn charge(&mut self, units: usize) -> Result<()> {
        self.work = self.work.saturating_add(units);
        if self.work > MAX_WALK_WORK {
            bail!(
                "the checkpoint's object graph is too large or too interlinked to be a model \
                 (walking it exceeded {MAX_WALK_WORK} steps)"
            );
        }
        Ok(())
    }

    fn collect(&mut self, id: Id, name: String, depth: usize) -> Result<()> {
        let pk = self.pk;
        if depth > MAX_DEPTH {
            // The path itself is as long as the nesting: show its start only.
            let shown: String = name.chars().take(60).collect();
            bail!("objects nested more than {MAX_DEPTH} deep, under {shown}… (a reference cycle?)");
        }
        self.charge(1 + name.len())?;
        if let Some(t) = tensor_info(pk, id).with_context(|| format!("tensor {name}"))? {
            self.charge(t.storage.len() + 16 * t.shape.len())?;
            if self.out.len() >= MAX_TENSORS {
                bail!("the checkpoint names more than {MAX_TENSORS} tensors");
            }
            self.out.push((name, t));
            return Ok(());
        }
        if !self.seen.insert(id) {
            return Ok(());
        }
        if let Some(dict) = object_dict(pk, id) {
            // Several objects may share one `__dict__`: scan it once, walk it once.
            let is_module = match self.module_dicts.get(&dict) {
                Some(true) => return Ok(()),
                Some(false) => false,
                None => {
                    let entries = pk.as_dict(dict).map_or(0, <[(Id, Id)]>::len);
                    // `dict_get` scans the dict up to five times.
                    self.charge(5 * entries)?;
                    let is_module = pk.dict_get(dict, "_parameters").is_some();
                    self.module_dicts.insert(dict, is_module);
                    is_module
                }
            };
            if is_module {
                return self.module(dict, &name, depth);
            }
        }
        // A mapping (an `OrderedDict` with `_metadata` set also has a `__dict__`, above).
        if let Some(items) = pk.as_dict(id) {
            self.charge(items.len())?;
            for &(k, v) in items {
                let key = match pk.get(k) {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                self.collect(v, join(&name, &key), depth + 1)?;
            }
        }
        // Numbers, strings, lists, other objects (hooks, Namespaces, …) hold no state-dict
        // tensors.
        Ok(())
    }

    /// An nn.Module's `__dict__`: its state dict is its parameters, its persistent buffers,
    /// then its submodules', in that order. `None` entries (e.g. `bias=False`) are skipped as
    /// torch does.
    fn module(&mut self, dict: Id, name: &str, depth: usize) -> Result<()> {
        let pk = self.pk;
        let non_persistent: HashSet<&str> = match pk
            .dict_get(dict, "_non_persistent_buffers_set")
            .and_then(|s| pk.as_set(s))
        {
            Some(ids) => {
                self.charge(ids.len())?;
                ids.iter().filter_map(|&i| pk.as_str(i)).collect()
            }
            None => HashSet::new(),
        };
        for field in ["_parameters", "_buffers", "_modules"] {
            let Some(items) = pk.dict_get(dict, field).and_then(|d| pk.as_dict(d)) else {
                continue;
            };
            self.charge(items.len())?;
            for &(k, v) in items {
                let Some(key) = pk.as_str(k) else { continue };
                if matches!(pk.get(v), Value::None)
                    || (field == "_buffers" && non_persistent.contains(key))
                {
                    continue;
                }
                self.collect(v, join(name, key), depth + 1)?;
            }
        }
        Ok(())
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// If `id` is a tensor (`_rebuild_tensor_v2(...)`, possibly wrapped as a `Parameter`), where
/// its values are. `Ok(None)` for anything that is not a tensor; an error for tensor kinds
/// this reader cannot represent (quantized, sparse, …).
fn tensor_info(pk: &Pickle, id: Id) -> Result<Option<TensorInfo>> {
    tensor_info_at(pk, id, 0)
}

/// Wrappers (`Parameter`, tensor subclasses) nest a couple deep in real files; a pickle can
/// make them nest in a cycle, which this bound turns into an error.
const MAX_WRAPPERS: usize = 8;

fn tensor_info_at(pk: &Pickle, id: Id, depth: usize) -> Result<Option<TensorInfo>> {
    let Some(obj) = pk.as_object(id) else {
        return Ok(None);
    };
    let Some((module, name)) = pk.as_global(obj.callable) else {
        return Ok(None);
    };
    rebuild(pk, module, name, obj.args, depth)
}

fn rebuild(
    pk: &Pickle,
    module: &str,
    name: &str,
    args: Id,
    depth: usize,
) -> Result<Option<TensorInfo>> {
    if depth > MAX_WRAPPERS {
        bail!("tensor wrapped in more than {MAX_WRAPPERS} layers of {module}.{name}");
    }
    let a = pk.as_seq(args).unwrap_or(&[]);
    let arg = |i: usize| {
        a.get(i)
            .copied()
            .with_context(|| format!("{module}.{name} has {} arguments, expected more", a.len()))
    };
    match (module, name) {
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
            let (key, mut dtype) = storage_ref(pk, arg(0)?)?;
            if name == "_rebuild_tensor_v3" {
                let d = arg(6)?;
                dtype = pk
                    .as_global(d)
                    .and_then(|(_, n)| DType::from_torch_name(n))
                    .with_context(|| format!("unsupported tensor dtype {}", pk.kind(d)))?;
            }
            let offset = pk
                .as_int(arg(1)?)
                .and_then(|o| usize::try_from(o).ok())
                .context("tensor storage offset is not a non-negative int")?;
            let shape = usizes(pk, arg(2)?).context("tensor size is not a tuple of ints")?;
            let stride = usizes(pk, arg(3)?).context("tensor stride is not a tuple of ints")?;
            if shape.len() > MAX_RANK {
                bail!(
                    "tensor has {} dimensions, more than {MAX_RANK}",
                    shape.len()
                );
            }
            if shape.len() != stride.len() {
                bail!("tensor size {shape:?} and stride {stride:?} differ in rank");
            }
            Ok(Some(TensorInfo {
                storage: key,
                dtype,
                offset,
                shape,
                stride,
            }))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            let data = arg(0)?;
            tensor_info_at(pk, data, depth + 1)?
                .map(Some)
                .with_context(|| format!("a Parameter wrapping a {}, not a tensor", pk.kind(data)))
        }
        // Tensor subclasses: `(rebuild function, subclass, its args, state)`.
        ("torch._tensor" | "torch._utils", "_rebuild_from_type_v2" | "_rebuild_from_type") => {
            let func = arg(0)?;
            let (m, n) = pk
                .as_global(func)
                .with_context(|| format!("{name} of a {}", pk.kind(func)))?;
            rebuild(pk, m, n, arg(2)?, depth + 1)
        }
        (m, n) if m.starts_with("torch") && n.starts_with("_rebuild") => {
            bail!("unsupported tensor kind {m}.{n} (only dense CPU/GPU tensors can be read)")
        }
        _ => Ok(None),
    }
}

/// `BINPERSID ("storage", torch.FloatStorage, "<key>", "<location>", numel)` → key, dtype.
fn storage_ref(pk: &Pickle, id: Id) -> Result<(String, DType)> {
    let Value::PersistentId(pid) = pk.get(id) else {
        bail!(
            "tensor storage is a {}, expected a persistent id",
            pk.kind(id)
        );
    };
    let parts = pk
        .as_seq(*pid)
        .context("storage persistent id is not a tuple")?;
    if parts.len() < 3 || pk.as_str(parts[0]) != Some("storage") {
        bail!("unrecognised storage persistent id ({} items)", parts.len());
    }
    let class = pk
        .as_global(parts[1])
        .context("storage type is not a class")?;
    let dtype = DType::from_storage_class(class.1)
        .with_context(|| format!("unsupported storage type {}.{}", class.0, class.1))?;
    let key = match pk.get(parts[2]) {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => bail!("storage key is a {}", pk.kind(parts[2])),
    };
    Ok((key, dtype))
}

/// More dimensions than any real tensor has; a bound keeps shapes cheap to copy.
const MAX_RANK: usize = 64;

fn usizes(pk: &Pickle, id: Id) -> Option<Vec<usize>> {
    let items = pk.as_seq(id)?;
    if items.len() > MAX_RANK {
        // Report the rank without converting (and copying) a huge tuple.
        return Some(vec![0; MAX_RANK + 1]);
    }
    items
        .iter()
        .map(|&i| pk.as_int(i).and_then(|v| usize::try_from(v).ok()))
        .collect()
}

/// The tensor's values, in row-major order, as `f32`, following its stride through the storage.
/// `(elements, storage bytes reached)` of a view: how many values it holds and how many bytes
/// of its storage, from the start, it needs. Overflow (absurd sizes in a corrupt file) is an
/// error, never a wrapped small number.
fn view_extent(t: &TensorInfo) -> Result<(usize, usize)> {
    let too_large = || {
        format!(
            "tensor view (offset {}, shape {:?}, stride {:?}) is too large",
            t.offset, t.shape, t.stride
        )
    };
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .with_context(too_large)?;
    if numel == 0 {
        return Ok((0, 0));
    }
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&n, &s)| {
            (n - 1).checked_mul(s).and_then(|d| acc.checked_add(d))
        })
        .with_context(too_large)?;
    let bytes = last
        .checked_add(1)
        .and_then(|n| n.checked_mul(t.dtype.size()))
        .with_context(too_large)?;
    Ok((numel, bytes))
}

fn gather_f32(storage: &[u8], t: &TensorInfo, big_endian: bool) -> Result<Vec<f32>> {
    let elem = t.dtype.size();
    let (numel, _) = view_extent(t)?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    let available = storage.len() / elem;
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .fold(t.offset, |acc, (&n, &s)| acc + (n - 1) * s);
    if last >= available {
        bail!(
            "view (offset {}, shape {:?}, stride {:?}) needs element {last} of storage {} but it holds {available}",
            t.offset,
            t.shape,
            t.stride,
            t.storage
        );
    }
    if is_contiguous(&t.shape, &t.stride) {
        let bytes = &storage[t.offset * elem..(t.offset + numel) * elem];
        return Ok(decode(bytes, t.dtype, big_endian));
    }
    // A strided view (a transposed or sliced tensor saved as is): copy its elements in
    // row-major order, then convert.
    let mut bytes = Vec::with_capacity(numel * elem);
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let at = t.offset
            + index
                .iter()
                .zip(&t.stride)
                .map(|(&i, &s)| i * s)
                .sum::<usize>();
        bytes.extend_from_slice(&storage[at * elem..(at + 1) * elem]);
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(decode(&bytes, t.dtype, big_endian))
}

/// Row-major contiguous, ignoring the strides of size-1 dimensions (torch leaves them arbitrary).
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (&n, &s) in shape.iter().zip(stride).rev() {
        if n != 1 && s != expected {
            return false;
        }
        expected *= n;
    }
    true
}

/// Convert packed elements to `f32`.
fn decode(bytes: &[u8], dtype: DType, big_endian: bool) -> Vec<f32> {
    fn conv<const N: usize>(
        bytes: &[u8],
        big_endian: bool,
        f: impl Fn([u8; N]) -> f32,
    ) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a: [u8; N] = c.try_into().expect("chunk of N bytes");
                if big_endian {
                    a.reverse();
                }
                f(a)
            })
            .collect()
    }
    match dtype {
        DType::F32 => conv(bytes, big_endian, f32::from_le_bytes),
        DType::F64 => conv(bytes, big_endian, |a| f64::from_le_bytes(a) as f32),
        DType::F16 => conv(bytes, big_endian, |a| half::f16::from_le_bytes(a).to_f32()),
        DType::BF16 => conv(bytes, big_endian, |a| half::bf16::from_le_bytes(a).to_f32()),
        DType::I64 => conv(bytes, big_endian, |a| i64::from_le_bytes(a) as f32),
        DType::I32 => conv(bytes, big_endian, |a| i32::from_le_bytes(a) as f32),
        DType::I16 => conv(bytes, big_endian, |a| i16::from_le_bytes(a) as f32),
        DType::I8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
        DType::U8 => bytes.iter().map(|&b| b as f32).collect(),
        DType::Bool => bytes.iter().map(|&b| (b != 0) as u8 as f32).collect(),
    }
}
