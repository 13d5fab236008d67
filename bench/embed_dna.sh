#!/usr/bin/env bash
# Benchmark: `virnucpro embed-dna` at the real DNABERT-S shape (768 hidden, 12 layers, 12 heads,
# 3072 intermediate, vocab 4096; random weights, since the real ones cannot be fetched here) on
# the nucleotide ORFs of sop7.fa after `translate --chunk-size 500`, in one run:
#   (a) the original's method in PyTorch (reference/dnabert_s_original.py, checked first against
#       the tiny fixture's goldens): one sequence per forward pass, no padding, fp32, THREADS
#       intra-op threads;
#   (b) ours the original's way: one sequence per forward pass, one worker;
#   (c) ours: length-sorted token-budget batches, one worker per core.
# All three must give the same numbers (max abs difference printed).
# Usage: bench/embed_dna.sh [THREADS]
#   needs python3 with numpy, safetensors, tokenizers, torch (`pip install torch` from PyPI);
#   without torch, (a) is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
sop7=${SOP7:-bench/data/sop7.fa}  # any FASTA of real sequences; default: the shipped sample
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"

cargo build --release --quiet
bin=target/release/virnucpro
if [ ! -f "$work/dnabert_s_random/model.safetensors" ]; then
  python3 bench/gpu/make_models.py "$work" --fasta "$sop7" \
    --fixture-tokenizer tests/fixtures/dnabert_s_tiny/tokenizer.json --skip-esm --dtype float32
fi
"$bin" -q translate "$sop7" --chunk-size 500 --outdir "$work/t"
orfs="$work/t/identified_nucleotide.fa"
echo "input: $(grep -c '>' "$orfs") nucleotide ORFs of sop7.fa (chunk 500), $threads threads, $(nproc) cores"

report() {
  python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print('%-46s %7.2f sequences/s %8.0f tokens/s (%d seqs, %d tokens, %.1f s)'%(sys.argv[2],d['sequences_per_second'],d['tokens_per_second'],d['sequences'],d['tokens'],d['wall_seconds']))" "$1" "$2"
}
run() { # label, output, extra args...
  local label=$1 out=$2; shift 2
  /usr/bin/time -f "%M" -o "$work/rss" "$bin" -q embed-dna "$orfs" -m "$work/dnabert_s_random" -o "$out" --device cpu "$@" \
    --report "$out.json"
  report "$out.json" "$label"
  echo "    peak RSS $(( $(cat "$work/rss") / 1024 )) MiB"
}
if python3 -c "import torch" 2>/dev/null; then
  python3 bench/reference/dnabert_s_original.py "$work/dnabert_s_random" "$orfs" "$work/torch.safetensors" \
    --threads "$threads" --check tests/fixtures/dnabert_s_tiny/cases.json
  report "$work/torch.safetensors.json" "original's method, PyTorch fp32, $threads threads"
else
  echo "(torch not installed: skipping the PyTorch run of the original's method)"
fi
run "ours, one sequence per pass, 1 worker" "$work/single.safetensors" --batch-tokens 1 --threads 1
run "ours, batched (2048 tokens), $threads workers" "$work/batched.safetensors" --threads "$threads"
python3 - "$work" <<'PY'
import os
import sys
import numpy as np
from safetensors.numpy import load_file
w = sys.argv[1]
single, batched = (load_file(f"{w}/{n}.safetensors")["embeddings"] for n in ("single", "batched"))
print(f"ours batched vs ours one-at-a-time: max abs diff {np.abs(batched - single).max():.2e} over {single.shape}")
if os.path.exists(f"{w}/torch.safetensors"):
    ref = load_file(f"{w}/torch.safetensors")["embeddings"]
    print(f"ours batched vs PyTorch: max abs diff {np.abs(batched - ref).max():.2e}")
PY
