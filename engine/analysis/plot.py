"""``mmbal compare --plot``: validation accuracy curves per modality and final test accuracy bars.

One figure: the top row has a panel per target (``fused`` and each modality) with the
``val/acc/<target>`` curve of every compared row over epochs (a group's mean over its finished
runs, with a +-1 sample-std band); the bottom panel has, per row, a bar per target of the final
``test/acc/<target>`` (mean, with the std as error bar). Curves come from ``metrics.jsonl``
through :func:`engine.store.read_metrics`, so a resumed run's superseded rows are dropped.

matplotlib is an optional extra (``pip install "mmbal[plot]"``). It is drawn with the
object-oriented API (``Figure`` + ``savefig``), so no GUI backend and no global pyplot state
are involved; the format follows the file's suffix. The file is written atomically (a temporary
sibling moved into place), so a full disk never leaves half an image under the requested name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..store import RunPaths, atomic_write_with, read_metrics
from .build import Comparison, Row
from .columns import all_modalities
from .stats import mean_std

PLOT_FORMATS = ("png", "svg", "pdf")
INSTALL_HINT = 'pip install "mmbal[plot]"  (or: pip install "matplotlib>=3.8")'


def check_plot_target(path: str | os.PathLike) -> None:
    """Refuse (exit 2) a file type matplotlib is not asked to write, or a missing matplotlib."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise UsageError(f"--plot {path}: the file must end in .{', .'.join(PLOT_FORMATS)} "
                         f"(the suffix picks the image format)")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"--plot needs matplotlib, which is not installed; install it with: {INSTALL_HINT}") from None


@dataclass(frozen=True)
class Curve:
    """Mean (and sample std, NaN for one run) of a metric per epoch over ``n[i]`` runs."""

    epochs: list[float]
    mean: list[float]
    std: list[float]
    n: list[int]


def run_curve(run_dir: Path, key: str) -> dict[float, float]:
    """``{epoch: value}`` of metric ``key`` in the run's validation rows (the last row of an epoch wins)."""
    log = read_metrics(RunPaths(run_dir).metrics)
    out: dict[float, float] = {}
    for row in log.metric_rows():
        value = row["m"].get(key)
        epoch = row.get("epoch")
        if row.get("split") == "val" and isinstance(value, (int, float)) and isinstance(epoch, (int, float)):
            out[float(epoch)] = float(value)
    return out


def skipped_lines(comp: Comparison) -> list[str]:
    """What reading the plotted runs' ``metrics.jsonl`` skipped (bad or torn lines), one warning each,
    naming the run directory: the curves are drawn without those lines."""
    out = []
    for row in comp.rows:
        for record in row.used:
            if record.path is not None:
                out += [f"{record.path.name}/{w}" for w in read_metrics(RunPaths(record.path).metrics).warnings]
    return out


def row_curve(row: Row, key: str) -> Curve:
    """The curve of ``key`` averaged over the row's finished runs, epoch by epoch."""
    per_run = [run_curve(r.path, key) for r in row.used if r.path is not None]
    epochs = sorted({e for c in per_run for e in c})
    mean, std, n = [], [], []
    for e in epochs:
        values = [c[e] for c in per_run if e in c]
        m, s = mean_std(values)
        mean.append(m)
        std.append(s if s is not None else math.nan)
        n.append(len(values))
    return Curve(epochs, mean, std, n)


def targets_of(comp: Comparison) -> list[str]:
    return ["fused", *all_modalities([r for row in comp.rows for r in row.records])]


def curve_data(comp: Comparison) -> dict[str, dict[str, Curve]]:
    """``{target: {row label: Curve of val/acc/<target>}}`` for every row with a finished run."""
    rows = [row for row in comp.rows if row.used]
    return {t: {row.label: row_curve(row, f"val/acc/{t}") for row in rows} for t in targets_of(comp)}


def bar_data(comp: Comparison) -> dict[str, dict[str, tuple[float | None, float | None]]]:
    """``{row label: {target: (mean, std) of test/acc/<target>}}`` over each row's finished runs."""
    out = {}
    for row in comp.rows:
        if row.used:
            out[row.label] = {t: mean_std([v for v in (r.value(f"test/acc/{t}") for r in row.used) if v is not None])
                              for t in targets_of(comp)}
    return out


TAB10_ROWS = 10      # up to this many rows: matplotlib's default colours C0..C9, solid lines
LINESTYLES = ("-", "--", ":", "-.")
LEGEND_ROWS = 24     # entries per legend column
ROTATE_AT = 8        # bar groups from which their labels are slanted


