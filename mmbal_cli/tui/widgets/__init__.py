"""The dashboard's widgets: run header, per-modality panel and its coef legend, line chart, notices, events table;
the column fit of the screens' tables."""

from .events import EventsTable
from .header import RunHeader
from .legend import CoefLegend
from .line_chart import LineChart
from .modalities import ModalityPanel
from .notices import NoticeBar
from .table_widths import fit_widths

__all__ = ["CoefLegend", "EventsTable", "LineChart", "ModalityPanel", "NoticeBar", "RunHeader", "fit_widths"]
