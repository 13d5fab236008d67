#!/usr/bin/env bash
# Benchmark: `virnucpro predict` on a large sample: N synthetic ORFs at the real widths
# (768-d DNA + 2560-d protein, ≈ 13 kB per ORF) in 4 shard pairs, classified with the
# 3328x512 MLP fixture. Samples the process's memory every 50 ms and reports the peak
# resident set split into anonymous memory (the process's own) and file pages (the mapped
# embeddings, in the page cache: the kernel can drop and re-read them under pressure), beside
# the size of the embeddings.
# Prints the CPU it ran on (bench/cpu_info.sh).
# Usage: bench/predict_memory.sh [N_ORFS]   (default 100000; needs python3 with numpy)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
work=${WORK:-$(mktemp -d)}
# shellcheck source=bench/cpu_info.sh
. bench/cpu_info.sh
cargo build --release --quiet
bin=target/release/virnucpro
[ -f "$work/emb/dna.00000.safetensors" ] || python3 bench/make_embeddings.py "$work/emb" "$n" --shards 4
size=$(du -cm "$work"/emb/*.safetensors | tail -1 | cut -f1)
echo "input: $n ORFs, ${size} MiB of embeddings in 4 shard pairs; $(date -u '+%F %H:%M UTC')"
cpu_info
start=$(date +%s.%N)
"$bin" -q predict --dna "$work"/emb/dna.*.safetensors --protein "$work"/emb/protein.*.safetensors \
  --classifier tests/fixtures/mlp_3328x512.pth -o "$work/out" &
pid=$!
peak_rss=0 peak_anon=0
while kill -0 "$pid" 2>/dev/null; do
  if read -r rss anon < <(awk '/^VmRSS/{r=$2} /^RssAnon/{a=$2} END{print r+0, a+0}' "/proc/$pid/status" 2>/dev/null); then
    [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
    [ "$anon" -gt "$peak_anon" ] && peak_anon=$anon
  fi
  sleep 0.05
done
wait "$pid"
end=$(date +%s.%N)
echo "predict: $(awk -v s="$start" -v e="$end" 'BEGIN{printf "%.1f", e-s}') s;" \
  "peak RSS $((peak_rss / 1024)) MiB, of it anonymous (own memory) $((peak_anon / 1024)) MiB"
echo "tables: $(($(wc -l < "$work/out/prediction_results.txt") - 1)) ORFs scored"
