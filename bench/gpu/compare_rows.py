#!/usr/bin/env python3
"""Compare two embeddings files row by row (matched by id):
  compare_rows.py A.safetensors B.safetensors LABEL MIN_COSINE [MAX_ABS]
Prints one line: the lowest cosine (and its id) and the largest abs difference; exit 1 if a
cosine is below MIN_COSINE, the largest abs difference is above MAX_ABS (when given), or the
ids differ."""
import sys

import numpy as np
from safetensors import safe_open


def rows(path):
    with safe_open(path, "np") as f:
        emb = f.get_tensor("embeddings")
        ids = f.metadata()["ids"].split("\n")
    return {i: emb[k].astype(np.float64) for k, i in enumerate(ids)}


a, b = rows(sys.argv[1]), rows(sys.argv[2])
label, floor = sys.argv[3], float(sys.argv[4])
ceiling = float(sys.argv[5]) if len(sys.argv) > 5 else None
if set(a) != set(b):
    print(f"{label}: the files hold different ids ({len(a)} vs {len(b)} rows, "
          f"{len(set(a) ^ set(b))} not in both) -> FAIL")
    sys.exit(1)
worst_cos, worst_abs, worst_id = 1.0, 0.0, ""
for i in a:
    x, y = a[i], b[i]
    cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
    if cos < worst_cos:
        worst_cos, worst_id = cos, i
    worst_abs = max(worst_abs, float(np.abs(x - y).max()))
ok = worst_cos >= floor and (ceiling is None or worst_abs <= ceiling)
bound = f"cosine >= {floor}" + ("" if ceiling is None else f", max abs <= {ceiling:g}")
print(f"{label}: {len(a)} rows, min cosine {worst_cos:.7f} ({worst_id}), max abs diff "
      f"{worst_abs:.3g} -> {'OK' if ok else 'FAIL'} ({bound})")
sys.exit(0 if ok else 1)
