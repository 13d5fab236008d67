#!/usr/bin/env python3
"""Compare an embeddings file from `virnucpro embed-*` with a fixture's cases.json.
  parity.py CASES.json EMB.safetensors [f32|tf32|half]
f32:  max abs diff <= 1e-4 (IEEE f32 against the f32 goldens, as on the CPU and wgpu);
tf32: max abs diff <= 5e-3 and cosine >= 0.99999 per case: f32 on CUDA, where CubeCL's
      tensor-core matmuls may round f32 inputs to TF32 (10-bit mantissa, ~5e-4 relative per
      product), the same allowance PyTorch's allow_tf32 needs;
half: cosine >= 0.999 per case (f16/bf16 weights and activations, norms and softmax in f32).
Prints one line (also the 1e-4 verdict, for the record); exit 1 when the mode's bound fails."""
import json
import sys

import numpy as np
from safetensors import safe_open

args = sys.argv[1:]
cases = json.load(open(args[0]))["cases"]
mode = args[2] if len(args) > 2 else "f32"
with safe_open(args[1], "np") as f:
    emb = f.get_tensor("embeddings")
    ids = f.metadata()["ids"].split("\n")
row = {i: emb[k] for k, i in enumerate(ids)}
missing = [c["id"] for c in cases if c["id"] not in row]
if missing:
    print(f"{args[1]}: cases missing from the output: {', '.join(missing[:5])} -> FAIL")
    sys.exit(1)
worst_abs, worst_cos = 0.0, 1.0
for c in cases:
    want = np.asarray(c["embedding"], dtype=np.float64)
    got = row[c["id"]].astype(np.float64)
    worst_abs = max(worst_abs, float(np.abs(want - got).max()))
    cos = float(want @ got / (np.linalg.norm(want) * np.linalg.norm(got)))
    worst_cos = min(worst_cos, cos)
if mode == "f32":
    ok, bound = worst_abs <= 1e-4, "max abs <= 1e-4"
elif mode == "tf32":
    ok, bound = worst_abs <= 5e-3 and worst_cos >= 0.99999, "max abs <= 5e-3, cosine >= 0.99999 (TF32-sized)"
else:
    ok, bound = worst_cos >= 0.999, "cosine >= 0.999"
ieee = "within" if worst_abs <= 1e-4 else "beyond"
print(f"{len(cases)} cases, max abs diff {worst_abs:.3g} ({ieee} IEEE f32's 1e-4), "
      f"min cosine {worst_cos:.7f} -> {'OK' if ok else 'FAIL'} ({mode}: {bound})")
sys.exit(0 if ok else 1)
