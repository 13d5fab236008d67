#!/usr/bin/env bash
# Benchmark: `virnucpro embed-dna` at the real DNABERT-S shape (the real config.json and its
# 4096-token BPE tokenizer from tests/fixtures/real_model_files: 768 hidden, 12 layers, 12 heads,
# 3072 intermediate; random weights, since the real ones cannot be fetched here) on the
# nucleotide ORFs of sop7.fa after `translate --chunk-size 500`, side by side in one run:
#   (a) the original's method in PyTorch (reference/dnabert_s_original.py, checked first against
#       the tiny fixture's goldens): one sequence per forward pass, no padding, fp32;
#   (b) PyTorch batched, the fast PyTorch path: length-sorted 2048-token batches, padded, SDPA
#       attention with ALiBi + padding as the additive mask (gpu/torch_baseline.py dna --device
#       cpu, checked first against the tiny fixture's goldens);
#   (c) ours the original's way: one sequence per forward pass, one worker;
#   (d) ours: length-sorted batches of the default budget (at most 2048 tokens, fewer to fit
#       the L3 cache: embed/batching.rs `cpu_budget`), one worker per thread.
# PyTorch runs at THREADS intra-op threads; ours at THREADS single-threaded workers. All four
# must give the same numbers (max abs differences printed); the last line is (d) over the
# faster of (a) and (b), like for like: PyTorch's timings exclude model loading (and (b) a small
# untimed warm-up), and so does ours there (--report's compute_seconds); the lines above it
# give each of ours over its whole embed-dna step (loading and writing included).
# Prints the CPU (model, vector ISA, the gemm crate's kernels) and both libraries' f32 GEMM rate
# at THREADS threads (torch.mm and the gemm crate: bench/cpu_info.sh) before the figures.
# Usage: bench/embed_dna.sh [THREADS]
#   needs python3 with numpy, safetensors, tokenizers, torch (`pip install torch` from PyPI);
#   without torch, (a) and (b) are skipped with a note. WORK=dir keeps the model for reruns.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
sop7=${SOP7:-bench/data/sop7.fa}  # any FASTA of real sequences; default: the shipped sample
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"

# shellcheck source=bench/cpu_info.sh
. bench/cpu_info.sh
cargo build --release --quiet
bin=target/release/virnucpro
if [ ! -f "$work/dnabert_s_random/model.safetensors" ]; then
  python3 bench/gpu/make_models.py "$work" --skip-esm --dtype float32 >/dev/null
fi
"$bin" -q translate "$sop7" --chunk-size 500 --outdir "$work/t"
orfs="$work/t/identified_nucleotide.fa"
echo "input: $(grep -c '>' "$orfs") nucleotide ORFs of sop7.fa (chunk 500), $threads threads; $(date -u '+%F %H:%M UTC')"
cpu_info
vector_rates
gemm_rates "$threads"

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
  python3 bench/gpu/torch_baseline.py dna "$work/dnabert_s_random" "$orfs" "$work/torch_batched.safetensors" \
    --dtype f32 --device cpu --batch-tokens 2048 --threads "$threads" --warmup 4 \
    --check tests/fixtures/dnabert_s_tiny/cases.json | { grep -v '^{' || true; }
  report "$work/torch_batched.safetensors.json" "PyTorch batched (2048 tokens, SDPA), $threads threads"
else
  echo "(torch not installed: skipping the PyTorch runs)"
fi
run "ours, one sequence per pass, 1 worker" "$work/single.safetensors" --batch-tokens 1 --threads 1
run "ours, batched (default budget), $threads workers" "$work/batched.safetensors" --threads "$threads"
python3 - "$work" <<'PY'
import json
import os
import sys
import numpy as np
from safetensors.numpy import load_file
w = sys.argv[1]
single, batched = (load_file(f"{w}/{n}.safetensors")["embeddings"] for n in ("single", "batched"))
print(f"ours batched vs ours one-at-a-time: max abs diff {np.abs(batched - single).max():.2e} over {single.shape}")
best = 0.0
for name, label in (("torch", "the original's method"), ("torch_batched", "PyTorch batched")):
    if os.path.exists(f"{w}/{name}.safetensors"):
        ref = load_file(f"{w}/{name}.safetensors")["embeddings"]
        print(f"ours batched vs {label}: max abs diff {np.abs(batched - ref).max():.2e}")
        best = max(best, json.load(open(f"{w}/{name}.safetensors.json"))["tokens_per_second"])
if best:
    # PyTorch's timings exclude loading the model; so does ours here (compute_seconds).
    ours = json.load(open(f"{w}/batched.safetensors.json"))["compute_tokens_per_second"]
    print(f"ours batched (embedding only: {ours:.0f} tokens/s) / the faster PyTorch path: {ours / best:.2f}x")
PY
