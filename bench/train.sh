#!/usr/bin/env bash
# Benchmark: `virnucpro train` epochs per second at the real widths (768 + 2560 -> 512 -> 2)
# on N synthetic labelled ORFs (default 100,000), beside the original's loop in PyTorch
# (bench/train_torch.py) on the same files and the same number of threads, in one run. Both
# train with the original's defaults (batch 32, shuffled, dropout 0.5, 90/10 split, a
# validation pass every epoch) for EPOCHS epochs without early stopping.
# Usage: bench/train.sh [N] [THREADS] [EPOCHS]
# Needs python3 with numpy (to make the data); torch and safetensors for the PyTorch side
# (skipped with a note without them); a release build (built here if missing). Prints the CPU
# it ran on (bench/cpu_info.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
threads=${2:-$(nproc)}
epochs=${3:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=bench/cpu_info.sh
. bench/cpu_info.sh
cargo build --release --quiet
bin=target/release/virnucpro

python3 bench/make_embeddings.py "$work/emb" "$n" --shards 1 >/dev/null
python3 - "$work/emb/dna.00000.safetensors" "$work/labels.tsv" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read(1 << 30)
hlen = struct.unpack("<Q", raw[:8])[0]
ids = json.loads(raw[8:8 + hlen])["__metadata__"]["ids"].split("\n")
with open(sys.argv[2], "w") as f:
    f.write("id\tlabel\n")
    for k, i in enumerate(ids):
        f.write("%s\t%s\n" % (i, "virus" if k % 2 else "others"))
PY
echo "$n ORFs at 768 + 2560 -> 512 -> 2, $threads threads, $epochs epochs; $(date -u '+%F %H:%M UTC')"
cpu_info

# Our CPU backend's matrix products run on rayon's pool: RAYON_NUM_THREADS sets its size.
RAYON_NUM_THREADS=$threads /usr/bin/time -f "%e s wall, peak RSS %M KiB" -o "$work/time" \
  "$bin" -q train --dna "$work/emb/dna.00000.safetensors" --protein "$work/emb/protein.00000.safetensors" \
  --labels "$work/labels.tsv" -o "$work/ours" --epochs "$epochs" --patience 1000 --device cpu
python3 -c "import json;d=json.load(open('$work/ours/train.json'));print('virnucpro train: %.4f epochs/s (%d epochs, %.1f s in epochs)'%(d['epochs_per_second'],d['epochs_run'],d['epochs_run']/d['epochs_per_second']))"
echo "  $(cat "$work/time")"

if python3 -c "import torch, safetensors, numpy" 2>/dev/null; then
  python3 bench/train_torch.py "$work/emb/dna.00000.safetensors" "$work/emb/protein.00000.safetensors" \
    "$work/labels.tsv" "$epochs" "$threads" |
    python3 -c "import json,sys;d=json.loads(sys.stdin.read());print('PyTorch %s loop: %.4f epochs/s (%d epochs, %.1f s)'%(d['torch'],d['epochs_per_second'],d['epochs'],d['seconds']))"
else
  echo "PyTorch side skipped: python3 lacks torch, safetensors or numpy"
fi
