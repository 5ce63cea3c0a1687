#!/usr/bin/env bash
# The OGM-GE rows of BENCHMARKS.md: joint and ogm_ge on avdigits_hard, uci_mfeat and cub10, three seeds each,
# then `mmbal compare` in Markdown. Re-running skips finished runs.
# Usage: bash benchmarks/ogm_table.sh [RUNS_DIR]   (default: ./runs-benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs-benchmarks}"
for ds in uci_mfeat cub10 avdigits_hard; do
    mmbal sweep "presets/$ds.toml" --methods joint,ogm_ge --seeds 0,1,2 --jobs 2 --runs-dir "$runs" >&2
done
for ds in uci_mfeat cub10 avdigits_hard; do
    echo "### $ds"
    echo
    mmbal compare --sweep "$ds" --runs-dir "$runs" --baseline joint --format md
    echo
done
