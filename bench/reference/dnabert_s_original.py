#!/usr/bin/env python3
"""The original's DNABERT-S embedding method in PyTorch, for side-by-side benchmarks.

Restated from docs/method.md, "DNABERT-S embedding" (our own code, not the original's): MosaicBERT's PyTorch
attention path (word + token-type-0 embeddings, LayerNorm, post-LN layers with fused Wqkv,
ALiBi, gated exact-erf GELU MLP), one sequence per forward pass with no padding, fp32, the mean
of the last layer over all tokens ([CLS] and [SEP] included), as VirNucPro's extract_DNABERT_S.

  dnabert_s_original.py MODEL_DIR INPUT.fa OUTPUT.safetensors [--threads N] [--check CASES]

Writes tensor `embeddings` [N, hidden] and a JSON report (OUTPUT.json: sequences/s, tokens/s).
--check CASES.json first runs the fixture's cases and fails unless every embedding is within
1e-4 of the golden (proves this restatement computes what the reference does).
Needs torch, numpy, safetensors, tokenizers.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer


def alibi_slopes(n):
    def pow2(m):
        start = 2 ** (-(2 ** -(math.log2(m) - 3)))
        return [start ** (i + 1) for i in range(m)]

    if math.log2(n).is_integer():
        return pow2(n)
    m = 2 ** math.floor(math.log2(n))
    return pow2(m) + pow2(2 * m)[0::2][: n - m]


class DnabertS:
    """The model on `device` in `dtype` (the original's method: CPU or CUDA, float32)."""

    def __init__(self, model_dir, device="cpu", dtype=torch.float32):
        self.cfg = json.load(open(os.path.join(model_dir, "config.json")))
        raw = load_file(os.path.join(model_dir, "model.safetensors"))
        w = {k.removeprefix("bert."): torch.from_numpy(v).float().to(device, dtype)
             for k, v in raw.items()}
        self.w = w
        self.device, self.dtype = device, dtype
        self.heads = self.cfg["num_attention_heads"]
        self.eps = self.cfg.get("layer_norm_eps", 1e-12)
        self.slopes = torch.tensor(alibi_slopes(self.heads), dtype=torch.float32, device=device)
        self.emb = w["embeddings.word_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        # As the original's AutoTokenizer encodes one sequence: without the fixed 2000-token
        # padding and truncation the real tokenizer.json declares (`tokenizers` would apply
        # them on encode, ~20x the tokens).
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def ln(self, x, name):
        d = x.shape[-1]
        return torch.nn.functional.layer_norm(
            x, (d,), self.w[name + ".weight"], self.w[name + ".bias"], self.eps
        )

    def lin(self, x, name, bias=True):
        return torch.nn.functional.linear(
            x, self.w[name + ".weight"], self.w.get(name + ".bias") if bias else None
        )

    @torch.inference_mode()
    def embed_one(self, ids):
        """One unpadded sequence of token ids -> mean of the last layer, [hidden]."""
        n = len(ids)
        x = self.emb[torch.tensor(ids, device=self.device)] + self.type0
        x = self.ln(x, "embeddings.LayerNorm")
        alibi = self.alibi(n).to(self.dtype)
        h = self.heads
        hd = x.shape[-1] // h
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            qkv = self.lin(x, p + "attention.self.Wqkv").view(n, 3, h, hd)
            q, k, v = (qkv[:, j].transpose(0, 1) for j in range(3))  # [h, n, hd]
            scores = q @ k.transpose(1, 2) / math.sqrt(hd) + alibi
            ctx = (scores.softmax(-1) @ v).transpose(0, 1).reshape(n, h * hd)
            x = self.ln(self.lin(ctx, p + "attention.output.dense") + x,
                        p + "attention.output.LayerNorm")
            g = self.lin(x, p + "mlp.gated_layers", bias=False)
            inter = g.shape[-1] // 2
            g = torch.nn.functional.gelu(g[:, :inter]) * g[:, inter:]
            x = self.ln(self.lin(g, p + "mlp.wo") + x, p + "mlp.layernorm")
        return x.float().mean(0)

    def alibi(self, n):
        """[heads, n, n] bias -slope·|q - k|, in f32 like the original's table."""
        pos = torch.arange(n, device=self.device)
        dist = (pos[None, :] - pos[:, None]).abs().float()
        return -self.slopes[:, None, None] * dist[None]

    @torch.inference_mode()
    def embed_batch(self, batch):
        """Padded batch of token-id lists -> [b, hidden] f32 means, with PyTorch's fused
        attention (SDPA): the fast PyTorch path a GPU comparison runs beside ours."""
        b, n = len(batch), max(map(len, batch))
        ids = torch.zeros(b, n, dtype=torch.long)
        keep = torch.zeros(b, n, dtype=torch.bool)
        for i, t in enumerate(batch):
            ids[i, : len(t)] = torch.tensor(t)
            keep[i, : len(t)] = True
        ids, keep = ids.to(self.device), keep.to(self.device)
        x = self.ln(self.emb[ids] + self.type0, "embeddings.LayerNorm")
        key_bias = torch.zeros(b, n, device=self.device).masked_fill(~keep, float("-inf"))
        bias = (self.alibi(n)[None] + key_bias[:, None, None, :]).to(self.dtype)
        h = self.heads
        hd = x.shape[-1] // h
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            qkv = self.lin(x, p + "attention.self.Wqkv").view(b, n, 3, h, hd)
            q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))  # [b, h, n, hd]
            ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            ctx = ctx.transpose(1, 2).reshape(b, n, h * hd)
            x = self.ln(self.lin(ctx, p + "attention.output.dense") + x,
                        p + "attention.output.LayerNorm")
            g = self.lin(x, p + "mlp.gated_layers", bias=False)
            inter = g.shape[-1] // 2
            g = torch.nn.functional.gelu(g[..., :inter]) * g[..., inter:]
            x = self.ln(self.lin(g, p + "mlp.wo") + x, p + "mlp.layernorm")
        m = keep.to(torch.float32)
        return (x.float() * m[..., None]).sum(1) / m.sum(1, keepdim=True)

    def tokens(self, seq):
        return self.tokenizer.encode(seq).ids


