#!/usr/bin/env python3
"""Random-weight models at the real VirNucPro shapes, for GPU throughput runs (real weights
cannot be fetched on our machines; speed does not depend on the values).

  make_models.py OUTDIR [--real-files tests/fixtures/real_model_files]
                 [--esm-layers 36 --esm-dim 2560 --esm-heads 40] [--dtype float16]
                 [--skip-esm | --skip-dna]

Writes OUTDIR/esm2_3B_random/{config.json,model.safetensors} (HF EsmForMaskedLM names) and
OUTDIR/dnabert_s_random/ with the real DNABERT-S config.json, tokenizer.json (its 4096-token
BPE), tokenizer_config.json and special_tokens_map.json, and random weights of those shapes
(hidden 768, 12 layers, 12 heads, intermediate 3072): GPU figures are for the real vocabulary.
ESM-2's feed-forward is 4 x hidden wide (10240 at 3B), as in every ESM-2; fewer --esm-layers
keep the 3B's per-layer shape at a fraction of its size (bench/gpu/kit.sh uses 2).

Deterministic: each model draws from its own numpy default_rng (DNABERT-S seed 0, ESM-2 seed 1),
so the same arguments write the same bytes whichever models are made; bench/gpu/kit.sh records
the files' sha256 and checks them where it regenerates the models.
Needs numpy, safetensors.
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file

SEEDS = {"dnabert_s": 0, "esm2": 1}


def randn(rng, *shape, dtype):
    """Scaled like a trained layer (1/sqrt(fan_in)) so activations stay in range in f16."""
    return (rng.standard_normal(shape, dtype=np.float32) * (shape[-1] ** -0.5)).astype(dtype)


def esm(outdir, layers, dim, heads, dtype):
    d = os.path.join(outdir, "esm2_3B_random")
    os.makedirs(d, exist_ok=True)
    cfg = {
        "architectures": ["EsmForMaskedLM"], "model_type": "esm", "hidden_size": dim,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": 4 * dim,
        "layer_norm_eps": 1e-5, "mask_token_id": 32, "pad_token_id": 1,
        "position_embedding_type": "rotary", "token_dropout": True, "vocab_size": 33,
        "emb_layer_norm_before": False, "max_position_embeddings": 1026,
    }
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    rng = np.random.default_rng(SEEDS["esm2"])
    t = {}
    def lin(name, o, i):
        t[name + ".weight"] = randn(rng, o, i, dtype=dtype)
        t[name + ".bias"] = np.zeros(o, dtype=dtype)
    def ln(name, n):
        t[name + ".weight"] = np.ones(n, dtype=dtype)
        t[name + ".bias"] = np.zeros(n, dtype=dtype)
    t["esm.embeddings.word_embeddings.weight"] = randn(rng, 33, dim, dtype=dtype) * 16
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
    save_file(t, os.path.join(d, "model.safetensors"))
    print("wrote", d, sum(v.size for v in t.values()) / 1e9, "B params")


def dnabert(outdir, real_files, dtype):
    """Random weights under the real DNABERT-S config and tokenizer (vocab 4096, 768 hidden,
    12 layers): token counts per base and every shape are the real model's."""
    import shutil
    d = os.path.join(outdir, "dnabert_s_random")
    os.makedirs(d, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(os.path.join(real_files, "dnabert_s." + name), os.path.join(d, name))
    cfg = json.load(open(os.path.join(d, "config.json")))
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    rng = np.random.default_rng(SEEDS["dnabert_s"])
    r = lambda *s: randn(rng, *s, dtype=dtype)
    ones = lambda n: np.ones(n, dtype=dtype)
    zeros = lambda n: np.zeros(n, dtype=dtype)
    t = {
        "embeddings.word_embeddings.weight": r(V, H),
        "embeddings.token_type_embeddings.weight": r(2, H),
        "embeddings.LayerNorm.weight": ones(H),
        "embeddings.LayerNorm.bias": zeros(H),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        t[p + "attention.self.Wqkv.weight"] = r(3 * H, H)
        t[p + "attention.self.Wqkv.bias"] = zeros(3 * H)
        t[p + "attention.output.dense.weight"] = r(H, H)
        t[p + "attention.output.dense.bias"] = zeros(H)
        t[p + "attention.output.LayerNorm.weight"] = ones(H)
        t[p + "attention.output.LayerNorm.bias"] = zeros(H)
        t[p + "mlp.gated_layers.weight"] = r(2 * I, H)
        t[p + "mlp.wo.weight"] = r(H, I)
        t[p + "mlp.wo.bias"] = zeros(H)
        t[p + "mlp.layernorm.weight"] = ones(H)
        t[p + "mlp.layernorm.bias"] = zeros(H)
    save_file(t, os.path.join(d, "model.safetensors"))
    print("wrote", d, "vocab", V)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--real-files", default="tests/fixtures/real_model_files",
                    help="the real models' config and tokenizer files (dnabert_s.*)")
    ap.add_argument("--esm-layers", type=int, default=36)
    ap.add_argument("--esm-dim", type=int, default=2560)
    ap.add_argument("--esm-heads", type=int, default=40)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--skip-esm", action="store_true")
    ap.add_argument("--skip-dna", action="store_true")
    a = ap.parse_args()
    dt = getattr(np, a.dtype)
    if not a.skip_dna:
        dnabert(a.outdir, a.real_files, dt)
    if not a.skip_esm:
        esm(a.outdir, a.esm_layers, a.esm_dim, a.esm_heads, dt)
