#!/usr/bin/env python3
"""The Python side of bench/load_esm.sh (how long loading ESM-2 takes, against reading its file).

  load_esm.py weights OUTDIR --layers L --dim D --heads H
      the random f32 model of gpu/make_models.py (same generator, seed and draw order, so the
      same values) as OUTDIR/esm2_3B_random/{config.json,model.safetensors}, and the same
      tensors as a fair-esm hub checkpoint OUTDIR/esm2.pt (`{"cfg": {"model": Namespace},
      "model": state_dict}`, names `encoder.sentence_encoder.*`, plus the unused rotary
      buffers and masked-LM head fair-esm saves), as bench/esm_cpu.py writes them. Unlike
      those two, it streams: each tensor is drawn, written and dropped, and the .pt is written
      from a map of the safetensors file, so a 3B model (11.4 GB a file) needs well under 1 GB
      of memory (make_models + esm_cpu.py hold the model two to three times over), and no
      torch: the .pt is torch.save's zip written here record for record (64-byte aligned
      stored entries, pickle protocol 2, `_rebuild_tensor_v2` over `FloatStorage`s, storages
      in the order torch.save writes them: keys sorted as strings).
  load_esm.py evict FILE...
      drop FILE's pages from the page cache (posix_fadvise DONTNEED after fsync), for a cold
      load when /proc/sys/vm/drop_caches cannot be written; says how much stayed resident.
  load_esm.py resident FILE...
      the share of FILE in the page cache (mincore over a map of it).
Needs numpy.
"""
import argparse
import collections
import json
import mmap
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 1  # gpu/make_models.py's SEEDS["esm2"]
# HF EsmModel names -> fair-esm ESM2 names: esm_cpu.py's table (it imports only numpy at the
# top, as this script does), so the two benchmarks cannot disagree on a name.
sys.path.insert(0, HERE)
from esm_cpu import ALPHABET_SIZE, fair_name  # noqa: E402


def hf_tensors(layers, dim):
    """(name, shape, kind) in make_models.esm's draw order; kind: randn scale, 'ones', 'zeros'."""
    out = [("esm.embeddings.word_embeddings.weight", (ALPHABET_SIZE, dim), 16.0)]
    def lin(name, o, i):
        out.append((name + ".weight", (o, i), 1.0))
        out.append((name + ".bias", (o,), "zeros"))
    def ln(name, n):
        out.append((name + ".weight", (n,), "ones"))
        out.append((name + ".bias", (n,), "zeros"))
    for i in range(layers):
        p = f"esm.encoder.layer.{i}."
        for n in ("query", "key", "value"):
            lin(p + "attention.self." + n, dim, dim)
        lin(p + "attention.output.dense", dim, dim)
        ln(p + "attention.LayerNorm", dim)
        lin(p + "intermediate.dense", 4 * dim, dim)
        lin(p + "output.dense", dim, 4 * dim)
        ln(p + "LayerNorm", dim)
    ln("esm.encoder.emb_layer_norm_after", dim)
    return out


def write_safetensors(path, layers, dim):
    """The file safetensors.numpy.save_file writes (tensors laid out sorted by name, header
    padded to 8 bytes), filled tensor by tensor in make_models' draw order."""
    specs = hf_tensors(layers, dim)
    offsets, at = {}, 0
    for name, shape, _ in sorted(specs, key=lambda s: s[0]):
        n = 4 * int(np.prod(shape))
        offsets[name] = (at, at + n)
        at += n
    header = {"__metadata__": {"format": "pt"}}
    for name, shape, _ in specs:
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": list(offsets[name])}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    base = 8 + len(text)
    rng = np.random.default_rng(SEED)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(base + at)
        for name, shape, kind in specs:
            if kind == "ones":
                values = np.ones(shape, np.float32)
            elif kind == "zeros":
                values = np.zeros(shape, np.float32)
            else:
                # make_models.randn, then its `* 16` for the embedding.
                values = rng.standard_normal(shape, dtype=np.float32) * (shape[-1] ** -0.5)
                if kind != 1.0:
                    values = values * np.float32(kind)
            os.pwrite(f.fileno(), values.astype("<f4").tobytes(), base + offsets[name][0])
    return base, offsets, specs


