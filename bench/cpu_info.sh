# shellcheck shell=bash
# Sourced by the CPU benchmarks (`. bench/cpu_info.sh` from the repository root), not run:
# every CPU figure is printed with the CPU it was measured on.
#   cpu_info            one line: the CPU model (/proc/cpuinfo's model name, with vendor, family
#                       and model numbers, which virtual machines' generic names hide), online
#                       cores, the vector ISA flags present (AVX2/FMA, AVX-512 and its VNNI/BF16/
#                       FP16 extensions, AMX), and which f32 kernels the `gemm` crate (Burn's CPU
#                       matrix product) runs here (bench/gemm_rate.rs --dispatch). The flags do
#                       not say how wide the FMA units are: AVX-512 runs at half width on some
#                       CPUs (AMD Zen 4), which only the measured GEMM rate shows.
#   vector_rates        one line: one core's rate of each multiply-add instruction the CPU
#                       kernels use, in multiply-adds per ns (bench/vector_rates.rs): f32 FMA on
#                       512- and 256-bit vectors (their ratio ~2 at full-width AVX-512, ~1 at half
#                       width), int8 VPDPBUSD (AVX-512 VNNI) and bf16 VDPBF16PS (AVX512_BF16).
#   gemm_rates THREADS  the f32 GEMM rate (2560x2560 by 2560x2560, THREADS threads, best of 5;
#                       2 n^3 FLOPs a product) of both libraries: torch.mm (PyTorch's BLAS;
#                       bench/esm_cpu.py gemm, skipped with a note without torch) and the gemm
#                       crate as the CPU backend builds it (bench/gemm_rate.rs). Sets torch_gemm,
#                       ours_gemm and gemm (the higher: the machine's) and prints one line.
# They build the gemm_rate and vector_rates examples if needed (cargo, release); without them
# cpu_info says the kernels are unknown and vector_rates says the rates are.

cpu_field() { # the first /proc/cpuinfo value of a field, or empty
  awk -F': *' -v f="$1" '$1 ~ "^" f "[ \t]*$" { print $2; exit }' /proc/cpuinfo 2>/dev/null
}

cpu_model() {
  local name vendor family model
  name=$(cpu_field "model name")
  if [ -z "$name" ] && command -v lscpu >/dev/null; then
    name=$(lscpu | awk -F': *' '/^Model name/ { print $2; exit }')
  fi
  vendor=$(cpu_field vendor_id)
  family=$(cpu_field "cpu family")
  model=$(cpu_field model)
  if [ -n "$vendor" ]; then
    echo "${name:-unknown CPU} ($vendor family $family model $model)"
  else
    echo "${name:-unknown CPU}"
  fi
}

cpu_isa() { # the vector ISA flags of interest that this CPU has, in a fixed order
  local flags have=() f
  flags=" $(cpu_field flags)$(cpu_field Features) "
  for f in avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 avx_vnni \
    amx_tile amx_bf16 amx_int8 asimd sve; do
    case $flags in *" $f "*) have+=("$f") ;; esac
  done
  if [ ${#have[@]} -eq 0 ]; then echo "none of avx2/avx512/amx/neon"; else echo "${have[*]}"; fi
}

gemm_rate_bin=target/release/examples/gemm_rate

build_gemm_rate() {
  cargo build --release --quiet --example gemm_rate
}

cpu_info() {
  local kernels="unknown (bench/gemm_rate.rs not built)"
  if build_gemm_rate 2>/dev/null; then kernels=$("$gemm_rate_bin" --dispatch); fi
  echo "CPU: $(cpu_model); $(nproc) cores online; vector ISA: $(cpu_isa);" \
    "the gemm crate's f32 kernels here: $kernels"
}

vector_rates_bin=target/release/examples/vector_rates

vector_rates() {
  local rates="unknown (bench/vector_rates.rs not built)"
  if cargo build --release --quiet --example vector_rates 2>/dev/null; then
    rates=$("$vector_rates_bin")
  fi
  echo "vector units (one core, multiply-adds per ns): $rates"
}

gemm_rates() {
  local threads=$1
  build_gemm_rate
  if python3 -c "import torch" 2>/dev/null; then
    torch_gemm=$(python3 bench/esm_cpu.py gemm --threads "$threads")
  else
    torch_gemm="-"
  fi
  ours_gemm=$("$gemm_rate_bin" 2560 "$threads")
  gemm=$(python3 -c "import sys; print(max(float(x) for x in sys.argv[1:] if x != '-'))" \
    "$torch_gemm" "$ours_gemm")
  echo "f32 GEMM rate (2560x2560, $threads threads, best of 5) on this CPU: torch.mm" \
    "${torch_gemm} GFLOP/s$([ "$torch_gemm" = - ] && echo ' (torch not installed)')," \
    "the gemm crate (ours) $ours_gemm GFLOP/s; the machine's: $gemm GFLOP/s"
}
