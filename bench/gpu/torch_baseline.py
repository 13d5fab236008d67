#!/usr/bin/env python3
"""PyTorch beside `virnucpro embed-*` on the same GPU, in the same run (bench/gpu/kit.sh).

  torch_baseline.py esm MODEL_DIR INPUT.faa OUTPUT.safetensors [--dtype bf16] [--batch-tokens N]
  torch_baseline.py dna MODEL_DIR INPUT.fa  OUTPUT.safetensors [--dtype bf16] [--batch-tokens N]
      [--device cuda] [--check CASES.json] [--threads N] [--warmup N] [--tf32]

esm: transformers `EsmModel` with SDPA attention (the fast PyTorch path for ESM-2), length-sorted
     batches of at most N padded tokens, mean over residues 1..=min(L, 1024) (docs/method.md, "ESM-2 embedding").
dna: the DNABERT-S restatement of bench/reference/dnabert_s_original.py, batched and padded with
     SDPA attention (ALiBi + padding as the additive mask), mean over all real tokens (§4); the
     tokenizer without the tokenizer.json's fixed padding/truncation (dna_tokens.py).
Writes `embeddings` [N, dim] f32 (input order) and OUTPUT.json: sequences/s, tokens/s (tokens
with their specials, as our --report counts them), peak GPU memory. `compute_seconds` and
`compute_tokens_per_second` time the embedding loop alone (model loaded, warm-up done, CUDA
synchronised before and after: what our report's `compute_tokens_per_second` times);
`load_seconds` is the model's loading (`wall_seconds` = `compute_seconds`, the older name).
--check first runs a fixture's cases.json on the same device and dtype and fails unless every
embedding is within 1e-4 (f32; 5e-3 with --tf32) or has cosine >= 0.999 (half): the baseline
must compute what the reference does. f32 matmuls are IEEE f32 (allow_tf32 off) unless --tf32
lets them round to TF32 on tensor cores, as CubeCL's f32 matmuls may.
--threads sets torch's intra-op threads (CPU runs, bench/esm_cpu.sh); --warmup is how many
sequences one untimed pass embeds first (default 64).
Needs torch, numpy, safetensors, tokenizers; `esm` also needs transformers.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from safetensors.numpy import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnabert_s_original import DnabertS, read_fasta  # noqa: E402
from dna_tokens import dna_tokenizer  # noqa: E402


def load_dnabert(model_dir, device, dtype):
    """The reference model with the tokenizer as transformers uses it: the real tokenizer.json
    pads and truncates to 2000 tokens, which `tokenizers` would apply (~20x our tokens)."""
    model = DnabertS(model_dir, device, dtype)
    model.tokenizer = dna_tokenizer(os.path.join(model_dir, "tokenizer.json"))
    return model

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
ESM_ALPHABET = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-",
                "<null_1>", "<mask>"]
ESM_INDEX = {t: i for i, t in enumerate(ESM_ALPHABET)}


class Esm:
    def __init__(self, model_dir, device, dtype):
        from transformers import EsmModel
        from transformers.utils import logging

        logging.set_verbosity_error()  # the missing pooler/contact head is expected
        logging.disable_progress_bar()
        self.model = EsmModel.from_pretrained(
            model_dir, dtype=dtype, attn_implementation="sdpa", add_pooling_layer=False
        ).to(device).eval()
        self.device = device

    def tokens(self, seq):
        unk = ESM_INDEX["<unk>"]
        return [0] + [ESM_INDEX.get(c, unk) if len(c) == 1 and c.isalpha() else unk
                      for c in seq] + [2]

    @torch.inference_mode()
    def embed_batch(self, batch):
        b, n = len(batch), max(map(len, batch))
        ids = torch.full((b, n), ESM_INDEX["<pad>"], dtype=torch.long)
        keep = torch.zeros(b, n, dtype=torch.long)
        for i, t in enumerate(batch):
            ids[i, : len(t)] = torch.tensor(t)
            keep[i, : len(t)] = 1
        out = self.model(input_ids=ids.to(self.device),
                         attention_mask=keep.to(self.device)).last_hidden_state.float()
        rows = []
        for i, t in enumerate(batch):
            last = min(len(t) - 2, 1024)
            rows.append(out[i, 1: last + 1].mean(0))
        return torch.stack(rows)


def batches(toks, budget):
    """Length-sorted (longest first) index batches of at most `budget` padded tokens."""
    order = sorted(range(len(toks)), key=lambda i: -len(toks[i]))
    out, cur = [], []
    for i in order:
        if cur and len(toks[cur[0]]) * (len(cur) + 1) > budget:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def embed_all(model, toks, budget):
    rows = [None] * len(toks)
    for idx in batches(toks, budget):
        got = model.embed_batch([toks[i] for i in idx]).cpu().numpy()
        for i, r in zip(idx, got):
            rows[i] = r
    return np.stack(rows).astype(np.float32)


def check(model, cases_path, half, tf32=False):
    cases = json.load(open(cases_path))["cases"]
    toks = [model.tokens(c["sequence"]) for c in cases]
    for c, t in zip(cases, toks):
        if t != c["token_ids"]:
            sys.exit(f"{cases_path}: {c['id']}: token ids differ from the golden")
    got = embed_all(model, toks, 1 << 30)
    want = np.array([c["embedding"] for c in cases], dtype=np.float32)
    if half:
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        ok, what = cos.min() >= 0.999, f"min cosine {cos.min():.5f}"
    else:
        diff = np.abs(got - want).max()
        ok, what = diff <= (5e-3 if tf32 else 1e-4), f"max abs diff {diff:.1e}"
    if not ok:
        sys.exit(f"PyTorch baseline disagrees with {cases_path}: {what}")
    print(f"PyTorch baseline matches {cases_path}: {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["esm", "dna"])
    ap.add_argument("model_dir")
    ap.add_argument("fasta")
    ap.add_argument("output")
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--check", help="a fixture's cases.json, run first on the same device/dtype")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--warmup", type=int, default=64, help="sequences in the untimed first pass")
    ap.add_argument("--tf32", action="store_true",
                    help="let f32 matmuls run as TF32 on tensor cores (default: IEEE f32)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    dtype = DTYPES[a.dtype]
    load = (lambda d: Esm(d, a.device, dtype)) if a.model == "esm" else (
        lambda d: load_dnabert(d, a.device, dtype))
    if a.check:
        check(load(os.path.dirname(a.check)), a.check, a.dtype != "f32", a.tf32)

    loading = time.perf_counter()
    model = load(a.model_dir)
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    load_seconds = time.perf_counter() - loading
    names, seqs = read_fasta(a.fasta)
    toks = [model.tokens(s) for s in seqs]
    cuda = a.device.startswith("cuda")
    if a.warmup:
        embed_all(model, toks[: a.warmup], a.batch_tokens)  # warm-up (kernels, allocator)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    rows = embed_all(model, toks, a.batch_tokens)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    save_file({"embeddings": rows}, a.output, metadata={"ids": "\n".join(names)})
    ntok = sum(map(len, toks))
    report = {
        "model": a.model, "dtype": a.dtype, "batch_tokens": a.batch_tokens,
        "sequences": len(rows), "tokens": ntok, "wall_seconds": wall,
        "compute_seconds": wall, "compute_tokens_per_second": ntok / wall,
        "load_seconds": load_seconds, "tf32": a.tf32,
        "sequences_per_second": len(rows) / wall, "tokens_per_second": ntok / wall,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    json.dump(report, open(a.output + ".json", "w"), indent=1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
