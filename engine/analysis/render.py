"""A comparison as text: a grid of cells for a terminal table (the CLI draws it with Rich), Markdown,
JSON and CSV. A cell reads ``mean ± std`` (or the single value) and, with a baseline,
``(+delta marks)``: ``*`` p < 0.05, ``**`` p < 0.01, ``***`` p < 0.001.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from .build import Cell, Comparison, show
from .load import RunRecord


def format_number(key: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if key == "peak_memory_bytes":
        return f"{value / 2**20:{sign}.0f} MiB"
    if key == "time_per_epoch_s":
        return f"{value:{sign}.2f}s"
    return f"{value:{sign}.4f}"


def cell_text(key: str, cell: Cell, with_delta: bool = True, sep: str = " ", with_p: bool = False) -> str:
    """``mean ± std`` (or the single value), plus ``(+delta marks)`` after ``sep`` when there is a baseline
    (``with_p``: and the test's p-value, ``(+0.0500*, p=0.032)``)."""
    if cell.mean is None:
        return "-"
    if cell.std is None:
        text = format_number(key, cell.mean)
    elif key == "peak_memory_bytes":
        text = f"{cell.mean / 2**20:.0f} ± {cell.std / 2**20:.0f} MiB"
    else:
        text = f"{format_number(key, cell.mean)} ± {format_number(key, cell.std)}"
    if cell.short_of:
        text += f" [n={cell.n}]"
    if with_delta and cell.delta is not None:
        p = f", p={format_p(cell.p)}" if with_p and cell.p is not None else ""
        text += f"{sep}({format_number(key, cell.delta, signed=True)}{cell.mark}{p})"
    return text


def format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _label_header(comp: Comparison) -> str:
    if not comp.grouped:
        return "run"
    return ",".join("method" if k == "method.name" else k for k in comp.group_by)


def display_grid(comp: Comparison, multiline: bool = False,
                 with_p: bool = False) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Headers and rows of ``(text, is_best)`` cells for a terminal (``multiline``: the difference
    to the baseline on a second line) or a Markdown / LaTeX table (``with_p``: with p-values)."""
    headers = [_label_header(comp)]
    headers += ["runs", "seeds"] if comp.grouped else ["id", "state"]
    headers += comp.config_keys + [c.header for c in comp.columns]
    grid = []
    for row in comp.rows:
        label = row.label + (" (baseline)" if row.baseline else "")
        cells = [(label, False)]
        if comp.grouped:
            cells += [(row.runs_text(), False), (",".join(str(s) for s in row.seeds) or "-", False)]
        else:
            rec = row.records[0]
            cells += [(rec.run_id or "-", False), (rec.state_text(), False)]
        cells += [(show(row.config.get(k, "-")), False) for k in comp.config_keys]
        sep = "\n" if multiline else " "
        cells += [(cell_text(c.key, row.cells[c.key], sep=sep, with_p=with_p), row.cells[c.key].best)
                  for c in comp.columns]
        grid.append(cells)
    return headers, grid


# Which columns a narrow terminal keeps first: the row's label, its seeds, the fused accuracy, the weakest
# modality's accuracy and the imbalance; then the rest in this order (the last ones go first).
_KEEP_ORDER = ("label", "seeds", "acc", "weakest", "method.name", "imbalance", "f1", "acc:*", "state", "id",
               "config", "shapley:*", "s/epoch", "peak mem", "runs")


def _weakest_header(comp: Comparison) -> str | None:
    """The header of the modality accuracy column with the lowest value in the baseline row (else the
    first row): the modality a balancing method is meant to lift."""
    acc = [c for c in comp.columns if c.header.startswith("acc:")]
    if not acc or not comp.rows:
        return None
    row = next((r for r in comp.rows if r.baseline), comp.rows[0])
    known = [(row.cells[c.key].mean, c.header) for c in acc if row.cells[c.key].mean is not None]
    return min(known)[1] if known else None


def column_rank(comp: Comparison, headers: list[str]) -> list[int]:
    """Each header's place in :data:`_KEEP_ORDER` (lower is kept longer)."""
    weakest = _weakest_header(comp)
    n_config = len(comp.config_keys)
    config = set(headers[3:3 + n_config])

    def rank(i: int, h: str) -> int:
        name = ("label" if i == 0 else "weakest" if h == weakest else "method.name" if h == "method.name"
                else "config" if h in config else "acc:*" if h.startswith("acc:")
                else "shapley:*" if h.startswith("shapley:") else h)
        return _KEEP_ORDER.index(name) if name in _KEEP_ORDER else _KEEP_ORDER.index("config")
    return [rank(i, h) for i, h in enumerate(headers)]


STATE_MAX_WIDTH = 48   # the state column folds its text (a failure's message) at this width


def table_width(widths: list[int]) -> int:
    """Characters a boxed Rich table of columns this wide takes (one space of padding each side)."""
    return sum(w + 3 for w in widths) + 1


def fit_columns(comp: Comparison, headers: list[str], grid: list[list[tuple[str, bool]]],
                width: int) -> list[int]:
    """Indices of the columns to show in ``width`` characters: all when they fit, else the most
    important (:data:`_KEEP_ORDER`) that do; the label column always."""
    natural = [max([len(line) for line in h.split("\n")] +
                   [len(line) for row in grid for line in row[i][0].split("\n")]) for i, h in enumerate(headers)]
    natural = [min(w, STATE_MAX_WIDTH) if h == "state" else w for w, h in zip(natural, headers)]   # folded there
    ranks = column_rank(comp, headers)
    kept = list(range(len(headers)))
    for i in sorted(range(1, len(headers)), key=lambda i: (-ranks[i], -i)):
        if table_width([natural[k] for k in kept]) <= width:
            break
        kept.remove(i)
    return kept


def config_grid(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    """Every shown config key as a row, one column per comparison row (W&B's Run Comparer layout)."""
    headers = ["config"] + [row.label for row in comp.rows]
    return headers, [[key] + [show(row.config.get(key, "-")) for row in comp.rows] for key in comp.all_keys]


def notes(comp: Comparison) -> list[str]:
    """The lines printed under a table: what the numbers are, the test, and what was left out."""
    lines = []
    if any(c.key.startswith("test/") for c in comp.columns):
        lines.append("test metrics of the checkpoint selected on validation")
    if comp.grouped:
        lines.append("mean ± sample std (n-1) over each group's finished runs; runs = finished/total")
    if comp.baseline:
        lines.append(f"(+x) difference to '{comp.baseline}'; * p<0.05, ** p<0.01, *** p<0.001, two-sided paired "
                     f"t-test over the seeds both rows have")
        pairs = {c.pairs for row in comp.rows for c in row.cells.values() if c.delta is not None}
        if 2 in pairs:
            lines.append("with 2 paired seeds the t-test has 1 degree of freedom and finds only very large "
                         "differences; use 3 or more seeds")
        if pairs & {0, 1}:
            lines.append("a difference with fewer than 2 paired seeds has no test (no mark)")
    for r in comp.excluded:
        where = f" {r.run_id}" if r.run_id else ""
        lines.append(f"not included: {r.name}{where} {r.state_text()}")
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(comp: Comparison) -> str:
    """A GitHub/pandoc pipe table, best per column in bold (none on a tie), differences to the
    baseline with their p-values, and the notes as a paragraph below."""
    headers, grid = display_grid(comp, with_p=True)
    n_left = 1 + 2 + len(comp.config_keys)
    align = [":--"] * n_left + ["--:"] * len(comp.columns)
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
    for cells in grid:
        texts = [f"**{_md_escape(t)}**" if best else _md_escape(t) for t, best in cells]
        lines.append("| " + " | ".join(texts) + " |")
    extra = notes(comp) + (["best per column in bold"] if any(c.better for c in comp.columns) else [])
    if extra:
        lines += ["", "  \n".join(_md_escape(x) for x in extra)]
    if comp.all_keys != comp.config_keys:
        headers, grid = config_grid(comp)
        lines += ["", "| " + " | ".join(_md_escape(h) for h in headers) + " |",
                  "|" + "|".join([":--"] * len(headers)) + "|"]
        lines += ["| " + " | ".join(_md_escape(t) for t in cells) + " |" for cells in grid]
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)
    return out.replace("±", r"$\pm$").replace("<", r"\textless{}")


def to_latex(comp: Comparison) -> str:
    """A ``booktabs`` tabular (``\\usepackage{booktabs}``): best per column in bold (none on a tie),
    differences to the baseline with their p-values, and the notes as a comment block."""
    headers, grid = display_grid(comp, with_p=True)
    n_left = len(headers) - len(comp.columns)
    lines = [f"% {x}" for x in notes(comp)]
    lines += [r"\begin{tabular}{" + "l" * n_left + "r" * len(comp.columns) + "}", r"\toprule",
              " & ".join(_latex_escape(h) for h in headers) + r" \\", r"\midrule"]
    for cells in grid:
        texts = [rf"\textbf{{{_latex_escape(t)}}}" if best else _latex_escape(t) for t, best in cells]
        lines.append(" & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _record_json(r: RunRecord) -> dict:
    return {"run_id": r.run_id or None, "name": r.name, "state": r.state, "reason": r.reason,
            "seed": r.seed, "path": str(r.path) if r.path else None}


def _cell_json(cell: Cell) -> dict:
    return {"mean": cell.mean, "std": cell.std, "n": cell.n, "values": cell.values, "delta": cell.delta,
            "p": cell.p, "pairs": cell.pairs, "mark": cell.mark, "best": cell.best}


def to_dict(comp: Comparison) -> dict:
    return {
        "group_by": comp.group_by,
        "baseline": comp.baseline,
        "columns": [{"key": c.key, "header": c.header, "better": c.better} for c in comp.columns],
        "config_keys": comp.all_keys,
        "rows": [{"label": row.label, "baseline": row.baseline, "n": len(row.used), "runs": len(row.records),
                  "seeds": row.seeds, "config": {k: row.config.get(k) for k in comp.all_keys},
                  "members": [_record_json(r) for r in row.records],
                  "metrics": {c.key: _cell_json(row.cells[c.key]) for c in comp.columns}}
                 for row in comp.rows],
        "excluded": [_record_json(r) for r in comp.excluded],
        "warnings": comp.warnings,
    }


def to_json(comp: Comparison) -> str:
    return json.dumps(to_dict(comp), indent=2) + "\n"


def to_csv(comp: Comparison) -> str:
    """One line per row; metric columns by full key, ``<key>:std`` per group, ``:delta``/``:p`` with a baseline."""
    head = [_label_header(comp)] + (["runs", "n", "seeds"] if comp.grouped else ["run_id", "state"]) + comp.all_keys
    for c in comp.columns:
        head.append(c.key)
        if comp.grouped:
            head.append(f"{c.key}:std")
        if comp.baseline and not c.cost:
            head += [f"{c.key}:delta", f"{c.key}:p"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head)
    for row in comp.rows:
        if comp.grouped:
            line = [row.label, len(row.records), len(row.used), " ".join(str(s) for s in row.seeds)]
        else:
            line = [row.label, row.records[0].run_id, row.records[0].state]
        line += [_csv_value(row.config.get(k)) for k in comp.all_keys]
        for c in comp.columns:
            cell = row.cells[c.key]
            line.append(_csv_value(cell.mean))
            if comp.grouped:
                line.append(_csv_value(cell.std))
            if comp.baseline and not c.cost:
                line += [_csv_value(cell.delta), _csv_value(cell.p)]
        writer.writerow(line)
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value if isinstance(value, str) else json.dumps(value)
