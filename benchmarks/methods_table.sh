#!/usr/bin/env bash
# The method-comparison tables of BENCHMARKS.md: METHODS (default joint,mcr,aug,mikd) on avdigits_hard, uci_mfeat
# and cub10, three seeds each, then `mmbal compare` in Markdown. Re-running skips finished runs.
# Usage: [METHODS=joint,ogm_ge] [DATASETS=cub10,uci_mfeat,avdigits_hard] bash benchmarks/methods_table.sh [RUNS_DIR]
#        (default RUNS_DIR: ./runs-benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs-benchmarks}"
methods="${METHODS:-joint,mcr,aug,mikd}"
IFS=, read -r -a datasets <<< "${DATASETS:-cub10,uci_mfeat,avdigits_hard}"
sets=()   # the per-method presets' settings, for the methods in this table
[[ ",$methods," == *",mcr,"* ]] && sets+=(--set mcr.unimodal_weight=1.0 --set mcr.pretrain_epochs=2)
[[ ",$methods," == *",aug,"* ]] && sets+=(--set aug.check_every=1)
for ds in "${datasets[@]}"; do
    mmbal sweep "presets/$ds.toml" --methods "$methods" --seeds 0,1,2 --jobs 2 --runs-dir "$runs" "${sets[@]}" >&2
done
for ds in "${datasets[@]}"; do
    echo "### $ds"
    echo
    mmbal compare --sweep "$ds" --runs-dir "$runs" --baseline joint --format md
    echo
done
