#!/usr/bin/env python3
"""The FASTA inputs of the GPU kit (bench/gpu/kit.sh), each deterministic (seeded), plain Python.

  make_inputs.py protein ORFS.faa OUT.faa [--orfs N]
      mixed-length proteins: random residues at L = 1024, 1023, 512, 511, 128, 127 tokens
      (residues + 2: the tile edges of the 3B shape's attention and matmuls), 702 and 35 tokens,
      then the first N ORFs of ORFS.faa (`virnucpro translate` output: real lengths).
  make_inputs.py dna ORFS.fa OUT.fa [--orfs N]
      random DNA of 500, 499, 250 and 60 bp (chunk-500's longest and a few shorter), then the
      first N nucleotide ORFs of ORFS.fa.
  make_inputs.py oom OUT.faa [--n 2000] [--residues 1022]
      N random proteins of that many residues (the OOM probe's over-budget batch).
  make_inputs.py copies IN.fa N OUT.fa
      IN repeated N times with distinct ids (c<k>_<id>), for throughput runs.
  make_inputs.py every IN.fa K OUT.fa
      every K-th record of IN (a warm-up input with the same spread of lengths).
"""
import argparse
import random

AA = "ACDEFGHIKLMNPQRSTVWY"


def records(path):
    """(header line without '>', sequence text with newlines) of every record."""
    text = open(path).read()
    for chunk in text.split(">")[1:]:
        head, _, body = chunk.partition("\n")
        yield head, body


def write(out, recs):
    with open(out, "w") as o:
        for head, body in recs:
            o.write(">" + head + "\n" + body.strip() + "\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("protein")
    p.add_argument("orfs")
    p.add_argument("out")
    p.add_argument("--orfs", dest="n", type=int, default=56)
    d = sub.add_parser("dna")
    d.add_argument("orfs")
    d.add_argument("out")
    d.add_argument("--orfs", dest="n", type=int, default=300)
    m = sub.add_parser("oom")
    m.add_argument("out")
    m.add_argument("--n", type=int, default=2000)
    m.add_argument("--residues", type=int, default=1022)
    c = sub.add_parser("copies")
    c.add_argument("input")
    c.add_argument("n", type=int)
    c.add_argument("out")
    e = sub.add_parser("every")
    e.add_argument("input")
    e.add_argument("k", type=int)
    e.add_argument("out")
    a = ap.parse_args()

    r = random.Random(7)
    if a.cmd == "protein":
        recs = []
        for tokens in (1024, 1023, 512, 511, 128, 127, 702, 35):
            n = tokens - 2
            recs.append(("len%d" % tokens, "".join(r.choice(AA) for _ in range(n))))
        recs += list(records(a.orfs))[: a.n]
        write(a.out, recs)
    elif a.cmd == "dna":
        recs = [("dna%d" % n, "".join(r.choice("ACGT") for _ in range(n)))
                for n in (500, 499, 250, 60)]
        recs += list(records(a.orfs))[: a.n]
        write(a.out, recs)
    elif a.cmd == "oom":
        write(a.out, [("oom%d" % i, "".join(r.choice(AA) for _ in range(a.residues)))
                      for i in range(a.n)])
    elif a.cmd == "copies":
        recs = list(records(a.input))
        write(a.out, [("c%d_%s" % (k, h), b) for k in range(a.n) for h, b in recs])
    elif a.cmd == "every":
        write(a.out, list(records(a.input))[:: a.k])


if __name__ == "__main__":
    main()
