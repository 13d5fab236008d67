#!/usr/bin/env bash
# The GPU kit: what a bare CUDA machine (no cargo, no network; python3 with torch, transformers,
# numpy, safetensors, tokenizers) needs to settle bench/gpu/README.md's questions in two short
# calls, prepared on a machine that builds. Run from anywhere; it works in the repository root.
#
#   bench/gpu/kit.sh build [KITDIR]
#       here: `cargo build --release --locked --features cuda` into target/kit (not
#       target/release), the binary stripped and xz-compressed into KITDIR (default
#       target/gpu-kit, git-ignored: the device tool carries it with `carry`), the mixed-length
#       inputs, their CPU goldens computed by that binary with `-d cpu`, and KITDIR/manifest.json
#       (sha256 of the binary and of the regenerated models, CUDA version of its cudarc
#       bindings, the glibc it needs). Fails when the repository tree plus the kit pass 60 MiB.
#       BIN=path packages that binary instead of building (a CI/dev shortcut: the CPU build
#       runs the dry run below; the real kit is the cuda build). PYTHON= a python3 with numpy
#       and safetensors (default python3); KIT_XZ=-1 compresses faster (default -9);
#       KIT_ESM_ORFS/KIT_DNA_ORFS (default 56/300) cap the ORFs behind the synthetic lengths
#       (CI's dry-run kit takes fewer: its goldens are computed, never compared).
#   bench/gpu/kit.sh device 1|2 OUTDIR [KITDIR] [--dry-run]
#       on the GPU machine, from the repository root: no build, no install, no network.
#       Part 1 (toolkit, parity, dtypes, batched = alone, 3B-shape goldens and PyTorch, run,
#       OOM split) and part 2 (throughput against PyTorch) each fit in PART_SECONDS (default
#       450 s): a check that would start too late is a SKIP line, never a killed call. Every
#       check writes one `PASS name: detail`, `FAIL name: detail` or `SKIP name: why` line to
#       OUTDIR/summary.txt (INFO lines are figures, never failures); OUTDIR gets only
#       summary.txt, log.txt (everything printed), reports.json (every JSON report) and
#       kernel-cache.tar.gz (when under 15 MiB). Exit 1 on any FAIL, else 2 on any SKIP,
#       else 0. Scratch files go to WORK (default target/gpu-work, kept while the machine is).
#       --dry-run (or DRY_RUN=1): without a GPU, runs everything up to the first CUDA call
#       (unpack, python modules, inputs, models and their sha256, toolkit files) and stops
#       there with one line saying what would run next; exit 0 unless that preparation failed.
#
# Environment (device): GPU=N (default 0; CUDA_VISIBLE_DEVICES for ours, PyTorch and
# nvidia-smi), CUDA_PATH (default: found), ESM_LAYERS (part 2's ESM-2 depth at the 3B's
# per-layer shape, default 6), COPIES (part 2: sop7's chunk-500 ORFs repeated, default 50),
# PRECISIONS (part 2, default "f16 bf16"), ESM_BUDGET/DNA_BUDGET (part 2 token budgets, default
# 16384/65536, the same for ours and PyTorch), PART_SECONDS.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

PYTHON=${PYTHON:-python3}
WORK=${WORK:-target/gpu-work}
SOP7=${SOP7:-bench/data/sop7.fa}
# The parity models: ESM-2 at the 3B's per-layer shape (hidden 2560, 40 heads, feed-forward
# 10240) with 2 layers, and DNABERT-S at its real shape; f16 weights (exact in f16 and f32).
PARITY_MODEL_ARGS=(--esm-layers 2 --esm-dim 2560 --esm-heads 40 --dtype float16)

