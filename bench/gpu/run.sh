#!/usr/bin/env bash
# The GPU session, run on the CUDA machine from the repository root with the `cuda` build at
# $BIN (default target/release/virnucpro). Usage: bench/gpu/run.sh parity|throughput OUTDIR
# parity: both tiny reference models on CUDA in f32 (max abs <= 1e-4 vs the goldens) and
#         f16/bf16 (cosine >= 0.999), for every fixture case.
# throughput: random-weight models at the real shapes on sop7's chunk-500 ORFs repeated
#         (COPIES=110: ~20,800 ORFs), ours beside PyTorch (torch_baseline.py) on the same input,
#         dtype and token budget, with GPU busy share and memory from nvidia-smi; summary.txt
#         has the table and the ratios, and the rows of both are compared (cosine).
set -uo pipefail
mode=$1
out=$2
bin=${BIN:-target/release/virnucpro}
mkdir -p "$out"
# NVRTC (cubecl compiles kernels at run time) from the CUDA toolkit or PyTorch's wheels.
for d in /usr/local/cuda/lib64 $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, q, "lib") for p in nvidia.__path__ for q in os.listdir(p)))' 2>/dev/null); do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
fail=0
case $mode in
parity)
  python3 bench/gpu/cases_fasta.py tests/fixtures/esm2_tiny/cases.json "$out/esm.faa"
  python3 bench/gpu/cases_fasta.py tests/fixtures/dnabert_s_tiny/cases.json "$out/dna.fa"
  for p in f32 f16 bf16; do
    tol=half; [ $p = f32 ] && tol=f32
    "$bin" embed-protein "$out/esm.faa" -m tests/fixtures/esm2_tiny -o "$out/esm_$p.safetensors" -d cuda -p $p -q || fail=1
    python3 bench/gpu/parity.py tests/fixtures/esm2_tiny/cases.json "$out/esm_$p.safetensors" $tol || fail=1
    "$bin" embed-dna "$out/dna.fa" -m tests/fixtures/dnabert_s_tiny -o "$out/dna_$p.safetensors" -d cuda -p $p -q || fail=1
    python3 bench/gpu/parity.py tests/fixtures/dnabert_s_tiny/cases.json "$out/dna_$p.safetensors" $tol || fail=1
  done
  # The whole pipeline on CUDA against the original's tables.
  "$bin" -q run tests/fixtures/e2e/input.fa -c 500 -o "$out/run500" -d cuda -p f32 \
    --dnabert tests/fixtures/dnabert_s_tiny --esm tests/fixtures/esm2_tiny --classifier tests/fixtures/mlp_tiny.pth || fail=1
  cmp "$out/run500/prediction_results_highestscore.csv" tests/fixtures/e2e/chunk500/prediction_results_highestscore.csv && echo "run on cuda: chunk calls identical to the original's" || fail=1
  ;;
throughput)
  models=${MODELS:-/tmp/models}
  [ -f "$models/esm2_3B_random/model.safetensors" ] || python3 bench/gpu/make_models.py "$models" --dtype float16
  copies=${COPIES:-110}
  python3 - "${SOP7:-data/sop7.fa}" "$copies" "$out/many.fa" <<'PY'
import sys
text = open(sys.argv[1]).read()
with open(sys.argv[3], "w") as o:
    for k in range(int(sys.argv[2])):
        o.write(text.replace(">", ">c%d_" % k))
PY
  "$bin" -q translate "$out/many.fa" -c 500 -o "$out/t"
  echo "ORFs: $(grep -c '>' "$out/t/identified_nucleotide.fa")"
  # Extra flags, split on spaces: DNA_ARGS="-b 16384".
  read -r -a dna_args <<< "${DNA_ARGS:-}"
  read -r -a esm_args <<< "${ESM_ARGS:-}"
  lines=${ESM_LINES:-0}  # 0 = every protein ORF
  if [ "$lines" -gt 0 ]; then head -n "$lines" "$out/t/identified_protein.faa" > "$out/prot.faa"
  else cp "$out/t/identified_protein.faa" "$out/prot.faa"; fi
  echo "protein ORFs: $(grep -c '>' "$out/prot.faa")"
  # measure NAME CMD...: runs CMD while nvidia-smi samples the GPU every 100 ms, then records
  # the mean utilisation (share of each sample period with a kernel running) and the peak
  # memory used into $out/NAME.gpu.
  measure() {
    local name=$1; shift
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 100 \
      > "$out/$name.smi" 2>/dev/null &
    local smi=$!
    "$@" || fail=1
    kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
    awk -F', *' '{u += $1; n++; if ($2 > m) m = $2} END {printf "{\"gpu_busy_percent\": %.1f, \"gpu_memory_peak_mib\": %d, \"samples\": %d}\n", n ? u / n : 0, m, n}' \
      "$out/$name.smi" > "$out/$name.gpu"
  }
  # Ours and PyTorch on the same input, dtype and padded-token budget, one after the other.
  # DEVICE=cpu with tiny models linked in MODELS and COPIES=1 PRECISIONS=f32 dry-runs this
  # section on a machine without a GPU (no nvidia-smi: 0 samples).
  device=${DEVICE:-cuda}
  budget_dna=${DNA_BUDGET:-65536}
  budget_esm=${ESM_BUDGET:-16384}
  read -r -a precisions <<< "${PRECISIONS:-bf16 f16}"
  for p in "${precisions[@]}"; do
    measure "dna_$p" "$bin" -q embed-dna "$out/t/identified_nucleotide.fa" -m "$models/dnabert_s_random" \
      -o "$out/dna_$p.safetensors" -d "$device" -p "$p" -b "$budget_dna" "${dna_args[@]}" --report "$out/dna_$p.json"
    measure "torch_dna_$p" python3 bench/gpu/torch_baseline.py dna "$models/dnabert_s_random" \
      "$out/t/identified_nucleotide.fa" "$out/torch_dna_$p.safetensors" --dtype "$p" --batch-tokens "$budget_dna" --device "$device" \
      --check tests/fixtures/dnabert_s_tiny/cases.json
    measure "esm_$p" "$bin" -q embed-protein "$out/prot.faa" -m "$models/esm2_3B_random" \
      -o "$out/esm_$p.safetensors" -d "$device" -p "$p" -b "$budget_esm" "${esm_args[@]}" --report "$out/esm_$p.json"
    measure "torch_esm_$p" python3 bench/gpu/torch_baseline.py esm "$models/esm2_3B_random" \
      "$out/prot.faa" "$out/torch_esm_$p.safetensors" --dtype "$p" --batch-tokens "$budget_esm" --device "$device" \
      --check tests/fixtures/esm2_tiny/cases.json
  done
  python3 bench/gpu/summary.py "$out" "${precisions[@]}" | tee "$out/summary.txt"
  ;;
esac
exit $fail
