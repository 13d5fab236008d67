#!/usr/bin/env bash
# Benchmark: the embedding engine on the CPU, side by side in one run: ESM-2 at the esm2_t12_35M
# shape (12 layers, 480 hidden, 20 heads; random weights, as real ones cannot be fetched here)
# on the protein ORFs of sop7.fa after `translate --chunk-size 500`:
#   (a) 1 worker;  (b) N workers on one shared queue;  (c) N workers saving a checkpoint after
#   every batch (--checkpoint-secs 0, the worst case of the resume machinery).
# Prints the CPU it ran on (bench/cpu_info.sh), sequences/s and tokens/s of each (the whole
# step, loading and writing included, and the embedding alone: --report's compute_seconds) and
# checks the three outputs are byte-identical.
# Usage: bench/embed_engine.sh [WORKERS]   (needs python3 with numpy, safetensors; WORK=dir
#        keeps the model for reruns)
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-2}
sop7=${SOP7:-bench/data/sop7.fa}  # any FASTA of real sequences; default: the shipped sample
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"

# shellcheck source=bench/cpu_info.sh
. bench/cpu_info.sh
cargo build --release --quiet
bin=target/release/virnucpro
model="$work/esm2_3B_random"   # make_models.py's directory name; the shape is set below
if [ ! -f "$model/model.safetensors" ]; then
  python3 bench/gpu/make_models.py "$work" --skip-dna \
    --esm-layers 12 --esm-dim 480 --esm-heads 20 --dtype float32 >/dev/null
fi
"$bin" -q translate "$sop7" --chunk-size 500 --outdir "$work/t"
orfs="$work/t/identified_protein.faa"
echo "input: $(grep -c '>' "$orfs") protein ORFs of sop7.fa (chunk 500); $(date -u '+%F %H:%M UTC')"
cpu_info

run() { # label, output, extra args...
  local label=$1 out=$2
  shift 2
  "$bin" -q embed-protein "$orfs" -m "$model" -o "$out" --device cpu --report "$out.json" "$@"
  python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print('%-44s %7.2f sequences/s %8.0f tokens/s (%d seqs, %.1f s, peak RSS %.0f MiB); embedding alone %8.0f tokens/s'%(sys.argv[2],d['sequences_per_second'],d['tokens_per_second'],d['sequences'],d['wall_seconds'],d['peak_rss_mb'],d['compute_tokens_per_second']))" "$out.json" "$label"
}
run "1 worker" "$work/one.safetensors" --threads 1
run "$workers workers, shared queue" "$work/many.safetensors" --threads "$workers"
run "$workers workers, checkpoint after every batch" "$work/ckpt.safetensors" --threads "$workers" --checkpoint-secs 0
cmp "$work/one.safetensors" "$work/many.safetensors"
cmp "$work/one.safetensors" "$work/ckpt.safetensors"
echo "outputs byte-identical"
