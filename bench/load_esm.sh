#!/usr/bin/env bash
# How long loading ESM-2 takes, against the floor of reading its file once.
#
#   bench/load_esm.sh MODELS [REPEATS]
#
# MODELS is what `bench/load_esm.py weights MODELS --layers 36 --dim 2560 --heads 40` wrote:
# the 3B shape with random weights, as a fair-esm checkpoint (MODELS/esm2.pt) and as a Hugging
# Face directory (MODELS/esm2_3B_random/model.safetensors). For each file, with its pages
# evicted from the page cache (cold) and then read into it (warm):
#   read   `cat FILE > /dev/null`: reading the file once, the floor a load cannot beat;
#   load   `virnucpro embed-protein` of one 33-residue protein on the CPU: the report's
#          model_load_seconds (the model read, checked and built, until the first batch is planned;
#          `-` from builds before it was reported), wall_seconds - compute_seconds (load,
#          tokenising and writing the output: what the older reports allow), and the process
#          from start to exit (freeing 11 GB of weights included).
# Each figure is the best of REPEATS (default 3) runs: other work on the machine only slows a
# run down. Every row says how much of the file was in the page cache when the run started.
#
# Cold: pages are dropped per file with posix_fadvise(DONTNEED) (bench/load_esm.py evict),
# which leaves the rest of the machine's cache alone; DROP_CACHES=1, as root, drops every
# cache instead (`sync; echo 3 > /proc/sys/vm/drop_caches`).
#
# Memory: a warm f32 load holds the file in the page cache and the model (as large) in the
# process; with less than twice the file free, part of the "warm" file is evicted during the
# load (the resident column shows it at the start only). VIRNUCPRO selects the binary
# (default target/release/virnucpro), PYTHON the interpreter with numpy (default python3).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    sed -n '2,12p' "$0" >&2
    exit 64
fi
models=$1
repeats=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
bin=${VIRNUCPRO:-$here/../target/release/virnucpro}
py=${PYTHON:-python3}
precision=${PRECISION:-f32}
[[ -x $bin ]] || { echo "no binary at $bin (cargo build --release, or set VIRNUCPRO)" >&2; exit 1; }
pt=$models/esm2.pt
hf=$models/esm2_3B_random
for f in "$pt" "$hf/model.safetensors" "$hf/config.json"; do
    [[ -r $f ]] || { echo "missing $f: run bench/load_esm.py weights $models first" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '>p\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n' >"$work/p.faa"

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
evict() {
    if [[ ${DROP_CACHES:-0} == 1 ]]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    else
        "$py" "$here/load_esm.py" evict "$1" >/dev/null
    fi
}
resident() { "$py" "$here/load_esm.py" resident "$1" | awk '{print $2}'; }

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "memory: $(awk '/MemTotal/{printf "%.1f GB", $2/1048576}' /proc/meminfo) total, $(awk '/MemAvailable/{printf "%.1f GB", $2/1048576}' /proc/meminfo) available"
echo "binary: $bin (built $(date -u -r "$bin" '+%Y-%m-%d %H:%M UTC'))"
echo "precision: $precision"
echo "cache: $([[ ${DROP_CACHES:-0} == 1 ]] && echo 'drop_caches' || echo 'posix_fadvise per file')"
printf '%-12s %-5s %-5s %9s %9s %9s %9s %9s %10s\n' format cache what best_s load_s wall-cmp exit_s rss_GB resident

# One row: the best of `repeats` runs of `what` on `file` in cache state `state`.
row() {
    local format=$1 state=$2 what=$3 file=$4 model=$5
    local best='' best_load='-' best_wc='-' best_rss='-' res=''
    for ((r = 0; r < repeats; r++)); do
        if [[ $state == cold ]]; then evict "$file"; else cat "$file" >/dev/null; fi
        res=$(resident "$file")
        local t0 took load='-' wc='-' rss='-'
        t0=$(now)
        if [[ $what == read ]]; then
            cat "$file" >/dev/null
            took=$(since "$t0")
        else
            "$bin" embed-protein -m "$model" -o "$work/out.safetensors" --report "$work/r.json" \
                -d cpu --precision "$precision" -q "$work/p.faa"
            took=$(since "$t0")
            read -r load wc rss < <("$py" -c '
import json, sys
r = json.load(open(sys.argv[1]))
load, rss = r.get("model_load_seconds"), r.get("peak_rss_mb")
wc = r["wall_seconds"] - r["compute_seconds"]
print("-" if load is None else "%.2f" % load, "%.2f" % wc, "-" if rss is None else "%.1f" % (rss / 1024))
' "$work/r.json")
        fi
        # The run's figure: model_load_seconds when reported, else wall - compute, else (a read) the
        # time taken.
        local key=$took
        [[ $wc != - ]] && key=$wc
        [[ $load != - ]] && key=$load
        if [[ -z $best ]] || (($(echo "$key < $best" | bc))); then
            best=$key best_load=$load best_wc=$wc best_rss=$rss best_exit=$took best_res=$res
        fi
    done
    printf '%-12s %-5s %-5s %9.2f %9s %9s %9.2f %9s %10s\n' "$format" "$state" "$what" "$best" \
        "$best_load" "$best_wc" "$best_exit" "$best_rss" "$best_res"
}

for format in pt safetensors; do
    if [[ $format == pt ]]; then file=$pt model=$pt; else file=$hf/model.safetensors model=$hf; fi
    for state in cold warm; do
        row "$format" "$state" read "$file" "$model"
        row "$format" "$state" load "$file" "$model"
    done
done
