#!/usr/bin/env bash
# The figures behind BENCHMARKS.md: `mmbal bench` on each preset, JSON into benchmarks/results/<machine>/.
# Usage: bash benchmarks/run_all.sh [--device cuda] [--repeats N]   (a few dozen repeats on a shared machine)
set -euo pipefail
cd "$(dirname "$0")/.."
machine="${MMBAL_BENCH_MACHINE:-$(hostname)-$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"
out="benchmarks/results/$machine"
mkdir -p "$out"
for preset in quickstart cub10 uci_mfeat nutrimouse avdigits avdigits_hard; do
    echo "== $preset" >&2
    mmbal bench "presets/$preset.toml" --json "$@" > "$out/$preset.json"
done
echo "== stream vs resident (dataset 4.2x a 256 MiB budget, in ${MMBAL_STREAM_BENCH_DIR:-/tmp/mmbal-stream-bench})" >&2
python benchmarks/stream_bench.py --budget 256MiB --json "$@" > "$out/stream.json"
echo "wrote $out" >&2
