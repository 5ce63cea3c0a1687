"""Text pieces of the advice screen, shared with ``mmbal watch --advice NAME --once``.

As for runs (:mod:`.text`), what matters is in the characters: a candidate's state is words
(``kept``, ``dropped in round 1``, ``running s1 1/3``), the held-back modality carries a marker.
The halving is one line per stage header and one per row, in fixed columns, so that the screen's
list and the snapshot print the same lines.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .advice_model import AdviceModel, DiagnosisView, Row, StageView, pm, short_metric
from .formatting import fmt_number
from .text import notice_text

HELD_BACK_MARK = "◀ held back"
KIND_STYLES = {"running": "bold green", "finished": "blue", "kept": "bold", "reference": "italic",
               "dropped": "dim", "waiting": "dim", "problem": "bold red"}
STATUS_STYLES = {"running": "bold green", "done": "blue", "stopped": "bold yellow", "waiting": "dim",
                 "not run": "dim"}
SEEDS_W, MEAN_W, VERSUS_W = 5, 13, 13


def title_text(model: AdviceModel) -> Text:
    """``advice NAME · preset.toml · on val/acc/fused · now: round 2 of 3``."""
    now = model.current_stage()
    style = "bold yellow" if now.startswith("stopped") else ("blue" if now == "finished" else "bold green")
    return Text.assemble(("advice ", "dim"), (model.name, "bold"), "  ·  ", model.preset, "  ·  ",
                         ("on ", "dim"), model.metric, "  ·  ", ("now ", "dim"), (now, style))


def diagnosis_table(d: DiagnosisView) -> Table:
    """Per modality: alone, inside joint, the gap, its Shapley share and MI; the held-back ones marked."""
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1))
    for i, header in enumerate(("modality", "alone", "inside joint", "gap", "shapley share", "mi", "")):
        table.add_column(header, justify="left" if i in (0, 6) else "right", header_style="dim", no_wrap=True)
    for m in d.modalities:
        mark = HELD_BACK_MARK if m.held_back else ("uninformative" if not m.informative else "")
        gap = f"{m.gap:+.3f}" if m.gap is not None else "-"
        table.add_row(m.name, fmt_number(m.alone), fmt_number(m.inside), gap, fmt_number(m.share),
                      fmt_number(m.mi), Text(mark, style="bold yellow"))
    return table


def fused_text(d: DiagnosisView) -> Text:
    """``fused 0.386 · chance 0.250 · beats the best single modality (a): no``."""
    beats = {True: "yes", False: "no", None: "?"}[d.beats_best]
    return Text.assemble(("fused ", "dim"), fmt_number(d.fused), ("  ·  chance ", "dim"), fmt_number(d.chance),
                         ("  ·  beats the best single modality", "dim"), f" ({d.best_alone or '?'}): ", beats)


def diagnosis_part(model: AdviceModel) -> RenderableType:
    """The verdict sentence, the per-modality table and the fused line; a line saying it is under way before."""
    d = model.diagnosis()
    if d is None:
        return Text.assemble(("diagnosis  ", "bold"), ("under way: joint and each modality alone (below)", "dim"))
    return Group(Text.assemble(("diagnosis  ", "bold"), d.sentence), diagnosis_table(d), fused_text(d))


STATE_W = 20   # "dropped in round 3", "running s1 1/3"


def label_width(stages: list[StageView], columns: int = 80) -> int:
    """The candidate column's width: the longest label, within what ``columns`` leave beside the fixed
    columns (at least 18, the width at 80 columns: longer labels are cut in the middle, :func:`fit_label`)."""
    room = columns - (2 + 2 + SEEDS_W + 2 + MEAN_W + 2 + VERSUS_W + 2) - STATE_W
    return min(max([len(r.label) for s in stages for r in s.rows] + [9]), max(18, room))


def columns_text(width: int) -> Text:
    """The halving's column headers (aligned with :func:`row_text`)."""
    text = "  " + "candidate".ljust(width) + "  " + "seeds".rjust(SEEDS_W) + "  " + "mean ± std".ljust(MEAN_W) \
        + "  " + "vs joint".ljust(VERSUS_W) + "  state"
    return Text(text, style="dim", no_wrap=True, overflow="ellipsis")


def stage_text(stage: StageView, metric: str) -> Text:
    """``round 1/2 · 1 epoch · seeds 0, 1 · keeps 1 of 3 · done`` (the figure named where it is not
    ``metric``'s: ``--apply``'s test figures)."""
    figure = f" · {stage.figure}" if stage.figure != short_metric(metric) else ""
    return Text.assemble((stage.title, "bold"), (f" · {stage.detail}{figure} · ", "dim"),
                         (stage.status, STATUS_STYLES.get(stage.status, "")), no_wrap=True, overflow="ellipsis")


def versus_text(row: Row) -> str:
    """``+0.011 p=0.80`` (the paired difference to joint and its p); empty for joint and when unknown."""
    if row.diff is None:
        return ""
    return f"{row.diff:+.3f}" + (f" p={row.p:.2f}" if row.p is not None else "")


def fit_label(label: str, width: int) -> str:
    """``label`` in ``width`` characters: cut in the middle, so that the method and the option's value
    both stay (``inforeg-wi…shold=0.04``, ``inforeg-wi…eshold=0.1``)."""
    if len(label) <= width:
        return label
    head = (width - 1) // 2
    return label[:head] + "…" + label[len(label) - (width - 1 - head):]


def row_text(row: Row, width: int) -> Text:
    """One candidate in fixed columns: label, seeds finished of planned, mean ± std, vs joint, state."""
    label = fit_label(row.label, width)
    cells = "  " + label.ljust(width) + "  " + f"{row.done}/{row.total}".rjust(SEEDS_W) + "  " \
        + pm(row.mean, row.std).ljust(MEAN_W) + "  " + versus_text(row).ljust(VERSUS_W) + "  "
    return Text.assemble(cells, (row.state, KIND_STYLES.get(row.kind, "")), no_wrap=True, overflow="ellipsis")


def halving_lines(model: AdviceModel, columns: int = 80) -> list[tuple[Text, Row | None]]:
    """Each stage's header line (with None) and its rows' lines (with the row), for ``columns``."""
    stages = model.stages()
    width = label_width(stages, columns)
    lines: list[tuple[Text, Row | None]] = []
    for stage in stages:
        lines.append((stage_text(stage, model.metric), None))
        lines += [(row_text(row, width), row) for row in stage.rows]
    return lines


def result_part(model: AdviceModel) -> Text:
    """The recommendation (or that there is none yet) and ``--apply``'s test figures when there are some."""
    rec = model.recommendation()
    text = Text.assemble(("recommendation  ", "bold"))
    text.append(rec[1] if rec else "none yet: it comes after the last round", style="" if rec else "dim")
    applied = model.apply_text()
    if applied is not None:
        text.append_text(Text.assemble(("\napply  ", "bold"), applied))
    return text


def render_advice_snapshot(model: AdviceModel, columns: int = 80) -> Group:
    """Everything ``watch --advice NAME --once`` prints, for ``columns``."""
    parts: list[RenderableType] = [title_text(model), *(notice_text(n) for n in model.notices()), Text(),
                                   diagnosis_part(model), Text()]
    lines = halving_lines(model, columns)
    if lines:
        parts.append(columns_text(label_width(model.stages(), columns)))
        parts += [line for line, _ in lines]
        parts.append(Text())
    parts.append(result_part(model))
    return Group(*parts)
