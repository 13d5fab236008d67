#!/usr/bin/env python3
"""Synthetic embeddings files in virnucpro's format, for predict benchmarks at scale.

  make_embeddings.py OUTDIR N_ORFS [--shards K] [--dna-dim 768] [--protein-dim 2560]

Writes OUTDIR/{dna,protein}.<k>.safetensors: K shard pairs of random f32 rows for ORF ids
`seq<i>_chunk_<c>F1` (10 chunks per sequence), with the metadata `predict` checks.
Needs numpy.
"""
import argparse
import json
import os
import struct

import numpy as np


def write(path, ids, rows, kind, model):
    meta = {"format": "virnucpro-embeddings/1", "ids": "\n".join(ids), "dim": str(rows.shape[1]),
            "kind": kind, "model": model, "pooling": "mean", "precision": "f32"}
    header = {"__metadata__": meta, "embeddings": {
        "dtype": "F32", "shape": list(rows.shape), "data_offsets": [0, rows.nbytes]}}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        f.write(rows.astype("<f4").tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("n", type=int)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--dna-dim", type=int, default=768)
    ap.add_argument("--protein-dim", type=int, default=2560)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = [f"seq{i // 10}_chunk_{i % 10 + 1}F1" for i in range(a.n)]
    per = -(-a.n // a.shards)
    for k in range(a.shards):
        part = ids[k * per:(k + 1) * per]
        for kind, dim, model in (("dna", a.dna_dim, "dnabert_synthetic"),
                                 ("protein", a.protein_dim, "esm2_synthetic")):
            rows = rng.standard_normal((len(part), dim), dtype=np.float32)
            write(os.path.join(a.outdir, f"{kind}.{k:05}.safetensors"), part, rows, kind, model)


if __name__ == "__main__":
    main()
