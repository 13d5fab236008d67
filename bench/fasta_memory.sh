#!/usr/bin/env bash
# Benchmark: peak memory of `virnucpro translate` on the inputs that used to blow it up, with
# `/usr/bin/time -v` (GNU time; `apt-get install time` where it is missing):
#   long:   one 200 Mbp record (60-column lines);
#   long3:  three 200 Mbp records (the bound counts the next record, read while one translates);
#   short:  3,000,000 records of 100 bp;
#   big:    1 GiB of 150 bp records (about 6.6 M; only with FULL=1, it takes a while).
# each at 1 thread and at all cores, chunk size 300, plus `long` as a single line and
# zstd-compressed (long_1line); the many-record inputs once more with --allow-duplicate-ids.
# Prints one line per run: input, threads, wall seconds, peak RSS in MiB.
# Prints the CPU it ran on (bench/cpu_info.sh). The inputs are random ACGT made from /dev/urandom; they are kept in $WORK between runs.
# Usage: bench/fasta_memory.sh [INPUT...]   (default: all but `big`; INPUT is long.fa,
#        long3.fa, long_1line.fa.zst, short.fa or big.fa. BIN=path/to/virnucpro measures
#        another build; WORK=dir keeps the inputs; FULL=1 adds big.fa)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
if [ ! -x /usr/bin/time ]; then
  echo "needs GNU time at /usr/bin/time: apt-get install time" >&2
  exit 2
fi
# shellcheck source=bench/cpu_info.sh
. bench/cpu_info.sh
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=target/release/virnucpro
fi

# N random bases on one line: one byte of /dev/urandom per base, mapped onto ACGT.
bases() {
  head -c "$1" /dev/urandom | LC_ALL=C tr '\000-\377' "$(printf 'ACGT%.0s' $(seq 64))"
}

if [ ! -s "$work/long.fa" ]; then
  { echo ">long one 200 Mbp record"; bases 200000000 | fold -w 60; echo; } > "$work/long.fa"
fi
if [ ! -s "$work/long3.fa" ]; then
  { cat "$work/long.fa"; sed '1s/.*/>long2/' "$work/long.fa"; sed '1s/.*/>long3/' "$work/long.fa"; } \
    > "$work/long3.fa"
fi
if [ ! -s "$work/long_1line.fa.zst" ]; then
  { echo ">long one 200 Mbp line"; bases 200000000; echo; } | zstd -q -3 -o "$work/long_1line.fa.zst"
fi
if [ ! -s "$work/short.fa" ]; then
  bases 300000000 | fold -w 100 | awk '{print ">r" NR " short read"; print}' > "$work/short.fa"
fi
inputs=(long.fa long3.fa long_1line.fa.zst short.fa)
if [ "${FULL:-0}" = 1 ] || [[ " $* " == *" big.fa "* ]]; then
  if [ ! -s "$work/big.fa" ]; then
    # 150 bp + a header of about 12 bytes per record: 6.6 M records make 1 GiB.
    bases 990000000 | fold -w 150 | awk '{print ">b" NR; print}' > "$work/big.fa"
  fi
  inputs+=(big.fa)
fi

if [ $# -gt 0 ]; then
  inputs=("$@")
fi
echo "binary: $BIN; inputs in $work; $(date -u '+%F %H:%M UTC')"
cpu_info
printf '%-34s %8s %8s %14s\n' input threads wall_s peak_rss_MiB
# One run: input, threads, extra flags.
measure() {
  local input=$1 threads=$2 rss wall
  shift 2
  rm -rf "$work/out"
  if ! /usr/bin/time -v -o "$work/time.txt" "$BIN" -q translate "$work/$input" -c 300 \
    -t "$threads" -o "$work/out" "$@" 2> "$work/stderr.txt"; then
    printf '%-34s %8s %s\n' "$input $*" "$threads" "failed: $(grep -m1 '^error:' "$work/stderr.txt")"
    return
  fi
  rss=$(awk -F': ' '/Maximum resident set size/{print int($2 / 1024)}' "$work/time.txt")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{n = split($2, t, ":"); s = 0;
    for (i = 1; i <= n; i++) s = s * 60 + t[i]; printf "%.1f", s}' "$work/time.txt")
  printf '%-34s %8s %8s %14s\n' "$input $*" "$threads" "$wall" "$rss"
}
for input in "${inputs[@]}"; do
  for threads in 1 "$(nproc)"; do
    measure "$input" "$threads"
  done
  # Without the duplicate-id check nothing is kept per record: what is left of the peak.
  case $input in
    short.fa | big.fa) measure "$input" "$(nproc)" --allow-duplicate-ids ;;
  esac
done
rm -rf "$work/out"
