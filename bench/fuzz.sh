#!/usr/bin/env bash
# The property tests of the untrusted-input parsers, run long: CI runs each with a few dozen
# cases; this runs CASES (default 5000) per property. Every property mutates a valid input
# (FASTA plain and compressed, the TOML config, safetensors, PyTorch zip checkpoints, pickles,
# config.json, GPU lock-file names and notes) and requires a clean result or a clean one-line
# error: never a panic, and (for the weights) within a 2 GiB address-space cap and a time bound
# enforced on a child process. A failure prints the minimal failing input and proptest keeps
# its seed under tests/ (proptest-regressions), so the next run tries it first.
#
#   bench/fuzz.sh [CASES]
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-5000}
export PROPTEST_CASES=$cases
echo "== $cases cases per property"
start=$SECONDS
cargo test --release --test hostile -- fasta::fasta_properties fasta::config_properties
cargo test --release --test hostile -- weights::properties
cargo test --release --lib -- device::lease::tests::any
echo "== all properties held for $cases cases each ($((SECONDS - start)) s)"
