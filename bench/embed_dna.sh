#!/usr/bin/env bash
# Benchmark: `virnucpro embed-dna` at the real DNABERT-S shape (768 hidden, 12 layers, 12 heads,
# 3072 intermediate, vocab 4096; random weights, since the real ones cannot be fetched here) on
# the nucleotide ORFs of sop7.fa after `translate --chunk-size 500`, in one run:
#   (a) the original's method: one sequence per forward pass (no padding), one worker;
#   (b) ours: length-sorted token-budget batches, one worker per core.
# The original PyTorch code measured on this 2-core machine does 3.7 sequences/s (≈369 tokens/s).
# Usage: bench/embed_dna.sh [THREADS]   (needs python3 with numpy, safetensors, tokenizers)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
sop7=${SOP7:-../shared/data/sop7.fa}
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
run "one sequence per pass, 1 worker (original's way)" "$work/single.safetensors" --batch-tokens 1 --threads 1
run "batched (2048 tokens), $threads workers" "$work/batched.safetensors" --threads "$threads"
python3 - "$work/single.safetensors" "$work/batched.safetensors" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
a, b = (load_file(p)["embeddings"] for p in sys.argv[1:3])
print(f"batched vs one-at-a-time: max abs diff {np.abs(a - b).max():.2e} over {a.shape}")
PY
