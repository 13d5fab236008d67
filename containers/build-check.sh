#!/usr/bin/env bash
# The container image's build step without Docker, for CI: runs the one `RUN ... cargo build`
# line of containers/Dockerfile, read from that file (so the two cannot drift), through `sh -c`
# as Docker does, with the build stage's ARG defaults in the environment, for both variants:
#
#   cuda   the default build args           (cargo build --release --locked --features cuda)
#   cpu    FEATURES= RUNTIME_BASE=debian:bookworm-slim   (cargo build --release --locked)
#
# then runs each binary's `virnucpro --version` and checks that it needs no newer glibc than
# the variant's runtime base has (the image is built on Debian bookworm, the CUDA base is
# Ubuntu 22.04). Cargo reuses ./target, so the cpu variant only recompiles virnucpro itself
# (`cargo test --release` built it with the tests' fault-injection feature, which a plain build
# leaves out); the cuda one costs a full build the first time (~10 min on 2 cores).
#
# Usage: containers/build-check.sh [--print] [--check] [cuda|cpu ...]
#   --print   only print the cargo command of each variant (what would run), build nothing
#   --check   the same line with `cargo check` for `cargo build`: every crate of the variant
#             type-checked, no code generated, so no binary to run or to hold to the runtime's
#             glibc (CI does this for cuda: the full cuda build is the GPU kit's, made before
#             every GPU session by bench/gpu/kit.sh build; here it cost ~10 min of CI's time)
set -euo pipefail
cd "$(dirname "$0")/.."

dockerfile=containers/Dockerfile
print_only=0
check_only=0
variants=()
for arg in "$@"; do
  case "$arg" in
    --print) print_only=1 ;;
    --check) check_only=1 ;;
    cuda | cpu) variants+=("$arg") ;;
    *) echo "usage: $0 [--print] [--check] [cuda|cpu ...]" >&2; exit 2 ;;
  esac
done
[ "${#variants[@]}" -gt 0 ] || variants=(cuda cpu)

fail() { echo "build-check: $*" >&2; exit 1; }

mapfile -t runs < <(grep -E '^RUN .*cargo build' "$dockerfile" || true)
[ "${#runs[@]}" -eq 1 ] || fail "expected exactly one 'RUN ... cargo build' line in $dockerfile, found ${#runs[@]}"
build_cmd=${runs[0]#RUN }
if [ "$check_only" -eq 1 ]; then
  case "$build_cmd" in
    *"cargo build "*) build_cmd=${build_cmd/cargo build /cargo check } ;;
    *) fail "--check: no 'cargo build ' in the RUN line: $build_cmd" ;;
  esac
fi

# ARG defaults: the global ones (before the first FROM) and the build stage's.
mapfile -t global_args < <(awk '/^FROM /{exit} /^ARG [A-Za-z_][A-Za-z0-9_]*=/{sub(/^ARG /, ""); print}' "$dockerfile")
mapfile -t stage_args < <(awk '/^FROM .* AS build/{s=1; next} /^FROM /{s=0} s && /^ARG [A-Za-z_][A-Za-z0-9_]*=/{sub(/^ARG /, ""); print}' "$dockerfile")

variant_args() {
  case "$1" in
    cuda) ;;
    cpu) echo "FEATURES="; echo "RUNTIME_BASE=debian:bookworm-slim" ;;
  esac
}

# Newest glibc of a runtime base image (the binary must not need a newer one).
base_glibc() {
  case "$1" in
    *ubuntu20.04*) echo 2.31 ;;
    *ubuntu22.04*) echo 2.35 ;;
    *ubuntu24.04*) echo 2.39 ;;
    debian:bullseye*) echo 2.31 ;;
    debian:bookworm*) echo 2.36 ;;
    debian:trixie*) echo 2.41 ;;
    *) echo "" ;;
  esac
}

# The value of NAME in a list of NAME=value (the last one wins, as with --build-arg).
value_of() {
  local name=$1 kv value=""
  shift
  for kv in "$@"; do
    [ "${kv%%=*}" = "$name" ] && value=${kv#*=}
  done
  printf '%s' "$value"
}

for variant in "${variants[@]}"; do
  mapfile -t overrides < <(variant_args "$variant")
  # As in Docker: the RUN line sees the build stage's ARGs (defaults, then --build-arg values);
  # the global ARGs only choose the base images.
  env_args=()
  for kv in "${stage_args[@]}"; do
    name=${kv%%=*}
    # Not grep -q: it exits at the first match and printf may then die of SIGPIPE, which fails
    # the pipeline under pipefail (about one run in 200).
    if printf '%s\n' "${overrides[@]}" | grep "^$name=" > /dev/null; then
      env_args+=("$name=$(value_of "$name" "${overrides[@]}")")
    else
      env_args+=("$kv")
    fi
  done
  runtime_base=$(value_of RUNTIME_BASE "${global_args[@]}" "${overrides[@]}")

  if [ "$print_only" -eq 1 ]; then
    # A stand-in `cargo` that prints its arguments: shows exactly what sh passes to cargo.
    stub=$(mktemp -d)
    printf '#!/bin/sh\necho "cargo $*"\n' > "$stub/cargo"
    chmod +x "$stub/cargo"
    printf '%s: ' "$variant"
    env "${env_args[@]}" PATH="$stub:$PATH" sh -c "$build_cmd"
    rm -r "$stub"
    continue
  fi

  echo "== build-check $variant: $build_cmd (${env_args[*]})"
  env "${env_args[@]}" sh -c "$build_cmd"
  if [ "$check_only" -eq 1 ]; then
    echo "$variant: type-checked (no binary built)"
    continue
  fi
  version=$(target/release/virnucpro --version)
  echo "$variant: $version"
  case "$version" in
    "virnucpro "*) ;;
    *) fail "$variant: unexpected --version output: $version" ;;
  esac

  want=$(base_glibc "$runtime_base")
  if [ -z "$want" ]; then
    echo "build-check: $variant: unknown glibc of $runtime_base, not checked"
  elif ! command -v objdump > /dev/null; then
    echo "build-check: $variant: objdump missing, glibc not checked"
  else
    need=$(objdump -T target/release/virnucpro | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
    newest=$(printf '%s\n%s\n' "$need" "$want" | sort -V | tail -n 1)
    [ "$newest" = "$want" ] || fail "$variant: the binary needs glibc $need, $runtime_base has $want"
    echo "$variant: needs glibc $need, $runtime_base has $want"
  fi
done
