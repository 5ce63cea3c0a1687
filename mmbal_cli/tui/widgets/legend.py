"""The line under the per-modality panel: what its ``coef`` column means for the run's method."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from ..model import RunModel
from ..text import coef_legend


class CoefLegend(Widget):
    """The method registration's text for ``coef/<m>`` (an OGM modulation coefficient, an AUG
    ensemble weight, MCR's game weight, ...), wrapped to the width in at most two lines (one in the
    compact layout, cut with an ellipsis). Hidden when the run logs no coefficient or its method
    does not describe it."""

    DEFAULT_CSS = """
    CoefLegend { height: auto; }
    CoefLegend.-empty { display: none; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.model: RunModel | None = None
        self.max_lines = 2

    def show(self, model: RunModel, compact: bool = False) -> None:
        self.model = model
        self.max_lines = 1 if compact else 2
        self.set_class(model.coef_meaning() is None, "-empty")
        self.refresh(layout=True)

    def _lines(self, width: int) -> list[Text]:
        return coef_legend(self.model, max(width, 12), self.max_lines) if self.model is not None else []

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(len(self._lines(width)), 1)

    def render(self) -> Text:
        return Text("\n").join(self._lines(self.content_size.width))
