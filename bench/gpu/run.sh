#!/usr/bin/env bash
# The GPU session, run on the CUDA machine from the repository root with the `cuda` build at
# $BIN (default target/release/virnucpro). Usage: bench/gpu/run.sh all|check|parity|mixed|throughput OUTDIR
# all:    check, parity, mixed and throughput in one run: everything only a GPU can settle
#         (bench/gpu/README.md lists it); exit 0 only if every part passed.
# check:  toolkit headers, NVRTC and the driver, and `virnucpro devices` (its test kernel).
# parity: both tiny reference models on CUDA in f32 (max abs <= 1e-4 vs the goldens) and
#         f16/bf16 (cosine >= 0.999), for every fixture case, and `run` against the e2e goldens.
# mixed:  the ESM-2 3B shape (random weights) on mixed-length proteins (L = 1024, 1023, 128,
#         127 and sop7's ORFs): batched equals one at a time, and f32 agrees with PyTorch f32.
# throughput: random-weight models at the real shapes on sop7's chunk-500 ORFs repeated
#         (COPIES=110: ~20,800 ORFs), ours beside PyTorch (torch_baseline.py) on the same input,
#         dtype and token budget, with GPU busy share and memory from nvidia-smi; summary.txt
#         has the table and the ratios, and the rows of both are compared (cosine).
# GPU=N picks the GPU (default 0): both sides see only it (CUDA_VISIBLE_DEVICES) and nvidia-smi
# samples only it. Every timed command runs once untimed first (kernel compilation, autotune).
set -uo pipefail
mode=$1
out=$2
bin=${BIN:-target/release/virnucpro}
mkdir -p "$out"
gpu=${GPU:-0}
export GPU=$gpu
# One GPU for ours, PyTorch and nvidia-smi alike (numbered as nvidia-smi does, by PCI bus):
# inside this script it is device 0.
export CUDA_DEVICE_ORDER=PCI_BUS_ID
export CUDA_VISIBLE_DEVICES=$gpu
# Compiled kernels and autotune results persist between the warm-up and the timed run.
export VIRNUCPRO_KERNEL_CACHE=${VIRNUCPRO_KERNEL_CACHE:-$out/kernel-cache}
# NVRTC: the CUDA toolkit's (whose headers CubeCL compiles against) ahead of any in PyTorch's
# pip wheels, which may be another version than the headers.
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
wheel_libs=$(python3 -c 'import nvidia, os; print(":".join(os.path.join(p, q, "lib") for p in nvidia.__path__ for q in os.listdir(p)))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$CUDA_PATH/lib64${wheel_libs:+:$wheel_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fail=0

check() {
  local h missing=0
  for h in cuda_runtime.h cuda_fp16.h cuda_bf16.h mma.h cooperative_groups.h cuda/barrier cuda/pipeline; do
    [ -f "$CUDA_PATH/include/$h" ] || [ -f "$CUDA_PATH/include/cccl/$h" ] || { echo "check: missing $CUDA_PATH/include/$h"; missing=1; }
  done
  [ $missing = 0 ] && echo "check: toolkit headers in $CUDA_PATH/include"
  local nvrtc
  nvrtc=$(find "$CUDA_PATH/lib64/" -maxdepth 1 -name 'libnvrtc.so*' 2> /dev/null | sort | head -n 1)
  if [ -n "$nvrtc" ]; then echo "check: NVRTC $nvrtc"; else echo "check: no libnvrtc in $CUDA_PATH/lib64"; missing=1; fi
  nvidia-smi -i "$gpu" --query-gpu=name,driver_version,memory.total,compute_mode --format=csv,noheader \
    | tee "$out/gpu.txt" | awk -F', ' '{print "check: GPU " $0; split($2, v, "."); if (v[1] < 550) {print "check: driver " $2 " < 550: NVRTC 12.4 PTX will not load"; exit 1}}' || missing=1
  "$bin" devices | tee "$out/devices.txt"
  grep -q "test kernel: ok" "$out/devices.txt" || { echo "check: the test kernel did not run (see devices.txt)"; missing=1; }
  grep -q "^--device auto uses: cuda:0" "$out/devices.txt" || { echo "check: --device auto would not use CUDA"; missing=1; }
  [ $missing = 0 ] || fail=1
}

# mixed: batched vs alone at the 3B shape; f32 (TF32 in CubeCL's tensor-core matmuls) vs PyTorch.
mixed() {
  models=${MODELS:-/tmp/models}
  [ -f "$models/esm2_3B_random/model.safetensors" ] || python3 bench/gpu/make_models.py "$models" --dtype float16
  "$bin" -q translate "${SOP7:-data/sop7.fa}" -c 500 -o "$out/mixed_t" || fail=1
  python3 - "$out/mixed_t/identified_protein.faa" "$out/mixed.faa" <<'PY'
import random, sys
r = random.Random(7)
aa = "ACDEFGHIKLMNPQRSTVWY"
with open(sys.argv[2], "w") as o:
    # Residues = tokens - 2: L = 1024, 1023 (the tile edges at the 3B's shapes), 128, 127.
    for n in (1022, 1021, 1022, 126, 125, 126, 700, 33):
        o.write(">len%d_%d\n%s\n" % (n + 2, r.randrange(10**6), "".join(r.choice(aa) for _ in range(n))))
    lines = open(sys.argv[1]).read().split(">")[1:200]
    o.write("".join(">" + l for l in lines))
PY
  for p in f32 f16; do
    "$bin" -q embed-protein "$out/mixed.faa" -m "$models/esm2_3B_random" -o "$out/mixed_batched_$p.safetensors" -d cuda -p "$p" -b 16384 || fail=1
    "$bin" -q embed-protein "$out/mixed.faa" -m "$models/esm2_3B_random" -o "$out/mixed_alone_$p.safetensors" -d cuda -p "$p" -b 1 || fail=1
    python3 bench/gpu/compare_rows.py "$out/mixed_batched_$p.safetensors" "$out/mixed_alone_$p.safetensors" "batched vs alone $p" 0.99999 || fail=1
  done
  python3 bench/gpu/torch_baseline.py esm "$models/esm2_3B_random" "$out/mixed.faa" "$out/mixed_torch_f32.safetensors" --dtype f32 --batch-tokens 16384 || fail=1
  python3 bench/gpu/compare_rows.py "$out/mixed_batched_f32.safetensors" "$out/mixed_torch_f32.safetensors" "ours f32 vs PyTorch f32" 0.9999 || fail=1
  python3 bench/gpu/compare_rows.py "$out/mixed_batched_f16.safetensors" "$out/mixed_torch_f32.safetensors" "ours f16 vs PyTorch f32" 0.999 || fail=1
}

case $mode in
all)
  echo "== check"; check
  for part in parity mixed throughput; do
    echo "== $part"
    BIN=$bin bash "$0" "$part" "$out/$part" || fail=1
  done
  # The compiled kernels and autotune results of the runs above were kept.
  echo "kernel cache: $(find "$VIRNUCPRO_KERNEL_CACHE" -type f | wc -l) files, $(du -sh "$VIRNUCPRO_KERNEL_CACHE" | cut -f1)"
  [ $fail = 0 ] && echo "all: every GPU check passed" || echo "all: FAILED (see above)"
  ;;
check) check ;;
mixed) mixed ;;
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
    # Untimed first: kernel compilation and autotune are not what is compared.
    "$@" > /dev/null 2>&1 || true
    nvidia-smi -i "$gpu" --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 100 \
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
