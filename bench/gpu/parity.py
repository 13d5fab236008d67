#!/usr/bin/env python3
"""Compare an embeddings file from `virnucpro embed-*` with a fixture's cases.json.
  parity.py CASES.json EMB.safetensors [f32|half]
f32: max abs diff <= 1e-4 required; half: cosine >= 0.999 per case required. Exit 1 otherwise."""
import json
import sys

import numpy as np
from safetensors import safe_open

cases = json.load(open(sys.argv[1]))["cases"]
mode = sys.argv[3] if len(sys.argv) > 3 else "f32"
with safe_open(sys.argv[2], "np") as f:
    emb = f.get_tensor("embeddings")
    ids = f.metadata()["ids"].split("\n")
row = {i: emb[k] for k, i in enumerate(ids)}
worst_abs, worst_cos = 0.0, 1.0
for c in cases:
    want = np.asarray(c["embedding"], dtype=np.float32)
    got = row[c["id"]]
    worst_abs = max(worst_abs, float(np.abs(want - got).max()))
    cos = float(want @ got / (np.linalg.norm(want) * np.linalg.norm(got)))
    worst_cos = min(worst_cos, cos)
ok = worst_abs <= 1e-4 if mode == "f32" else worst_cos >= 0.999
print(f"{sys.argv[2]}: {len(cases)} cases, max abs diff {worst_abs:.3g}, min cosine {worst_cos:.6f} -> {'OK' if ok else 'FAIL'} ({mode})")
sys.exit(0 if ok else 1)