die() {
  echo "kit: $*" >&2
  exit 1
}
usage() {
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
build() {
  local kit=${1:-target/gpu-kit}
  case $kit in /* | ..*) die "KITDIR must be a relative path inside the repository (the device tool carries it): $kit" ;; esac
  mkdir -p "$kit"
  git check-ignore -q "$kit" || die "$kit is not git-ignored: the device tool carries only ignored paths with carry"
  "$PYTHON" -c 'import numpy, safetensors' 2> /dev/null \
    || die "$PYTHON lacks numpy or safetensors (python3 -m venv target/kit-venv && target/kit-venv/bin/pip install numpy safetensors; then PYTHON=target/kit-venv/bin/python3)"
  local scratch=$WORK/build
  rm -rf "${kit:?}"/* "$scratch"
  mkdir -p "$kit/inputs" "$kit/goldens" "$scratch"
  local bin cuda_build cuda_version commit dirty
  # The tree the binary is built from (another session may commit while cargo runs).
  commit=$(git rev-parse HEAD)
  dirty=$(git status --porcelain --untracked-files=no | wc -l)
  if [ -n "${BIN:-}" ]; then
    bin=$BIN
    [ -x "$bin" ] || die "BIN=$bin is not an executable"
    cuda_build=false
    cuda_version="unknown (BIN shortcut: $bin packaged as it is)"
    echo "kit: BIN shortcut: packaging $bin as it is, no cargo build (CI/dev dry runs; the real kit is the cuda build)"
  else
    local target=${KIT_TARGET_DIR:-target/kit}
    # cubecl-cuda's build script reads CUDA_VERSION from its own (host) copy of cudarc, whose
    # features do not unify with ours: without nvcc both follow this variable, else cudarc
    # falls back to its newest bindings there while ours may be pinned (E0432 in cubecl-cuda).
    export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-12040}
    echo "kit: CARGO_TARGET_DIR=$target CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION cargo build --release --locked --features cuda"
    CARGO_TARGET_DIR=$target cargo build --release --locked --features cuda 2>&1 | tee "$scratch/cargo.log" | grep -v '^ *Compiling ' || true
    [ "${PIPESTATUS[0]}" = 0 ] || die "the cuda build failed (see $scratch/cargo.log)"
    bin=$target/release/virnucpro
    cuda_build=true
    # The bindings cudarc was built for: its build script's CUDA_MAJOR/MINOR_VERSION.
    cuda_version=$(grep -h 'CUDA_M[AI][JN]OR_VERSION' "$target"/release/build/cudarc-*/output 2> /dev/null \
      | sed 's/.*VERSION=//' | head -n 2 | paste -sd. -)
    [ -n "$cuda_version" ] || cuda_version="unknown (no cudarc build output under $target)"
  fi
  local version glibc
  version=$("$bin" --version) || die "$bin --version failed"
  glibc=$(objdump -T "$bin" 2> /dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
  echo "kit: $version, cudarc bindings for CUDA $cuda_version, needs glibc ${glibc:-?}"

  strip -o "$scratch/virnucpro" "$bin"
  local bin_sha bin_bytes
  bin_sha=$(sha "$scratch/virnucpro")
  bin_bytes=$(stat -c %s "$scratch/virnucpro")
  xz "${KIT_XZ:--9}" -T2 -c "$scratch/virnucpro" > "$kit/virnucpro.xz"
  awk -v a="$bin_bytes" -v b="$(stat -c %s "$kit/virnucpro.xz")" 'BEGIN {printf "kit: stripped binary %.1f MiB, xz %.1f MiB\n", a / 1048576, b / 1048576}'

  # Inputs: sop7's chunk-500 ORFs (translated by this binary) behind the tile-edge lengths.
  "$bin" -q translate "$SOP7" -c 500 -o "$scratch/t" || die "translate $SOP7 failed"
  "$PYTHON" bench/gpu/make_inputs.py protein "$scratch/t/identified_protein.faa" "$kit/inputs/esm_mixed.faa" --orfs "${KIT_ESM_ORFS:-56}"
  "$PYTHON" bench/gpu/make_inputs.py dna "$scratch/t/identified_nucleotide.fa" "$kit/inputs/dna_mixed.fa" --orfs "${KIT_DNA_ORFS:-300}"
  "$PYTHON" bench/gpu/make_models.py "$scratch/models" "${PARITY_MODEL_ARGS[@]}" > /dev/null || die "make_models.py failed"

  # The binary must reproduce the tiny fixtures' goldens on the CPU before its goldens count.
  local m
  for m in esm2_tiny dnabert_s_tiny; do
    local cmd=embed-protein ext=faa
    [ $m = dnabert_s_tiny ] && cmd=embed-dna ext=fa
    "$PYTHON" bench/gpu/cases_fasta.py "tests/fixtures/$m/cases.json" "$scratch/$m.$ext"
    "$bin" -q "$cmd" "$scratch/$m.$ext" -m "tests/fixtures/$m" -o "$scratch/$m.safetensors" -d cpu -p f32 \
      || die "$cmd on the CPU failed"
    echo -n "kit: $m on the CPU: "
    "$PYTHON" bench/gpu/parity.py "tests/fixtures/$m/cases.json" "$scratch/$m.safetensors" f32 \
      || die "this binary does not reproduce tests/fixtures/$m on the CPU"
  done
  local started=$SECONDS
  "$bin" -q embed-protein "$kit/inputs/esm_mixed.faa" -m "$scratch/models/esm2_3B_random" \
    -o "$kit/goldens/esm_mixed_cpu.safetensors" -d cpu -p f32 --report "$kit/goldens/esm_mixed_cpu.json" \
    || die "the ESM-2 golden failed"
  "$bin" -q embed-dna "$kit/inputs/dna_mixed.fa" -m "$scratch/models/dnabert_s_random" \
    -o "$kit/goldens/dna_mixed_cpu.safetensors" -d cpu -p f32 --report "$kit/goldens/dna_mixed_cpu.json" \
    || die "the DNABERT-S golden failed"
  echo "kit: CPU goldens in $((SECONDS - started)) s"

  "$PYTHON" - "$kit/manifest.json" "$version" "$cuda_build" "$cuda_version" "${glibc:-}" "$bin_sha" "$bin_bytes" \
    "$(sha "$scratch/models/esm2_3B_random/model.safetensors")" "$(sha "$scratch/models/dnabert_s_random/model.safetensors")" \
    "$commit" "$dirty" "${PARITY_MODEL_ARGS[*]}" "$kit" << 'PY'
import hashlib, json, os, sys, time
(out, version, cuda_build, cuda_version, glibc, bin_sha, bin_bytes, esm_sha, dna_sha, commit,
 dirty, model_args, kit) = sys.argv[1:]
files = {}
for root, _, names in os.walk(kit):
    for n in sorted(names):
        p = os.path.join(root, n)
        if os.path.abspath(p) != os.path.abspath(out):
            files[os.path.relpath(p, kit)] = {
                "bytes": os.path.getsize(p),
                "sha256": hashlib.sha256(open(p, "rb").read()).hexdigest()}
json.dump({
    "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "commit": commit, "uncommitted_tracked_changes_at_build": int(dirty),
    "binary": {"file": "virnucpro.xz", "version": version, "cuda_build": cuda_build == "true",
               "cudarc_cuda_version": cuda_version, "needs_glibc": glibc,
               "sha256": bin_sha, "bytes": int(bin_bytes)},
    "models": {"make_models_args": model_args.split(),
               "esm2_3B_random/model.safetensors": esm_sha,
               "dnabert_s_random/model.safetensors": dna_sha},
    "goldens": {
        "goldens/esm_mixed_cpu.safetensors": "inputs/esm_mixed.faa through esm2_3B_random, -d cpu -p f32",
        "goldens/dna_mixed_cpu.safetensors": "inputs/dna_mixed.fa through dnabert_s_random, -d cpu -p f32"},
    "files": files,
}, open(out, "w"), indent=1)
PY
  size_check "$kit"
}

# The device tool carries the tree (tracked and untracked-not-ignored files) and the carried
# paths, 64 MiB in all: fail past 60.
size_check() {
  local kit=$1 tree kitb
  tree=$({
    git ls-files -z --cached --exclude-standard
    git ls-files -z --others --exclude-standard
  } | xargs -0 stat -c %s 2> /dev/null | awk '{s += $1} END {print s + 0}')
  kitb=$(du -sb "$kit" | cut -f1)
  awk -v t="$tree" -v k="$kitb" -v d="$kit" 'BEGIN {
    total = (t + k) / 1048576
    printf "kit: size: tree %.1f MiB + %s %.1f MiB = %.1f MiB of the 64 MiB carried (limit here 60)\n", t / 1048576, d, k / 1048576, total
    exit total > 60 }' || die "the tree and the kit pass 60 MiB"
  ls -l "$kit" "$kit"/*/
}

# ---------------------------------------------------------------------------------------------
# device
# ---------------------------------------------------------------------------------------------
summary=""
dry=0
# REHEARSE=1 (a development aid, not a check): every step past the dry run's stop on the CPU
# (`-d cpu`, small OOM probe), to exercise this script without a GPU; CUDA-only lines fail.
dev=cuda
oom_n=2000
if [ "${REHEARSE:-0}" = 1 ]; then
  dev=cpu
  oom_n=${OOM_N:-8}
fi
part_start=$SECONDS
part_seconds=${PART_SECONDS:-450}

record() { # STATUS NAME DETAIL...
  local status=$1 name=$2
  shift 2
  echo "$status $name: $*" | tee -a "$summary"
}
left() { echo $((part_seconds - (SECONDS - part_start))); }
# need SECONDS NAME: true when that much of the part's time is left, else a SKIP line.
need() {
  if [ "$(left)" -lt "$1" ]; then
    record SKIP "$2" "needs ~$1 s, $(left) s of PART_SECONDS=$part_seconds left"
    return 1
  fi
}
# tmo CMD...: CMD, killed when the part's time is spent (exit 124).
tmo() {
  local t
  t=$(left)
  [ "$t" -gt 3 ] || return 124
  timeout -k 10 "$t" "$@"
}
# timed FILE CMD...: CMD, its wall seconds written to FILE.
timed() {
  local file=$1 t0 rc
  shift
  t0=$(date +%s.%N)
  "$@"
  rc=$?
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f\n", b - a}' > "$file"
  return $rc
}
# The first CUDA call: in a dry run, stop here.
gate() {
  if [ "$dry" = 1 ]; then
    echo "DRY RUN: stopping before the first CUDA call; next: $*"
    finish
  fi
  if [ "$dev" = cpu ]; then
    echo "REHEARSAL: going on with -d cpu where a GPU run would start: $*"
  fi
}

# Toolkit root, headers and NVRTC for CubeCL; sets cuda_root, ours_ld (LD_LIBRARY_PATH for our
# binary only: PyTorch keeps its own wheels' libraries) and records the findings.
find_toolkit() {
  local status=FAIL
  [ "$dry" = 1 ] && status=NOTE
  local roots=() r
  [ -n "${CUDA_PATH:-}" ] && roots+=("$CUDA_PATH")
  roots+=(/usr/local/cuda /usr/local/cuda-13* /usr/local/cuda-12* /opt/cuda)
  command -v nvcc > /dev/null && roots+=("$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")")
  local wheels
  wheels=$("$PYTHON" -c 'import nvidia, os; print("\n".join(os.path.join(p, q) for p in nvidia.__path__ for q in sorted(os.listdir(p))))' 2> /dev/null || true)
  cuda_root=""
  local headers=(cuda_runtime.h cuda_fp16.h cuda_bf16.h mma.h cooperative_groups.h cuda/barrier cuda/pipeline)
  missing_in() {
    local h out=""
    for h in "${headers[@]}"; do
      [ -f "$1/include/$h" ] || [ -f "$1/include/cccl/$h" ] || out+=" $h"
    done
    echo "$out"
  }
  for r in "${roots[@]}"; do
    [ -d "$r/include" ] || continue
    if [ -z "$(missing_in "$r")" ]; then
      cuda_root=$r
      break
    fi
  done
  if [ -z "$cuda_root" ] && [ -n "$wheels" ]; then
    # No full toolkit: a root of links to the pip wheels' include folders (first one wins).
    local fake=$WORK/cuda-root w e
    rm -rf "$fake"
    mkdir -p "$fake/include"
    while read -r w; do
      [ -d "$w/include" ] || continue
      for e in "$w/include"/*; do
        [ -e "$fake/include/$(basename "$e")" ] || ln -s "$(readlink -f "$e")" "$fake/include/$(basename "$e")"
      done
    done <<< "$wheels"
    if [ -z "$(missing_in "$fake")" ]; then cuda_root=$(readlink -f "$fake"); fi
  fi
  if [ -n "$cuda_root" ]; then
    record PASS toolkit-headers "all of ${headers[*]} under $cuda_root/include (or include/cccl)$(
      [ -f "$cuda_root/version.json" ] && "$PYTHON" -c 'import json,sys; print("; toolkit", json.load(open(sys.argv[1]))["cuda"]["version"])' "$cuda_root/version.json" 2> /dev/null)"
  else
    record "$status" toolkit-headers "no toolkit with every header CubeCL includes in ${roots[*]} or the pip wheels (${headers[*]}): $(for r in "${roots[@]}"; do [ -d "$r" ] && echo -n "$r lacks$(missing_in "$r"); "; done)(none of the others exists)"
  fi

  # NVRTC: cudarc (bindings for CUDA 12) opens libnvrtc.so, libnvrtc.so.12, ... but never
  # libnvrtc.so.13; when only a versioned library exists, a folder of links names it so.
  local dirs=() d lib=""
  [ -n "$cuda_root" ] && dirs+=("$cuda_root/lib64" "$cuda_root/lib" "$cuda_root/targets/x86_64-linux/lib")
  for r in "${roots[@]}"; do dirs+=("$r/lib64" "$r/targets/x86_64-linux/lib"); done
  while read -r w; do [ -n "$w" ] && dirs+=("$w/lib"); done <<< "$wheels"
  for d in "${dirs[@]}"; do
    lib=$(find "$d" -maxdepth 1 -name 'libnvrtc.so*' ! -name '*builtins*' 2> /dev/null | sort -V | tail -n 1)
    [ -n "$lib" ] && break
  done
  ours_ld=""
  if [ -z "$lib" ]; then
    lib=$(ldconfig -p 2> /dev/null | awk '/libnvrtc\.so/ && !/builtins/ {print $NF; exit}')
  fi
  if [ -z "$lib" ]; then
    record "$status" toolkit-nvrtc "no libnvrtc.so* in ${dirs[*]} nor the loader cache"
  else
    local libdir links=$WORK/lib-links
    libdir=$(dirname "$lib")
    rm -rf "$links"
    mkdir -p "$links"
    local names=() n
    for n in libnvrtc.so libnvrtc.so.12 libnvrtc.so.11 libnvrtc.so.13; do [ -e "$libdir/$n" ] && names+=("$n"); done
    local note="$lib"
    if [ ! -e "$libdir/libnvrtc.so" ] && [ ! -e "$libdir/libnvrtc.so.12" ]; then
      ln -s "$(readlink -f "$lib")" "$links/libnvrtc.so"
      note="$lib, linked as $links/libnvrtc.so (cudarc's CUDA-12 bindings never open libnvrtc.so.13)"
    fi
    # libcuda: the driver's; libcuda.so.1 is on cudarc's list, libcuda.so is made when missing.
    if ! ldconfig -p 2> /dev/null | grep -q 'libcuda\.so\.1 '; then
      local c
      c=$(find /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 -maxdepth 1 -name 'libcuda.so*' 2> /dev/null | sort -V | tail -n 1)
      [ -n "$c" ] && ln -s "$c" "$links/libcuda.so" && note+="; libcuda linked from $c"
    fi
    ours_ld="$(readlink -f "$links"):$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    record PASS toolkit-nvrtc "$note (found: ${names[*]:-none unversioned})"
  fi
}

setup_device() {
  local kit=$1
  mkdir -p "$WORK"
  [ -f "$kit/manifest.json" ] || {
    record FAIL kit "no $kit/manifest.json: run bench/gpu/kit.sh build on a machine with cargo, carry $kit"
    finish
  }
  bin=$WORK/virnucpro
  local want
  want=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["binary"]["sha256"])' "$kit/manifest.json")
  if [ ! -x "$bin" ] || [ "$(sha "$bin")" != "$want" ]; then
    if command -v xz > /dev/null; then
      xz -dc "$kit/virnucpro.xz" > "$bin.tmp"
    else
      "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$kit/virnucpro.xz" "$bin.tmp"
    fi
    chmod +x "$bin.tmp" && mv "$bin.tmp" "$bin"
  fi
  local got version glibc_here
  got=$(sha "$bin")
  glibc_here=$(ldd --version 2> /dev/null | head -n 1 | grep -o '[0-9.]*$')
  if [ "$got" != "$want" ]; then
    record FAIL kit-binary "sha256 $got, the manifest says $want"
    finish
  fi
  if ! version=$("$bin" --version 2>&1); then
    record FAIL kit-binary "it does not start here (glibc $glibc_here): $version"
    finish
  fi
  local cuda_build
  cuda_build=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["binary"]["cuda_build"])' "$kit/manifest.json")
  if [ "$cuda_build" != True ] && [ "$dry" = 0 ] && [ "$dev" = cuda ]; then
    record FAIL kit-binary "$version was packaged with BIN= (no cuda build): build the kit with bench/gpu/kit.sh build, without BIN"
    finish
  fi
  record PASS kit-binary "$version, sha256 as built; $("$PYTHON" -c 'import json,sys; b=json.load(open(sys.argv[1]))["binary"]; print("cuda build {cuda_build}, cudarc bindings CUDA {cudarc_cuda_version}, needs glibc {needs_glibc}".format(**b))' "$kit/manifest.json"), this machine glibc $glibc_here"

  # Python: the machine's own. numpy and safetensors are needed everywhere (inputs, models,
  # comparisons); torch, transformers and tokenizers on the GPU (a dry run only notes them).
  local mods
  mods=$("$PYTHON" - 2> /dev/null << 'PY'
import importlib
out, missing = [], []
for m in ("numpy", "safetensors", "torch", "transformers", "tokenizers"):
    try:
        out.append(f"{m} {importlib.import_module(m).__version__}")
    except Exception as e:
        missing.append(m)
        out.append(f"{m} MISSING ({type(e).__name__})")
try:
    import torch
    out.append(f"torch CUDA {torch.version.cuda}")
except Exception:
    pass
print("; ".join(out))
print("missing:" + ",".join(missing))
PY
  )
  local missing=${mods##*missing:}
  mods=${mods%$'\n'missing:*}
  case ",$missing," in
    *,numpy,* | *,safetensors,*) record FAIL python-modules "$mods"; finish ;;
  esac
  if [ -n "$missing" ] && [ "$dry" = 0 ] && [ "$dev" = cuda ]; then
    record FAIL python-modules "$mods"
    finish
  fi
  record PASS python-modules "$mods${missing:+ (not needed in a dry run or rehearsal: $missing)}"
  # One GPU for ours, PyTorch and nvidia-smi (numbered as nvidia-smi does, by PCI bus).
  gpu=${GPU:-0}
  export CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=$gpu
  cache=$(readlink -f "$WORK")/kernel-cache
  mkdir -p "$cache"
  if [ -z "$(ls -A "$cache")" ] && [ -f "$kit/kernel-cache.tar.gz" ]; then
    tar -xzf "$kit/kernel-cache.tar.gz" -C "$cache" && echo "kernel cache restored from $kit/kernel-cache.tar.gz"
  fi
  echo "kernel cache: $cache ($(find "$cache" -type f | wc -l) files)"
  find_toolkit
  ours=(env "LD_LIBRARY_PATH=$ours_ld" "CUDA_PATH=${cuda_root:-/usr/local/cuda}" "VIRNUCPRO_KERNEL_CACHE=$cache" "$bin")
}

# The parity models, regenerated (seeded) and checked against the kit's sha256.
parity_models() {
  local kit=$1 m want got stale=0
  models=$WORK/models
  goldens_ok=1
  want_sha() { "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["models"][sys.argv[2] + "/model.safetensors"])' "$kit/manifest.json" "$1"; }
  for m in esm2_3B_random dnabert_s_random; do
    if [ ! -f "$models/$m/model.safetensors" ] || [ "$(sha "$models/$m/model.safetensors")" != "$(want_sha "$m")" ]; then stale=1; fi
  done
  if [ $stale = 1 ]; then
    "$PYTHON" bench/gpu/make_models.py "$models" "${PARITY_MODEL_ARGS[@]}" > /dev/null || {
      record FAIL models "make_models.py failed"
      finish
    }
  fi
  for m in esm2_3B_random dnabert_s_random; do
    want=$(want_sha "$m")
    got=$(sha "$models/$m/model.safetensors")
    if [ "$got" = "$want" ]; then
      record PASS "models-$m" "regenerated byte-identical to the kit's (sha256 ${got:0:16}...)"
    else
      goldens_ok=0
      record FAIL "models-$m" "!!! regenerated weights differ from the kit's (sha256 $got, kit $want: another numpy?): the CPU goldens do not apply; comparing with PyTorch on the GPU only"
    fi
  done
}

finish() {
  # Compiled kernels and autotune results, for the next call (copied into the kit folder).
  if [ -n "${cache:-}" ] && [ -n "$(ls -A "$cache" 2> /dev/null)" ]; then
    tar -czf "$out/kernel-cache.tar.gz" -C "$cache" .
    local b
    b=$(stat -c %s "$out/kernel-cache.tar.gz")
    if [ "$b" -gt $((15 * 1048576)) ]; then
      rm -f "$out/kernel-cache.tar.gz"
      echo "kernel cache: $(find "$cache" -type f | wc -l) files, $((b / 1048576)) MiB compressed: too large to bring back"
    else
      echo "kernel cache: $(find "$cache" -type f | wc -l) files, $((b / 1024)) KiB in kernel-cache.tar.gz"
    fi
  fi
  [ -d "${work:-}" ] && "$PYTHON" bench/gpu/reports.py collect "$out/reports.json" "$work" > /dev/null 2>&1
  local p f s
  p=$(grep -c '^PASS ' "$summary")
  f=$(grep -c '^FAIL ' "$summary")
  s=$(grep -c '^SKIP ' "$summary")
  echo "== part $part$([ "$dry" = 1 ] && echo ' (dry run)'): $p passed, $f failed, $s skipped in $((SECONDS - part_start)) s" | tee -a "$summary"
  if [ "$f" -gt 0 ]; then exit 1; fi
  if [ "$dry" = 1 ]; then exit 0; fi
  if [ "$s" -gt 0 ]; then exit 2; fi
  exit 0
}

# embed NAME KIND FASTA MODEL PRECISION [ARGS...]: ours on CUDA into $work/NAME.safetensors with
# its report $work/NAME.json; false on failure (with a FAIL line).
embed() {
  local name=$1 kind=$2 fasta=$3 model=$4 p=$5
  shift 5
  local rc
  echo "-- $name: embed-$kind -p $p $* (at $((SECONDS - part_start)) s)"
  timed "$work/$name.seconds" tmo "${ours[@]}" -q "embed-$kind" "$fasta" -m "$model" -o "$work/$name.safetensors" \
    -d "$dev" -p "$p" --report "$work/$name.json" "$@" > "$work/$name.log" 2>&1
  rc=$?
  cat "$work/$name.log"
  if [ $rc != 0 ]; then
    record FAIL "$name" "embed-$kind -p $p exited $rc$([ $rc = 124 ] && echo ' (out of time)'): $(tail -n 3 "$work/$name.log" | tr '\n' ' ')"
    return 1
  fi
}
# cmp_rows NAME A B MIN_COSINE [MAX_ABS]
cmp_rows() {
  local name=$1 line
  shift
  if line=$("$PYTHON" bench/gpu/compare_rows.py "$1" "$2" "$name" "${@:3}" 2>&1); then
    record PASS "$name" "${line#"$name": }"
  else
    record FAIL "$name" "${line#"$name": }"
  fi
}
# dtype_check NAME P: the report of $work/NAME says precision P on CUDA (and read back P).
dtype_check() {
  local line
  if line=$("$PYTHON" bench/gpu/reports.py dtype "$work/$1.json" "$2" "$dev" 2>&1); then
    record PASS "dtype-$1" "$line"
  else
    record FAIL "dtype-$1" "$line"
  fi
}
# torch_run NAME MODEL FASTA DTYPE [ARGS...]: torch_baseline.py into $work/NAME.safetensors.
torch_run() {
  local name=$1 kind=$2 model=$3 fasta=$4 p=$5 rc
  shift 5
  echo "-- $name: torch_baseline.py $kind --dtype $p $* (at $((SECONDS - part_start)) s)"
  timed "$work/$name.seconds" tmo "$PYTHON" bench/gpu/torch_baseline.py "$kind" "$model" "$fasta" "$work/$name.safetensors" \
    --dtype "$p" "$@" > "$work/$name.log" 2>&1
  rc=$?
  grep -v '^{' "$work/$name.log"
  if [ $rc != 0 ]; then
    record FAIL "$name" "torch_baseline.py $kind --dtype $p exited $rc: $(tail -n 3 "$work/$name.log" | tr '\n' ' ')"
    return 1
  fi
}

part1() {
  local kit=$1
  work=$WORK/part1
  rm -rf "$work"
  mkdir -p "$work"
  # Inputs (no CUDA): the fixtures' cases, the parity models, the OOM probe's proteins.
  "$PYTHON" bench/gpu/cases_fasta.py tests/fixtures/esm2_tiny/cases.json "$work/esm_tiny.faa"
  "$PYTHON" bench/gpu/cases_fasta.py tests/fixtures/dnabert_s_tiny/cases.json "$work/dna_tiny.fa"
  parity_models "$kit"
  "$PYTHON" bench/gpu/make_inputs.py oom "$work/oom.faa" --n "$oom_n" --residues 1022
  record PASS inputs "fixture cases, $(grep -c '>' "$kit/inputs/esm_mixed.faa") mixed proteins, $(grep -c '>' "$kit/inputs/dna_mixed.fa") mixed DNA, $oom_n x 1022-residue OOM probe"
  gate "nvidia-smi, then $bin devices (its test kernel), then the tiny models' parity on CUDA"

  # 1-2: driver, NVRTC and the test kernel.
  local drv
  if drv=$(nvidia-smi -i "$gpu" --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1); then
    local major=${drv#*, }
    major=${major%%.*}
    if [ "$major" -ge 550 ] 2> /dev/null; then record PASS driver "$drv (>= 550: NVRTC 12.4's PTX loads)"; else record FAIL driver "$drv (< 550)"; fi
  else
    record FAIL driver "nvidia-smi: $drv"
  fi
  tmo "${ours[@]}" devices > "$work/devices.txt" 2>&1
  cat "$work/devices.txt"
  if grep -q "test kernel: ok" "$work/devices.txt"; then
    record PASS test-kernel "$(grep -m1 '^cuda:0' "$work/devices.txt"); $(grep -m1 '^CUDA toolkit' "$work/devices.txt")"
  else
    record FAIL test-kernel "$(grep -m1 -E '^cuda:0|^CUDA' "$work/devices.txt" || tail -n 2 "$work/devices.txt")"
  fi
  if grep -q "^--device auto uses: cuda:0" "$work/devices.txt"; then
    record PASS device-auto "$(grep '^--device auto uses' "$work/devices.txt")"
  else
    record FAIL device-auto "$(grep '^--device auto uses' "$work/devices.txt" || echo 'no --device auto line')"
  fi

  # 3-4: both tiny models in f32 (TF32-sized bound), f16 and bf16, and the dtypes read back.
  local p m line
  for p in f32 f16 bf16; do
    for m in esm dna; do
      need 25 "parity-${m}-tiny-$p" || continue
      local fixture=esm2_tiny kind=protein fasta=$work/esm_tiny.faa mode=half
      [ $m = dna ] && fixture=dnabert_s_tiny kind=dna fasta=$work/dna_tiny.fa
      [ $p = f32 ] && mode=tf32
      embed "${m}_tiny_$p" "$kind" "$fasta" "tests/fixtures/$fixture" "$p" || continue
      if line=$("$PYTHON" bench/gpu/parity.py "tests/fixtures/$fixture/cases.json" "$work/${m}_tiny_$p.safetensors" "$mode" 2>&1); then
        record PASS "parity-${m}-tiny-$p" "$line"
      else
        record FAIL "parity-${m}-tiny-$p" "$line"
      fi
      dtype_check "${m}_tiny_$p" "$p"
    done
  done

  # 5: `run` on CUDA reproduces the original's chunk calls.
  if need 40 run-e2e; then
    if tmo "${ours[@]}" -q run tests/fixtures/e2e/input.fa -c 500 -o "$work/run500" -d "$dev" -p f32 \
      --dnabert tests/fixtures/dnabert_s_tiny --esm tests/fixtures/esm2_tiny --classifier tests/fixtures/mlp_tiny.pth > "$work/run500.log" 2>&1; then
      line=$("$PYTHON" bench/gpu/reports.py scores "$work/run500/prediction_results.txt" tests/fixtures/e2e/chunk500/prediction_results.txt 2>&1)
      if cmp -s "$work/run500/prediction_results_highestscore.csv" tests/fixtures/e2e/chunk500/prediction_results_highestscore.csv; then
        record PASS run-e2e "chunk calls identical to the original's; $line"
      else
        record FAIL run-e2e "prediction_results_highestscore.csv differs from the original's; $line"
      fi
    else
      record FAIL run-e2e "run -d $dev failed: $(tail -n 3 "$work/run500.log" | tr '\n' ' ')"
    fi
  fi

  # 6-7: the 3B's per-layer shape on mixed lengths: against the CPU goldens, batched = alone.
  local esm_in=$kit/inputs/esm_mixed.faa golden=$kit/goldens/esm_mixed_cpu.safetensors
  local esm_model=$models/esm2_3B_random
  for p in f32 f16 bf16; do
    need 40 "mixed-3b-$p" || continue
    embed "mixed_3b_$p" protein "$esm_in" "$esm_model" "$p" -b 16384 || continue
    dtype_check "mixed_3b_$p" "$p"
    [ "$goldens_ok" = 1 ] || continue
    if [ $p = f32 ]; then
      # TF32: 10-bit mantissa on 2560-wide products; PyTorch's own TF32 error is measured below.
      cmp_rows "mixed-3b-f32-vs-cpu" "$work/mixed_3b_f32.safetensors" "$golden" 0.99999 1e-2
    else
      cmp_rows "mixed-3b-$p-vs-cpu" "$work/mixed_3b_$p.safetensors" "$golden" 0.999
    fi
  done
  for p in f32 f16; do
    need 60 "mixed-3b-batched-vs-alone-$p" || continue
    [ -f "$work/mixed_3b_$p.safetensors" ] || continue
    embed "mixed_3b_alone_$p" protein "$esm_in" "$esm_model" "$p" -b 1 || continue
    cmp_rows "mixed-3b-batched-vs-alone-$p" "$work/mixed_3b_$p.safetensors" "$work/mixed_3b_alone_$p.safetensors" 0.99999
  done
  if need 40 mixed-dna-f32 && embed mixed_dna_f32 dna "$kit/inputs/dna_mixed.fa" "$models/dnabert_s_random" f32 -b 65536 && [ "$goldens_ok" = 1 ]; then
    # 12 layers of TF32 rounding: a looser bound than the 2-layer ESM-2's.
    cmp_rows "mixed-dna-f32-vs-cpu" "$work/mixed_dna_f32.safetensors" "$kit/goldens/dna_mixed_cpu.safetensors" 0.9999 2e-2
  fi

  # 8: an over-budget batch (2000 x 1024 tokens at once: ~335 GB of f32 attention scores)
  # must be split and retried, not kill the process; its rows equal a normal run's.
  if need 120 oom-split; then
    local rc
    echo "-- oom-split: $oom_n proteins of 1022 residues, -b 2200000 (at $((SECONDS - part_start)) s)"
    tmo "${ours[@]}" embed-protein "$work/oom.faa" -m "$esm_model" -o "$work/oom_big.safetensors" -d "$dev" -p f16 \
      -b 2200000 --report "$work/oom_big.json" > "$work/oom_big.log" 2>&1
    rc=$?
    grep -v '^\s*$' "$work/oom_big.log" | tail -n 20
    if [ $rc != 0 ]; then
      record FAIL oom-split "FINDING: the over-budget run exited $rc$([ $rc -gt 128 ] && [ $rc != 124 ] && echo " (signal $((rc - 128)))") instead of splitting; $(grep -c 'retrying it as two halves' "$work/oom_big.log") split lines; last: $(tail -n 2 "$work/oom_big.log" | tr '\n' ' ')"
    elif line=$("$PYTHON" bench/gpu/reports.py oom "$work/oom_big.json" "$work/oom_big.log" 2>&1); then
      record PASS oom-split "$line"
      if need 60 oom-rows && embed oom_normal protein "$work/oom.faa" "$esm_model" f16; then
        cmp_rows "oom-rows-vs-normal" "$work/oom_big.safetensors" "$work/oom_normal.safetensors" 0.9999
      fi
    else
      record FAIL oom-split "$line"
    fi
  fi

  # 7: PyTorch on the same GPU and weights: IEEE f32, TF32 (the allowance measured) and f16.
  local tb=(--batch-tokens 16384 --device "$dev" --warmup 8)
  if need 45 torch-f32 && torch_run torch_f32 esm "$esm_model" "$esm_in" f32 "${tb[@]}" --check tests/fixtures/esm2_tiny/cases.json; then
    [ "$goldens_ok" = 1 ] && cmp_rows torch-f32-vs-cpu "$work/torch_f32.safetensors" "$golden" 0.999999 1e-3
    [ -f "$work/mixed_3b_f32.safetensors" ] && cmp_rows ours-f32-vs-torch-f32 "$work/mixed_3b_f32.safetensors" "$work/torch_f32.safetensors" 0.99999 1e-2
  fi
  if need 45 torch-tf32 && torch_run torch_tf32 esm "$esm_model" "$esm_in" f32 "${tb[@]}" --tf32; then
    local ref=$golden
    [ "$goldens_ok" = 1 ] || ref=$work/torch_f32.safetensors
    if [ -f "$ref" ]; then
      line=$("$PYTHON" bench/gpu/compare_rows.py "$work/torch_tf32.safetensors" "$ref" x 0 2>&1)
      line=${line#x: }
      record INFO torch-tf32-vs-f32 "PyTorch allow_tf32 vs IEEE f32 (what TF32 costs at this shape): ${line%% -> *}"
    fi
  fi
  if need 45 torch-f16 && torch_run torch_f16 esm "$esm_model" "$esm_in" f16 "${tb[@]}" --check tests/fixtures/esm2_tiny/cases.json; then
    [ -f "$work/mixed_3b_f16.safetensors" ] && cmp_rows ours-f16-vs-torch-f16 "$work/mixed_3b_f16.safetensors" "$work/torch_f16.safetensors" 0.999
  fi
  finish
}

# nvidia-smi samples the GPU every 100 ms while CMD runs: mean busy share and peak memory into
# $work/NAME.gpu; CMD's wall time into $work/NAME.seconds.
measure() {
  local name=$1 smi rc
  shift
  nvidia-smi -i "$gpu" --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 100 > "$work/$name.smi" 2> /dev/null &
  smi=$!
  timed "$work/$name.seconds" "$@"
  rc=$?
  kill "$smi" 2> /dev/null
  wait "$smi" 2> /dev/null
  awk -F', *' '{u += $1; n++; if ($2 > m) m = $2} END {printf "{\"gpu_busy_percent\": %.1f, \"gpu_memory_peak_mib\": %d, \"samples\": %d}\n", n ? u / n : 0, m, n}' \
    "$work/$name.smi" > "$work/$name.gpu"
  return $rc
}

part2() {
  local kit=$1
  work=$WORK/part2
  rm -rf "$work"
  mkdir -p "$work"
  local layers=${ESM_LAYERS:-6} copies=${COPIES:-50}
  local budget_esm=${ESM_BUDGET:-16384} budget_dna=${DNA_BUDGET:-65536}
  local precisions
  read -r -a precisions <<< "${PRECISIONS:-f16 bf16}"
  # Inputs (no CUDA): sop7's chunk-500 ORFs, COPIES times; every 10th for the warm-up.
  tmo "$bin" -q translate "$SOP7" -c 500 -o "$work/t" || {
    record FAIL inputs "translate $SOP7 failed"
    finish
  }
  "$PYTHON" bench/gpu/make_inputs.py copies "$work/t/identified_protein.faa" "$copies" "$work/prot.faa"
  "$PYTHON" bench/gpu/make_inputs.py copies "$work/t/identified_nucleotide.fa" "$copies" "$work/dna.fa"
  "$PYTHON" bench/gpu/make_inputs.py every "$work/prot.faa" 10 "$work/prot_warm.faa"
  "$PYTHON" bench/gpu/make_inputs.py every "$work/dna.fa" 10 "$work/dna_warm.fa"
  # Models: ESM-2 at the 3B's per-layer shape, ESM_LAYERS deep; DNABERT-S at its real shape.
  local esm_model=$WORK/models_esm$layers/esm2_3B_random dna_model=$WORK/models_dna/dnabert_s_random
  [ -f "$esm_model/model.safetensors" ] || "$PYTHON" bench/gpu/make_models.py "$WORK/models_esm$layers" --skip-dna \
    --esm-layers "$layers" --esm-dim 2560 --esm-heads 40 --dtype float16 > /dev/null
  [ -f "$dna_model/model.safetensors" ] || "$PYTHON" bench/gpu/make_models.py "$WORK/models_dna" --skip-esm --dtype float16 > /dev/null
  if [ -f "$esm_model/model.safetensors" ] && [ -f "$dna_model/model.safetensors" ]; then
    record PASS inputs "$(grep -c '>' "$work/prot.faa") proteins and $(grep -c '>' "$work/dna.fa") DNA ORFs (sop7 chunk-500 x $copies); ESM-2 $layers layers at the 3B's per-layer shape (2560, 40 heads, 10240), DNABERT-S real shape"
  else
    record FAIL inputs "make_models.py failed"
    finish
  fi
  gate "a warm-up embed-dna on CUDA, then ours and PyTorch timed per model and dtype (${precisions[*]})"

  local p m
  for p in "${precisions[@]}"; do
    for m in dna esm; do
      local kind=dna in=$work/dna.fa warm=$work/dna_warm.fa model=$dna_model budget=$budget_dna fixture=dnabert_s_tiny
      [ $m = esm ] && kind=protein in=$work/prot.faa warm=$work/prot_warm.faa model=$esm_model budget=$budget_esm fixture=esm2_tiny
      need 60 "throughput-$m-$p" || continue
      # Untimed: kernel compilation and autotune on the same lengths and budget.
      echo "-- $m $p: warm-up, ours, PyTorch (at $((SECONDS - part_start)) s)"
      tmo "${ours[@]}" -q "embed-$kind" "$warm" -m "$model" -o "$work/warm_$m.safetensors" -d "$dev" -p "$p" -b "$budget" > /dev/null 2>&1
      measure "${m}_$p" tmo "${ours[@]}" -q "embed-$kind" "$in" -m "$model" -o "$work/${m}_$p.safetensors" -d "$dev" -p "$p" \
        -b "$budget" --report "$work/${m}_$p.json" || record FAIL "ours-$m-$p" "embed-$kind failed or ran out of time"
      [ -f "$work/${m}_$p.json" ] && dtype_check "${m}_$p" "$p"
      need 40 "torch-$m-$p" || continue
      measure "torch_${m}_$p" tmo "$PYTHON" bench/gpu/torch_baseline.py "$m" "$model" "$in" "$work/torch_${m}_$p.safetensors" \
        --dtype "$p" --batch-tokens "$budget" --device "$dev" --check "tests/fixtures/$fixture/cases.json" \
        || record FAIL "torch-$m-$p" "torch_baseline.py failed or ran out of time"
    done
  done
  "$PYTHON" bench/gpu/summary.py "$work" "${precisions[@]}" \
    --layers-note "ESM-2 at $layers of the 3B's 36 layers: the 3B's rate is about ${layers}/36 of this" > "$work/summary.out" 2>&1
  cat "$work/summary.out"
  grep -E '^(PASS|FAIL|SKIP) ' "$work/summary.out" >> "$summary"
  grep -E '^(PASS|FAIL|SKIP) ' "$work/summary.out" > /dev/null || record FAIL throughput "summary.py: $(tail -n 2 "$work/summary.out" | tr '\n' ' ')"
  finish
}

device() {
  local kit=target/gpu-kit args=() a
  for a in "$@"; do
    case $a in
      --dry-run) dry=1 ;;
      *) args+=("$a") ;;
    esac
  done
  [ "${DRY_RUN:-0}" = 1 ] && dry=1
  [ "${#args[@]}" -ge 2 ] || usage
  part=${args[0]}
  out=${args[1]}
  [ "${#args[@]}" -ge 3 ] && kit=${args[2]}
  case $part in 1 | 2) ;; *) usage ;; esac
  mkdir -p "$out"
  out=$(readlink -f "$out")
  summary=$out/summary.txt
  : > "$summary"
  echo "== kit part $part$([ "$dry" = 1 ] && echo ' (dry run)'): $(date -u '+%F %T UTC'), $(hostname), kit $kit, work $WORK, PART_SECONDS=$part_seconds"
  setup_device "$kit"
  "part$part" "$kit"
}

case ${1:-} in
  build)
    shift
    build "$@"
    ;;
  device)
    shift
    # Everything printed also goes to OUTDIR/log.txt (OUTDIR: the second argument that is no flag).
    positional=()
    for a in "$@"; do case $a in --*) ;; *) positional+=("$a") ;; esac done
    [ "${#positional[@]}" -ge 2 ] || usage
    mkdir -p "${positional[1]}" || exit 1
    device "$@" 2>&1 | tee "$(readlink -f "${positional[1]}")/log.txt"
    exit "${PIPESTATUS[0]}"
    ;;
  *) usage ;;
esac
