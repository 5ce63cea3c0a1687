#!/usr/bin/env bash
# The method-comparison tables of BENCHMARKS.md: joint, mcr, aug and mikd on avdigits_hard, uci_mfeat and
# cub10, three seeds each, then `mmbal compare` in Markdown. Re-running skips finished runs.
# Usage: bash benchmarks/methods_table.sh [RUNS_DIR]   (default: ./runs-benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs-benchmarks}"
for ds in cub10 uci_mfeat avdigits_hard; do
    mmbal sweep "presets/$ds.toml" --methods joint,mcr,aug,mikd --seeds 0,1,2 --jobs 2 --runs-dir "$runs" \
        --set mcr.unimodal_weight=1.0 --set mcr.pretrain_epochs=2 --set aug.check_every=1 >&2
done
for ds in cub10 uci_mfeat avdigits_hard; do
    echo "### $ds"
    echo
    mmbal compare --sweep "$ds" --runs-dir "$runs" --baseline joint --format md
    echo
done