class Storage:
    """One torch storage: `numel` f32 values, written as zip entry `data/<key>`."""
    def __init__(self, key, values):
        self.key, self.values = key, values


class Tensor:
    """Pickles as torch.Tensor does: `_rebuild_tensor_v2(storage, 0, size, stride, False, {})`."""
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce_ex__(self, protocol):
        stride = tuple(int(np.prod(self.shape[i + 1:])) for i in range(len(self.shape)))
        return (TORCH_UTILS._rebuild_tensor_v2,
                (self.storage, 0, self.shape, stride, False, collections.OrderedDict()))


def fake_torch():
    """Modules `torch` and `torch._utils` holding the two globals a checkpoint names, so that
    pickle writes `torch._utils._rebuild_tensor_v2` and `torch.FloatStorage` without torch."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
    def _rebuild_tensor_v2(*args):
        raise RuntimeError("only pickled, never called")
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, torch._utils = FloatStorage, utils
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    sys.modules.setdefault("torch", torch)
    sys.modules.setdefault("torch._utils", utils)
    if sys.modules["torch"] is not torch:
        sys.exit("load_esm.py weights writes the .pt without torch; run it where torch is not imported")
    return torch, utils


TORCH, TORCH_UTILS = None, None


class CheckpointPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", TORCH.FloatStorage, obj.key, "cpu", obj.values.size)
        return None


def aligned_entry(zf, name, data):
    """A stored entry whose data starts at a multiple of 64 bytes, padded as PyTorch's
    writer pads (an extra field `FB` of `Z`s)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    start = zf.fp.tell() + 30 + len(name.encode()) + 4
    pad = -start % 64
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    info.file_size = len(data)
    with zf.open(info, "w") as out:
        out.write(data)


def write_fair_esm(path, st_path, base, offsets, specs, layers, dim, heads):
    global TORCH, TORCH_UTILS
    TORCH, TORCH_UTILS = fake_torch()
    from argparse import Namespace
    data = np.memmap(st_path, dtype=np.uint8, mode="r")
    def values(hf):
        a, b = offsets[hf]
        return data[base + a:base + b].view("<f4")
    storages = []
    def storage(v):
        storages.append(Storage(str(len(storages)), v))
        return storages[-1]
    p = "encoder.sentence_encoder."
    sd = collections.OrderedDict()
    embed = None
    # fair-esm's module order: embed_tokens, layers.* (with their rotary buffer), the final norm.
    order = {hf: k for k, (hf, _, _) in enumerate(specs)}
    for hf, shape, _ in sorted(specs, key=lambda s: (fair_sort_key(fair_name(s[0])), order[s[0]])):
        t = Tensor(storage(values(hf)), shape)
        sd[p + fair_name(hf)] = t
        if hf == "esm.embeddings.word_embeddings.weight":
            embed = t
    head_dim = dim // heads
    inv_freq = (1.0 / (10000 ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))).astype("<f4")
    for i in range(layers):
        sd[f"{p}layers.{i}.self_attn.rot_emb.inv_freq"] = Tensor(storage(inv_freq.copy()), inv_freq.shape)
    # The masked-LM head fair-esm's loader insists on (unused by the embedding; tied weight).
    sd["encoder.lm_head.weight"] = Tensor(embed.storage, embed.shape)
    sd["encoder.lm_head.bias"] = Tensor(storage(np.zeros(ALPHABET_SIZE, "<f4")), (ALPHABET_SIZE,))
    sd["encoder.lm_head.dense.weight"] = Tensor(storage(np.zeros((dim, dim), "<f4")), (dim, dim))
    sd["encoder.lm_head.dense.bias"] = Tensor(storage(np.zeros(dim, "<f4")), (dim,))
    sd["encoder.lm_head.layer_norm.weight"] = Tensor(storage(np.ones(dim, "<f4")), (dim,))
    sd["encoder.lm_head.layer_norm.bias"] = Tensor(storage(np.zeros(dim, "<f4")), (dim,))
    cfg = Namespace(encoder_layers=layers, encoder_embed_dim=dim,
                    encoder_attention_heads=heads, token_dropout=True)
    import io
    buf = io.BytesIO()
    CheckpointPickler(buf, protocol=2).dump({"cfg": {"model": cfg}, "model": sd})
    prefix = os.path.splitext(os.path.basename(path))[0] + "/"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        aligned_entry(zf, prefix + "data.pkl", buf.getvalue())
        aligned_entry(zf, prefix + "byteorder", b"little")
        for s in sorted(storages, key=lambda s: s.key):
            aligned_entry(zf, prefix + "data/" + s.key, memoryview(np.ascontiguousarray(s.values)).cast("B"))
        aligned_entry(zf, prefix + "version", b"3\n")
    check_aligned(path)


