#!/usr/bin/env bash
# Benchmark: `virnucpro translate` throughput (Mbp/s) and peak memory on sop7.fa repeated to
# >= 100 Mbp with distinct ids, beside the original algorithm in Python on a 10 Mbp slice of the
# same input, in one run. Usage: bench/translate.sh [THREADS] [COPIES]
# Prints the CPU it ran on (bench/cpu_info.sh).
# Reads bench/data/sop7.fa (or SOP7=path/to/any.fa) and needs a release build (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
copies=${2:-750}
sop7=${SOP7:-bench/data/sop7.fa}  # any FASTA of real sequences; default: the shipped sample
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=bench/cpu_info.sh
. bench/cpu_info.sh
cargo build --release --quiet
bin=target/release/virnucpro

# sop7.fa repeated with distinct ids: copy k renames ">id" to ">id_copyk".
python3 - "$sop7" "$copies" "$work/big.fa" <<'PY'
import sys
src, copies, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
text = open(src).read()
with open(dst, "w") as out:
    for k in range(copies):
        out.write(text.replace(">", ">c%d_" % k))
PY
python3 - "$sop7" 74 "$work/slice.fa" <<'PY'
import sys
src, copies, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
text = open(src).read()
with open(dst, "w") as out:
    for k in range(copies):
        out.write(text.replace(">", ">c%d_" % k))
PY
mbp=$(python3 -c "import os;print(round(sum(len(l.strip()) for l in open('$work/big.fa') if not l.startswith('>'))/1e6,1))")
echo "input: $mbp Mbp ($copies copies of sop7.fa), $threads threads; $(date -u '+%F %H:%M UTC')"
cpu_info

for c in 500 300; do
  mkdir -p "$work/rs$c" "$work/py$c"
  /usr/bin/time -f "%e s wall, peak RSS %M KiB" -o "$work/time$c" \
    "$bin" -q translate "$work/big.fa" --chunk-size "$c" --outdir "$work/rs$c" --threads "$threads"
  rs=$(python3 -c "import json;d=json.load(open('$work/rs$c/translate.json'));print('%.1f Mbp/s (%d ORFs, %.2f s)'%(d['mbp_per_second'],d['orfs'],d['wall_seconds']))")
  echo "virnucpro translate -c $c: $rs; $(cat "$work/time$c")"
  python3 bench/reference/translate_original.py "$work/slice.fa" "$c" "$work/py$c" | sed "s/^/  chunk $c /"
done
# The Python slice must agree with ours record for record (a speed comparison of different work
# means nothing).
mkdir -p "$work/check"
"$bin" -q translate "$work/slice.fa" --chunk-size 300 --outdir "$work/check" --threads "$threads"
cmp "$work/check/identified_protein.faa" "$work/py300/identified_protein.faa" && \
cmp "$work/check/identified_nucleotide.fa" "$work/py300/identified_nucleotide.fa" && echo "outputs identical to the Python reference on the slice"