def read_fasta(path):
    ids, seqs = [], []
    for line in open(path):
        line = line.strip()
        if line.startswith(">"):
            ids.append(line[1:].split()[0])
            seqs.append([])
        elif line:
            seqs[-1].append(line)
    return ids, ["".join(s) for s in seqs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("fasta")
    ap.add_argument("output")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--check", help="a fixture's cases.json to verify against first")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    if a.check:
        fix = DnabertS(os.path.dirname(a.check))
        worst = 0.0
        for case in json.load(open(a.check))["cases"]:
            ids = fix.tokens(case["sequence"])
            assert ids == case["token_ids"], f"{case['id']}: token ids differ"
            got = fix.embed_one(ids).cpu().numpy()
            worst = max(worst, float(np.abs(got - np.array(case["embedding"])).max()))
        if worst > 1e-4:
            sys.exit(f"PyTorch restatement disagrees with {a.check}: max abs diff {worst:.2e}")
        print(f"PyTorch restatement matches {a.check}: max abs diff {worst:.1e}")

    model = DnabertS(a.model_dir)
    names, seqs = read_fasta(a.fasta)
    toks = [model.tokens(s) for s in seqs]
    model.embed_one(toks[0])  # warm-up, as a long run amortises it
    start = time.perf_counter()
    rows = [model.embed_one(t).cpu().numpy() for t in toks]
    wall = time.perf_counter() - start
    save_file({"embeddings": np.stack(rows).astype(np.float32)}, a.output,
              metadata={"ids": "\n".join(names)})
    ntok = sum(map(len, toks))
    report = {"sequences": len(rows), "tokens": ntok, "wall_seconds": wall,
              "sequences_per_second": len(rows) / wall, "tokens_per_second": ntok / wall,
              "threads": a.threads, "torch": torch.__version__}
    json.dump(report, open(a.output + ".json", "w"), indent=1)


if __name__ == "__main__":
    main()