def fair_sort_key(name):
    """fair-esm's module order: embed_tokens, then layers by number, then the final norm."""
    if name.startswith("embed_tokens"):
        return (0, 0)
    if name.startswith("layers."):
        return (1, int(name.split(".")[1]))
    return (2, 0)


def check_aligned(path):
    """Every stored entry's data starts at a multiple of 64, as torch.save's do."""
    with open(path, "rb") as f, zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            f.seek(info.header_offset)
            head = f.read(30)
            n, m = struct.unpack("<HH", head[26:30])
            start = info.header_offset + 30 + n + m
            if start % 64:
                sys.exit(f"{path}: entry {info.filename} starts at {start}, not 64-byte aligned")


def weights(a):
    d = os.path.join(a.outdir, "esm2_3B_random")
    os.makedirs(d, exist_ok=True)
    cfg = {
        "architectures": ["EsmForMaskedLM"], "model_type": "esm", "hidden_size": a.dim,
        "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
        "intermediate_size": 4 * a.dim, "layer_norm_eps": 1e-5, "mask_token_id": 32,
        "pad_token_id": 1, "position_embedding_type": "rotary", "token_dropout": True,
        "vocab_size": ALPHABET_SIZE, "emb_layer_norm_before": False,
        "max_position_embeddings": 1026,
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    st = os.path.join(d, "model.safetensors")
    base, offsets, specs = write_safetensors(st, a.layers, a.dim)
    print("wrote", st, os.path.getsize(st) / 1e9, "GB", flush=True)
    pt = os.path.join(a.outdir, "esm2.pt")
    write_fair_esm(pt, st, base, offsets, specs, a.layers, a.dim, a.heads)
    print("wrote", pt, os.path.getsize(pt) / 1e9, "GB")


def evict(a):
    for path in a.files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        print(f"evicted {path}: {resident_share(path):.1%} still resident")


def resident_share(path):
    """The share of FILE's pages in the page cache, by mincore (through ctypes: Python's mmap
    module does not offer it) over a map that is never read, so asking loads nothing."""
    import ctypes
    size = os.path.getsize(path)
    if size == 0:
        return 0.0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = ctypes.create_string_buffer(pages)
        if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        libc.munmap(ctypes.c_void_p(addr), size)
        return sum(b & 1 for b in vec.raw) / pages
    finally:
        os.close(fd)


def resident(a):
    for path in a.files:
        print(f"{path}: {resident_share(path):.1%} resident")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(required=True)
    p = sub.add_parser("weights")
    p.add_argument("outdir")
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.set_defaults(run=weights)
    for name, run in (("evict", evict), ("resident", resident)):
        p = sub.add_parser(name)
        p.add_argument("files", nargs="+")
        p.set_defaults(run=run)
    a = ap.parse_args()
    a.run(a)


if __name__ == "__main__":
    main()
