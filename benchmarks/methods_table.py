"""The Markdown table "Every method on every shared preset" of BENCHMARKS.md from `mmbal bench --json` files.

Usage: python benchmarks/methods_table.py RESULT.json [RESULT.json ...]   (one file per preset, in column order)

Each cell: the method's whole-epoch time over joint's, median of the per-repeat ratios [95% interval of the
median]; rows sorted by the column of cub10 when present, else the first; the last column is the method's
algorithmic cost as its registration states it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def preset_name(result: dict) -> str:
    return Path(result["preset"]).stem


def table(results: list[dict]) -> str:
    names = [preset_name(r) for r in results]
    rows: dict[str, dict[str, dict]] = {}
    cost: dict[str, str] = {}
    for name, result in zip(names, results):
        for row in result["methods"]:
            rows.setdefault(row["method"], {})[name] = row
            cost[row["method"]] = row["algorithmic_cost"]
    order = "cub10" if "cub10" in names else names[0]
    lines = ["| method | " + " | ".join(f"`{n}` x joint" for n in names) + " | algorithmic cost per step (registration) |",
             "|---|" + "--:|" * len(names) + "---|"]
    for method in sorted(rows, key=lambda m: rows[m].get(order, {}).get("ratio_to_joint", float("inf"))):
        cells = [_cell(rows[method].get(n)) for n in names]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {cost[method]} |")
    return "\n".join(lines)


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    return f'{row["ratio_to_joint"]:.2f} [{row["ratio_ci_low"]:.2f}, {row["ratio_ci_high"]:.2f}]'


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(table([json.loads(Path(p).read_text()) for p in sys.argv[1:]]))
