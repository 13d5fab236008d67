#!/usr/bin/env python3
"""The table of a `bench/gpu/run.sh throughput` run: ours beside PyTorch per model and dtype.

  summary.py OUTDIR PRECISION...

Reads OUTDIR/{dna,esm}_P.json (our --report), OUTDIR/torch_{dna,esm}_P.safetensors.json
(torch_baseline.py), the matching *.gpu files (nvidia-smi busy share and peak memory) and both
embeddings files; prints sequences/s, tokens/s, GPU busy %, peak memory, our speed-up over
PyTorch, and the lowest cosine between our rows and PyTorch's (the same input, so the same rows).
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def load_json(path):
    return json.load(open(path)) if os.path.exists(path) else None


def min_cosine(a_path, b_path):
    if not (os.path.exists(a_path) and os.path.exists(b_path)):
        return None
    a, b = (load_file(p)["embeddings"].astype(np.float64) for p in (a_path, b_path))
    if a.shape != b.shape:
        return None
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    return float(cos.min())


def main():
    out, precisions = sys.argv[1], sys.argv[2:]
    head = f"{'run':<22}{'seq/s':>10}{'tokens/s':>12}{'GPU busy':>10}{'peak MiB':>10}"
    print(head)
    print("-" * len(head))
    for p in precisions:
        for model in ("dna", "esm"):
            ours = load_json(f"{out}/{model}_{p}.json")
            ref = load_json(f"{out}/torch_{model}_{p}.safetensors.json")
            for label, rep, gpu in (
                (f"ours {model} {p}", ours, f"{out}/{model}_{p}.gpu"),
                (f"PyTorch {model} {p}", ref, f"{out}/torch_{model}_{p}.gpu"),
            ):
                if rep is None:
                    print(f"{label:<22}{'(no report: the run failed)':>42}")
                    continue
                g = load_json(gpu) or {}
                print(f"{label:<22}{rep['sequences_per_second']:>10.1f}"
                      f"{rep['tokens_per_second']:>12.0f}"
                      f"{g.get('gpu_busy_percent', float('nan')):>9.1f}%"
                      f"{g.get('gpu_memory_peak_mib', 0):>10d}")
            if ours and ref:
                cos = min_cosine(f"{out}/{model}_{p}.safetensors",
                                 f"{out}/torch_{model}_{p}.safetensors")
                ratio = ours["tokens_per_second"] / ref["tokens_per_second"]
                cos_text = "n/a" if cos is None else f"{cos:.5f}"
                print(f"  -> ours / PyTorch: {ratio:.2f}x; lowest row cosine {cos_text}")


if __name__ == "__main__":
    main()
