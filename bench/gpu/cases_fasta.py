#!/usr/bin/env python3
"""Write a fixture's cases.json sequences as FASTA (id = case id): cases_fasta.py CASES OUT"""
import json
import sys

with open(sys.argv[2], "w") as out:
    for c in json.load(open(sys.argv[1]))["cases"]:
        out.write(f">{c['id']}\n{c['sequence']}\n")
