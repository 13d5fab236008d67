#!/usr/bin/env bash
# Benchmark: ESM-2 on the CPU at the real model shapes, side by side in one run (issues 17, 29):
#   8M (6 layers, 320 hidden, 20 heads), 35M (12, 480, 20), 150M (30, 640, 20),
#   650M (33, 1280, 20) on the first 40 proteins (PROTEINS_650M=N for another number; all 189
#   take ~45 min there, most of it the PyTorch and esm.cpp FP32 runs) and, only when asked
#   for, 3B (36, 2560, 40) on the first 12 proteins (PROTEINS_3B=N for another number);
# on the protein ORFs of sop7.fa after `translate --chunk-size 500`, each shape with
#   (a) fair-esm 2.0.0 as the original VirNucPro runs it (batches of (max_len + 1) x count <=
#       2048 tokens, the last layer's mean over residues; bench/esm_cpu.py fair-esm, checked
#       first on the tiny fixture's goldens);
#   (b) transformers EsmModel with SDPA attention, f32, length-sorted 2048-token batches
#       (gpu/torch_baseline.py --device cpu, checked first on the tiny fixture's goldens);
#   (c) ours f32: `virnucpro embed-protein --device cpu` (release build; default batches: at
#       most 2048 tokens, fewer to fit the L3 cache, see embed/batching.rs `cpu_budget`); at 3B
#       the faster of RUNS_3B=2 runs;
#   (d) ours reduced precision: the same with `--precision bf16` and with `--precision int8`
#       (W8A8), each where the binary and CPU compute in it (AMX-BF16, AMX-INT8; probed first
#       on the tiny fixture: a binary that refuses it, or whose --report says it ran another
#       precision, skips that column with a one-line note);
#   (e) esm.cpp 0.2.1 (PyPI esm-cpp: its own AVX-512/VNNI/AMX kernels) in FP32 and (f) in its
#       ahead-of-time W8A8 INT8 (SmoothQuant calibrated on CALIB_PROTEINS=32 protein ORFs of
#       sop7.fa's chunk-300 translation, fragments the timed set does not contain; alpha 0.5),
#       one sequence a call (its only call that returns hidden states; bench/esm_cpu.py
#       esm-cpp, the FP32 path checked first on the tiny fixture's goldens); skipped with a
#       note without esm-cpp (`pip install esm-cpp==0.2.1`); it picks its best kernels for the
#       CPU, and ESM_FORCE_ISA=avx512vnni (its own variable) makes it run without AMX, as on a
#       CPU with AVX-512 VNNI only (the report names the kernels it ran);
# all at THREADS threads (torch.set_num_threads for (a) and (b); --threads, i.e. workers, for
# ours; ESM_NUM_THREADS for esm.cpp) and on the same random weights: gpu/make_models.py's
# tensors at the shape (what transformers reads), written by esm_cpu.py as a fair-esm
# checkpoint `esm2.pt` (what fair-esm and ours read) and as `esmcpp.safetensors` (the same HF
# tensors plus the rotary inv_freq and masked-LM head tensors esm.cpp's loader needs).
# Prints tokens/s (tokens with <cls> and <eos>), useful GFLOP/s, ours f32 / the faster PyTorch
# path, ours bf16 and ours int8 / esm.cpp INT8, the max abs difference of the f32 mean
# embeddings between each pair, and the cosine (min over proteins and mean) and max abs
# difference of ours bf16, ours int8 and esm.cpp (FP32: the same pooled embedding; INT8: its
# accuracy) against ours f32.
# The PyTorch and esm.cpp timings exclude model loading (and esm.cpp's calibration and
# quantisation) and one small untimed warm-up; ours is the embedding engine's compute time
# (--report's compute_seconds: model loading, tokenising and writing excluded, no warm-up), and
# the whole step's time is printed beside it.
# Prints the CPU (model, vector ISA, the gemm crate's kernels: bench/cpu_info.sh) and the
# machine's f32 GEMM rate measured two ways, 2560x2560 by 2560x2560 at THREADS threads (2 n^3
# FLOPs; what each library attains on these cores, not the datasheet peak): torch.mm (PyTorch's
# BLAS) and gemm_rate.rs (the `gemm` crate as the CPU backend builds it). The 3B shape's useful
# GFLOP/s is printed as a share of the higher of the two.
# Usage: bench/esm_cpu.sh [THREADS] [SHAPE...]
#   THREADS default 2; SHAPEs from 8M 35M 150M 650M 3B (default: 8M 35M 150M 650M; 3B writes
#   ~12 GB of weights three times, needs ~15 GB of memory). WORK=dir keeps the models for
#   reruns. ESMCPP_PACKED=1 also times esm.cpp's packed forward_scheduled (logits only).
#   needs python3 with torch, numpy, safetensors, tokenizers, transformers and fair-esm==2.0.0
#   (`pip install transformers fair-esm==2.0.0`); esm-cpp==0.2.1 for (e) and (f).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
shift || true
shapes=("$@")
if [ ${#shapes[@]} -eq 0 ]; then shapes=(8M 35M 150M 650M); fi
sop7=${SOP7:-bench/data/sop7.fa}  # any FASTA of real sequences; default: the shipped sample
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
fixture=tests/fixtures/esm2_tiny/cases.json
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ beside the helpers

# shellcheck source=bench/cpu_info.sh
. bench/cpu_info.sh
cargo build --release --quiet
bin=target/release/virnucpro
"$bin" -q translate "$sop7" --chunk-size 500 --outdir "$work/t"
all="$work/t/identified_protein.faa"
awk -v max="${PROTEINS_3B:-12}" '/^>/ { n++ } n <= max' "$all" > "$work/t/first_3b.faa"
awk -v max="${PROTEINS_650M:-40}" '/^>/ { n++ } n <= max' "$all" > "$work/t/first_650m.faa"
"$bin" -q translate "$sop7" --chunk-size 300 --outdir "$work/t300"
awk -v max="${CALIB_PROTEINS:-32}" '/^>/ { n++ } n <= max' "$work/t300/identified_protein.faa" \
  > "$work/t300/calib.faa"
echo "input: $(grep -c '>' "$all") protein ORFs of sop7.fa (chunk 500); $threads threads;" \
  "$(date -u '+%F %H:%M UTC'); torch $(python3 -c 'import torch; print(torch.__version__)')"
cpu_info
vector_rates
gemm_rates "$threads"

# Ours in bf16 and in int8 on the CPU, where this binary and CPU have them: each probed on the
# tiny fixture first (the report says what computed).
printf '>probe\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n' > "$work/probe.faa"
reduced=()
for p in bf16 int8; do
  rm -f "$work/probe.safetensors" "$work/probe.safetensors.json"
  if probe=$("$bin" -q embed-protein "$work/probe.faa" -m tests/fixtures/esm2_tiny \
    -o "$work/probe.safetensors" --device cpu --precision "$p" \
    --report "$work/probe.safetensors.json" 2>&1); then
    ran=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["precision"])' \
      "$work/probe.safetensors.json")
    if [ "$ran" = "$p" ]; then
      reduced+=("$p")
      echo "ours $p: this binary computes in $p on this CPU (--report: precision $ran)"
    else
      echo "ours $p: skipped, this binary runs --precision $p on this CPU as $ran"
    fi
  else
    echo "ours $p: skipped, this binary refuses --precision $p on the CPU:" \
      "$(echo "$probe" | grep -m1 'error' || echo "$probe" | tail -n1)"
  fi
done
esmcpp=""
if python3 -c "import esm_cpp" 2>/dev/null; then
  esmcpp=1
  echo "esm.cpp $(python3 -c 'import esm_cpp as e; print(e.__version__, "kernels:", e.current_isa(), "(host best:", e.host_isa() + ")")')"
else
  echo "esm.cpp: skipped (pip install esm-cpp==0.2.1)"
fi
summary="$work/summary.tsv"
: > "$summary"

checked=""
for shape in "${shapes[@]}"; do
  case $shape in
    8M) layers=6 dim=320 heads=20 ;;
    35M) layers=12 dim=480 heads=20 ;;
    150M) layers=30 dim=640 heads=20 ;;
    650M) layers=33 dim=1280 heads=20 ;;
    3B) layers=36 dim=2560 heads=40 ;;
    *) echo "unknown shape $shape (8M 35M 150M 650M 3B)" >&2; exit 2 ;;
  esac
  orfs=$all
  if [ "$shape" = 3B ]; then orfs="$work/t/first_3b.faa"; fi
  if [ "$shape" = 650M ]; then orfs="$work/t/first_650m.faa"; fi
  dir="$work/$shape"
  mkdir -p "$dir"
  if [ ! -f "$dir/esm2.pt" ]; then
    python3 bench/esm_cpu.py weights "$dir" --layers "$layers" --dim "$dim" --heads "$heads" >/dev/null
  fi
  if [ -n "$esmcpp" ] && [ ! -f "$dir/esmcpp.safetensors" ]; then
    python3 bench/esm_cpu.py esm-cpp-weights "$dir/esm2_3B_random" "$dir/esmcpp.safetensors" >/dev/null
  fi
  # Only this run's outputs are compared: the optional ones of an earlier run go.
  rm -f "$dir"/{ours_bf16,ours_int8,esmcpp_fp32,esmcpp_int8}.safetensors{,.json}
  echo "ESM-2 $shape ($layers layers, $dim hidden, $heads heads): $(grep -c '>' "$orfs") proteins"
  check=()
  if [ -z "$checked" ]; then check=(--check "$fixture"); checked=1; fi
  python3 bench/esm_cpu.py fair-esm "$dir/esm2.pt" "$orfs" "$dir/fair.safetensors" \
    --threads "$threads" "${check[@]}"
  python3 bench/gpu/torch_baseline.py esm "$dir/esm2_3B_random" "$orfs" "$dir/hf.safetensors" \
    --dtype f32 --device cpu --batch-tokens 2048 --threads "$threads" --warmup 4 \
    "${check[@]}" | { grep -v '^{' || true; }
  # At 3B, the faster of RUNS_3B runs (default 2): the GEMM rate it is compared with is a best
  # of 5, and one ~30 s run on a shared machine catches other tenants' load (66.8 vs 69.9
  # tokens/s for the same build on 2026-11-30).
  runs=1
  if [ "$shape" = 3B ]; then runs=${RUNS_3B:-2}; fi
  for ((run = 1; run <= runs; run++)); do
    rm -f "$dir/ours.try.safetensors" "$dir/ours.try.safetensors.json"
    "$bin" -q embed-protein "$orfs" -m "$dir/esm2.pt" -o "$dir/ours.try.safetensors" \
      --device cpu --threads "$threads" --report "$dir/ours.try.safetensors.json"
    if [ "$run" = 1 ] || python3 -c 'import json, sys
