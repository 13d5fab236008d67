#!/usr/bin/env python3
"""DNABERT-S token ids as transformers' AutoTokenizer gives them to the model: no padding, no
truncation. The real `tokenizer.json` of DNABERT-S pads and truncates every sequence to 2000
tokens (its "padding" and "truncation" sections); the `tokenizers` library applies them on
encode, so a baseline that used the file as is would run ~20x the tokens we do.

  dna_tokens.py TOKENIZER.json INPUT.fa   prints the token count with and without the file's
                                          padding (the proof that the baseline's count is ours)
Needs tokenizers.
"""
import sys

from tokenizers import Tokenizer


def dna_tokenizer(path):
    """The tokenizer at `path` with the file's fixed padding and truncation switched off."""
    tok = Tokenizer.from_file(path)
    tok.no_padding()
    tok.no_truncation()
    return tok


def read_fasta(path):
    seqs, cur = [], None
    for line in open(path):
        line = line.strip()
        if line.startswith(">"):
            cur = []
            seqs.append(cur)
        elif cur is not None:
            cur.append(line)
    return ["".join(s).upper() for s in seqs]


def main():
    path, fasta = sys.argv[1], sys.argv[2]
    seqs = read_fasta(fasta)
    as_file = Tokenizer.from_file(path)
    fixed = dna_tokenizer(path)
    padded = sum(len(as_file.encode(s).ids) for s in seqs)
    ids = [fixed.encode(s).ids for s in seqs]
    real = sum(map(len, ids))
    pad_id = as_file.token_to_id("[PAD]")
    assert all(pad_id not in t for t in ids), "padding left in the token ids"
    assert all(t[0] == as_file.token_to_id("[CLS]") and t[-1] == as_file.token_to_id("[SEP]")
               for t in ids), "[CLS]/[SEP] missing"
    print(f"{len(seqs)} sequences: {real} tokens without padding, {padded} with the file's "
          f"padding ({padded / max(real, 1):.1f}x)")


if __name__ == "__main__":
    main()
