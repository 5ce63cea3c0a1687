#!/usr/bin/env bash
# Every registered method against joint on every preset with shared data: `mmbal bench --no-reference`, whole
# epochs side by side, JSON into benchmarks/results/<machine>/methods-<preset>.json, then the Markdown table of
# BENCHMARKS.md ("Every method on every shared preset") on stdout.
# Usage: bash benchmarks/methods_bench.sh [--device cuda]   (about 50 minutes on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
machine="${MMBAL_BENCH_MACHINE:-$(hostname)-$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"
out="benchmarks/results/$machine"
mkdir -p "$out"
# repeats per preset: the conv presets' epochs take seconds on a CPU
for spec in nutrimouse:11 cub10:11 uci_mfeat:7 avdigits_hard:3 avdigits:3; do
    preset="${spec%%:*}"
    echo "== $preset $(date +%T), load $(cut -d' ' -f1 /proc/loadavg)" >&2
    mmbal bench "presets/$preset.toml" --no-reference --repeats "${spec##*:}" --json "$@" > "$out/methods-$preset.json"
done
python benchmarks/methods_table.py "$out"/methods-{nutrimouse,cub10,uci_mfeat,avdigits_hard,avdigits}.json