rate = lambda f: json.load(open(f))["compute_tokens_per_second"]
sys.exit(0 if rate(sys.argv[1]) > rate(sys.argv[2]) else 1)' \
      "$dir/ours.try.safetensors.json" "$dir/ours.safetensors.json"; then
      mv "$dir/ours.try.safetensors" "$dir/ours.safetensors"
      mv "$dir/ours.try.safetensors.json" "$dir/ours.safetensors.json"
    fi
  done
  rm -f "$dir/ours.try.safetensors" "$dir/ours.try.safetensors.json"
  for p in "${reduced[@]}"; do
    "$bin" -q embed-protein "$orfs" -m "$dir/esm2.pt" -o "$dir/ours_$p.safetensors" \
      --device cpu --precision "$p" --threads "$threads" --report "$dir/ours_$p.safetensors.json"
  done
  if [ -n "$esmcpp" ]; then
    packed=()
    if [ "${ESMCPP_PACKED:-0}" = 1 ]; then packed=(--packed); fi
    python3 bench/esm_cpu.py esm-cpp "$dir/esmcpp.safetensors" "$orfs" \
      "$dir/esmcpp_fp32.safetensors" --threads "$threads" "${check[@]}" "${packed[@]}"
    python3 bench/esm_cpu.py esm-cpp "$dir/esmcpp.safetensors" "$orfs" \
      "$dir/esmcpp_int8.safetensors" --threads "$threads" --int8 --calib "$work/t300/calib.faa" \
      "${packed[@]}"
  fi
  gemm_arg=()
  if [ "$shape" = 3B ]; then gemm_arg=(--gemm "$gemm"); fi
  python3 bench/esm_cpu.py compare "$dir" "$orfs" "$shape" "$layers" "$dim" "${gemm_arg[@]}" \
    --summary "$summary"
done

echo
echo "summary (tokens/s; $threads threads; $(cpu_model); f32 GEMM $gemm GFLOP/s: torch.mm" \
  "$torch_gemm, the gemm crate $ours_gemm):"
{
  printf 'shape\tfair-esm\ttransformers\tours f32\tours bf16\tours int8\tesm.cpp FP32'
  printf '\tesm.cpp INT8\tours f32/faster PyTorch\tours bf16/esm.cpp INT8\tours int8/esm.cpp INT8'
  printf '\tf32 max abs diff\tesm.cpp FP32 vs ours\tours bf16 vs ours f32\tours int8 vs ours f32'
  printf '\tesm.cpp INT8 vs ours f32\tours/GEMM\n'
  cat "$summary"
} | column -t -s $'\t'
echo "(f32 max abs diff: the largest between fair-esm, transformers and ours f32; esm.cpp FP32"
echo " vs ours: max abs diff; 'vs ours f32': cosine min over proteins / mean / max abs diff;"
echo " '-': not run, see the notes above)"
