"""Text pieces shared by the dashboard widgets and the ``--once`` snapshot.

Everything that matters is in the characters, not only in the colour (``NO_COLOR``, monochrome
tmux): the state is a word, the weakest modality carries a marker, notices a level prefix.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .chart import caption_lines
from .formatting import fmt_duration, fmt_number
from .model import RunModel
from .panel import PANEL_COLUMNS, ModalityRow
from .run_notices import Notice

STATE_STYLES = {
    "running": "bold green",
    "created": "green",
    "finished": "bold blue",
    "interrupted": "bold yellow",
    "stale": "bold red",
    "failed": "bold red",
    "unknown": "bold magenta",
}
NOTICE_PREFIX = {"error": ("✖ ", "bold red"), "warning": ("▲ ", "yellow"), "info": ("• ", "dim")}
WEAKEST_MARK = "◀ weakest"


def state_text(model: RunModel) -> Text:
    return Text(model.state, style=STATE_STYLES.get(model.state, "bold"))


def identity_text(model: RunModel) -> Text:
    """``name  id  ·  method  ·  dataset  ·  device``."""
    return Text.assemble(
        (model.name, "bold"), "  ", (model.run_id, "dim"), "  ·  ",
        ("method ", "dim"), model.method, "  ·  ", ("data ", "dim"), model.dataset, "  ·  ",
        ("device ", "dim"), model.device,
    )


def position_text(model: RunModel) -> Text:
    """``running  epoch 3/15  step 1234/4000``."""
    epoch, total = model.epoch_now, model.epochs_total
    steps = model.total_steps
    return Text.assemble(
        state_text(model),
        ("  epoch ", "dim"), f"{epoch if epoch is not None else '-'}/{total if total else '?'}",
        ("  step ", "dim"), f"{model.step}/{steps if steps else '?'}",
    )


def times_text(model: RunModel) -> Text:
    """``elapsed 2m03s  left 5m10s`` (left only while running)."""
    text = Text.assemble(("elapsed ", "dim"), fmt_duration(model.elapsed()))
    eta = model.eta()
    if model.is_live:
        text.append_text(Text.assemble(("  left ", "dim"), fmt_duration(eta)))
    return text


def notice_text(notice: Notice) -> Text:
    prefix, style = NOTICE_PREFIX.get(notice.level, ("• ", ""))
    return Text.assemble((prefix, style), (notice.text, style if notice.level == "error" else ""))


def panel_headers() -> list[str]:
    return ["modality", *(label for label, _ in PANEL_COLUMNS)]


def panel_cells(row: ModalityRow, compact: bool = False) -> list[Text]:
    """The cells of one per-modality row ("-" where the run logs no such value); ``compact``
    marks the weakest modality with the arrow alone (the help screen explains it)."""
    name = Text(row.name, style="bold" if row.name == "fused" else "")
    if row.weakest:
        name.append(f" {WEAKEST_MARK.split()[0] if compact else WEAKEST_MARK}", style="bold yellow")
    return [name, *(Text(fmt_number(row.values.get(label)), justify="right") for label, _ in PANEL_COLUMNS)]


def test_text(model: RunModel) -> Text | None:
    """``test acc  fused 0.874  audio 0.731 ...`` once the run has test metrics."""
    test = model.test_values()
    targets = ["fused", *model.modalities]
    parts = [(t, test.get(f"test/acc/{t}")) for t in targets if test.get(f"test/acc/{t}") is not None]
    if not parts:
        return None
    text = Text("test acc ", style="dim")
    for target, value in parts:
        text.append(f" {target} ", style="bold" if target == "fused" else "")
        text.append(fmt_number(value))
    return text


def coef_legend(model: RunModel, width: int, max_lines: int) -> list[Text]:
    """What the panel's ``coef`` column means for the run's method (its registration's text for
    ``coef/<m>``), wrapped to ``width`` in at most ``max_lines`` lines; none when unknown."""
    meaning = model.coef_meaning()
    return caption_lines(f"coef: {meaning.text}", width, max_lines) if meaning is not None else []


def live_table(model: RunModel) -> Table | None:
    """The method's ``score/`` and ``method/`` values, one row per pattern of its registration
    (``score/<m>  a 0.467  b 0.380``) with what it means below the values; None when it logs none."""
    groups = model.live_groups()
    if not groups:
        return None
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(ratio=1)
    for group in groups:
        values = Text()
        for key, value in group.values:
            label = group.meaning.label(key)
            values.append(f"{'  ' if values.cell_len else ''}{label}{' ' if label else ''}{fmt_number(value)}")
        values.append("\n")
        values.append(group.meaning.text, style="italic" if group.meaning.known else "dim")
        table.add_row(Text(group.meaning.pattern, style="bold"), values)
    return table
