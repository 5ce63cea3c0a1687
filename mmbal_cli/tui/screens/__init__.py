"""The dashboard's screens: the run dashboard, the runs list, the compare view and the dialogs."""

from .compare import CompareScreen
from .dashboard import DashboardScreen
from .dialogs import HelpScreen, QuitScreen
from .runs import RunsScreen

__all__ = ["CompareScreen", "DashboardScreen", "HelpScreen", "QuitScreen", "RunsScreen"]
