"""The per-modality panel: accuracies, MI estimates, Shapley value, coefficient, gradient norm."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from ..model import RunModel
from ..text import panel_cells, panel_headers


class ModalityPanel(DataTable):
    """One row per modality plus ``fused``; "-" where the run does not log a value."""

    DEFAULT_CSS = """
    ModalityPanel { height: auto; max-height: 12; }
    """

    def __init__(self, **kwargs):
        super().__init__(cursor_type="none", zebra_stripes=False, show_cursor=False, **kwargs)
        self.can_focus = False

    def show(self, model: RunModel, compact: bool = False) -> None:
        """Rebuilt on every change (a few rows); ``compact`` fits 80 columns."""
        rows = [panel_cells(row, compact) for row in model.modality_rows()]
        first = max([cells[0].cell_len for cells in rows] + [8])
        self.clear(columns=True)
        for i, label in enumerate(panel_headers()):
            header = Text(label, justify="left" if i == 0 else "right")
            self.add_column(header, key=label, width=first if i == 0 else max(len(label), 7))
        for cells in rows:
            self.add_row(*cells)