def row_style(j: int, n: int) -> dict:
    """Colour and line style of row ``j`` of ``n``: C0..C9 up to 10 rows; beyond, the 20 colours of tab20
    (its dark half first, so that neighbours differ) and a new line style every 20 rows, so that no two
    rows of a 30-method sweep look alike."""
    if n <= TAB10_ROWS:
        return {"color": f"C{j}", "linestyle": "-"}
    from matplotlib import colormaps
    k = j % 20
    return {"color": colormaps["tab20"]((2 * k) % 20 + (k >= 10)), "linestyle": LINESTYLES[(j // 20) % 4]}


def figure_size(n_targets: int, n_rows: int) -> tuple[float, float]:
    """Inches: a panel of 4 per target, and room for every row's bars (0.12 per bar) and labels (0.3 per row),
    slanted from ``ROTATE_AT`` rows."""
    width = max(4.0 * n_targets, 8.0, 0.12 * n_targets * n_rows + 1.5, 0.3 * n_rows + 1.5)
    return width, 7.5 + (1.0 if n_rows >= ROTATE_AT else 0.0)


def plot_comparison(comp: Comparison, path: str | os.PathLike) -> None:
    """Draw the curves and bars of ``comp`` into ``path`` (.png, .svg or .pdf)."""
    check_plot_target(path)
    from matplotlib.figure import Figure

    curves, bars = curve_data(comp), bar_data(comp)
    if not bars:
        raise UsageError(f"--plot {path}: none of the compared runs has finished, so there is nothing to draw")
    targets, labels = list(curves), list(bars)
    fig = Figure(figsize=figure_size(len(targets), len(labels)), layout="constrained")
    grid = fig.add_gridspec(2, len(targets))
    _draw_curves(fig, grid, curves, labels)
    _draw_bars(fig.add_subplot(grid[1, :]), bars, targets, labels)
    keys = ["method" if k == "method.name" else k for k in comp.group_by or []]
    what = f"grouped by {', '.join(keys)}, mean ± std over seeds" if comp.grouped else "per run"
    fig.suptitle(f"mmbal compare ({what})")
    fmt = Path(path).suffix.lower().lstrip(".")
    atomic_write_with(path, lambda f: fig.savefig(f, format=fmt, dpi=120), site="plot")


def _draw_curves(fig, grid, curves: dict[str, dict[str, Curve]], labels: list[str]) -> None:
    """One panel per target; the rows' legend beside the panels, outside them (one column per 24 rows)."""
    from matplotlib.ticker import MaxNLocator

    first, handles = None, {}
    for i, (target, by_row) in enumerate(curves.items()):
        ax = fig.add_subplot(grid[0, i], sharey=first)
        first = first or ax
        for j, label in enumerate(labels):
            curve = by_row.get(label)
            if curve is None or not curve.epochs:
                continue
            style = row_style(j, len(labels))
            line, = ax.plot(curve.epochs, curve.mean, label=label, marker="." if len(curve.epochs) < 30 else None,
                            **style)
            handles.setdefault(label, line)
            low = [m - s if not math.isnan(s) else m for m, s in zip(curve.mean, curve.std)]
            high = [m + s if not math.isnan(s) else m for m, s in zip(curve.mean, curve.std)]
            ax.fill_between(curve.epochs, low, high, color=style["color"], alpha=0.2, linewidth=0)
        ax.set_title(f"val/acc/{target}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel("accuracy")
    shown = [label for label in labels if label in handles]
    if shown:
        fig.legend([handles[label] for label in shown], shown, loc="outside right upper", fontsize="small",
                   ncols=math.ceil(len(shown) / LEGEND_ROWS))


def _draw_bars(ax, bars: dict[str, dict[str, tuple]], targets: list[str], labels: list[str]) -> None:
    width = 0.8 / len(targets)
    for k, target in enumerate(targets):
        xs = [i + (k - (len(targets) - 1) / 2) * width for i in range(len(labels))]
        means = [bars[label][target][0] for label in labels]
        stds = [bars[label][target][1] for label in labels]
        errors = [s if s is not None else 0.0 for s in stds] if any(s is not None for s in stds) else None
        ax.bar(xs, [m if m is not None else 0.0 for m in means], width, yerr=errors, capsize=3, label=target,
               color="C7" if target == "fused" else f"C{k % 10}")
    if len(labels) >= ROTATE_AT:
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(range(len(labels)), labels)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel("test accuracy")
    ax.set_title("final test accuracy per modality")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.005, 1.0))   # beside the bars, never on them
    ax.grid(axis="y", alpha=0.3)
