#!/usr/bin/env python3
"""The throughput table of a `bench/gpu/kit.sh device 2` run: ours beside PyTorch per model and
dtype, compute time against compute time.

  summary.py DIR PRECISION... [--models dna,esm] [--layers-note TEXT]

Reads DIR/{dna,esm}_P.json (our --report), DIR/torch_{dna,esm}_P.safetensors.json
(torch_baseline.py), the matching .gpu files (nvidia-smi busy share and peak memory), the
.seconds files (the whole process, from the shell: loading, CUDA start-up and writing included)
and both embeddings files. Prints the table ("process s": the whole process; "other s": that less the compute time:
start-up, loading, warm-up, writing), then one `PASS name: ...` or `FAIL name: ...` line per
model and dtype (SKIP when a run left no report: kit.sh says why): FAIL when the files hold
other rows, or the
lowest cosine between our rows and PyTorch's (the same input, so the same rows) is below
0.999 (f16, bf16) or 0.9999 (f32). The speed ratio is never a failure: it is the figure.
Exit 1 when any line is FAIL.
"""
import argparse
import json
import os
import sys

import numpy as np
from safetensors import safe_open

MIN_COSINE = {"f32": 0.9999, "f16": 0.999, "bf16": 0.999}


def load_json(path):
    return json.load(open(path)) if os.path.exists(path) else None


def seconds(path):
    try:
        return float(open(path).read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def rows(path):
    with safe_open(path, "np") as f:
        emb = f.get_tensor("embeddings").astype(np.float64)
        ids = f.metadata()["ids"].split("\n")
    return dict(zip(ids, emb))


def min_cosine(a_path, b_path):
    """The lowest cosine between rows of the same id, or None (a file missing, ids differ)."""
    if not (os.path.exists(a_path) and os.path.exists(b_path)):
        return None
    a, b = rows(a_path), rows(b_path)
    if set(a) != set(b):
        return None
    return min(float(a[i] @ b[i] / (np.linalg.norm(a[i]) * np.linalg.norm(b[i]) + 1e-30))
               for i in a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("precisions", nargs="+")
    ap.add_argument("--models", default="dna,esm")
    ap.add_argument("--layers-note", default="")
    a = ap.parse_args()
    out = a.dir
    head = (f"{'run':<20}{'compute tok/s':>14}{'compute s':>10}{'process s':>10}{'other s':>8}"
            f"{'GPU busy':>10}{'peak MiB':>10}")
    print(head)
    print("-" * len(head))
    verdicts = []
    for p in a.precisions:
        for model in a.models.split(","):
            ours = load_json(f"{out}/{model}_{p}.json")
            ref = load_json(f"{out}/torch_{model}_{p}.safetensors.json")
            for label, rep, stem in ((f"ours {model} {p}", ours, f"{model}_{p}"),
                                     (f"PyTorch {model} {p}", ref, f"torch_{model}_{p}")):
                if rep is None:
                    print(f"{label:<20}{'(no report: the run failed or was skipped)':>50}")
                    continue
                g = load_json(f"{out}/{stem}.gpu") or {}
                whole = seconds(f"{out}/{stem}.seconds")
                print(f"{label:<20}{rep['compute_tokens_per_second']:>14,.0f}"
                      f"{rep['compute_seconds']:>10.2f}{whole:>10.1f}"
                      f"{whole - rep['compute_seconds']:>8.1f}"
                      f"{g.get('gpu_busy_percent', float('nan')):>9.1f}%"
                      f"{g.get('gpu_memory_peak_mib', 0):>10d}")
            name = f"throughput-{model}-{p}"
            if not (ours and ref):
                # Its failure or skip is a line of its own in kit.sh's summary.
                verdicts.append(f"SKIP {name}: {'ours' if not ours else 'PyTorch'} has no report")
                continue
            ratio = ours["compute_tokens_per_second"] / ref["compute_tokens_per_second"]
            cos = min_cosine(f"{out}/{model}_{p}.safetensors",
                             f"{out}/torch_{model}_{p}.safetensors")
            floor = MIN_COSINE.get(p, 0.999)
            ok = cos is not None and cos >= floor
            cos_text = "rows differ or missing" if cos is None else f"{cos:.6f}"
            note = f" [{a.layers_note}]" if model == "esm" and a.layers_note else ""
            verdicts.append(
                f"{'PASS' if ok else 'FAIL'} {name}: ours {ours['compute_tokens_per_second']:,.0f} "
                f"vs PyTorch {ref['compute_tokens_per_second']:,.0f} compute tokens/s = "
                f"{ratio:.2f}x ({ours['tokens']:,} tokens, {ours['sequences']:,} sequences, "
                f"budget {ours['batch_tokens']} tokens); whole process "
                f"{seconds(f'{out}/{model}_{p}.seconds'):.1f} s vs "
                f"{seconds(f'{out}/torch_{model}_{p}.seconds'):.1f} s; "
                f"min row cosine {cos_text} (>= {floor}){note}")
    print()
    for v in verdicts:
        print(v)
    sys.exit(1 if any(v.startswith("FAIL") for v in verdicts) else 0)


if __name__ == "__main__":
    main()
