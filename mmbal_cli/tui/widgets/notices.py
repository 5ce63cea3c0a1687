"""The notices under the header: why a run looks the way it does (stale, torn, resumed, ...)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..run_notices import Notice
from ..text import notice_text


class NoticeBar(Static):
    """Notices, most severe first, one line each (cut with an ellipsis; the Events tab has them
    in full); at most ``limit`` lines, the last one counting what did not fit. Hidden when empty."""

    DEFAULT_CSS = """
    NoticeBar { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    NoticeBar.-empty { display: none; }
    """
    ORDER = {"error": 0, "warning": 1, "info": 2}

    def __init__(self, limit: int = 3, **kwargs):
        super().__init__("", **kwargs)
        self.limit = limit
        self.notices: list[Notice] = []

    def show(self, notices: list[Notice] | None = None, limit: int | None = None) -> None:
        if notices is not None:
            self.notices = sorted(notices, key=lambda n: self.ORDER.get(n.level, 3))
        if limit is not None:
            self.limit = limit
        fits = len(self.notices) <= self.limit
        shown = self.notices if fits else self.notices[: self.limit - 1]
        lines = [notice_text(n) for n in shown]
        if not fits:
            lines.append(Text(f"  +{len(self.notices) - len(shown)} more notices in the Events tab (8)", style="dim"))
        for line in lines:
            line.no_wrap, line.overflow = True, "ellipsis"
        self.set_class(not self.notices, "-empty")
        self.update(Text("\n", no_wrap=True, overflow="ellipsis").join(lines))
