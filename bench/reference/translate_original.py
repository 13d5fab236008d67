#!/usr/bin/env python3
"""The original VirNucPro chunk + six-frame ORF step, re-stated in plain Python (no Biopython)
from docs/method.md ("Chunking", "Six-frame translation and ORF filter"), for side-by-side
throughput measurement with `virnucpro translate`.

It does the same per-base work as the original (string slicing, dict codon lookups, str.upper,
per-frame translation of the whole frame), single-threaded, and writes the same two files.
Usage: translate_original.py INPUT.fa CHUNK OUTDIR
"""
import math
import sys
import time

CODE = {}
_bases = "TCAG"
_aas = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
for i, a in enumerate(_bases):
    for j, b in enumerate(_bases):
        for k, c in enumerate(_bases):
            CODE[a + b + c] = _aas[16 * i + 4 * j + k]
COMP = str.maketrans("ACGT", "TGCA")


def read_fasta(path):
    rid, parts = None, []
    with open(path) as fh:
        for line in fh:
            line = line.rstrip()
            if line.startswith(">"):
                if rid is not None:
                    yield rid, "".join(parts)
                rid, parts = line[1:].split()[0], []
            elif line:
                parts.append(line)
    if rid is not None:
        yield rid, "".join(parts)


def chunks(seq, c):
    n = math.ceil(len(seq) / c)
    r = n * c - len(seq)
    lower = r // n
    upper = lower + 1
    k = r - lower * (n - 1)
    shifts = ([upper] * k + [lower] * max(0, n - 1 - k) + [0])[:n]
    moved = 0
    for j, a in enumerate(range(0, len(seq), c)):
        yield j, seq[a - moved : a - moved + c]
        moved += shifts[j]


def translate(s):
    return "".join(CODE.get(s[i : i + 3], "") for i in range(0, len(s) - 2, 3))


def main():
    path, c, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    t0 = time.time()
    bases = 0
    with open(f"{outdir}/identified_nucleotide.fa", "w") as nt, open(f"{outdir}/identified_protein.faa", "w") as aa:
        for rid, seq in read_fasta(path):
            bases += len(seq)
            for j, chunk in chunks(seq, c):
                chunk = chunk.upper()
                rc = chunk.translate(COMP)[::-1]
                cid = f"{rid}_chunk_{j + 1}"
                for strand, s in (("F", chunk), ("R", rc)):
                    for f in range(3):
                        p = translate(s[f:])
                        if p and "*" not in p:
                            nt.write(f">{cid}{strand}{f + 1}\n{s[f : f + 1 + 3 * len(p)]}\n")
                            aa.write(f">{cid}{strand}{f + 1}\n{p}\n")
    dt = time.time() - t0
    print(f"original-python: {bases / 1e6:.2f} Mbp in {dt:.2f} s = {bases / 1e6 / dt:.2f} Mbp/s")


if __name__ == "__main__":
    main()
