"""The dashboard's widgets: run header, per-modality panel, line chart, notices, events table."""

from .events import EventsTable
from .header import RunHeader
from .line_chart import LineChart
from .modalities import ModalityPanel
from .notices import NoticeBar

__all__ = ["EventsTable", "LineChart", "ModalityPanel", "NoticeBar", "RunHeader"]
