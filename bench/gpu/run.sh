#!/usr/bin/env bash
# The whole GPU session on one CUDA machine that also builds (cargo and the toolkit at hand):
# bench/gpu/kit.sh's build here, then its two device parts. A bare lent machine gets the kit
# built elsewhere and the two `kit.sh device` calls instead (bench/gpu/README.md).
#
#   bench/gpu/run.sh all OUTDIR          kit.sh build, then device 1 into OUTDIR/part1 and
#                                        device 2 into OUTDIR/part2; exit 0 only if both passed
#   bench/gpu/run.sh check|parity|mixed OUTDIR   device part 1 only (all of these are in it)
#   bench/gpu/run.sh throughput OUTDIR           device part 2 only
#
# KITDIR (default target/gpu-kit) is built when missing (or always with REBUILD=1). The
# environment of kit.sh applies (GPU, PART_SECONDS, ESM_LAYERS, COPIES, PRECISIONS, ...).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
mode=${1:-}
out=${2:-}
kit=${KITDIR:-target/gpu-kit}
[ -n "$out" ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
if [ "${REBUILD:-0}" = 1 ] || [ ! -f "$kit/manifest.json" ]; then
  bench/gpu/kit.sh build "$kit" || exit 1
fi
case $mode in
  all)
    fail=0
    bench/gpu/kit.sh device 1 "$out/part1" "$kit" || fail=1
    bench/gpu/kit.sh device 2 "$out/part2" "$kit" || fail=1
    cat "$out/part1/summary.txt" "$out/part2/summary.txt"
    exit $fail
    ;;
  check | parity | mixed) exec bench/gpu/kit.sh device 1 "$out" "$kit" ;;
  throughput) exec bench/gpu/kit.sh device 2 "$out" "$kit" ;;
  *) echo "usage: $0 all|check|parity|mixed|throughput OUTDIR" >&2; exit 2 ;;
esac
